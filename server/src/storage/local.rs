//! The city's local documents (`local/network`, `local/signals`, `local/stats-records`…) in
//! memory and in the local store: the only holder of the handle to the `local` tree, which the
//! sync side is never given. One writer per document stores and syncs each change before it
//! is acknowledged; reads never wait for the disk; a change that was not stored is taken back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::transaction::Transaction;
use automerge::{ActorId, Automerge, ChangeHash};
use sfs_sync::compaction::{Compaction, CompactionPolicy};
use sfs_sync::{DocId, PersistKind};

use crate::domain::model::{doc_error, ModelError};
use crate::domain::register::without_history;
use crate::storage::store::{LocalDocs, StoreError};

/// When a local document's new bytes are a chunk and when a whole snapshot: the same policy
/// as for shareable documents ([`sfs_sync::compaction`]).
fn compaction_policy() -> CompactionPolicy {
    sfs_sync::EngineConfig::default().compaction()
}

struct LocalEntry {
    doc: Automerge,
    /// Heads at the last stored write; the next chunk starts here.
    persisted_heads: Vec<ChangeHash>,
    compaction: Compaction,
}

/// One local document: its state (locked briefly, by readers and writers) and its writer lock
/// (held by one writer across storing and syncing, so that readers never wait for a disk).
struct LocalDoc {
    state: Mutex<LocalEntry>,
    writer: Mutex<()>,
}

impl LocalDoc {
    fn new(entry: LocalEntry) -> Arc<LocalDoc> {
        Arc::new(LocalDoc {
            state: Mutex::new(entry),
            writer: Mutex::new(()),
        })
    }

    fn state(&self) -> MutexGuard<'_, LocalEntry> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The city's local documents, in memory and in the local store.
pub struct LocalReplicas {
    store: LocalDocs,
    actor: ActorId,
    docs: Mutex<BTreeMap<DocId, Arc<LocalDoc>>>,
}

impl LocalReplicas {
    /// Loads every local document.
    pub fn open(store: LocalDocs, actor: ActorId) -> Result<LocalReplicas, StoreError> {
        let mut docs = BTreeMap::new();
        for stored in store.load_all()? {
            let mut doc = stored.doc;
            doc.set_actor(actor.clone());
            let heads = doc.get_heads();
            docs.insert(
                stored.id,
                LocalDoc::new(LocalEntry {
                    doc,
                    persisted_heads: heads,
                    compaction: Compaction::loaded(stored.chunks, false),
                }),
            );
        }
        Ok(LocalReplicas {
            store,
            actor,
            docs: Mutex::new(docs),
        })
    }

    /// The document `id`, created empty if it was never written.
    fn doc(&self, id: &DocId) -> Arc<LocalDoc> {
        let mut docs = self.docs.lock().unwrap_or_else(|p| p.into_inner());
        docs.entry(id.clone())
            .or_insert_with(|| {
                LocalDoc::new(LocalEntry {
                    doc: Automerge::new().with_actor(self.actor.clone()),
                    persisted_heads: Vec::new(),
                    compaction: Compaction::default(),
                })
            })
            .clone()
    }

    fn existing(&self, id: &DocId) -> Option<Arc<LocalDoc>> {
        self.docs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Every local document, saved whole (for backups).
    pub fn save_all(&self) -> Vec<(DocId, Vec<u8>)> {
        let docs: Vec<(DocId, Arc<LocalDoc>)> = self
            .docs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, doc)| (id.clone(), doc.clone()))
            .collect();
        docs.into_iter()
            .map(|(id, doc)| {
                let saved = doc.state().doc.save();
                (id, saved)
            })
            .collect()
    }

    /// Reads a local document (an empty one if it was never written). Never waits for a
    /// write to reach the disk.
    pub fn read<R>(&self, id: &DocId, f: impl FnOnce(&Automerge) -> R) -> R {
        match self.existing(id) {
            Some(doc) => f(&doc.state().doc),
            None => f(&Automerge::new()),
        }
    }

