//! The one driver: nothing leaves before it is durable, failures go back into the engine, and
//! writers that arrive together share one sync.

use std::sync::{Arc, Mutex};

use automerge::transaction::Transactable;
use automerge::{ReadDoc, ROOT};
use sfs_sync::{
    CloseReason, ConnId, Driver, DriverEditError, Engine, EngineConfig, Frame, LogEvent,
    MemoryStorage, NodeId, RecordingTransport, Released, ShareableDocId, Storage, Transport,
};

/// Records, for every frame and acknowledgement-visible notification, how many syncs the
/// storage had made and whether anything was still unsynced at that moment.
struct Watching {
    storage: Arc<MemoryStorage>,
    seen: Mutex<Vec<(String, u64, bool)>>,
    inner: RecordingTransport,
}

impl Watching {
    fn note(&self, what: String) {
        let syncs = self.storage.syncs();
        let unsynced = self.storage.has_unsynced();
        self.seen.lock().unwrap().push((what, syncs, unsynced));
    }
}

impl Transport for Watching {
    fn send(&self, conn: ConnId, frame: Frame, beside: bool) -> Result<(), CloseReason> {
        self.note(format!("frame {} on {conn}", frame.kind()));
        self.inner.send(conn, frame, beside)
    }
    fn close(&self, conn: ConnId, _: &CloseReason) {
        self.note(format!("close {conn}"));
    }
    fn end(&self, conn: ConnId) {
        self.note(format!("end {conn}"));
    }
    fn changed(&self, doc: &ShareableDocId) {
        self.note(format!("changed {doc}"));
    }
    fn event(&self, _: &LogEvent) {}
}

fn hub() -> NodeId {
    NodeId::hub("national").unwrap()
}

fn city(name: &str) -> NodeId {
    NodeId::city(name).unwrap()
}

fn engine(me: &NodeId) -> Engine {
    Engine::new(
        me.clone(),
        sfs_sync::run_actor(me, [1; 8]),
        EngineConfig::default(),
    )
}

fn lessons(city: &str) -> ShareableDocId {
    ShareableDocId::lessons(city).unwrap()
}

/// Drives a link from the city's driver to an in-memory hub engine until the handshake is
/// done, so that edits are pushed on it. `take` takes the frames the driver released.
fn open_link<T: Transport>(
    driver: &Driver<Arc<MemoryStorage>, T>,
    conn: ConnId,
    take: impl Fn(&T) -> Vec<Released>,
) -> Engine {
    let me = driver.read(|e| e.me().clone());
    let mut hub_engine = engine(&hub());
    driver
        .perform(|e| e.connect(conn, hub(), Vec::new(), 0))
        .unwrap();
    let mut to_city: Vec<Frame> = Vec::new();
    let mut out = hub_engine.connect(conn, me, Vec::new(), 0);
    for _ in 0..50 {
        to_city.extend(out.sends.drain(..).map(|(_, f)| f));
        for frame in std::mem::take(&mut to_city) {
            driver.perform(|e| e.receive(conn, frame, 0)).unwrap();
        }
        out = sfs_sync::Output::default();
        for released in take(driver.transport()) {
            if let Released::Frame(_, frame) = released {
                out.extend(hub_engine.receive(conn, frame, 0));
            }
        }
        if out.sends.is_empty() {
            break;
        }
    }
    assert!(
        driver.read(|e| e.links().any(|(c, _, open)| c == conn && open)),
        "the handshake finished"
    );
    hub_engine
}

fn write(
    driver: &Driver<Arc<MemoryStorage>, impl Transport>,
    doc: &ShareableDocId,
    key: &str,
    value: &str,
) -> Result<(), String> {
    driver
        .edit(
            doc,
            None,
            0,
            |tx| -> Result<(), automerge::AutomergeError> {
                tx.put(ROOT, key, value)?;
                Ok(())
            },
            |_, _| Ok(()),
        )
        .map_err(|err| match err {
            DriverEditError::Storage(failure) => format!("storage: {failure}"),
            other => format!("refused: {other}"),
        })
}

