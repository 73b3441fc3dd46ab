//! Tests of the real `sfs-node` binary: PKI and token commands, `run` from configuration files
//! with a hub and a city as separate processes, and `demo`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{pki_with_lund, sfs_node, sfs_node_fails, OfflineCity, Process, DEADLINE};

fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_hub_and_a_city_run_as_processes_from_their_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = d.join("pki");
    let pki_s = pki.to_str().unwrap();
    sfs_node(&["pki", "init", "--dir", pki_s]);
    sfs_node(&[
        "pki", "issue", "--dir", pki_s, "--node", "national", "--role", "hub",
    ]);
    let issued = sfs_node(&[
        "pki", "issue", "--dir", pki_s, "--node", "lund", "--role", "city",
    ]);
    assert!(
        issued.contains("spiffe://stadforstad/city/lund"),
        "{issued}"
    );
    // `pki status` lists every certificate with its expiry, soonest first: one due for renewal,
    // one renewed after revocation, the rest fine.
    sfs_node(&[
        "pki", "issue", "--dir", pki_s, "--node", "kalmar", "--role", "city", "--days", "10",
    ]);
    sfs_node(&[
        "pki", "issue", "--dir", pki_s, "--node", "ystad", "--role", "city", "--days", "20",
    ]);
    sfs_node(&["pki", "revoke", "--dir", pki_s, "--node", "ystad"]);
    let status = sfs_node(&["pki", "status", "--dir", pki_s]);
    let rows: Vec<&str> = status.lines().skip(1).collect();
    assert_eq!(rows.len(), 5, "{status}");
    assert!(
        rows[0].starts_with("spiffe://stadforstad/city/kalmar") && rows[0].contains(" RENEW "),
        "{status}"
    );
    assert!(
        rows[1].starts_with("spiffe://stadforstad/city/ystad") && rows[1].contains(" revoked "),
        "{status}"
    );
    assert!(rows[2..4].iter().all(|r| r.contains(" ok ")), "{status}");
    assert!(rows[4].starts_with("ca "), "{status}");
    let none = sfs_node_fails(&["pki", "status", "--dir", d.to_str().unwrap()]);
    assert!(none.contains("no CA in"), "{none}");
    // A missing directory or one that is not a node's is refused, not filled with a token the
    // node would never see.
    let missing = sfs_node_fails(&[
        "token",
        "create",
        "--data-dir",
        d.join("hub").to_str().unwrap(),
        "--role",
        "reader",
    ]);
    assert!(
        missing.contains("is not a node's data directory: it does not exist"),
        "{missing}"
    );
    let foreign = sfs_node_fails(&["token", "create", "--data-dir", pki_s, "--role", "reader"]);
    assert!(
        foreign.contains("is not a node's data directory"),
        "{foreign}"
    );
    assert!(!pki.join("tokens.jsonl").exists());
    std::fs::create_dir(d.join("hub")).unwrap();
    std::fs::create_dir(d.join("lund")).unwrap();
    let hub_token = sfs_node(&[
        "token",
        "create",
        "--data-dir",
        d.join("hub").to_str().unwrap(),
        "--role",
        "reader",
    ]);
    let city_token = sfs_node(&[
        "token",
        "create",
        "--data-dir",
        d.join("lund").to_str().unwrap(),
        "--role",
        "editor",
    ]);

    write_config(
        &d.join("hub.toml"),
        r#"id = "national"
role = "hub"
data_dir = "hub"
[api]
listen = "127.0.0.1:0"
[federation]
listen = "127.0.0.1:0"
[tls]
ca = "pki/ca.crt"
cert = "pki/nodes/hub-national.crt"
key = "pki/nodes/hub-national.key"
"#,
    );
    sfs_node(&[
        "check-config",
        "--config",
        d.join("hub.toml").to_str().unwrap(),
    ]);
    let mut hub = Process::spawn(&["run", "--config", d.join("hub.toml").to_str().unwrap()]);
    let line = hub.wait_for_line("ready");
    let hub_api = line.split_whitespace().nth(3).unwrap().to_string();
    let hub_federation = line.split_whitespace().nth(5).unwrap().to_string();

    write_config(
        &d.join("lund.toml"),
        &format!(
            r#"id = "lund"
role = "city"
data_dir = "lund"
[api]
listen = "127.0.0.1:0"
[federation]
hub_url = "{hub_federation}"
max_backoff_ms = 500
[tls]
ca = "pki/ca.crt"
cert = "pki/nodes/city-lund.crt"
key = "pki/nodes/city-lund.key"
"#
        ),
    );
    let mut city = Process::spawn(&["run", "--config", d.join("lund.toml").to_str().unwrap()]);
    let line = city.wait_for_line("ready");
    let city_api = line.split_whitespace().nth(3).unwrap().to_string();

    let ca = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut lund = sfs_client::Client::connect(&city_api, city_token.trim(), &ca)
            .await
            .unwrap();
        lund.create_lesson("From a separate process", "", vec![])
            .await
            .unwrap();
        let mut hub_client = sfs_client::Client::connect(&hub_api, hub_token.trim(), &ca)
            .await
            .unwrap();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let lessons = hub_client.list_lessons("cities/lund").await.unwrap();
            if lessons.iter().any(|l| l.title == "From a separate process") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the lesson never reached the hub"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // `token list` and `token revoke` work on the running node's directory; the revoked
        // token is refused at its next request, a token created afterwards works.
        let lund_dir = d.join("lund");
        let lund_dir = lund_dir.to_str().unwrap();
        let listed = sfs_node(&["token", "list", "--data-dir", lund_dir]);
        let id = sfs_node::api::tokens::hash(city_token.trim())[..8].to_string();
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(&id) && l.contains("editor") && l.contains("active")),
            "{listed}"
        );
        assert!(!listed.contains(city_token.trim()), "no secret in the list");
        let revoked = sfs_node(&["token", "revoke", "--data-dir", lund_dir, &id]);
        assert!(
            revoked.contains(&format!("token {id} (editor) revoked")),
            "{revoked}"
        );
        let err = lund
            .list_lessons("cities/lund")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("UNAUTHENTICATED") && err.contains("revoked"),
            "{err}"
        );
        let listed = sfs_node(&["token", "list", "--data-dir", lund_dir]);
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(&id) && l.contains("revoked")),
            "{listed}"
        );
        let fresh = sfs_node(&[
            "token",
            "create",
            "--data-dir",
            lund_dir,
            "--role",
            "reader",
            "--expires-in",
            "90d",
        ]);
        let mut fresh = sfs_client::Client::connect(&city_api, fresh.trim(), &ca)
            .await
            .unwrap();
        assert_eq!(fresh.list_lessons("cities/lund").await.unwrap().len(), 1);
        let bad = sfs_node_fails(&[
            "token",
            "create",
            "--data-dir",
            lund_dir,
            "--role",
            "reader",
            "--expires-in",
            "90",
        ]);
        assert!(bad.contains("no unit"), "{bad}");
        let unknown = sfs_node_fails(&["token", "revoke", "--data-dir", lund_dir, "00000000"]);
        assert!(unknown.contains("no token has the id"), "{unknown}");
    });
    city.terminate();
    hub.terminate();
}

