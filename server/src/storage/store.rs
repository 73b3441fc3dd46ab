//! Durable storage of documents and sync states in sled, behind our own types.
//!
//! Layout (one sled database in `<data_dir>/store`):
//! - tree `local`: local documents (`local/network`, ...), only reachable through [`LocalDocs`],
//!   every value sealed with the document's data key (see [`crate::storage::seal`]);
//! - tree `shared`: shared and national documents, only reachable through [`ShareableDocs`];
//! - tree `sync_states`: per-peer Automerge sync states, key `<peer spiffe uri> <doc id>`;
//! - tree `access_log`: who read or changed which personal record, append-only, sealed;
//! - file `store/journal`: every write to the trees above, as applied, until sled's own files
//!   hold it ([`crate::storage::journal`]);
//! - file `keyring`: the data keys, sealed with the at-rest key kept outside the directory.
//!
//! Document keys are named by content: `<doc>/change/<sha256 of the chunk>` for incremental
//! chunks and `<doc>/snapshot/<sha256 of the heads>` for a compacted document, so writing the
//! same bytes twice is harmless and a snapshot replaces what it covers in one atomic batch.
//!
//! **Durability.** Every write reaches sled through the journal
//! ([`crate::storage::journal`]), which records it in a file of its own; [`Durability::sync`]
//! writes what was recorded and syncs that one file (a small `fdatasync`), while sled writes its
//! files in the background and is flushed and fsynced at the journal's checkpoints (sled's own
//! `flush()` is not an fsync: its log uses `sync_file_range`). At open, what the journal holds
//! beyond sled's files is applied again. Writers that arrive while a sync is running share the
//! next one (group commit).
//!
//! **A full disk.** sled cannot recover in place from a failed write: once its log hits an I/O
//! error every later operation returns that error. So every write first checks that the data
//! directory keeps a reserve of free space ([`Durability::set_reserve`], `store.min_free_bytes`)
//! and is refused with [`StoreError::DiskFull`] before sled sees it; writes work again as soon
//! as space returns. Should sled fail anyway (another process took the reserve, the file system
//! went read-only), the store remembers the first error and refuses every later write with
//! [`StoreError::Failed`], which tells the operator to restart the node once the cause is fixed;
//! reads go on meanwhile. Either way nothing acknowledged is lost: an acknowledgement needs a
//! successful fsync.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::{Automerge, ChangeHash, LoadOptions, OnPartialLoad};
use sfs_sync::{DocId, DocPersist, NodeId, PersistKind, ShareableDocId};
use sha2::{Digest, Sha256};

use crate::storage::journal::{Batch, Journal};
use crate::storage::seal::{Keyring, MasterKey};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("stored document {doc} is damaged: {reason}")]
    Damaged { doc: String, reason: String },
    #[error(
        "the data directory has {free} bytes free and writes need at least {reserve} \
         (store.min_free_bytes); free some space and try again"
    )]
    DiskFull { free: u64, reserve: u64 },
    #[error(
        "storage failed earlier ({0}) and takes no more writes; restart the node once the \
         cause is fixed (reads go on)"
    )]
    Failed(String),
    #[error(transparent)]
    Seal(#[from] crate::storage::seal::SealError),
    #[error(transparent)]
    Journal(#[from] crate::storage::journal::JournalError),
    #[error(
        "the data directory {0} is in use by another running node; stop that node first, or \
         give this one its own data_dir"
    )]
    InUse(PathBuf),
}

/// A value whose pieces do not add up is damaged (or sled failed reading them).
fn piece_error(what: &str) -> impl FnOnce(crate::storage::pieces::PieceError) -> StoreError + '_ {
    move |err| match err {
        crate::storage::pieces::PieceError::Sled(err) => StoreError::Sled(err),
        other => StoreError::Damaged {
            doc: what.to_string(),
            reason: other.to_string(),
        },
    }
}

impl StoreError {
    /// Whether this error came from the disk (as opposed to damaged or refused data).
    fn is_io(&self) -> bool {
        match self {
            StoreError::Sled(sled::Error::Io(_)) | StoreError::Io { .. } => true,
            StoreError::Journal(err) => err.is_io(),
            _ => false,
        }
    }
}

/// Every write to sled, through the journal, and the journal's sync with group commit; see
/// the module documentation.
pub struct Durability {
    db: sled::Db,
    journal: Journal,
    journal_path: PathBuf,
    /// Incremented after every write that must become durable.
    written: AtomicU64,
    /// The highest write count known durable; the lock also serialises syncs.
    synced: Mutex<u64>,
    /// Where the time of each sync is recorded, once the node has metrics.
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    /// Free bytes the data directory must keep for a write to be taken.
    reserve: AtomicU64,
    /// The first I/O error sled reported; no write is taken after it.
    failed: std::sync::OnceLock<String>,
    /// Syncs still to fail on purpose (fault-injection tests).
    injected_failures: AtomicU64,
}

