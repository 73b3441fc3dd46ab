//! Hostile peers, round two: a city with a valid certificate and a client written from
//! `federation.proto` alone, against a real hub — panics in Automerge, links that never close,
//! huge ids, reconnect storms and oversized frames.

use std::collections::BTreeSet;
use std::time::Duration;

use sfs_client::v1 as pb;
use sfs_node::api::tokens::ApiRole;
use sfs_sync::Frame;

use crate::integration::scrape;
use crate::limits::raw_link;
use crate::util::{eventually, Federation, DEADLINE};

/// Reads a link until the hub ends it: `Ok(())` when it ends without a status of its own (after
/// the peer's Goodbye), the status otherwise, and every Goodbye the hub sent first.
async fn link_end(
    inbound: &mut tonic::Streaming<pb::Frame>,
) -> (Result<(), tonic::Status>, Vec<pb::Goodbye>) {
    tokio::time::timeout(DEADLINE, async {
        let mut goodbyes = Vec::new();
        // Bounded by the timeout above: a link that never ends fails the test.
        loop {
            match inbound.message().await {
                Ok(Some(pb::Frame {
                    body: Some(pb::frame::Body::Goodbye(bye)),
                })) => goodbyes.push(bye),
                Ok(Some(_)) => continue,
                Ok(None) => return (Ok(()), goodbyes),
                Err(status) => return (Err(status), goodbyes),
            }
        }
    })
    .await
    .expect("the hub ends the link in time")
}