#[test]
fn no_frame_no_acknowledgement_and_no_notification_leaves_before_the_sync_count_rises() {
    let storage = Arc::new(MemoryStorage::new());
    let watching = Watching {
        storage: storage.clone(),
        seen: Mutex::new(Vec::new()),
        inner: RecordingTransport::new(),
    };
    let me = city("malmo");
    let driver = Driver::open(engine(&me), storage.clone(), watching).unwrap();
    let _hub = open_link(&driver, 1, |t| t.inner.take());
    driver.transport().seen.lock().unwrap().clear();
    for i in 0..20 {
        let before = storage.syncs();
        write(&driver, &lessons("malmo"), &format!("l{i}"), "a lesson").unwrap();
        // Acknowledged: the sync count rose, and nothing is left unsynced.
        assert!(
            storage.syncs() > before,
            "edit {i} was acknowledged before a sync"
        );
        let durable = storage.durable_doc(&lessons("malmo")).unwrap().unwrap().0;
        assert!(
            durable.get(ROOT, format!("l{i}")).unwrap().is_some(),
            "edit {i} was acknowledged but would not survive a crash"
        );
    }
    let seen = driver.transport().seen.lock().unwrap().clone();
    let carrying: Vec<_> = seen
        .iter()
        .filter(|(what, _, _)| what.starts_with("frame doc_sync") || what.starts_with("changed"))
        .collect();
    let pushed = seen
        .iter()
        .filter(|(what, _, _)| what.starts_with("frame doc_sync"))
        .count();
    assert!(pushed >= 20, "every edit was pushed: {seen:?}");
    for (what, syncs, unsynced) in carrying {
        assert!(
            *syncs > 0 && !unsynced,
            "{what} left before its data was synced"
        );
    }
}

#[test]
fn a_failed_sync_refuses_the_edit_forgets_it_and_closes_every_link() {
    let storage = Arc::new(MemoryStorage::new());
    let driver = Driver::open(
        engine(&city("lund")),
        storage.clone(),
        RecordingTransport::new(),
    )
    .unwrap();
    let _hub = open_link(&driver, 7, RecordingTransport::take);
    write(
        &driver,
        &lessons("lund"),
        "kept",
        "stored before the failure",
    )
    .unwrap();
    driver.transport().take();
    storage.fail_sync_after(0);
    let refused = write(&driver, &lessons("lund"), "lost", "never stored");
    assert!(
        matches!(&refused, Err(why) if why.starts_with("storage")),
        "the edit is refused: {refused:?}"
    );
    // The engine forgot the change the API refused and kept the one stored before.
    driver.read(|engine| {
        let doc = engine.document(&lessons("lund")).unwrap();
        assert!(
            doc.get(ROOT, "lost").unwrap().is_none(),
            "the refused change is readable"
        );
        assert!(doc.get(ROOT, "kept").unwrap().is_some());
        assert_eq!(engine.links().count(), 0, "every link is closed");
    });
    let released = driver.transport().take();
    assert!(
        released
            .iter()
            .all(|r| !matches!(r, Released::Frame(_, Frame::DocSync { .. }))
                && !matches!(r, Released::Changed(_))),
        "nothing of the refused edit left: {released:?}"
    );
    assert!(released
        .iter()
        .any(|r| matches!(r, Released::Close(7, reason) if reason.code == sfs_sync::StatusCode::Unavailable)));
    // Failures are sticky until a restart: the next edit is refused before the engine.
    assert!(matches!(
        write(&driver, &lessons("lund"), "after", "x"),
        Err(why) if why.starts_with("storage")
    ));
    // After a restart, the store holds the stored edit and not the refused one.
    storage.restart();
    let reopened = Driver::open(
        engine(&city("lund")),
        storage.clone(),
        RecordingTransport::new(),
    )
    .unwrap();
    reopened.read(|engine| {
        let doc = engine.document(&lessons("lund")).unwrap();
        assert!(doc.get(ROOT, "kept").unwrap().is_some());
        assert!(doc.get(ROOT, "lost").unwrap().is_none());
    });
    write(&reopened, &lessons("lund"), "again", "after the restart").unwrap();
}

#[test]
fn a_failed_put_of_one_document_drops_the_whole_drain_and_what_is_queued_behind_it() {
    let storage = Arc::new(MemoryStorage::new());
    let driver = Driver::open(
        engine(&city("ystad")),
        storage.clone(),
        RecordingTransport::new(),
    )
    .unwrap();
    write(&driver, &lessons("ystad"), "first", "stored").unwrap();
    storage.fail_put_after(0);
    assert!(write(&driver, &lessons("ystad"), "second", "not stored").is_err());
    storage.restart();
    let (durable, _) = storage.durable_doc(&lessons("ystad")).unwrap().unwrap();
    assert!(durable.get(ROOT, "first").unwrap().is_some());
    assert!(durable.get(ROOT, "second").unwrap().is_none());
    // The engine went back to what is durable, and the next write stores it whole.
    write(&driver, &lessons("ystad"), "third", "stored").unwrap();
    let (durable, chunks) = storage.durable_doc(&lessons("ystad")).unwrap().unwrap();
    assert_eq!(chunks, 0, "after a failed write the next one is a snapshot");
    assert!(durable.get(ROOT, "second").unwrap().is_none());
    assert!(durable.get(ROOT, "third").unwrap().is_some());
}