impl Durability {
    /// Sets the free space (bytes) the data directory must keep for writes to be taken.
    pub fn set_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, Ordering::Relaxed);
    }

    /// Refuses a write when storage failed earlier or the disk is short of its reserve; call
    /// before handing anything to sled.
    pub fn check_room(&self) -> Result<(), StoreError> {
        if let Some(first) = self.failed.get() {
            return Err(StoreError::Failed(first.clone()));
        }
        let reserve = self.reserve.load(Ordering::Relaxed);
        if reserve > 0 {
            let dir = self.journal_path.parent().unwrap_or(&self.journal_path);
            let free = fs2::available_space(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            if free < reserve {
                return Err(StoreError::DiskFull { free, reserve });
            }
        }
        Ok(())
    }

    /// Refuses a write once storage has failed.
    pub fn check_not_failed(&self) -> Result<(), StoreError> {
        match self.failed.get() {
            Some(first) => Err(StoreError::Failed(first.clone())),
            None => Ok(()),
        }
    }

    /// Whether storage failed and takes no more writes.
    pub fn has_failed(&self) -> bool {
        self.failed.get().is_some()
    }

    /// Remembers an I/O error from sled: sled takes no writes after one.
    fn note_error(&self, err: StoreError) -> StoreError {
        if err.is_io() {
            let first = err.to_string();
            if self.failed.set(first).is_ok() {
                tracing::error!(error = %err, "storage failed; writes are refused until the node restarts");
            }
        }
        err
    }

    /// Notes that a write happened; call before [`Durability::sync`].
    pub fn note_write(&self) -> u64 {
        self.written.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Makes every write noted so far durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mine = self.written.load(Ordering::SeqCst);
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= mine {
            return Ok(());
        }
        // After a failed fsync the kernel may have dropped the dirty pages and a second fsync
        // would succeed without them: nothing written since is ever reported durable.
        if let Some(first) = self.failed.get() {
            return Err(StoreError::Failed(first.clone()));
        }
        let target = self.written.load(Ordering::SeqCst);
        let started = Instant::now();
        let injected = self
            .injected_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if injected {
            return Err(self.note_error(StoreError::Io {
                path: self.journal_path.clone(),
                source: std::io::Error::other("injected fsync failure"),
            }));
        }
        self.journal
            .sync()
            .map_err(|err| self.note_error(err.into()))?;
        if let Some(metrics) = self.metrics.get() {
            metrics
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        *synced = target;
        Ok(())
    }

    /// Makes everything applied so far durable, also what no caller waits for (sync states
    /// put beside a write or alone): called when the node stops, so that a clean stop loses
    /// nothing and the links resume from the sync states of the last frames.
    pub fn sync_everything(&self) -> Result<(), StoreError> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(first) = self.failed.get() {
            return Err(StoreError::Failed(first.clone()));
        }
        let target = self.written.load(Ordering::SeqCst);
        self.journal
            .sync()
            .map_err(|err| self.note_error(err.into()))?;
        *synced = (*synced).max(target);
        Ok(())
    }

    /// Makes the next `count` syncs fail as an fsync failing with an I/O error would (the store
    /// then refuses writes until restarted). For fault-injection tests.
    #[doc(hidden)]
    pub fn inject_sync_failures(&self, count: u64) {
        self.injected_failures.store(count, Ordering::SeqCst);
    }

    /// Records sync times in `metrics` from now on.
    pub fn observe(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Applies `batch` to `tree`; durable after the next [`Durability::sync`].
    fn apply(&self, tree: &sled::Tree, batch: &Batch) -> Result<(), StoreError> {
        self.journal
            .apply(tree, batch)
            .map_err(|err| self.note_error(err.into()))
    }

    /// The store's size on disk, in bytes.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0) + self.journal.size_on_disk()
    }
}

/// The opened store: hands out one handle per kind of data.
pub struct Store {
    pub local: LocalDocs,
    pub shared: ShareableDocs,
    pub sync_states: SyncStates,
    pub access_log: AccessLog,
    pub durability: Arc<Durability>,
    /// The data keys of local data.
    pub keyring: Arc<Keyring>,
}

