//! Helpers shared by the tests that run the real `sfs-node` binary.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub mod ports;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn sfs_node(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sfs-node"))
        .args(args)
        .output()
        .expect("sfs-node runs");
    assert!(
        output.status.success(),
        "sfs-node {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `sfs-node` with `args`, expecting it to fail; returns what it printed to stderr.
pub fn sfs_node_fails(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sfs-node"))
        .args(args)
        .output()
        .expect("sfs-node runs");
    assert!(!output.status.success(), "sfs-node {args:?} succeeded");
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// How many of a process's last stderr lines a failed wait shows.
const STDERR_TAIL: usize = 40;

/// A running `sfs-node` process whose stdout lines arrive on a channel; stopped on drop. Its
/// last stderr lines are kept so that a test that waits in vain says why the node stopped.
pub struct Process {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    stderr_reader: std::thread::JoinHandle<()>,
}

impl Process {
    pub fn spawn(args: &[&str]) -> Process {
        Process::spawn_with_env(args, &[])
    }

    /// Starts `sfs-node` with `args` and extra environment variables.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, String)]) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sfs-node"));
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("sfs-node starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr);
        let err = child.stderr.take().unwrap();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut tail = tail.lock().unwrap();
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        Process {
            child,
            lines,
            stderr,
            stderr_reader,
        }
    }

    /// Whether the process has exited (and how), and its last stderr lines: for failure messages.
    pub fn diagnosis(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => {
                // The reader may still be taking the last lines of a process that just exited.
                let deadline = Instant::now() + Duration::from_millis(500);
                while !self.stderr_reader.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                format!("exited with {status}")
            }
            Ok(None) => "still running".to_string(),
            Err(error) => format!("state unknown: {error}"),
        };
        let tail = self.stderr.lock().unwrap();
        let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
        format!(
            "sfs-node {status}; last stderr lines:\n{}",
            lines.join("\n")
        )
    }

    /// The first stdout line containing `needle`, within the deadline.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(error) => {
                    let why = match error {
                        mpsc::RecvTimeoutError::Timeout => format!("within {DEADLINE:?}"),
                        mpsc::RecvTimeoutError::Disconnected => "before stdout closed".into(),
                    };
                    panic!("no line containing {needle:?} {why}: {}", self.diagnosis())
                }
            }
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sfs-node did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA in `dir/pki` with a certificate for the city `lund`; returns the CA directory.
pub fn pki_with_lund(dir: &Path) -> PathBuf {
    let pki = dir.join("pki");
    sfs_node(&["pki", "init", "--dir", pki.to_str().unwrap()]);
    sfs_node(&[
        "pki",
        "issue",
        "--dir",
        pki.to_str().unwrap(),
        "--node",
        "lund",
        "--role",
        "city",
    ]);
    pki
}

/// A city `lund` whose hub is away (it keeps taking writes: offline first), prepared with its
/// own CA, certificate, a token and a configuration file in `dir`.
pub struct OfflineCity {
    pub config: PathBuf,
    pub token: String,
    pub ca: String,
}

impl OfflineCity {
    /// Prepares the city with its data in `data_dir` and a token of `role`.
    pub fn prepare(dir: &Path, data_dir: &Path, role: &str) -> OfflineCity {
        let pki = pki_with_lund(dir);
        std::fs::create_dir_all(data_dir).unwrap();
        let token = sfs_node(&[
            "token",
            "create",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--role",
            role,
        ])
        .trim()
        .to_string();
        let config = dir.join("lund.toml");
        OfflineCity::write_config(&config, data_dir);
        let ca = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
        OfflineCity { config, token, ca }
    }

    /// Writes the city's configuration at `path` (beside `pki/`), with its data in `data_dir`.
    pub fn write_config(path: &Path, data_dir: &Path) {
        std::fs::write(
            path,
            format!(
                r#"id = "lund"
role = "city"
data_dir = "{}"
[api]
listen = "127.0.0.1:0"
[federation]
hub_url = "https://127.0.0.1:9"
max_backoff_ms = 60000
[tls]
ca = "pki/ca.crt"
cert = "pki/nodes/city-lund.crt"
key = "pki/nodes/city-lund.key"
"#,
                data_dir.display()
            ),
        )
        .unwrap();
    }

    /// Starts the city with extra environment variables; returns it with its API endpoint once
    /// it prints `ready` (which it cannot do if its store failed to open).
    pub fn start(&self, env: &[(&str, String)]) -> (Process, String) {
        let mut node =
            Process::spawn_with_env(&["run", "--config", self.config.to_str().unwrap()], env);
        let api = node
            .wait_for_line("ready")
            .split_whitespace()
            .nth(3)
            .unwrap()
            .to_string();
        (node, api)
    }
}
