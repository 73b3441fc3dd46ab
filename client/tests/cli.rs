//! The real `sfs` binary: messages for endpoints it cannot use, and a reader that stops early.

use std::process::{Command, Stdio};

fn sfs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sfs"))
        .args(args)
        .env_remove("SFS_FEDERATION")
        .env_remove("SFS_NODE")
        .output()
        .expect("sfs runs")
}

fn stderr_of(args: &[&str]) -> String {
    let output = sfs(args);
    assert!(!output.status.success(), "sfs {args:?} succeeded");
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn with_ca(endpoint: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "not used before the endpoint is checked").unwrap();
    stderr_of(&[
        "--endpoint",
        endpoint,
        "--token",
        "sfs_x",
        "--ca",
        ca.to_str().unwrap(),
        "status",
    ])
}

#[test]
fn an_endpoint_without_tls_or_scheme_says_to_write_https() {
    assert_eq!(
        with_ca("http://127.0.0.1:7443"),
        "error: invalid endpoint http://127.0.0.1:7443: the API is served over TLS only: write \
         https://127.0.0.1:7443\n"
    );
    assert_eq!(
        with_ca("127.0.0.1:7443"),
        "error: invalid endpoint 127.0.0.1:7443: the scheme is missing: write \
         https://127.0.0.1:7443\n"
    );
}

#[test]
fn a_refused_connection_is_said_once_with_what_to_check() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "").unwrap();
    let endpoint = format!("https://127.0.0.1:{port}");
    let stderr = stderr_of(&[
        "--endpoint",
        &endpoint,
        "--token",
        "sfs_x",
        "--ca",
        ca.to_str().unwrap(),
        "status",
    ]);
    assert!(
        stderr.starts_with(&format!("error: cannot connect to {endpoint}: "))
            && stderr
                .ends_with("; is the node running, and is this its API address (api.listen)?\n"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sfs"))
        .args(["stats", "--help"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before sfs writes (as `| head` does after its lines).
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}