impl Store {
    /// Opens (or creates) the store under `data_dir`, its local data sealed with keys that
    /// `master` opens. Waits up to `lock_wait` for a previous process or node on the same
    /// directory to release it.
    pub fn open(
        data_dir: &Path,
        lock_wait: Duration,
        master: MasterKey,
    ) -> Result<Store, StoreError> {
        let path = data_dir.join("store");
        let deadline = Instant::now() + lock_wait;
        let db = loop {
            // sled writes its files at the journal's checkpoints (and when a buffer of its log
            // fills), not on a timer: a timed flush could run into a disk that filled up after
            // the write was taken, which sled does not survive (see "A full disk").
            match sled::Config::new()
                .path(&path)
                .mode(sled::Mode::LowSpace)
                .flush_every_ms(None)
                .open()
            {
                Ok(db) => break db,
                Err(sled::Error::Io(err))
                    if err.kind() == std::io::ErrorKind::WouldBlock
                        || err.to_string().contains("lock") =>
                {
                    if Instant::now() >= deadline {
                        return Err(StoreError::InUse(data_dir.to_path_buf()));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => return Err(err.into()),
            }
        };
        // sled writes its `conf` file once, without an fsync: make it (and the names in the
        // directory) durable, or a power cut soon after the first start leaves it empty.
        for file in [path.join("conf"), path.clone()] {
            File::open(&file)
                .and_then(|f| f.sync_all())
                .map_err(|source| StoreError::Io { path: file, source })?;
        }
        let journal_path = path.join("journal");
        let (journal, replayed) = Journal::open(&journal_path, db.clone(), &path.join("db"))?;
        if replayed > 0 {
            tracing::info!(
                replayed,
                "applied the journal's writes that sled had not stored before the node stopped"
            );
        }
        let durability = Arc::new(Durability {
            db: db.clone(),
            journal,
            journal_path,
            written: AtomicU64::new(0),
            synced: Mutex::new(0),
            metrics: std::sync::OnceLock::new(),
            reserve: AtomicU64::new(0),
            failed: std::sync::OnceLock::new(),
            injected_failures: AtomicU64::new(0),
        });
        let keyring = Arc::new(Keyring::open(data_dir, master)?);
        let store = Store {
            local: LocalDocs(DocTree {
                tree: db.open_tree("local")?,
                durability: durability.clone(),
                sealed: Some(keyring.clone()),
            }),
            shared: ShareableDocs(DocTree {
                tree: db.open_tree("shared")?,
                durability: durability.clone(),
                sealed: Some(keyring.clone()),
            }),
            sync_states: SyncStates {
                tree: db.open_tree("sync_states")?,
                durability: durability.clone(),
            },
            access_log: AccessLog {
                tree: db.open_tree("access_log")?,
                db: db.clone(),
                durability: durability.clone(),
                keyring: keyring.clone(),
            },
            durability,
            keyring,
        };
        store.destroy_unused_keys()?;
        Ok(store)
    }

    /// Destroys data keys no stored value is sealed with (left behind when a node stopped
    /// between rewriting an erased document, or storing a new generation of a shareable one,
    /// and destroying its old key). Only documents' keys rotate; the access log only ever has
    /// its current key, which is always kept, so its (ever-growing) tree is not read.
    fn destroy_unused_keys(&self) -> Result<(), StoreError> {
        let mut used = std::collections::BTreeSet::new();
        let values = self.local.0.tree.iter().values();
        for value in values.chain(self.shared.0.tree.iter().values()) {
            if let Some(id) = crate::storage::seal::key_id_of(&value?) {
                used.insert(id);
            }
        }
        let destroyed = self.keyring.keep_only(&used)?;
        if destroyed > 0 {
            tracing::info!(destroyed, "destroyed data keys of erased data");
        }
        Ok(())
    }
}

/// A document as stored: the loaded document and how many chunks lie beside its snapshot.
pub struct StoredDoc<Id> {
    pub id: Id,
    pub doc: Automerge,
    pub chunks: usize,
}

struct DocTree {
    tree: sled::Tree,
    durability: Arc<Durability>,
    /// Seals every value with the document's data key (local documents).
    sealed: Option<Arc<Keyring>>,
}

fn heads_key(heads: &[ChangeHash]) -> String {
    let mut hasher = Sha256::new();
    for head in heads {
        hasher.update(head.0);
    }
    hex::encode(hasher.finalize())
}

impl DocTree {
    /// Writes a chunk or snapshot and makes it durable before returning.
    fn persist(
        &self,
        doc: &str,
        kind: PersistKind,
        bytes: &[u8],
        heads: &[ChangeHash],
    ) -> Result<(), StoreError> {
        self.insert(doc, kind, bytes, heads)?;
        self.durability.sync()
    }

    /// Writes a chunk or snapshot without waiting for it to be durable; [`Durability::sync`]
    /// makes it so.
    fn insert(
        &self,
        doc: &str,
        kind: PersistKind,
        bytes: &[u8],
        heads: &[ChangeHash],
    ) -> Result<(), StoreError> {
        self.durability.check_room()?;
        let pieces = self.stored_pieces(doc, bytes)?;
        let mut name = Sha256::new();
        for piece in &pieces {
            name.update(piece);
        }
        let name = hex::encode(name.finalize());
        let written: Result<Batch, StoreError> = (|| {
            let mut batch = Batch::default();
            let key = match kind {
                PersistKind::Incremental => format!("{doc}/change/{name}"),
                PersistKind::Snapshot => {
                    for key in self.tree.scan_prefix(format!("{doc}/").as_bytes()).keys() {
                        batch.remove(key?);
                    }
                    format!("{doc}/snapshot/{}", heads_key(heads))
                }
            };
            crate::storage::pieces::put(&mut batch, key.as_bytes(), pieces);
            Ok(batch)
        })();
        let batch = written.map_err(|err| self.durability.note_error(err))?;
        self.durability.apply(&self.tree, &batch)?;
        self.durability.note_write();
        Ok(())
    }

    /// `bytes` as the pieces to store (see [`crate::storage::pieces`]): each sealed on its own with the
    /// document's data key in a sealed tree, so that every stored value names its key.
    fn stored_pieces(&self, doc: &str, bytes: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        match &self.sealed {
            Some(keyring) => crate::storage::pieces::split_tagged(
                bytes,
                crate::storage::pieces::PIECE_BYTES - crate::storage::seal::OVERHEAD,
            )
            .into_iter()
            .map(|piece| Ok(keyring.seal(doc, &piece)?))
            .collect(),
            None => Ok(
                crate::storage::pieces::split(bytes, crate::storage::pieces::PIECE_BYTES)
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect(),
            ),
        }
    }

    /// The value stored under `key`, reassembled from its pieces and opened.
    fn value(&self, key: &str, value: sled::IVec) -> Result<Vec<u8>, StoreError> {
        let pieces = crate::storage::pieces::read(&self.tree, key.as_bytes(), value)
            .map_err(piece_error(key))?;
        // Shareable documents were stored unsealed before they were sealed: such a value is
        // read as it is (and sealed when the document is next stored as a snapshot).
        let legacy_plain = key.starts_with("shared/") || key.starts_with("national/");
        let unsealed = pieces
            .first()
            .is_some_and(|piece| crate::storage::seal::key_id_of(piece).is_none());
        match &self.sealed {
            Some(_) if legacy_plain && unsealed => Ok(pieces.concat()),
            Some(keyring) => {
                let opened = pieces
                    .iter()
                    .map(|piece| keyring.open_value(key, piece))
                    .collect::<Result<Vec<_>, _>>()?;
                crate::storage::pieces::join_tagged(opened).map_err(piece_error(key))
            }
            None => Ok(pieces.concat()),
        }
    }

    /// Every stored document, by its id text.
    fn load_all(&self) -> Result<BTreeMap<String, (Automerge, usize)>, StoreError> {
        self.load_prefix("")
    }

    /// One stored document, if anything of it is stored.
    fn load_one(&self, doc: &str) -> Result<Option<Automerge>, StoreError> {
        Ok(self
            .load_prefix(&format!("{doc}/"))?
            .remove(doc)
            .map(|(doc, _)| doc))
    }

    /// The stored documents whose keys start with `prefix`.
    fn load_prefix(
        &self,
        prefix: &str,
    ) -> Result<BTreeMap<String, (Automerge, usize)>, StoreError> {
        // Document id → (snapshots, chunks).
        type Parts = (Vec<Vec<u8>>, Vec<Vec<u8>>);
        let mut parts: BTreeMap<String, Parts> = BTreeMap::new();
        for item in self.tree.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item?;
            if crate::storage::pieces::is_piece_key(&key) {
                continue;
            }
            let key = String::from_utf8_lossy(&key).to_string();
            let damaged = |reason: &str| StoreError::Damaged {
                doc: key.clone(),
                reason: reason.to_string(),
            };
            let (doc, rest) = key
                .rsplit_once('/')
                .and_then(|(head, _hash)| head.rsplit_once('/'))
                .ok_or_else(|| damaged("unexpected key"))?;
            let value = self.value(&key, value)?;
            let entry = parts.entry(doc.to_string()).or_default();
            match rest {
                "snapshot" => entry.0.push(value),
                "change" => entry.1.push(value),
                _ => return Err(damaged("unexpected key kind")),
            }
        }
        let parts: Vec<(String, Parts)> = parts.into_iter().collect();
        // Automerge's load is most of a start-up (about a millisecond even for a document of
        // a few lessons: a hub of a thousand documents spent a second in it), and documents
        // load independently: on every core at once, each thread taking the next document.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(parts.len());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let load_some = || {
            let mut loaded = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((id, (snapshots, chunks))) = parts.get(i) else {
                    return loaded;
                };
                loaded.push((i, load_document(id, snapshots, chunks)));
            }
        };
        let mut loaded: Vec<(usize, Result<Automerge, StoreError>)> = if threads > 1 {
            std::thread::scope(|scope| {
                let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(load_some)).collect();
                let mut loaded = load_some();
                for helper in helpers {
                    match helper.join() {
                        Ok(theirs) => loaded.extend(theirs),
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
                loaded
            })
        } else {
            load_some()
        };
        // In id order, so that of several damaged documents the same one is named each time.
        loaded.sort_by_key(|(i, _)| *i);
        let mut docs = BTreeMap::new();
        for ((id, (_, chunks)), (_, doc)) in parts.iter().zip(loaded) {
            docs.insert(id.clone(), (doc?, chunks.len()));
        }
        Ok(docs)
    }
}

