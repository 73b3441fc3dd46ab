//! Acknowledged means durable (DESIGN.md promise 3), against faults a SIGKILL cannot show: a
//! failing fsync (injected) and power loss (LazyFS, see `powerloss` below).

mod common;
mod powerloss;

use std::sync::Arc;
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{ReadDoc, ROOT};
use sfs_node::federation::sync::{EditFailure, SyncHandle};
use sfs_node::storage::seal::MasterKey;
use sfs_node::storage::store::Store;
use sfs_sync::{EngineConfig, NodeId, ShareableDocId};

fn open(
    dir: &std::path::Path,
    master: &MasterKey,
) -> (SyncHandle, Arc<sfs_node::storage::store::Durability>) {
    let store = Store::open(dir, Duration::from_secs(5), master.clone()).unwrap();
    let durability = store.durability.clone();
    let sync = SyncHandle::open(
        NodeId::city("lund").unwrap(),
        store.shared,
        store.sync_states,
        EngineConfig::default(),
        None,
        Arc::new(sfs_node::metrics::Metrics::new()),
    )
    .unwrap();
    (sync, durability)
}

fn has(sync: &SyncHandle, doc: &ShareableDocId, key: &str) -> bool {
    sync.read(|engine| {
        engine
            .document(doc)
            .is_some_and(|d| d.get(ROOT, key).unwrap().is_some())
    })
}

#[test]
fn an_edit_whose_fsync_fails_is_forgotten_and_announced_to_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let lessons = ShareableDocId::lessons("lund").unwrap();
    let progress = ShareableDocId::parse("shared/progress/lund").unwrap();
    {
        let (sync, durability) = open(dir.path(), &master);
        let mut changes = sync.subscribe_changes();
        sync.edit(&lessons, |tx| tx.put(ROOT, "kept", "yes"))
            .unwrap();
        assert_eq!(
            changes.try_recv().unwrap(),
            lessons,
            "a durable edit is announced"
        );

        // The fsync after the next edit fails: the API is refused, the change is not readable,
        // nothing announces it (release tracking and national statistics listen there).
        durability.inject_sync_failures(1);
        let err = sync
            .edit(&lessons, |tx| tx.put(ROOT, "lost", "no"))
            .unwrap_err();
        assert!(matches!(err, EditFailure::Storage(_)), "{err}");
        assert!(
            !has(&sync, &lessons, "lost"),
            "the refused change is forgotten"
        );
        assert!(has(&sync, &lessons, "kept"), "what was durable stays");
        assert!(
            changes.try_recv().is_err(),
            "nothing announced the refused change"
        );

        // The store takes no write after a failed fsync (a second fsync could succeed without
        // the lost pages): a later edit, also of a document that did not exist, is refused
        // before the engine makes it, and the refused change is not brought back from sled.
        let err = sync
            .edit(&progress, |tx| tx.put(ROOT, "new", "no"))
            .unwrap_err();
        assert!(err.to_string().contains("restart the node"), "{err}");
        assert!(sync.read(|engine| engine.document(&progress).is_none()));
        let err = sync
            .edit(&lessons, |tx| tx.put(ROOT, "later", "no"))
            .unwrap_err();
        assert!(matches!(err, EditFailure::Storage(_)), "{err}");
        assert!(!has(&sync, &lessons, "lost") && !has(&sync, &lessons, "later"));
        assert!(changes.try_recv().is_err());
    }
    // After a restart, the durable edit is there and writes work again.
    let (sync, _) = open(dir.path(), &master);
    assert!(has(&sync, &lessons, "kept"));
    sync.edit(&lessons, |tx| tx.put(ROOT, "after", "yes"))
        .unwrap();
    assert!(has(&sync, &lessons, "after"));
}

#[test]
fn a_failed_fsync_of_the_first_edit_of_a_document_leaves_no_document() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let lessons = ShareableDocId::lessons("lund").unwrap();
    let (sync, durability) = open(dir.path(), &master);
    let mut changes = sync.subscribe_changes();
    durability.inject_sync_failures(1);
    assert!(sync.edit(&lessons, |tx| tx.put(ROOT, "first", 1)).is_err());
    assert!(sync.read(|engine| engine.document(&lessons).is_none()));
    assert!(changes.try_recv().is_err());
}