#[test]
fn concurrent_writers_share_syncs_and_every_acknowledged_write_is_durable() {
    let storage = Arc::new(MemoryStorage::new());
    let driver = Arc::new(
        Driver::open(
            engine(&city("malmo")),
            storage.clone(),
            RecordingTransport::new(),
        )
        .unwrap(),
    );
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let driver = driver.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    write(&driver, &lessons("malmo"), &format!("w{w}-{i}"), "x").unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let (durable, _) = storage.durable_doc(&lessons("malmo")).unwrap().unwrap();
    for w in 0..8 {
        for i in 0..25 {
            assert!(durable.get(ROOT, format!("w{w}-{i}")).unwrap().is_some());
        }
    }
    assert!(
        storage.syncs() <= 200,
        "at most one sync per write: {}",
        storage.syncs()
    );
}

#[test]
fn a_frame_the_transport_refuses_closes_that_link_in_the_engine() {
    let storage = Arc::new(MemoryStorage::new());
    let driver = Driver::open(engine(&city("lund")), storage, RecordingTransport::new()).unwrap();
    let _hub = open_link(&driver, 3, RecordingTransport::take);
    driver.transport().refuse(3);
    write(&driver, &lessons("lund"), "k", "v").unwrap();
    let _ = driver.perform(|e| e.tick(100_000));
    driver.read(|engine| {
        assert!(
            engine.links().all(|(conn, _, _)| conn != 3),
            "the engine still holds the refused link"
        );
    });
    let released = driver.transport().take();
    assert!(released
        .iter()
        .any(|r| matches!(r, Released::Close(3, reason) if reason.code == sfs_sync::StatusCode::ResourceExhausted)));
}

#[test]
fn the_in_memory_store_drops_what_was_not_synced_at_a_restart() {
    let storage = MemoryStorage::new();
    let persist = |key: &str| {
        let mut doc = automerge::AutoCommit::new();
        doc.put(ROOT, key, "v").unwrap();
        sfs_sync::DocPersist {
            doc: lessons("lund"),
            kind: sfs_sync::PersistKind::Snapshot,
            bytes: doc.save(),
            heads: doc.get_heads(),
        }
    };
    storage.put_doc(&persist("synced")).unwrap();
    storage.sync().unwrap();
    storage.put_doc(&persist("unsynced")).unwrap();
    assert!(storage
        .load_doc(&lessons("lund"))
        .unwrap()
        .unwrap()
        .get(ROOT, "unsynced")
        .unwrap()
        .is_some());
    storage.restart();
    let doc = storage.load_doc(&lessons("lund")).unwrap().unwrap();
    assert!(doc.get(ROOT, "synced").unwrap().is_some());
    assert!(doc.get(ROOT, "unsynced").unwrap().is_none());
}

/// A store that, once gated, stops in its next `sync` until the test lets it go: the moment
/// between two slices of a large message, with the engine lock free.
struct GatedStorage {
    inner: Arc<MemoryStorage>,
    gated: std::sync::atomic::AtomicBool,
    entered: Mutex<std::sync::mpsc::Sender<()>>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Storage for GatedStorage {
    type Error = sfs_sync::MemoryError;

    fn check_writable(&self) -> Result<(), Self::Error> {
        self.inner.check_writable()
    }
    fn put_doc(&self, persist: &sfs_sync::DocPersist) -> Result<(), Self::Error> {
        self.inner.put_doc(persist)
    }
    fn replace_generation(&self, persist: &sfs_sync::DocPersist) -> Result<(), Self::Error> {
        self.inner.replace_generation(persist)
    }
    fn put_sync_state(
        &self,
        peer: &NodeId,
        doc: &ShareableDocId,
        state: &[u8],
    ) -> Result<(), Self::Error> {
        self.inner.put_sync_state(peer, doc, state)
    }
    fn remove_sync_states(&self, doc: &ShareableDocId) -> Result<(), Self::Error> {
        self.inner.remove_sync_states(doc)
    }
    fn sync(&self) -> Result<(), Self::Error> {
        let synced = self.inner.sync();
        if self.gated.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.entered.lock().unwrap().send(()).unwrap();
            let released = self
                .release
                .lock()
                .unwrap()
                .recv_timeout(std::time::Duration::from_secs(30));
            assert!(released.is_ok(), "the test let the store go on");
        }
        synced
    }
    fn load_doc(&self, doc: &ShareableDocId) -> Result<Option<automerge::Automerge>, Self::Error> {
        self.inner.load_doc(doc)
    }
    fn load_all(&self) -> Result<Vec<sfs_sync::LoadedDoc>, Self::Error> {
        self.inner.load_all()
    }
    fn sync_states_for(
        &self,
        peer: &NodeId,
    ) -> Result<Vec<(ShareableDocId, Vec<u8>)>, Self::Error> {
        self.inner.sync_states_for(peer)
    }
}

