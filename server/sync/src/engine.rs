//! The sync engine: one per node, holding every shareable document and every federation link.
//!
//! Each link goes through three phases: both sides send `Hello` and then a `Summary` of their
//! document heads at once; a document whose heads differ starts Automerge's sync protocol, one
//! whose heads are equal is marked as in step so that the next change costs one message.
//!
//! **Reconnects cost what changed.** The summary lists only the documents whose heads differ
//! from the heads both sides had in common when the link last synced them (the `shared_heads`
//! of the persisted sync states), plus a digest of the sender's complete list. The receiver
//! rebuilds the sender's complete list from its own persisted states and the changes listed; if
//! the digest does not match (a crash lost a sync state, a backup was restored) it asks for a
//! complete summary with `SummaryRequest`. A reconnect with nothing changed is therefore four
//! small frames whatever the number of documents. After
//! that, every change (an edit here, or a change accepted from a peer) is offered at once to every
//! other open link: that is how the national hub and a county hub relay (a change from a city
//! goes to the county's other cities and upstream, one from upstream to its cities; never back
//! on the link it came from).
//!
//! **Owner writes.** Each link keeps one Automerge `sync::State` per document. For a document
//! the peer may not change, the state is read-only, so an honest peer is told not to send
//! changes. A peer that sends them anyway is in breach: the message is refused before Automerge
//! sees it, the link is closed with `PermissionDenied`, and a [`LogEvent::Refused`] is emitted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

use automerge::sync::{self, BloomFilter, Have, SyncDoc};
use automerge::transaction::{Transactable, Transaction};
use automerge::{ActorId, Automerge, ChangeHash, ReadDoc};

use crate::compaction::{Compaction, CompactionPolicy};
use crate::frame::{
    summary_digest, summary_digest_generations, Frame, Summary, SummaryDigest,
    OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION, WHOLE_DOCUMENTS_SINCE,
};
use crate::recent::{self, RecentChanges};
use crate::saved::{check_saved_document, is_saved_document, DocumentBounds};
use crate::scope::{
    accepts_changes_from, actor_belongs_to, owner_nodes, shared_on_link, NodeId, ShareableDocId,
};
use crate::screen::{read_frame, ReadFrame, ReadLimits, ReadMessage, Unreadable, WholeDocument};

/// Identifies one federation link for as long as it is open; chosen by the driver.
pub type ConnId = u64;

/// The gRPC status codes the engine closes links with (same numbers as gRPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    Unavailable = 14,
}

/// Why the engine closes a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: StatusCode,
    pub message: String,
}

/// Tunables of the engine; times are in milliseconds of the driver's clock.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Send a keepalive after this long with nothing else sent on a link.
    pub keepalive_interval_ms: u64,
    /// Close a link after this long with nothing received (also bounds the handshake).
    pub peer_timeout_ms: u64,
    /// Largest Automerge sync message accepted from a peer, in bytes.
    pub max_message_bytes: usize,
    /// Write a full snapshot of a document after at most this many incremental chunks.
    pub compact_after_chunks: usize,
    /// Write a full snapshot once the incremental chunks stored beside the last one add up to
    /// more than half its size (and at least this many bytes): the stored bytes stay within
    /// 1.5 × the document's saved size, and the cost of snapshots per write stays constant as
    /// the document grows.
    pub compact_min_bytes: usize,
    /// Local edits are not offered to the links at once but marked, and offered together by
    /// [`Engine::push_pending`]: under a burst of writes the sync protocol (whose message
    /// generation walks the document's history) then runs once per burst, not once per write.
    pub defer_local_pushes: bool,
    /// Most documents a peer may list in one summary (its whole federation view): a summary
    /// listing more is refused with `ResourceExhausted` and the link closed.
    pub max_docs_per_peer: usize,
    /// Most operations one change received from a peer may hold (the API's largest edit, a
    /// record with its longest text fields, stays far below): refused before Automerge applies
    /// it, counted from the change's header.
    pub max_change_ops: u64,
    /// Most operations a document may hold after a peer's changes are applied.
    pub max_doc_ops: u64,
    /// Most characters one change may insert into one text field (the API's longest field
    /// holds 20,000); checked on the change's operations only for changes with more
    /// operations than this, so small changes cost nothing.
    pub max_text_insert_chars: u64,
    /// A peer asking again for a whole document it was sent on this link (a message with no
    /// heads, or with the reset flag) gets at most one full resend per document per this many
    /// milliseconds; other such requests are answered with what it has not been sent.
    pub reset_interval_ms: u64,
    /// The national hub's identity, which owns the national documents. A node whose peer is the
    /// national hub knows it from the link; a city whose upstream is a county hub needs it to
    /// check who wrote a change to a national document two hops away: without it, such a
    /// change is refused (`PermissionDenied`) and the link closed.
    pub national_hub: Option<NodeId>,
    /// The national hub's standbys (national hubs too, each with its own identity): their edits
    /// to national documents, relayed by the hub this node links to, are taken like its own.
    pub standby_hubs: Vec<NodeId>,
    /// Most changes a whole saved document from a peer may claim ([`crate::saved`]); with
    /// [`EngineConfig::max_doc_ops`] and [`EngineConfig::max_document_bytes`] it bounds what
    /// loading one costs. A node sends its document whole only within the same bounds.
    pub max_doc_changes: u64,
    /// Most bytes a whole saved document from a peer may take once its compressed columns are
    /// inflated.
    pub max_document_bytes: u64,
    /// Most operations of a peer's sync message applied in one engine call: a larger message
    /// is applied in slices of about this many ([`Engine::receive_read`]), and the driver
    /// releases the engine lock between them, so other links and the API are not held up for
    /// the whole message.
    pub apply_slice_ops: u64,
}

impl EngineConfig {
    /// What a frame from a peer may hold ([`read_frame`]).
    pub fn read_limits(&self) -> ReadLimits {
        ReadLimits {
            max_message_bytes: self.max_message_bytes,
            document: DocumentBounds {
                max_ops: self.max_doc_ops,
                max_changes: self.max_doc_changes,
                max_inflated_bytes: self.max_document_bytes,
            },
        }
    }

    /// The compaction policy these settings make ([`crate::compaction`]).
    pub fn compaction(&self) -> CompactionPolicy {
        CompactionPolicy {
            after_chunks: self.compact_after_chunks,
            min_bytes: self.compact_min_bytes,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            keepalive_interval_ms: 15_000,
            peer_timeout_ms: 60_000,
            max_message_bytes: 16 * 1024 * 1024,
            compact_after_chunks: 1024,
            compact_min_bytes: 64 * 1024,
            defer_local_pushes: false,
            max_docs_per_peer: 10_000,
            max_change_ops: 250_000,
            max_doc_ops: 50_000_000,
            max_text_insert_chars: 50_000,
            reset_interval_ms: 60_000,
            national_hub: None,
            standby_hubs: Vec::new(),
            apply_slice_ops: 20_000,
            max_doc_changes: 1_000_000,
            max_document_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Errors of local operations on the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("document {doc} is written only by {owner}; this node ({me}) may not change it: make the change there")]
    NotOwner {
        doc: ShareableDocId,
        owner: crate::scope::Owner,
        me: NodeId,
    },
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    #[error("version {0} of the document is not known here")]
    UnknownVersion(ChangeHash),
    /// An edit that would take the document over the content limits every peer enforces
    /// ([`EngineConfig::max_doc_ops`], [`EngineConfig::max_change_ops`]): no peer would accept
    /// it, so it is refused here, where it is made.
    #[error("document {doc} is full: {problem}")]
    OverContentLimit {
        doc: ShareableDocId,
        problem: String,
    },
}

/// How a document's bytes are to be persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistKind {
    /// New changes since the last persisted state; add them next to what is stored.
    Incremental,
    /// The whole document; it replaces every chunk and snapshot stored before.
    Snapshot,
}

/// Bytes of one document that the driver must write to storage.
#[derive(Debug, Clone)]
pub struct DocPersist {
    pub doc: ShareableDocId,
    pub kind: PersistKind,
    pub bytes: Vec<u8>,
    /// The document's heads once these bytes are applied.
    pub heads: Vec<ChangeHash>,
}

/// Things worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// A peer sent something the owner-writes rule or the protocol forbids.
    Refused {
        peer: NodeId,
        doc: Option<ShareableDocId>,
        reason: String,
    },
    /// A link finished its handshake.
    LinkOpen { peer: NodeId, docs_to_sync: usize },
    /// A peer sent a message of a generation of `doc` older than this node's: it was dropped.
    StaleGeneration {
        peer: NodeId,
        doc: ShareableDocId,
        theirs: u64,
        ours: u64,
    },
    /// This node replaced its document with a newer generation (its own, or one a peer sent)
    /// and destroyed the older one.
    NewGeneration {
        doc: ShareableDocId,
        generation: u64,
    },
}

/// What the driver must do after an event, in this order: persist documents (durably), persist
/// sync states, send frames, close links.
#[derive(Debug, Default)]
#[must_use = "the output holds frames to send and bytes to persist"]
pub struct Output {
    pub persist_docs: Vec<DocPersist>,
    pub persist_sync_states: Vec<(NodeId, ShareableDocId, Vec<u8>)>,
    pub sends: Vec<(ConnId, Frame)>,
    pub closes: Vec<(ConnId, CloseReason)>,
    /// Documents whose content changed (by an edit or from a peer).
    pub changed_docs: Vec<ShareableDocId>,
    pub events: Vec<LogEvent>,
    /// Links the peer ended (it said Goodbye): the driver ends their streams without a status
    /// of its own, after what is queued for them.
    pub ended: Vec<ConnId>,
    /// Documents a caught panic may have left half-changed: the driver must reload each from
    /// storage at once ([`Engine::reload_document`]) before the engine is used again.
    pub reload_docs: Vec<ShareableDocId>,
    /// Documents replaced by a newer generation, and that generation. Before it persists
    /// anything else of this output, the driver destroys everything it stores of each: the
    /// older generation's chunks and snapshots and every sync state of it, with every peer.
    /// The new generation follows in `persist_docs` as a snapshot.
    pub replaced_docs: Vec<(ShareableDocId, u64)>,
    /// Links whose received sync message is applied only in part: the driver calls
    /// [`Engine::continue_receive`] for each (after storing this output) until none is left.
    pub unfinished: Vec<ConnId>,
    /// Documents whose snapshot fell due: after releasing this output, the driver stores a
    /// snapshot of each as durable by then ([`Engine::snapshot_for_compaction`],
    /// [`Engine::compacted`]).
    pub compact_docs: Vec<ShareableDocId>,
}

impl Output {
    /// Appends another output after this one.
    pub fn extend(&mut self, other: Output) {
        // What this output would store of a document the other one replaced belongs to the
        // destroyed generation.
        for (id, _) in &other.replaced_docs {
            self.persist_docs.retain(|persist| &persist.doc != id);
            self.persist_sync_states.retain(|(_, doc, _)| doc != id);
        }
        self.persist_docs.extend(other.persist_docs);
        self.persist_sync_states.extend(other.persist_sync_states);
        self.sends.extend(other.sends);
        self.closes.extend(other.closes);
        self.changed_docs.extend(other.changed_docs);
        self.events.extend(other.events);
        self.ended.extend(other.ended);
        self.reload_docs.extend(other.reload_docs);
        self.replaced_docs.extend(other.replaced_docs);
        self.unfinished.extend(other.unfinished);
        self.compact_docs.extend(other.compact_docs);
    }
}

