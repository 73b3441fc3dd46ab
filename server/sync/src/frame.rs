//! The frames of the federation protocol as plain values; the transport maps them to protobuf.

use automerge::ChangeHash;

use crate::scope::ShareableDocId;

/// The protocol version this build speaks. Peers with another version are refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// One unit on a federation link.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// The first frame from each side.
    Hello { protocol_version: u32 },
    /// The second frame from each side: heads of every document shared on the link.
    Summary(Vec<(ShareableDocId, Vec<ChangeHash>)>),
    /// One Automerge sync message for one document.
    DocSync {
        doc: ShareableDocId,
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
            Frame::DocSync { .. } => "doc_sync",
            Frame::Keepalive => "keepalive",
            Frame::Goodbye { .. } => "goodbye",
        }
    }
}
