//! Signed handbook releases: a city runs only what the national coordinator signed, and a
//! compromised hub — which can write anything into `national/method` — cannot make it run a
//! forged, altered, older or expired release.

use sfs_client::release::SigningKey;
use sfs_client::v1 as pb;
use sfs_client::{Client, ClientError, ReleaseDraft};
use sfs_node::domain::method::{method_doc, write_release};
use tonic::Code;

use crate::util::{eventually, Federation};

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    sfs_node::api::now_ms()
}

fn coordinator_key(fed: &Federation) -> SigningKey {
    SigningKey::read(fed.release_key.as_ref().unwrap()).unwrap()
}

fn draft(label: &str, number: Option<i64>) -> ReleaseDraft {
    ReleaseDraft {
        label: label.into(),
        notes: format!("Notes of {label}"),
        valid_for_ms: 30 * DAY_MS,
        number,
        version: None,
    }
}

async fn add_chapter(hub: &mut Client, title: &str) {
    hub.method
        .create_chapter(pb::CreateChapterRequest {
            chapter: Some(pb::Chapter {
                title: title.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

fn chapter_titles(handbook: &pb::Handbook) -> Vec<String> {
    handbook.chapters.iter().map(|c| c.title.clone()).collect()
}

fn code(err: ClientError) -> (Code, String) {
    match err {
        ClientError::Status(status) => (status.code(), status.message().to_string()),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

/// Waits until city `i` runs the release labelled `label`.
async fn wait_running(fed: &Federation, i: usize, label: &str) -> pb::RunningRelease {
    let client = fed.client(i).await;
    eventually(&format!("city {i} runs release {label}"), || {
        let mut client = client.clone();
        let label = label.to_string();
        async move {
            let running = client.running_release().await.ok()?;
            (running.release.as_ref()?.version_label == label).then_some(running)
        }
    })
    .await
}

/// Waits until city `i` reports the release labelled `label` as not run, and returns the check.
async fn wait_not_running(fed: &Federation, i: usize, label: &str) -> pb::RunningRelease {
    let client = fed.client(i).await;
    eventually(
        &format!("city {i} reports release {label} as not run"),
        || {
            let mut client = client.clone();
            let label = label.to_string();
            async move {
                let running = client.running_release().await.ok()?;
                running
                    .not_running
                    .iter()
                    .any(|c| c.release.as_ref().unwrap().version_label == label)
                    .then_some(running)
            }
        },
    )
    .await
}

fn check_of<'a>(running: &'a pb::RunningRelease, label: &str) -> &'a pb::ReleaseCheck {
    running
        .not_running
        .iter()
        .find(|c| c.release.as_ref().unwrap().version_label == label)
        .unwrap_or_else(|| panic!("no check of {label} in {running:?}"))
}

/// What a compromised hub (or anyone with its data directory) can do: write any record into
/// `national/method`, bypassing every check of the API. Returns the record's id.
async fn inject_release(fed: &Federation, release: pb::Release) -> String {
    let sync = fed.hub.running.as_ref().unwrap().sync().clone();
    let id = format!("injected{}", now_ms());
    let record = id.clone();
    tokio::task::spawn_blocking(move || {
        sync.edit(&method_doc(), |tx| write_release(tx, &record, &release))
            .unwrap()
    })
    .await
    .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_release_propagates_and_the_city_runs_it_and_serves_its_content() {
    let mut fed = Federation::start_signed(&["lund"]).await;
    let key = coordinator_key(&fed);
    let mut hub = fed.hub_client().await;
    add_chapter(&mut hub, "Build the local network").await;
    let created = hub
        .create_signed_release(&key, draft("2027.1", None))
        .await
        .unwrap();
    assert_eq!(created.number, 1);
    assert_eq!(created.key_id, key.public_key().key_id());
    // Work on the next release goes on at the hub; cities must not serve it yet.
    add_chapter(&mut hub, "Draft chapter, not released").await;

    let running = wait_running(&fed, 0, "2027.1").await;
    assert!(running.key_configured && running.verified && !running.expired);
    assert_eq!(running.key_id, key.public_key().key_id());
    assert_eq!(running.release.as_ref().unwrap().number, 1);
    assert!(running.not_running.is_empty(), "{:?}", running.not_running);

    let mut city = fed.client(0).await;
    eventually("Lund has the hub's draft chapter", || {
        let mut city = city.clone();
        async move {
            let latest = city.handbook_latest().await.ok()?;
            (latest.chapters.len() == 2).then_some(())
        }
    })
    .await;
    let served = city.handbook().await.unwrap();
    assert!(served.verified);
    assert_eq!(served.current_release, "2027.1");
    assert_eq!(served.version, created.version);
    assert_eq!(chapter_titles(&served), ["Build the local network"]);
    let latest = city.handbook_latest().await.unwrap();
    assert!(!latest.verified);
    assert_eq!(latest.chapters.len(), 2);

    // The city tells the hub, in its own progress document, which release it runs.
    hub.directory
        .create_city(pb::CreateCityRequest {
            city: Some(pb::City {
                name: "cities/lund".into(),
                display_name: "Lund".into(),
                county: "Skåne län".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    eventually("the hub's directory shows the release Lund runs", || {
        let mut hub = hub.clone();
        async move {
            let cities = hub
                .directory
                .list_cities(pb::ListRequest::default())
                .await
                .ok()?
                .into_inner()
                .cities;
            let lund = cities.iter().find(|c| c.name == "cities/lund")?;
            (lund.running_release == "2027.1" && lund.running_release_number == 1).then_some(())
        }
    })
    .await;

    // With a release key configured the hub takes only signed releases.
    let unsigned = hub
        .method
        .create_release(pb::CreateReleaseRequest {
            release: Some(pb::Release {
                version_label: "unsigned".into(),
                ..Default::default()
            }),
        })
        .await
        .map_err(ClientError::from)
        .unwrap_err();
    let (status, message) = code(unsigned);
    assert_eq!(status, Code::FailedPrecondition, "{message}");
    assert!(message.contains("only signed releases"), "{message}");

    // The running release survives a restart of the city, before any link is up.
    fed.stop_city(0).await;
    fed.stop_hub().await;
    fed.start_city(0).await;
    let mut city = fed.client(0).await;
    let again = city.running_release().await.unwrap();
    assert_eq!(again.release.unwrap().version_label, "2027.1");
    assert_eq!(
        chapter_titles(&city.handbook().await.unwrap()),
        ["Build the local network"]
    );
    // A backup carries it, so a restored city cannot be made to fall back to an older one.
    let bytes = crate::util::backup_bytes(&mut city).await;
    let archive = <pb::BackupArchive as prost::Message>::decode(bytes.as_slice()).unwrap();
    let carried =
        <pb::Release as prost::Message>::decode(archive.running_release.as_slice()).unwrap();
    assert_eq!(carried.version_label, "2027.1");
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compromised_hub_cannot_make_a_city_run_a_forged_or_altered_release() {
    let mut fed = Federation::start_signed(&["lund"]).await;
    let key = coordinator_key(&fed);
    let mut hub = fed.hub_client().await;
    add_chapter(&mut hub, "Genuine chapter").await;
    let genuine = hub
        .create_signed_release(&key, draft("2027.1", None))
        .await
        .unwrap();
    wait_running(&fed, 0, "2027.1").await;

    // The attacker changes the handbook and tries to get it run.
    add_chapter(&mut hub, "Planted chapter").await;
    let planted = hub.handbook_latest().await.unwrap().version;

    // 1. Signed with a key of the attacker's own: refused by the hub's API, then injected.
    let attacker = {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("a.key"), dir.path().join("a.pub"));
        sfs_client::release::generate_key_files(&private, &public).unwrap();
        SigningKey::read(&private).unwrap()
    };
    let forged = hub
        .sign_release(&attacker, draft("forged-key", Some(2)), now_ms())
        .await
        .unwrap();
    let (status, message) = code(
        hub.method
            .create_release(pb::CreateReleaseRequest {
                release: Some(forged.clone()),
            })
            .await
            .map_err(ClientError::from)
            .unwrap_err(),
    );
    assert_eq!(status, Code::PermissionDenied, "{message}");
    assert!(message.contains("does not verify"), "{message}");
    inject_release(&fed, forged).await;
    // Correctly signed, but naming heads the hub's handbook does not have.
    let mut elsewhere = draft("elsewhere", Some(2));
    elsewhere.version = Some("cd".repeat(32));
    let elsewhere = hub.sign_release(&key, elsewhere, now_ms()).await.unwrap();
    let (status, message) = code(
        hub.method
            .create_release(pb::CreateReleaseRequest {
                release: Some(elsewhere),
            })
            .await
            .map_err(ClientError::from)
            .unwrap_err(),
    );
    assert_eq!(status, Code::FailedPrecondition, "{message}");
    assert!(message.contains("heads"), "{message}");

    // 2. The genuine signature with the heads moved to the planted state.
    let mut moved = genuine.clone();
    moved.version = planted.clone();
    moved.number = 2;
    moved.version_label = "moved-heads".into();
    inject_release(&fed, moved).await;

    // 3. The genuine signature and heads under another label.
    let mut relabelled = genuine.clone();
    relabelled.version_label = "relabelled".into();
    inject_release(&fed, relabelled).await;

    // 4. The running release's own record altered in place.
    let genuine_id = genuine.name.rsplit('/').next().unwrap().to_string();
    let sync = fed.hub.running.as_ref().unwrap().sync().clone();
    tokio::task::spawn_blocking(move || {
        use automerge::transaction::Transactable;
        sync.edit(&method_doc(), |tx| {
            let obj = sfs_node::domain::docmodel::record(tx, "releases", &genuine_id).unwrap();
            tx.put(&obj, "version_label", "2027.1-altered")
        })
        .unwrap()
    })
    .await
    .unwrap();

    let mut report = wait_not_running(&fed, 0, "2027.1-altered").await;
    for label in ["forged-key", "moved-heads", "relabelled"] {
        if !report
            .not_running
            .iter()
            .any(|c| c.release.as_ref().unwrap().version_label == label)
        {
            report = wait_not_running(&fed, 0, label).await;
        }
    }
    for label in ["forged-key", "moved-heads", "relabelled", "2027.1-altered"] {
        let check = check_of(&report, label);
        assert!(!check.older, "{label}: {check:?}");
        assert!(
            check.reason.contains("does not verify"),
            "{label}: {}",
            check.reason
        );
    }
    // The city keeps running the genuine release and serving its content.
    let running = report.release.as_ref().unwrap();
    assert_eq!(
        (running.version_label.as_str(), running.number),
        ("2027.1", 1)
    );
    assert_eq!(running.signature, genuine.signature);
    let mut city = fed.client(0).await;
    let served = city.handbook().await.unwrap();
    assert_eq!(chapter_titles(&served), ["Genuine chapter"]);
    assert_eq!(served.version, genuine.version);

    // A genuine release signed by the coordinator afterwards is run.
    hub.create_signed_release(&key, draft("2027.2", None))
        .await
        .unwrap();
    wait_running(&fed, 0, "2027.2").await;
    let mut titles = chapter_titles(&city.handbook().await.unwrap());
    titles.sort();
    assert_eq!(titles, ["Genuine chapter", "Planted chapter"]);
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_release_number_is_refused() {
    let mut fed = Federation::start_signed(&["lund"]).await;
    let key = coordinator_key(&fed);
    let mut hub = fed.hub_client().await;
    add_chapter(&mut hub, "Chapter").await;
    let newest = hub
        .create_signed_release(&key, draft("2027.3", Some(3)))
        .await
        .unwrap();
    wait_running(&fed, 0, "2027.3").await;

    // Correctly signed, but numbered below the running release.
    let older = hub
        .sign_release(&key, draft("2027.2", Some(2)), now_ms())
        .await
        .unwrap();
    let (status, message) = code(
        hub.method
            .create_release(pb::CreateReleaseRequest {
                release: Some(older.clone()),
            })
            .await
            .map_err(ClientError::from)
            .unwrap_err(),
    );
    assert_eq!(status, Code::FailedPrecondition, "{message}");
    assert!(message.contains("not greater than 3"), "{message}");
    // A hub that withheld it and delivers it now, or was told to roll cities back.
    inject_release(&fed, older).await;

    let report = wait_not_running(&fed, 0, "2027.2").await;
    let check = check_of(&report, "2027.2");
    assert!(check.older, "{check:?}");
    assert!(
        check
            .reason
            .contains("release number 2 is not greater than 3"),
        "{}",
        check.reason
    );
    assert_eq!(report.release.unwrap().version_label, "2027.3");

    // The hub deletes the newer release's record: the city does not fall back to 2027.2.
    let newest_id = newest.name.rsplit('/').next().unwrap().to_string();
    let sync = fed.hub.running.as_ref().unwrap().sync().clone();
    tokio::task::spawn_blocking(move || {
        sync.edit(&method_doc(), |tx| {
            sfs_node::domain::docmodel::delete_record(tx, "releases", &newest_id)
        })
        .unwrap()
    })
    .await
    .unwrap();
    let mut city = fed.client(0).await;
    eventually("Lund has the deletion", || {
        let mut city = city.clone();
        async move {
            let releases = city
                .method
                .list_releases(pb::ListRequest::default())
                .await
                .ok()?;
            (releases.into_inner().releases.len() == 1).then_some(())
        }
    })
    .await;
    let after = city.running_release().await.unwrap();
    assert_eq!(after.release.as_ref().unwrap().version_label, "2027.3");
    assert!(check_of(&after, "2027.2").older);
    assert_eq!(chapter_titles(&city.handbook().await.unwrap()), ["Chapter"]);
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_release_is_refused() {
    let mut fed = Federation::start_signed(&["lund"]).await;
    let key = coordinator_key(&fed);
    let mut hub = fed.hub_client().await;
    add_chapter(&mut hub, "Chapter").await;
    hub.create_signed_release(&key, draft("2027.1", None))
        .await
        .unwrap();
    wait_running(&fed, 0, "2027.1").await;

    // Signed two days ago, valid for one: a release the hub held back until it expired.
    add_chapter(&mut hub, "Late chapter").await;
    let mut late = draft("2027.2", None);
    late.valid_for_ms = DAY_MS;
    let expired = hub
        .sign_release(&key, late, now_ms() - 2 * DAY_MS)
        .await
        .unwrap();
    let (status, message) = code(
        hub.method
            .create_release(pb::CreateReleaseRequest {
                release: Some(expired.clone()),
            })
            .await
            .map_err(ClientError::from)
            .unwrap_err(),
    );
    assert_eq!(status, Code::FailedPrecondition, "{message}");
    assert!(message.contains("expired"), "{message}");
    inject_release(&fed, expired).await;

    let report = wait_not_running(&fed, 0, "2027.2").await;
    let check = check_of(&report, "2027.2");
    assert!(!check.older, "{check:?}");
    assert!(check.reason.contains("expired"), "{}", check.reason);
    assert_eq!(report.release.unwrap().version_label, "2027.1");
    assert_eq!(
        chapter_titles(&fed.client(0).await.handbook().await.unwrap()),
        ["Chapter"]
    );
    fed.stop_all().await;
}
