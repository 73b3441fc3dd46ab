//! The cost of making one write durable (BENCHMARKS.md, "storage"): the node's store (its
//! journal in front of sled) against sled flushed and its data file fsynced per write, the
//! store's way before the journal, and against the disk's own limit: a small write and an
//! `fdatasync` of a file of its own. In process, no node; temporary directories on the same
//! disk as the nodes' stores.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use sfs_node::storage::seal::MasterKey;
use sfs_node::storage::store::Store;
use sfs_sync::{DocPersist, PersistKind, ShareableDocId};

/// Median and 99th percentile of one durable write, each way.
pub struct Measured {
    pub store: (Duration, Duration),
    pub sled_fsync: (Duration, Duration),
    pub disk: (Duration, Duration),
}

/// A change-sized value (about 1 KB), different for every `i` (the store names values by
/// their content).
fn value(i: usize) -> Vec<u8> {
    let mut bytes = format!("change {i} ").into_bytes();
    bytes.resize(1024, b'x');
    bytes
}

fn median_and_p99(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    let at = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

/// Times `writes` durable writes of about 1 KB, one after the other, each way.
pub fn measure(writes: usize) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), Duration::from_secs(5), MasterKey::generate())?;
    let doc = ShareableDocId::parse("shared/lessons/lund")?;
    let mut store_times = Vec::with_capacity(writes);
    for i in 0..writes {
        let persist = DocPersist {
            doc: doc.clone(),
            kind: PersistKind::Incremental,
            bytes: value(i),
            heads: Vec::new(),
        };
        let started = Instant::now();
        store.shared.insert(&persist)?;
        store.shared.sync()?;
        store_times.push(started.elapsed());
    }
    drop(store);

    let sled_dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(sled_dir.path().join("store"))
        .mode(sled::Mode::LowSpace)
        .open()?;
    let data_file = File::open(sled_dir.path().join("store").join("db"))?;
    let tree = db.open_tree("shared")?;
    let mut sled_times = Vec::with_capacity(writes);
    for i in 0..writes {
        let started = Instant::now();
        tree.insert(format!("lund/change/{i}"), value(i))?;
        db.flush()?;
        data_file.sync_data()?;
        sled_times.push(started.elapsed());
    }
    drop((tree, db));

    let disk_dir = tempfile::tempdir()?;
    let file = File::create(disk_dir.path().join("log"))?;
    file.write_all_at(&vec![0u8; writes * 1024 + 4096], 0)?;
    file.sync_all()?;
    let mut disk_times = Vec::with_capacity(writes);
    for i in 0..writes {
        let started = Instant::now();
        file.write_all_at(&value(i), (i * 1024) as u64)?;
        file.sync_data()?;
        disk_times.push(started.elapsed());
    }
    Ok(Measured {
        store: median_and_p99(store_times),
        sled_fsync: median_and_p99(sled_times),
        disk: median_and_p99(disk_times),
    })
}

/// `files` small writes (600 bytes, about a release's change), each to a file of its own and
/// made durable with `fdatasync`, spread over `threads` threads: what `files` cities storing
/// one change each cost this disk at the least, when they share it. The median of three rounds.
pub fn durable_writes_to_files(files: usize, threads: usize) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let opened = (0..files)
        .map(|i| File::create(dir.path().join(format!("city-{i}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let opened = &opened;
    let mut rounds = Vec::new();
    for round in 0..3u8 {
        let started = Instant::now();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || -> std::io::Result<()> {
                        for file in opened.iter().skip(t).step_by(threads) {
                            file.write_all_at(&[round; 600], 0)?;
                            file.sync_data()?;
                        }
                        Ok(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().expect("a writer thread"))
        })?;
        rounds.push(started.elapsed());
    }
    rounds.sort();
    Ok(rounds[1])
}