/// Lessons of `city` with long texts, written in `peer` (an engine with no link): 40 changes of
/// 2,000 operations each.
fn long_lessons(peer: &mut Engine, city: &str) {
    for i in 0..40 {
        let (_, _unsent) = peer
            .edit(
                &lessons(city),
                0,
                |tx| -> Result<(), automerge::AutomergeError> {
                    let text = tx.put_object(ROOT, format!("l{i}"), automerge::ObjType::Text)?;
                    tx.splice_text(&text, 0, 0, &"lärdom ".repeat(2_000 / 7))?;
                    Ok(())
                },
            )
            .unwrap();
    }
}

/// One sync message carrying every change of `doc` in `peer`.
fn message_with_every_change(peer: &Engine, doc: &ShareableDocId) -> Vec<u8> {
    let doc = peer.document(doc).unwrap();
    let mut heads = doc.get_heads();
    heads.sort();
    let changes: Vec<Vec<u8>> = doc
        .get_changes(&[])
        .iter()
        .map(|change| change.raw_bytes().to_vec())
        .collect();
    automerge::sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: changes.into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    }
    .encode()
}

#[test]
fn a_large_message_is_applied_in_slices_and_the_engine_is_free_between_them() {
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let memory = Arc::new(MemoryStorage::new());
    let storage = GatedStorage {
        inner: memory.clone(),
        gated: std::sync::atomic::AtomicBool::new(false),
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    };
    let config = EngineConfig {
        apply_slice_ops: 8_000,
        ..EngineConfig::default()
    };
    let hub_engine = Engine::new(hub(), sfs_sync::run_actor(&hub(), [1; 8]), config);
    let hub = Driver::open(hub_engine, storage, RecordingTransport::new()).unwrap();
    let mut helsingborg = engine(&city("helsingborg"));
    // The handshake, delivered by hand both ways.
    hub.perform(|e| e.connect(1, city("helsingborg"), Vec::new(), 0))
        .unwrap();
    let mut out = helsingborg.connect(1, self::hub(), Vec::new(), 0);
    for _ in 0..50 {
        for (_, frame) in out.sends.drain(..) {
            hub.receive(1, frame, 0, |_| {}).unwrap();
        }
        for released in hub.transport().take() {
            if let Released::Frame(_, frame) = released {
                out.extend(helsingborg.receive(1, frame, 0));
            }
        }
        if out.sends.is_empty() {
            break;
        }
    }
    long_lessons(&mut helsingborg, "helsingborg");
    let message = message_with_every_change(&helsingborg, &lessons("helsingborg"));
    let syncs_before = memory.syncs();
    let lessons_at_hub = || {
        hub.read(|engine| {
            engine
                .document(&lessons("helsingborg"))
                .map_or(0, |doc| doc.keys(ROOT).count())
        })
    };
    hub.storage()
        .gated
        .store(true, std::sync::atomic::Ordering::SeqCst);
    std::thread::scope(|scope| {
        let receiving = scope.spawn(|| {
            let frame = Frame::DocSync {
                doc: lessons("helsingborg"),
                generation: 0,
                message,
            };
            hub.receive(1, frame, 0, |_| {})
        });
        entered
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the first slice is stored");
        // The receiving thread waits in the store after its first slice: the engine is free,
        // and holds that slice only.
        let halfway = lessons_at_hub();
        release.send(()).unwrap();
        receiving.join().unwrap().unwrap();
        assert!(
            (1..40).contains(&halfway),
            "between two slices the engine was free and held part of the message \
             ({halfway} of 40 lessons)"
        );
    });
    assert_eq!(lessons_at_hub(), 40, "the whole message was applied");
    let slices_stored = memory.syncs() - syncs_before;
    assert!(
        slices_stored >= 10,
        "each slice was stored before the next: {slices_stored} syncs"
    );
    let durable = memory
        .durable_doc(&lessons("helsingborg"))
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(durable.keys(ROOT).count(), 40, "every slice is durable");
    // The link goes on: the hub answered the message once it was whole.
    let answered = hub
        .transport()
        .take()
        .into_iter()
        .any(|r| matches!(r, Released::Frame(1, Frame::DocSync { .. })));
    assert!(answered, "the hub answered the message on its link");
}

