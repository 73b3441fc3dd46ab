//! The federation transport: drives the sans-IO [`Engine`] over tonic streams.
//!
//! [`SyncHandle`] owns the engine's one driver ([`sfs_sync::driver::Driver`]) over the only
//! storage the sync side may touch (shareable documents and sync states, [`ShareableStorage`];
//! never local documents) and this node's links ([`LinkTable`]). Every event goes through the
//! driver: the engine call runs under the engine lock, its output is queued in engine order,
//! and one writer stores a batch, syncs once and only then hands the frames to the links'
//! outboxes, answers the callers and announces the changed documents. A change is therefore
//! on disk before it is acknowledged or relayed, and no disk I/O happens under the engine lock.
//!
//! A city runs [`run_hub_link`], which dials the hub and reconnects with exponential backoff and
//! jitter (with a standby hub configured, [`crate::federation::upstream`] fails over to it and
//! back); the hub accepts links in [`crate::federation::hub`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use automerge::transaction::Transaction;
use automerge::{ActorId, ChangeHash};
use sfs_proto::v1 as pb;
use sfs_sync::{
    CloseReason, ConnId, Driver, DriverEditError, EditError, Engine, EngineConfig, Frame, LogEvent,
    NodeId, ShareableDocId, StatusCode, Storage, StorageFailure, Summary, Transport,
};
use tokio::sync::{oneshot, watch};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status, Streaming};

use crate::federation::limits::{LimitExceeded, PeerBudgets, PeerLimits};
use crate::federation::outbox::{outbox, OutboxSender, OutboxStream, PushError};
use crate::storage::store::{ShareableDocs, ShareableStorage, StoreError, SyncStates};

/// Largest frame accepted or sent on a federation stream.
pub const MAX_FRAME_BYTES: usize = 32 * 1024 * 1024;

/// Called with every frame a node receives on a federation link, before it is decoded further
/// (used by tests that check what crosses the wire).
pub type FrameTap = Arc<dyn Fn(&NodeId, &[u8]) + Send + Sync>;

/// Where frames for one link go: a bounded queue (see [`crate::federation::outbox`]).
pub enum Outbox {
    /// The hub side: the response stream of the peer's `Sync` call.
    Server(OutboxSender<Result<pb::Frame, Status>>),
    /// The city side: the request stream of our `Sync` call.
    Client(OutboxSender<pb::Frame>),
}

impl Outbox {
    fn push(&self, frame: pb::Frame, bytes: usize, exempt: bool) -> Result<(), PushError> {
        match (self, exempt) {
            (Outbox::Server(tx), false) => tx.push(Ok(frame), bytes),
            (Outbox::Server(tx), true) => tx.push_exempt(Ok(frame), bytes),
            (Outbox::Client(tx), false) => tx.push(frame, bytes),
            (Outbox::Client(tx), true) => tx.push_exempt(frame, bytes),
        }
    }

    /// Ends the link at once, dropping what is queued: a Goodbye saying why goes last, then
    /// (on the hub's side, where the stream is a response) the closing status.
    fn finish(&self, code: Code, message: &str) {
        let goodbye = to_pb(Frame::Goodbye {
            code: code as i32,
            message: message.to_string(),
        });
        match self {
            Outbox::Server(tx) => tx.finish(vec![Ok(goodbye), Err(Status::new(code, message))]),
            Outbox::Client(tx) => tx.finish(vec![goodbye]),
        }
    }

    /// Ends the link after what is queued (the peer said Goodbye): no status of our own.
    fn end(&self) {
        match self {
            Outbox::Server(tx) => tx.close(None),
            Outbox::Client(tx) => tx.close(None),
        }
    }
}

struct LinkHandle {
    peer: NodeId,
    /// Serial of the certificate the peer connected with (hub side), for revocation.
    cert_serial: Option<String>,
    outbox: Outbox,
    /// Dropped to tell the link's reader task to stop.
    _stop: oneshot::Sender<()>,
}

/// Connection state of one peer, for `status` and the hub's directory. Presence is kept here,
/// in memory, never in a synced document: a link going up or down is not a fact to replicate.
#[derive(Debug, Clone)]
pub struct PeerState {
    pub state: &'static str,
    pub last_error: String,
    pub since: SystemTime,
    /// When a link of the peer was last open (its opening, or its end).
    pub last_seen: Option<SystemTime>,
    /// The heads the peer announced on its last link that ended, per document.
    pub last_heads: Vec<(ShareableDocId, Vec<ChangeHash>)>,
}