struct DocEntry {
    doc: Automerge,
    /// Heads at the last [`DocPersist`]; the next incremental chunk starts here.
    persisted_heads: Vec<ChangeHash>,
    /// What is stored beside the last snapshot ([`crate::compaction`]); after a failed write
    /// the next persist is a full snapshot.
    compaction: Compaction,
    /// The document's generation ([`generation_of`]), cached.
    generation: u64,
    /// Its last changes, from which most sync messages are made ([`crate::recent`]).
    recent: RecentChanges,
}

impl DocEntry {
    /// A new, empty document whose own edits carry `actor`.
    fn empty(actor: ActorId) -> DocEntry {
        let doc = Automerge::new().with_actor(actor);
        DocEntry {
            recent: RecentChanges::new(&doc),
            doc,
            persisted_heads: Vec::new(),
            compaction: Compaction::default(),
            generation: 0,
        }
    }

    /// A document loaded from storage or adopted from a peer, as persisted.
    fn loaded(doc: Automerge, chunks_since_snapshot: usize, needs_snapshot: bool) -> DocEntry {
        DocEntry {
            persisted_heads: doc.get_heads(),
            generation: generation_of(&doc),
            recent: RecentChanges::new(&doc),
            doc,
            compaction: Compaction::loaded(chunks_since_snapshot, needs_snapshot),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitHello,
    AwaitSummary,
    Open,
}

struct Conn {
    peer: NodeId,
    phase: Phase,
    /// One Automerge sync state per document exchanged on this link.
    states: HashMap<ShareableDocId, sync::State>,
    /// Sync states persisted from earlier links with the same peer, used when a document's
    /// state is first needed.
    stored: HashMap<ShareableDocId, Vec<u8>>,
    /// The heads both sides had in common when this peer and this node last synced each
    /// document (sorted; documents with none left out), from the persisted sync states.
    last_shared: BTreeMap<ShareableDocId, Vec<ChangeHash>>,
    /// A complete summary was asked for because the peer's summary of changes did not add up.
    asked_complete_summary: bool,
    /// When this link last honoured a peer's request to resend a whole document, per document.
    resets: HashMap<ShareableDocId, u64>,
    /// The generation of each document the peer holds, as its summary and messages said.
    their_generations: HashMap<ShareableDocId, u64>,
    /// Documents whose whole newer generation was offered on this link to a peer holding an
    /// older one, and that generation: offered once, not once per stale message.
    offered_generation: HashMap<ShareableDocId, u64>,
    last_sent_ms: u64,
    last_received_ms: u64,
    /// The peer's protocol version takes a whole document as the first message of one it holds
    /// nothing of ([`WHOLE_DOCUMENTS_SINCE`]).
    takes_whole_documents: bool,
    /// A received sync message applied in slices, while slices are left.
    applying: Option<Applying>,
}

/// A sync message being applied in slices ([`EngineConfig::apply_slice_ops`]).
struct Applying {
    doc: ShareableDocId,
    /// The document's generation when the message arrived.
    generation: u64,
    /// The changes not applied yet, in the order they came; the last slice goes through
    /// Automerge's `receive_sync_message` with the rest of the message.
    slices: VecDeque<Vec<automerge::Change>>,
    /// The message without its changes.
    message: sync::Message,
    /// For the first message of a newer generation: the document it builds, adopted (or
    /// refused) after the last slice.
    adopting: Option<Adopting>,
}

/// A newer generation of a document, built slice by slice apart from the one in use.
struct Adopting {
    generation: u64,
    fresh: Automerge,
}

/// The changes received that are new here, when what is stored is up to date: if exactly these
/// get applied, their bytes are what to store (`save_after` would walk the document's whole
/// history to find them).
struct FreshChanges {
    changes: Vec<automerge::Change>,
    changes_before: u64,
}

impl FreshChanges {
    fn before(entry: &DocEntry, changes: &[automerge::Change]) -> Option<FreshChanges> {
        let up_to_date = !entry.compaction.needs_snapshot()
            && sorted(entry.doc.get_heads()) == sorted(entry.persisted_heads.clone());
        if !up_to_date {
            return None;
        }
        let new: Vec<automerge::Change> = changes
            .iter()
            .filter(|c| entry.doc.get_change_meta_by_hash(&c.hash()).is_none())
            .cloned()
            .collect();
        Some(FreshChanges {
            changes: new,
            changes_before: entry.doc.stats().num_changes,
        })
    }

    /// The changes, if exactly these were applied.
    fn if_exactly(self, doc: &Automerge) -> Option<Vec<automerge::Change>> {
        let exactly = doc.stats().num_changes == self.changes_before + self.changes.len() as u64
            && self
                .changes
                .iter()
                .all(|c| doc.get_change_meta_by_hash(&c.hash()).is_some());
        exactly.then_some(self.changes)
    }
}

/// The stored form of changes: their bytes, one after the other.
fn bytes_of(changes: &[automerge::Change]) -> Vec<u8> {
    changes
        .iter()
        .flat_map(|c| c.raw_bytes().to_vec())
        .collect()
}

/// After a received message or slice was applied to `entry`: remembers the changes that were
/// new (`fresh`, when known exactly) for the next messages, and hands out their bytes.
fn note_received(entry: &mut DocEntry, fresh: Option<FreshChanges>) -> Option<Vec<u8>> {
    let fresh = fresh.and_then(|fresh| fresh.if_exactly(&entry.doc));
    match &fresh {
        Some(changes) => entry.recent.applied(&entry.doc, changes),
        None => entry.recent.reset(&entry.doc),
    }
    fresh.map(|changes| bytes_of(&changes))
}

/// The next sync message for a peer in `state`, if there is one: made from the document's
/// recent changes when they suffice, else by Automerge. `Err` if Automerge panicked (the
/// state is then suspect).
fn generate_message(
    entry: &DocEntry,
    state: &mut sync::State,
    counts: &mut MessageCounts,
    whole: Option<&ReadLimits>,
) -> Result<Option<sync::Message>, ()> {
    if let Some(message) = whole.and_then(|limits| whole_document_message(entry, state, limits)) {
        counts.whole_documents += 1;
        return Ok(Some(message));
    }
    #[cfg(debug_assertions)]
    let before = state.clone();
    if let Some(message) = recent::generate(&entry.doc, &entry.recent, state) {
        #[cfg(debug_assertions)]
        check_against_automerge(&entry.doc, before, state, &message);
        counts.from_recent += u64::from(message.is_some());
        return Ok(message);
    }
    let message =
        catch_unwind(AssertUnwindSafe(|| entry.doc.generate_sync_message(state))).map_err(|_| ());
    counts.by_automerge += u64::from(matches!(message, Ok(Some(_))));
    message
}

/// The document whole, for a peer known to hold nothing of it (its heads are known and empty)
/// that takes changes from this node: one saved document loads far faster than its changes
/// apply one by one. Automerge makes it (its version-2 message) when the state allows it; it is
/// sent only if it passes the same bounds its receiver holds it to ([`check_saved_document`],
/// the message size), so an honest node never sends what its peer refuses (which would close
/// the link, and the next link would send it again). `None` (the state untouched) otherwise.
fn whole_document_message(
    entry: &DocEntry,
    state: &mut sync::State,
    limits: &ReadLimits,
) -> Option<sync::Message> {
    let holds_nothing = state.their_heads.as_ref().is_some_and(Vec::is_empty);
    // Only the first message carries the document: once anything was sent on the link (the
    // document itself, before the peer answered; or a repeated request for the whole document
    // within the reset interval, which keeps what was sent), the next ones carry changes.
    let sent_nothing = state.sent_hashes.is_empty();
    if !holds_nothing || !sent_nothing || state.peer_read_only || entry.doc.get_heads().is_empty() {
        return None;
    }
    let mut trial = state.clone();
    let capabilities = trial.their_capabilities.get_or_insert_with(Vec::new);
    if !capabilities.contains(&sync::Capability::MessageV2) {
        capabilities.push(sync::Capability::MessageV2);
    }
    let message = catch_unwind(AssertUnwindSafe(|| {
        entry.doc.generate_sync_message(&mut trial)
    }))
    .ok()??;
    let within_bounds = {
        let mut chunks = message.changes.iter();
        match (chunks.next(), chunks.next()) {
            (Some(only), None) => {
                is_saved_document(only) && check_saved_document(only, &limits.document).is_ok()
            }
            _ => false,
        }
    } && message.clone().encode().len() <= limits.max_message_bytes;
    if !within_bounds {
        return None;
    }
    // Later messages on the link are changes again.
    send_changes_only(&mut trial);
    *state = trial;
    Some(message)
}

/// Debug builds: the message made from recent changes is Automerge's own, and so is the state
/// it leaves. The changes are compared as a set of hashes: a change's bytes may be compressed
/// or not, and within a batch applied at once Automerge may number changes in another causal
/// order than the one they came in (which is the order sent from recent changes).
#[cfg(debug_assertions)]
fn check_against_automerge(
    doc: &Automerge,
    mut state: sync::State,
    ours: &sync::State,
    message: &Option<sync::Message>,
) {
    let Ok(theirs) = catch_unwind(AssertUnwindSafe(|| doc.generate_sync_message(&mut state)))
    else {
        return;
    };
    let normal = |m: &Option<sync::Message>| {
        m.as_ref().map(|m| {
            let hashes: Vec<ChangeHash> = m
                .changes
                .iter()
                .map(|bytes| {
                    automerge::Change::try_from(bytes)
                        .expect("a change this node holds parses")
                        .hash()
                })
                .collect();
            (
                m.heads.clone(),
                m.need.clone(),
                m.have.clone(),
                sorted(hashes),
                m.flags,
            )
        })
    };
    assert_eq!(
        normal(message),
        normal(&theirs),
        "a sync message made from recent changes differs from Automerge's"
    );
    assert_eq!(
        ours, &state,
        "a sync state after a message made from recent changes differs from Automerge's"
    );
}

/// Parsed changes back as the chunks of a sync message, for Automerge's `receive_sync_message`.
fn chunks_of(changes: &[automerge::Change]) -> sync::ChunkList {
    changes
        .iter()
        .map(|change| change.raw_bytes().to_vec())
        .collect::<Vec<_>>()
        .into()
}

/// Splits changes, in order, into slices of at most `max_ops` operations (a change larger than
/// that is a slice of its own; a change is never split).
fn slices_of(changes: Vec<automerge::Change>, max_ops: u64) -> VecDeque<Vec<automerge::Change>> {
    let mut slices = VecDeque::new();
    let mut slice = Vec::new();
    let mut ops = 0u64;
    for change in changes {
        let len = change.len() as u64;
        if !slice.is_empty() && ops + len > max_ops {
            slices.push_back(std::mem::take(&mut slice));
            ops = 0;
        }
        ops += len;
        slice.push(change);
    }
    if !slice.is_empty() {
        slices.push_back(slice);
    }
    slices
}

/// The sync engine. See the module documentation.
pub struct Engine {
    me: NodeId,
    actor: ActorId,
    config: EngineConfig,
    docs: BTreeMap<ShareableDocId, DocEntry>,
    conns: BTreeMap<ConnId, Conn>,
    /// Documents edited here and not yet offered to the links (see
    /// [`EngineConfig::defer_local_pushes`]).
    pending_pushes: std::collections::BTreeSet<ShareableDocId>,
    counts: MessageCounts,
}

/// How the sync messages this engine sent were made (for metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageCounts {
    /// Made from a document's recent changes ([`crate::recent`]).
    pub from_recent: u64,
    /// Made by Automerge, over the document's whole change graph.
    pub by_automerge: u64,
    /// A whole saved document, for a peer that held nothing of it (also made by Automerge).
    pub whole_documents: u64,
}

impl Engine {
    /// A new engine for node `me`; `actor` is the Automerge actor id of this node's own edits.
    pub fn new(me: NodeId, actor: ActorId, config: EngineConfig) -> Engine {
        Engine {
            me,
            actor,
            config,
            docs: BTreeMap::new(),
            conns: BTreeMap::new(),
            pending_pushes: std::collections::BTreeSet::new(),
            counts: MessageCounts::default(),
        }
    }