    /// Changes a local document in one transaction and stores it durably before returning.
    /// If `change` fails, nothing is changed; if storing fails, the change is taken back and
    /// the answer is `UNAVAILABLE`. Writers of one document take turns; readers and writers of
    /// other documents never wait for this one's disk.
    pub fn edit<R, E: From<ModelError>>(
        &self,
        id: &DocId,
        change: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let doc = self.doc(id);
        let _writing = doc.writer();
        let (result, before, kind, bytes, heads) = {
            let mut entry = doc.state();
            let before = entry.doc.get_heads();
            let done = entry
                .doc
                .transact(|tx| change(tx))
                .map_err(|failure| failure.error)?;
            if done.hash.is_none() {
                return Ok(done.result);
            }
            let heads = entry.doc.get_heads();
            let chunk = (!entry.compaction.needs_snapshot())
                .then(|| entry.doc.save_after(&entry.persisted_heads))
                .filter(|chunk| {
                    entry
                        .compaction
                        .takes_chunk(&compaction_policy(), chunk.len())
                });
            let (kind, bytes) = match chunk {
                Some(chunk) => (PersistKind::Incremental, chunk),
                None => (PersistKind::Snapshot, entry.doc.save()),
            };
            (done.result, before, kind, bytes, heads)
        };
        // Stored and synced outside the state lock: readers see the document meanwhile.
        if let Err(err) = self.store.persist(id, kind, &bytes, &heads) {
            let mut entry = doc.state();
            // The change is taken back (it is not durable), and the next write of this
            // document stores all of it, so nothing is skipped on disk.
            if let Ok(back) = entry.doc.fork_at(&before) {
                entry.doc = back.with_actor(self.actor.clone());
            }
            entry.compaction.require_snapshot();
            return Err(ModelError::Storage(format!("the change was not stored: {err}")).into());
        }
        let mut entry = doc.state();
        match kind {
            PersistKind::Snapshot => entry.compaction.stored_snapshot(bytes.len()),
            PersistKind::Incremental => entry.compaction.stored_chunk(bytes.len()),
        }
        entry.persisted_heads = heads;
        Ok(result)
    }
}

impl LocalReplicas {
    /// Erases for good what `change` removes from a local document: the change is made on a
    /// copy, the result is copied into a document *without history*, and that document
    /// replaces everything stored of the old one under a fresh data key
    /// ([`LocalDocs::replace_under_new_key`]) before the old keys are destroyed
    /// ([`LocalDocs::forget_old_keys`]). If `change` changes nothing, nothing is rewritten. If
    /// storing fails, the answer is `UNAVAILABLE` and the document stays as it was (the erasure
    /// can be retried); if only destroying the old keys fails, the record is gone from the
    /// document and the node destroys the keys at its next start (also `UNAVAILABLE`, saying
    /// so).
    pub fn erase<R, E: From<ModelError>>(
        &self,
        id: &DocId,
        change: impl FnOnce(&mut Transaction<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let Some(doc) = self.existing(id) else {
            let mut empty = Automerge::new();
            return empty
                .transact(|tx| change(tx))
                .map(|done| done.result)
                .map_err(|failure| failure.error);
        };
        let _writing = doc.writer();
        let mut edited = doc.state().doc.fork();
        let done = edited
            .transact(|tx| change(tx))
            .map_err(|failure| failure.error)?;
        if done.hash.is_none() {
            return Ok(done.result);
        }
        let fresh = without_history(&edited, self.actor.clone()).map_err(doc_error)?;
        let heads = fresh.get_heads();
        self.store
            .replace_under_new_key(id, &fresh.save(), &heads)
            .map_err(|err| ModelError::Storage(format!("the erasure was not stored: {err}")))?;
        *doc.state() = LocalEntry {
            doc: fresh,
            persisted_heads: heads,
            compaction: Compaction::default(),
        };
        self.store.forget_old_keys(id).map_err(|err| {
            tracing::error!(doc = %id, error = %err, "destroying the keys of erased data failed");
            ModelError::Storage(format!(
                "the record is erased from the document, but the key of its earlier versions \
                 could not be destroyed yet ({err}); the node destroys it at its next start"
            ))
        })?;
        Ok(done.result)
    }
}
