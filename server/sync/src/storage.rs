//! What the driver needs of a node's storage, and an in-memory store with failpoints.
//!
//! [`Storage`] is the fallible interface the [`crate::driver::Driver`] writes through: put a
//! document's chunk or snapshot, replace a document by a new generation, put and remove sync
//! states, load, and `sync` — the one call that makes everything put so far durable. Nothing
//! put is durable before `sync` returns `Ok`; the node implements it over sled (fsync of the
//! data file), the simulator, the fuzz harness and the tests over [`MemoryStorage`].
//!
//! [`MemoryStorage`] keeps what was synced apart from what was only put, so a simulated crash
//! ([`MemoryStorage::restart`]) drops everything not synced, as a power cut does. Its
//! failpoints make the next puts or syncs fail; a failure is sticky, like a real disk's: after
//! one, every write and sync fails until the store is restarted (after a failed fsync the
//! kernel may have dropped the dirty pages, so a later sync proves nothing). It counts syncs,
//! so a test can check that nothing left the node before the count rose.

use std::collections::BTreeMap;
use std::sync::Mutex;

use automerge::{Automerge, ChangeHash};

use crate::engine::{DocPersist, PersistKind};
use crate::scope::{NodeId, ShareableDocId};

/// A stored document as loaded: the document and the number of chunks beside its snapshot.
pub struct LoadedDoc {
    pub id: ShareableDocId,
    pub doc: Automerge,
    pub chunks: usize,
}

/// The storage the driver writes shareable documents and sync states to. See the module
/// documentation.
pub trait Storage: Send + Sync {
    /// Why a call failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Refuses at once when no write can be taken (storage failed earlier, or has no room);
    /// checked before an edit is made, so that a refused edit never reaches the engine.
    fn check_writable(&self) -> Result<(), Self::Error>;
    /// Puts a chunk beside what is stored, or a snapshot in place of all of it.
    fn put_doc(&self, persist: &DocPersist) -> Result<(), Self::Error>;
    /// Replaces everything stored of a document by the snapshot of its new generation and
    /// destroys the older generation; durable when it returns.
    fn replace_generation(&self, persist: &DocPersist) -> Result<(), Self::Error>;
    /// Puts the sync state of `doc` with `peer`.
    fn put_sync_state(
        &self,
        peer: &NodeId,
        doc: &ShareableDocId,
        state: &[u8],
    ) -> Result<(), Self::Error>;
    /// Removes every sync state of `doc` (a replaced generation's).
    fn remove_sync_states(&self, doc: &ShareableDocId) -> Result<(), Self::Error>;
    /// Makes everything put so far durable.
    fn sync(&self) -> Result<(), Self::Error>;
    /// One stored document, `None` if nothing of it is stored.
    fn load_doc(&self, doc: &ShareableDocId) -> Result<Option<Automerge>, Self::Error>;
    /// Every stored document.
    fn load_all(&self) -> Result<Vec<LoadedDoc>, Self::Error>;
    /// Every stored sync state with `peer`.
    fn sync_states_for(&self, peer: &NodeId)
        -> Result<Vec<(ShareableDocId, Vec<u8>)>, Self::Error>;
}

impl<S: Storage + ?Sized> Storage for std::sync::Arc<S> {
    type Error = S::Error;

    fn check_writable(&self) -> Result<(), S::Error> {
        (**self).check_writable()
    }
    fn put_doc(&self, persist: &DocPersist) -> Result<(), S::Error> {
        (**self).put_doc(persist)
    }
    fn replace_generation(&self, persist: &DocPersist) -> Result<(), S::Error> {
        (**self).replace_generation(persist)
    }
    fn put_sync_state(
        &self,
        peer: &NodeId,
        doc: &ShareableDocId,
        state: &[u8],
    ) -> Result<(), S::Error> {
        (**self).put_sync_state(peer, doc, state)
    }
    fn remove_sync_states(&self, doc: &ShareableDocId) -> Result<(), S::Error> {
        (**self).remove_sync_states(doc)
    }
    fn sync(&self) -> Result<(), S::Error> {
        (**self).sync()
    }
    fn load_doc(&self, doc: &ShareableDocId) -> Result<Option<Automerge>, S::Error> {
        (**self).load_doc(doc)
    }
    fn load_all(&self) -> Result<Vec<LoadedDoc>, S::Error> {
        (**self).load_all()
    }
    fn sync_states_for(&self, peer: &NodeId) -> Result<Vec<(ShareableDocId, Vec<u8>)>, S::Error> {
        (**self).sync_states_for(peer)
    }
}