    /// For the driver, after releasing an output with [`Output::compact_docs`]: a copy of the
    /// document to store a snapshot of, if that is still wanted (the document may have been
    /// replaced, or stored whole, since). The driver asks while the write queue is empty, so
    /// the copy holds exactly what is durable.
    pub fn snapshot_for_compaction(&self, id: &ShareableDocId) -> Option<Automerge> {
        let entry = self.docs.get(id)?;
        entry.compaction.is_compacting().then(|| entry.doc.clone())
    }

    /// The driver stored a snapshot of `saved_len` bytes of `id` (made after
    /// [`Engine::snapshot_for_compaction`]) followed by `kept_len` bytes of the changes stored
    /// while it was made: those count as chunks beside the snapshot, so the stored bytes stay
    /// within the policy's bounds of the snapshot itself.
    pub fn compacted(&mut self, id: &ShareableDocId, saved_len: usize, kept_len: usize) {
        if let Some(entry) = self.docs.get_mut(id) {
            if entry.compaction.is_compacting() {
                entry.compaction.stored_snapshot(saved_len);
                if kept_len > 0 {
                    entry.compaction.stored_chunk(kept_len);
                }
            }
        }
    }

    /// How many recent changes of `id` are kept for making sync messages ([`crate::recent`]).
    pub fn recent_changes_kept(&self, id: &ShareableDocId) -> usize {
        self.docs.get(id).map_or(0, |entry| entry.recent.len())
    }

    /// How the sync messages sent so far were made.
    pub fn message_counts(&self) -> MessageCounts {
        self.counts
    }

    /// The settings the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// This node's identity.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// Adds a document loaded from storage; `stored_chunks` is how many incremental chunks are
    /// stored beside its last snapshot.
    pub fn load_document(&mut self, id: ShareableDocId, mut doc: Automerge, stored_chunks: usize) {
        doc.set_actor(self.actor.clone());
        self.docs
            .insert(id, DocEntry::loaded(doc, stored_chunks, false));
    }

    /// The generation of a document this node holds (see [`Engine::new_generation`]).
    pub fn generation(&self, id: &ShareableDocId) -> Option<u64> {
        self.docs.get(id).map(|entry| entry.generation)
    }

    /// One document, if this node has it.
    pub fn document(&self, id: &ShareableDocId) -> Option<&Automerge> {
        self.docs.get(id).map(|entry| &entry.doc)
    }

    /// Every document this node has.
    pub fn documents(&self) -> impl Iterator<Item = (&ShareableDocId, &Automerge)> {
        self.docs.iter().map(|(id, entry)| (id, &entry.doc))
    }

    /// The open links: connection id, peer, and whether the handshake is complete.
    pub fn links(&self) -> impl Iterator<Item = (ConnId, &NodeId, bool)> {
        self.conns
            .iter()
            .map(|(id, conn)| (*id, &conn.peer, conn.phase == Phase::Open))
    }

    /// The heads of `doc` last announced by `peer` on an open link, if known.
    pub fn peer_heads(&self, peer: &NodeId, doc: &ShareableDocId) -> Option<Vec<ChangeHash>> {
        self.conns
            .values()
            .filter(|conn| &conn.peer == peer)
            .find_map(|conn| conn.states.get(doc).and_then(|s| s.their_heads.clone()))
    }

    /// For every open link and document: how many changes of the document the peer is not
    /// known to have (all of them while its heads are unknown).
    pub fn peer_lag(&self) -> Vec<(NodeId, ShareableDocId, usize)> {
        let mut lag = Vec::new();
        for conn in self.conns.values().filter(|c| c.phase == Phase::Open) {
            for (id, entry) in &self.docs {
                let heads = conn
                    .states
                    .get(id)
                    .and_then(|s| s.their_heads.clone())
                    .unwrap_or_default();
                let known = heads
                    .iter()
                    .all(|h| entry.doc.get_change_meta_by_hash(h).is_some());
                let missing = if known {
                    entry.doc.get_changes_meta(&heads).len()
                } else {
                    0
                };
                lag.push((conn.peer.clone(), id.clone(), missing));
            }
        }
        lag
    }

