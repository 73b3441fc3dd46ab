//! The journal: a redo log in front of sled, so that making a write durable costs one small
//! `fdatasync` of a file of our own instead of a sled flush plus an fsync of sled's whole
//! data file.
//!
//! Every write to sled goes through [`Journal::apply`] as a [`Batch`] of blind inserts and
//! removals: the batch is applied to sled (in memory) and recorded, in the same order, in the
//! journal. [`Journal::sync`] writes the recorded batches to the journal file and syncs that
//! file; sled writes its own files in the background whenever it likes. At a
//! [checkpoint](Journal::checkpoint) sled is flushed and its data file fsynced, and the
//! journal starts a new *epoch*: what it held is in sled now.
//!
//! At open, the batches of the current epoch are applied to sled again, in order, then a
//! checkpoint follows. Replaying is always safe: after a crash sled holds some prefix of the
//! writes (at least everything up to the last checkpoint), and re-applying a suffix of blind
//! writes on top of a prefix that covers its start gives, key by key, the value of the last
//! write — the state after all of them. A batch is one record, so it is replayed whole or not
//! at all, as sled applies it.
//!
//! The file: a header (magic, epoch, CRC-32) in its first 4 KiB, then records, each
//! `epoch (u64) | length (u32) | CRC-32 of the three (u32) | payload`. Reading stops at the
//! first record of another epoch or with a wrong checksum — older epochs' records that a
//! shorter epoch did not overwrite, or a record torn by the cut. The header is rewritten only
//! at a checkpoint, after sled's files are durable, so a torn header loses nothing. The file is
//! filled with zeros ahead of the records, so that a sync writes data only, not the file's
//! size. It stays under [`CAPACITY`] bytes plus one step: a batch that would not fit makes a
//! checkpoint first.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Marks the header of a journal file.
const MAGIC: &[u8; 8] = b"SFSJRN01";
/// Where the records begin (the header owns the first block).
const RECORDS_START: u64 = 4096;
/// Record header: epoch, length, checksum.
const RECORD_HEADER: usize = 8 + 4 + 4;
/// The records of one epoch stay under this; a checkpoint starts the next.
pub const CAPACITY: u64 = 2 * 1024 * 1024;
/// How far ahead of the records the file is filled with zeros, at a time.
const ZERO_STEP: u64 = 256 * 1024;
/// Recorded batches waiting for a sync are written out (without a sync) beyond this, so that a
/// node that writes but never syncs (sync states only) keeps no unbounded buffer.
const SPILL_BYTES: usize = 256 * 1024;

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("journal file {path}: record {index} does not decode ({reason})")]
    Damaged {
        path: PathBuf,
        index: usize,
        reason: String,
    },
}

impl JournalError {
    /// Whether this error came from the disk (as opposed to damaged data).
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            JournalError::Io { .. } | JournalError::Sled(sled::Error::Io(_))
        )
    }
}