#[test]
fn a_configuration_naming_another_node_than_its_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki_with_lund(d);
    write_config(
        &d.join("malmo.toml"),
        r#"id = "malmo"
role = "city"
data_dir = "malmo"
[api]
listen = "127.0.0.1:0"
[federation]
hub_url = "https://127.0.0.1:1"
[tls]
ca = "pki/ca.crt"
cert = "pki/nodes/city-lund.crt"
key = "pki/nodes/city-lund.key"
"#,
    );
    let output = Command::new(env!("CARGO_BIN_EXE_sfs-node"))
        .args(["run", "--config", d.join("malmo.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the certificate is for city/lund"),
        "{stderr}"
    );
}

#[test]
fn check_config_refuses_what_run_refuses_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki_with_lund(d);
    let config = d.join("lund.toml");
    OfflineCity::write_config(&config, &d.join("data"));
    let config = config.to_str().unwrap();
    let ok = sfs_node(&["check-config", "--config", config]);
    assert!(ok.contains("configuration is valid"), "{ok}");
    // A key file inside the data directory, and a certificate naming another node: both
    // refused by check-config exactly as by run, and run writes nothing.
    let cases = [
        (
            vec![("SFS_STORE_KEY_FILE", d.join("data/lund.key"))],
            "inside the data directory",
        ),
        (
            vec![("SFS_ID", std::path::PathBuf::from("malmo"))],
            "the certificate is for city/lund",
        ),
    ];
    for (env, expected) in cases {
        let refused = |command: &str| {
            let output = Command::new(env!("CARGO_BIN_EXE_sfs-node"))
                .args([command, "--config", config])
                .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
                .output()
                .unwrap();
            assert!(!output.status.success(), "{command} accepted {env:?}");
            let stderr = String::from_utf8_lossy(&output.stderr).to_string();
            assert!(stderr.contains(expected), "{command}: {stderr}");
            stderr
        };
        assert_eq!(refused("check-config"), refused("run"));
        assert!(!d.join("data").exists(), "run refused before writing");
    }
}

