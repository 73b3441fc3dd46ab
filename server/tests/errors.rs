//! The messages of the real `sfs-node` binary when something is in the way: each says which
//! thing failed and what to do, on one line, each cause once.

mod common;

use std::process::Command;

use common::OfflineCity;

/// Runs `sfs-node` with `args` and extra environment, expecting failure; returns stderr.
fn fails_with_env(args: &[&str], env: &[(&str, String)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sfs-node"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "off")
        .output()
        .expect("sfs-node runs");
    assert!(!output.status.success(), "sfs-node {args:?} succeeded");
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[test]
fn a_busy_address_names_the_listener_and_its_setting_once() {
    let dir = tempfile::tempdir().unwrap();
    let city = OfflineCity::prepare(dir.path(), &dir.path().join("data"), "admin");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let config = city.config.to_str().unwrap();
    let stderr = fails_with_env(
        &["run", "--config", config],
        &[("SFS_API_LISTEN", addr.to_string())],
    );
    assert_eq!(
        stderr,
        format!(
            "error: the API listener cannot listen on {addr}: the address is in use by another \
             program (another node?); stop what holds it or choose another address with \
             api.listen (SFS_API_LISTEN)\n"
        )
    );
    let stderr = fails_with_env(
        &["run", "--config", config],
        &[("SFS_METRICS_LISTEN", addr.to_string())],
    );
    assert!(
        stderr.starts_with(&format!(
            "error: the metrics listener cannot listen on {addr}: the address is in use"
        )) && stderr.ends_with("metrics.listen (SFS_METRICS_LISTEN)\n"),
        "{stderr}"
    );
}

#[test]
fn a_data_directory_in_use_is_said_once_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let city = OfflineCity::prepare(dir.path(), &data, "admin");
    let (running, _api) = city.start(&[]);
    let stderr = fails_with_env(&["run", "--config", city.config.to_str().unwrap()], &[]);
    assert_eq!(
        stderr,
        format!(
            "error: the data directory {} is in use by another running node; stop that node \
             first, or give this one its own data_dir\n",
            data.display()
        )
    );
    running.terminate();
}

#[test]
fn logs_that_go_to_a_file_or_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let city = OfflineCity::prepare(dir.path(), &dir.path().join("data"), "admin");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sfs-node"))
        .args(["run", "--config", city.config.to_str().unwrap()])
        .env("SFS_API_LISTEN", busy.local_addr().unwrap().to_string())
        .env("RUST_LOG", "info")
        .output()
        .expect("sfs-node runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The start is logged, then binding the API listener fails.
    assert!(stderr.contains(" INFO "), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape codes in: {stderr:?}"
    );
}
