//! The frames of the federation protocol as plain values; the transport maps them to protobuf.

use automerge::ChangeHash;

use crate::scope::ShareableDocId;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 4;
/// The oldest version this build still links with; peers with an older (or newer) one are
/// refused.
pub const OLDEST_PROTOCOL_VERSION: u32 = 3;
/// The version from which a peer takes a whole saved document ([`crate::saved`]) as the first
/// message of a document it holds nothing of; older peers are sent changes only.
pub const WHOLE_DOCUMENTS_SINCE: u32 = 4;

/// SHA-256 over a complete list of documents and their heads; see [`Summary::digest`].
pub type SummaryDigest = [u8; 32];

/// The second frame from each side: its heads of the documents shared on the link.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The documents listed. When `only_changed` is false: every document the sender holds.
    /// When true: only the documents whose heads differ from the heads both sides had in common
    /// when this link last synced them; every other document is as the receiver last saw it.
    /// Empty heads mean the sender does not hold the document.
    pub docs: Vec<(ShareableDocId, Vec<ChangeHash>)>,
    /// Whether `docs` lists only the documents that changed since the last sync.
    pub only_changed: bool,
    /// [`summary_digest`] of the sender's complete list, so the receiver can check that what it
    /// remembers plus the changes listed adds up to what the sender holds.
    pub digest: SummaryDigest,
    /// The generation of each listed document whose generation is not 0 (see
    /// [`Engine::new_generation`](crate::Engine::new_generation)); a listed document missing
    /// here is at generation 0. A document not listed is at the generation the receiver holds.
    pub generations: Vec<(ShareableDocId, u64)>,
}

/// One unit on a federation link.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// The first frame from each side.
    Hello { protocol_version: u32 },
    /// The second frame from each side: its heads, completely or as changes since the last sync.
    Summary(Summary),
    /// Asks the peer for a complete summary because its summary of changes did not add up.
    SummaryRequest,
    /// One Automerge sync message for one document.
    DocSync {
        doc: ShareableDocId,
        /// The generation of the document the message belongs to: a message for an older
        /// generation than the receiver's is dropped, one for a newer generation replaces the
        /// receiver's document when it carries the whole new generation.
        generation: u64,
        message: Vec<u8>,
    },
    /// Nothing else to say for a while.
    Keepalive,
    /// The sender closes the link, and says why.
    Goodbye { code: i32, message: String },
}

impl Frame {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Summary(_) => "summary",
            Frame::SummaryRequest => "summary_request",
            Frame::DocSync { .. } => "doc_sync",
            Frame::Keepalive => "keepalive",
            Frame::Goodbye { .. } => "goodbye",
        }
    }
}

/// SHA-256 over documents and their heads: for each document with at least one head, in id
/// order, its id, a zero byte, the number of heads (u32, big endian) and the heads in order.
/// Documents with no heads are left out: holding an empty document is the same as not holding it.
/// Every document is taken to be at generation 0 (see [`summary_digest_generations`]).
pub fn summary_digest<'a>(
    docs: impl IntoIterator<Item = (&'a ShareableDocId, &'a [ChangeHash])>,
) -> SummaryDigest {
    summary_digest_generations(docs.into_iter().map(|(id, heads)| (id, 0, heads)))
}

/// Like [`summary_digest`] with each document's generation: a document at a generation other
/// than 0 has, after its id, a byte 1 and the generation (u64, big endian) before the zero byte,
/// so documents at generation 0 hash as in [`summary_digest`].
pub fn summary_digest_generations<'a>(
    docs: impl IntoIterator<Item = (&'a ShareableDocId, u64, &'a [ChangeHash])>,
) -> SummaryDigest {
    use sha2::{Digest, Sha256};
    let mut entries: Vec<(&ShareableDocId, u64, Vec<ChangeHash>)> = docs
        .into_iter()
        .filter(|(_, _, heads)| !heads.is_empty())
        .map(|(id, generation, heads)| {
            let mut heads = heads.to_vec();
            heads.sort();
            (id, generation, heads)
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut hasher = Sha256::new();
    for (id, generation, heads) in entries {
        hasher.update(id.as_str().as_bytes());
        if generation != 0 {
            hasher.update([1u8]);
            hasher.update(generation.to_be_bytes());
        }
        hasher.update([0u8]);
        hasher.update((heads.len() as u32).to_be_bytes());
        for head in heads {
            hasher.update(head.0);
        }
    }
    hasher.finalize().into()
}
