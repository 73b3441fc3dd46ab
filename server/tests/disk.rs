//! A full disk and a read-only data directory (DESIGN.md promise 3): writes answer
//! `UNAVAILABLE` (never OK), reads go on, nothing acknowledged is lost, and writes work again
//! once space returns or the directory is writable again — without a restart. After a restart
//! the store opens and holds every acknowledged write.
//!
//! The data directory lives on a small tmpfs mounted for the test, so this needs root (or a
//! user namespace that may mount). Where mounting is refused, the test says so and skips; in
//! CI (`CI` set) it fails instead, so the check cannot silently disappear.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{OfflineCity as City, Process};

/// A tmpfs mounted for the test; unmounted on drop.
struct SmallDisk {
    mount_point: PathBuf,
}

impl SmallDisk {
    fn mount(mount_point: &Path, megabytes: u32) -> Option<SmallDisk> {
        std::fs::create_dir_all(mount_point).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(mount_point)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| SmallDisk {
            mount_point: mount_point.to_path_buf(),
        })
    }

    fn remount(&self, mode: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.mount_point)
            .status()
            .unwrap();
        assert!(status.success(), "remount {mode}");
    }

    /// Fills the free space with a file; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.mount_point.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        // Bounded by the size of the disk: a write fails once it is full.
        for _ in 0..100_000 {
            if file.write_all(&block).is_err() {
                break;
            }
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
    }
}

/// A lesson body of about 2 KB that the privacy guard accepts.
fn body(i: usize) -> String {
    format!("Lesson {i}: ").to_string() + &"the network met and agreed on next steps. ".repeat(48)
}

/// Mounts the small disk, or explains why the test cannot run here.
fn small_disk(mount_point: &Path) -> Option<SmallDisk> {
    match SmallDisk::mount(mount_point, 24) {
        Some(disk) => Some(disk),
        None if std::env::var_os("CI").is_some() => {
            panic!("CI must be able to mount a tmpfs for the disk tests (run as root)")
        }
        None => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here (needs root); the disk tests did not run"
            );
            None
        }
    }
}

/// What the node keeps free on the test disk, in bytes.
const RESERVE: &str = "4194304";

/// Writes `count` lessons, all of which must be acknowledged.
async fn write_lessons(
    client: &mut sfs_client::Client,
    prefix: &str,
    count: usize,
    acknowledged: &mut BTreeSet<String>,
) {
    for i in 0..count {
        let title = format!("{prefix}-{i}");
        client
            .create_lesson(&title, &body(i), vec![])
            .await
            .unwrap();
        acknowledged.insert(title);
    }
}

/// Writes until five writes in a row are refused; each refusal must be `UNAVAILABLE` with a
/// message containing `expected`. Returns the last refusal's message.
async fn write_until_refused(
    client: &mut sfs_client::Client,
    expected: &str,
    acknowledged: &mut BTreeSet<String>,
) -> String {
    let mut refused = 0;
    let mut last = String::new();
    for i in 0..5000 {
        let title = format!("full-{i}");
        match client.create_lesson(&title, &body(i), vec![]).await {
            Ok(_) => {
                acknowledged.insert(title);
                refused = 0;
            }
            Err(sfs_client::ClientError::Status(status)) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(status.message().contains(expected), "{status:?}");
                last = status.message().to_string();
                refused += 1;
                if refused == 5 {
                    return last;
                }
            }
            Err(other) => panic!("the node must stay up on a full disk: {other}"),
        }
    }
    panic!("writes to a full disk were not refused (last refusal: {last:?})");
}

/// Kills the node, starts it again and checks that every acknowledged lesson is there and a
/// new write is taken.
fn restart_and_check(
    mut node: Process,
    city: &City,
    env: &[(&str, String)],
    acknowledged: &BTreeSet<String>,
) {
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    let (_node, api) = city.start(env);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = sfs_client::Client::connect(&api, &city.token, &city.ca)
            .await
            .unwrap();
        let titles = titles(&mut client).await;
        let lost: Vec<_> = acknowledged.difference(&titles).collect();
        assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
        client
            .create_lesson("after-restart", &body(0), vec![])
            .await
            .unwrap();
    });
}