    /// Every document's heads last announced by the peer on link `conn`.
    pub fn link_peer_heads(&self, conn: ConnId) -> Vec<(ShareableDocId, Vec<ChangeHash>)> {
        self.conns
            .get(&conn)
            .map(|conn| {
                conn.states
                    .iter()
                    .filter_map(|(doc, state)| Some((doc.clone(), state.their_heads.clone()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// For each open link, whether the peer is known to have exactly our heads of `doc`.
    pub fn doc_sync_with_peers(&self, doc: &ShareableDocId) -> Vec<(NodeId, bool)> {
        let heads = self
            .docs
            .get(doc)
            .map(|e| e.doc.get_heads())
            .unwrap_or_default();
        self.conns
            .values()
            .filter(|conn| conn.phase == Phase::Open)
            .map(|conn| {
                let in_sync = conn
                    .states
                    .get(doc)
                    .and_then(|state| state.their_heads.as_ref())
                    .is_some_and(|theirs| sorted(theirs.clone()) == sorted(heads.clone()));
                (conn.peer.clone(), in_sync)
            })
            .collect()
    }

    /// Changes a document this node owns. `change` runs inside one Automerge transaction; if it
    /// returns an error, nothing is changed. The output holds the bytes to persist (durably,
    /// before acknowledging the edit) and the frames that push the change to every link.
    pub fn edit<R, E>(
        &mut self,
        id: &ShareableDocId,
        now_ms: u64,
        change: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<(R, Output), EditError<E>> {
        self.edit_at(id, None, now_ms, change)
    }

    /// Like [`Engine::edit`], but the change is made as if at the older heads `at` (what the
    /// editor saw when it read the document): anything others changed since is merged with it
    /// by Automerge instead of being overwritten. Unknown heads are refused.
    pub fn edit_at<R, E>(
        &mut self,
        id: &ShareableDocId,
        at: Option<&[ChangeHash]>,
        now_ms: u64,
        change: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<(R, Output), EditError<E>> {
        self.edit_verified(id, at, now_ms, change, |_, _| Ok(()))
    }

    /// Like [`Engine::edit_at`], and before anything is stored or sent, `verify` judges the
    /// document as it stands after the edit — merged with whatever changed since `at` — and the
    /// new change. If it refuses, the change is taken back (the document returns to the heads
    /// it had before the edit) and nothing leaves the engine.
    pub fn edit_verified<R, E>(
        &mut self,
        id: &ShareableDocId,
        at: Option<&[ChangeHash]>,
        now_ms: u64,
        change: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
        verify: impl FnOnce(&Automerge, &automerge::Change) -> Result<(), E>,
    ) -> Result<(R, Output), EditError<E>> {
        if !id.is_owned_by(&self.me) {
            return Err(EditError::Engine(EngineError::NotOwner {
                doc: id.clone(),
                owner: id.owner(),
                me: self.me.clone(),
            }));
        }
        let actor = self.actor.clone();
        let entry = self
            .docs
            .entry(id.clone())
            .or_insert_with(|| DocEntry::empty(actor));
        let before = entry.doc.get_heads();
        let mut tx = match at {
            Some(heads) => {
                if let Some(missing) = heads
                    .iter()
                    .find(|h| entry.doc.get_change_meta_by_hash(h).is_none())
                {
                    return Err(EditError::Engine(EngineError::UnknownVersion(*missing)));
                }
                entry
                    .doc
                    .transaction_at(automerge::PatchLog::inactive(), heads)
                    .expect("an inactive patch log belongs to any document")
            }
            None => entry.doc.transaction(),
        };
        let result = match change(&mut tx) {
            Ok(result) => result,
            Err(err) => {
                tx.rollback();
                return Err(EditError::Rejected(err));
            }
        };
        let (hash, _) = tx.commit();
        let mut out = Output::default();
        if let Some(hash) = hash {
            let config = &self.config;
            let entry = self
                .docs
                .get_mut(id)
                .expect("the document was edited above");
            // The new change, taken once: Automerge rebuilds it from the op set on every call.
            let change = entry.doc.get_change_by_hash(&hash);
            // What every peer would refuse is refused where it is made: an acknowledged edit
            // that can never leave this node would be lost to the federation.
            let verdict = match &change {
                Some(change) => match over_content_limits(&entry.doc, change, config) {
                    Some(problem) => Err(EditError::Engine(EngineError::OverContentLimit {
                        doc: id.clone(),
                        problem,
                    })),
                    None => verify(&entry.doc, change).map_err(EditError::Rejected),
                },
                None => Ok(()),
            };
            if let Err(err) = verdict {
                // Automerge cannot drop a committed change; the document is rebuilt without
                // it. Only refused edits pay for this.
                let back = entry
                    .doc
                    .fork_at(&before)
                    .expect("the heads before the edit are in the document");
                entry.doc = back.with_actor(self.actor.clone());
                // The rebuilt document may order its changes differently.
                entry.recent.reset(&entry.doc);
                return Err(err);
            }
            entry.recent.applied(&entry.doc, change.iter());
            self.trim_recent(id);
            // The new change alone, when it follows directly on what is stored: taking it by
            // hash is cheap, while `save_after` walks the document's whole history.
            let entry = &self.docs[id];
            let fresh = change.and_then(|change| {
                (sorted(change.deps().to_vec()) == sorted(entry.persisted_heads.clone()))
                    .then(|| change.raw_bytes().to_vec())
            });
            self.document_changed(id, None, fresh, &mut out);
            self.finish(&mut out, now_ms);
        }
        Ok((result, out))
    }

    /// Starts a new generation of a document this node owns: `remove` takes out what must go
    /// (inside a transaction on a copy of the document held in memory only), and a fresh
    /// Automerge document is made holding what remains — the current values only, in one
    /// change, with none of the history — and [`GENERATION_KEY`] set to the next generation.
    /// It replaces the document here at once, and every open link is offered it whole; peers
    /// replace their older generation when they receive it ([`Output::replaced_docs`]), and
    /// messages of the older generation are dropped from then on, by every node that holds
    /// the new one. Every version (etag) of the older generation becomes unknown.
    pub fn new_generation<R, E>(
        &mut self,
        id: &ShareableDocId,
        now_ms: u64,
        remove: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<(R, Output), EditError<E>> {
        if !id.is_owned_by(&self.me) {
            return Err(EditError::Engine(EngineError::NotOwner {
                doc: id.clone(),
                owner: id.owner(),
                me: self.me.clone(),
            }));
        }
        let current = self.docs.get(id);
        let generation = current.map_or(0, |entry| entry.generation) + 1;
        let mut scratch = current.map_or_else(Automerge::new, |entry| entry.doc.fork());
        let mut tx = scratch.transaction();
        let result = match remove(&mut tx) {
            Ok(result) => result,
            Err(err) => {
                tx.rollback();
                return Err(EditError::Rejected(err));
            }
        };
        tx.commit();
        let mut fresh = Automerge::new().with_actor(self.actor.clone());
        let mut tx = fresh.transaction();
        let copied = tx
            .put(automerge::ROOT, GENERATION_KEY, generation)
            .and_then(|()| copy_object(&scratch, &automerge::ROOT, &mut tx, &automerge::ROOT));
        if let Err(err) = copied {
            tx.rollback();
            return Err(EditError::Engine(EngineError::Automerge(err)));
        }
        tx.commit();
        drop(scratch);
        let problem = fresh
            .get_changes(&[])
            .first()
            .and_then(|change| over_content_limits(&fresh, change, &self.config));
        if let Some(problem) = problem {
            return Err(EditError::Engine(EngineError::OverContentLimit {
                doc: id.clone(),
                problem,
            }));
        }
        let mut out = Output::default();
        self.replace_generation(id, fresh, None, &mut out);
        self.finish(&mut out, now_ms);
        Ok((result, out))
    }

    /// Whether local edits wait for [`Engine::push_pending`].
    pub fn has_pending_pushes(&self) -> bool {
        !self.pending_pushes.is_empty()
    }

    /// Offers every document edited here since the last push to every open link: one sync
    /// message per document and link, however many edits it holds.
    pub fn push_pending(&mut self, now_ms: u64) -> Output {
        let mut out = Output::default();
        let targets: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.phase == Phase::Open)
            .map(|(conn_id, _)| *conn_id)
            .collect();
        for id in std::mem::take(&mut self.pending_pushes) {
            self.sync_to_many(&targets, &id, &mut out);
        }
        self.finish(&mut out, now_ms);
        out
    }

    /// The driver could not store the bytes of `id` it was given. Everything of the document
    /// that is not on disk is forgotten — `stored` is the document as the store holds it, `None`
    /// when nothing of it is stored — and every link is closed, so that nothing unsaved is ever
    /// offered to a peer (a change a peer held but this node lost would come back to haunt it:
    /// Automerge refuses a second change with the same actor and sequence number). Links
    /// reconnect and resync from what is stored; the next persist of the document is a full
    /// snapshot.
    pub fn persist_failed(&mut self, id: &ShareableDocId, stored: Option<Automerge>) -> Output {
        let mut out = Output::default();
        match stored {
            Some(mut doc) => {
                doc.set_actor(self.actor.clone());
                self.docs.insert(id.clone(), DocEntry::loaded(doc, 0, true));
            }
            None => {
                self.docs.remove(id);
            }
        }
        self.pending_pushes.remove(id);
        out.extend(self.close_all_links(
            StatusCode::Unavailable,
            &format!("storing {id} failed; reconnect to resync from what is stored"),
        ));
        out
    }

    /// Replaces a document a caught panic may have left half-changed (see
    /// [`Output::reload_docs`]) with `stored`, the document as the store holds it (`None` when
    /// nothing of it is stored). Nothing unsaved of it was ever offered to a peer: a document
    /// changes in memory and is persisted in the same engine call, before any frame leaves.
    pub fn reload_document(&mut self, id: &ShareableDocId, stored: Option<Automerge>) {
        match stored {
            Some(mut doc) => {
                doc.set_actor(self.actor.clone());
                self.docs.insert(id.clone(), DocEntry::loaded(doc, 0, true));
            }
            None => {
                self.docs.remove(id);
            }
        }
    }

    /// Closes every link with the same reason.
    pub fn close_all_links(&mut self, code: StatusCode, message: &str) -> Output {
        let mut out = Output::default();
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.close(conn, code, message.to_string(), &mut out);
        }
        out
    }

    /// A link to `peer` is open at the transport level. `stored_states` are the sync states
    /// persisted from earlier links with this peer.
    pub fn connect(
        &mut self,
        conn: ConnId,
        peer: NodeId,
        stored_states: Vec<(ShareableDocId, Vec<u8>)>,
        now_ms: u64,
    ) -> Output {
        let mut out = Output::default();
        let last_shared: BTreeMap<ShareableDocId, Vec<ChangeHash>> = stored_states
            .iter()
            .filter_map(|(id, bytes)| {
                let heads = sorted(sync::State::decode(bytes).ok()?.shared_heads);
                (!heads.is_empty()).then(|| (id.clone(), heads))
            })
            .collect();
        let summary = if shared_on_link(&self.me, &peer) {
            self.summary_of_changes(&last_shared)
        } else {
            Summary {
                docs: Vec::new(),
                only_changed: false,
                digest: summary_digest(std::iter::empty()),
                generations: Vec::new(),
            }
        };
        self.conns.insert(
            conn,
            Conn {
                peer,
                phase: Phase::AwaitHello,
                states: HashMap::new(),
                stored: stored_states.into_iter().collect(),
                last_shared,
                asked_complete_summary: false,
                resets: HashMap::new(),
                their_generations: HashMap::new(),
                offered_generation: HashMap::new(),
                last_sent_ms: now_ms,
                last_received_ms: now_ms,
                takes_whole_documents: false,
                applying: None,
            },
        );
        out.sends.push((
            conn,
            Frame::Hello {
                protocol_version: PROTOCOL_VERSION,
            },
        ));
        out.sends.push((conn, Frame::Summary(summary)));
        self.finish(&mut out, now_ms);
        out
    }

    /// A frame arrived on a link. A large sync message is applied whole by this call; a driver
    /// that lets other work in between its slices reads the frame itself ([`read_frame`]) and
    /// calls [`Engine::receive_read`].
    pub fn receive(&mut self, conn_id: ConnId, frame: Frame, now_ms: u64) -> Output {
        let read = read_frame(frame, &self.config.read_limits());
        let mut out = self.receive_read(conn_id, read, now_ms);
        while out.unfinished.contains(&conn_id) {
            out.unfinished.retain(|conn| *conn != conn_id);
            out.extend(self.continue_receive(conn_id, now_ms));
        }
        out
    }

    /// A frame arrived on a link, read beforehand by [`read_frame`] (which needs no lock). A sync
    /// message of more than [`EngineConfig::apply_slice_ops`] operations is applied one slice
    /// per call: the link is then in [`Output::unfinished`], and each
    /// [`Engine::continue_receive`] applies the next slice. The link's next frame must wait
    /// until its last slice (else the rest is applied first, at once).
    pub fn receive_read(&mut self, conn_id: ConnId, frame: ReadFrame, now_ms: u64) -> Output {
        let mut out = Output::default();
        while self
            .conns
            .get(&conn_id)
            .is_some_and(|conn| conn.applying.is_some())
        {
            self.apply_next_slice(conn_id, &mut out);
            out.unfinished.retain(|conn| *conn != conn_id);
        }
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return out;
        };
        conn.last_received_ms = now_ms;
        let frame = match frame {
            ReadFrame::DocSync {
                doc,
                generation,
                message,
            } => {
                match conn.phase {
                    // While this side waits for a complete summary it asked for, the peer may
                    // already have started to sync.
                    Phase::AwaitSummary | Phase::Open => {
                        self.on_doc_sync(conn_id, doc, generation, message, &mut out);
                    }
                    phase => {
                        let message = format!("unexpected doc_sync frame in phase {phase:?}");
                        self.close(conn_id, StatusCode::InvalidArgument, message, &mut out);
                    }
                }
                self.finish(&mut out, now_ms);
                return out;
            }
            ReadFrame::Other(frame) => frame,
        };
        match (conn.phase, frame) {
            (_, Frame::Goodbye { .. }) => {
                // The peer ends the link: forget it here, and tell the driver to end the stream
                // (the peer's reason is not kept: it is the peer's text, of any length).
                self.drop_conn(conn_id, &mut out);
                out.ended.push(conn_id);
            }
            (_, Frame::Keepalive) => {}
            (Phase::AwaitHello, Frame::Hello { protocol_version }) => {
                if (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&protocol_version) {
                    conn.phase = Phase::AwaitSummary;
                    conn.takes_whole_documents = protocol_version >= WHOLE_DOCUMENTS_SINCE;
                } else {
                    let message = format!(
                        "protocol version {protocol_version} is not supported; this node speaks \
                         {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
                    );
                    self.close(conn_id, StatusCode::FailedPrecondition, message, &mut out);
                }
            }
            (Phase::AwaitSummary, Frame::Summary(summary))
                if summary.docs.len() > self.config.max_docs_per_peer =>
            {
                let reason = format!(
                    "the summary lists {} documents; the limit is {} documents per peer",
                    summary.docs.len(),
                    self.config.max_docs_per_peer
                );
                out.events.push(LogEvent::Refused {
                    peer: conn.peer.clone(),
                    doc: None,
                    reason: reason.clone(),
                });
                self.close(conn_id, StatusCode::ResourceExhausted, reason, &mut out);
            }
            (Phase::AwaitSummary, Frame::Summary(summary)) => {
                let ours: HashMap<ShareableDocId, u64> = self
                    .docs
                    .iter()
                    .map(|(id, entry)| (id.clone(), entry.generation))
                    .collect();
                let conn = self.conns.get_mut(&conn_id).expect("link exists");
                match rebuild_summary(&conn.last_shared, &ours, summary) {
                    Some(theirs) => {
                        conn.phase = Phase::Open;
                        self.on_summary(conn_id, theirs, &mut out);
                    }
                    None if !conn.asked_complete_summary => {
                        conn.asked_complete_summary = true;
                        out.sends.push((conn_id, Frame::SummaryRequest));
                    }
                    None => {
                        let message =
                            "the peer's complete summary does not match its digest".to_string();
                        self.close(conn_id, StatusCode::InvalidArgument, message, &mut out);
                    }
                }
            }
            (Phase::AwaitSummary | Phase::Open, Frame::SummaryRequest) => {
                let summary = if shared_on_link(&self.me, &conn.peer) {
                    self.complete_summary()
                } else {
                    Summary {
                        docs: Vec::new(),
                        only_changed: false,
                        digest: summary_digest(std::iter::empty()),
                        generations: Vec::new(),
                    }
                };
                out.sends.push((conn_id, Frame::Summary(summary)));
            }
            (phase, frame) => {
                let message = format!("unexpected {} frame in phase {phase:?}", frame.kind());
                self.close(conn_id, StatusCode::InvalidArgument, message, &mut out);
            }
        }
        self.finish(&mut out, now_ms);
        out
    }

    /// Applies the next slice of the sync message link `conn_id` is receiving (see
    /// [`Engine::receive_read`]); nothing when it has none left or is closed.
    pub fn continue_receive(&mut self, conn_id: ConnId, now_ms: u64) -> Output {
        let mut out = Output::default();
        self.apply_next_slice(conn_id, &mut out);
        self.finish(&mut out, now_ms);
        out
    }

    /// A link closed at the transport level. Its sync states are handed out to persist.
    pub fn disconnect(&mut self, conn: ConnId) -> Output {
        let mut out = Output::default();
        self.drop_conn(conn, &mut out);
        out
    }

    /// Closes a link on the engine's side, for example because the transport found a frame it
    /// could not decode.
    pub fn close_link(&mut self, conn: ConnId, code: StatusCode, message: String) -> Output {
        let mut out = Output::default();
        self.close(conn, code, message, &mut out);
        out
    }

    /// Time passed: send keepalives on quiet links and close links whose peer went silent.
    pub fn tick(&mut self, now_ms: u64) -> Output {
        let mut out = Output::default();
        let mut silent = Vec::new();
        for (id, conn) in &self.conns {
            if now_ms.saturating_sub(conn.last_received_ms) >= self.config.peer_timeout_ms {
                silent.push(*id);
            } else if conn.phase == Phase::Open
                && now_ms.saturating_sub(conn.last_sent_ms) >= self.config.keepalive_interval_ms
            {
                out.sends.push((*id, Frame::Keepalive));
            }
        }
        for id in silent {
            let message = format!(
                "nothing received from the peer for {} ms",
                self.config.peer_timeout_ms
            );
            self.close(id, StatusCode::DeadlineExceeded, message, &mut out);
        }
        self.finish(&mut out, now_ms);
        out
    }

    /// Every document this node holds, with its heads.
    fn complete_summary(&self) -> Summary {
        let docs: Vec<(ShareableDocId, Vec<ChangeHash>)> = self
            .docs
            .iter()
            .map(|(id, entry)| (id.clone(), sorted(entry.doc.get_heads())))
            .filter(|(_, heads)| !heads.is_empty())
            .collect();
        let digest = self.digest();
        let generations = self.generations_of(docs.iter().map(|(id, _)| id));
        Summary {
            docs,
            only_changed: false,
            digest,
            generations,
        }
    }

    /// [`summary_digest_generations`] of every document this node holds.
    fn digest(&self) -> SummaryDigest {
        let heads: Vec<(&ShareableDocId, u64, Vec<ChangeHash>)> = self
            .docs
            .iter()
            .map(|(id, entry)| (id, entry.generation, entry.doc.get_heads()))
            .collect();
        summary_digest_generations(heads.iter().map(|(id, g, h)| (*id, *g, h.as_slice())))
    }

    /// The generations other than 0 of the documents listed.
    fn generations_of<'a>(
        &self,
        ids: impl Iterator<Item = &'a ShareableDocId>,
    ) -> Vec<(ShareableDocId, u64)> {
        ids.filter_map(|id| {
            let generation = self.docs.get(id)?.generation;
            (generation != 0).then(|| (id.clone(), generation))
        })
        .collect()
    }

    /// The documents whose heads differ from those shared with the peer at the last sync.
    fn summary_of_changes(
        &self,
        last_shared: &BTreeMap<ShareableDocId, Vec<ChangeHash>>,
    ) -> Summary {
        let current: Vec<(&ShareableDocId, Vec<ChangeHash>)> = self
            .docs
            .iter()
            .map(|(id, entry)| (id, sorted(entry.doc.get_heads())))
            .collect();
        let mut docs: Vec<(ShareableDocId, Vec<ChangeHash>)> = current
            .iter()
            .filter(|(id, heads)| match last_shared.get(*id) {
                Some(shared) => shared != heads,
                None => !heads.is_empty(),
            })
            .map(|(id, heads)| ((*id).clone(), heads.clone()))
            .collect();
        docs.extend(
            last_shared
                .keys()
                .filter(|id| !self.docs.contains_key(*id))
                .map(|id| (id.clone(), Vec::new())),
        );
        let digest = self.digest();
        let generations = self.generations_of(docs.iter().map(|(id, _)| id));
        Summary {
            docs,
            only_changed: true,
            digest,
            generations,
        }
    }

    fn on_summary(&mut self, conn_id: ConnId, theirs: PeerDocs, out: &mut Output) {
        let conn = self.conns.get_mut(&conn_id).expect("link exists");
        conn.their_generations = theirs
            .iter()
            .map(|(id, (generation, _))| (id.clone(), *generation))
            .collect();
        let peer = conn.peer.clone();
        if !shared_on_link(&self.me, &peer) {
            return;
        }
        // A document the peer has and we lack becomes a replica here only if we would accept
        // its changes from this peer.
        for id in theirs.keys() {
            if !self.docs.contains_key(id) && accepts_changes_from(&self.me, &peer, id) {
                self.docs
                    .insert(id.clone(), DocEntry::empty(self.actor.clone()));
            }
        }
        let mut to_sync = Vec::new();
        let ids: Vec<ShareableDocId> = self.docs.keys().cloned().collect();
        for id in ids {
            let entry = &self.docs[&id];
            let ours = sorted(entry.doc.get_heads());
            let (their_generation, their_heads) = theirs.get(&id).cloned().unwrap_or_default();
            if their_generation > entry.generation {
                // The peer holds a newer generation: it sends the whole of it (this node's
                // older one is of no use to it), and this node replaces its own.
                continue;
            }
            if their_generation < entry.generation {
                // The peer holds an older generation, or nothing: it gets the whole of ours at
                // once, if it takes changes from this node, and replaces its own with it.
                if accepts_changes_from(&peer, &self.me, &id) && !ours.is_empty() {
                    self.offer_generation(conn_id, &id);
                    to_sync.push(id);
                }
                continue;
            }
            if their_heads == ours {
                let state = self.state_for(conn_id, &id);
                prime_in_step(state, ours);
            } else if accepts_changes_from(&peer, &self.me, &id)
                && their_heads
                    .iter()
                    .all(|h| entry.doc.get_change_meta_by_hash(h).is_some())
            {
                // The peer is behind us on this document: what it lacks is exactly our changes
                // since its heads, sent at once instead of after a round trip.
                let state = self.state_for(conn_id, &id);
                prime_in_step(state, their_heads);
                to_sync.push(id);
            } else if !ours.is_empty() {
                // Both sides may have changes the other lacks: Automerge's protocol finds out.
                to_sync.push(id);
            }
            // With nothing of the document here, the peer knows all we have and sends first.
        }
        out.events.push(LogEvent::LinkOpen {
            peer,
            docs_to_sync: to_sync.len(),
        });
        for id in to_sync {
            self.sync_to(conn_id, &id, out);
        }
    }

    fn on_doc_sync(
        &mut self,
        conn_id: ConnId,
        id: ShareableDocId,
        generation: u64,
        read: Result<ReadMessage, Unreadable>,
        out: &mut Output,
    ) {
        let peer = self.conns[&conn_id].peer.clone();
        let ours = self.docs.get(&id).map_or(0, |entry| entry.generation);
        if let Some(conn) = self.conns.get_mut(&conn_id) {
            conn.their_generations.insert(id.clone(), generation);
        }
        if generation < ours {
            // A message of a generation this node replaced: nothing of it is applied, ever, so
            // an older generation cannot come back. The peer is offered the newer one, once.
            out.events.push(LogEvent::StaleGeneration {
                peer: peer.clone(),
                doc: id.clone(),
                theirs: generation,
                ours,
            });
            let offered = self.conns[&conn_id].offered_generation.get(&id) == Some(&ours);
            if !offered && accepts_changes_from(&peer, &self.me, &id) {
                self.offer_generation(conn_id, &id);
                self.sync_to(conn_id, &id, out);
            }
            return;
        }
        let ReadMessage {
            message,
            chunks,
            changes,
            document,
        } = match read {
            Ok(read) => read,
            Err(Unreadable::Close(code, message)) => {
                self.close(conn_id, code, message, out);
                return;
            }
            Err(Unreadable::Refuse(reason)) => {
                self.refuse(conn_id, &id, StatusCode::InvalidArgument, reason, out);
                return;
            }
        };
        let may_write = accepts_changes_from(&self.me, &peer, &id);
        if chunks > 0 && !may_write {
            let reason =
                format!("{peer} may not change {id}: only its owner may, or a hub relaying it");
            self.refuse(conn_id, &id, StatusCode::PermissionDenied, reason, out);
            return;
        }
        match document {
            None => {}
            Some(Err((code, reason))) => {
                self.refuse(conn_id, &id, code, reason, out);
                return;
            }
            Some(Ok(whole)) => {
                self.receive_whole_document(conn_id, &id, generation, ours, message, whole, out);
                return;
            }
        }
        let parsed = match changes {
            Ok(parsed) => parsed,
            Err(reason) => {
                self.refuse(conn_id, &id, StatusCode::InvalidArgument, reason, out);
                return;
            }
        };
        let national_hubs = self.national_hubs();
        if let Err(reason) = check_authors(&parsed, &id, &self.me, &peer, &national_hubs) {
            self.refuse(conn_id, &id, StatusCode::PermissionDenied, reason, out);
            return;
        }
        if generation > ours {
            if !may_write {
                // Nothing to learn from a peer about a document we do not accept from it.
                return;
            }
            if let Err((code, problem)) = check_content(&parsed, None, &self.config) {
                let reason = format!("sync message for {id} is refused: {problem}");
                self.refuse(conn_id, &id, code, reason, out);
                return;
            }
            let slices = slices_of(parsed, self.config.apply_slice_ops);
            let conn = self.conns.get_mut(&conn_id).expect("link exists");
            conn.applying = Some(Applying {
                doc: id,
                generation: ours,
                slices,
                message,
                adopting: Some(Adopting {
                    generation,
                    fresh: Automerge::new(),
                }),
            });
            self.apply_next_slice(conn_id, out);
            return;
        }
        let current = self.docs.get(&id).map(|entry| &entry.doc);
        if let Err((code, problem)) = check_content(&parsed, current, &self.config) {
            let reason = format!("sync message for {id} is refused: {problem}");
            self.refuse(conn_id, &id, code, reason, out);
            return;
        }
        if !self.docs.contains_key(&id) {
            if !may_write {
                // Nothing to learn from a peer about a document we neither hold nor accept.
                return;
            }
            self.docs
                .insert(id.clone(), DocEntry::empty(self.actor.clone()));
        }
        let slices = slices_of(parsed, self.config.apply_slice_ops);
        let conn = self.conns.get_mut(&conn_id).expect("link exists");
        conn.applying = Some(Applying {
            doc: id,
            generation: ours,
            slices,
            message,
            adopting: None,
        });
        self.apply_next_slice(conn_id, out);
    }

    /// The national hub and its standbys, as configured.
    fn national_hubs(&self) -> Vec<NodeId> {
        self.config
            .national_hub
            .iter()
            .chain(&self.config.standby_hubs)
            .cloned()
            .collect()
    }

    /// A peer sent `id` whole (the reader bounded and loaded it): its authors and content are
    /// checked from the change metadata, nothing expanded. If this node holds nothing of the
    /// document, the loaded document becomes this node's and the bytes as received its stored
    /// snapshot; a newer generation is adopted whole. If this node holds some of the document
    /// (it received changes on another link since the peer learnt it held nothing), the
    /// document is not used — finding what it adds would walk its whole history under the
    /// engine lock — and the link closes with `Aborted`: the next handshake lists this node's
    /// heads, and the peer sends the changes it lacks.
    #[allow(clippy::too_many_arguments)]
    fn receive_whole_document(
        &mut self,
        conn_id: ConnId,
        id: &ShareableDocId,
        generation: u64,
        ours: u64,
        message: sync::Message,
        whole: Box<WholeDocument>,
        out: &mut Output,
    ) {
        let peer = self.conns[&conn_id].peer.clone();
        let national_hubs = self.national_hubs();
        let checked = check_document_authors(&whole.doc, id, &self.me, &peer, &national_hubs)
            .map_err(|reason| (StatusCode::PermissionDenied, reason))
            .and_then(|()| check_document_content(&whole.doc, &self.config))
            .and_then(|()| {
                let claimed = generation_of(&whole.doc);
                if claimed == generation {
                    return Ok(());
                }
                Err((
                    StatusCode::InvalidArgument,
                    format!(
                        "the whole document {id} is of generation {claimed}, sent as \
                         generation {generation}"
                    ),
                ))
            });
        if let Err((code, reason)) = checked {
            self.refuse(conn_id, id, code, reason, out);
            return;
        }
        if generation > ours {
            let adopting = Adopting {
                generation,
                fresh: whole.doc,
            };
            self.adopt_generation(conn_id, id, adopting, message, Vec::new(), out);
            return;
        }
        let holds_nothing = self
            .docs
            .get(id)
            .is_none_or(|entry| entry.doc.get_heads().is_empty());
        if !holds_nothing {
            let reason = format!(
                "{id} arrived whole, but this node holds some of it already; reconnect to be \
                 sent what it lacks"
            );
            self.close(conn_id, StatusCode::Aborted, reason, out);
            return;
        }
        self.install_whole_document(conn_id, id, whole, out);
        self.finish_message(conn_id, id, message, Vec::new(), true, out);
    }

    /// Makes a whole document received on `from` this node's `id` (which held nothing): stored
    /// as a snapshot of the bytes received, then offered to every other open link.
    fn install_whole_document(
        &mut self,
        from: ConnId,
        id: &ShareableDocId,
        whole: Box<WholeDocument>,
        out: &mut Output,
    ) {
        let WholeDocument { mut doc, saved } = *whole;
        doc.set_actor(self.actor.clone());
        let mut entry = DocEntry::loaded(doc, 0, false);
        entry.compaction.stored_snapshot(saved.len());
        let heads = entry.doc.get_heads();
        self.docs.insert(id.clone(), entry);
        out.persist_docs.push(DocPersist {
            doc: id.clone(),
            kind: PersistKind::Snapshot,
            bytes: saved,
            heads,
        });
        out.changed_docs.push(id.clone());
        let targets: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(conn_id, conn)| **conn_id != from && conn.phase == Phase::Open)
            .map(|(conn_id, _)| *conn_id)
            .collect();
        self.sync_to_many(&targets, id, out);
    }

    /// Applies the next slice of the message link `conn_id` is receiving, or, with one slice
    /// left, finishes the message with it. While slices are left, the link is in
    /// [`Output::unfinished`].
    fn apply_next_slice(&mut self, conn_id: ConnId, out: &mut Output) {
        let Some(mut applying) = self
            .conns
            .get_mut(&conn_id)
            .and_then(|conn| conn.applying.take())
        else {
            return;
        };
        let id = applying.doc.clone();
        let current = self.docs.get(&id).map(|entry| entry.generation);
        let unchanged = match applying.adopting {
            Some(_) => current.unwrap_or(0) == applying.generation,
            None => current == Some(applying.generation),
        };
        if !unchanged {
            // A newer generation replaced the document between two slices (or a failed write
            // set it back): the rest was meant for what is gone. The link's next messages, or
            // this node's offer of the newer generation, take it from here.
            return;
        }
        if applying.slices.len() <= 1 {
            let last = applying.slices.pop_front().unwrap_or_default();
            match applying.adopting {
                Some(adopting) => {
                    self.adopt_generation(conn_id, &id, adopting, applying.message, last, out);
                }
                None => self.finish_message(conn_id, &id, applying.message, last, false, out),
            }
            return;
        }
        let slice = applying.slices.pop_front().expect("more than one slice");
        let applied = match applying.adopting.as_mut() {
            Some(adopting) => {
                let fresh = &mut adopting.fresh;
                let applied = catch_unwind(AssertUnwindSafe(|| fresh.apply_changes(slice)))
                    .is_ok_and(|r| r.is_ok());
                if !applied {
                    let generation = adopting.generation;
                    self.refuse_incomplete_generation(conn_id, &id, generation, out);
                }
                applied
            }
            None => self.apply_slice(conn_id, &id, slice, out),
        };
        if applied {
            if let Some(conn) = self.conns.get_mut(&conn_id) {
                conn.applying = Some(applying);
                out.unfinished.push(conn_id);
            }
        }
    }

    /// Applies changes received on link `conn_id` to `id`, stores and relays what is new.
    /// A slice Automerge refuses closes the link (`false`).
    fn apply_slice(
        &mut self,
        conn_id: ConnId,
        id: &ShareableDocId,
        slice: Vec<automerge::Change>,
        out: &mut Output,
    ) -> bool {
        let entry = self.docs.get_mut(id).expect("document exists");
        let before = entry.doc.get_heads();
        let fresh = FreshChanges::before(entry, &slice);
        let applied = catch_unwind(AssertUnwindSafe(|| entry.doc.apply_changes(slice)));
        let refusal = match applied {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(format!(
                "sync message for {id} was refused by automerge: {}",
                crate::scope::quote(&err.to_string())
            )),
            Err(_) => Some(format!("sync message for {id} could not be applied")),
        };
        if let Some(reason) = refusal {
            // Automerge may have applied part of the slice before it failed, or panicked
            // half-way: the driver reloads the document from what is stored.
            out.reload_docs.push(id.clone());
            self.refuse(conn_id, id, StatusCode::InvalidArgument, reason, out);
            return false;
        }
        let fresh = note_received(self.docs.get_mut(id).expect("document exists"), fresh);
        self.trim_recent(id);
        if self.docs[id].doc.get_heads() != before {
            self.document_changed(id, Some(conn_id), fresh, out);
        }
        true
    }

    /// The last slice of a received message (all of it, for most messages) with the message's
    /// heads, needs and Bloom filter, through [`crate::receive::receive_sync_message`]
    /// (Automerge's, without its walk over the history); then this node's answer on the link.
    /// `whole_document`: the message carried the document, just installed here; the state is
    /// left as if its changes had been applied by Automerge (the heads shared, and answered, so
    /// the peer learns this node holds them).
    fn finish_message(
        &mut self,
        conn_id: ConnId,
        id: &ShareableDocId,
        mut message: sync::Message,
        last: Vec<automerge::Change>,
        whole_document: bool,
        out: &mut Output,
    ) {
        let peer = self.conns[&conn_id].peer.clone();
        let before = self.docs[id].doc.get_heads();
        let fresh = FreshChanges::before(&self.docs[id], &last);
        message.changes = chunks_of(&last);
        // A request for the whole document (no heads, or the reset flag) makes Automerge forget
        // what it sent on this link and send everything again: honoured at most once per
        // document per link and interval, so a few bytes cannot make this node resend a large
        // document over and over.
        let asks_reset = message.heads.is_empty()
            || message
                .flags
                .is_some_and(|f| f.contains(sync::MessageFlags::SYNC_RESET));
        let now_ms = self.conns[&conn_id].last_received_ms;
        let mut state = std::mem::take(self.state_for(conn_id, id));
        let throttled_reset = asks_reset && {
            let conn = self.conns.get_mut(&conn_id).expect("link exists");
            match conn.resets.get(id) {
                Some(at) if now_ms.saturating_sub(*at) < self.config.reset_interval_ms => true,
                _ => {
                    conn.resets.insert(id.clone(), now_ms);
                    false
                }
            }
        };
        let kept =
            throttled_reset.then(|| (state.sent_hashes.clone(), state.last_sent_heads.clone()));
        let entry = self.docs.get_mut(id).expect("document exists");
        let known = crate::receive::Known {
            recent: &entry.recent,
            arriving: &last,
        };
        let received =
            crate::receive::receive_sync_message(&mut entry.doc, &mut state, message, Some(known));
        if let Some((sent_hashes, last_sent_heads)) = kept {
            state.sent_hashes = sent_hashes;
            state.last_sent_heads = last_sent_heads;
        }
        // A peer's message sets `peer_read_only` from its flags, and Automerge's reset message
        // carries none: the owner-writes rule decides what this node offers, not the peer.
        state.peer_read_only = !accepts_changes_from(&peer, &self.me, id);
        send_changes_only(&mut state);
        match received {
            Ok(Ok(())) => {
                if whole_document {
                    // Before the document was installed, this node held nothing and had said so.
                    state.shared_heads = sorted(self.docs[id].doc.get_heads());
                    state.last_sent_heads = Vec::new();
                }
                *self.state_for(conn_id, id) = state;
            }
            Ok(Err(err)) => {
                *self.state_for(conn_id, id) = state;
                let message = format!(
                    "sync message for {id} was refused by automerge: {}",
                    crate::scope::quote(&err.to_string())
                );
                // Automerge may have applied part of the message before it failed.
                if self.docs[id].doc.get_heads() != before {
                    out.reload_docs.push(id.clone());
                }
                self.close(conn_id, StatusCode::InvalidArgument, message, out);
                return;
            }
            Err(_) => {
                // The document may be half-changed: the driver reloads it from storage, and
                // this link's state for it is dropped, not kept.
                out.reload_docs.push(id.clone());
                let message = format!("sync message for {id} could not be applied");
                self.refuse(conn_id, id, StatusCode::InvalidArgument, message, out);
                return;
            }
        }
        let fresh = note_received(self.docs.get_mut(id).expect("document exists"), fresh);
        self.trim_recent(id);
        if self.docs[id].doc.get_heads() != before {
            self.document_changed(id, Some(conn_id), fresh, out);
        }
        let state = self.state_for(conn_id, id);
        out.persist_sync_states
            .push((peer, id.clone(), state.encode()));
        self.sync_to(conn_id, id, out);
    }

    /// A peer sent the first message of a newer generation of `id` than this node holds (its
    /// changes vetted like any other): if the message holds the whole generation — every change
    /// it names, and the generation marker its owner wrote ([`generation_of`]) equal to the
    /// generation the frame claims — it replaces this node's document, and the older
    /// generation is destroyed ([`Output::replaced_docs`]). Otherwise the link is closed: the
    /// peer offers the whole generation again after the next handshake.
    fn adopt_generation(
        &mut self,
        conn_id: ConnId,
        id: &ShareableDocId,
        adopting: Adopting,
        mut message: sync::Message,
        changes: Vec<automerge::Change>,
        out: &mut Output,
    ) {
        let Adopting {
            generation,
            mut fresh,
        } = adopting;
        let peer = self.conns[&conn_id].peer.clone();
        let their_heads = message.heads.clone();
        message.changes = chunks_of(&changes);
        let mut state = sync::State::new();
        state.read_only = !accepts_changes_from(&self.me, &peer, id);
        state.peer_read_only = !accepts_changes_from(&peer, &self.me, id);
        let received = catch_unwind(AssertUnwindSafe(|| {
            fresh.receive_sync_message(&mut state, message)
        }));
        let complete = matches!(received, Ok(Ok(())))
            && !their_heads.is_empty()
            && their_heads
                .iter()
                .all(|h| fresh.get_change_meta_by_hash(h).is_some())
            && fresh.get_missing_deps(&[]).is_empty()
            && generation_of(&fresh) == generation;
        if !complete {
            self.refuse_incomplete_generation(conn_id, id, generation, out);
            return;
        }
        send_changes_only(&mut state);
        self.replace_generation(id, fresh, Some(conn_id), out);
        let conn = self.conns.get_mut(&conn_id).expect("link exists");
        conn.their_generations.insert(id.clone(), generation);
        conn.states.insert(id.clone(), state);
        let state = self.state_for(conn_id, id);
        out.persist_sync_states
            .push((peer, id.clone(), state.encode()));
        self.sync_to(conn_id, id, out);
    }

    /// The first message of a newer generation did not hold it whole (or Automerge refused a
    /// part of it): nothing of it is kept, and the link closes.
    fn refuse_incomplete_generation(
        &mut self,
        conn_id: ConnId,
        id: &ShareableDocId,
        generation: u64,
        out: &mut Output,
    ) {
        let Some(peer) = self.conns.get(&conn_id).map(|conn| conn.peer.clone()) else {
            return;
        };
        let message = format!(
            "the first message of generation {generation} of {id} does not hold the whole \
             generation; reconnect to be offered it again"
        );
        out.events.push(LogEvent::Refused {
            peer,
            doc: Some(id.clone()),
            reason: message.clone(),
        });
        self.close(conn_id, StatusCode::Aborted, message, out);
    }

    /// Replaces `id` with `doc`, a newer generation, everywhere in the engine: every link
    /// forgets its sync state of the older generation (and what it remembered of the last
    /// sync), the driver is told to destroy the older generation and store the new one as a
    /// snapshot, and every open link but `from` is offered the whole new generation.
    fn replace_generation(
        &mut self,
        id: &ShareableDocId,
        mut doc: Automerge,
        from: Option<ConnId>,
        out: &mut Output,
    ) {
        doc.set_actor(self.actor.clone());
        let mut entry = DocEntry::loaded(doc, 0, true);
        entry.persisted_heads = Vec::new();
        let generation = entry.generation;
        self.docs.insert(id.clone(), entry);
        self.pending_pushes.remove(id);
        // Sync states of the older generation in this output are not persisted.
        out.persist_sync_states.retain(|(_, doc, _)| doc != id);
        out.persist_docs.retain(|persist| &persist.doc != id);
        out.replaced_docs.push((id.clone(), generation));
        out.events.push(LogEvent::NewGeneration {
            doc: id.clone(),
            generation,
        });
        for conn in self.conns.values_mut() {
            conn.states.remove(id);
            conn.stored.remove(id);
            conn.last_shared.remove(id);
            conn.offered_generation.remove(id);
        }
        let targets: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(conn_id, conn)| {
                Some(**conn_id) != from
                    && conn.phase == Phase::Open
                    && accepts_changes_from(&conn.peer, &self.me, id)
            })
            .map(|(conn_id, _)| *conn_id)
            .collect();
        for conn_id in &targets {
            self.offer_generation(*conn_id, id);
        }
        // Persist the new generation (a snapshot: `needs_snapshot`), then offer it.
        self.document_changed_to(id, &targets, out);
    }

    /// A document changed here: persist it and offer it to every open link but `except`.
    /// `fresh` holds the bytes of exactly what changed since the last persist, when the caller
    /// knows them.
    fn document_changed(
        &mut self,
        id: &ShareableDocId,
        except: Option<ConnId>,
        fresh: Option<Vec<u8>>,
        out: &mut Output,
    ) {
        self.persist_changed(id, fresh, out);
        if except.is_none() && self.config.defer_local_pushes {
            self.pending_pushes.insert(id.clone());
            return;
        }
        let targets: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(conn_id, conn)| Some(**conn_id) != except && conn.phase == Phase::Open)
            .map(|(conn_id, _)| *conn_id)
            .collect();
        self.sync_to_many(&targets, id, out);
    }

    /// Like [`Engine::document_changed`], offering the document to the links `targets`.
    fn document_changed_to(&mut self, id: &ShareableDocId, targets: &[ConnId], out: &mut Output) {
        self.persist_changed(id, None, out);
        self.sync_to_many(targets, id, out);
    }

    /// Hands out the bytes of `id` that changed since the last persist (or a snapshot).
    fn persist_changed(&mut self, id: &ShareableDocId, fresh: Option<Vec<u8>>, out: &mut Output) {
        let policy = self.config.compaction();
        let entry = self.docs.get_mut(id).expect("document exists");
        let heads = entry.doc.get_heads();
        let chunk = (!entry.compaction.needs_snapshot())
            .then(|| fresh.unwrap_or_else(|| entry.doc.save_after(&entry.persisted_heads)));
        let chunk = chunk.filter(|chunk| {
            if entry.compaction.takes_chunk(&policy, chunk.len()) {
                return true;
            }
            // A snapshot is due: it is made after this write is released, not inside it.
            if !entry
                .compaction
                .takes_chunk_while_compacting(&policy, chunk.len())
            {
                return false;
            }
            if !entry.compaction.is_compacting() {
                entry.compaction.start_compacting();
                out.compact_docs.push(id.clone());
            }
            true
        });
        let persist = match chunk {
            Some(bytes) => {
                entry.compaction.stored_chunk(bytes.len());
                DocPersist {
                    doc: id.clone(),
                    kind: PersistKind::Incremental,
                    bytes,
                    heads: heads.clone(),
                }
            }
            None => {
                let bytes = entry.doc.save();
                entry.compaction.stored_snapshot(bytes.len());
                DocPersist {
                    doc: id.clone(),
                    kind: PersistKind::Snapshot,
                    bytes,
                    heads: heads.clone(),
                }
            }
        };
        entry.persisted_heads = heads;
        out.persist_docs.push(persist);
        out.changed_docs.push(id.clone());
    }

    /// Like [`Engine::sync_to`] for several links at once. Links whose sync states are equal
    /// (every city that was up to date, when the hub relays a change) get the same message, so
    /// it is generated once and the resulting state copied: fan-out costs one run of the sync
    /// protocol, not one per city.
    fn sync_to_many(&mut self, targets: &[ConnId], id: &ShareableDocId, out: &mut Output) {
        type Generated = (sync::State, Option<Vec<u8>>);
        let mut generated: HashMap<(sync::State, bool), Generated> = HashMap::new();
        let limits = self.config.read_limits();
        for &conn_id in targets {
            let Some(conn) = self.conns.get(&conn_id) else {
                continue;
            };
            if !shared_on_link(&self.me, &conn.peer) || !self.docs.contains_key(id) {
                continue;
            }
            let whole = conn.takes_whole_documents;
            let before = (self.state_for(conn_id, id).clone(), whole);
            let (after, message) = match generated.get(&before) {
                Some(done) => done.clone(),
                None => {
                    let mut state = before.0.clone();
                    let message = generate_message(
                        &self.docs[id],
                        &mut state,
                        &mut self.counts,
                        whole.then_some(&limits),
                    )
                    .map(|message| message.map(|m| m.encode()));
                    let Ok(message) = message else {
                        self.generation_failed(conn_id, id, out);
                        continue;
                    };
                    generated.insert(before, (state.clone(), message.clone()));
                    (state, message)
                }
            };
            *self.state_for(conn_id, id) = after;
            if let Some(message) = message {
                out.sends.push((
                    conn_id,
                    Frame::DocSync {
                        doc: id.clone(),
                        generation: self.docs[id].generation,
                        message,
                    },
                ));
            }
        }
    }

    /// Generates the next Automerge sync message for `id` on a link, if there is one to send.
    fn sync_to(&mut self, conn_id: ConnId, id: &ShareableDocId, out: &mut Output) {
        let Some(conn) = self.conns.get(&conn_id) else {
            return;
        };
        if !shared_on_link(&self.me, &conn.peer) {
            return;
        }
        if !self.docs.contains_key(id) {
            return;
        }
        let whole = conn
            .takes_whole_documents
            .then(|| self.config.read_limits());
        let mut state = std::mem::take(self.state_for(conn_id, id));
        let message =
            generate_message(&self.docs[id], &mut state, &mut self.counts, whole.as_ref());
        let Ok(message) = message else {
            self.generation_failed(conn_id, id, out);
            return;
        };
        *self.state_for(conn_id, id) = state;
        if let Some(message) = message {
            out.sends.push((
                conn_id,
                Frame::DocSync {
                    doc: id.clone(),
                    generation: self.docs[id].generation,
                    message: message.encode(),
                },
            ));
        }
    }

    /// Drops the recent changes of `id` that every link's peer already has (by the heads and
    /// last syncs its sync state knows), once more than [`recent::TRIM_AFTER`] are kept.
    fn trim_recent(&mut self, id: &ShareableDocId) {
        let Some(entry) = self.docs.get_mut(id) else {
            return;
        };
        if entry.recent.len() <= recent::TRIM_AFTER {
            return;
        }
        let mut keep_from = u64::MAX;
        for conn in self.conns.values() {
            let Some(state) = conn.states.get(id) else {
                continue;
            };
            let boundary = state
                .shared_heads
                .iter()
                .chain(state.their_heads.iter().flatten())
                .chain(
                    state
                        .their_have
                        .iter()
                        .flatten()
                        .flat_map(|have| &have.last_sync),
                );
            if let Some(oldest) = boundary.filter_map(|h| entry.recent.position(h)).min() {
                keep_from = keep_from.min(oldest);
            }
        }
        entry.recent.trim_before(keep_from);
    }

    /// Automerge panicked while generating a message for a link (the last line of defence:
    /// `check_message` refuses every message shape known to lead there). Generating reads the
    /// document without changing it, so only the link's sync state is suspect: it is dropped
    /// with the link, which is closed as a peer that sent what an honest one never does.
    fn generation_failed(&mut self, conn_id: ConnId, id: &ShareableDocId, out: &mut Output) {
        if let Some(conn) = self.conns.get_mut(&conn_id) {
            conn.states.remove(id);
        }
        let reason = format!(
            "the peer's sync state for {id} made generating a reply fail; it sent what an honest \
             peer never does"
        );
        self.refuse(conn_id, id, StatusCode::InvalidArgument, reason, out);
    }

    /// Starts `id` afresh on a link whose peer holds an older generation of it (or nothing): the
    /// next message carries every change of this node's generation.
    fn offer_generation(&mut self, conn_id: ConnId, id: &ShareableDocId) {
        let generation = self.docs.get(id).map_or(0, |entry| entry.generation);
        if let Some(conn) = self.conns.get_mut(&conn_id) {
            conn.states.remove(id);
            conn.stored.remove(id);
            conn.offered_generation.insert(id.clone(), generation);
        }
        if self.conns.contains_key(&conn_id) {
            prime_in_step(self.state_for(conn_id, id), Vec::new());
        }
    }

    fn state_for(&mut self, conn_id: ConnId, id: &ShareableDocId) -> &mut sync::State {
        let me = &self.me;
        let conn = self.conns.get_mut(&conn_id).expect("link exists");
        let peer = &conn.peer;
        let stored = &mut conn.stored;
        conn.states.entry(id.clone()).or_insert_with(|| {
            let mut state = stored
                .remove(id)
                .and_then(|bytes| sync::State::decode(&bytes).ok())
                .unwrap_or_default();
            state.read_only = !accepts_changes_from(me, peer, id);
            // Never offer changes the peer would refuse (and close the link for).
            state.peer_read_only = !accepts_changes_from(peer, me, id);
            send_changes_only(&mut state);
            state
        })
    }

    /// A peer broke the rules for `doc`: log it and close its link.
    fn refuse(
        &mut self,
        conn_id: ConnId,
        doc: &ShareableDocId,
        code: StatusCode,
        reason: String,
        out: &mut Output,
    ) {
        if let Some(conn) = self.conns.get(&conn_id) {
            out.events.push(LogEvent::Refused {
                peer: conn.peer.clone(),
                doc: Some(doc.clone()),
                reason: reason.clone(),
            });
        }
        self.close(conn_id, code, reason, out);
    }

    fn close(&mut self, conn_id: ConnId, code: StatusCode, message: String, out: &mut Output) {
        if self.conns.contains_key(&conn_id) {
            out.sends.push((
                conn_id,
                Frame::Goodbye {
                    code: code as i32,
                    message: message.clone(),
                },
            ));
            out.closes.push((conn_id, CloseReason { code, message }));
            self.drop_conn(conn_id, out);
        }
    }

    fn drop_conn(&mut self, conn_id: ConnId, out: &mut Output) {
        if let Some(conn) = self.conns.remove(&conn_id) {
            for (id, state) in conn.states {
                out.persist_sync_states
                    .push((conn.peer.clone(), id, state.encode()));
            }
        }
    }

    /// Records the time of every frame about to be sent, for keepalives.
    fn finish(&mut self, out: &mut Output, now_ms: u64) {
        for (conn_id, _) in &out.sends {
            if let Some(conn) = self.conns.get_mut(conn_id) {
                conn.last_sent_ms = now_ms;
            }
        }
    }
}

/// The key at the root of a document that holds its generation (an unsigned integer), written
/// by the owner in the first change of every generation after the first; absent means 0.
pub const GENERATION_KEY: &str = "sfs_generation";

/// The generation of a document: its [`GENERATION_KEY`], or 0.
pub fn generation_of(doc: &Automerge) -> u64 {
    match doc.get(automerge::ROOT, GENERATION_KEY) {
        Ok(Some((automerge::Value::Scalar(value), _))) => match value.as_ref() {
            automerge::ScalarValue::Uint(n) => *n,
            automerge::ScalarValue::Int(n) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        },
        _ => 0,
    }
}

/// Writes the current value of `from` in `src` (maps, lists, text, scalars; no history) into
/// the object `to` of `tx`, which has the same type. The root's [`GENERATION_KEY`] is left out.
fn copy_object(
    src: &Automerge,
    from: &automerge::ObjId,
    tx: &mut Transaction<'_>,
    to: &automerge::ObjId,
) -> Result<(), automerge::AutomergeError> {
    use automerge::{ObjType, Value};
    match src.object_type(from)? {
        ObjType::Map | ObjType::Table => {
            for key in src.keys(from) {
                if *from == automerge::ROOT && key == GENERATION_KEY {
                    continue;
                }
                match src.get(from, &key)? {
                    Some((Value::Scalar(value), _)) => tx.put(to, &key, value.into_owned())?,
                    Some((Value::Object(kind), child)) => {
                        let copy = tx.put_object(to, &key, kind)?;
                        copy_object(src, &child, tx, &copy)?;
                    }
                    None => {}
                }
            }
        }
        ObjType::List => {
            for index in 0..src.length(from) {
                match src.get(from, index)? {
                    Some((Value::Scalar(value), _)) => tx.insert(to, index, value.into_owned())?,
                    Some((Value::Object(kind), child)) => {
                        let copy = tx.insert_object(to, index, kind)?;
                        copy_object(src, &child, tx, &copy)?;
                    }
                    None => {}
                }
            }
        }
        ObjType::Text => {
            let text = src.text(from)?;
            tx.splice_text(to, 0, 0, &text)?;
        }
    }
    Ok(())
}

/// The result of [`Engine::edit`] when it fails.
#[derive(Debug, thiserror::Error)]
pub enum EditError<E> {
    #[error(transparent)]
    Engine(EngineError),
    #[error("the edit was rejected")]
    Rejected(E),
}

/// Shapes what this node sends to a peer: individual changes only, never a whole saved document
/// (Automerge sends one, compressed, to a peer that advertises version-2 messages and has nothing
/// or lacks a third of the changes). Honest peers therefore never need to accept a compressed
/// document from anyone, and [`check_chunks`] refuses them.
fn send_changes_only(state: &mut sync::State) {
    if let Some(capabilities) = state.their_capabilities.as_mut() {
        capabilities.retain(|c| *c != sync::Capability::MessageV2);
    }
}

/// The peer's complete list of documents and heads from its summary, rebuilt from what this
/// node remembers of the last sync when the summary lists only changes; `None` if the result
/// does not match the summary's digest.
///
/// A document not listed is at the generation this node holds (`ours`): this node keeps sync
/// states, and so `last_shared`, only for the generation it holds, and a peer that replaced a
/// generation forgot what it had shared of the older one, so it lists the document.
fn rebuild_summary(
    last_shared: &BTreeMap<ShareableDocId, Vec<ChangeHash>>,
    ours: &HashMap<ShareableDocId, u64>,
    summary: Summary,
) -> Option<PeerDocs> {
    let generations: HashMap<ShareableDocId, u64> = summary.generations.into_iter().collect();
    let mut theirs: PeerDocs = if summary.only_changed {
        last_shared
            .iter()
            .map(|(id, heads)| {
                let generation = ours.get(id).copied().unwrap_or(0);
                (id.clone(), (generation, heads.clone()))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    for (id, heads) in summary.docs {
        if heads.is_empty() {
            theirs.remove(&id);
        } else {
            let generation = generations.get(&id).copied().unwrap_or(0);
            theirs.insert(id, (generation, sorted(heads)));
        }
    }
    let digest = summary_digest_generations(
        theirs
            .iter()
            .map(|(id, (generation, heads))| (id, *generation, heads.as_slice())),
    );
    (digest == summary.digest).then_some(theirs)
}

/// A peer's documents: generation and heads of each.
type PeerDocs = BTreeMap<ShareableDocId, (u64, Vec<ChangeHash>)>;

/// Checks that every change in a message was written by the owner of `doc` (its actor ids carry
/// the owner's [`actor_prefix`](crate::scope::actor_prefix)): a city cannot slip a change under
/// another node's name into its own document, and a hub (national or county) relays nothing
/// else, however many hops the change came.
fn check_authors(
    changes: &[automerge::Change],
    doc: &ShareableDocId,
    me: &NodeId,
    peer: &NodeId,
    national_hubs: &[NodeId],
) -> Result<(), String> {
    if changes.is_empty() {
        return Ok(());
    }
    let owners = owner_nodes(doc, me, peer, national_hubs);
    if owners.is_empty() {
        return Err(format!(
            "{doc} has no owner known on this link (is the national hub's identity configured?)"
        ));
    }
    for change in changes {
        let actor = change.actor_id().to_bytes();
        if !owners.iter().any(|owner| actor_belongs_to(actor, owner)) {
            let owners: Vec<String> = owners.iter().map(ToString::to_string).collect();
            return Err(format!(
                "a change to {doc} from {peer} is written by actor {}, which is not {}'s",
                change.actor_id(),
                owners.join(" or ")
            ));
        }
    }
    Ok(())
}

/// [`check_authors`] for a whole document, from its changes' metadata.
fn check_document_authors(
    whole: &Automerge,
    doc: &ShareableDocId,
    me: &NodeId,
    peer: &NodeId,
    national_hubs: &[NodeId],
) -> Result<(), String> {
    let changes = whole.get_changes_meta(&[]);
    if changes.is_empty() {
        return Ok(());
    }
    let owners = owner_nodes(doc, me, peer, national_hubs);
    if owners.is_empty() {
        return Err(format!(
            "{doc} has no owner known on this link (is the national hub's identity configured?)"
        ));
    }
    for change in &changes {
        if !owners
            .iter()
            .any(|owner| actor_belongs_to(change.actor.to_bytes(), owner))
        {
            let owners: Vec<String> = owners.iter().map(ToString::to_string).collect();
            return Err(format!(
                "the whole document {doc} from {peer} holds a change by actor {}, which is not \
                 {}'s",
                change.actor,
                owners.join(" or ")
            ));
        }
    }
    Ok(())
}

/// [`check_content`] for a whole document: operations per change (from each change's first and
/// last operation number) and in the document. Characters inserted per change are not counted
/// (that would expand every change); that limit bounds what applying a change costs, and
/// loading the document cost no more than its operations, which the reader bounded.
fn check_document_content(
    whole: &Automerge,
    config: &EngineConfig,
) -> Result<(), (StatusCode, String)> {
    for change in whole.get_changes_meta(&[]) {
        let ops = (change.max_op + 1).saturating_sub(change.start_op);
        if ops > config.max_change_ops {
            return Err((
                StatusCode::ResourceExhausted,
                format!(
                    "a change with {ops} operations (at most {} per change)",
                    config.max_change_ops
                ),
            ));
        }
    }
    let held = whole.stats().num_ops;
    if held > config.max_doc_ops {
        return Err((
            StatusCode::ResourceExhausted,
            format!(
                "the document holds {held} operations (at most {} per document)",
                config.max_doc_ops
            ),
        ));
    }
    Ok(())
}

/// Holds the changes of a message to the content limits an honest node's API enforces, before
/// Automerge applies them (each character of a text is one operation, so a message of a few
/// megabytes of text would otherwise cost gigabytes and seconds to apply): operations per
/// change, characters inserted into one text or list per change, operations per document. The
/// counts come from the changes' headers and columns; only a change with more operations than
/// one field may hold is expanded to count per field.
fn check_content(
    changes: &[automerge::Change],
    current: Option<&Automerge>,
    config: &EngineConfig,
) -> Result<(), (StatusCode, String)> {
    let mut seen = std::collections::HashSet::new();
    let mut new_ops: u64 = 0;
    for change in changes {
        if !seen.insert(change.hash()) {
            return Err((
                StatusCode::InvalidArgument,
                format!("change {} is in the message twice", change.hash()),
            ));
        }
        let ops = change.len() as u64;
        if ops > config.max_change_ops {
            return Err((
                StatusCode::ResourceExhausted,
                format!(
                    "a change with {ops} operations (at most {} per change)",
                    config.max_change_ops
                ),
            ));
        }
        if ops > config.max_text_insert_chars {
            let mut inserted: HashMap<automerge::legacy::ObjectId, u64> = HashMap::new();
            for op in change.decode().operations {
                if op.insert {
                    let chars = match &op.action {
                        automerge::legacy::OpType::Put(automerge::ScalarValue::Str(text)) => {
                            text.chars().count() as u64
                        }
                        _ => 1,
                    };
                    let count = inserted.entry(op.obj).or_default();
                    *count += chars;
                    if *count > config.max_text_insert_chars {
                        return Err((
                            StatusCode::ResourceExhausted,
                            format!(
                                "a change inserting more than {} characters or elements into one \
                                 text or list",
                                config.max_text_insert_chars
                            ),
                        ));
                    }
                }
            }
        }
        let known =
            current.is_some_and(|doc| doc.get_change_meta_by_hash(&change.hash()).is_some());
        if !known {
            new_ops += ops;
        }
    }
    let held = current.map_or(0, |doc| doc.stats().num_ops);
    if held.saturating_add(new_ops) > config.max_doc_ops {
        return Err((
            StatusCode::ResourceExhausted,
            format!(
                "the document would hold {} operations (at most {} per document)",
                held.saturating_add(new_ops),
                config.max_doc_ops
            ),
        ));
    }
    Ok(())
}

/// Whether `doc`, holding its owner's new `change`, is over a content limit its peers enforce
/// ([`check_content`]): the operations in the change, or in the whole document.
fn over_content_limits(
    doc: &Automerge,
    change: &automerge::Change,
    config: &EngineConfig,
) -> Option<String> {
    let ops = change.len() as u64;
    if ops > config.max_change_ops {
        return Some(format!(
            "the change has {ops} operations, and a peer accepts at most {} per change",
            config.max_change_ops
        ));
    }
    let held = doc.stats().num_ops;
    (held > config.max_doc_ops).then(|| {
        format!(
            "it would hold {held} operations, and a peer accepts at most {} per document",
            config.max_doc_ops
        )
    })
}

/// Marks a sync state as in step with a peer whose heads are `heads` (ours, or an ancestor of
/// ours), so that what the peer lacks is sent in one message instead of after a round trip.
fn prime_in_step(state: &mut sync::State, heads: Vec<ChangeHash>) {
    state.shared_heads = heads.clone();
    state.last_sent_heads = heads.clone();
    state.their_heads = Some(heads.clone());
    state.their_need = Some(Vec::new());
    state.their_have = Some(vec![Have {
        last_sync: heads,
        bloom: BloomFilter::from_hashes(std::iter::empty::<ChangeHash>()),
    }]);
    state.have_responded = true;
    state.in_flight = false;
}

fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort();
    heads
}
