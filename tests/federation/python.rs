//! Interoperability: a client nobody here wrote (Python's official grpcio, with code generated
//! from `proto/` by grpcio-tools) against a real node with TLS and a token.

use std::path::PathBuf;
use std::process::Command;

fn python_with_grpc() -> bool {
    python_with("grpc, grpc_tools")
}

/// Whether python3 can import `modules` (comma separated, as in an import statement).
pub(crate) fn python_with(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Whether a test that needs python3 with `modules` can run: in CI it must (.ci/run installs
/// client/examples/python/requirements.txt); elsewhere a missing module skips it loudly.
pub(crate) fn python_available(modules: &str) -> bool {
    if python_with(modules) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "python3 with {modules} is required in CI: pip install -r client/examples/python/requirements.txt"
    );
    eprintln!("SKIPPED: python3 with {modules} is not installed (pip install -r client/examples/python/requirements.txt)");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_grpcio_client_creates_lessons_and_reads_national_statistics() {
    if !python_with_grpc() {
        // CI installs it (.ci/run); on a developer machine without it, say so loudly.
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with grpcio and grpcio-tools is required in CI: pip install -r client/examples/python/requirements.txt"
        );
        eprintln!("SKIPPED: python3 with grpcio is not installed (pip install -r client/examples/python/requirements.txt)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cities = vec!["lund".to_string(), "malmo".to_string()];
    let (running, file) = sfs_node::node::demo::start(dir.path(), &cities)
        .await
        .unwrap();
    sfs_node::node::demo::seed(&file).await.unwrap();
    let national = {
        let ca = std::fs::read_to_string(&file.ca).unwrap();
        let hub = sfs_client::Client::connect(&file.hub.api, &file.hub.token, &ca)
            .await
            .unwrap();
        crate::util::eventually("the hub has national figures", || {
            let mut hub = hub.clone();
            async move {
                let n = hub
                    .stats
                    .get_national_stats(sfs_client::v1::GetNationalStatsRequest { year: 2026 })
                    .await
                    .ok()?
                    .into_inner();
                (n.releases.len() == 2).then_some(n)
            }
        })
        .await
    };
    let lund = file.cities["lund"].clone();
    let ca_path = file.ca.clone();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../client/examples/python/interop.py");
    let endpoint = lund.api.trim_start_matches("https://").to_string();
    let token = lund.token.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args(["--endpoint", &endpoint, "--token", &token, "--ca"])
            .arg(&ca_path)
            .args(["--year", "2026", "--title", "Lesson from Python"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(result["created"]
        .as_str()
        .unwrap()
        .starts_with("cities/lund/lessons/"));
    assert_eq!(
        result["national_cells"].as_u64().unwrap() as usize,
        national.cells.len()
    );
    assert_eq!(result["bad_request"]["code"], "INVALID_ARGUMENT");
    assert!(result["bad_request"]["message"]
        .as_str()
        .unwrap()
        .contains("field `parent`"));
    // And the lesson is really there, seen through the Rust client.
    let ca = std::fs::read_to_string(dir.path().join("pki/ca.crt")).unwrap();
    let mut client = sfs_client::Client::connect(&lund.api, &lund.token, &ca)
        .await
        .unwrap();
    let titles: Vec<String> = client
        .list_lessons("cities/lund")
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.title)
        .collect();
    assert!(
        titles.contains(&"Lesson from Python".to_string()),
        "{titles:?}"
    );
    for node in running {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_reflection_v1alpha_grpc_web_over_http1_and_cors_preflights() {
    if !python_available("grpc, grpc_reflection, requests") {
        return;
    }
    let allowed = "https://app.example";
    let mut fed = crate::util::Federation::start_with(&["lund"], |config| {
        config.api.cors_allowed_origins = vec![allowed.to_string()];
    })
    .await;
    let mut lund = fed.client(0).await;
    lund.create_lesson("Seen through gRPC-Web", "", vec![])
        .await
        .unwrap();
    let addr = fed.cities[0].running.as_ref().unwrap().api_addr;
    let ca_path = fed.pki_dir().join("ca.crt");
    let token = fed.cities[0].admin_token.clone();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("federation/python/integrators.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args(["--endpoint", &addr.to_string(), "--token", &token, "--ca"])
            .arg(&ca_path)
            .args(["--parent", "cities/lund", "--allowed-origin", allowed])
            .args(["--refused-origin", "https://evil.example"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let mut expected = sfs_node::api::listener::served_services();
    expected.sort();
    assert_eq!(
        seen["reflection_v1alpha_services"],
        serde_json::json!(expected)
    );
    assert_eq!(seen["lessons_file"], "stadforstad/v1/lessons.proto");
    assert_eq!(seen["alpn_http1_only"], "http/1.1");
    let web = &seen["grpc_web"];
    assert_eq!(web["http_version"], 11, "{web}");
    assert_eq!(web["status"], 200, "{web}");
    assert!(
        web["content_type"]
            .as_str()
            .unwrap()
            .starts_with("application/grpc-web"),
        "{web}"
    );
    assert!(
        web["trailers"].as_str().unwrap().contains("grpc-status:0"),
        "{web}"
    );
    assert!(web["message_bytes"].as_u64().unwrap() > 20, "{web}");
    assert_eq!(web["allow_origin"], allowed, "{web}");
    assert!(
        web["expose_headers"]
            .as_str()
            .unwrap()
            .contains("grpc-status"),
        "{web}"
    );
    let ok = &seen["preflight_allowed"];
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(ok["allow_origin"], allowed, "{ok}");
    assert!(
        ok["allow_methods"].as_str().unwrap().contains("POST"),
        "{ok}"
    );
    let headers = ok["allow_headers"].as_str().unwrap();
    assert!(
        headers.contains("authorization") && headers.contains("x-grpc-web"),
        "{ok}"
    );
    let refused = &seen["preflight_refused"];
    assert!(refused["allow_origin"].is_null(), "{refused}");
    fed.stop_all().await;
}

/// The ```python blocks of docs/API.md, in order, as one program.
fn api_doc_python() -> String {
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/API.md"))
            .unwrap();
    let mut program = String::new();
    let mut inside = false;
    for line in doc.lines() {
        if inside && line.trim_start().starts_with("```") {
            inside = false;
            program.push('\n');
        } else if inside {
            program.push_str(line);
            program.push('\n');
        } else if line.trim() == "```python" {
            inside = true;
        }
    }
    program
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_examples_of_the_api_document_run_against_a_demo_federation() {
    if !python_available("grpc, grpc_tools, grpc_reflection") {
        return;
    }
    let program = api_doc_python();
    assert!(
        program.contains("secure_channel") && program.contains("ListCities"),
        "docs/API.md lost its Python examples:\n{program}"
    );
    let dir = tempfile::tempdir().unwrap();
    let cities = vec!["lund".to_string(), "malmo".to_string()];
    let (running, file) = sfs_node::node::demo::start(dir.path(), &cities)
        .await
        .unwrap();
    sfs_node::node::demo::seed(&file).await.unwrap();
    let gen = dir.path().join("gen");
    std::fs::create_dir_all(&gen).unwrap();
    let script = dir.path().join("api_examples.py");
    std::fs::write(&script, &program).unwrap();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let lund = file.cities["lund"].clone();
    let (hub, ca) = (file.hub.clone(), file.ca.clone());
    let output = tokio::task::spawn_blocking(move || {
        // The generation step exactly as the document gives it, from the repository's root.
        let generated = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "python3 -m grpc_tools.protoc -Iproto --python_out={0} --grpc_python_out={0} proto/stadforstad/v1/*.proto",
                gen.display()
            ))
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(
            generated.status.success(),
            "{}",
            String::from_utf8_lossy(&generated.stderr)
        );
        let host = |api: &str| api.trim_start_matches("https://").to_string();
        Command::new("python3")
            .arg(&script)
            .env("PYTHONPATH", &gen)
            .env("CA", &ca)
            .env("NODE", host(&lund.api))
            .env("TOKEN", &lund.token)
            .env("HUB", host(&hub.api))
            .env("HUB_TOKEN", &hub.token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the examples of docs/API.md failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("created cities/lund/lessons/"), "{stdout}");
    assert!(
        stdout.contains("refused: INVALID_ARGUMENT field `parent`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("national figures from 2 releases"),
        "{stdout}"
    );
    assert!(
        stdout.contains("member cities:") && stdout.contains("Lund"),
        "{stdout}"
    );
    assert!(stdout.contains("grpc.health.v1.Health"), "{stdout}");
    for node in running {
        node.stop().await;
    }
}
