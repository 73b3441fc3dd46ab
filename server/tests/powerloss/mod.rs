//! Power loss, simulated with LazyFS: a FUSE file system that keeps every write in its own cache
//! until the writer fsyncs it, and on `clear-cache` throws away whatever was not fsynced. A
//! SIGKILL leaves the kernel's page cache intact, so only this shows a missing fsync.
//!
//! Each cycle: the real `sfs-node` runs with its data directory, at-rest key, certificates and
//! tokens on the mount (free-space reserve 0: LazyFS reports no free space), clients write and
//! record what was acknowledged, the node is killed with SIGKILL, the unsynced data is dropped,
//! and the node starts again: it must start, and everything acknowledged must be there.
//!
//! LazyFS comes from `LAZYFS_DIR` (default: `shared/tools/lazyfs` beside the checkout) and
//! `LAZYFS_BIN` (default: `target/lazyfs-build/bin/lazyfs`, where `.ci/run` builds it). Without
//! them (or without /dev/fuse and root) the tests print SKIPPED and pass, except in CI (`CI`
//! set), where they fail. `SFS_POWERLOSS_CYCLES` sets the number of cycles of each test (the long
//! mode).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sfs_client::v1 as pb;

use crate::common::{sfs_node, Process};

/// LazyFS, ready to mount.
struct LazyFs {
    ctl: PathBuf,
    bin: PathBuf,
}

/// Finds LazyFS; `None` (after a loud SKIPPED line) when it is not there, a panic in CI.
fn lazyfs(test: &str) -> Option<LazyFs> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("LAZYFS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("../shared/tools/lazyfs"));
    let bin = std::env::var_os("LAZYFS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/lazyfs-build/bin/lazyfs"));
    let ctl = dir.join("lazyfs-ctl");
    let missing = if !ctl.exists() {
        Some(format!("{} not found (set LAZYFS_DIR)", ctl.display()))
    } else if !bin.exists() {
        Some(format!(
            "{} not found (build it: LAZYFS_BIN=$(bash {}/build.sh \"$PWD/target/lazyfs-build\" | tail -n1))",
            bin.display(),
            dir.display()
        ))
    } else if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing".to_string())
    } else {
        None
    };
    match missing {
        None => Some(LazyFs { ctl, bin }),
        Some(why) => {
            skip(test, &why);
            None
        }
    }
}

fn skip(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: LazyFS is needed in CI: {why}");
    }
    eprintln!("SKIPPED {test}: LazyFS is not available: {why}");
}

/// A LazyFS mount in a temporary directory; unmounted on drop.
struct Mount {
    lazy: LazyFs,
    mnt: PathBuf,
    _base: tempfile::TempDir,
}

impl Mount {
    fn new(test: &str) -> Option<Mount> {
        let lazy = lazyfs(test)?;
        let base = tempfile::tempdir().unwrap();
        let mnt = base.path().join("mnt");
        let root = base.path().join("root");
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        let mount = Mount {
            lazy,
            mnt,
            _base: base,
        };
        let out = mount.ctl(&[
            "mount",
            mount.mnt.to_str().unwrap(),
            root.to_str().unwrap(),
            "--cache-size",
            "128mb",
        ]);
        if let Err(why) = out {
            skip(test, &format!("mounting failed: {why}"));
            return None;
        }
        Some(mount)
    }

    fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("bash")
            .arg(&self.lazy.ctl)
            .args(args)
            .env("LAZYFS_BIN", &self.lazy.bin)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// The power fails: everything not fsynced is gone. Every process writing here must be
    /// gone first.
    fn power_cut(&self) {
        self.ctl(&["clear-cache", self.mnt.to_str().unwrap()])
            .expect("clear-cache");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(err) = self.ctl(&["umount", self.mnt.to_str().unwrap()]) {
            eprintln!("unmounting {} failed: {err}", self.mnt.display());
        }
    }
}

