//! Redaction of shared history, through the real API: text the privacy guard missed is taken
//! out of a city's lessons and out of their history on every node (`Lessons.RedactLesson`,
//! `Lessons.DeleteLesson`). A city offline during the redaction and a hub restarted in the
//! middle end up with the new generation too, and nothing of the removed text is readable in
//! any node's data directory (with its at-rest key, documents expanded with their whole
//! history) or in any backup made afterwards.

use std::path::PathBuf;

use sfs_client::v1 as pb;
use sfs_node::api::tokens::ApiRole;

use crate::util::{
    all_files, backup_bytes, contains, eventually, readable_with_key, readable_with_key_of,
    Federation,
};

/// The `lessons_generation` the directory of the node behind `client` shows for `city`.
async fn lessons_generation_in_directory(client: &sfs_client::Client, city: &str) -> i64 {
    client
        .clone()
        .directory
        .list_cities(pb::ListRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .cities
        .into_iter()
        .find(|c| c.name == city)
        .map(|c| c.lessons_generation)
        .unwrap_or_else(|| panic!("{city} is not in the directory"))
}

/// The generation of `doc` the node behind `client` holds, once it holds the document.
pub(crate) async fn generation_of(client: &sfs_client::Client, doc: &str) -> Option<u64> {
    let status = client.clone().status().await.ok()?;
    status
        .documents
        .iter()
        .find(|d| d.doc_id == doc)
        .map(|d| d.generation)
}

/// Everything of the removed texts the data directory and a fresh backup of each node hold.
pub(crate) async fn scan_everything(
    fed: &Federation,
    scratch: &std::path::Path,
    texts: &[&str],
    when: &str,
) {
    let nodes: Vec<(String, PathBuf, bool)> = std::iter::once(&fed.hub)
        .chain(fed.cities.iter())
        .map(|node| {
            (
                node.config.id.clone(),
                node.config.data_dir.clone(),
                node.running.is_some(),
            )
        })
        .collect();
    for (name, data_dir, running) in nodes {
        let readable = readable_with_key(&data_dir);
        let raw = all_files(&data_dir);
        for text in texts {
            assert!(
                !contains(&readable, text),
                "{when}: {name}'s data directory holds {text} readable with its key"
            );
            for (path, bytes) in &raw {
                assert!(
                    !contains(bytes, text),
                    "{when}: {} holds {text}",
                    path.display()
                );
            }
        }
        if !running {
            continue;
        }
        let node = std::iter::once(&fed.hub)
            .chain(fed.cities.iter())
            .find(|n| n.config.id == name)
            .unwrap();
        let mut client = fed.client_of(node).await;
        let backup = scratch.join(format!("{name}-{}.backup", when.replace(' ', "-")));
        let bytes = backup_bytes(&mut client).await;
        std::fs::write(&backup, &bytes).unwrap();
        let readable = readable_with_key_of(&data_dir, &backup);
        for text in texts {
            assert!(
                !contains(&bytes, text) && !contains(&readable, text),
                "{when}: a backup of {name} made after the redaction holds {text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redacted_and_deleted_lessons_leave_no_trace_on_any_node_or_backup() {
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    fed.wait_linked(0).await;
    fed.wait_linked(1).await;
    let scratch = tempfile::tempdir().unwrap();
    let mut lund = fed.client(0).await;
    let doc = "shared/lessons/lund";

    // Two texts the guard let through, one of them in two versions of the history. Each canary
    // is written whole by one edit: Automerge stores a text edit as the characters it changed,
    // so a canary made by editing another would never be stored in one piece, and a scan for
    // it would prove nothing. The second version adds the second canary at the end.
    let (redacted, earlier, deleted) = (
        "canary-rd-5520 met at the harbour, canary-rd-5521 at the pier",
        "canary-rd-5520 met at the harbour",
        "canary-dl-7734 stayed at the hostel",
    );
    let first = lund
        .create_lesson("Harbour outreach", earlier, vec!["outreach".into()])
        .await
        .unwrap();
    lund.update_lesson(
        pb::Lesson {
            name: first.name.clone(),
            body: redacted.into(),
            ..Default::default()
        },
        vec!["body".into()],
    )
    .await
    .unwrap();
    let second = lund
        .create_lesson("Hostel checks", deleted, vec!["hotels".into()])
        .await
        .unwrap();
    let kept = lund
        .create_lesson("Training works", "Train hotel staff yearly", vec![])
        .await
        .unwrap();
    let malmo = fed.client(1).await;
    eventually("Malmö has every lesson of Lund", || {
        let (mut malmo, name) = (malmo.clone(), kept.name.clone());
        async move { malmo.get_lesson(&name).await.ok().map(drop) }
    })
    .await;
    let malmo_dir = fed.cities[1].config.data_dir.clone();
    // The scans below see each text where it is (so that their finding nothing means something).
    let readable = readable_with_key(&malmo_dir);
    for canary in ["canary-rd-5521", "canary-rd-5520", "canary-dl-7734"] {
        assert!(
            contains(&readable, canary),
            "Malmö holds {canary} before the removals"
        );
    }

    // Malmö is away during both removals.
    fed.stop_city(1).await;
    let mut coordinator = fed.client_with_role(0, ApiRole::Coordinator).await;
    let redaction = coordinator
        .redact_lesson(&first.name, vec!["body".into()])
        .await
        .unwrap();
    assert_eq!(redaction.1, 1);
    assert_eq!(redaction.0.body, "");
    assert_eq!(redaction.0.title, "Harbour outreach");
    // An editor may delete, not redact.
    let mut editor = fed.client_with_role(0, ApiRole::Editor).await;
    let refused = editor.redact_lesson(&kept.name, vec![]).await.unwrap_err();
    assert!(
        format!("{refused}").contains("PermissionDenied")
            || format!("{refused:?}").contains("PermissionDenied"),
        "{refused:?}"
    );
    let hub = fed.hub_client().await;
    eventually("the hub holds generation 1", || {
        let hub = hub.clone();
        async move { (generation_of(&hub, doc).await? == 1).then_some(()) }
    })
    .await;
    // The hub's directory shows which generation of each city's lessons it holds.
    hub.clone()
        .directory
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
    assert_eq!(
        lessons_generation_in_directory(&hub, "cities/lund").await,
        1
    );

    // The hub restarts in the middle: the deletion happens while it is down.
    fed.stop_hub().await;
    assert_eq!(editor.delete_lesson(&second.name).await.unwrap(), 2);
    fed.start_hub().await;
    fed.start_city(1).await;
    let hub = fed.hub_client().await;
    let malmo = fed.client(1).await;
    for (who, client) in [("the hub", &hub), ("Malmö", &malmo)] {
        eventually(&format!("{who} holds generation 2"), || {
            let client = client.clone();
            async move { (generation_of(&client, doc).await? == 2).then_some(()) }
        })
        .await;
    }
    assert_eq!(
        lessons_generation_in_directory(&hub, "cities/lund").await,
        2
    );
    let mut malmo_client = malmo.clone();
    let seen = malmo_client.get_lesson(&first.name).await.unwrap();
    assert_eq!(
        (seen.title.as_str(), seen.body.as_str()),
        ("Harbour outreach", "")
    );
    assert!(malmo_client.get_lesson(&second.name).await.is_err());
    assert_eq!(
        malmo_client.get_lesson(&kept.name).await.unwrap().body,
        "Train hotel staff yearly"
    );

    // Both removals are in Lund's access log, with who made them.
    let log = crate::util::access_log(&mut lund).await;
    assert!(log
        .iter()
        .any(|e| e.action == "redact lesson (body)" && e.resource == first.name));
    assert!(log
        .iter()
        .any(|e| e.action == "delete lesson" && e.resource == second.name));

    // Lessons go on in the new generation.
    let after = lund
        .create_lesson("After", "Written after the removals", vec![])
        .await
        .unwrap();
    eventually("Malmö has the lesson written after", || {
        let (mut malmo, name) = (malmo.clone(), after.name.clone());
        async move { malmo.get_lesson(&name).await.ok().map(drop) }
    })
    .await;

    let texts = ["canary-rd-5521", "canary-rd-5520", "canary-dl-7734"];
    scan_everything(&fed, scratch.path(), &texts, "running").await;
    // And from the stores alone, once every node has stopped.
    fed.stop_all().await;
    scan_everything(&fed, scratch.path(), &texts, "stopped").await;
}