/// Why a call to [`MemoryStorage`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// A failpoint fired (or one fired earlier: failures are sticky until a restart).
    #[error("storage failed: {0}")]
    Failed(String),
    /// What is stored does not load.
    #[error("{doc} does not load: {reason}")]
    Damaged { doc: String, reason: String },
}

#[derive(Debug, Clone, Default)]
struct Image {
    /// Per document: its stored parts in order (a snapshot first, if any, then chunks).
    docs: BTreeMap<ShareableDocId, Vec<(PersistKind, Vec<u8>)>>,
    /// Per document: the heads its last stored part brought it to.
    heads: BTreeMap<ShareableDocId, Vec<ChangeHash>>,
    states: BTreeMap<(NodeId, ShareableDocId), Vec<u8>>,
}

impl Image {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Doc {
                doc,
                kind,
                bytes,
                heads,
            } => {
                let parts = self.docs.entry(doc.clone()).or_default();
                if *kind == PersistKind::Snapshot {
                    parts.clear();
                }
                parts.push((*kind, bytes.clone()));
                self.heads.insert(doc.clone(), heads.clone());
            }
            Op::State { peer, doc, state } => {
                self.states
                    .insert((peer.clone(), doc.clone()), state.clone());
            }
            Op::RemoveStates { doc } => self.states.retain(|(_, d), _| d != doc),
        }
    }

    fn load(&self, doc: &ShareableDocId) -> Result<Option<(Automerge, usize)>, MemoryError> {
        let Some(parts) = self.docs.get(doc) else {
            return Ok(None);
        };
        let bytes: Vec<u8> = parts.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        let loaded = Automerge::load(&bytes).map_err(|err| MemoryError::Damaged {
            doc: doc.to_string(),
            reason: err.to_string(),
        })?;
        let chunks = parts
            .iter()
            .filter(|(kind, _)| *kind == PersistKind::Incremental)
            .count();
        Ok(Some((loaded, chunks)))
    }
}

#[derive(Debug, Clone)]
enum Op {
    Doc {
        doc: ShareableDocId,
        kind: PersistKind,
        bytes: Vec<u8>,
        heads: Vec<ChangeHash>,
    },
    State {
        peer: NodeId,
        doc: ShareableDocId,
        state: Vec<u8>,
    },
    RemoveStates {
        doc: ShareableDocId,
    },
}

#[derive(Default)]
struct MemoryState {
    /// What survives a crash.
    durable: Image,
    /// Put since the last sync, in order.
    pending: Vec<Op>,
    /// Puts still to succeed before the next put fails (`None`: no failpoint).
    puts_before_failure: Option<u64>,
    /// Syncs still to succeed before the next sync fails.
    syncs_before_failure: Option<u64>,
    /// The sticky failure, once a failpoint fired.
    failed: Option<String>,
    syncs: u64,
    puts: u64,
}