/// How many cycles to run: `normal`, or `SFS_POWERLOSS_CYCLES` (the long mode).
fn cycles(normal: usize) -> usize {
    std::env::var("SFS_POWERLOSS_CYCLES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map(|n| n.max(1))
        .unwrap_or(normal)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Random letters: text that barely compresses (so lessons documents grow past sled's blob
/// threshold) and that the privacy guard has no reason to refuse.
fn letters(rng: &mut impl Rng, chars: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..chars)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// A lesson of about 1.2 KB saved, most of it in plain strings (a title and 20 tags) rather
/// than text, which Automerge keeps as one operation per character and a debug build loads
/// slowly.
fn lesson(rng: &mut impl Rng, id: &str) -> (String, String, Vec<String>) {
    let title = format!("{id} {}", letters(rng, 150));
    let body = format!("{} {}", letters(rng, 8), letters(rng, 8));
    let tags = (0..20).map(|_| letters(rng, 50)).collect();
    (title, body, tags)
}

/// A CA and the certificates of `nodes` (`(name, role)`) in `pki`, made by the real binary.
fn pki(pki: &Path, nodes: &[(&str, &str)]) {
    let dir = pki.to_str().unwrap();
    sfs_node(&["pki", "init", "--dir", dir]);
    for (name, role) in nodes {
        sfs_node(&["pki", "issue", "--dir", dir, "--node", name, "--role", role]);
    }
}

/// A node whose files all lie on the mount (its configuration file beside the mount: the test
/// writes it, not the node).
struct Node {
    config: PathBuf,
    data: PathBuf,
    token: String,
    ca: String,
}

impl Node {
    /// Prepares `name` (`role`), with data directory `data` and key file `key` on the mount
    /// (`pki` made there before). `federation` is the hub's listen address or a city's hub URL.
    fn prepare(mount: &Mount, name: &str, role: &str, data: &Path, federation: &str) -> Node {
        let data = data.to_path_buf();
        let key = data.with_extension("key");
        // `token create` takes only a node's data directory, or a new empty one.
        std::fs::create_dir_all(&data).expect("create the data directory");
        let token = sfs_node(&[
            "token",
            "create",
            "--data-dir",
            data.to_str().unwrap(),
            "--role",
            "admin",
        ])
        .trim()
        .to_string();
        let pki = mount.path("pki");
        let config = mount.mnt.parent().unwrap().join(format!(
            "{}.toml",
            data.file_name().unwrap().to_str().unwrap()
        ));
        std::fs::write(
            &config,
            format!(
                r#"id = "{name}"
role = "{role}"
data_dir = "{data}"
[api]
listen = "127.0.0.1:0"
[federation]
{federation}
[tls]
ca = "{pki}/ca.crt"
cert = "{pki}/nodes/{role}-{name}.crt"
key = "{pki}/nodes/{role}-{name}.key"
[store]
min_free_bytes = 0
key_file = "{key}"
"#,
                data = data.display(),
                pki = pki.display(),
                key = key.display(),
            ),
        )
        .unwrap();
        let ca = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
        Node {
            config,
            data,
            token,
            ca,
        }
    }

    /// Starts the node; returns it and its API endpoint once it is ready.
    fn start(&self) -> (Process, String) {
        let mut node = Process::spawn(&["run", "--config", self.config.to_str().unwrap()]);
        let api = node
            .wait_for_line("ready")
            .split_whitespace()
            .nth(3)
            .unwrap()
            .to_string();
        (node, api)
    }

    async fn client(&self, api: &str) -> sfs_client::Client {
        sfs_client::Client::connect(api, &self.token, &self.ca)
            .await
            .unwrap()
    }
}

/// Stores `city`'s lessons document with `bytes` of random letters beside the lessons (one
/// operation: quick to load in a debug build), so that every snapshot of it, and every page of
/// sled's tree holding one unsplit, is far past sled's blob threshold (131,052 bytes).
fn pad_lessons(node: &Node, city: &str, bytes: usize) {
    use automerge::transaction::Transactable;
    let key = node.data.with_extension("key");
    let (master, _) = sfs_node::storage::seal::MasterKey::for_data_dir(&key, &node.data).unwrap();
    let store =
        sfs_node::storage::store::Store::open(&node.data, Duration::from_secs(5), master).unwrap();
    // Written under the city's own actor, as the node would: the hub takes a city's changes
    // only from the city's actors.
    let mut doc = automerge::Automerge::new();
    doc.set_actor(sfs_node::federation::sync::actor_for(
        &sfs_sync::NodeId::city(city).unwrap(),
    ));
    let padding = letters(&mut rand::thread_rng(), bytes);
    doc.transact(|tx| tx.put(automerge::ROOT, "padding", padding.as_str()))
        .unwrap();
    store
        .shared
        .persist(&sfs_sync::DocPersist {
            doc: sfs_sync::ShareableDocId::lessons(city).unwrap(),
            kind: sfs_sync::PersistKind::Snapshot,
            bytes: doc.save(),
            heads: doc.get_heads(),
        })
        .unwrap();
}

/// Opens the store as the node would (the node must be stopped) and checks that the padding
/// [`pad_lessons`] stored is still there: sled acknowledged it like any write.
fn check_padding(node: &Node, city: &str, bytes: usize, after: &str) {
    use automerge::ReadDoc;
    let key = node.data.with_extension("key");
    let master = sfs_node::storage::seal::MasterKey::load(&key).unwrap();
    let store = sfs_node::storage::store::Store::open(&node.data, Duration::from_secs(5), master)
        .unwrap_or_else(|err| panic!("{after}: the store does not open: {err}"));
    let doc = store
        .shared
        .load_one(&sfs_sync::ShareableDocId::lessons(city).unwrap())
        .unwrap_or_else(|err| panic!("{after}: the lessons document does not load: {err}"))
        .unwrap_or_else(|| panic!("{after}: the lessons document is gone"));
    let padding = doc.get(automerge::ROOT, "padding").unwrap();
    let len = padding.and_then(|(v, _)| v.as_str().map(str::len));
    assert_eq!(
        len,
        Some(bytes),
        "{after}: the large value stored durably is lost"
    );
}

/// SIGKILL, and wait until the process is gone.
fn kill(node: &mut Process) {
    let _ = node.child.kill();
    let _ = node.child.wait();
}

/// The titles of every lesson of `city` at the node, checking that none appears twice.
async fn titles(client: &mut sfs_client::Client, city: &str) -> BTreeSet<String> {
    let lessons = client
        .list_lessons(&format!("cities/{city}"))
        .await
        .unwrap();
    let titles: BTreeSet<String> = lessons.iter().map(|l| l.title.clone()).collect();
    assert_eq!(titles.len(), lessons.len(), "a lesson appears twice");
    titles
}

/// How many lessons of `city` the node has (one small page read).
async fn count(client: &mut sfs_client::Client, city: &str) -> i32 {
    client
        .list_lessons_page(&format!("cities/{city}"), 1, "")
        .await
        .unwrap()
        .total_size
}

/// Clients that write lessons as fast as they are acknowledged until the node dies, each
/// recording the titles acknowledged.
async fn write_until_killed(
    clients: Vec<sfs_client::Client>,
    prefix: &str,
    acknowledged: Arc<Mutex<BTreeSet<String>>>,
    first_ack: Arc<tokio::sync::Notify>,
) -> usize {
    let mut writers = Vec::new();
    for (w, mut client) in clients.into_iter().enumerate() {
        let acknowledged = acknowledged.clone();
        let first_ack = first_ack.clone();
        let prefix = prefix.to_string();
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::from_entropy();
            let mut acked = 0;
            for i in 0.. {
                let (title, body, tags) = lesson(&mut rng, &format!("{prefix}-w{w}-{i}"));
                match client.create_lesson(&title, &body, tags).await {
                    Ok(_) => {
                        acknowledged.lock().unwrap().insert(title);
                        acked += 1;
                        first_ack.notify_one();
                    }
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    let mut total = 0;
    for writer in writers {
        total += writer.await.unwrap();
    }
    total
}

#[test]
fn a_city_under_concurrent_writers_loses_no_acknowledged_lesson_at_a_power_cut() {
    const TEST: &str =
        "a_city_under_concurrent_writers_loses_no_acknowledged_lesson_at_a_power_cut";
    let Some(mount) = Mount::new(TEST) else {
        return;
    };
    let cycles = cycles(64);
    // A fresh data directory every so many cycles keeps start-up quick; the lessons
    // document still grows far past sled's blob threshold (131,052 bytes) in each.
    const CYCLES_PER_DIRECTORY: usize = 30;
    // Saved, about 145 KB: past the threshold, and quick to load.
    const PADDING: usize = 200_000;
    pki(&mount.path("pki"), &[("lund", "city")]);
    let runtime = runtime();
    let mut rng = rand::thread_rng();
    let started = Instant::now();
    let mut writes = 0;
    let mut node_files = None;
    let mut acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    for cycle in 0..cycles {
        if cycle % CYCLES_PER_DIRECTORY == 0 {
            node_files = Some(Node::prepare(
                &mount,
                "lund",
                "city",
                &mount.path(&format!("data{}", cycle / CYCLES_PER_DIRECTORY)),
                r#"hub_url = "https://127.0.0.1:9"
max_backoff_ms = 60000"#,
            ));
            acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
            pad_lessons(node_files.as_ref().unwrap(), "lund", PADDING);
            // The certificates, keys and token file were written just now: a power cut keeps
            // them (a node whose certificates a cut had emptied refused to start).
            mount.power_cut();
        }
        let files = node_files.as_ref().unwrap();
        let t0 = Instant::now();
        let (mut node, api) = files.start();
        if std::env::var_os("SFS_POWERLOSS_TRACE").is_some() {
            eprintln!("cycle {cycle}: start {:?}", t0.elapsed());
        }
        let kill_after = Duration::from_millis(rng.gen_range(50..400));
        writes += runtime.block_on(async {
            let mut client = files.client(&api).await;
            let stored = titles(&mut client, "lund").await;
            let expected = acknowledged.lock().unwrap().clone();
            let lost: Vec<_> = expected
                .difference(&stored)
                .map(|t| t.split(' ').next().unwrap_or_default())
                .collect();
            assert!(
                lost.is_empty(),
                "start {cycle} (after a power cut): {} acknowledged lessons lost, e.g. {:?}",
                lost.len(),
                lost.iter().take(5).collect::<Vec<_>>()
            );
            let mut clients = vec![client];
            for _ in 0..2 {
                clients.push(files.client(&api).await);
            }
            let first_ack = Arc::new(tokio::sync::Notify::new());
            let pid = node.child.id();
            let killer = {
                let first_ack = first_ack.clone();
                tokio::spawn(async move {
                    // Bounded: writers that get nothing in are killed all the same.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(30), first_ack.notified()).await;
                    tokio::time::sleep(kill_after).await;
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                })
            };
            let n = write_until_killed(
                clients,
                &format!("c{cycle}"),
                acknowledged.clone(),
                first_ack,
            )
            .await;
            killer.await.unwrap();
            n
        });
        kill(&mut node);
        let t1 = Instant::now();
        mount.power_cut();
        if cycle % 5 == 0 {
            check_padding(files, "lund", PADDING, &format!("after power cut {cycle}"));
        }
        if std::env::var_os("SFS_POWERLOSS_TRACE").is_some() {
            eprintln!(
                "cycle {cycle}: whole {:?}, cut {:?}",
                t0.elapsed(),
                t1.elapsed()
            );
        }
    }
    // The last cut, checked.
    let files = node_files.as_ref().unwrap();
    let (mut node, api) = files.start();
    runtime.block_on(async {
        let mut client = files.client(&api).await;
        let stored = titles(&mut client, "lund").await;
        assert!(acknowledged.lock().unwrap().is_subset(&stored));
    });
    kill(&mut node);
    let blobs = std::fs::read_dir(files.data.join("store/blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "sled wrote blob files");
    eprintln!(
        "{cycles} power cuts, {writes} acknowledged lessons from 3 concurrent writers, none lost, in {:.1?}",
        started.elapsed()
    );
    assert!(writes > cycles, "the writers got writes in ({writes})");
}

#[test]
fn an_erasure_or_a_backup_acknowledged_just_before_a_power_cut_is_kept() {
    const TEST: &str = "an_erasure_or_a_backup_acknowledged_just_before_a_power_cut_is_kept";
    let Some(mount) = Mount::new(TEST) else {
        return;
    };
    let cycles = cycles(16);
    pki(&mount.path("pki"), &[("lund", "city")]);
    let files = Node::prepare(
        &mount,
        "lund",
        "city",
        &mount.path("data"),
        r#"hub_url = "https://127.0.0.1:9"
max_backoff_ms = 60000"#,
    );
    let key = files.data.with_extension("key");
    let runtime = runtime();
    let mut rng = rand::thread_rng();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    let mut erased: Vec<String> = Vec::new();
    let mut lessons: BTreeSet<String> = BTreeSet::new();
    let mut organisation = String::new();
    let (mut erasures, mut backups) = (0, 0);
    for cycle in 0..cycles {
        let (mut node, api) = files.start();
        let backup = mount.path(&format!("backup-{cycle}.pb"));
        runtime.block_on(async {
            let mut client = files.client(&api).await;
            // Everything acknowledged before the last cut is there; what was erased is not.
            let contacts: BTreeSet<String> = client
                .list_contacts()
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.full_name)
                .collect();
            assert!(
                kept.is_subset(&contacts),
                "start {cycle}: a kept contact is lost"
            );
            for name in &erased {
                assert!(
                    !contacts.contains(name),
                    "start {cycle}: erased {name} is back"
                );
            }
            assert!(lessons.is_subset(&titles(&mut client, "lund").await));
            if organisation.is_empty() {
                organisation = client
                    .create_organisation("Hamnens stödcenter", "civil_society")
                    .await
                    .unwrap()
                    .name;
            }
            let contact = |full_name: String| pb::Contact {
                full_name,
                organisation: organisation.clone(),
                role: "outreach".into(),
                ..Default::default()
            };
            let keep = format!("Kept Person {}", letters(&mut rng, 8));
            client.create_contact(contact(keep.clone())).await.unwrap();
            kept.insert(keep);
            if cycle % 2 == 0 {
                // An erasure (the document rewritten under a fresh key, the old key destroyed
                // in the keyring file), acknowledged, then the cut at once.
                let doomed = format!("Erased Person {}", letters(&mut rng, 12));
                let created = client
                    .create_contact(contact(doomed.clone()))
                    .await
                    .unwrap();
                client
                    .register
                    .erase_contact(pb::EraseRequest { name: created.name })
                    .await
                    .unwrap();
                erased.push(doomed);
                erasures += 1;
            } else {
                // A backup written by `sfs-node backup`, then the cut at once.
                for _ in 0..3 {
                    let (title, body, tags) = lesson(&mut rng, &format!("b{cycle}"));
                    let title = format!("{title} {}", lessons.len());
                    client.create_lesson(&title, &body, tags).await.unwrap();
                    lessons.insert(title);
                }
                let ca = mount.mnt.parent().unwrap().join("ca.crt");
                std::fs::write(&ca, &files.ca).unwrap();
                sfs_node(&[
                    "backup",
                    "--endpoint",
                    &api,
                    "--token",
                    &files.token,
                    "--ca",
                    ca.to_str().unwrap(),
                    "--out",
                    backup.to_str().unwrap(),
                ]);
                backups += 1;
            }
        });
        kill(&mut node);
        mount.power_cut();
        // The keyring rewrite survived: not even the at-rest key reads an erased name.
        let master = sfs_node::storage::seal::MasterKey::load(&key).unwrap();
        let readable = sfs_node::storage::store::readable_with_key(&files.data, &master).unwrap();
        for name in &erased {
            assert!(
                !readable.windows(name.len()).any(|w| w == name.as_bytes()),
                "cut {cycle}: erased {name} is readable with the key"
            );
        }
        if backup.exists() {
            // The backup file is complete and restores.
            let restored = mount.path(&format!("restored-{cycle}"));
            let out = sfs_node(&[
                "restore",
                "--from",
                backup.to_str().unwrap(),
                "--data-dir",
                restored.to_str().unwrap(),
                "--key-file",
                key.to_str().unwrap(),
            ]);
            assert!(out.contains("documents"), "{out}");
            let store =
                sfs_node::storage::store::Store::open(&restored, Duration::from_secs(5), master)
                    .unwrap();
            let doc = store
                .shared
                .load_one(&sfs_sync::ShareableDocId::lessons("lund").unwrap())
                .unwrap()
                .expect("the restored lessons");
            let text = String::from_utf8_lossy(&doc.save_nocompress()).to_string();
            for title in &lessons {
                assert!(
                    text.contains(title.as_str()),
                    "cut {cycle}: the backup lacks {title}"
                );
            }
        }
    }
    eprintln!(
        "{cycles} power cuts: {erasures} erasures and {backups} backups just before them, all kept"
    );
}

/// Sends a signal to a process (STOP and CONT freeze and thaw a node).
fn signal(node: &Process, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_hub_cut_off_in_the_middle_of_relaying_keeps_everything_it_relayed() {
    const TEST: &str = "the_hub_cut_off_in_the_middle_of_relaying_keeps_everything_it_relayed";
    let Some(mount) = Mount::new(TEST) else {
        return;
    };
    let cycles = cycles(10);
    pki(
        &mount.path("pki"),
        &[("national", "hub"), ("malmo", "city"), ("lund", "city")],
    );
    // The hub's files on the mount; the cities' beside it (they keep running across the cuts).
    let cities = tempfile::tempdir().unwrap();
    // The hub restarts on this port after every cut while the cities redial it.
    let port = crate::common::ports::restartable_ports(1);
    let hub = Node::prepare(
        &mount,
        "national",
        "hub",
        &mount.path("hub"),
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let city = |name: &str| {
        Node::prepare(
            &mount,
            name,
            "city",
            &cities.path().join(name),
            &format!("hub_url = \"https://127.0.0.1:{port}\"\nmax_backoff_ms = 300"),
        )
    };
    let (malmo, lund) = (city("malmo"), city("lund"));
    // Malmö's lessons document is past sled's blob threshold before anything is relayed.
    pad_lessons(&malmo, "malmo", 200_000);
    mount.power_cut();
    let (malmo_node, malmo_api) = malmo.start();
    let (_lund_node, lund_api) = lund.start();
    let runtime = runtime();
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut rng = rand::thread_rng();
    let started = Instant::now();
    let mut relayed_total = 0;
    runtime.block_on(async {
        // Malmö writes all along (offline first: the hub being away does not stop it).
        let writer = {
            let mut client = malmo.client(&malmo_api).await;
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::from_entropy();
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let (title, body, tags) = lesson(&mut rng, &format!("m{i}"));
                    client.create_lesson(&title, &body, tags).await.unwrap();
                    acknowledged.lock().unwrap().insert(title);
                    // A steady stream rather than a flood: the documents stay quick to load.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            })
        };
        let mut lund_client = lund.client(&lund_api).await;
        for cycle in 0..cycles {
            let (mut hub_node, _) = hub.start();
            // The cut comes while the hub relays: once Lund has got something new from it.
            let before = count(&mut lund_client, "malmo").await;
            let deadline = Instant::now() + Duration::from_secs(60);
            while count(&mut lund_client, "malmo").await <= before {
                assert!(
                    Instant::now() < deadline,
                    "cycle {cycle}: the hub relays nothing"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..300))).await;
            kill(&mut hub_node);
            // Everything Lund got from the hub before the cut must still be at the hub: the hub
            // relays nothing before it is durable. Malmö is frozen meanwhile, so that it cannot
            // send it again.
            signal(&malmo_node, "STOP");
            let relayed = titles(&mut lund_client, "malmo").await;
            mount.power_cut();
            let (mut hub_node, hub_api) = hub.start();
            let mut hub_client = hub.client(&hub_api).await;
            let kept = titles(&mut hub_client, "malmo").await;
            signal(&malmo_node, "CONT");
            let lost: Vec<_> = relayed.difference(&kept).collect();
            assert!(
                lost.is_empty(),
                "cut {cycle}: the hub relayed {} lessons it lost, e.g. {:?}",
                lost.len(),
                lost.iter()
                    .take(3)
                    .map(|t| t.split(' ').next())
                    .collect::<Vec<_>>()
            );
            relayed_total = relayed.len().max(relayed_total);
            kill(&mut hub_node);
            mount.power_cut();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        writer.await.unwrap();
        // Once the hub is back for good, every lesson Malmö acknowledged reaches Lund.
        let (_hub_node, _) = hub.start();
        let expected = acknowledged.lock().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = titles(&mut lund_client, "malmo").await;
            if expected.is_subset(&got) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Lund has {} of Malmö's {} lessons",
                got.len(),
                expected.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    eprintln!(
        "{} hub power cuts while relaying ({relayed_total} lessons relayed in all), nothing relayed was lost, in {:.1?}",
        cycles * 2,
        started.elapsed()
    );
}
