//! Convergence under faults with real nodes (DESIGN.md promises 4 and 5): the hub restarted in
//! the middle of a large sync, a city that held nothing of a document coming back, a city
//! offline for a long time with changes on both sides, and three cities writing while the hub
//! flaps. Each ends with every lesson everywhere, once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use sfs_client::v1 as pb;
use sfs_node::api::tokens::ApiRole;

use crate::util::{eventually, Federation};

/// A lesson body of about 500 characters that the privacy guard accepts.
fn body(i: usize) -> String {
    format!("Lesson {i}. ")
        + &"The network met, shared what worked and agreed who follows up. ".repeat(8)
}

/// Every lesson title of `city` as listed by `client`, with how often each appears.
async fn title_counts(client: &sfs_client::Client, city: &str) -> Option<BTreeMap<String, usize>> {
    let mut client = client.clone();
    let lessons = client.list_lessons(&format!("cities/{city}")).await.ok()?;
    let mut counts = BTreeMap::new();
    for lesson in lessons {
        *counts.entry(lesson.title).or_insert(0) += 1;
    }
    Some(counts)
}

/// Waits until `client` lists exactly `expected` for `city`, each once.
async fn wait_for_exactly(
    client: &sfs_client::Client,
    where_: &str,
    city: &str,
    expected: &BTreeSet<String>,
) {
    let counts = eventually(
        &format!("{where_} lists the {} lessons of {city}", expected.len()),
        || async {
            let counts = title_counts(client, city).await?;
            (counts.len() >= expected.len()).then_some(counts)
        },
    )
    .await;
    let titles: BTreeSet<String> = counts.keys().cloned().collect();
    assert_eq!(&titles, expected, "{where_}: the lessons of {city}");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{where_}: lessons listed twice: {twice:?}"
    );
}

async fn write(client: &mut sfs_client::Client, prefix: &str, count: usize) -> BTreeSet<String> {
    write_from(client, prefix, 0, count).await
}