/// One write of sled, all or nothing: blind inserts and removals in order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// Adds putting `value` under `key`.
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    /// Adds removing `key`.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((key.as_ref().to_vec(), None));
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The one write the batch comes to, when every operation is on the same key (the last
    /// one wins, as in sled's own batches).
    fn single_write(&self) -> Option<(&[u8], Option<&[u8]>)> {
        let (key, value) = self.ops.last()?;
        self.ops
            .iter()
            .all(|(other, _)| other == key)
            .then_some((key.as_slice(), value.as_deref()))
    }

    /// The same batch for sled.
    pub fn to_sled(&self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in &self.ops {
            match value {
                Some(value) => batch.insert(key.as_slice(), value.as_slice()),
                None => batch.remove(key.as_slice()),
            }
        }
        batch
    }

    /// The payload of a record: the tree's name, then the operations.
    fn encode(&self, tree: &[u8]) -> Vec<u8> {
        let size: usize = self
            .ops
            .iter()
            .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        let mut out = Vec::with_capacity(2 + tree.len() + 4 + size);
        out.extend_from_slice(&(tree.len() as u16).to_le_bytes());
        out.extend_from_slice(tree);
        out.extend_from_slice(&(self.ops.len() as u32).to_le_bytes());
        for (key, value) in &self.ops {
            out.push(u8::from(value.is_some()));
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            if let Some(value) = value {
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
        }
        out
    }

    /// Reads a record's payload back: the tree's name and the batch.
    fn decode(mut input: &[u8]) -> Result<(Vec<u8>, Batch), String> {
        fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
            if input.len() < n {
                return Err(format!("{n} bytes wanted, {} left", input.len()));
            }
            let (head, rest) = input.split_at(n);
            *input = rest;
            Ok(head)
        }
        fn u32_at(input: &mut &[u8]) -> Result<usize, String> {
            let bytes = take(input, 4)?;
            Ok(u32::from_le_bytes(bytes.try_into().expect("four bytes")) as usize)
        }
        let tree_len = u16::from_le_bytes(take(&mut input, 2)?.try_into().expect("two bytes"));
        let tree = take(&mut input, tree_len as usize)?.to_vec();
        let count = u32_at(&mut input)?;
        let mut batch = Batch::default();
        for _ in 0..count {
            let kind = take(&mut input, 1)?[0];
            let key_len = u32_at(&mut input)?;
            let key = take(&mut input, key_len)?.to_vec();
            match kind {
                0 => batch.ops.push((key, None)),
                1 => {
                    let value_len = u32_at(&mut input)?;
                    let value = take(&mut input, value_len)?.to_vec();
                    batch.ops.push((key, Some(value)));
                }
                other => return Err(format!("unknown operation {other}")),
            }
        }
        if !input.is_empty() {
            return Err(format!("{} bytes left over", input.len()));
        }
        Ok((tree, batch))
    }
}

/// Appends the record of `payload` in `epoch` to `out`: its header (epoch, length, CRC-32 of
/// both and the payload), then the payload.
fn frame(epoch: u64, payload: &[u8], out: &mut Vec<u8>) {
    let mut header = [0u8; RECORD_HEADER];
    header[..8].copy_from_slice(&epoch.to_le_bytes());
    header[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..12]);
    hasher.update(payload);
    header[12..16].copy_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// What the journal's lock guards.
struct State {
    epoch: u64,
    /// Where the next record goes.
    offset: u64,
    /// The file is zero-filled up to here.
    zeroed: u64,
    /// Payloads applied to sled, not yet written to the file.
    pending: Vec<Vec<u8>>,
    pending_bytes: usize,
}

/// The redo log of one sled database; see the module documentation.
pub struct Journal {
    file: File,
    path: PathBuf,
    db: sled::Db,
    /// sled's data file, fsynced at checkpoints (sled's own flush does not fsync it).
    db_file: File,
    db_path: PathBuf,
    state: Mutex<State>,
}