/// Local documents: personal and network data that never leaves the city. Only the API layer
/// holds this handle; the sync side is never given it.
pub struct LocalDocs(DocTree);

impl LocalDocs {
    /// Durably stores new bytes of a local document.
    pub fn persist(
        &self,
        doc: &DocId,
        kind: PersistKind,
        bytes: &[u8],
        heads: &[ChangeHash],
    ) -> Result<(), StoreError> {
        self.0.persist(doc.as_str(), kind, bytes, heads)
    }

    /// Replaces everything stored of a local document by `snapshot` (a document without
    /// history), durably, under a fresh data key. For erasure; [`LocalDocs::forget_old_keys`]
    /// then destroys the keys of what the files still hold of earlier versions.
    pub fn replace_under_new_key(
        &self,
        doc: &DocId,
        snapshot: &[u8],
        heads: &[ChangeHash],
    ) -> Result<(), StoreError> {
        self.keyring().rotate(doc.as_str())?;
        self.0
            .persist(doc.as_str(), PersistKind::Snapshot, snapshot, heads)
    }

    /// Destroys every key of a local document but its current one: whatever the files still
    /// hold of values sealed with them can no longer be read. If this fails, the next start of
    /// the node destroys them (keys no stored value uses).
    pub fn forget_old_keys(&self, doc: &DocId) -> Result<(), StoreError> {
        self.keyring().forget_old(doc.as_str())?;
        Ok(())
    }

    fn keyring(&self) -> &Keyring {
        self.0.sealed.as_ref().expect("local documents are sealed")
    }

    /// Every stored local document.
    pub fn load_all(&self) -> Result<Vec<StoredDoc<DocId>>, StoreError> {
        self.0
            .load_all()?
            .into_iter()
            .map(|(id, (doc, chunks))| {
                let id = DocId::parse(&id).map_err(|err| StoreError::Damaged {
                    doc: id.clone(),
                    reason: err.to_string(),
                })?;
                Ok(StoredDoc { id, doc, chunks })
            })
            .collect()
    }
}

/// One document from its stored snapshots and change chunks.
fn load_document(
    id: &str,
    snapshots: &[Vec<u8>],
    chunks: &[Vec<u8>],
) -> Result<Automerge, StoreError> {
    let damaged = |err: automerge::AutomergeError| StoreError::Damaged {
        doc: id.to_string(),
        reason: err.to_string(),
    };
    // All chunks in one call: Automerge applies them as one batch (in any order), where one
    // call per chunk would rework the document once per chunk. With the snapshot before them
    // (a store holds one), in one strict load: a chunk Automerge cannot read is an error.
    // `load_incremental` skips what it cannot parse, and the changes in it would be gone
    // without a word.
    if snapshots.len() <= 1 {
        let all: Vec<u8> = snapshots
            .iter()
            .chain(chunks)
            .flat_map(|c| c.iter().copied())
            .collect();
        let strict = LoadOptions::new().on_partial_load(OnPartialLoad::Error);
        return Automerge::load_with_options(&all, strict).map_err(damaged);
    }
    let mut doc = Automerge::new();
    for bytes in snapshots {
        doc.load_incremental(bytes).map_err(damaged)?;
    }
    let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    if !all.is_empty() {
        doc.load_incremental(&all).map_err(damaged)?;
    }
    Ok(doc)
}

/// Shared and national documents: the only documents the sync side can store or load.
pub struct ShareableDocs(DocTree);

impl ShareableDocs {
    /// Durably stores what the sync engine asked to persist.
    pub fn persist(&self, item: &DocPersist) -> Result<(), StoreError> {
        self.0
            .persist(item.doc.as_str(), item.kind, &item.bytes, &item.heads)
    }

    /// Stores what the sync engine asked to persist, durable only after the next
    /// [`ShareableDocs::sync`]: writers that insert under the engine lock and sync after
    /// releasing it share one fsync.
    pub fn insert(&self, item: &DocPersist) -> Result<(), StoreError> {
        self.0
            .insert(item.doc.as_str(), item.kind, &item.bytes, &item.heads)
    }

    /// Makes everything inserted so far durable (one sync for all writers waiting).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.0.durability.sync()
    }

    /// The durability the writes of this store go through.
    pub fn durability(&self) -> &Arc<Durability> {
        &self.0.durability
    }

    /// Stores a new generation of a document (see `sfs_sync::Engine::new_generation`) in
    /// place of everything stored of the older one, and destroys the older one: the snapshot
    /// is sealed under a fresh data key and replaces every chunk, snapshot and piece of the
    /// document in one batch, durably; then every older key of the document is destroyed, so
    /// whatever sled's files still hold of the older generation cannot be read, even with the
    /// at-rest key. If the node stops before the keys are destroyed, the next start destroys
    /// them (keys no stored value uses).
    pub fn replace_generation(&self, item: &DocPersist) -> Result<(), StoreError> {
        let keyring = self
            .0
            .sealed
            .as_ref()
            .expect("shareable documents are sealed");
        keyring.rotate(item.doc.as_str())?;
        self.0.persist(
            item.doc.as_str(),
            PersistKind::Snapshot,
            &item.bytes,
            &item.heads,
        )?;
        keyring.forget_old(item.doc.as_str())?;
        Ok(())
    }

    /// One stored document as the store holds it, `None` if nothing of it is stored.
    pub fn load_one(&self, doc: &ShareableDocId) -> Result<Option<Automerge>, StoreError> {
        self.0.load_one(doc.as_str())
    }

    /// The bytes stored for one document (its snapshot and the chunks beside it).
    pub fn stored_bytes(&self, doc: &ShareableDocId) -> Result<u64, StoreError> {
        let mut total = 0;
        for item in self.0.tree.scan_prefix(format!("{doc}/").as_bytes()) {
            total += item?.1.len() as u64;
        }
        Ok(total)
    }

    /// Every stored shareable document.
    pub fn load_all(&self) -> Result<Vec<StoredDoc<ShareableDocId>>, StoreError> {
        self.0
            .load_all()?
            .into_iter()
            .map(|(id, (doc, chunks))| {
                let id = ShareableDocId::parse(&id).map_err(|err| StoreError::Damaged {
                    doc: id.clone(),
                    reason: err.to_string(),
                })?;
                Ok(StoredDoc { id, doc, chunks })
            })
            .collect()
    }
}

/// Shareable documents and their sync states together: the [`sfs_sync::Storage`] the sync
/// driver writes through. Puts reach sled (and the journal) at once; [`sfs_sync::Storage::sync`]
/// is [`Durability::sync`] (the journal written and synced, shared by writers that arrive
/// together).
pub struct ShareableStorage {
    docs: ShareableDocs,
    states: SyncStates,
}