type MemoryDriver = Driver<Arc<MemoryStorage>, RecordingTransport>;

/// A city's driver over an in-memory store whose documents fall due for a snapshot after 8
/// chunks.
fn compacting_driver(name: &str) -> (Arc<MemoryStorage>, MemoryDriver) {
    let me = city(name);
    let engine = Engine::new(
        me.clone(),
        sfs_sync::run_actor(&me, [1; 8]),
        EngineConfig {
            compact_after_chunks: 8,
            ..EngineConfig::default()
        },
    );
    let storage = Arc::new(MemoryStorage::new());
    let driver = Driver::open(engine, storage.clone(), RecordingTransport::new()).unwrap();
    (storage, driver)
}

#[test]
fn a_snapshot_that_falls_due_is_stored_after_the_write_not_inside_it() {
    let (storage, driver) = compacting_driver("malmo");
    let doc = lessons("malmo");
    let mut snapshots_seen = 0;
    let mut chunks_before = 0;
    for i in 0..40 {
        let (puts, syncs) = (storage.puts(), storage.syncs());
        write(&driver, &doc, &format!("l{i}"), "a lesson").unwrap();
        // The write itself stores its chunk only.
        assert_eq!(storage.puts() - puts, 1, "write {i} stored one chunk");
        driver.compact_pending().unwrap();
        let (durable, chunks) = storage.durable_doc(&doc).unwrap().unwrap();
        assert!(durable.get(ROOT, format!("l{i}")).unwrap().is_some());
        assert!(chunks < 2 * 8, "{chunks} chunks beside the snapshot");
        if chunks < chunks_before {
            snapshots_seen += 1;
            // The write's own chunk, synced and released; then the snapshot, synced.
            assert_eq!(
                storage.puts() - puts,
                2,
                "write {i}: a chunk, then a snapshot"
            );
            assert!(durable.get(ROOT, format!("l{i}")).unwrap().is_some());
            assert_eq!(storage.syncs() - syncs, 2);
        }
        chunks_before = chunks;
    }
    assert!(
        snapshots_seen >= 3,
        "snapshots replaced the chunks {snapshots_seen} times"
    );
    // Every write was stored as a chunk: a snapshot only ever comes after one.
    let (durable, _) = storage.durable_doc(&doc).unwrap().unwrap();
    let expected = driver.read(|e| e.document(&doc).unwrap().get_heads());
    assert_eq!(durable.get_heads(), expected);
}

#[test]
fn without_compaction_calls_a_write_stores_the_snapshot_at_twice_the_bounds() {
    let (storage, driver) = compacting_driver("umea");
    let doc = lessons("umea");
    let mut most = 0;
    for i in 0..40 {
        write(&driver, &doc, &format!("l{i}"), "a lesson").unwrap();
        most = most.max(storage.durable_doc(&doc).unwrap().unwrap().1);
    }
    assert!(
        (8..16).contains(&most),
        "at most {most} chunks beside the snapshot"
    );
}

#[test]
fn a_snapshot_that_fails_to_store_sets_the_document_back_to_what_is_durable() {
    let (storage, driver) = compacting_driver("lund");
    let _hub = open_link(&driver, 3, RecordingTransport::take);
    let doc = lessons("lund");
    // Up to the write that makes a snapshot due: 8 chunks.
    for i in 0..7 {
        write(&driver, &doc, &format!("l{i}"), "kept").unwrap();
    }
    // The 8th write stores its chunk (one put, one sync) and is acknowledged; the snapshot
    // after it fails.
    storage.fail_put_after(1);
    write(
        &driver,
        &doc,
        "l7",
        "acknowledged before the snapshot failed",
    )
    .unwrap();
    assert!(!storage.has_failed());
    assert!(driver.compact_pending().is_err());
    assert!(storage.has_failed(), "the snapshot's put failed");
    let links_open = driver.read(|e| e.links().filter(|(_, _, open)| *open).count());
    assert_eq!(links_open, 0, "every link closes after a failed write");
    storage.restart();
    let (durable, _) = storage.durable_doc(&doc).unwrap().unwrap();
    for i in 0..8 {
        assert!(
            durable.get(ROOT, format!("l{i}")).unwrap().is_some(),
            "acknowledged write l{i} survives"
        );
    }
    // The engine holds what is durable, and goes on from there.
    write(&driver, &doc, "after", "the store came back").unwrap();
    let (durable, _) = storage.durable_doc(&doc).unwrap().unwrap();
    assert!(durable.get(ROOT, "after").unwrap().is_some());
    assert!(durable.get(ROOT, "l7").unwrap().is_some());
}