/// Failure of a local edit.
#[derive(Debug, thiserror::Error)]
pub enum EditFailure<E> {
    #[error(transparent)]
    Engine(#[from] sfs_sync::EngineError),
    /// The change was made but could not be stored durably; it was forgotten.
    #[error("the change was not stored: {0}")]
    Storage(#[from] StorageFailure),
    #[error("rejected")]
    Rejected(E),
    /// The privacy guard refused the text as it would stand after the edit (promise 7).
    #[error(transparent)]
    Private(crate::domain::privacy::Finding),
}

/// Where the guard for shared text comes from: called before every edit of a shareable
/// document (cheap: a city caches its guard per version of its register).
pub type GuardSource = Arc<dyn Fn() -> Arc<crate::domain::privacy::Guard> + Send + Sync>;

/// Why an edit was taken back: the caller's own reason, or the privacy guard's.
enum Refusal<E> {
    Handler(E),
    Private(crate::domain::privacy::Finding),
}

/// The transport side of the driver: every link's outbox, the budgets its frames are charged
/// to, the peers' connection states, and the announcements of changed documents. The driver
/// hands it only what is durable ([`sfs_sync::driver`]).
pub struct LinkTable {
    links: Mutex<BTreeMap<ConnId, LinkHandle>>,
    peers: Mutex<BTreeMap<NodeId, PeerState>>,
    /// Rate and byte budgets of every peer (enforced on links from cities), and outbox bounds.
    budgets: Mutex<PeerBudgets<NodeId>>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Announces every document whose content changed durably (by an edit or from a peer).
    changes: tokio::sync::broadcast::Sender<ShareableDocId>,
    /// Wakes [`compact_when_due`]: a snapshot fell due.
    compactions: Arc<tokio::sync::Notify>,
}

impl LinkTable {
    fn links(&self) -> MutexGuard<'_, BTreeMap<ConnId, LinkHandle>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn budgets(&self) -> MutexGuard<'_, PeerBudgets<NodeId>> {
        self.budgets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a peer's connection state for `status`.
    fn set_peer_state(&self, peer: &NodeId, state: &'static str, error: Option<String>) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let entry = peers.entry(peer.clone()).or_insert(PeerState {
            state,
            last_error: String::new(),
            since: SystemTime::now(),
            last_seen: None,
            last_heads: Vec::new(),
        });
        if entry.state != state {
            entry.since = SystemTime::now();
        }
        if state == "connected" {
            entry.last_seen = Some(SystemTime::now());
        }
        entry.state = state;
        if let Some(error) = error {
            entry.last_error = bounded(&error, MAX_LAST_ERROR_CHARS);
        }
    }

    /// Ends a link at once for going over a bound: `RESOURCE_EXHAUSTED`, queued frames dropped.
    fn cut(
        &self,
        links: &mut BTreeMap<ConnId, LinkHandle>,
        conn: ConnId,
        message: String,
    ) -> CloseReason {
        if let Some(link) = links.remove(&conn) {
            link.outbox.finish(Code::ResourceExhausted, &message);
            self.set_peer_state(&link.peer, "disconnected", Some(message.clone()));
        }
        CloseReason {
            code: StatusCode::ResourceExhausted,
            message,
        }
    }
}

impl Transport for LinkTable {
    /// Queues a frame on the link's bounded outbox. A link whose outbox is full (its peer does
    /// not read), or a city over its budget of answers, is closed at once with
    /// `RESOURCE_EXHAUSTED`: what waits for it is dropped and the engine forgets the link; the
    /// peer reconnects and resumes from the persisted sync states.
    fn send(&self, conn: ConnId, frame: Frame, beside_bound: bool) -> Result<(), CloseReason> {
        let mut links = self.links();
        let Some(link) = links.get(&conn) else {
            return Ok(());
        };
        let frame = to_pb(frame);
        let bytes = prost::Message::encoded_len(&frame);
        self.metrics.frame(link.peer.name(), "sent", bytes);
        if is_budgeted(&link.peer) {
            if let Err(err) = self
                .budgets()
                .charge_sent(&link.peer, bytes, Instant::now())
            {
                let message = format!("{}: {err}", link.peer);
                tracing::warn!(peer = %link.peer, conn, error = %err, "cutting off a peer over its budget of answers");
                self.metrics.limit_refused(err.name());
                return Err(self.cut(&mut links, conn, message));
            }
        }
        match link.outbox.push(frame, bytes, beside_bound) {
            Ok(()) | Err(PushError::Closed) => Ok(()),
            Err(full @ PushError::Full { .. }) => {
                let message = format!("{}: {full}", link.peer);
                tracing::warn!(peer = %link.peer, conn, error = %full, "closing the link of a peer that does not read");
                self.metrics.limit_refused("outbox_per_link");
                Err(self.cut(&mut links, conn, message))
            }
        }
    }

    /// What still waits for a link the engine ended is dropped, not drained: a peer that
    /// stopped reading must not keep it in memory (it resyncs from the persisted states when
    /// it comes back). The Goodbye and the status go out; dropping the handle stops the link's
    /// reader, which ends the stream.
    fn close(&self, conn: ConnId, reason: &CloseReason) {
        if let Some(link) = self.links().remove(&conn) {
            link.outbox
                .finish(Code::from_i32(reason.code as i32), &reason.message);
        }
    }

    fn end(&self, conn: ConnId) {
        if let Some(link) = self.links().remove(&conn) {
            link.outbox.end();
        }
    }

    fn changed(&self, doc: &ShareableDocId) {
        let _ = self.changes.send(doc.clone());
    }

    fn compaction_due(&self) {
        self.compactions.notify_one();
    }