/// Like [`write`], numbering the lessons from `first`.
async fn write_from(
    client: &mut sfs_client::Client,
    prefix: &str,
    first: usize,
    count: usize,
) -> BTreeSet<String> {
    let mut titles = BTreeSet::new();
    for i in first..first + count {
        let title = format!("{prefix} {i}");
        client
            .create_lesson(&title, &body(i), vec![])
            .await
            .unwrap();
        titles.insert(title);
    }
    titles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hub_restarted_in_the_middle_of_a_large_sync_loses_and_doubles_nothing() {
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    // Lund writes a large document while the hub is away.
    fed.stop_hub().await;
    let mut lund = fed.client(0).await;
    let written = write(&mut lund, "Lund", 600).await;
    // The hub comes back and is stopped the moment Lund's large sync message reaches it (the
    // tap sees each frame before the hub acts on it): the hub held nothing of the document, so
    // it is the whole document, saved and compressed (about 23 kB; 300 kB as changes). Then
    // the hub starts again.
    fed.hub_tap.lock().unwrap().clear();
    fed.start_hub().await;
    let tap = fed.hub_tap.clone();
    let size = eventually("the large sync message reaches the hub", || async {
        tap.lock()
            .unwrap()
            .iter()
            .find(|(peer, frame)| peer == "lund" && frame.len() > 10_000)
            .map(|(_, frame)| frame.len())
    })
    .await;
    fed.stop_hub().await;
    fed.start_hub().await;
    let hub = fed.hub_client().await;
    wait_for_exactly(&hub, "the hub", "lund", &written).await;
    wait_for_exactly(&fed.client(1).await, "malmo", "lund", &written).await;
    eprintln!("the hub stopped as a {size}-byte sync message arrived");
    fed.stop_all().await;
}

/// Whole documents the hub has sent (its `sfs_sync_messages_made{made_by="whole_document"}`).
async fn whole_documents_sent(fed: &Federation) -> u64 {
    let metrics = fed.hub.running.as_ref().unwrap().metrics_addr.unwrap();
    crate::integration::scrape(metrics)
        .await
        .lines()
        .find_map(|line| line.strip_prefix("sfs_sync_messages_made{made_by=\"whole_document\"} "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_city_that_held_nothing_of_a_document_is_sent_it_whole_and_keeps_it_across_a_restart() {
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    // Malmö is away while Lund writes its first lessons: Malmö holds nothing of them.
    fed.stop_city(1).await;
    let mut lund = fed.client(0).await;
    let written = write(&mut lund, "Lund", 300).await;
    let hub = fed.hub_client().await;
    wait_for_exactly(&hub, "the hub", "lund", &written).await;
    let before = whole_documents_sent(&fed).await;
    fed.start_city(1).await;
    wait_for_exactly(&fed.client(1).await, "malmo", "lund", &written).await;
    let sent = whole_documents_sent(&fed).await - before;
    assert!(sent >= 1, "the hub sent Lund's lessons to Malmö whole");
    // What Malmö stored (the document as received) is what it has after a restart, and one
    // more lesson follows as a change.
    fed.stop_city(1).await;
    fed.start_city(1).await;
    wait_for_exactly(&fed.client(1).await, "malmo", "lund", &written).await;
    let mut written = written;
    written.extend(write_from(&mut lund, "Lund", 300, 1).await);
    wait_for_exactly(&fed.client(1).await, "malmo", "lund", &written).await;
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_city_offline_for_long_with_changes_on_both_sides_catches_up() {
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    let mut coordinator = fed.hub_client_with_role(ApiRole::Coordinator).await;
    fed.stop_city(0).await;
    // While Lund is away: Malmö writes, and the national coordinator edits the handbook.
    let mut malmo = fed.client(1).await;
    let malmo_wrote = write(&mut malmo, "Malmö", 300).await;
    let mut chapters = BTreeSet::new();
    for i in 0..20 {
        let title = format!("Chapter {i}");
        coordinator
            .method
            .create_chapter(pb::CreateChapterRequest {
                chapter: Some(pb::Chapter {
                    title: title.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        chapters.insert(title);
    }
    // Lund writes offline (its store only), then comes back.
    let lund_config = fed.cities[0].config.clone();
    let lund_wrote = {
        let mut offline = lund_config.clone();
        offline.federation.hub_url = Some("https://127.0.0.1:9".into());
        let running = sfs_node::node::start(offline, Default::default())
            .await
            .unwrap();
        let mut client = sfs_client::Client::connect(
            &format!("https://{}", running.api_addr),
            &fed.cities[0].admin_token,
            &fed.ca_pem,
        )
        .await
        .unwrap();
        let wrote = write(&mut client, "Lund", 300).await;
        running.stop().await;
        wrote
    };
    fed.start_city(0).await;
    fed.wait_linked(0).await;
    let lund = fed.client(0).await;
    wait_for_exactly(&lund, "lund", "malmo", &malmo_wrote).await;
    wait_for_exactly(&lund, "lund", "lund", &lund_wrote).await;
    wait_for_exactly(&fed.client(1).await, "malmo", "lund", &lund_wrote).await;
    wait_for_exactly(&fed.hub_client().await, "the hub", "lund", &lund_wrote).await;
    eventually("lund has the handbook written while it was away", || {
        let mut lund = lund.clone();
        let chapters = chapters.clone();
        async move {
            let handbook = lund.handbook().await.ok()?;
            let titles: BTreeSet<String> = handbook.chapters.into_iter().map(|c| c.title).collect();
            (titles == chapters).then_some(())
        }
    })
    .await;
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_cities_writing_while_the_hub_flaps_converge_with_nothing_lost_or_doubled() {
    let cities = ["lund", "malmo", "ystad"];
    let mut fed = Federation::start(&cities).await;
    let acknowledged: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut writers = Vec::new();
    for (i, city) in cities.iter().enumerate() {
        let mut client = fed.client(i).await;
        let acknowledged = acknowledged.clone();
        let stop = stop_rx.clone();
        let city = city.to_string();
        writers.push(tokio::spawn(async move {
            for n in 0..100_000 {
                if *stop.borrow() {
                    return;
                }
                let title = format!("{city} {n}");
                // Every write is local first: it is acknowledged whether or not the hub is up.
                client
                    .create_lesson(&title, &body(n), vec![])
                    .await
                    .unwrap();
                acknowledged
                    .lock()
                    .unwrap()
                    .entry(city.clone())
                    .or_default()
                    .insert(title);
            }
        }));
    }
    let written = |acknowledged: &Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>| {
        acknowledged
            .lock()
            .unwrap()
            .values()
            .map(|s| s.len())
            .sum::<usize>()
    };
    // The hub goes down and comes back six times; between flaps every city writes more.
    for _ in 0..6 {
        let before = written(&acknowledged);
        eventually("the cities write while the hub is up", || async {
            (written(&acknowledged) >= before + 15).then_some(())
        })
        .await;
        fed.stop_hub().await;
        let before = written(&acknowledged);
        eventually("the cities write while the hub is down", || async {
            (written(&acknowledged) >= before + 15).then_some(())
        })
        .await;
        fed.start_hub().await;
    }
    stop_tx.send(true).unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    for i in 0..cities.len() {
        fed.wait_linked(i).await;
    }
    for (i, reader) in cities.iter().enumerate() {
        let client = fed.client(i).await;
        for city in cities {
            wait_for_exactly(&client, reader, city, &acknowledged[city]).await;
        }
    }
    let hub = fed.hub_client().await;
    for city in cities {
        wait_for_exactly(&hub, "the hub", city, &acknowledged[city]).await;
    }
    eprintln!(
        "{} lessons written across 6 hub restarts",
        acknowledged.values().map(|s| s.len()).sum::<usize>()
    );
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_hub_has_joined_every_link_reader_and_released_its_data_directory() {
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    fed.wait_linked(0).await;
    fed.wait_linked(1).await;
    let data_dir = fed.hub.config.data_dir.clone();
    fed.stop_hub().await;
    // No wait at all: every task that held the store (each city's link reader included) has
    // ended when `stop` returns, so the store opens at once.
    let key_file = sfs_node::node::config::default_key_file(&data_dir, None);
    let key = sfs_node::storage::seal::MasterKey::load(&key_file).unwrap();
    let reopened = sfs_node::storage::store::Store::open(&data_dir, std::time::Duration::ZERO, key);
    assert!(
        reopened.is_ok(),
        "the hub's store is still held after stop: {:?}",
        reopened.err()
    );
    drop(reopened);
    fed.stop_all().await;
}
