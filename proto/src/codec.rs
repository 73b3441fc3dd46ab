//! The codec every generated service and client uses: prost's, plus a count of a federation
//! summary's entries *before* they are decoded.
//!
//! A `HeadsSummary` entry can be two bytes on the wire and some fifty bytes decoded, so a frame
//! of the largest size the federation accepts could otherwise cost its receiver about 25 times
//! its size in memory before any check ran. [`BoundedDecoder`] walks a `Frame`'s wire bytes
//! first (no allocation) and refuses a summary listing more than [`MAX_SUMMARY_DOCS`] documents
//! or [`MAX_SUMMARY_HEADS`] heads with `RESOURCE_EXHAUSTED`; every other message is decoded by
//! prost as before.

use std::any::TypeId;
use std::marker::PhantomData;

use prost::bytes::Buf;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstEncoder};

/// Most documents one summary may list (far above a full federation's ~900; the node's own
/// `limits.docs_per_peer` applies after decoding).
pub const MAX_SUMMARY_DOCS: usize = 100_000;
/// Most heads one summary may list over all its documents.
pub const MAX_SUMMARY_HEADS: usize = 400_000;

/// [`ProstCodec`] with a [`BoundedDecoder`].
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        BoundedCodec(PhantomData)
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(PhantomData)
    }
}

/// Decodes with prost; a federation `Frame` is checked by [`check_frame`] first.
#[derive(Debug, Clone)]
pub struct BoundedDecoder<U>(PhantomData<U>);

impl<U: Message + Default + 'static> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if TypeId::of::<U>() == TypeId::of::<crate::v1::Frame>() {
            check_frame(buf.chunk())?;
        }
        U::decode(buf)
            .map(Some)
            .map_err(|err| Status::internal(err.to_string()))
    }
}

/// Counts the entries of a `Frame`'s summary in its wire bytes, without decoding them. Bytes
/// that are not a well-formed message pass: prost refuses them right after.
pub fn check_frame(bytes: &[u8]) -> Result<(), Status> {
    const SUMMARY_FIELD: u64 = 2;
    const DOCS_FIELD: u64 = 1;
    const HEADS_FIELD: u64 = 2;
    let (mut docs, mut heads) = (0usize, 0usize);
    for_each_field(bytes, |field, summary| {
        if field != SUMMARY_FIELD {
            return Ok(());
        }
        for_each_field(summary, |field, entry| {
            if field != DOCS_FIELD {
                return Ok(());
            }
            docs += 1;
            if docs > MAX_SUMMARY_DOCS {
                return Err(Status::resource_exhausted(format!(
                    "the summary lists more than {MAX_SUMMARY_DOCS} documents; refused before \
                     decoding"
                )));
            }
            for_each_field(entry, |field, _| {
                if field == HEADS_FIELD {
                    heads += 1;
                }
                if heads > MAX_SUMMARY_HEADS {
                    return Err(Status::resource_exhausted(format!(
                        "the summary lists more than {MAX_SUMMARY_HEADS} heads; refused before \
                         decoding"
                    )));
                }
                Ok(())
            })
            .map(|_| ())
        })
        .map(|_| ())
    })
    .map(|_| ())
}

/// Calls `f` with every length-delimited field of a message (field number, bytes), in order,
/// without allocating; fields of other wire types are skipped. `Ok(false)` when the bytes are
/// not a well-formed message (prost refuses them afterwards).
fn for_each_field(
    mut bytes: &[u8],
    mut f: impl FnMut(u64, &[u8]) -> Result<(), Status>,
) -> Result<bool, Status> {
    while bytes.has_remaining() {
        let Ok(key) = prost::encoding::decode_varint(&mut bytes) else {
            return Ok(false);
        };
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                if prost::encoding::decode_varint(&mut bytes).is_err() {
                    return Ok(false);
                }
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if bytes.len() < n {
                    return Ok(false);
                }
                bytes = &bytes[n..];
            }
            2 => {
                let len = prost::encoding::decode_varint(&mut bytes)
                    .ok()
                    .and_then(|len| usize::try_from(len).ok());
                match len {
                    Some(len) if len <= bytes.len() => {
                        f(field, &bytes[..len])?;
                        bytes = &bytes[len..];
                    }
                    _ => return Ok(false),
                }
            }
            _ => return Ok(false),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1 as pb;

    fn summary(docs: usize, heads: usize) -> Vec<u8> {
        pb::Frame {
            body: Some(pb::frame::Body::Summary(pb::HeadsSummary {
                docs: vec![
                    pb::DocHeads {
                        doc_id: String::new(),
                        heads: vec![Vec::new(); heads],
                        generation: 0,
                    };
                    docs
                ],
                only_changed: false,
                digest: vec![0; 32],
            })),
        }
        .encode_to_vec()
    }

    #[test]
    fn summaries_are_counted_before_they_are_decoded() {
        assert!(check_frame(&summary(MAX_SUMMARY_DOCS, 0)).is_ok());
        let err = check_frame(&summary(MAX_SUMMARY_DOCS + 1, 0)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("documents"), "{}", err.message());
        let err = check_frame(&summary(2, MAX_SUMMARY_HEADS / 2 + 1)).unwrap_err();
        assert!(err.message().contains("heads"), "{}", err.message());
        // Other frames and malformed bytes pass to prost.
        let hello = pb::Frame {
            body: Some(pb::frame::Body::Hello(pb::Hello {
                protocol_version: 2,
            })),
        };
        assert!(check_frame(&hello.encode_to_vec()).is_ok());
        assert!(check_frame(&[0x12, 0xff]).is_ok());
    }
}