#[test]
fn the_demo_prints_ready_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let mut demo = Process::spawn(&[
        "demo",
        "--dir",
        demo_dir.to_str().unwrap(),
        "--cities",
        "helsingborg,malmo",
    ]);
    demo.wait_for_line("ready");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo_dir.join("federation.json")).unwrap())
            .unwrap();
    assert!(file["cities"]["malmo"]["api"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));
    // Every node serves the web app; its sign-in page answers in Swedish.
    let web = file["cities"]["malmo"]["web"].as_str().unwrap();
    let addr = web
        .strip_prefix("http://127.0.0.1:")
        .map(|port| format!("127.0.0.1:{port}"));
    let addr = addr.unwrap_or_else(|| panic!("web address {web:?}"));
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    std::io::Write::write_all(
        &mut stream,
        format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut page = String::new();
    std::io::Read::read_to_string(&mut stream, &mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("<html lang=\"sv\">") && page.contains("Logga in"),
        "{page}"
    );
    assert!(file["hub"]["web"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    // An operator prints a one-time link for a new token with `sfs-node web sign-in-link`
    // while the node runs; the link signs its person in once, never twice. (The demo's
    // configuration lets the system choose the port, so the address is given.)
    let config = demo_dir.join("malmo/node.toml");
    let port_zero = sfs_node_fails(&[
        "web",
        "sign-in-link",
        "--config",
        config.to_str().unwrap(),
        "--role",
        "editor",
    ]);
    assert!(port_zero.contains("give --base-url"), "{port_zero}");
    let link = sfs_node(&[
        "web",
        "sign-in-link",
        "--config",
        config.to_str().unwrap(),
        "--base-url",
        web,
        "--role",
        "editor",
        "--label",
        "Anna, socialtjänsten",
    ]);
    let code = link
        .trim()
        .strip_prefix(&format!("{web}/login?code="))
        .unwrap_or_else(|| panic!("{link}"));
    assert!(sign_in_with_code(&addr, code).starts_with("HTTP/1.1 303"));
    assert!(sign_in_with_code(&addr, code).starts_with("HTTP/1.1 401"));
    assert!(sign_in_with_code(&addr, "not-a-code").starts_with("HTTP/1.1 401"));
    let listed = sfs_node(&[
        "token",
        "list",
        "--data-dir",
        demo_dir.join("malmo/data").to_str().unwrap(),
        "--label",
        "Anna, socialtjänsten",
    ]);
    assert!(listed.contains("editor"), "{listed}");
    let no_web = sfs_node_fails(&[
        "web",
        "sign-in-link",
        "--config",
        config.to_str().unwrap(),
        "--role",
        "boss",
    ]);
    assert!(no_web.contains("--role must be"), "{no_web}");
    demo.terminate();
}

/// The `sfs` command line beside `sfs-node` in the target directory (`.ci/run` builds it
/// before the tests; `cargo build -p sfs-client --bin sfs` does on a developer's machine).
fn sfs_cli() -> Option<std::path::PathBuf> {
    let path = Path::new(env!("CARGO_BIN_EXE_sfs-node")).with_file_name("sfs");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is required in CI: cargo build -p sfs-client --bin sfs",
        path.display()
    );
    eprintln!(
        "SKIPPED: no {} (cargo build -p sfs-client --bin sfs)",
        path.display()
    );
    None
}

/// Runs `sfs` with `args`; returns its stdout, or panics with its stderr.
fn sfs(cli: &Path, args: &[&str]) -> String {
    let output = Command::new(cli).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "sfs {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// One HTTP/1.1 request; the whole answer.
fn http_exchange(addr: &str, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    answer
}

/// Signs in to the web app at `addr` with a one-time code as a browser would (the sign-in
/// page's pre-session cookie and form token, then the form); the answer's head and body.
fn sign_in_with_code(addr: &str, code: &str) -> String {
    let page = http_exchange(
        addr,
        &format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    let pre = page
        .lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .find(|c| c.starts_with("sfs_pre_"))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no pre-session cookie: {page}"))
        .to_string();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no form token: {page}"))
        .to_string();
    let form = format!("csrf={csrf}&code={code}");
    http_exchange(
        addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nCookie: {pre}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    )
}

#[test]
fn the_deploy_bootstrap_makes_a_pilot_on_one_host_and_a_city_onboards_as_the_runbook_says() {
    let Some(cli) = sfs_cli() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fed = dir.path().join("federation");
    let base = common::ports::restartable_ports(40);
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/bootstrap.sh");
    let bootstrap = || {
        let output = Command::new("sh")
            .arg(&script)
            .args(["--base-port", &base.to_string(), "--federation-host"])
            .args(["127.0.0.1", fed.to_str().unwrap(), "127.0.0.1"])
            .args(["lund:Lund:Skåne län", "malmo:Malmö:Skåne län"])
            .env("SFS_NODE", env!("CARGO_BIN_EXE_sfs-node"))
            .env("SFS_CLI", &cli)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    bootstrap();
    let token = std::fs::read_to_string(fed.join("lund/admin.token")).unwrap();
    bootstrap();
    assert_eq!(
        std::fs::read_to_string(fed.join("lund/admin.token")).unwrap(),
        token,
        "a second run keeps what exists"
    );
    let federation = fed.join("federation.json");
    let federation = federation.to_str().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(federation).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "federation.json holds admin tokens: {mode:o}"
        );
    }
    let hub_config = std::fs::read_to_string(fed.join("national/node.toml")).unwrap();
    assert!(
        hub_config.contains("revoked = \"../pki/revoked.txt\""),
        "{hub_config}"
    );

    // Every node runs from its generated configuration, unchanged, on one host: its own API
    // and metrics ports, metrics on loopback only.
    let run = |node: &str| {
        let config = fed.join(node).join("node.toml");
        Process::spawn(&["run", "--config", config.to_str().unwrap()])
    };
    let mut hub = run("national");
    let hub_metrics = hub.wait_for_line("metrics:");
    hub.wait_for_line("ready");
    let mut cities: Vec<Process> = ["lund", "malmo"].iter().map(|c| run(c)).collect();
    let mut metrics = vec![hub_metrics];
    for city in &mut cities {
        metrics.push(city.wait_for_line("metrics:"));
        city.wait_for_line("ready");
    }
    for line in &metrics {
        assert!(line.contains("http://127.0.0.1:"), "{line}");
    }
    let listed = sfs(
        &cli,
        &[
            "--federation",
            federation,
            "--node",
            "hub",
            "cities",
            "list",
        ],
    );
    assert!(
        listed.contains("lund") && listed.contains("Malmö") && listed.contains("Skåne län"),
        "{listed}"
    );

    // Onboard Ystad exactly as deploy/RUNBOOK.md says, with the template deploy/city.toml.
    let pki = fed.join("pki");
    sfs_node(&[
        "pki",
        "issue",
        "--dir",
        pki.to_str().unwrap(),
        "--node",
        "ystad",
        "--role",
        "city",
    ]);
    sfs(
        &cli,
        &[
            "--federation",
            federation,
            "--node",
            "hub",
            "cities",
            "add",
            "--id",
            "ystad",
            "--display-name",
            "Ystad",
            "--county",
            "Skåne län",
        ],
    );
    let template = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/city.toml"),
    )
    .unwrap();
    let at = |rel: &str| fed.join(rel).to_str().unwrap().to_string();
    let (api, metrics_port) = (base + 30, base + 32);
    let mut config = template.clone();
    for (from, to) in [
        ("id = \"helsingborg\"", "id = \"ystad\"".to_string()),
        (
            "data_dir = \"/var/lib/stadforstad/helsingborg\"",
            format!("data_dir = \"{}\"", at("ystad/data")),
        ),
        (
            "listen = \"127.0.0.1:7443\"",
            format!("listen = \"127.0.0.1:{api}\""),
        ),
        (
            "hub_url = \"https://hub.stadforstad.example:7444\"",
            format!("hub_url = \"https://127.0.0.1:{}\"", base + 1),
        ),
        (
            "\"/etc/stadforstad/ca.crt\"",
            format!("\"{}\"", at("pki/ca.crt")),
        ),
        (
            "\"/etc/stadforstad/city-helsingborg.crt\"",
            format!("\"{}\"", at("pki/nodes/city-ystad.crt")),
        ),
        (
            "\"/etc/stadforstad/city-helsingborg.key\"",
            format!("\"{}\"", at("pki/nodes/city-ystad.key")),
        ),
        (
            "listen = \"127.0.0.1:9464\"",
            format!("listen = \"127.0.0.1:{metrics_port}\""),
        ),
        (
            "key_file = \"/var/lib/stadforstad/helsingborg.key\"",
            format!("key_file = \"{}\"", at("ystad/data.key")),
        ),
        (
            "\"/etc/stadforstad/release.pub\"",
            format!("\"{}\"", at("coordinator/release.pub")),
        ),
    ] {
        assert!(
            config.contains(from),
            "deploy/city.toml no longer has {from}"
        );
        config = config.replace(from, &to);
    }
    let ystad_config = fed.join("ystad.toml");
    write_config(&ystad_config, &config);
    std::fs::create_dir_all(fed.join("ystad/data")).unwrap();
    let ystad_token = sfs_node(&[
        "token",
        "create",
        "--data-dir",
        &at("ystad/data"),
        "--role",
        "admin",
        "--label",
        "it desk",
    ]);
    let ystad_token = ystad_token.trim();
    sfs_node(&["check-config", "--config", ystad_config.to_str().unwrap()]);
    let mut ystad = Process::spawn(&["run", "--config", ystad_config.to_str().unwrap()]);
    ystad.wait_for_line("ready");
    let ystad_target = [
        "--endpoint".to_string(),
        format!("https://127.0.0.1:{api}"),
        "--token".into(),
        ystad_token.to_string(),
        "--ca".into(),
        at("pki/ca.crt"),
    ];
    let mut add: Vec<&str> = ystad_target.iter().map(String::as_str).collect();
    add.extend(["lessons", "add", "--title", "Ystads första lärdom"]);
    sfs(&cli, &add);
    // The first lesson crosses the federation: Lund reads it.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let lessons = sfs(
            &cli,
            &[
                "--federation",
                federation,
                "--node",
                "lund",
                "lessons",
                "list",
                "--all-cities",
            ],
        );
        if lessons.contains("Ystads första lärdom") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Ystad's first lesson never reached Lund: {lessons}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let listed = sfs(
        &cli,
        &[
            "--federation",
            federation,
            "--node",
            "hub",
            "cities",
            "list",
        ],
    );
    assert!(listed.contains("Ystad"), "{listed}");
    ystad.terminate();
    for city in cities {
        city.terminate();
    }
    hub.terminate();
}