/// Writes until the snapshot of `doc` falls due, and begins it (the copy is taken).
fn write_until_a_snapshot_begins(
    driver: &MemoryDriver,
    doc: &ShareableDocId,
) -> (sfs_sync::SnapshotInProgress, usize) {
    for i in 0..40 {
        write(driver, doc, &format!("l{i}"), "before the copy").unwrap();
        if let Some(snapshot) = driver.begin_compaction() {
            assert_eq!(snapshot.doc(), doc);
            return (snapshot, i + 1);
        }
    }
    panic!("no snapshot fell due in 40 writes");
}

#[test]
fn writes_made_while_a_snapshot_is_saved_are_acknowledged_and_stored_with_it() {
    let (storage, driver) = compacting_driver("malmo");
    let doc = lessons("malmo");
    let (snapshot, before) = write_until_a_snapshot_begins(&driver, &doc);
    // Between the copy and the store, writes go on: each is stored as a chunk, synced and
    // acknowledged without waiting for the snapshot.
    for i in 0..5 {
        let (puts, syncs) = (storage.puts(), storage.syncs());
        write(
            &driver,
            &doc,
            &format!("during{i}"),
            "while the copy is saved",
        )
        .unwrap();
        assert_eq!(storage.puts() - puts, 1, "one chunk for write {i}");
        assert_eq!(storage.syncs() - syncs, 1, "synced before it returned");
    }
    let (_, chunks) = storage.durable_doc(&doc).unwrap().unwrap();
    assert_eq!(chunks, before + 5, "every write so far is a chunk");
    let (puts, syncs) = (storage.puts(), storage.syncs());
    driver.finish_compaction(snapshot).unwrap();
    assert_eq!(storage.puts() - puts, 1, "the snapshot, one put");
    assert_eq!(storage.syncs() - syncs, 1, "and one sync");
    // The snapshot replaced every chunk and holds the writes made after its copy too.
    storage.restart();
    let (durable, chunks) = storage.durable_doc(&doc).unwrap().unwrap();
    assert_eq!(chunks, 0, "nothing beside the snapshot");
    for key in (0..before)
        .map(|i| format!("l{i}"))
        .chain((0..5).map(|i| format!("during{i}")))
    {
        assert!(durable.get(ROOT, &key).unwrap().is_some(), "{key} survives");
    }
    let expected = driver.read(|e| e.document(&doc).unwrap().get_heads());
    assert_eq!(durable.get_heads(), expected);
    assert_eq!(storage.durable_heads(&doc), Some(expected));
    // The policy starts over from the snapshot: the next writes are chunks again.
    let puts = storage.puts();
    write(&driver, &doc, "after", "beside the snapshot").unwrap();
    assert_eq!(storage.puts() - puts, 1);
    assert_eq!(storage.durable_doc(&doc).unwrap().unwrap().1, 1);
}

