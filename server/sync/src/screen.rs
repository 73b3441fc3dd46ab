//! Reading what a peer sends, before the engine acts on it: a sync message is decoded,
//! checked against what an honest peer sends (counts, sorted lists of hashes, Bloom-filter
//! parameters, one plain change per chunk) and its changes are parsed, which verifies their
//! columns and counts their operations without applying anything.
//!
//! A message whose only chunk is a whole saved document (sent to a peer that holds nothing of
//! the document) is bounded ([`crate::saved`]) and loaded here.
//!
//! None of this needs the engine's state, so the driver reads a frame ([`read_frame`]) before
//! it takes the engine lock: a large message or document costs its reader time, not every
//! other link and API call. The engine then decides with its state (generation, owner, content
//! limits) what of a [`ReadFrame`] it applies ([`crate::Engine::receive_read`]).

use std::panic::{catch_unwind, AssertUnwindSafe};

use automerge::sync;
use automerge::{Automerge, ChangeHash, LoadOptions, OnPartialLoad, VerificationMode};

use crate::engine::StatusCode;
use crate::frame::Frame;
use crate::saved::{check_saved_document, is_saved_document, DocumentBounds, CHUNK_MAGIC};
use crate::scope::{quote, ShareableDocId};

/// What a frame may hold: the size of a sync message, and what a whole document may claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    pub max_message_bytes: usize,
    pub document: DocumentBounds,
}

/// A frame as far as it can be read without the engine.
pub enum ReadFrame {
    /// Any frame but a sync message, as it arrived.
    Other(Frame),
    /// A sync message for one document.
    DocSync {
        doc: ShareableDocId,
        generation: u64,
        message: Result<ReadMessage, Unreadable>,
    },
}

/// A decoded sync message that passed the checks on its shape.
pub struct ReadMessage {
    /// The message without its changes (they are in `changes`).
    pub(crate) message: sync::Message,
    /// How many change chunks it carried.
    pub(crate) chunks: usize,
    /// Its changes, parsed; or why they are refused.
    pub(crate) changes: Result<Vec<automerge::Change>, String>,
    /// The whole document it carried instead of changes, loaded; or why it is refused.
    pub(crate) document: Option<Result<Box<WholeDocument>, (StatusCode, String)>>,
}

/// A whole saved document a peer sent, within the bounds and loaded by Automerge (which
/// checked its checksum and that its changes hash to the heads it names).
pub struct WholeDocument {
    pub(crate) doc: Automerge,
    /// The bytes as received: a saved document, stored as the receiver's snapshot.
    pub(crate) saved: Vec<u8>,
}

/// Why a sync message is not taken at all.
pub enum Unreadable {
    /// Too large, or not a sync message: the link closes with this status.
    Close(StatusCode, String),
    /// Decoded, but outside what an honest peer sends: refused (and logged), the link closes
    /// with `InvalidArgument`.
    Refuse(String),
}

/// Reads `frame` as far as it can be without the engine; a sync message larger than
/// `limits.max_message_bytes` is not decoded.
pub fn read_frame(frame: Frame, limits: &ReadLimits) -> ReadFrame {
    match frame {
        Frame::DocSync {
            doc,
            generation,
            message,
        } => {
            let message = read_message(&doc, &message, limits);
            ReadFrame::DocSync {
                doc,
                generation,
                message,
            }
        }
        other => ReadFrame::Other(other),
    }
}

