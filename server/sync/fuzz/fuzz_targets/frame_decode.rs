//! Arbitrary bytes into the federation wire decoder (size limit, protobuf, then the mapping to
//! engine frames): it never panics, never yields more than it was given, and every frame it
//! accepts survives a round trip through the encoder unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sfs_sync::{Frame, ShareableDocId};
use sfs_sync_fuzz::{decode_wire, encode_wire};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = decode_wire(data) else {
        return;
    };
    let decoded_len = match &frame {
        Frame::Summary(summary) => summary
            .docs
            .iter()
            .map(|(id, heads)| 2 + id.as_str().len() + 34 * heads.len())
            .sum(),
        Frame::DocSync { doc, message, .. } => doc.as_str().len() + message.len(),
        Frame::Goodbye { message, .. } => message.len(),
        _ => 0,
    };
    assert!(
        decoded_len <= data.len(),
        "{} bytes decoded into a {} of {decoded_len} bytes",
        data.len(),
        frame.kind()
    );
    let ids: Vec<&ShareableDocId> = match &frame {
        Frame::Summary(summary) => summary.docs.iter().map(|(id, _)| id).collect(),
        Frame::DocSync { doc, .. } => vec![doc],
        _ => Vec::new(),
    };
    for id in ids {
        assert_eq!(ShareableDocId::parse(id.as_str()).as_ref(), Ok(id));
    }
    let again = decode_wire(&encode_wire(frame.clone())).expect("an encoded frame decodes");
    assert_eq!(again, frame);
});
