//! The one driver of the [`Engine`]: every node, the simulator, the fuzz harness and the tests
//! execute the engine's [`Output`] through it, so the rules below hold everywhere.
//!
//! The write path is one pipeline:
//!
//! ```text
//!  caller ──▶ engine call ──▶ ordered queue ──▶ writer: put batch ─▶ sync once ─▶ release
//!            (engine lock,     (seq number,      (no engine lock)                  frames ▶ acks ▶
//!             no I/O)           engine order)                                      notifications
//! ```
//!
//! - Only engine calls run under the engine lock; no disk I/O does (the one exception: a
//!   document a caught panic interrupted is read back from storage before the engine is used
//!   again, [`Output::reload_docs`]). Reads ([`Driver::read`]) see the in-memory documents and
//!   never wait for a sync. Engine calls take turns before the engine lock, so a read waits
//!   for the call at work and at most one more, never for a queue of them.
//! - Each call's output goes onto a queue, numbered in the order the engine made them. One
//!   writer at a time drains the queue: it puts every batch it took into [`Storage`], syncs
//!   once for all of them (group commit), and only then releases, batch by batch in order, the
//!   frames to the [`Transport`], then the callers' acknowledgements, then the change
//!   notifications. A caller waits until its own batch is released; whoever finds no writer
//!   at work becomes it.
//! - A snapshot that falls due on a write is stored after that write is released
//!   ([`Output::compact_docs`]): the document is copied as durable (under the engine lock,
//!   with the queue empty), saved with no lock held while writes go on, then stored by the
//!   writer together with what was stored of it since the copy. No acknowledgement or frame
//!   waits for a whole document to be saved.
//! - A storage failure goes back into the engine as an event: every batch of the failed
//!   drain, and every batch queued behind it, is dropped unreleased (their callers get
//!   [`StorageFailure`]); each document they touched is set back to what is durable
//!   ([`Engine::persist_failed`], from the heads of its last synced write) and every link is
//!   closed, so nothing unsaved is ever offered to a peer.
//! - A received frame is read (decoded, checked, its changes parsed) before the engine lock is
//!   taken, and a large sync message is applied in slices, one engine call each
//!   ([`Driver::receive`]): a peer's 16 MiB message holds up other links and the API for a
//!   slice at a time, not for all of it.
//! - A frame the transport refuses (a peer that does not read, a budget spent) closes that link
//!   in the engine, through the queue like any other event.
//!
//! The driver has no clock, no socket and no task of its own (callers pass the time in), so
//! the simulator drives it deterministically from one thread.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use automerge::transaction::Transaction;
use automerge::{Automerge, ChangeHash, ReadDoc};

use crate::engine::{
    CloseReason, ConnId, DocPersist, EditError, Engine, LogEvent, Output, PersistKind, StatusCode,
};
use crate::frame::Frame;
use crate::scope::ShareableDocId;
use crate::screen::{read_frame, ReadLimits};
use crate::storage::Storage;

/// Where the driver releases what an output carries, after it is durable.
pub trait Transport: Send + Sync {
    /// Queues `frame` on link `conn`. `beside_bound` marks a handshake or the catch-up right
    /// after it, which is sized by what the peer lacks rather than by what it fails to read.
    /// An error closes the link (the transport ends its stream itself; the engine is told).
    /// A link the transport no longer holds is not an error: the frame is dropped.
    fn send(&self, conn: ConnId, frame: Frame, beside_bound: bool) -> Result<(), CloseReason>;
    /// Ends link `conn` on this node's side: its Goodbye and status go out, queued frames are
    /// dropped, its stream ends.
    fn close(&self, conn: ConnId, reason: &CloseReason);
    /// A snapshot fell due: [`Driver::compact_pending`] should be called soon, away from the
    /// callers of the write path. Without it, a document's write stores the snapshot itself
    /// once its chunks reach twice the compaction bounds.
    fn compaction_due(&self) {}
    /// The peer ended link `conn` with Goodbye: its stream ends after what is queued.
    fn end(&self, conn: ConnId);
    /// The content of `doc` changed, durably.
    fn changed(&self, doc: &ShareableDocId);
    /// Something worth a log line happened.
    fn event(&self, event: &LogEvent);
}

/// A write of this node's storage failed: what the caller did is not durable and was
/// forgotten (the engine holds what is stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StorageFailure(pub String);