impl Journal {
    /// Opens the journal at `path` for `db` (whose data file is `db_path`), creating it if
    /// needed. Whatever the journal holds of its current epoch is applied to `db` again, and a
    /// checkpoint makes it part of sled's files. Returns the journal and how many batches were
    /// replayed.
    pub fn open(
        path: &Path,
        db: sled::Db,
        db_path: &Path,
    ) -> Result<(Journal, usize), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let db_file = File::open(db_path).map_err(|source| JournalError::Io {
            path: db_path.to_path_buf(),
            source,
        })?;
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let length = file.metadata().map_err(io)?.len();
        let journal = Journal {
            file,
            path: path.to_path_buf(),
            db,
            db_file,
            db_path: db_path.to_path_buf(),
            state: Mutex::new(State {
                epoch: 0,
                offset: RECORDS_START,
                // The header's block is never zero-filled: it holds the header.
                zeroed: length.max(RECORDS_START),
                pending: Vec::new(),
                pending_bytes: 0,
            }),
        };
        let mut replayed = 0;
        if let Some(epoch) = journal.read_header()? {
            for (index, payload) in journal.records(epoch)?.into_iter().enumerate() {
                let (tree, batch) =
                    Batch::decode(&payload).map_err(|reason| JournalError::Damaged {
                        path: path.to_path_buf(),
                        index,
                        reason,
                    })?;
                journal.db.open_tree(tree)?.apply_batch(batch.to_sled())?;
                replayed += 1;
            }
            journal.lock().epoch = epoch;
        }
        {
            let mut state = journal.lock();
            journal.zero_ahead(&mut state, RECORDS_START + ZERO_STEP)?;
            journal.checkpoint(&mut state)?;
        }
        journal.file.sync_all().map_err(io)?;
        if !existed {
            if let Some(dir) = path.parent() {
                sfs_durable::sync_dir(dir).map_err(|source| JournalError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
        }
        Ok((journal, replayed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io(&self, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// The epoch the header names, `None` for a new, empty or torn header (nothing to replay:
    /// the header is written only when sled's files hold everything).
    fn read_header(&self) -> Result<Option<u64>, JournalError> {
        let mut header = [0u8; 20];
        match self.file.read_exact_at(&mut header, 0) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(err) => return Err(self.io(err)),
        }
        if &header[..8] != MAGIC {
            return Ok(None);
        }
        let crc = u32::from_le_bytes(header[16..20].try_into().expect("four bytes"));
        if crc32fast::hash(&header[..16]) != crc {
            return Ok(None);
        }
        Ok(Some(u64::from_le_bytes(
            header[8..16].try_into().expect("eight bytes"),
        )))
    }

    /// The payloads of `epoch`'s records, in order, up to the first that is not one.
    fn records(&self, epoch: u64) -> Result<Vec<Vec<u8>>, JournalError> {
        let length = self.file.metadata().map_err(|e| self.io(e))?.len();
        let mut records = Vec::new();
        let mut offset = RECORDS_START;
        while offset + RECORD_HEADER as u64 <= length {
            let mut header = [0u8; RECORD_HEADER];
            self.file
                .read_exact_at(&mut header, offset)
                .map_err(|e| self.io(e))?;
            let record_epoch = u64::from_le_bytes(header[..8].try_into().expect("eight bytes"));
            let len = u32::from_le_bytes(header[8..12].try_into().expect("four bytes")) as u64;
            let crc = u32::from_le_bytes(header[12..16].try_into().expect("four bytes"));
            let start = offset + RECORD_HEADER as u64;
            if record_epoch != epoch || start + len > length {
                break;
            }
            let mut payload = vec![0u8; len as usize];
            self.file
                .read_exact_at(&mut payload, start)
                .map_err(|e| self.io(e))?;
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&header[..12]);
            hasher.update(&payload);
            if hasher.finalize() != crc {
                break;
            }
            records.push(payload);
            offset = start + len;
        }
        Ok(records)
    }

    /// Applies `batch` to `tree` and records it; durable after the next [`Journal::sync`].
    pub fn apply(&self, tree: &sled::Tree, batch: &Batch) -> Result<(), JournalError> {
        if batch.is_empty() {
            return Ok(());
        }
        let payload = batch.encode(&tree.name());
        let mut state = self.lock();
        // sled makes a batch atomic across a crash by writing its log out, and waiting for
        // the disk, before and after it (`pin_log`: two buffer writes, each with a
        // `sync_file_range` that waits). One key needs no batch: the write is whole or absent
        // in sled's log, and the journal replays it either way. Only batches of several keys
        // (a value and its pieces, a snapshot and the chunks it replaces) pay for atomicity.
        match batch.single_write() {
            Some((key, Some(value))) => {
                tree.insert(key, value)?;
            }
            Some((key, None)) => {
                tree.remove(key)?;
            }
            None => tree.apply_batch(batch.to_sled())?,
        }
        state.pending_bytes += payload.len() + RECORD_HEADER;
        state.pending.push(payload);
        if state.pending_bytes > SPILL_BYTES {
            self.write_pending(&mut state)?;
        }
        Ok(())
    }

    /// Makes every batch applied so far durable.
    pub fn sync(&self) -> Result<(), JournalError> {
        {
            let mut state = self.lock();
            self.write_pending(&mut state)?;
        }
        self.file.sync_data().map_err(|e| self.io(e))
    }

    /// Writes the pending records to the file (no sync), or makes a checkpoint if they would
    /// not fit in this epoch.
    fn write_pending(&self, state: &mut State) -> Result<(), JournalError> {
        if state.pending.is_empty() {
            return Ok(());
        }
        if state.offset + state.pending_bytes as u64 > RECORDS_START + CAPACITY {
            // Everything pending is applied to sled already: the checkpoint covers it.
            return self.checkpoint(state);
        }
        let mut bytes = Vec::with_capacity(state.pending_bytes);
        for payload in &state.pending {
            frame(state.epoch, payload, &mut bytes);
        }
        let end = state.offset + bytes.len() as u64;
        self.zero_ahead(state, end)?;
        self.file
            .write_all_at(&bytes, state.offset)
            .map_err(|e| self.io(e))?;
        state.offset = end;
        state.pending.clear();
        state.pending_bytes = 0;
        Ok(())
    }

    /// Fills the file with zeros up to at least `end` (a step at a time), so that records
    /// written there later change no metadata of the file.
    fn zero_ahead(&self, state: &mut State, end: u64) -> Result<(), JournalError> {
        if end <= state.zeroed {
            return Ok(());
        }
        let target = end.div_ceil(ZERO_STEP) * ZERO_STEP;
        let zeros = vec![0u8; (target - state.zeroed) as usize];
        self.file
            .write_all_at(&zeros, state.zeroed)
            .map_err(|e| self.io(e))?;
        state.zeroed = target;
        Ok(())
    }

    /// Makes sled's files hold every batch applied so far, then starts a new epoch: sled
    /// flushed, its data file fsynced, the header rewritten and synced.
    fn checkpoint(&self, state: &mut State) -> Result<(), JournalError> {
        self.db.flush()?;
        self.db_file
            .sync_data()
            .map_err(|source| JournalError::Io {
                path: self.db_path.clone(),
                source,
            })?;
        let epoch = state.epoch + 1;
        let mut header = [0u8; 20];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&epoch.to_le_bytes());
        let crc = crc32fast::hash(&header[..16]);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all_at(&header, 0).map_err(|e| self.io(e))?;
        self.file.sync_data().map_err(|e| self.io(e))?;
        state.epoch = epoch;
        state.offset = RECORDS_START;
        state.pending.clear();
        state.pending_bytes = 0;
        Ok(())
    }

    /// The journal file's size on disk, in bytes.
    pub fn size_on_disk(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (sled::Db, Journal, usize) {
        let db = sled::Config::new()
            .path(dir.join("store"))
            .open()
            .expect("sled opens");
        let (journal, replayed) =
            Journal::open(&dir.join("journal"), db.clone(), &dir.join("store/db"))
                .expect("journal opens");
        (db, journal, replayed)
    }

    fn batch(ops: &[(&str, Option<&str>)]) -> Batch {
        let mut batch = Batch::default();
        for (key, value) in ops {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch
    }

    #[test]
    fn a_batch_encodes_and_decodes_to_itself() {
        let b = batch(&[("a", Some("1")), ("b", None), ("", Some(""))]);
        let (tree, back) = Batch::decode(&b.encode(b"shared")).expect("decodes");
        assert_eq!(tree, b"shared");
        assert_eq!(back, b);
        assert!(Batch::decode(&b.encode(b"x")[..5]).is_err());
    }

    /// A batch on one key is written as one plain sled write (no atomic batch), and leaves
    /// what sled's own batch would: the last operation on the key wins.
    #[test]
    fn a_batch_on_one_key_is_one_write_that_leaves_what_a_sled_batch_leaves() {
        assert_eq!(
            batch(&[("k", None), ("k", Some("2"))]).single_write(),
            Some((&b"k"[..], Some(&b"2"[..])))
        );
        assert_eq!(
            batch(&[("k", Some("1")), ("k", None)]).single_write(),
            Some((&b"k"[..], None))
        );
        assert_eq!(batch(&[("k", None), ("j", Some("2"))]).single_write(), None);
        assert_eq!(batch(&[]).single_write(), None);

        let dir = tempfile::tempdir().expect("temp dir");
        let (db, journal, _) = open(dir.path());
        let tree = db.open_tree("t").expect("tree");
        let reference = db.open_tree("reference").expect("tree");
        let cases: [&[(&str, Option<&str>)]; 5] = [
            &[("a", Some("1"))],
            &[("a", None), ("a", Some("2"))],
            &[("b", Some("3")), ("b", None)],
            &[("a", Some("4")), ("c", Some("5"))],
            &[("c", None)],
        ];
        for ops in cases {
            journal.apply(&tree, &batch(ops)).expect("applied");
            reference
                .apply_batch(batch(ops).to_sled())
                .expect("applied");
        }
        let read = |tree: &sled::Tree| {
            tree.iter()
                .map(|item| item.expect("readable"))
                .collect::<Vec<_>>()
        };
        assert_eq!(read(&tree), read(&reference));
        assert_eq!(tree.get("a").expect("read").as_deref(), Some(&b"4"[..]));
    }

    /// The records of the current epoch are found again, in order, and nothing past a torn or
    /// stale record.
    #[test]
    fn records_are_read_back_up_to_the_first_torn_or_stale_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, journal, replayed) = open(dir.path());
        assert_eq!(replayed, 0);
        let tree = db.open_tree("t").expect("tree");
        for i in 0..5 {
            journal
                .apply(&tree, &batch(&[(&format!("k{i}"), Some("v"))]))
                .expect("applied");
        }
        journal.sync().expect("synced");
        let epoch = journal.lock().epoch;
        assert_eq!(journal.records(epoch).expect("read").len(), 5);
        assert!(journal.records(epoch + 1).expect("read").is_empty());
        // Tear the fourth record: the first three remain.
        let offset = {
            let records = journal.records(epoch).expect("read");
            RECORDS_START
                + records[..3]
                    .iter()
                    .map(|p| (p.len() + RECORD_HEADER) as u64)
                    .sum::<u64>()
        };
        journal
            .file
            .write_all_at(&[0xFF], offset + RECORD_HEADER as u64 + 2)
            .expect("written");
        assert_eq!(journal.records(epoch).expect("read").len(), 3);
    }

    /// What sled never wrote to its files (a power cut right after the journal's sync) comes
    /// back from the journal at the next open, removals included.
    #[test]
    fn batches_sled_lost_are_replayed_at_open_and_a_checkpoint_empties_the_journal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let payloads = {
            let (db, journal, _) = open(dir.path());
            let tree = db.open_tree("shared").expect("tree");
            journal
                .apply(&tree, &batch(&[("a", Some("1")), ("b", Some("2"))]))
                .expect("applied");
            journal
                .apply(&tree, &batch(&[("a", None), ("c", Some("3"))]))
                .expect("applied");
            journal.sync().expect("synced");
            let epoch = journal.lock().epoch;
            journal.records(epoch).expect("read")
        };
        // A fresh directory whose sled lost both batches, with the same journal file.
        let fresh = tempfile::tempdir().expect("temp dir");
        let (_, journal, _) = open(fresh.path());
        let epoch = journal.lock().epoch;
        drop(journal);
        let file = OpenOptions::new()
            .write(true)
            .open(fresh.path().join("journal"))
            .expect("opens");
        let mut records = Vec::new();
        for payload in &payloads {
            frame(epoch, payload, &mut records);
        }
        file.write_all_at(&records, RECORDS_START).expect("written");
        drop(file);
        let (db, journal, replayed) = open(fresh.path());
        assert_eq!(replayed, 2);
        let tree = db.open_tree("shared").expect("tree");
        assert_eq!(tree.get("a").expect("read"), None);
        assert_eq!(tree.get("b").expect("read").as_deref(), Some(&b"2"[..]));
        assert_eq!(tree.get("c").expect("read").as_deref(), Some(&b"3"[..]));
        // The open made a checkpoint: a second open replays nothing.
        drop((db, tree, journal));
        let (_, _, replayed) = open(fresh.path());
        assert_eq!(replayed, 0);
    }

    /// A journal that would outgrow its capacity makes a checkpoint instead, and stays small.
    #[test]
    fn the_journal_stays_within_its_capacity() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, journal, _) = open(dir.path());
        let tree = db.open_tree("t").expect("tree");
        let value = vec![7u8; 64 * 1024];
        for i in 0..400 {
            let mut b = Batch::default();
            b.insert(format!("k{}", i % 50), &value);
            journal.apply(&tree, &b).expect("applied");
            journal.sync().expect("synced");
        }
        assert!(journal.lock().epoch > 2, "checkpoints were made");
        assert!(journal.size_on_disk() <= RECORDS_START + CAPACITY + ZERO_STEP);
        drop((db, tree, journal));
        let (db, _, _) = open(dir.path());
        let tree = db.open_tree("t").expect("tree");
        assert_eq!(tree.len(), 50);
    }
}
