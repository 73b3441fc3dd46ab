//! Redaction of the national handbook, through the real API and the `sfs` command line: text is
//! taken out of `national/method` and out of its history at the hub (`Method.RedactHandbook`),
//! every city replaces its copy (also one offline during the redaction), releases signed over
//! the destroyed generation stop running, and no city serves either the redacted text or the
//! hub's unsigned content in between: it reports that it awaits a release of the new generation
//! until the coordinator signs one (also across a restart). Nothing of the removed text stays readable in any data
//! directory (with its at-rest key, documents expanded) or in a backup made afterwards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sfs_client::release::SigningKey;
use sfs_client::v1 as pb;
use sfs_client::{Client, ClientError, ReleaseDraft};
use sfs_node::api::tokens::ApiRole;
use tonic::Code;

use crate::redaction::{generation_of, scan_everything};
use crate::util::{eventually, Federation};

const DOC: &str = "national/method";

fn draft(label: &str) -> ReleaseDraft {
    ReleaseDraft {
        label: label.into(),
        notes: String::new(),
        valid_for_ms: 30 * 86_400_000,
        number: None,
        version: None,
    }
}

fn code(result: Result<pb::RedactHandbookResponse, ClientError>) -> (Code, String) {
    match result {
        Err(ClientError::Status(status)) => (status.code(), status.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// Every text of a handbook, one per line.
fn texts(handbook: &pb::Handbook) -> String {
    let mut all = String::new();
    for chapter in &handbook.chapters {
        all += &format!("{}\n{}\n", chapter.title, chapter.introduction);
        for step in &chapter.steps {
            all += &format!("{}\n{}\n", step.title, step.description);
            for item in &step.checklist {
                all += &format!("{}\n", item.text);
            }
        }
    }
    all
}

/// Waits until the node behind `client` runs the release labelled `label`, with its content.
async fn wait_running(client: &Client, label: &str) -> pb::Handbook {
    eventually(&format!("running release {label}"), || {
        let mut client = client.clone();
        async move {
            let running = client.running_release().await.ok()?;
            if running.release.as_ref()?.version_label != label || running.awaiting_release {
                return None;
            }
            let served = client.handbook().await.ok()?;
            (served.verified && served.current_release == label).then_some(served)
        }
    })
    .await
}

/// Runs `sfs` in-process against the hub with its admin token.
async fn sfs(fed: &Federation, args: &[&str]) -> Result<String, String> {
    let api = format!("https://{}", fed.hub.running.as_ref().unwrap().api_addr);
    let ca = fed.pki_dir().join("ca.crt").display().to_string();
    let mut argv: Vec<String> = [
        "sfs",
        "--endpoint",
        &api,
        "--token",
        &fed.hub.admin_token,
        "--ca",
        &ca,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut out = Vec::new();
    match sfs_client::cli::run(argv, &mut out).await {
        Ok(()) => Ok(String::from_utf8(out).unwrap()),
        Err(err) => Err(err.one_line()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redacted_handbook_text_leaves_no_trace_and_cities_serve_only_signed_content() {
    let mut fed = Federation::start_signed(&["lund", "malmo"]).await;
    let key = SigningKey::read(fed.release_key.as_ref().unwrap()).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut hub = fed.hub_client().await;

    // A handbook with text that should never have been written: in an earlier title of a step
    // (only in the history), in its description and in a checklist item.
    let chapter = hub
        .method
        .create_chapter(pb::CreateChapterRequest {
            chapter: Some(pb::Chapter {
                title: "Outreach".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let step = hub
        .method
        .create_step(pb::CreateStepRequest {
            step: Some(pb::Step {
                chapter: chapter.name.clone(),
                title: "Meet canary-hb-4416".into(),
                description: "Meet partners weekly. canary-hb-7731 at the pier.".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    hub.method
        .update_step(pb::UpdateStepRequest {
            step: Some(pb::Step {
                name: step.name.clone(),
                title: "Meet the partners".into(),
                ..Default::default()
            }),
            update_mask: vec!["title".into()],
        })
        .await
        .unwrap();
    let item = |text: &str| {
        let (mut hub, step, text) = (hub.clone(), step.name.clone(), text.to_string());
        async move {
            hub.method
                .create_checklist_item(pb::CreateChecklistItemRequest {
                    item: Some(pb::ChecklistItem {
                        step,
                        text,
                        ..Default::default()
                    }),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let leaked = item("canary-hb-item-88 calls the night shelter").await;
    item("Book the room").await;
    let first = hub
        .create_signed_release(&key, draft("2027.1"))
        .await
        .unwrap();
    assert_eq!((first.number, first.generation), (1, 0));
    let (lund, malmo) = (fed.client(0).await, fed.client(1).await);
    for city in [&lund, &malmo] {
        let served = wait_running(city, "2027.1").await;
        assert!(texts(&served).contains("canary-hb-7731"));
    }
    // The scans below see the texts where they are, so their finding nothing means something.
    let malmo_dir = fed.cities[1].config.data_dir.clone();
    let before = crate::util::readable_with_key(&malmo_dir);
    for text in ["canary-hb-4416", "canary-hb-7731", "canary-hb-item-88"] {
        assert!(crate::util::contains(&before, text), "{text}");
    }

    // Refusals: at a city, below coordinator, naming nothing, or a text that is not there.
    let names = |name: &str| vec![name.to_string()];
    let mut city_admin = fed.client(0).await;
    let (status, message) = code(
        city_admin
            .redact_handbook(names(&step.name), vec![], String::new())
            .await,
    );
    assert_eq!(status, Code::FailedPrecondition, "{message}");
    assert!(message.contains("at the hub only"), "{message}");
    for role in [ApiRole::Reader, ApiRole::Editor] {
        let mut client = fed.hub_client_with_role(role).await;
        let (status, message) = code(
            client
                .redact_handbook(names(&step.name), vec![], String::new())
                .await,
        );
        assert_eq!(status, Code::PermissionDenied, "{role:?}: {message}");
    }
    let refusals: [(Vec<String>, Vec<String>, &str, Code); 5] = [
        (names("method/steps/nope"), vec![], "", Code::NotFound),
        (names("cities/lund"), vec![], "", Code::InvalidArgument),
        (vec![], vec![], "", Code::InvalidArgument),
        (names(&step.name), names("text"), "", Code::InvalidArgument),
        (
            names(&step.name),
            vec![],
            "not in the handbook",
            Code::NotFound,
        ),
    ];
    for (names, fields, text, expected) in refusals {
        let (status, message) = code(
            hub.redact_handbook(names.clone(), fields, text.into())
                .await,
        );
        assert_eq!(status, expected, "{names:?}: {message}");
    }
    assert_eq!(generation_of(&hub, DOC).await, Some(0));

    // Malmö is away during both redactions. Lund is watched all along: every handbook it serves
    // must be the content of a signed release, or nothing while it awaits one.
    fed.stop_city(1).await;
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = tokio::spawn({
        let (mut lund, watching) = (lund.clone(), watching.clone());
        async move {
            let mut seen = Vec::new();
            while watching.load(Ordering::Relaxed) {
                if let Ok(handbook) = lund.handbook().await {
                    seen.push(handbook);
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            seen
        }
    });

    // First redaction, through the API: a text cut out of the step, no release signed yet.
    let cut = "canary-hb-7731 at the pier.";
    let redacted = hub
        .redact_handbook(names(&step.name), vec![], cut.into())
        .await
        .unwrap();
    assert_eq!(redacted.generation, 1);
    let awaiting = eventually("Lund holds generation 1 and awaits a release of it", || {
        let mut lund = lund.clone();
        async move {
            let running = lund.running_release().await.ok()?;
            (running.handbook_generation == 1 && running.awaiting_release).then_some(running)
        }
    })
    .await;
    assert_eq!(awaiting.release.as_ref().unwrap().version_label, "2027.1");
    assert!(!awaiting.verified);
    let old = awaiting
        .not_running
        .iter()
        .find(|c| c.release.as_ref().unwrap().version_label == "2027.1");
    assert!(
        old.is_none(),
        "the last release run is reported as `release`"
    );
    let mut lund_client = lund.clone();
    let served = lund_client.handbook().await.unwrap();
    assert!(served.awaiting_release && !served.verified && served.chapters.is_empty());
    assert_eq!(served.generation, 1);
    // The unsigned newest state is there (without the text), and not served.
    let latest = lund_client.handbook_latest().await.unwrap();
    assert_eq!(latest.generation, 1);
    assert!(texts(&latest).contains("Meet partners weekly."));
    assert!(!texts(&latest).contains("canary-hb-7731"));
    // The CLI says so too.
    let shown = sfs(&fed, &["handbook", "running"]).await.unwrap();
    assert!(shown.contains("AWAITING a new release"), "{shown}");

    // The hub restarts while it awaits a release too: its stored release stays the floor, and
    // still nothing is served.
    fed.stop_hub().await;
    fed.start_hub().await;
    let mut hub = fed.hub_client().await;
    let running = hub.running_release().await.unwrap();
    assert!(running.awaiting_release, "{running:?}");
    assert_eq!(running.release.as_ref().unwrap().number, 1);
    let served = hub.handbook().await.unwrap();
    assert!(served.awaiting_release && served.chapters.is_empty());
    fed.wait_linked(0).await;

    // The coordinator signs a release of the new generation; cities run it.
    let second = hub
        .create_signed_release(&key, draft("2027.2"))
        .await
        .unwrap();
    assert_eq!((second.number, second.generation), (2, 1));
    let served = wait_running(&lund, "2027.2").await;
    assert!(texts(&served).contains("Meet partners weekly."));
    assert!(!texts(&served).contains("canary-hb-7731"));

    // Second redaction, with the command line: the whole item out, and the next release signed
    // in the same command.
    let key_file = fed.release_key.as_ref().unwrap().display().to_string();
    let output = sfs(
        &fed,
        &[
            "handbook",
            "redact",
            &leaked.name,
            "--key",
            &key_file,
            "--label",
            "2027.3",
        ],
    )
    .await
    .unwrap();
    assert!(output.contains("generation 2"), "{output}");
    let served = wait_running(&lund, "2027.3").await;
    assert_eq!(served.generation, 2);
    assert!(texts(&served).contains("Book the room"));
    assert!(!texts(&served).contains("canary-hb-item-88"));

    // Lund never served anything but signed content, and never the old release after the
    // redaction reached it.
    watching.store(false, Ordering::Relaxed);
    let seen = watcher.await.unwrap();
    assert!(seen.len() > 3, "the watcher saw too little: {}", seen.len());
    let mut redaction_reached = false;
    for handbook in &seen {
        if handbook.awaiting_release {
            assert!(handbook.chapters.is_empty() && !handbook.verified);
            redaction_reached = true;
            continue;
        }
        assert!(handbook.verified, "unsigned content served: {handbook:?}");
        match handbook.current_release.as_str() {
            "2027.1" => assert!(!redaction_reached, "the redacted release served again"),
            "2027.2" | "2027.3" => redaction_reached = true,
            other => panic!("served release {other}"),
        }
    }
    assert!(redaction_reached);
    assert!(
        seen.iter().any(|h| h.awaiting_release),
        "the watcher never saw Lund awaiting a release"
    );

    // Malmö comes back: it drops generation 0 and runs the newest release.
    fed.start_city(1).await;
    let malmo = fed.client(1).await;
    let served = wait_running(&malmo, "2027.3").await;
    assert!(!texts(&served).contains("canary-hb"));
    assert_eq!(generation_of(&malmo, DOC).await, Some(2));

    wait_running(&hub, "2027.3").await;
    let running = fed.client(0).await.running_release().await.unwrap();
    assert_eq!(running.release.unwrap().number, 3);

    // Both redactions are in the hub's access log, with who made them.
    let log = crate::util::access_log(&mut hub).await;
    assert!(log
        .iter()
        .any(|e| e.action == "redact handbook (text)" && e.resource == step.name));
    assert!(log
        .iter()
        .any(|e| e.action == "redact handbook (whole)" && e.resource == leaked.name));

    let texts = ["canary-hb-4416", "canary-hb-7731", "canary-hb-item-88"];
    scan_everything(&fed, scratch.path(), &texts, "running").await;
    fed.stop_all().await;
    scan_everything(&fed, scratch.path(), &texts, "stopped").await;
}