    fn event(&self, event: &LogEvent) {
        match event {
            LogEvent::Refused { peer, doc, reason } => {
                tracing::warn!(%peer, doc = doc.as_ref().map(|d| d.as_str()), %reason, "refused changes from peer")
            }
            LogEvent::LinkOpen { peer, docs_to_sync } => {
                tracing::info!(%peer, docs_to_sync, "federation link open")
            }
            LogEvent::StaleGeneration {
                peer,
                doc,
                theirs,
                ours,
            } => {
                tracing::info!(%peer, %doc, theirs, ours, "dropped a message of a replaced generation")
            }
            LogEvent::NewGeneration { doc, generation } => {
                tracing::info!(%doc, generation, "a newer generation replaced the document; the older one is destroyed")
            }
        }
    }
}

/// The engine's driver over this node's store and links. See the module documentation.
pub struct SyncHandle {
    me: NodeId,
    driver: Driver<ShareableStorage, LinkTable>,
    next_conn: AtomicU64,
    started: Instant,
    frame_tap: Option<FrameTap>,
    /// The privacy guard every edit passes (built-in checks only until the node sets one with
    /// the city's contact names and deny list).
    guard: Mutex<GuardSource>,
}

/// The Automerge actor id of a node's own edits in this run: 8 bytes derived from its identity,
/// then 8 random bytes drawn at every start. A fresh actor per run means a change lost with a
/// disk (a restore from an older backup) can never clash with a new one: Automerge refuses two
/// different changes with the same actor and sequence number, and a peer may hold the lost one.
/// Whether frames from and to `peer` are charged to its budgets: a city's and a county hub's
/// are; a hub's (a standby, or the upstream national hub) are not.
fn is_budgeted(peer: &NodeId) -> bool {
    matches!(peer.role(), sfs_sync::Role::City | sfs_sync::Role::County)
}

/// Budgets per peer, a county hub's weighted as `county_budget_cities` cities (it carries all
/// its cities' traffic on one link).
fn weighted_budgets(limits: PeerLimits) -> PeerBudgets<NodeId> {
    let county_weight = limits.county_budget_cities;
    PeerBudgets::new(limits).weighing(move |peer: &NodeId| match peer.role() {
        sfs_sync::Role::County => county_weight,
        _ => 1,
    })
}

pub fn actor_for(node: &NodeId) -> ActorId {
    sfs_sync::run_actor(node, rand::random::<[u8; 8]>())
}

impl SyncHandle {
    /// Loads every stored shareable document into a new engine.
    pub fn open(
        me: NodeId,
        shared: ShareableDocs,
        sync_states: SyncStates,
        config: EngineConfig,
        frame_tap: Option<FrameTap>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<SyncHandle, StoreError> {
        let engine = Engine::new(me.clone(), actor_for(&me), config);
        let links = LinkTable {
            links: Mutex::new(BTreeMap::new()),
            peers: Mutex::new(BTreeMap::new()),
            budgets: Mutex::new(weighted_budgets(PeerLimits::default())),
            metrics,
            changes: tokio::sync::broadcast::channel(1024).0,
            compactions: Arc::new(tokio::sync::Notify::new()),
        };
        let driver = Driver::open(engine, ShareableStorage::new(shared, sync_states), links)?;
        Ok(SyncHandle {
            me,
            driver,
            next_conn: AtomicU64::new(1),
            started: Instant::now(),
            frame_tap,
            guard: Mutex::new(Arc::new(crate::domain::privacy::Guard::builtin)),
        })
    }

    fn links(&self) -> &LinkTable {
        self.driver.transport()
    }

    fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.links().metrics
    }

    /// Sets where the privacy guard of every edit comes from (the city's register).
    pub fn set_privacy_guard(&self, source: GuardSource) {
        *self.guard.lock().unwrap_or_else(|p| p.into_inner()) = source;
    }

    /// Sets the limits on peers and links (the defaults otherwise).
    pub fn with_limits(self, limits: PeerLimits) -> SyncHandle {
        *self.links().budgets() = weighted_budgets(limits);
        self
    }

    /// A new bounded outbox for a link, sized by the limits.
    pub fn new_outbox<T>(&self) -> (OutboxSender<T>, OutboxStream<T>) {
        let limits = self.links().budgets().limits().clone();
        outbox(limits.outbox_frames, limits.outbox_bytes)
    }

    /// Whether `peer` may open a link now (a city cut off for a limit waits out its cool-down;
    /// one over its daily bytes waits for the budget to refill).
    pub fn admit(&self, peer: &NodeId) -> Result<(), LimitExceeded> {
        if !is_budgeted(peer) {
            return Ok(());
        }
        let admitted = self.links().budgets().admit(peer, Instant::now());
        if let Err(err) = &admitted {
            tracing::warn!(%peer, limit = err.name(), error = %err, "refused a link over a limit");
            self.metrics().limit_refused(err.name());
        }
        admitted
    }

    /// Receives the id of every document whose content changes (durably) from now on.
    /// Stores the snapshots that fell due ([`sfs_sync::Driver::compact_pending`]); blocking.
    pub fn compact_pending(&self) -> Result<(), sfs_sync::StorageFailure> {
        self.driver.compact_pending()
    }

    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<ShareableDocId> {
        self.links().changes.subscribe()
    }

    /// This node's identity.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Reads the in-memory documents under the engine lock; never waits for a sync.
    pub fn read<R>(&self, f: impl FnOnce(&Engine) -> R) -> R {
        self.driver.read(f)
    }