impl MemoryState {
    fn check(&self) -> Result<(), MemoryError> {
        match &self.failed {
            Some(why) => Err(MemoryError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    fn put(&mut self, op: Op) -> Result<(), MemoryError> {
        self.check()?;
        if let Some(left) = self.puts_before_failure.as_mut() {
            if *left == 0 {
                self.puts_before_failure = None;
                self.failed = Some("a put failed (failpoint)".to_string());
                return self.check();
            }
            *left -= 1;
        }
        self.puts += 1;
        self.pending.push(op);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), MemoryError> {
        self.check()?;
        if let Some(left) = self.syncs_before_failure.as_mut() {
            if *left == 0 {
                self.syncs_before_failure = None;
                self.failed = Some("a sync failed (failpoint)".to_string());
                return self.check();
            }
            *left -= 1;
        }
        for op in std::mem::take(&mut self.pending) {
            self.durable.apply(&op);
        }
        self.syncs += 1;
        Ok(())
    }

    /// What a reader sees: the durable image with what was put since.
    fn view(&self) -> Image {
        let mut image = self.durable.clone();
        for op in &self.pending {
            image.apply(op);
        }
        image
    }
}

/// An in-memory [`Storage`] with failpoints and a sync counter. See the module documentation.
#[derive(Default)]
pub struct MemoryStorage {
    state: Mutex<MemoryState>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The machine died and came back: everything not synced is gone, and the store takes
    /// writes again.
    pub fn restart(&self) {
        let mut state = self.state();
        state.pending.clear();
        state.failed = None;
        state.puts_before_failure = None;
        state.syncs_before_failure = None;
    }

    /// Takes back every failpoint not fired yet.
    pub fn disarm(&self) {
        let mut state = self.state();
        state.puts_before_failure = None;
        state.syncs_before_failure = None;
    }

    /// The next put after `puts` more successful ones fails, and with it every later write.
    pub fn fail_put_after(&self, puts: u64) {
        self.state().puts_before_failure = Some(puts);
    }

    /// The next sync after `syncs` more successful ones fails, and with it every later write.
    pub fn fail_sync_after(&self, syncs: u64) {
        self.state().syncs_before_failure = Some(syncs);
    }

    /// Syncs that succeeded so far.
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    /// Puts that succeeded so far.
    pub fn puts(&self) -> u64 {
        self.state().puts
    }

    /// Whether a failpoint fired since the last restart.
    pub fn has_failed(&self) -> bool {
        self.state().failed.is_some()
    }

    /// Whether anything was put and not synced yet.
    pub fn has_unsynced(&self) -> bool {
        !self.state().pending.is_empty()
    }

    /// A document as it would load after a crash now (durable parts only), with the number
    /// of chunks beside its snapshot.
    pub fn durable_doc(
        &self,
        doc: &ShareableDocId,
    ) -> Result<Option<(Automerge, usize)>, MemoryError> {
        self.state().durable.load(doc)
    }

    /// The heads the last durable part of `doc` brought it to.
    pub fn durable_heads(&self, doc: &ShareableDocId) -> Option<Vec<ChangeHash>> {
        self.state().durable.heads.get(doc).cloned()
    }

    /// The bytes of the durable parts of `doc` (its snapshot and the chunks beside it).
    pub fn durable_bytes(&self, doc: &ShareableDocId) -> usize {
        let state = self.state();
        state
            .durable
            .docs
            .get(doc)
            .map_or(0, |parts| parts.iter().map(|(_, bytes)| bytes.len()).sum())
    }

    /// Every document id with durable parts.
    pub fn durable_docs(&self) -> Vec<ShareableDocId> {
        self.state().durable.docs.keys().cloned().collect()
    }

    /// The stored bytes of every part of every document (durable or not), for scans.
    pub fn all_bytes(&self) -> Vec<Vec<u8>> {
        let state = self.state();
        let mut all = Vec::new();
        for image in [&state.durable, &state.view()] {
            for parts in image.docs.values() {
                all.extend(parts.iter().map(|(_, b)| b.clone()));
            }
            all.extend(image.states.values().cloned());
        }
        all
    }
}

impl Storage for MemoryStorage {
    type Error = MemoryError;

    fn check_writable(&self) -> Result<(), MemoryError> {
        self.state().check()
    }

    fn put_doc(&self, persist: &DocPersist) -> Result<(), MemoryError> {
        self.state().put(Op::Doc {
            doc: persist.doc.clone(),
            kind: persist.kind,
            bytes: persist.bytes.clone(),
            heads: persist.heads.clone(),
        })
    }

    fn replace_generation(&self, persist: &DocPersist) -> Result<(), MemoryError> {
        let mut state = self.state();
        state.put(Op::Doc {
            doc: persist.doc.clone(),
            kind: PersistKind::Snapshot,
            bytes: persist.bytes.clone(),
            heads: persist.heads.clone(),
        })?;
        state.sync()
    }

    fn put_sync_state(
        &self,
        peer: &NodeId,
        doc: &ShareableDocId,
        state: &[u8],
    ) -> Result<(), MemoryError> {
        self.state().put(Op::State {
            peer: peer.clone(),
            doc: doc.clone(),
            state: state.to_vec(),
        })
    }

    fn remove_sync_states(&self, doc: &ShareableDocId) -> Result<(), MemoryError> {
        self.state().put(Op::RemoveStates { doc: doc.clone() })
    }

    fn sync(&self) -> Result<(), MemoryError> {
        self.state().sync()
    }

    fn load_doc(&self, doc: &ShareableDocId) -> Result<Option<Automerge>, MemoryError> {
        Ok(self.state().view().load(doc)?.map(|(doc, _)| doc))
    }

    fn load_all(&self) -> Result<Vec<LoadedDoc>, MemoryError> {
        let view = self.state().view();
        let mut all = Vec::new();
        for id in view.docs.keys() {
            if let Some((doc, chunks)) = view.load(id)? {
                all.push(LoadedDoc {
                    id: id.clone(),
                    doc,
                    chunks,
                });
            }
        }
        Ok(all)
    }

    fn sync_states_for(
        &self,
        peer: &NodeId,
    ) -> Result<Vec<(ShareableDocId, Vec<u8>)>, MemoryError> {
        Ok(self
            .state()
            .view()
            .states
            .iter()
            .filter(|((p, _), _)| p == peer)
            .map(|((_, doc), state)| (doc.clone(), state.clone()))
            .collect())
    }
}