impl ShareableStorage {
    /// The storage of the sync side.
    pub fn new(docs: ShareableDocs, states: SyncStates) -> ShareableStorage {
        ShareableStorage { docs, states }
    }

    /// The shareable documents.
    pub fn docs(&self) -> &ShareableDocs {
        &self.docs
    }
}

impl sfs_sync::Storage for ShareableStorage {
    type Error = StoreError;

    fn check_writable(&self) -> Result<(), StoreError> {
        self.docs.durability().check_not_failed()
    }

    fn put_doc(&self, persist: &DocPersist) -> Result<(), StoreError> {
        self.docs.insert(persist)
    }

    fn replace_generation(&self, persist: &DocPersist) -> Result<(), StoreError> {
        self.docs.replace_generation(persist)
    }

    fn put_sync_state(
        &self,
        peer: &NodeId,
        doc: &ShareableDocId,
        state: &[u8],
    ) -> Result<(), StoreError> {
        self.states.put(peer, doc, state)
    }

    fn remove_sync_states(&self, doc: &ShareableDocId) -> Result<(), StoreError> {
        self.states.remove_doc(doc)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.docs.sync()
    }

    fn load_doc(&self, doc: &ShareableDocId) -> Result<Option<Automerge>, StoreError> {
        self.docs.load_one(doc)
    }

    fn load_all(&self) -> Result<Vec<sfs_sync::LoadedDoc>, StoreError> {
        Ok(self
            .docs
            .load_all()?
            .into_iter()
            .map(|stored| sfs_sync::LoadedDoc {
                id: stored.id,
                doc: stored.doc,
                chunks: stored.chunks,
            })
            .collect())
    }

    fn sync_states_for(&self, peer: &NodeId) -> Result<Vec<(ShareableDocId, Vec<u8>)>, StoreError> {
        self.states.for_peer(peer)
    }
}

/// Per-peer Automerge sync states. Losing one costs a longer sync, never data, so they are
/// written without an fsync of their own.
pub struct SyncStates {
    tree: sled::Tree,
    durability: Arc<Durability>,
}

impl SyncStates {
    fn key(peer: &NodeId, doc: &ShareableDocId) -> String {
        format!("{} {}", peer.spiffe_uri(), doc)
    }

    /// Stores the state of `doc` with `peer`.
    pub fn put(&self, peer: &NodeId, doc: &ShareableDocId, state: &[u8]) -> Result<(), StoreError> {
        self.durability.check_room()?;
        let key = Self::key(peer, doc);
        let mut batch = Batch::default();
        crate::storage::pieces::remove(&self.tree, &mut batch, key.as_bytes())
            .map_err(piece_error(&key))?;
        let pieces = crate::storage::pieces::split(state, crate::storage::pieces::PIECE_BYTES);
        crate::storage::pieces::put(
            &mut batch,
            key.as_bytes(),
            pieces.into_iter().map(<[u8]>::to_vec).collect(),
        );
        self.durability.apply(&self.tree, &batch)
    }

    /// Removes every stored state of `doc`, with every peer (a replaced generation's).
    pub fn remove_doc(&self, doc: &ShareableDocId) -> Result<(), StoreError> {
        let suffix = format!(" {doc}");
        let mut batch = Batch::default();
        for key in self.tree.iter().keys() {
            let key = key?;
            if !crate::storage::pieces::is_piece_key(&key) && key.ends_with(suffix.as_bytes()) {
                crate::storage::pieces::remove(&self.tree, &mut batch, &key)
                    .map_err(piece_error(&String::from_utf8_lossy(&key)))?;
            }
        }
        self.durability.apply(&self.tree, &batch)
    }

    /// Every stored state with `peer`.
    pub fn for_peer(&self, peer: &NodeId) -> Result<Vec<(ShareableDocId, Vec<u8>)>, StoreError> {
        let prefix = format!("{} ", peer.spiffe_uri());
        let mut states = Vec::new();
        for item in self.tree.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item?;
            if crate::storage::pieces::is_piece_key(&key) {
                continue;
            }
            let text = String::from_utf8_lossy(&key);
            if let Some(doc) = text
                .strip_prefix(&prefix)
                .and_then(|doc| ShareableDocId::parse(doc).ok())
            {
                let value = crate::storage::pieces::read(&self.tree, &key, value)
                    .map_err(piece_error(&text))?
                    .concat();
                states.push((doc, value));
            }
        }
        Ok(states)
    }
}

/// Everything the at-rest key can still read in `path` (a data directory or a backup file):
/// every sealed value it opens, and for values that are Automerge documents or changes, the
/// document saved uncompressed, so that every text ever written to it, overwritten or deleted
/// ones included, appears as plain bytes. The view of an attacker who copied the directory and
/// holds the key; tests search it for erased data. Values sealed piece by piece (see
/// [`crate::storage::pieces`]) are put together again by their tags.
pub fn readable_with_key(path: &Path, master: &MasterKey) -> Result<Vec<u8>, StoreError> {
    let mut all = Vec::new();
    let add = |all: &mut Vec<u8>, plain: &[u8]| {
        let mut doc = Automerge::new();
        if doc.load_incremental(plain).is_ok() {
            all.extend(doc.save_nocompress());
        }
        all.extend_from_slice(plain);
    };
    // Pieces of values sealed piece by piece, by value id: (count, index → data).
    type Found = (u32, BTreeMap<u32, Vec<u8>>);
    let mut pieces: BTreeMap<[u8; 8], Found> = BTreeMap::new();
    for plain in crate::storage::seal::readable_plaintexts(path, master)? {
        match crate::storage::pieces::tag_of(&plain) {
            Some((id, index, count, data)) => {
                let entry = pieces.entry(id).or_insert_with(|| (count, BTreeMap::new()));
                entry.1.insert(index, data.to_vec());
            }
            None => add(&mut all, &plain),
        }
    }
    for (count, found) in pieces.into_values() {
        // What is there of the value; a complete one is also read as a document.
        let complete = found.len() as u32 == count;
        let joined: Vec<u8> = found.into_values().flatten().collect();
        if complete {
            add(&mut all, &joined);
        } else {
            all.extend(joined);
        }
    }
    Ok(all)
}