/// Why an edit through the driver failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverEditError<E> {
    /// The engine or the caller refused the edit; nothing changed.
    #[error(transparent)]
    Edit(EditError<E>),
    /// The edit was made but could not be stored; it was forgotten.
    #[error(transparent)]
    Storage(StorageFailure),
}

struct Batch {
    seq: u64,
    out: Output,
    /// Links whose frames in this batch pass beside the outbox bound.
    beside_bound: BTreeSet<ConnId>,
    /// Whether a caller waits for this batch (and takes its failure).
    awaited: bool,
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<Batch>,
    next_seq: u64,
    /// Every batch numbered below this is released or failed.
    released: u64,
    /// Whether a writer is at work.
    writing: bool,
    /// Failures of awaited batches, until their callers take them.
    failed: HashMap<u64, StorageFailure>,
    /// Documents whose snapshot fell due, for [`Driver::compact_pending`].
    compactions: BTreeSet<ShareableDocId>,
}

/// The engine, its storage and its transport. See the module documentation.
pub struct Driver<S: Storage, T: Transport> {
    engine: Mutex<Engine>,
    storage: S,
    transport: T,
    queue: Mutex<Queue>,
    released: Condvar,
    /// Per document, the heads of its last write that was synced: what survives a crash.
    durable: Mutex<HashMap<ShareableDocId, Vec<ChangeHash>>>,
    /// The engine's limit on a received sync message, for reading frames without its lock.
    read_limits: ReadLimits,
    /// What was stored of documents whose snapshot is being saved, since their copy.
    kept_for_snapshots: Mutex<KeptForSnapshots>,
    /// Reads waiting for the engine lock, which engine calls let go first.
    reads_waiting: Mutex<usize>,
    /// Signalled when no read waits any more.
    reads_done: Condvar,
    /// How long an engine call lets waiting reads go first, at most, from when it first finds
    /// one waiting.
    reads_first_for: std::time::Duration,
    /// Engine calls waiting for the engine lock.
    calls_waiting: std::sync::atomic::AtomicUsize,
    /// Of those, the ones that have their turn (at most one).
    calls_at_the_lock: std::sync::atomic::AtomicUsize,
    /// Engine calls take turns here before they wait for the engine lock, so that at most one
    /// of them waits there beside reads: a read waits for the call at work, not for a queue of
    /// calls each woken in turn on a busy machine.
    turn: Mutex<()>,
}

/// The engine, locked for an engine call (which holds the calls' turn too); see
/// [`Driver::lock_engine`].
pub struct EngineCall<'a> {
    engine: MutexGuard<'a, Engine>,
    _turn: MutexGuard<'a, ()>,
}

impl std::ops::Deref for EngineCall<'_> {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.engine
    }
}

impl std::ops::DerefMut for EngineCall<'_> {
    fn deref_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }
}