#[test]
fn the_changes_kept_while_a_snapshot_was_saved_count_toward_the_next_one() {
    // Bounded by bytes only: chunks may reach half the snapshot.
    let me = city("malmo");
    let engine = Engine::new(
        me.clone(),
        sfs_sync::run_actor(&me, [1; 8]),
        EngineConfig {
            compact_after_chunks: 1_000,
            compact_min_bytes: 64,
            ..EngineConfig::default()
        },
    );
    let storage = Arc::new(MemoryStorage::new());
    let driver = Driver::open(engine, storage.clone(), RecordingTransport::new()).unwrap();
    let doc = lessons("malmo");
    let text = |i: usize| format!("lesson {i}: {}", "x".repeat(i % 7));
    for i in 0..60 {
        write(&driver, &doc, &format!("l{i}"), &text(i)).unwrap();
        driver.compact_pending().unwrap();
    }
    let (snapshot, _) = write_until_a_snapshot_begins(&driver, &doc);
    // While the copy is saved, writes go on as chunks (within twice the bound).
    let copied = storage.durable_bytes(&doc);
    let mut kept = 0;
    for i in 0..2 {
        write(&driver, &doc, &format!("during{i}"), &text(i)).unwrap();
        if storage.durable_doc(&doc).unwrap().unwrap().1 == 0 {
            panic!("write {i} during the copy stored the document whole");
        }
        kept = storage.durable_bytes(&doc) - copied;
    }
    driver.finish_compaction(snapshot).unwrap();
    let (_, chunks) = storage.durable_doc(&doc).unwrap().unwrap();
    assert_eq!(
        chunks, 0,
        "the snapshot was stored, the kept changes after it"
    );
    let saved = storage.durable_bytes(&doc) - kept;
    // The next write: its chunk and the kept changes together pass half the saved snapshot,
    // so a snapshot falls due (counting the kept changes as part of the snapshot, it would not).
    let before = storage.durable_bytes(&doc);
    // A lesson whose chunk lands between the two readings of the bound: past half the saved
    // snapshot with the kept changes, within half the snapshot and kept changes together.
    let target = (saved / 2).saturating_sub(kept / 4);
    let padding: String = (0..target.saturating_sub(104))
        .map(|k| char::from(b'a' + ((k * 7 + k / 26) % 26) as u8))
        .collect();
    write(&driver, &doc, "after", &format!("{} {padding}", text(1))).unwrap();
    let chunk = storage.durable_bytes(&doc) - before;
    assert!(
        kept + chunk > saved / 2,
        "kept {kept} + {chunk} against {saved}"
    );
    assert!(
        chunk <= (saved + kept) / 2,
        "the chunk alone stays within the bound"
    );
    let next = driver.begin_compaction();
    assert!(
        next.is_some(),
        "the kept changes count as chunks beside the snapshot"
    );
    driver.finish_compaction(next.unwrap()).unwrap();
    let saved = driver
        .read(|e| e.document(&doc).unwrap().clone())
        .save()
        .len();
    assert_eq!(storage.durable_bytes(&doc), saved, "the new snapshot alone");
}

#[test]
fn a_snapshot_whose_document_was_stored_whole_meanwhile_stores_nothing() {
    let (storage, driver) = compacting_driver("lund");
    let doc = lessons("lund");
    let (snapshot, before) = write_until_a_snapshot_begins(&driver, &doc);
    // Writes go on while the copy waits, until the chunks reach twice the bounds and a
    // write stores the whole document itself.
    let mut stored_whole = false;
    for i in 0..20 {
        write(
            &driver,
            &doc,
            &format!("during{i}"),
            "the copy is not saved",
        )
        .unwrap();
        if storage.durable_doc(&doc).unwrap().unwrap().1 == 0 {
            stored_whole = true;
            break;
        }
    }
    assert!(stored_whole, "a write stored the document whole");
    let puts = storage.puts();
    driver.finish_compaction(snapshot).unwrap();
    assert_eq!(storage.puts(), puts, "the older copy is not stored");
    storage.restart();
    let (durable, _) = storage.durable_doc(&doc).unwrap().unwrap();
    let expected = driver.read(|e| e.document(&doc).unwrap().get_heads());
    assert_eq!(durable.get_heads(), expected);
    assert!(durable
        .get(ROOT, format!("l{}", before - 1))
        .unwrap()
        .is_some());
}

/// A driver of Lund's over in-memory storage.
fn lund_driver() -> MemoryDriver {
    Driver::open(
        engine(&city("lund")),
        Arc::new(MemoryStorage::new()),
        RecordingTransport::new(),
    )
    .unwrap()
}