    /// Changes a document this node owns; returns once the change is durable and queued for
    /// every link.
    pub fn edit<R, E>(
        &self,
        doc: &ShareableDocId,
        change: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<R, EditFailure<E>> {
        self.edit_at(doc, None, change)
    }

    /// Like [`SyncHandle::edit`], made as if at the older heads `at` so that changes made
    /// meanwhile are merged rather than overwritten.
    pub fn edit_at<R, E>(
        &self,
        doc: &ShareableDocId,
        at: Option<&[ChangeHash]>,
        change: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<R, EditFailure<E>> {
        self.edit_at_with_heads(doc, at, change)
            .map(|(result, _)| result)
    }

    /// Like [`SyncHandle::edit`], also returning the document's heads just after the change
    /// (`None` when the edit changed nothing): the version of what the edit wrote, without
    /// reading the document again under the engine lock.
    pub fn edit_with_heads<R, E>(
        &self,
        doc: &ShareableDocId,
        change: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<(R, Option<Vec<ChangeHash>>), EditFailure<E>> {
        self.edit_at_with_heads(doc, None, change)
    }

    fn edit_at_with_heads<R, E>(
        &self,
        doc: &ShareableDocId,
        at: Option<&[ChangeHash]>,
        change: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<(R, Option<Vec<ChangeHash>>), EditFailure<E>> {
        // The guard judges every string the change wrote, as it stands after the merge, before
        // anything is stored: one choke point for every shared and national document.
        let source = self.guard.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let guard = source();
        let mut heads = None;
        self.driver
            .edit(
                doc,
                at,
                self.now_ms(),
                |tx| change(tx).map_err(Refusal::Handler),
                |doc, change| {
                    crate::domain::privacy::check_change(doc, change, &guard)
                        .map_err(Refusal::Private)?;
                    heads = Some(doc.get_heads());
                    Ok(())
                },
            )
            .map(|result| (result, heads))
            .map_err(|err| match err {
                DriverEditError::Storage(failure) => {
                    tracing::error!(%doc, error = %failure, "an edit was not stored; it was forgotten");
                    EditFailure::Storage(failure)
                }
                DriverEditError::Edit(EditError::Engine(err)) => EditFailure::Engine(err),
                DriverEditError::Edit(EditError::Rejected(Refusal::Handler(err))) => {
                    EditFailure::Rejected(err)
                }
                DriverEditError::Edit(EditError::Rejected(Refusal::Private(finding))) => {
                    EditFailure::Private(finding)
                }
            })
    }

    /// Starts a new generation of a document this node owns (`Engine::new_generation`):
    /// `remove` takes out what must go, the rest is kept without its history, the older
    /// generation is destroyed here (its stored values' keys included) and replaced on every
    /// node that learns of the new one. Returns once the new generation is durable and queued
    /// for every link.
    pub fn new_generation<R, E>(
        &self,
        doc: &ShareableDocId,
        remove: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<R, EditFailure<E>> {
        self.driver
            .new_generation(doc, self.now_ms(), remove)
            .map_err(|err| match err {
                DriverEditError::Storage(failure) => EditFailure::Storage(failure),
                DriverEditError::Edit(EditError::Engine(err)) => EditFailure::Engine(err),
                DriverEditError::Edit(EditError::Rejected(err)) => EditFailure::Rejected(err),
            })
    }

    /// The generation of a document this node holds.
    pub fn generation(&self, doc: &ShareableDocId) -> Option<u64> {
        self.read(|engine| engine.generation(doc))
    }

    /// Offers the documents edited so far to every link (edits do this once they are durable).
    pub fn push_pending(&self) {
        self.driver.push_pending(self.now_ms());
    }

    /// Registers a new link to `peer` and starts its handshake.
    pub fn open_link(
        &self,
        peer: NodeId,
        cert_serial: Option<String>,
        outbox: Outbox,
        stop: oneshot::Sender<()>,
    ) -> ConnId {
        let conn = self.next_conn.fetch_add(1, Ordering::SeqCst);
        let stored = self
            .driver
            .storage()
            .sync_states_for(&peer)
            .unwrap_or_else(|err| {
                tracing::warn!(%peer, error = %err, "reading stored sync states failed");
                Vec::new()
            });
        self.links().set_peer_state(&peer, "connected", None);
        let now = self.now_ms();
        // One link per peer: a newer link replaces an older one (a city that lost its
        // connection without the hub noticing comes back at once, not after the peer timeout).
        // Registering this link, ending the older ones at the transport and telling the engine
        // happen under the engine lock, so two links opened at once cannot both stay and the
        // transport's links and the engine's never disagree for longer than one call (`tick`
        // ends any link the engine does not know).
        let opened = self.driver.perform(|engine| {
            let reason =
                format!("replaced by a newer link from {peer}: one link per peer at a time");
            let older: Vec<ConnId> = {
                let mut links = self.links().links();
                let older: Vec<ConnId> = links
                    .iter()
                    .filter(|(_, link)| link.peer == peer)
                    .map(|(conn, _)| *conn)
                    .collect();
                for old in &older {
                    if let Some(link) = links.remove(old) {
                        link.outbox.finish(Code::Aborted, &reason);
                    }
                }
                links.insert(
                    conn,
                    LinkHandle {
                        peer: peer.clone(),
                        cert_serial,
                        outbox,
                        _stop: stop,
                    },
                );
                older
            };
            let mut out = sfs_sync::Output::default();
            for old in older {
                tracing::warn!(%peer, old, new = conn, "a newer link from the same peer replaces the older one");
                out.extend(engine.close_link(old, StatusCode::Aborted, reason.clone()));
            }
            out.extend(engine.connect(conn, peer.clone(), stored, now));
            out
        });
        if let Err(err) = opened {
            tracing::error!(error = %err, "starting a link failed");
        }
        conn
    }

    /// Charges a frame of `bytes` received from `peer` to its budgets (cities and county hubs:
    /// a hub protects itself and the other peers from one of them); cheap, called before the
    /// frame is handled.
    pub fn charge(&self, peer: &NodeId, bytes: usize) -> Result<(), LimitExceeded> {
        if !is_budgeted(peer) {
            return Ok(());
        }
        self.links().budgets().charge(peer, bytes, Instant::now())
    }

    /// Closes a link on this node's side with `code` (the engine's Goodbye and the status go
    /// out, and the stream ends).
    pub fn close_link(&self, conn: ConnId, code: StatusCode, message: String) {
        let _ = self
            .driver
            .perform(|engine| engine.close_link(conn, code, message));
    }

    /// Closes a link whose peer went over a limit with `RESOURCE_EXHAUSTED`; returns the status
    /// message.
    pub fn cut_off(&self, conn: ConnId, peer: &NodeId, err: &LimitExceeded) -> String {
        let message = format!("{peer}: {err}");
        tracing::warn!(%peer, conn, limit = err.name(), error = %err, "cutting off a peer over a limit");
        self.metrics().limit_refused(err.name());
        self.set_peer_state(peer, "disconnected", Some(message.clone()));
        self.close_link(conn, StatusCode::ResourceExhausted, message.clone());
        message
    }

    /// Handles one frame received on a link; returns once what it changed is durable and what
    /// it answers is queued. (If storing fails, the driver closes every link: the peer resends
    /// what was not stored when it reconnects.)
    pub fn frame_in(&self, conn: ConnId, peer: &NodeId, frame: pb::Frame) {
        self.metrics()
            .frame(peer.name(), "received", prost::Message::encoded_len(&frame));
        if let Some(tap) = &self.frame_tap {
            tap(peer, &prost::Message::encode_to_vec(&frame));
        }
        let now = self.now_ms();
        let note_closes = |out: &sfs_sync::Output| {
            for (_, reason) in &out.closes {
                self.set_peer_state(peer, "disconnected", Some(reason.message.clone()));
            }
        };
        // Read and applied by the driver: a large message is decoded outside the engine lock
        // and applied in slices, so other links and API calls are not held up for all of it.
        let _ = match from_pb(frame) {
            Ok(frame) => self.driver.receive(conn, frame, now, note_closes),
            Err(message) => self.driver.perform(|engine| {
                let out = engine.close_link(conn, StatusCode::InvalidArgument, message);
                note_closes(&out);
                out
            }),
        };
    }

    /// The link ended at the transport level.
    pub fn link_closed(&self, conn: ConnId, peer: &NodeId, error: Option<String>) {
        self.links().links().remove(&conn);
        let peer_heads = self
            .driver
            .call(|engine| {
                let heads = engine.link_peer_heads(conn);
                (heads, engine.disconnect(conn))
            })
            .unwrap_or_default();
        let last_error = {
            let mut peers = self.links().peers.lock().unwrap_or_else(|p| p.into_inner());
            peers.get_mut(peer).and_then(|state| {
                state.last_seen = Some(SystemTime::now());
                if !peer_heads.is_empty() {
                    state.last_heads = peer_heads;
                }
                Some(state.last_error.clone()).filter(|e| !e.is_empty())
            })
        };
        let still_linked = self.read(|e| e.links().any(|(_, p, _)| p == peer));
        if !still_linked {
            self.set_peer_state(peer, "disconnected", error.or(last_error));
        }
    }

    /// Closes every link whose peer connected with a certificate in `revoked` (serials).
    pub fn close_revoked_links(&self, revoked: &std::collections::BTreeSet<String>) {
        self.close_links_where(
            |link| {
                link.cert_serial
                    .as_ref()
                    .is_some_and(|s| revoked.contains(s))
            },
            |peer| {
                tracing::warn!(%peer, "closing the link of a revoked certificate");
                format!("the certificate of {peer} is revoked")
            },
        );
    }

    /// Closes every link with `peer` (`PERMISSION_DENIED`, saying `why`).
    pub fn close_links_of(&self, peer: &NodeId, why: &str) {
        self.close_links_where(|link| &link.peer == peer, |_| why.to_string());
    }

    /// Closes every link `which` selects with `PERMISSION_DENIED` and the message `why` gives.
    fn close_links_where(
        &self,
        which: impl Fn(&LinkHandle) -> bool,
        why: impl Fn(&NodeId) -> String,
    ) {
        let conns: Vec<(ConnId, NodeId)> = self
            .links()
            .links()
            .iter()
            .filter(|(_, link)| which(link))
            .map(|(conn, link)| (*conn, link.peer.clone()))
            .collect();
        for (conn, peer) in conns {
            let message = why(&peer);
            self.close_link(conn, StatusCode::PermissionDenied, message);
        }
    }

    /// Time passed: keepalives and dead-peer detection.
    pub fn tick(&self) {
        let now = self.now_ms();
        let _ = self.driver.perform(|engine| engine.tick(now));
        // Every link the engine no longer knows ends at the transport too (the engine ends links
        // through its output; this catches any path that forgot to say so). Read under the
        // engine lock, so that a link being opened is never taken for an orphan.
        self.read(|engine| {
            let known: std::collections::BTreeSet<ConnId> =
                engine.links().map(|(c, _, _)| c).collect();
            let mut links = self.links().links();
            let orphans: Vec<ConnId> = links
                .keys()
                .filter(|c| !known.contains(c))
                .copied()
                .collect();
            for conn in orphans {
                if let Some(link) = links.remove(&conn) {
                    tracing::warn!(peer = %link.peer, conn, "ending a link the engine no longer knows");
                    link.outbox
                        .finish(Code::Aborted, "the link ended on this node");
                }
            }
        });
    }

    /// Links the transport holds (each with a stream and a reader task).
    pub fn open_links(&self) -> usize {
        self.links().links().len()
    }

    /// Records a peer's connection state for `status`.
    pub fn set_peer_state(&self, peer: &NodeId, state: &'static str, error: Option<String>) {
        self.links().set_peer_state(peer, state, error);
    }

    /// Updates the state gauges of the metrics (at scrape time).
    pub fn refresh_metrics(&self) {
        let (open, lag, made) = self.read(|engine| {
            (
                engine.links().filter(|(_, _, open)| *open).count(),
                engine.peer_lag(),
                engine.message_counts(),
            )
        });
        let metrics = self.metrics();
        metrics.peers_connected.set(open as i64);
        for (made_by, count) in [
            ("recent_changes", made.from_recent),
            ("automerge", made.by_automerge),
            ("whole_document", made.whole_documents),
        ] {
            let labels = crate::metrics::MadeByLabels {
                made_by: made_by.to_string(),
            };
            metrics
                .sync_messages_made
                .get_or_create(&labels)
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        metrics.sync_lag.clear();
        for (peer, doc, missing) in lag {
            let labels = crate::metrics::DocPeerLabels {
                doc: doc.to_string(),
                peer: peer.name().to_string(),
            };
            metrics.sync_lag.get_or_create(&labels).set(missing as i64);
        }
    }

    /// Every peer seen so far and its connection state.
    pub fn peer_states(&self) -> Vec<(NodeId, PeerState)> {
        self.links()
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, state)| (id.clone(), state.clone()))
            .collect()
    }

    /// Ends every link (for shutdown).
    pub fn close_all_links(&self) {
        let _ = self.driver.perform(|engine| {
            engine.close_all_links(StatusCode::FailedPrecondition, SHUTTING_DOWN)
        });
        self.links().links().clear();
    }
}

/// Why a link ends when its node stops: a normal end, not a failure worth a warning.
pub const SHUTTING_DOWN: &str = "the node is shutting down";

/// Longest "last error" kept per peer for `status`, in characters: whatever a peer makes this
/// node refuse, the status answer stays small.
pub const MAX_LAST_ERROR_CHARS: usize = 500;

/// At most `max` characters of `text`, with `…` when cut.
pub fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Maps an engine frame to protobuf.
pub fn to_pb(frame: Frame) -> pb::Frame {
    use pb::frame::Body;
    let body = match frame {
        Frame::Hello { protocol_version } => Body::Hello(pb::Hello { protocol_version }),
        Frame::Summary(summary) => {
            let generations: HashMap<ShareableDocId, u64> =
                summary.generations.into_iter().collect();
            Body::Summary(pb::HeadsSummary {
                docs: summary
                    .docs
                    .into_iter()
                    .map(|(doc, heads)| pb::DocHeads {
                        generation: generations.get(&doc).copied().unwrap_or(0),
                        doc_id: doc.as_str().to_string(),
                        heads: heads.iter().map(|h| h.0.to_vec()).collect(),
                    })
                    .collect(),
                only_changed: summary.only_changed,
                digest: summary.digest.to_vec(),
            })
        }
        Frame::SummaryRequest => Body::SummaryRequest(pb::SummaryRequest {}),
        Frame::DocSync {
            doc,
            generation,
            message,
        } => Body::DocSync(pb::DocSync {
            doc_id: doc.as_str().to_string(),
            message,
            generation,
        }),
        Frame::Keepalive => Body::Keepalive(pb::Keepalive {}),
        Frame::Goodbye { code, message } => Body::Goodbye(pb::Goodbye { code, message }),
    };
    pb::Frame { body: Some(body) }
}

/// Maps a protobuf frame to an engine frame, refusing ids and hashes that do not parse.
pub fn from_pb(frame: pb::Frame) -> Result<Frame, String> {
    use pb::frame::Body;
    let doc = |id: &str| {
        ShareableDocId::parse(id)
            .map_err(|err| format!("frame names a document that cannot be shared: {err}"))
    };
    Ok(match frame.body.ok_or("empty frame")? {
        Body::Hello(hello) => Frame::Hello {
            protocol_version: hello.protocol_version,
        },
        Body::Summary(summary) => Frame::Summary(Summary {
            generations: summary
                .docs
                .iter()
                .filter(|d| d.generation != 0)
                .map(|d| Ok((doc(&d.doc_id)?, d.generation)))
                .collect::<Result<Vec<_>, String>>()?,
            docs: summary
                .docs
                .into_iter()
                .map(|d| {
                    let heads = d
                        .heads
                        .iter()
                        .map(|h| {
                            ChangeHash::try_from(h.as_slice()).map_err(|_| {
                                format!(
                                    "a head of \"{}\" is not 32 bytes",
                                    sfs_sync::scope::quote(&d.doc_id)
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((doc(&d.doc_id)?, heads))
                })
                .collect::<Result<Vec<_>, String>>()?,
            only_changed: summary.only_changed,
            digest: summary
                .digest
                .as_slice()
                .try_into()
                .map_err(|_| "the summary digest is not 32 bytes".to_string())?,
        }),
        Body::SummaryRequest(_) => Frame::SummaryRequest,
        Body::DocSync(sync) => Frame::DocSync {
            doc: doc(&sync.doc_id)?,
            generation: sync.generation,
            message: sync.message,
        },
        Body::Keepalive(_) => Frame::Keepalive,
        Body::Goodbye(bye) => Frame::Goodbye {
            code: bye.code,
            message: bounded(&bye.message, MAX_LAST_ERROR_CHARS),
        },
    })
}

/// Reads frames of one link until it ends, is stopped, or the node shuts down.
pub async fn read_link(
    sync: Arc<SyncHandle>,
    conn: ConnId,
    peer: NodeId,
    inbound: Streaming<pb::Frame>,
    stop: oneshot::Receiver<()>,
    shutdown: watch::Receiver<bool>,
) -> Option<String> {
    let span = tracing::info_span!("sync_session", peer = %peer, conn);
    tracing::Instrument::instrument(
        read_link_inner(sync, conn, peer, inbound, stop, shutdown),
        span,
    )
    .await
}

/// Counts a link's reader in `sync_streams_open` for as long as it runs.
struct StreamGauge(Arc<crate::metrics::Metrics>);

impl StreamGauge {
    fn new(metrics: Arc<crate::metrics::Metrics>) -> StreamGauge {
        metrics.sync_streams_open.inc();
        StreamGauge(metrics)
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.sync_streams_open.dec();
    }
}

async fn read_link_inner(
    sync: Arc<SyncHandle>,
    conn: ConnId,
    peer: NodeId,
    mut inbound: Streaming<pb::Frame>,
    mut stop: oneshot::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<String> {
    let _counted = StreamGauge::new(sync.metrics().clone());
    let error = loop {
        tokio::select! {
            _ = &mut stop => break None,
            _ = shutdown.changed() => break None,
            message = inbound.message() => match message {
                Ok(Some(frame)) => {
                    if let Err(err) = sync.charge(&peer, prost::Message::encoded_len(&frame)) {
                        // Stop reading at once: nothing more of this peer's is handled.
                        let (sync, peer) = (sync.clone(), peer.clone());
                        let message = tokio::task::spawn_blocking(move || sync.cut_off(conn, &peer, &err)).await;
                        break Some(message.unwrap_or_else(|_| "cut off over a limit".to_string()));
                    }
                    let (sync, peer) = (sync.clone(), peer.clone());
                    if tokio::task::spawn_blocking(move || sync.frame_in(conn, &peer, frame)).await.is_err() {
                        break Some("frame handling failed".to_string());
                    }
                }
                Ok(None) => break None,
                Err(status) => {
                    let text = format!("{}: {}", code_name(status.code()), bounded(status.message(), 200));
                    // A frame this node refused to read (over the size limit, or not decodable)
                    // ends the link with a status that says so; a broken stream just ends.
                    let code = match status.code() {
                        Code::OutOfRange | Code::ResourceExhausted => Some(StatusCode::ResourceExhausted),
                        Code::Internal | Code::InvalidArgument => Some(StatusCode::InvalidArgument),
                        _ => None,
                    };
                    if let Some(code) = code {
                        let message = format!(
                            "a frame from {peer} was refused: {text} (limit {MAX_FRAME_BYTES} bytes per frame)"
                        );
                        let (sync, message2) = (sync.clone(), message.clone());
                        let _ = tokio::task::spawn_blocking(move || sync.close_link(conn, code, message2)).await;
                        break Some(message);
                    }
                    break Some(text);
                }
            }
        }
    };
    let (sync2, peer2, error2) = (sync.clone(), peer.clone(), error.clone());
    let _ = tokio::task::spawn_blocking(move || sync2.link_closed(conn, &peer2, error2)).await;
    error
}

/// A gRPC status code in the words of the gRPC specification.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Unavailable => "UNAVAILABLE",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::NotFound => "NOT_FOUND",
        Code::Internal => "INTERNAL",
        _ => "ERROR",
    }
}

/// What a city needs to reach the hub.
#[derive(Clone)]
pub struct HubLinkConfig {
    pub hub_url: String,
    pub hub_id: NodeId,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub max_backoff: Duration,
}

/// A city's link to the hub: dial, sync until the link ends, wait, dial again.
pub async fn run_hub_link(
    sync: Arc<SyncHandle>,
    config: HubLinkConfig,
    shutdown: watch::Receiver<bool>,
) {
    crate::federation::upstream::run_upstream_links(sync, config, None, shutdown).await
}

/// How one link attempt ended.
pub(crate) struct LinkEnd {
    /// Why, unless it ended normally.
    pub error: Option<String>,
    /// This node closed it to move back to its first upstream.
    pub moved_back: bool,
}

/// Dials `peer` at `url`, syncs until the link ends; when `move_back` completes first, closes
/// the link (to move back to the first upstream).
pub(crate) async fn link_once(
    sync: &Arc<SyncHandle>,
    config: &HubLinkConfig,
    url: &str,
    peer: &NodeId,
    shutdown: watch::Receiver<bool>,
    move_back: impl std::future::Future<Output = ()>,
) -> LinkEnd {
    let failed = |error: String| LinkEnd {
        error: Some(error),
        moved_back: false,
    };
    let endpoint = match connect_endpoint(config, url, peer) {
        Ok(endpoint) => endpoint,
        Err(error) => return failed(error),
    };
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(err) => return failed(format!("cannot reach the hub: {}", error_chain(&err))),
    };
    let mut client = pb::federation_client::FederationClient::new(channel)
        .max_decoding_message_size(MAX_FRAME_BYTES)
        .max_encoding_message_size(MAX_FRAME_BYTES);
    let (tx, rx) = sync.new_outbox();
    let (stop_tx, mut stop_rx) = oneshot::channel();
    let conn = {
        let (sync, peer) = (sync.clone(), peer.clone());
        match tokio::task::spawn_blocking(move || {
            sync.open_link(peer, None, Outbox::Client(tx), stop_tx)
        })
        .await
        {
            Ok(conn) => conn,
            Err(_) => return failed("opening the link failed".to_string()),
        }
    };
    // The engine may end the link before the hub's answer comes (a hub that went silent after
    // the TLS handshake: the peer timeout); the link then ends here too, not only once the
    // HTTP/2 keepalive gives up.
    let answer = tokio::select! {
        answer = client.sync(rx) => answer.map_err(|status| {
            format!("{}: {}", code_name(status.code()), status.message())
        }),
        _ = &mut stop_rx => Err("the link ended before the hub answered".to_string()),
    };
    let inbound = match answer {
        Ok(response) => response.into_inner(),
        Err(error) => {
            let (sync, peer, e) = (sync.clone(), peer.clone(), error.clone());
            let _ =
                tokio::task::spawn_blocking(move || sync.link_closed(conn, &peer, Some(e))).await;
            return failed(error);
        }
    };
    let reading = read_link(sync.clone(), conn, peer.clone(), inbound, stop_rx, shutdown);
    tokio::pin!(reading);
    tokio::select! {
        error = &mut reading => LinkEnd { error, moved_back: false },
        () = move_back => {
            let sync = sync.clone();
            let message = MOVING_BACK.to_string();
            let _ = tokio::task::spawn_blocking(move || {
                sync.close_link(conn, StatusCode::Unavailable, message)
            })
            .await;
            reading.await;
            LinkEnd { error: None, moved_back: true }
        }
    }
}

/// Why a node closes its link to the standby hub.
pub const MOVING_BACK: &str = "moving back to the first upstream, which answers again";

/// The endpoint of `peer` at `url`, with this node's certificate and the peer's TLS name.
pub(crate) fn connect_endpoint(
    config: &HubLinkConfig,
    url: &str,
    peer: &NodeId,
) -> Result<Endpoint, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&config.ca_pem))
        .identity(Identity::from_pem(&config.cert_pem, &config.key_pem))
        .domain_name(peer.dns_name());
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|err| format!("invalid hub URL {url}: {err}"))?;
    endpoint
        .tls_config(tls)
        .map(|endpoint| {
            endpoint
                .connect_timeout(Duration::from_secs(5))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(20))
                .keep_alive_while_idle(true)
        })
        .map_err(|err| format!("TLS setup failed: {err}"))
}

/// An error with its sources, on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    sfs_client::error_chain(err)
}

/// Stores the snapshots of shareable documents that fell due, away from the write path (a
/// snapshot due on a write is made after that write is acknowledged and sent on), until
/// `shutdown`. One at a time, from a blocking task.
pub async fn compact_when_due(
    sync: Arc<SyncHandle>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let due = sync.links().compactions.clone();
    loop {
        tokio::select! {
            _ = due.notified() => {}
            _ = shutdown.changed() => return,
        }
        let handle = sync.clone();
        match tokio::task::spawn_blocking(move || handle.compact_pending()).await {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => {
                tracing::error!(error = %failure, "storing a snapshot failed; every link closes")
            }
            Err(err) => tracing::error!(error = %err, "storing a snapshot was interrupted"),
        }
    }
}