/// Errors restoring a backup.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0} already holds a store; restore into an empty data directory")]
    NotEmpty(PathBuf),
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error(
        "the at-rest key given opens none of the sealed records of this backup of {node}: it \
         is not that node's key; give the key file the node ran with (its store.key_file) with \
         --key-file"
    )]
    WrongKey { node: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes a backup's documents and access log into the store of an empty data directory (the
/// node's files beside the store — tokens, running release — are `node::restore`'s). A sealed
/// backup needs the at-rest key of the node that made it; the restored directory is sealed with
/// the same key.
pub fn restore(
    data_dir: &Path,
    archive: &sfs_proto::v1::BackupArchive,
    master: MasterKey,
) -> Result<usize, RestoreError> {
    if data_dir.join("store").exists() {
        return Err(RestoreError::NotEmpty(data_dir.to_path_buf()));
    }
    // A wrong key is found before anything is written.
    if archive.sealed {
        let local = archive
            .documents
            .iter()
            .find(|d| DocId::parse(&d.doc_id).is_ok_and(|id| id.shareable().is_err()));
        if let Some(document) = local {
            if let Err(err) = master.open_backup(&document.doc_id, &document.data) {
                // Authenticated encryption cannot tell a wrong key from damage in one record;
                // damage does not reach every record, a wrong key does.
                let any_opens = archive
                    .documents
                    .iter()
                    .filter(|d| DocId::parse(&d.doc_id).is_ok_and(|id| id.shareable().is_err()))
                    .map(|d| &d.data)
                    .chain(archive.access_log.iter())
                    .any(|sealed| master.open_backup("", sealed).is_ok());
                return Err(if any_opens {
                    RestoreError::Damaged(err.to_string())
                } else {
                    RestoreError::WrongKey {
                        node: archive.node_id.clone(),
                    }
                });
            }
        }
    }
    let store = Store::open(data_dir, Duration::from_secs(5), master.clone())?;
    for document in &archive.documents {
        let damaged = |what: String| RestoreError::Damaged(format!("{}: {what}", document.doc_id));
        let id = DocId::parse(&document.doc_id).map_err(|e| damaged(e.to_string()))?;
        let data = if archive.sealed && id.clone().shareable().is_err() {
            master
                .open_backup(&document.doc_id, &document.data)
                .map_err(|e| damaged(e.to_string()))?
        } else {
            document.data.clone()
        };
        let doc = Automerge::load(&data).map_err(|e| damaged(e.to_string()))?;
        let heads = doc.get_heads();
        match id.clone().shareable() {
            Ok(shareable) => store.shared.persist(&DocPersist {
                doc: shareable,
                kind: PersistKind::Snapshot,
                bytes: data,
                heads,
            })?,
            Err(_) => store
                .local
                .persist(&id, PersistKind::Snapshot, &data, &heads)?,
        }
    }
    let entries = archive
        .access_log
        .iter()
        .map(|bytes| {
            let damaged = |e: String| RestoreError::Damaged(format!("access log: {e}"));
            let plain = if archive.sealed {
                master
                    .open_backup("access log entry", bytes)
                    .map_err(|e| damaged(e.to_string()))?
            } else {
                bytes.clone()
            };
            serde_json::from_slice::<AccessEntry>(&plain).map_err(|e| damaged(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !entries.is_empty() {
        store.access_log.append(&entries)?;
    }
    store.durability.sync()?;
    Ok(archive.documents.len())
}

/// One access to personal data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccessEntry {
    pub time_ms: i64,
    pub actor: String,
    pub action: String,
    pub resource: String,
}

/// The access log of personal data: append-only, durable before the data is handed out.
/// Nothing in the API changes or removes entries.
pub struct AccessLog {
    tree: sled::Tree,
    db: sled::Db,
    durability: Arc<Durability>,
    keyring: Arc<Keyring>,
}

impl AccessLog {
    /// Appends entries and makes them durable.
    pub fn append(&self, entries: &[AccessEntry]) -> Result<(), StoreError> {
        self.durability.check_room()?;
        let mut batch = Batch::default();
        for entry in entries {
            let mut key = (entry.time_ms as u64).to_be_bytes().to_vec();
            key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
            let value = serde_json::to_vec(entry).expect("entry serialises");
            let pieces = crate::storage::pieces::split_tagged(
                &value,
                crate::storage::pieces::PIECE_BYTES - crate::storage::seal::OVERHEAD,
            )
            .into_iter()
            .map(|piece| self.keyring.seal("access_log", &piece))
            .collect::<Result<Vec<_>, _>>()?;
            crate::storage::pieces::put(&mut batch, &key, pieces);
        }
        self.durability.apply(&self.tree, &batch)?;
        self.durability.note_write();
        self.durability.sync()
    }

    /// Every entry, newest first.
    pub fn list(&self) -> Result<Vec<AccessEntry>, StoreError> {
        let mut entries = Vec::new();
        for item in self.tree.iter().rev() {
            let (key, value) = item?;
            if crate::storage::pieces::is_piece_key(&key) {
                continue;
            }
            let what = format!("access log entry {}", hex::encode(&key));
            let opened = crate::storage::pieces::read(&self.tree, &key, value)
                .map_err(piece_error(&what))?
                .iter()
                .map(|piece| self.keyring.open_value(&what, piece))
                .collect::<Result<Vec<_>, _>>()?;
            let value = crate::storage::pieces::join_tagged(opened).map_err(piece_error(&what))?;
            entries.push(
                serde_json::from_slice(&value).map_err(|err| StoreError::Damaged {
                    doc: format!("access log entry {}", hex::encode(key)),
                    reason: err.to_string(),
                })?,
            );
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{ReadDoc, ROOT};

    #[test]
    fn chunks_and_snapshots_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = ShareableDocId::lessons("lund").unwrap();
        let mut doc = Automerge::new();
        let mut persisted = Vec::new();
        let master = MasterKey::generate();
        {
            let store = Store::open(dir.path(), Duration::from_secs(5), master.clone()).unwrap();
            for i in 0..5 {
                doc.transact(|tx| tx.put(ROOT, format!("k{i}"), i as i64))
                    .unwrap();
                let kind = if i == 3 {
                    PersistKind::Snapshot
                } else {
                    PersistKind::Incremental
                };
                let bytes = if kind == PersistKind::Snapshot {
                    doc.save()
                } else {
                    doc.save_after(&persisted)
                };
                persisted = doc.get_heads();
                store
                    .shared
                    .persist(&DocPersist {
                        doc: id.clone(),
                        kind,
                        bytes,
                        heads: persisted.clone(),
                    })
                    .unwrap();
            }
        }
        let store = Store::open(dir.path(), Duration::from_secs(5), master).unwrap();
        let loaded = store.shared.load_all().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(
            loaded[0].chunks, 1,
            "the snapshot replaced the chunks before it"
        );
        assert_eq!(loaded[0].doc.get_heads(), doc.get_heads());
        assert!(loaded[0].doc.get(ROOT, "k4").unwrap().is_some());
        assert!(store.local.load_all().unwrap().is_empty());
    }

    /// Documents load on several threads at once: each still comes back under its own id with
    /// its own content and chunk count; a chunk that cannot be read is an error, not skipped;
    /// of several damaged documents the first by id is named, every time.
    #[test]
    fn many_documents_load_each_under_its_own_id_and_the_first_damaged_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let city = |i: usize| format!("stad{i:02}");
        let id = |i: usize| ShareableDocId::lessons(&city(i)).unwrap();
        let persist = |store: &Store, i: usize, kind, bytes, heads| {
            store
                .shared
                .persist(&DocPersist {
                    doc: id(i),
                    kind,
                    bytes,
                    heads,
                })
                .unwrap()
        };
        {
            let store = Store::open(dir.path(), Duration::from_secs(5), master.clone()).unwrap();
            for i in 0..40 {
                let mut doc = Automerge::new();
                doc.transact(|tx| tx.put(ROOT, "city", city(i))).unwrap();
                persist(
                    &store,
                    i,
                    PersistKind::Snapshot,
                    doc.save(),
                    doc.get_heads(),
                );
                for chunk in 0..i % 3 {
                    let before = doc.get_heads();
                    doc.transact(|tx| tx.put(ROOT, format!("chunk{chunk}"), i as i64))
                        .unwrap();
                    let bytes = doc.save_after(&before);
                    persist(&store, i, PersistKind::Incremental, bytes, doc.get_heads());
                }
            }
        }
        let store = Store::open(dir.path(), Duration::from_secs(5), master.clone()).unwrap();
        let loaded = store.shared.load_all().unwrap();
        assert_eq!(loaded.len(), 40);
        for stored in &loaded {
            let i = (0..40).find(|i| id(*i) == stored.id).unwrap();
            let (value, _) = stored.doc.get(ROOT, "city").unwrap().unwrap();
            assert_eq!(
                value.into_string().unwrap(),
                city(i),
                "{}",
                stored.id.as_str()
            );
            assert_eq!(stored.chunks, i % 3, "{}", stored.id.as_str());
            let chunks = (0..i % 3)
                .filter(|c| stored.doc.get(ROOT, format!("chunk{c}")).unwrap().is_some())
                .count();
            assert_eq!(chunks, i % 3, "{}", stored.id.as_str());
        }
        // Damage after the snapshot (a chunk Automerge cannot read) and in place of it.
        for (i, kind) in [
            (31, PersistKind::Incremental),
            (7, PersistKind::Incremental),
            (22, PersistKind::Snapshot),
        ] {
            let garbage = format!("not a change of {}", city(i)).into_bytes();
            let heads = vec![ChangeHash([i as u8; 32])];
            persist(&store, i, kind, garbage, heads);
        }
        for _ in 0..5 {
            match store.shared.load_all() {
                Err(StoreError::Damaged { doc, .. }) => assert_eq!(doc, id(7).as_str()),
                other => panic!("{:?}", other.map(|docs| docs.len())),
            }
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn readable(dir: &Path, master: &MasterKey) -> Vec<u8> {
        readable_with_key(dir, master).unwrap()
    }

    fn raw_files(dir: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else {
                all.extend(std::fs::read(&path).unwrap());
            }
        }
        all
    }

    #[test]
    fn local_documents_are_sealed_and_a_replaced_history_is_unreadable_even_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let id = DocId::local("signals").unwrap();
        let secret = "Ingrid Kvarnström-Lindqvist";
        let mut doc = Automerge::new();
        {
            let store = Store::open(dir.path(), Duration::from_secs(5), master.clone()).unwrap();
            let mut persisted = Vec::new();
            for i in 0..20 {
                doc.transact(|tx| {
                    tx.put(ROOT, format!("k{i}"), format!("{secret} {i}"))?;
                    tx.put(ROOT, "kept", "nothing personal")
                })
                .unwrap();
                let bytes = doc.save_after(&persisted);
                persisted = doc.get_heads();
                store
                    .local
                    .persist(&id, PersistKind::Incremental, &bytes, &persisted)
                    .unwrap();
            }
            store
                .access_log
                .append(&[AccessEntry {
                    time_ms: 1,
                    actor: "admin".into(),
                    action: "read".into(),
                    resource: "signals/x".into(),
                }])
                .unwrap();
            store.durability.sync().unwrap();
            assert!(!contains(&raw_files(dir.path()), secret.as_bytes()));
            assert!(!contains(&raw_files(dir.path()), b"signals/x"));
            // With the key, the data (and the access log) can be read back from the files.
            let before = readable(dir.path(), &master);
            assert!(contains(&before, secret.as_bytes()));
            assert!(contains(&before, b"signals/x"));

            // Erase: a document without the secret and without history replaces it.
            let mut fresh = Automerge::new();
            fresh
                .transact(|tx| tx.put(ROOT, "kept", "nothing personal"))
                .unwrap();
            store
                .local
                .replace_under_new_key(&id, &fresh.save(), &fresh.get_heads())
                .unwrap();
            store.local.forget_old_keys(&id).unwrap();
        }
        let after = readable(dir.path(), &master);
        assert!(!contains(&after, secret.as_bytes()));
        assert!(contains(&after, b"nothing personal"));
        assert!(contains(&after, b"signals/x"));
        let store = Store::open(dir.path(), Duration::from_secs(5), master).unwrap();
        let loaded = store.local.load_all().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].doc.get_heads(), fresh_heads(&loaded[0].doc));
        assert!(loaded[0].doc.get(ROOT, "k0").unwrap().is_none());
        assert_eq!(store.access_log.list().unwrap().len(), 1);
    }

    fn fresh_heads(doc: &Automerge) -> Vec<ChangeHash> {
        assert_eq!(
            doc.get_changes(&[]).len(),
            1,
            "no history before the erasure"
        );
        doc.get_heads()
    }

    /// Letters that do not compress: a document holding them stays as large as they are.
    fn noise(len: usize, seed: u64) -> String {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ seed;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'a' + (state >> 59) as u8 % 26)
            })
            .collect()
    }

    fn blob_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("store/blobs"))
            .map(|entries| entries.count())
            .unwrap_or(0)
    }

    #[test]
    fn values_far_over_sleds_blob_threshold_leave_no_blob_file_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let shared_id = ShareableDocId::lessons("lund").unwrap();
        let local_id = DocId::local("signals").unwrap();
        let peer = NodeId::hub("national").unwrap();
        let mut shared = Automerge::new();
        let mut local = Automerge::new();
        let state: Vec<u8> = noise(300_000, 3).into_bytes();
        {
            let store =
                Arc::new(Store::open(dir.path(), Duration::from_secs(5), master.clone()).unwrap());
            // Snapshots of 1 MB (far over the 131,052 bytes of sled 0.34's threshold), large
            // changes, a large sealed local document, a large sync state and an access-log
            // entry, from several writers at once (sled logs whole leaves when it
            // consolidates them, so many large values side by side are the hard case).
            shared
                .transact(|tx| tx.put(ROOT, "big", noise(1_000_000, 1).as_str()))
                .unwrap();
            store
                .shared
                .persist(&DocPersist {
                    doc: shared_id.clone(),
                    kind: PersistKind::Snapshot,
                    bytes: shared.save(),
                    heads: shared.get_heads(),
                })
                .unwrap();
            let writers: Vec<_> = (0..4u64)
                .map(|w| {
                    let store = store.clone();
                    std::thread::spawn(move || {
                        let id = ShareableDocId::lessons(&format!("city{w}")).unwrap();
                        let mut doc = Automerge::new();
                        let mut persisted = Vec::new();
                        for i in 0..6 {
                            doc.transact(|tx| {
                                tx.put(ROOT, format!("k{i}"), noise(150_000, w * 100 + i).as_str())
                            })
                            .unwrap();
                            let bytes = doc.save_after(&persisted);
                            persisted = doc.get_heads();
                            store
                                .shared
                                .persist(&DocPersist {
                                    doc: id.clone(),
                                    kind: PersistKind::Incremental,
                                    bytes,
                                    heads: persisted.clone(),
                                })
                                .unwrap();
                        }
                        doc.get_heads()
                    })
                })
                .collect();
            local
                .transact(|tx| tx.put(ROOT, "big", noise(500_000, 2).as_str()))
                .unwrap();
            store
                .local
                .persist(
                    &local_id,
                    PersistKind::Snapshot,
                    &local.save(),
                    &local.get_heads(),
                )
                .unwrap();
            store.sync_states.put(&peer, &shared_id, &state).unwrap();
            // A shorter state replaces it without leaving pieces behind.
            store
                .sync_states
                .put(&peer, &ShareableDocId::lessons("x").unwrap(), &state[..10])
                .unwrap();
            store
                .access_log
                .append(&[AccessEntry {
                    time_ms: 1,
                    actor: "admin".into(),
                    action: "read".into(),
                    resource: noise(200_000, 4),
                }])
                .unwrap();
            for writer in writers {
                writer.join().unwrap();
            }
            store.durability.sync().unwrap();
            assert_eq!(blob_files(dir.path()), 0, "sled wrote no blob file");
        }
        let store = Store::open(dir.path(), Duration::from_secs(5), master.clone()).unwrap();
        let loaded = store.shared.load_all().unwrap();
        assert_eq!(loaded.len(), 5);
        let lund = loaded.iter().find(|d| d.id == shared_id).unwrap();
        assert_eq!(lund.doc.get_heads(), shared.get_heads());
        for doc in &loaded {
            assert!(!doc.doc.get_heads().is_empty());
        }
        let locals = store.local.load_all().unwrap();
        assert_eq!(locals[0].doc.get_heads(), local.get_heads());
        let states = store.sync_states.for_peer(&peer).unwrap();
        assert_eq!(states.len(), 2);
        assert!(states.contains(&(shared_id.clone(), state.clone())));
        assert_eq!(
            store.access_log.list().unwrap()[0].resource,
            noise(200_000, 4)
        );
        // The auditor's scan still sees inside a large sealed document.
        let big = noise(500_000, 2);
        assert!(contains(
            &readable(dir.path(), &master),
            &big.as_bytes()[..1000]
        ));
        assert_eq!(blob_files(dir.path()), 0);
    }

    #[test]
    fn values_stored_whole_by_an_older_node_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let shared_id = ShareableDocId::lessons("lund").unwrap();
        let mut doc = Automerge::new();
        doc.transact(|tx| tx.put(ROOT, "big", noise(300_000, 5).as_str()))
            .unwrap();
        let change = {
            let before = doc.get_heads();
            doc.transact(|tx| tx.put(ROOT, "more", "x")).unwrap();
            doc.save_after(&before)
        };
        let mut local = Automerge::new();
        local
            .transact(|tx| tx.put(ROOT, "big", noise(200_000, 6).as_str()))
            .unwrap();
        {
            let store = Store::open(dir.path(), Duration::from_secs(5), master.clone()).unwrap();
            // The form of earlier versions: one value per key, whatever its size.
            let whole = doc.save();
            store
                .shared
                .0
                .tree
                .insert(
                    format!("{shared_id}/snapshot/{}", heads_key(&doc.get_heads())),
                    whole.as_slice(),
                )
                .unwrap();
            store
                .shared
                .0
                .tree
                .insert(
                    format!(
                        "{shared_id}/change/{}",
                        hex::encode(Sha256::digest(&change))
                    ),
                    change.as_slice(),
                )
                .unwrap();
            let sealed = store.keyring.seal("local/network", &local.save()).unwrap();
            store
                .local
                .0
                .tree
                .insert("local/network/snapshot/x", sealed)
                .unwrap();
            store.durability.note_write();
            store.durability.sync().unwrap();
        }
        let store = Store::open(dir.path(), Duration::from_secs(5), master).unwrap();
        let loaded = store.shared.load_all().unwrap();
        assert_eq!(loaded[0].doc.get_heads(), doc.get_heads());
        assert_eq!(
            store.local.load_all().unwrap()[0].doc.get_heads(),
            local.get_heads()
        );
    }

    #[test]
    fn a_wrong_key_opens_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        {
            let store = Store::open(dir.path(), Duration::from_secs(5), master).unwrap();
            let mut doc = Automerge::new();
            doc.transact(|tx| tx.put(ROOT, "a", 1)).unwrap();
            store
                .local
                .persist(
                    &DocId::local("network").unwrap(),
                    PersistKind::Snapshot,
                    &doc.save(),
                    &doc.get_heads(),
                )
                .unwrap();
        }
        let err = Store::open(dir.path(), Duration::from_secs(5), MasterKey::generate())
            .err()
            .expect("a wrong key is refused");
        assert!(
            err.to_string().contains("does not open the keyring"),
            "{err}"
        );
    }
}