fn read_message(
    id: &ShareableDocId,
    bytes: &[u8],
    limits: &ReadLimits,
) -> Result<ReadMessage, Unreadable> {
    let max_message_bytes = limits.max_message_bytes;
    if bytes.len() > max_message_bytes {
        return Err(Unreadable::Close(
            StatusCode::ResourceExhausted,
            format!(
                "sync message for {id} has {} bytes; the limit is {max_message_bytes}",
                bytes.len()
            ),
        ));
    }
    let mut message = match catch_unwind(|| sync::Message::decode(bytes)) {
        Ok(Ok(message)) => message,
        Ok(Err(err)) => {
            return Err(Unreadable::Close(
                StatusCode::InvalidArgument,
                format!(
                    "sync message for {id} does not decode: {}",
                    quote(&err.to_string())
                ),
            ))
        }
        Err(_) => {
            return Err(Unreadable::Close(
                StatusCode::InvalidArgument,
                format!("sync message for {id} could not be decoded"),
            ))
        }
    };
    if let Err(problem) = check_message(&message) {
        return Err(Unreadable::Refuse(format!(
            "sync message for {id} is outside what an honest peer sends: {problem}"
        )));
    }
    let chunks = message.changes.len();
    let only_chunk = message.changes.iter().next().filter(|_| chunks == 1);
    if let Some(bytes) = only_chunk.filter(|bytes| is_saved_document(bytes)) {
        let document = read_document(id, bytes, &limits.document);
        message.changes = sync::ChunkList::empty();
        return Ok(ReadMessage {
            message,
            chunks,
            changes: Ok(Vec::new()),
            document: Some(document),
        });
    }
    let changes = match check_chunks(&message) {
        Err(problem) => Err(format!(
            "sync message for {id} is outside what an honest peer sends: {problem}"
        )),
        // Each chunk is one plain change (checked above).
        Ok(()) => match catch_unwind(|| {
            message
                .changes
                .iter()
                .map(|chunk| automerge::Change::from_bytes(chunk.to_vec()))
                .collect::<Result<Vec<automerge::Change>, _>>()
        }) {
            Ok(Ok(changes)) => match changes.iter().position(|c| !checksum_matches(c)) {
                // Automerge's `load_incremental` skips such a chunk (and every one after it)
                // with a warning; the parsed changes are applied directly, so the screen
                // refuses what Automerge would have skipped.
                Some(index) => Err(format!(
                    "change {index} for {id} does not match its checksum"
                )),
                None => Ok(changes),
            },
            Ok(Err(err)) => Err(format!(
                "a change for {id} does not parse: {}",
                quote(&err.to_string())
            )),
            Err(_) => Err(format!("a change for {id} could not be read")),
        },
    };
    message.changes = sync::ChunkList::empty();
    Ok(ReadMessage {
        message,
        chunks,
        changes,
        document: None,
    })
}

/// Whether a parsed change's chunk header carries the right checksum: the first four bytes of
/// its hash (the SHA-256 of the chunk's type, length and body), right after the magic bytes.
fn checksum_matches(change: &automerge::Change) -> bool {
    change.raw_bytes().get(4..8) == Some(&change.hash().0[..4])
}

/// Bounds a whole saved document ([`check_saved_document`]), then lets Automerge load it,
/// verifying its checksum and that its changes hash to the heads it names.
fn read_document(
    id: &ShareableDocId,
    bytes: &[u8],
    bounds: &DocumentBounds,
) -> Result<Box<WholeDocument>, (StatusCode, String)> {
    check_saved_document(bytes, bounds).map_err(|refusal| {
        let code = if refusal.over_bound {
            StatusCode::ResourceExhausted
        } else {
            StatusCode::InvalidArgument
        };
        (
            code,
            format!("the whole document {id} is refused: {}", refusal.problem),
        )
    })?;
    let options = LoadOptions::new()
        .on_partial_load(OnPartialLoad::Error)
        .verification_mode(VerificationMode::Check);
    match catch_unwind(AssertUnwindSafe(|| {
        Automerge::load_with_options(bytes, options)
    })) {
        Ok(Ok(doc)) => Ok(Box::new(WholeDocument {
            doc,
            saved: bytes.to_vec(),
        })),
        Ok(Err(err)) => Err((
            StatusCode::InvalidArgument,
            format!(
                "the whole document {id} does not load: {}",
                quote(&err.to_string())
            ),
        )),
        Err(_) => Err((
            StatusCode::InvalidArgument,
            format!("the whole document {id} could not be loaded"),
        )),
    }
}

/// Largest counts an honest peer puts in one sync message.
pub const MAX_HEADS: usize = 1024;
pub const MAX_NEED: usize = 100_000;
/// Automerge sends one Bloom filter (or none) per message; it reads only the first one's heads
/// before it looks up every other one's, which could name changes it lacks.
pub const MAX_HAVE: usize = 1;
pub const MAX_BLOOM_BYTES: usize = 4 * 1024 * 1024;
pub const MAX_CHUNKS: usize = 100_000;

/// Checks a decoded sync message against what an honest peer sends, before Automerge acts on
/// it: Automerge trusts the sender's counts and Bloom-filter parameters.
pub(crate) fn check_message(message: &sync::Message) -> Result<(), String> {
    // Automerge sends every list of hashes sorted and without repeats (heads, needs, the heads
    // of a Bloom filter); a repeated need makes Automerge 0.12 collect the same change twice and
    // panic on the next message it generates for the link.
    check_ascending("heads", &message.heads)?;
    check_ascending("needed changes", &message.need)?;
    for have in &message.have {
        check_ascending("last-sync heads", &have.last_sync)?;
    }
    if message.heads.len() > MAX_HEADS {
        return Err(format!(
            "{} heads (at most {MAX_HEADS})",
            message.heads.len()
        ));
    }
    if message.need.len() > MAX_NEED {
        return Err(format!(
            "{} needed changes (at most {MAX_NEED})",
            message.need.len()
        ));
    }
    if message.have.len() > MAX_HAVE {
        return Err(format!(
            "{} have entries (at most {MAX_HAVE})",
            message.have.len()
        ));
    }
    for have in &message.have {
        if have.last_sync.len() > MAX_HEADS {
            return Err(format!(
                "{} last-sync heads (at most {MAX_HEADS})",
                have.last_sync.len()
            ));
        }
        let bloom = have.bloom.to_bytes();
        if bloom.len() > MAX_BLOOM_BYTES {
            return Err(format!(
                "a {}-byte Bloom filter (at most {MAX_BLOOM_BYTES})",
                bloom.len()
            ));
        }
        check_bloom_parameters(&bloom)?;
    }
    if message.changes.len() > MAX_CHUNKS {
        return Err(format!(
            "{} change chunks (at most {MAX_CHUNKS})",
            message.changes.len()
        ));
    }
    Ok(())
}