/// A city running with its data directory on a fresh small disk.
struct CityOnSmallDisk {
    node: Process,
    api: String,
    env: [(&'static str, String); 1],
    city: City,
    runtime: tokio::runtime::Runtime,
    disk: SmallDisk,
    _dir: tempfile::TempDir,
}

impl CityOnSmallDisk {
    /// Starts the city keeping `reserve` bytes free, or `None` where no tmpfs can be mounted.
    fn start(reserve: &str) -> Option<CityOnSmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let disk = small_disk(&dir.path().join("disk"))?;
        let city = City::prepare(dir.path(), &disk.mount_point.join("data"), "editor");
        let env = [("SFS_STORE_MIN_FREE_BYTES", reserve.to_string())];
        let (node, api) = city.start(&env);
        Some(CityOnSmallDisk {
            node,
            api,
            env,
            city,
            runtime: tokio::runtime::Runtime::new().unwrap(),
            disk,
            _dir: dir,
        })
    }

    async fn client(&self) -> sfs_client::Client {
        sfs_client::Client::connect(&self.api, &self.city.token, &self.city.ca)
            .await
            .unwrap()
    }
}

#[test]
fn a_full_disk_answers_unavailable_loses_nothing_and_recovers_when_space_returns() {
    let Some(running) = CityOnSmallDisk::start(RESERVE) else {
        return;
    };
    let mut acknowledged = BTreeSet::new();
    running.runtime.block_on(async {
        let mut client = running.client().await;
        write_lessons(&mut client, "before", 20, &mut acknowledged).await;
        let filler = running.disk.fill();
        write_until_refused(&mut client, "bytes free", &mut acknowledged).await;
        // Reads go on, and show every acknowledged lesson.
        let titles = titles(&mut client).await;
        assert!(acknowledged.is_subset(&titles), "reads on a full disk");
        // Space returns: writes are taken again without a restart.
        std::fs::remove_file(&filler).unwrap();
        write_lessons(&mut client, "after", 5, &mut acknowledged).await;
    });
    restart_and_check(running.node, &running.city, &running.env, &acknowledged);
}

#[test]
fn without_a_reserve_a_failed_store_refuses_writes_until_restarted_and_loses_nothing() {
    // With the reserve turned off, sled itself runs into the full disk.
    let Some(running) = CityOnSmallDisk::start("0") else {
        return;
    };
    let mut acknowledged = BTreeSet::new();
    running.runtime.block_on(async {
        let mut client = running.client().await;
        write_lessons(&mut client, "before", 20, &mut acknowledged).await;
        let filler = running.disk.fill();
        write_until_refused(&mut client, "", &mut acknowledged).await;
        let titles = titles(&mut client).await;
        assert!(acknowledged.is_subset(&titles), "reads after the failure");
        // Space returns, but sled took an I/O error: the node says to restart it.
        std::fs::remove_file(&filler).unwrap();
        let message = write_until_refused(&mut client, "restart the node", &mut acknowledged).await;
        assert!(message.contains("No space left"), "{message}");
    });
    restart_and_check(running.node, &running.city, &running.env, &acknowledged);
}

#[test]
fn a_read_only_data_directory_is_refused_at_start_and_its_data_kept() {
    let Some(running) = CityOnSmallDisk::start(RESERVE) else {
        return;
    };
    let mut acknowledged = BTreeSet::new();
    running.runtime.block_on(async {
        let mut client = running.client().await;
        write_lessons(&mut client, "before", 10, &mut acknowledged).await;
    });
    let (city, env, disk) = (&running.city, &running.env, &running.disk);
    running.node.terminate();
    disk.remount("ro");
    let output = Command::new(env!("CARGO_BIN_EXE_sfs-node"))
        .args(["run", "--config", city.config.to_str().unwrap()])
        .env("SFS_STORE_MIN_FREE_BYTES", RESERVE)
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "a node cannot run on a read-only data directory"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    disk.remount("rw");
    let (node, _) = city.start(env);
    restart_and_check(node, city, env, &acknowledged);
}

async fn titles(client: &mut sfs_client::Client) -> BTreeSet<String> {
    client
        .list_lessons("cities/lund")
        .await
        .unwrap()
        .into_iter()
        .map(|lesson| lesson.title)
        .collect()
}