/// The value of an unlabelled gauge in a Prometheus scrape.
fn gauge(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// The file descriptors of this process that are TCP sockets to or from `port` (the hub's
/// federation listener): both ends of every federation connection the test made.
fn sockets_of_port(port: u16) -> usize {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 {
                continue;
            }
            let port_of = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if port_of(fields[1]) == Some(port) || port_of(fields[2]) == Some(port) {
                inodes.insert(fields[9].to_string());
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| {
            let target = target.to_string_lossy();
            target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .is_some_and(|inode| inodes.contains(inode))
        })
        .count()
}

async fn hub_streams(fed: &Federation) -> i64 {
    let metrics = fed.hub.running.as_ref().unwrap().metrics_addr.unwrap();
    gauge(&scrape(metrics).await, "sfs_sync_streams_open").expect("the gauge is exported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_link_the_hub_or_its_peer_ends_frees_its_stream_and_descriptors() {
    let mut fed = Federation::start_with(&[], |config| {
        config.federation.keepalive_ms = Some(250);
        config.limits.peer_link_burst = 100;
    })
    .await;
    let port = fed.hub_federation_addr().port();
    let baseline = sockets_of_port(port);
    // 1. Many links on one certificate: each newer one replaces the one before, which ends
    //    with ABORTED and a Goodbye saying why; the last one says Goodbye itself.
    let mut replaced = Vec::new();
    for _ in 0..25 {
        replaced.push(raw_link(&fed, "lund", None).await.unwrap());
    }
    let (last_tx, mut last) = replaced.pop().unwrap();
    for (_tx, inbound) in replaced.iter_mut() {
        let (end, goodbyes) = link_end(inbound).await;
        let status = end.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
        assert!(
            goodbyes
                .iter()
                .any(|g| g.message.contains("replaced by a newer link")),
            "the Goodbye is sent before the stream closes: {goodbyes:?}"
        );
    }
    last_tx
        .send(sfs_node::federation::sync::to_pb(Frame::Goodbye {
            code: 0,
            message: "leaving".into(),
        }))
        .await
        .unwrap();
    let (end, _) = link_end(&mut last).await;
    assert!(
        end.is_ok(),
        "after the peer's Goodbye the stream just ends: {end:?}"
    );
    // 2. Many certificates: each says Goodbye, or goes silent until the peer timeout (1 s).
    let mut links = Vec::new();
    for i in 0..20 {
        let (tx, inbound) = raw_link(&fed, &format!("city{i}"), None).await.unwrap();
        if i % 2 == 0 {
            tx.send(sfs_node::federation::sync::to_pb(Frame::Goodbye {
                code: 0,
                message: String::new(),
            }))
            .await
            .unwrap();
        }
        links.push((tx, inbound));
    }
    for (i, (_tx, inbound)) in links.iter_mut().enumerate() {
        let (end, goodbyes) = link_end(inbound).await;
        if i % 2 == 0 {
            assert!(end.is_ok(), "{end:?}");
        } else {
            let status = end.unwrap_err();
            assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
            assert_eq!(goodbyes.len(), 1, "{goodbyes:?}");
        }
    }
    // The hub holds no stream any more, while the clients still hold their connections.
    eventually("the hub holds no federation stream", || async {
        (hub_streams(&fed).await == 0).then_some(())
    })
    .await;
    let open = sockets_of_port(port);
    assert!(open > baseline, "the clients still hold their connections");
    // Once the clients go, every descriptor of their connections is freed on both sides.
    drop(replaced);
    drop(links);
    drop(last);
    drop(last_tx);
    eventually("the descriptors come back down", || async {
        let now = sockets_of_port(port);
        (now <= baseline).then_some(())
    })
    .await;
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconnects_leave_the_directory_unchanged_and_are_bounded_per_city() {
    let mut fed = Federation::start_with(&["lund"], |config| {
        config.limits.peer_link_burst = 15;
        config.limits.peer_links_per_minute = 1;
    })
    .await;
    let mut hub = fed.hub_client_with_role(ApiRole::Admin).await;
    for city in ["lund", "malmo"] {
        hub.directory
            .create_city(pb::CreateCityRequest {
                city: Some(pb::City {
                    name: format!("cities/{city}"),
                    display_name: city.into(),
                    county: "Skåne".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    let directory_changes = |fed: &Federation| {
        let running = fed.hub.running.as_ref().unwrap();
        running.sync().read(|engine| {
            engine
                .document(&sfs_sync::ShareableDocId::parse("national/directory").unwrap())
                .map(|doc| doc.get_changes(&[]).len())
                .unwrap()
        })
    };
    let before = directory_changes(&fed);
    // Malmö reconnects until it is refused: up to its burst, each link replaces the last.
    let mut refused = None;
    let mut held = Vec::new();
    for i in 0..40 {
        match raw_link(&fed, "malmo", None).await {
            Ok(link) => held.push(link),
            Err(status) => {
                refused = Some((i, status));
                break;
            }
        }
    }
    let (count, status) = refused.expect("a reconnect storm is refused");
    assert_eq!(count, 15, "the burst");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("limits.peer_links_per_minute"),
        "{}",
        status.message()
    );
    // Presence is shown from memory: Malmö is connected (its newest link) and seen now.
    let cities = eventually("the hub shows Malmö connected", || {
        let mut hub = hub.clone();
        async move {
            let list = hub
                .directory
                .list_cities(pb::ListRequest::default())
                .await
                .ok()?
                .into_inner()
                .cities;
            list.iter()
                .any(|c| c.name == "cities/malmo" && c.connected && c.last_seen_ms > 0)
                .then_some(list)
        }
    })
    .await;
    assert!(cities
        .iter()
        .any(|c| c.name == "cities/lund" && c.connected));
    drop(held);
    eventually(
        "the hub shows Malmö gone, with when it was last seen",
        || {
            let mut hub = hub.clone();
            async move {
                let list = hub
                    .directory
                    .list_cities(pb::ListRequest::default())
                    .await
                    .ok()?
                    .into_inner()
                    .cities;
                list.iter()
                    .any(|c| c.name == "cities/malmo" && !c.connected && c.last_seen_ms > 0)
                    .then_some(())
            }
        },
    )
    .await;
    // Lund reconnects too (a hub restart is not needed: stop and start the city).
    fed.stop_city(0).await;
    fed.start_city(0).await;
    fed.wait_linked(0).await;
    assert_eq!(
        directory_changes(&fed),
        before,
        "links going up and down wrote nothing into national/directory"
    );
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_ids_oversized_frames_and_repeated_needs_end_only_their_link_with_a_clear_status() {
    let mut fed = Federation::start(&["lund"]).await;
    let mut hub = fed.hub_client_with_role(ApiRole::Admin).await;
    hub.directory
        .create_city(pb::CreateCityRequest {
            city: Some(pb::City {
                name: "cities/lund".into(),
                display_name: "Lund".into(),
                county: "Skåne".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    // A 6 MiB document id: refused, and the hub's status stays small and readable.
    let (tx, mut inbound) = raw_link(&fed, "malmo", None).await.unwrap();
    tx.send(pb::Frame {
        body: Some(pb::frame::Body::DocSync(pb::DocSync {
            doc_id: "shared/lessons/".to_string() + &"x".repeat(6 * 1024 * 1024),
            message: vec![],
            generation: 0,
        })),
    })
    .await
    .unwrap();
    let (end, _) = link_end(&mut inbound).await;
    let status = end.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().len() < 1_000, "{}", status.message().len());
    let view = hub.status().await.expect("the status still fits its limit");
    let malmo = view.peers.iter().find(|p| p.peer_id == "malmo").unwrap();
    assert!(
        malmo.last_error.chars().count() <= sfs_node::federation::sync::MAX_LAST_ERROR_CHARS + 1,
        "{}",
        malmo.last_error.len()
    );
    drop((tx, inbound));
    // A frame over the transport limit: RESOURCE_EXHAUSTED, not OK.
    let (tx, mut inbound) = raw_link(&fed, "malmo", None).await.unwrap();
    tx.send(pb::Frame {
        body: Some(pb::frame::Body::DocSync(pb::DocSync {
            doc_id: "shared/lessons/malmo".into(),
            message: vec![0; sfs_node::federation::sync::MAX_FRAME_BYTES + 1],
            generation: 0,
        })),
    })
    .await
    .unwrap();
    let (end, _) = link_end(&mut inbound).await;
    let status = end.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    drop((tx, inbound));
    // A summary of more documents than any federation holds: counted before it is decoded.
    let (tx, mut inbound) = raw_link(&fed, "malmo", None).await.unwrap();
    tx.send(pb::Frame {
        body: Some(pb::frame::Body::Summary(pb::HeadsSummary {
            docs: vec![pb::DocHeads::default(); sfs_proto::codec::MAX_SUMMARY_DOCS + 1],
            only_changed: false,
            digest: vec![0; 32],
        })),
    })
    .await
    .unwrap();
    let (end, _) = link_end(&mut inbound).await;
    let status = end.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("refused before decoding"),
        "{}",
        status.message()
    );
    drop((tx, inbound));
    // The message: need [x, x] of a change of national/directory, with the reset flag.
    let heads = hub
        .status()
        .await
        .unwrap()
        .documents
        .into_iter()
        .find(|d| d.doc_id == "national/directory")
        .unwrap()
        .heads;
    let x: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&heads[0][2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut message = vec![0x42, 0x00, 0x02];
    message.extend_from_slice(&x);
    message.extend_from_slice(&x);
    message.extend_from_slice(&[0x00, 0x00, 0x02, 0x02, 0x85]);
    let (tx, mut inbound) = raw_link(&fed, "malmo", None).await.unwrap();
    tx.send(pb::Frame {
        body: Some(pb::frame::Body::DocSync(pb::DocSync {
            doc_id: "national/directory".into(),
            message,
            generation: 0,
        })),
    })
    .await
    .unwrap();
    let (end, _) = link_end(&mut inbound).await;
    let status = end.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("twice"), "{}", status.message());
    // Lund's link was never touched and still carries lessons to the hub.
    fed.client(0)
        .await
        .create_lesson("Still flowing", "", vec![])
        .await
        .unwrap();
    crate::wait_for_title(&fed.hub_client().await, "Still flowing").await;
    fed.stop_all().await;
}

/// Malmö's lessons with 40 long texts, as one sync message of plain changes (about 1.4 MiB,
/// 800,000 operations: every limit on a change and a document holds), and its heads.
fn large_message_of_malmo() -> (Vec<u8>, BTreeSet<String>) {
    large_message_of_malmo_run(9)
}

/// Like [`large_message_of_malmo`], written by run `run` of Malmö (its own actor, its own keys),
/// so each run adds 40 new texts.
fn large_message_of_malmo_run(run: u8) -> (Vec<u8>, BTreeSet<String>) {
    use automerge::transaction::Transactable;
    let actor = sfs_sync::run_actor(&sfs_sync::NodeId::city("malmo").unwrap(), [run; 8]);
    let mut doc = automerge::Automerge::new().with_actor(actor);
    for i in 0..40 {
        let mut tx = doc.transaction();
        let text = tx
            .put_object(
                automerge::ROOT,
                format!("notes{i}"),
                automerge::ObjType::Text,
            )
            .unwrap();
        tx.splice_text(&text, 0, 0, &"lärdom ".repeat(20_000 / 7))
            .unwrap();
        tx.commit();
    }
    let mut heads = doc.get_heads();
    heads.sort();
    let changes: Vec<Vec<u8>> = doc
        .get_changes(&[])
        .iter()
        .map(|change| change.raw_bytes().to_vec())
        .collect();
    let message = automerge::sync::Message {
        heads: heads.clone(),
        need: Vec::new(),
        have: Vec::new(),
        changes: changes.into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    let heads = heads.iter().map(|h| h.to_string()).collect();
    (message.encode(), heads)
}

/// The heads the hub reports for `doc`.
async fn hub_heads(hub: &mut sfs_client::Client, doc: &str) -> Option<BTreeSet<String>> {
    let status = hub.status().await.ok()?;
    let found = status.documents.into_iter().find(|d| d.doc_id == doc)?;
    Some(found.heads.into_iter().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_the_hub_applies_a_large_message_its_api_and_other_cities_go_on() {
    let mut fed = Federation::start(&["lund"]).await;
    let mut hub = fed.hub_client_with_role(ApiRole::Admin).await;
    let (message, final_heads) = large_message_of_malmo();
    let (tx, _inbound) = raw_link(&fed, "malmo", None).await.unwrap();
    tx.send(sfs_node::federation::sync::to_pb(Frame::DocSync {
        doc: sfs_sync::ShareableDocId::lessons("malmo").unwrap(),
        generation: 0,
        message,
    }))
    .await
    .unwrap();
    // The hub applies the message a slice at a time: its API answers in between, and shows
    // part of the message. (Were the engine held for the whole message, the status would
    // answer only once it was whole.)
    eventually(
        "the hub's status shows Malmö's message applied in part",
        || {
            let mut hub = hub.clone();
            let final_heads = final_heads.clone();
            async move {
                let heads = hub_heads(&mut hub, "shared/lessons/malmo").await?;
                (!heads.is_empty() && heads != final_heads).then_some(())
            }
        },
    )
    .await;
    // Meanwhile Lund's lesson reaches the hub.
    fed.client(0)
        .await
        .create_lesson("Beside a large message", "", vec![])
        .await
        .unwrap();
    crate::wait_for_title(&hub, "Beside a large message").await;
    let heads = hub_heads(&mut hub, "shared/lessons/malmo").await.unwrap();
    assert_ne!(
        heads, final_heads,
        "Lund's lesson waited until the hub had applied all of Malmö's message"
    );
    // And the whole message is applied in the end.
    eventually("Malmö's whole message applied at the hub", || {
        let mut hub = hub.clone();
        let final_heads = final_heads.clone();
        async move { (hub_heads(&mut hub, "shared/lessons/malmo").await? == final_heads).then_some(()) }
    })
    .await;
    fed.stop_all().await;
}

/// This process's resident memory, in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// A measurement, not a check (BENCHMARKS.md, "memory after attack runs"): the resident memory
/// of one process holding a hub and a city (as `sfs-node demo` holds every node) across rounds
/// of refused attacks, then rounds of accepted large messages. Run with
/// `cargo test -p sfs-tests --test federation memory_across_attack_runs -- --ignored --nocapture`
/// as the node runs, and with `SFS_MALLOC_DEFAULT=1` (glibc's default allocator settings).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn memory_across_attack_runs() {
    // As `sfs-node` does at start-up; SFS_MALLOC_DEFAULT=1 measures glibc's default instead.
    if std::env::var_os("SFS_MALLOC_DEFAULT").is_none() {
        sfs_node::node::memory::return_large_blocks_to_the_system();
    }
    let mut fed = Federation::start_with(&["lund"], |config| {
        config.limits.peer_link_burst = 1_000;
    })
    .await;
    let mut hub = fed.hub_client_with_role(ApiRole::Admin).await;
    println!("start: {} MiB", rss_mib());
    for round in 0..4 {
        // Refused: huge ids, repeated needs.
        for _ in 0..10 {
            let (tx, mut inbound) = raw_link(&fed, "malmo", None).await.unwrap();
            tx.send(pb::Frame {
                body: Some(pb::frame::Body::DocSync(pb::DocSync {
                    doc_id: "shared/lessons/".to_string() + &"x".repeat(6 * 1024 * 1024),
                    message: vec![],
                    generation: 0,
                })),
            })
            .await
            .unwrap();
            let _ = link_end(&mut inbound).await;
        }
        eventually("every attack link ended", || async {
            (hub_streams(&fed).await <= 1).then_some(())
        })
        .await;
        // The test federation keeps every frame the hub received (`hub_tap`); a node does not.
        fed.hub_tap.lock().unwrap().clear();
        println!("after refused round {round}: {} MiB", rss_mib());
    }
    for round in 0..4u8 {
        let (message, final_heads) = large_message_of_malmo_run(10 + round);
        let (tx, inbound) = raw_link(&fed, "malmo", None).await.unwrap();
        tx.send(sfs_node::federation::sync::to_pb(Frame::DocSync {
            doc: sfs_sync::ShareableDocId::lessons("malmo").unwrap(),
            generation: 0,
            message,
        }))
        .await
        .unwrap();
        // A debug build applies and stores a growing document slowly: a deadline of its own.
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            let heads = hub_heads(&mut hub, "shared/lessons/malmo").await;
            if heads.is_some_and(|heads| final_heads.is_subset(&heads)) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the message was applied"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop((tx, inbound));
        fed.hub_tap.lock().unwrap().clear();
        let ops = hub.status().await.unwrap().documents.len();
        println!(
            "after accepted round {round} (+800,000 operations in Malmö's lessons; {ops} documents): {} MiB",
            rss_mib()
        );
    }
    fed.stop_all().await;
    println!("after stopping every node: {} MiB", rss_mib());
}