/// Refuses a list of hashes that is not strictly ascending (unsorted, or with a repeat).
fn check_ascending(what: &str, hashes: &[ChangeHash]) -> Result<(), String> {
    match hashes.windows(2).find(|pair| pair[0] >= pair[1]) {
        Some(pair) if pair[0] == pair[1] => Err(format!("{what} that list {} twice", pair[0])),
        Some(_) => Err(format!("{what} that are not sorted")),
        None => Ok(()),
    }
}

/// The chunk type of a single, uncompressed change (after the magic and a 4-byte checksum).
pub(crate) const CHUNK_TYPE_CHANGE: u8 = 1;

/// Checks that every chunk of a message of changes is one plain, uncompressed change, the only
/// kind this engine sends beside a whole document alone in its message (read apart, by
/// [`read_document`]). Compressed changes, bundles and documents among other chunks are
/// refused before Automerge sees them: Automerge inflates their DEFLATE columns without a
/// bound, so a few kilobytes could claim gigabytes. A plain change is at most as large as the
/// message that carries it, which is bounded by `max_message_bytes`.
pub(crate) fn check_chunks(message: &sync::Message) -> Result<(), String> {
    for chunk in message.changes.iter() {
        if chunk.len() < 9 || chunk[..4] != CHUNK_MAGIC {
            return Err("a change chunk that is not an Automerge chunk".into());
        }
        let kind = chunk[8];
        if kind != CHUNK_TYPE_CHANGE {
            let what = match kind {
                0 => "a whole document beside other chunks",
                2 => "a compressed change",
                3 => "a bundle of changes",
                _ => "a chunk of unknown type",
            };
            return Err(format!(
                "{what} (chunk type {kind}); only plain changes (type {CHUNK_TYPE_CHANGE}) are accepted"
            ));
        }
        // Exactly one chunk per entry: Automerge reads every chunk in the bytes it is given, so
        // a plain change with a compressed document behind it would pass the type check above.
        let (length, used) =
            leb128_u64(&chunk[9..]).ok_or("a change chunk with a malformed length")?;
        let expected = length
            .checked_add((9 + used) as u64)
            .ok_or("a change chunk with a malformed length")?;
        if expected != chunk.len() as u64 {
            return Err(format!(
                "a change entry of {} bytes whose chunk declares {expected}; one plain change \
                 per entry is accepted",
                chunk.len()
            ));
        }
    }
    Ok(())
}

/// Bits per entry and probes an honest peer's Bloom filter may use (Automerge uses 10 and 7).
pub const BLOOM_BITS_PER_ENTRY: std::ops::RangeInclusive<u64> = 1..=64;
pub const BLOOM_PROBES: std::ops::RangeInclusive<u64> = 1..=64;

/// Checks the parameters at the start of an encoded Bloom filter (entries, bits per entry,
/// probes; LEB128). Automerge divides by the filter's size in bits and loops once per probe,
/// trusting both: a filter with no bits panics, one with billions of probes allocates and
/// spins without bound.
fn check_bloom_parameters(encoded: &[u8]) -> Result<(), String> {
    if encoded.is_empty() {
        return Ok(());
    }
    let mut fields = [0u64; 3];
    let mut rest = encoded;
    for field in &mut fields {
        let (value, used) = leb128_u64(rest).ok_or("a Bloom filter with a malformed header")?;
        *field = value;
        rest = &rest[used..];
    }
    let [entries, bits_per_entry, probes] = fields;
    if entries == 0 {
        return Ok(());
    }
    if !BLOOM_BITS_PER_ENTRY.contains(&bits_per_entry) {
        return Err(format!(
            "a Bloom filter with {bits_per_entry} bits per entry (1 to 64)"
        ));
    }
    if !BLOOM_PROBES.contains(&probes) {
        return Err(format!("a Bloom filter with {probes} probes (1 to 64)"));
    }
    if rest.is_empty() {
        return Err("a Bloom filter with entries but no bits".into());
    }
    Ok(())
}

/// Decodes one unsigned LEB128 number of at most 64 bits: the value and the bytes it took.
fn leb128_u64(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}
