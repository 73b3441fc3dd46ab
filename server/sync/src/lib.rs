//! The federation sync core of stadforstad, free of I/O.
//!
//! This crate decides *what* crosses a federation link; the node's transport decides *how*.
//! Nothing here opens a socket, reads a clock, touches a disk or spawns a task: the driver feeds
//! events in ([`Engine::connect`], [`Engine::receive`], [`Engine::edit`], [`Engine::tick`]) and
//! performs the [`Output`] that comes back (frames to send, bytes to persist, links to close).
//! Tests and the simulator drive it the same way without sockets.
//!
//! - [`scope`]: document ids, their scope and owner, node identities, and the owner-writes rule.
//! - [`frame`]: the frames of the federation protocol, as plain Rust values.
//! - [`engine`]: the state machine that runs Automerge's sync protocol per document and link.
//! - [`driver`]: the one executor of the engine's output: the [`driver::Storage`] trait (and an
//!   in-memory store with failpoints), an ordered queue of outputs, one writer that stores a
//!   batch and syncs once, and only then releases frames, acknowledgements and notifications.
//! - [`screen`]: a received frame decoded, checked and parsed before the engine (and its
//!   lock) is involved.
//! - [`compaction`]: when a stored document gets a chunk and when a whole snapshot.
//! - [`recent`]: a document's last changes, from which most sync messages are made without
//!   Automerge walking its whole history.
//! - [`receive`]: a received sync message applied as Automerge does, without its walk over the
//!   whole history.
//! - [`change_ops`]: the map keys and sequences a change touches, read from its columns (for
//!   the privacy guard) instead of expanding every operation.

pub mod backoff;
pub mod change_ops;
mod columns;
pub mod compaction;
pub mod driver;
pub mod engine;
pub mod frame;
pub mod receive;
pub mod recent;
pub mod saved;
pub mod scope;
pub mod screen;
pub mod storage;

pub use driver::{
    Driver, DriverEditError, EngineCall, RecordingTransport, Released, SnapshotInProgress,
    StorageFailure, Transport,
};
pub use engine::{
    generation_of, CloseReason, ConnId, DocPersist, EditError, Engine, EngineConfig, EngineError,
    LogEvent, MessageCounts, Output, PersistKind, StatusCode, GENERATION_KEY,
};
pub use frame::{
    summary_digest, summary_digest_generations, Frame, Summary, SummaryDigest,
    OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION, WHOLE_DOCUMENTS_SINCE,
};
pub use scope::{
    actor_belongs_to, actor_prefix, run_actor, DocId, NodeId, Owner, Role, Scope, ScopeError,
    ShareableDocId,
};
pub use screen::{read_frame, ReadFrame};
pub use storage::{LoadedDoc, MemoryError, MemoryStorage, Storage};