/// A read on a thread of its own that holds the engine lock (a read does not take the calls'
/// turn) from when this returns until the sender is used.
fn a_long_read(
    driver: &Arc<MemoryDriver>,
) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Sender<()>) {
    let (holding_tx, holding_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let long_read = {
        let driver = driver.clone();
        std::thread::spawn(move || {
            driver.read(|_| {
                holding_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
        })
    };
    holding_rx.recv().unwrap();
    (long_read, release_tx)
}

/// `n` engine calls on threads of their own, each writing "call" into `order` when it runs.
fn calls_recorded_in(
    driver: &Arc<MemoryDriver>,
    order: &Arc<Mutex<Vec<&'static str>>>,
    n: usize,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (driver, order) = (driver.clone(), order.clone());
            std::thread::spawn(move || {
                driver
                    .perform(|_| {
                        order.lock().unwrap().push("call");
                        sfs_sync::Output::default()
                    })
                    .unwrap()
            })
        })
        .collect()
}

#[test]
fn a_read_waits_for_the_engine_call_at_work_not_for_the_calls_queued_behind_it() {
    let mut driver = lund_driver();
    // Long enough that the order below cannot come from timing.
    driver.set_reads_first_for(std::time::Duration::from_secs(30));
    let driver = Arc::new(driver);
    let order = Arc::new(Mutex::new(Vec::new()));
    // An engine call at work: the lock is held.
    let at_work = driver.lock_engine();
    let reader = {
        let (driver, order) = (driver.clone(), order.clone());
        std::thread::spawn(move || driver.read(|_| order.lock().unwrap().push("read")))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while driver.reads_waiting() == 0 {
        assert!(std::time::Instant::now() < deadline, "the read never came");
        std::thread::yield_now();
    }
    // Engine calls arrive while the read waits.
    let callers = calls_recorded_in(&driver, &order, 4);
    // The call at work ends and its thread makes another at once, while the read is only
    // being woken: it lets the read go first too.
    drop(at_work);
    driver
        .perform(|_| {
            order.lock().unwrap().push("call");
            sfs_sync::Output::default()
        })
        .unwrap();
    reader.join().unwrap();
    for caller in callers {
        caller.join().unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 6);
    assert_eq!(order[0], "read", "the read went first: {order:?}");
    assert_eq!(driver.reads_waiting(), 0);
}

#[test]
fn a_read_goes_first_even_when_a_call_at_the_lock_has_waited_longer_than_reads_go_first() {
    // Which waiter the lock wakes first is the system's choice: three rounds, so that a read
    // that does not go first is seen.
    for round in 0..3 {
        let order = read_behind_a_call_that_waited_long();
        assert_eq!(
            order,
            ["read", "call"],
            "round {round}: the read went first"
        );
    }
}

/// An engine call waits at the engine lock (held by a long read) for twice as long as calls
/// let reads go first, then a read comes; the order in which they got the lock.
fn read_behind_a_call_that_waited_long() -> Vec<&'static str> {
    let mut driver = lund_driver();
    // How long a call lets reads go first: long enough that the handing over below cannot run
    // out of it, short enough to wait out before the read comes.
    let patience = std::time::Duration::from_millis(300);
    driver.set_reads_first_for(patience);
    let driver = Arc::new(driver);
    let order = Arc::new(Mutex::new(Vec::new()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // A long read holds the engine lock.
    let (long_read, release_tx) = a_long_read(&driver);
    let callers = calls_recorded_in(&driver, &order, 1);
    while driver.calls_at_the_lock() < 1 {
        assert!(std::time::Instant::now() < deadline, "the call never came");
        std::thread::yield_now();
    }
    // The call has waited at the lock longer than it lets reads go first when the read comes.
    let queued = std::time::Instant::now();
    while queued.elapsed() <= 2 * patience {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let reader = {
        let (driver, order) = (driver.clone(), order.clone());
        std::thread::spawn(move || driver.read(|_| order.lock().unwrap().push("read")))
    };
    while driver.reads_waiting() == 0 {
        assert!(std::time::Instant::now() < deadline, "the read never came");
        std::thread::yield_now();
    }
    release_tx.send(()).unwrap();
    long_read.join().unwrap();
    reader.join().unwrap();
    for caller in callers {
        caller.join().unwrap();
    }
    assert_eq!((driver.reads_waiting(), driver.calls_waiting()), (0, 0));
    let order = order.lock().unwrap().clone();
    order
}

#[test]
fn engine_calls_queue_for_their_turn_and_one_at_a_time_waits_at_the_engine_lock() {
    let driver = Arc::new(lund_driver());
    let order = Arc::new(Mutex::new(Vec::new()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // A read holds the engine lock; eight calls come.
    let (long_read, release_tx) = a_long_read(&driver);
    let callers = calls_recorded_in(&driver, &order, 8);
    while driver.calls_waiting() < 8 {
        assert!(std::time::Instant::now() < deadline, "the calls never came");
        std::thread::yield_now();
    }
    // However long they wait, one of them is at the lock: without the turns every one was,
    // and a read that came next waited while each in turn was woken and stepped aside.
    for _ in 0..20 {
        assert_eq!(driver.calls_at_the_lock(), 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    release_tx.send(()).unwrap();
    long_read.join().unwrap();
    for caller in callers {
        caller.join().unwrap();
    }
    assert_eq!(order.lock().unwrap().len(), 8);
    assert_eq!((driver.calls_waiting(), driver.calls_at_the_lock()), (0, 0));
}