/// The arguments of `sfs-node restore` from `backup` into `data_dir`, and `extra` ones.
fn restore_args<'a>(backup: &'a str, data_dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["restore", "--from", backup, "--data-dir", data_dir];
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_backup_of_a_running_node_restores_into_a_new_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let city = OfflineCity::prepare(d, &d.join("data"), "admin");
    OfflineCity::write_config(&d.join("restored.toml"), &d.join("restored"));
    let (token, ca) = (city.token.clone(), city.ca.clone());
    let ca_path = d.join("pki").join("ca.crt");
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let (node, api) = city.start(&[]);
    runtime.block_on(async {
        let mut client = sfs_client::Client::connect(&api, &token, &ca)
            .await
            .unwrap();
        client
            .create_lesson("Kept in the backup", "", vec![])
            .await
            .unwrap();
        let org = client
            .create_organisation("Police", "police")
            .await
            .unwrap();
        let signal = sfs_client::v1::Signal {
            date: "2026-11-01".into(),
            reporting_organisation: org.name,
            kind: "signal".into(),
            description: "backed up".into(),
            ..Default::default()
        };
        client
            .signals
            .create_signal(sfs_client::v1::CreateSignalRequest {
                signal: Some(signal),
            })
            .await
            .unwrap();
    });
    let backup = d.join("lund.backup");
    let out = sfs_node(&[
        "backup",
        "--endpoint",
        &api,
        "--token",
        &token,
        "--ca",
        ca_path.to_str().unwrap(),
        "--out",
        backup.to_str().unwrap(),
    ]);
    assert!(out.contains("backed up lund"), "{out}");
    node.terminate();

    let backup_path = backup.to_str().unwrap();
    // Restoring over an existing store is refused.
    sfs_node_fails(&restore_args(
        backup_path,
        d.join("data").to_str().unwrap(),
        &[],
    ));
    // The backup is sealed: its personal data is unreadable without the at-rest key, and a
    // restore without that key, or with a wrong one, is refused before anything is written.
    let archive = std::fs::read(&backup).unwrap();
    assert!(!archive.windows(9).any(|w| w == b"backed up"));
    let key = sfs_node::storage::seal::MasterKey::load(&d.join("data.key")).unwrap();
    let readable = sfs_node::storage::store::readable_with_key(&backup, &key).unwrap();
    assert!(readable.windows(9).any(|w| w == b"backed up"));
    let restored = d.join("restored");
    let restored = restored.to_str().unwrap();
    let stderr = sfs_node_fails(&restore_args(backup_path, restored, &[]));
    assert!(stderr.contains("--key-file"), "{stderr}");
    assert!(!d.join("restored").join("store").exists());
    let wrong_key = d.join("wrong.key");
    sfs_node::storage::seal::MasterKey::create(&wrong_key).unwrap();
    let stderr = sfs_node_fails(&restore_args(
        backup_path,
        restored,
        &["--key-file", wrong_key.to_str().unwrap()],
    ));
    // A wrong key is a wrong key, not damage.
    assert_eq!(
        stderr,
        "error: the at-rest key given opens none of the sealed records of this backup of lund: \
         it is not that node's key; give the key file the node ran with (its store.key_file) \
         with --key-file\n"
    );
    assert!(!d.join("restored").join("store").exists());
    // The restored node is configured with the key at its default place, beside its data.
    std::fs::copy(d.join("data.key"), d.join("restored.key")).unwrap();
    let out = sfs_node(&restore_args(backup_path, restored, &[]));
    assert!(out.contains("restored lund"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("restored").join("tokens.jsonl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the restored token file is the owner's only"
        );
    }

    let mut node = Process::spawn(&["run", "--config", d.join("restored.toml").to_str().unwrap()]);
    let api = node
        .wait_for_line("ready")
        .split_whitespace()
        .nth(3)
        .unwrap()
        .to_string();
    runtime.block_on(async {
        // The old token works: the token file came back too.
        let mut client = sfs_client::Client::connect(&api, &token, &ca)
            .await
            .unwrap();
        let lessons = client.list_lessons("cities/lund").await.unwrap();
        assert_eq!(lessons.len(), 1);
        assert_eq!(lessons[0].title, "Kept in the backup");
        assert_eq!(client.list_organisations().await.unwrap().len(), 1);
        let log = client
            .signals
            .list_access_log(sfs_client::v1::ListRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(
            log.entries.iter().any(|e| e.action == "create"),
            "the access log came back"
        );
        let signals = client
            .signals
            .list_signals(sfs_client::v1::ListSignalsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(signals.signals[0].description, "backed up");
    });
    node.terminate();
}