/// Counts itself in a gauge while it lives.
struct Counted<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Counted<'a> {
    fn new(gauge: &'a std::sync::atomic::AtomicUsize) -> Counted<'a> {
        gauge.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How long an engine call lets reads that wait for the engine lock go first, at most, by
/// default ([`Driver::set_reads_first_for`]).
pub const READS_FIRST_FOR: std::time::Duration = std::time::Duration::from_millis(5);

/// Per document whose snapshot is being saved ([`Driver::begin_compaction`]): the ticket of
/// that snapshot and the bytes stored of the document since its copy, `None` once the
/// document was stored whole or replaced (the snapshot is then not stored).
#[derive(Default)]
struct KeptForSnapshots {
    docs: HashMap<ShareableDocId, (u64, Option<Vec<u8>>)>,
    next_ticket: u64,
}

impl KeptForSnapshots {
    /// A snapshot of `doc` was copied: keep what is stored of it from now on; its ticket.
    fn start(&mut self, doc: &ShareableDocId) -> u64 {
        self.next_ticket += 1;
        self.docs
            .insert(doc.clone(), (self.next_ticket, Some(Vec::new())));
        self.next_ticket
    }

    /// `persist` was stored and synced (in an output that replaced the documents
    /// `replaced`): its bytes go with the snapshot being saved of its document, if any, unless
    /// it stored the document whole or replaced it (the snapshot is then not wanted).
    fn stored(&mut self, persist: &DocPersist, replaced: &[(ShareableDocId, u64)]) {
        if let Some((_, since_copy)) = self.docs.get_mut(&persist.doc) {
            let replaced = replaced.iter().any(|(doc, _)| doc == &persist.doc);
            match since_copy {
                Some(bytes) if persist.kind == PersistKind::Incremental && !replaced => {
                    bytes.extend_from_slice(&persist.bytes)
                }
                _ => *since_copy = None,
            }
        }
    }

    /// What was stored of `doc` since the copy of snapshot `ticket`, if that snapshot is still
    /// wanted.
    fn take(&mut self, doc: &ShareableDocId, ticket: u64) -> Option<Vec<u8>> {
        match self.docs.get(doc) {
            Some((t, _)) if *t == ticket => self.docs.remove(doc).and_then(|(_, bytes)| bytes),
            _ => None,
        }
    }
}

/// A snapshot after the write path, between [`Driver::begin_compaction`] (the copy) and
/// [`Driver::finish_compaction`] (saved and stored). Dropping it unfinished stores nothing.
pub struct SnapshotInProgress {
    doc: ShareableDocId,
    copy: Automerge,
    ticket: u64,
}

impl SnapshotInProgress {
    /// The document being snapshotted.
    pub fn doc(&self) -> &ShareableDocId {
        &self.doc
    }
}

fn relock<G>(result: std::sync::LockResult<G>) -> G {
    result.unwrap_or_else(|p| p.into_inner())
}

impl<S: Storage, T: Transport> Driver<S, T> {
    /// Loads every stored document into `engine` and drives it from now on.
    pub fn open(mut engine: Engine, storage: S, transport: T) -> Result<Driver<S, T>, S::Error> {
        let mut durable = HashMap::new();
        for stored in storage.load_all()? {
            durable.insert(stored.id.clone(), stored.doc.get_heads());
            engine.load_document(stored.id, stored.doc, stored.chunks);
        }
        let read_limits = engine.config().read_limits();
        Ok(Driver {
            read_limits,
            engine: Mutex::new(engine),
            storage,
            transport,
            queue: Mutex::new(Queue::default()),
            released: Condvar::new(),
            durable: Mutex::new(durable),
            kept_for_snapshots: Mutex::new(KeptForSnapshots::default()),
            reads_waiting: Mutex::new(0),
            reads_done: Condvar::new(),
            reads_first_for: READS_FIRST_FOR,
            calls_waiting: std::sync::atomic::AtomicUsize::new(0),
            calls_at_the_lock: std::sync::atomic::AtomicUsize::new(0),
            turn: Mutex::new(()),
        })
    }

    /// Sets how long an engine call lets reads that wait for the engine lock go first.
    pub fn set_reads_first_for(&mut self, limit: std::time::Duration) {
        self.reads_first_for = limit;
    }

    /// How many reads wait for the engine lock now.
    pub fn reads_waiting(&self) -> usize {
        *relock(self.reads_waiting.lock())
    }

    /// The storage the driver writes to.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The transport the driver releases to.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The engine for an engine call. Engine calls take turns first, so only one of them at a
    /// time waits for the engine lock beside the reads. Reads waiting for the lock go first
    /// ([`Driver::read`]): an engine call lets them have it for at most [`READS_FIRST_FOR`]
    /// (by default) from when it first finds one waiting, so a stream of reads cannot hold up
    /// the write path.
    fn engine(&self) -> EngineCall<'_> {
        let _counted = Counted::new(&self.calls_waiting);
        let turn = relock(self.turn.lock());
        let _at_the_lock = Counted::new(&self.calls_at_the_lock);
        // When this call first found a read waiting: it lets reads go first for
        // `reads_first_for` from then. Counted from then, not from when the call began to wait
        // for the lock: calls queued behind each other for longer than that would otherwise
        // all take the lock before a read that came later, and the read would wait for every
        // one of them.
        let mut reads_since: Option<std::time::Instant> = None;
        let patience_left = |reads_since: &mut Option<std::time::Instant>| {
            let since = *reads_since.get_or_insert_with(std::time::Instant::now);
            (since + self.reads_first_for).saturating_duration_since(std::time::Instant::now())
        };
        loop {
            {
                let mut waiting = relock(self.reads_waiting.lock());
                while *waiting > 0 {
                    let left = patience_left(&mut reads_since);
                    if left.is_zero() {
                        break;
                    }
                    waiting = relock(self.reads_done.wait_timeout(waiting, left)).0;
                }
            }
            let engine = relock(self.engine.lock());
            // A read that came while this call waited for the lock takes it first.
            if *relock(self.reads_waiting.lock()) == 0 || patience_left(&mut reads_since).is_zero()
            {
                return EngineCall {
                    engine,
                    _turn: turn,
                };
            }
        }
    }

    /// How many engine calls wait for the engine lock now (for their turn, or at the lock).
    pub fn calls_waiting(&self) -> usize {
        self.calls_waiting
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many engine calls have their turn and wait at the engine lock itself now: at most
    /// one.
    pub fn calls_at_the_lock(&self) -> usize {
        self.calls_at_the_lock
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        relock(self.queue.lock())
    }

    /// The engine itself, locked, for inspection by tests and the simulator: hold it briefly,
    /// and never across a call into the driver.
    pub fn lock_engine(&self) -> EngineCall<'_> {
        self.engine()
    }

    /// The engine itself, for a caller that owns the driver alone (tests of the engine's own
    /// output hand it to [`Driver::perform`] afterwards).
    pub fn engine_mut(&mut self) -> &mut Engine {
        relock(self.engine.get_mut())
    }

    /// Reads the in-memory documents under the engine lock (never waits for a sync). A read
    /// waits for the engine call at work, not for the calls queued for the lock: those let it
    /// go first (see [`Driver::engine`]).
    pub fn read<R>(&self, f: impl FnOnce(&Engine) -> R) -> R {
        *relock(self.reads_waiting.lock()) += 1;
        let engine = relock(self.engine.lock());
        {
            let mut waiting = relock(self.reads_waiting.lock());
            *waiting -= 1;
            if *waiting == 0 {
                self.reads_done.notify_all();
            }
        }
        f(&engine)
    }

    /// Runs one engine call and returns once its output is durable and released. `f` runs
    /// under the engine lock: it must not do I/O (registering a link with the transport is
    /// fine, and is how a link and the engine's view of it stay in step).
    pub fn call<R>(&self, f: impl FnOnce(&mut Engine) -> (R, Output)) -> Result<R, StorageFailure> {
        let seq = {
            let mut engine = self.engine();
            let (result, out) = f(&mut engine);
            match self.enqueue(&mut engine, out, true) {
                Some(seq) => (result, seq),
                None => return Ok(result),
            }
        };
        let (result, seq) = seq;
        self.wait(seq)?;
        Ok(result)
    }

    /// Like [`Driver::call`] for an engine call that returns only an output.
    pub fn perform(&self, f: impl FnOnce(&mut Engine) -> Output) -> Result<(), StorageFailure> {
        self.call(|engine| ((), f(engine)))
    }

    /// A frame arrived on link `conn`. It is read first (a sync message decoded, checked and
    /// its changes parsed, [`read_frame`]) without the engine lock; then a large sync message
    /// is applied one slice per engine call ([`Engine::receive_read`]), each slice stored and
    /// released before the next, so other links and API calls take the engine in between.
    /// `seen` is shown each output under the engine lock. Returns once the whole frame is
    /// applied and durable.
    pub fn receive(
        &self,
        conn: ConnId,
        frame: Frame,
        now_ms: u64,
        mut seen: impl FnMut(&Output),
    ) -> Result<(), StorageFailure> {
        let mut read = Some(read_frame(frame, &self.read_limits));
        loop {
            let unfinished = self.call(|engine| {
                let out = match read.take() {
                    Some(read) => engine.receive_read(conn, read, now_ms),
                    None => engine.continue_receive(conn, now_ms),
                };
                seen(&out);
                (out.unfinished.contains(&conn), out)
            })?;
            if !unfinished {
                return Ok(());
            }
        }
    }

    /// Changes a document this node owns (see [`Engine::edit_verified`]); returns once the
    /// change is durable and offered to every link. Refused before the engine sees it when
    /// storage takes no writes.
    pub fn edit<R, E>(
        &self,
        doc: &ShareableDocId,
        at: Option<&[ChangeHash]>,
        now_ms: u64,
        change: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
        verify: impl FnOnce(&Automerge, &automerge::Change) -> Result<(), E>,
    ) -> Result<R, DriverEditError<E>> {
        let result =
            self.owner_call(|engine| engine.edit_verified(doc, at, now_ms, change, verify))?;
        self.push_pending(now_ms);
        Ok(result)
    }

    /// Starts a new generation of a document this node owns (see [`Engine::new_generation`]);
    /// returns once it is durable, the older one destroyed, and offered to every link.
    pub fn new_generation<R, E>(
        &self,
        doc: &ShareableDocId,
        now_ms: u64,
        remove: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<R, DriverEditError<E>> {
        self.owner_call(|engine| engine.new_generation(doc, now_ms, remove))
    }

    /// Runs an engine call that changes a document this node owns: refused before the engine
    /// when storage takes no writes; the engine's refusal leaves nothing to store.
    fn owner_call<R, E>(
        &self,
        f: impl FnOnce(&mut Engine) -> Result<(R, Output), EditError<E>>,
    ) -> Result<R, DriverEditError<E>> {
        self.storage
            .check_writable()
            .map_err(|err| DriverEditError::Storage(StorageFailure(err.to_string())))?;
        self.call(|engine| match f(engine) {
            Ok((result, out)) => (Ok(result), out),
            Err(err) => (Err(err), Output::default()),
        })
        .map_err(DriverEditError::Storage)?
        .map_err(DriverEditError::Edit)
    }

    /// Offers the documents edited so far to every link (see [`Engine::push_pending`]). Edits
    /// call this once they are released, so a burst of writers costs one sync message per
    /// document; a writer that finds its edit already pushed returns at once.
    pub fn push_pending(&self, now_ms: u64) {
        // A failure here closed every link already; the edit itself is durable.
        let _ = self.call(|engine| {
            if engine.has_pending_pushes() {
                ((), engine.push_pending(now_ms))
            } else {
                ((), Output::default())
            }
        });
    }

    /// Puts an output on the queue (under the engine lock, so the queue keeps the engine's
    /// order). Returns its number, `None` when there is nothing to do.
    fn enqueue(&self, engine: &mut Engine, mut out: Output, awaited: bool) -> Option<u64> {
        self.reload_interrupted(engine, &mut out);
        if is_empty(&out) {
            return None;
        }
        // A link's handshake and the catch-up right after it pass beside the outbox bound.
        let mut beside_bound: BTreeSet<ConnId> = out
            .sends
            .iter()
            .filter(|(_, frame)| matches!(frame, Frame::Hello { .. }))
            .map(|(conn, _)| *conn)
            .collect();
        for event in &out.events {
            if let LogEvent::LinkOpen { peer, .. } = event {
                beside_bound.extend(
                    engine
                        .links()
                        .filter(|(_, p, _)| *p == peer)
                        .map(|(conn, _, _)| conn),
                );
            }
        }
        let mut queue = self.queue();
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.batches.push_back(Batch {
            seq,
            out,
            beside_bound,
            awaited,
        });
        Some(seq)
    }

    /// Reloads from storage every document a caught panic may have left half-changed, before
    /// the engine is used again. Should reading one back fail, it is treated as a failed
    /// write: every link closes and the document is stored in full next.
    fn reload_interrupted(&self, engine: &mut Engine, out: &mut Output) {
        for doc in std::mem::take(&mut out.reload_docs) {
            match self.storage.load_doc(&doc) {
                Ok(stored) => engine.reload_document(&doc, stored),
                Err(_) => {
                    let kept = engine.document(&doc).cloned();
                    out.extend(engine.persist_failed(&doc, kept));
                }
            }
        }
    }

    /// Waits until batch `seq` is released, writing whatever is queued when no writer is at
    /// work.
    fn wait(&self, seq: u64) -> Result<(), StorageFailure> {
        let mut queue = self.queue();
        loop {
            if seq < queue.released {
                return match queue.failed.remove(&seq) {
                    Some(failure) => Err(failure),
                    None => Ok(()),
                };
            }
            if !queue.writing {
                queue.writing = true;
                drop(queue);
                self.write_queued();
                queue = self.queue();
                queue.writing = false;
                self.released.notify_all();
                continue;
            }
            queue = relock(self.released.wait(queue));
        }
    }

    /// The writer: drains the queue until it is empty.
    fn write_queued(&self) {
        loop {
            let batches: Vec<Batch> = self.queue().batches.drain(..).collect();
            let Some(last) = batches.last().map(|b| b.seq) else {
                return;
            };
            match self.store(&batches) {
                Ok(()) => {
                    let mut refused = Vec::new();
                    for batch in &batches {
                        self.release_frames(batch, &mut refused);
                    }
                    {
                        let mut queue = self.queue();
                        queue.released = last + 1;
                        self.released.notify_all();
                    }
                    for batch in &batches {
                        for doc in &batch.out.changed_docs {
                            self.transport.changed(doc);
                        }
                    }
                    let due: Vec<ShareableDocId> = batches
                        .iter()
                        .flat_map(|b| b.out.compact_docs.iter().cloned())
                        .collect();
                    if !due.is_empty() {
                        self.queue().compactions.extend(due);
                        self.transport.compaction_due();
                    }
                    if !refused.is_empty() {
                        let mut engine = self.engine();
                        let mut out = Output::default();
                        for (conn, reason) in refused {
                            out.extend(engine.close_link(conn, reason.code, reason.message));
                        }
                        self.enqueue(&mut engine, out, false);
                    }
                }
                Err(failure) => self.fail(batches, Vec::new(), failure),
            }
        }
    }

    /// Puts every batch into storage in order and syncs once.
    fn store(&self, batches: &[Batch]) -> Result<(), StorageFailure> {
        let failure = |err: S::Error| StorageFailure(err.to_string());
        let mut wrote_docs = false;
        for batch in batches {
            let out = &batch.out;
            for (doc, _) in &out.replaced_docs {
                self.storage.remove_sync_states(doc).map_err(failure)?;
            }
            for persist in &out.persist_docs {
                let replaces = persist.kind == PersistKind::Snapshot
                    && out.replaced_docs.iter().any(|(doc, _)| doc == &persist.doc);
                if replaces {
                    self.storage.replace_generation(persist).map_err(failure)?;
                } else {
                    self.storage.put_doc(persist).map_err(failure)?;
                }
                wrote_docs = true;
            }
            for (peer, doc, state) in &out.persist_sync_states {
                self.storage
                    .put_sync_state(peer, doc, state)
                    .map_err(failure)?;
            }
        }
        if wrote_docs {
            self.storage.sync().map_err(failure)?;
            let mut durable = relock(self.durable.lock());
            let mut kept = relock(self.kept_for_snapshots.lock());
            for batch in batches {
                for persist in &batch.out.persist_docs {
                    durable.insert(persist.doc.clone(), persist.heads.clone());
                    kept.stored(persist, &batch.out.replaced_docs);
                }
            }
        }
        Ok(())
    }

    /// Stores the snapshots that fell due since the last call ([`Transport::compaction_due`]
    /// asks for this call; the node makes it from a blocking task, the tests and the simulator
    /// when they choose): for each, [`Driver::begin_compaction`] then
    /// [`Driver::finish_compaction`]. A failure is a storage failure like any other (every
    /// link closes).
    pub fn compact_pending(&self) -> Result<(), StorageFailure> {
        // Bounded: each document is taken from the set once; one whose copy had to wait goes
        // back for the next call.
        let due = std::mem::take(&mut self.queue().compactions);
        for doc in due {
            if let Some(snapshot) = self.begin_compaction_of(doc) {
                self.finish_compaction(snapshot)?;
            }
        }
        Ok(())
    }

    /// Starts the snapshot of one document whose snapshot fell due, if any: copies it, as
    /// the writer, under the engine lock at a moment the write queue is empty, so the copy
    /// holds exactly what is durable (a snapshot holding what is not could bring back, after
    /// a failure, a change the engine forgot). From now on, until
    /// [`Driver::finish_compaction`], what the writer stores of that document is also kept
    /// aside, to be stored with the snapshot. Bounded: if writes keep the queue from
    /// emptying, the document waits for the next call.
    pub fn begin_compaction(&self) -> Option<SnapshotInProgress> {
        let doc = {
            let mut queue = self.queue();
            let doc = queue.compactions.iter().next().cloned()?;
            queue.compactions.remove(&doc);
            doc
        };
        self.begin_compaction_of(doc)
    }

    fn begin_compaction_of(&self, doc: ShareableDocId) -> Option<SnapshotInProgress> {
        // `Err`: the queue never emptied (writes kept arriving).
        let copied = self.as_writer(|| {
            for _ in 0..8 {
                self.write_queued();
                let engine = self.engine();
                if self.queue().batches.is_empty() {
                    let copy = engine.snapshot_for_compaction(&doc);
                    return Ok(
                        copy.map(|copy| (copy, relock(self.kept_for_snapshots.lock()).start(&doc)))
                    );
                }
            }
            Err(())
        });
        match copied {
            Ok(copied) => copied.map(|(copy, ticket)| SnapshotInProgress { doc, copy, ticket }),
            Err(()) => {
                self.queue().compactions.insert(doc);
                None
            }
        }
    }

    /// Saves the copy [`Driver::begin_compaction`] took, outside the writer and the engine
    /// lock (writes and frames go on meanwhile), then, as the writer, stores it followed by
    /// what was stored of the document since the copy, in place of everything stored of it,
    /// and syncs. Nothing is stored if the document was stored whole or replaced meanwhile,
    /// or if another snapshot of it was begun since.
    pub fn finish_compaction(&self, snapshot: SnapshotInProgress) -> Result<(), StorageFailure> {
        let SnapshotInProgress { doc, copy, ticket } = snapshot;
        let mut bytes = copy.save();
        drop(copy);
        let failure = |err: S::Error| StorageFailure(err.to_string());
        let stored: Result<Option<(usize, usize)>, StorageFailure> = self.as_writer(|| {
            self.write_queued();
            let since_copy = relock(self.kept_for_snapshots.lock()).take(&doc, ticket);
            let Some(since_copy) = since_copy else {
                return Ok(None);
            };
            let Some(heads) = relock(self.durable.lock()).get(&doc).cloned() else {
                return Ok(None);
            };
            let saved_len = bytes.len();
            bytes.extend_from_slice(&since_copy);
            let persist = DocPersist {
                doc: doc.clone(),
                kind: PersistKind::Snapshot,
                bytes,
                heads,
            };
            let written = self
                .storage
                .put_doc(&persist)
                .and_then(|()| self.storage.sync())
                .map_err(failure);
            match written {
                Ok(()) => Ok(Some((saved_len, since_copy.len()))),
                Err(failure) => {
                    self.fail(Vec::new(), vec![doc.clone()], failure.clone());
                    Err(failure)
                }
            }
        });
        if let Some((saved_len, kept_len)) = stored? {
            self.engine().compacted(&doc, saved_len, kept_len);
        }
        Ok(())
    }

    /// Runs `f` as the writer: waits for the writer at work to finish, keeps others from
    /// writing while `f` runs, then writes what was queued meanwhile.
    fn as_writer<R>(&self, f: impl FnOnce() -> R) -> R {
        {
            let mut queue = self.queue();
            // Bounded by the writers at work: each ends when the queue is empty.
            while queue.writing {
                queue = relock(self.released.wait(queue));
            }
            queue.writing = true;
        }
        let result = f();
        self.write_queued();
        let mut queue = self.queue();
        queue.writing = false;
        self.released.notify_all();
        result
    }

    /// Hands a durable batch's frames to the transport, then its closes and ends.
    fn release_frames(&self, batch: &Batch, refused: &mut Vec<(ConnId, CloseReason)>) {
        let out = &batch.out;
        for event in &out.events {
            self.transport.event(event);
        }
        // The Goodbye of a link the engine closes goes out with its status, by `close`.
        let closing: BTreeSet<ConnId> = out.closes.iter().map(|(conn, _)| *conn).collect();
        let mut cut: BTreeSet<ConnId> = BTreeSet::new();
        for (conn, frame) in &out.sends {
            if cut.contains(conn)
                || (matches!(frame, Frame::Goodbye { .. }) && closing.contains(conn))
            {
                continue;
            }
            let beside = batch.beside_bound.contains(conn);
            if let Err(reason) = self.transport.send(*conn, frame.clone(), beside) {
                cut.insert(*conn);
                refused.push((*conn, reason));
            }
        }
        for (conn, reason) in &out.closes {
            self.transport.close(*conn, reason);
        }
        for conn in &out.ended {
            self.transport.end(*conn);
        }
    }

    /// A write or sync failed: nothing of `batches`, nor of anything queued behind them,
    /// leaves the node; the engine goes back to what is durable (for the documents they
    /// touched and those in `also`: a snapshot being stored) and closes every link.
    fn fail(&self, batches: Vec<Batch>, also: Vec<ShareableDocId>, failure: StorageFailure) {
        let mut engine = self.engine();
        // Everything queued now was made before the engine learns of the failure, and may
        // build on what was not stored.
        let mut dropped = batches;
        dropped.extend(self.queue().batches.drain(..));
        let mut docs: BTreeSet<ShareableDocId> = also.into_iter().collect();
        for batch in &dropped {
            docs.extend(batch.out.persist_docs.iter().map(|p| p.doc.clone()));
            docs.extend(batch.out.replaced_docs.iter().map(|(doc, _)| doc.clone()));
        }
        let mut closing = Output::default();
        for doc in &docs {
            let stored = self.durable_version(&engine, doc);
            closing.extend(engine.persist_failed(doc, stored));
        }
        closing.extend(engine.close_all_links(
            StatusCode::Unavailable,
            &format!("{failure}; reconnect to resync from what is stored"),
        ));
        drop(engine);
        // The closing output carries no data (Goodbyes and closes): it leaves at once, and
        // every link it would refuse a frame on is closing anyway.
        let closing = Batch {
            seq: 0,
            out: closing,
            beside_bound: BTreeSet::new(),
            awaited: false,
        };
        self.release_frames(&closing, &mut Vec::new());
        let mut queue = self.queue();
        let mut last = queue.released;
        for batch in &dropped {
            if batch.awaited {
                queue.failed.insert(batch.seq, failure.clone());
            }
            last = last.max(batch.seq + 1);
        }
        queue.released = last;
        self.released.notify_all();
    }

    /// What is durable of `doc`: the in-memory document at the heads of its last synced write
    /// (everything stored is a prefix of its history), else as read back from storage, else
    /// as it is in memory.
    fn durable_version(&self, engine: &Engine, doc: &ShareableDocId) -> Option<Automerge> {
        let heads = relock(self.durable.lock()).get(doc).cloned()?;
        let in_memory = engine.document(doc);
        let forked = in_memory.and_then(|now| {
            heads
                .iter()
                .all(|h| now.get_change_by_hash(h).is_some())
                .then(|| now.fork_at(&heads).ok())
                .flatten()
        });
        forked
            .or_else(|| self.storage.load_doc(doc).ok().flatten())
            .or_else(|| in_memory.cloned())
    }
}

fn is_empty(out: &Output) -> bool {
    out.persist_docs.is_empty()
        && out.persist_sync_states.is_empty()
        && out.sends.is_empty()
        && out.closes.is_empty()
        && out.changed_docs.is_empty()
        && out.events.is_empty()
        && out.ended.is_empty()
        && out.replaced_docs.is_empty()
}

/// What a [`RecordingTransport`] was handed, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Released {
    Frame(ConnId, Frame),
    Close(ConnId, CloseReason),
    End(ConnId),
    Changed(ShareableDocId),
    Event(LogEvent),
}

/// A [`Transport`] that records what it is handed, for drivers without sockets: the
/// simulator, the fuzz harness and the tests take the records and deliver them themselves.
#[derive(Default)]
pub struct RecordingTransport {
    released: Mutex<Vec<Released>>,
    /// Links whose frames are refused (as a transport refuses a peer that does not read).
    refusing: Mutex<BTreeSet<ConnId>>,
}

impl RecordingTransport {
    /// A transport with nothing recorded.
    pub fn new() -> RecordingTransport {
        RecordingTransport::default()
    }

    /// Takes everything recorded so far.
    pub fn take(&self) -> Vec<Released> {
        std::mem::take(&mut *relock(self.released.lock()))
    }

    /// From now on, frames for `conn` are refused with `RESOURCE_EXHAUSTED`.
    pub fn refuse(&self, conn: ConnId) {
        relock(self.refusing.lock()).insert(conn);
    }

    fn record(&self, item: Released) {
        relock(self.released.lock()).push(item);
    }
}

impl Transport for RecordingTransport {
    fn send(&self, conn: ConnId, frame: Frame, _beside_bound: bool) -> Result<(), CloseReason> {
        if relock(self.refusing.lock()).contains(&conn) {
            return Err(CloseReason {
                code: StatusCode::ResourceExhausted,
                message: format!("link {conn} does not read its frames"),
            });
        }
        self.record(Released::Frame(conn, frame));
        Ok(())
    }

    fn close(&self, conn: ConnId, reason: &CloseReason) {
        self.record(Released::Close(conn, reason.clone()));
    }

    fn end(&self, conn: ConnId) {
        self.record(Released::End(conn));
    }

    fn changed(&self, doc: &ShareableDocId) {
        self.record(Released::Changed(doc.clone()));
    }

    fn event(&self, event: &LogEvent) {
        self.record(Released::Event(event.clone()));
    }
}
