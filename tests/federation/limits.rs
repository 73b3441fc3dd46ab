//! Limits that keep one flooding city or API token from hurting the others, each attacked
//! through real nodes: a city flooding the hub with frames, a city that stops reading, the
//! same city linking twice, and an API token over its request rate.

use std::time::{Duration, Instant};

use sfs_client::v1 as pb;
use sfs_node::api::tokens::ApiRole;
use sfs_sync::NodeId;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::integration::scrape;
use crate::util::{self, eventually, Federation, DEADLINE};
use crate::wait_for_title;

/// A hand-made federation link as `city` (with a valid certificate), after a correct handshake.
/// `window` sets the HTTP/2 receive windows, so a link that does not read stalls soon.
pub(crate) async fn raw_link(
    fed: &Federation,
    city: &str,
    window: Option<u32>,
) -> Result<
    (
        tokio::sync::mpsc::Sender<pb::Frame>,
        tonic::Streaming<pb::Frame>,
    ),
    tonic::Status,
> {
    raw_link_as(fed, &NodeId::city(city).unwrap(), window).await
}

/// Like [`raw_link`], as any node `id` (a city or a county hub) with a valid certificate.
pub(crate) async fn raw_link_as(
    fed: &Federation,
    id: &NodeId,
    window: Option<u32>,
) -> Result<
    (
        tokio::sync::mpsc::Sender<pb::Frame>,
        tonic::Streaming<pb::Frame>,
    ),
    tonic::Status,
> {
    let id = id.clone();
    let files = util::node_files(&fed.pki_dir(), &id);
    if !files.cert.exists() {
        sfs_node::federation::pki::issue(&fed.pki_dir(), &id, &[], 30).unwrap();
    }
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&fed.ca_pem))
        .identity(Identity::from_pem(
            std::fs::read_to_string(&files.cert).unwrap(),
            std::fs::read_to_string(&files.key).unwrap(),
        ))
        .domain_name(NodeId::hub("national").unwrap().dns_name());
    let mut endpoint = Endpoint::from_shared(fed.hub_url())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    if let Some(window) = window {
        endpoint = endpoint
            .initial_stream_window_size(window)
            .initial_connection_window_size(window);
    }
    let channel = endpoint.connect().await.unwrap();
    let mut client = pb::federation_client::FederationClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tx.send(sfs_node::federation::sync::to_pb(sfs_sync::Frame::Hello {
        protocol_version: sfs_sync::PROTOCOL_VERSION,
    }))
    .await
    .unwrap();
    tx.send(sfs_node::federation::sync::to_pb(sfs_sync::Frame::Summary(
        sfs_sync::Summary {
            docs: Vec::new(),
            only_changed: false,
            digest: sfs_sync::summary_digest(std::iter::empty()),
            generations: Vec::new(),
        },
    )))
    .await
    .unwrap();
    let inbound = client.sync(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, inbound))
}

/// Reads a link until the hub ends it; the final status.
async fn final_status(inbound: &mut tonic::Streaming<pb::Frame>) -> tonic::Status {
    tokio::time::timeout(DEADLINE, async {
        // Bounded: a link that never ends fails the timeout above.
        loop {
            match inbound.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("the hub ends the link in time")
}

/// The state and last error the hub reports for `city`.
async fn hub_view_of(fed: &Federation, city: &str) -> Option<(String, String)> {
    let status = fed.hub_client().await.status().await.ok()?;
    status
        .peers
        .iter()
        .find(|p| p.peer_id == city)
        .map(|p| (p.state.clone(), p.last_error.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_city_flooding_the_hub_is_cut_off_while_other_cities_keep_syncing() {
    let mut fed = Federation::start_with(&["helsingborg", "malmo"], |config| {
        config.limits.peer_frames_per_second = 100;
        config.limits.peer_frame_burst = 500;
        config.limits.peer_cooldown_ms = 60_000;
    })
    .await;
    let (tx, mut inbound) = raw_link(&fed, "lund", None).await.unwrap();
    // Lund sends keepalives as fast as the transport takes them, until the hub stops it.
    let flooding = flood(tx);
    // Meanwhile a lesson from Helsingborg reaches Malmö.
    let started = Instant::now();
    fed.client(0)
        .await
        .create_lesson("Written during the flood", "honest", vec![])
        .await
        .unwrap();
    wait_for_title(&fed.client(1).await, "Written during the flood").await;
    let propagation = started.elapsed();

    let status = final_status(&mut inbound).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("frame rate limit exceeded")
            && status
                .message()
                .contains("100 frames per second (burst 500)")
            && status.message().contains("limits.peer_frames_per_second"),
        "{}",
        status.message()
    );
    drop(inbound);
    let sent = flooding.await.unwrap();
    assert!(sent > 500, "the flood went over the burst ({sent} frames)");
    // Cut off for the cool-down: a new link is refused at once, with the reason.
    let refused = raw_link(&fed, "lund", None).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("try again in"),
        "{}",
        refused.message()
    );
    // The other cities' links were never touched, and still carry lessons.
    for city in ["helsingborg", "malmo"] {
        let (state, error) = hub_view_of(&fed, city).await.unwrap();
        assert_eq!(
            (state.as_str(), error.as_str()),
            ("connected", ""),
            "{city}"
        );
    }
    fed.client(1)
        .await
        .create_lesson("After the flood", "honest", vec![])
        .await
        .unwrap();
    wait_for_title(&fed.client(0).await, "After the flood").await;
    assert!(propagation < DEADLINE, "{propagation:?}");
    let metrics = fed.hub.running.as_ref().unwrap().metrics_addr.unwrap();
    let text = scrape(metrics).await;
    assert!(
        text.contains(r#"sfs_limit_refusals_total{limit="peer_frames_per_second"} 1"#)
            && text.contains(r#"sfs_limit_refusals_total{limit="peer_cooldown"} 1"#),
        "{text}"
    );
    fed.stop_all().await;
}

/// Sends keepalives on a link as fast as the transport takes them, until the hub stops reading
/// or the deadline; how many were sent.
fn flood(tx: tokio::sync::mpsc::Sender<pb::Frame>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < DEADLINE && sent < 1_000_000 {
            let frame = sfs_node::federation::sync::to_pb(sfs_sync::Frame::Keepalive);
            if tx.send(frame).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_county_hub_flooding_the_national_hub_is_cut_off_at_its_weighted_budget() {
    // A county hub carries its cities' traffic on one link: it gets three cities' worth of
    // each budget here, and no more.
    let mut fed = Federation::start_with(&["helsingborg", "malmo"], |config| {
        config.limits.peer_frames_per_second = 50;
        config.limits.peer_frame_burst = 400;
        config.limits.county_budget_cities = 3;
        config.limits.peer_cooldown_ms = 60_000;
    })
    .await;
    let skane = NodeId::county("skane").unwrap();
    let (tx, mut inbound) = raw_link_as(&fed, &skane, None).await.unwrap();
    let flooding = flood(tx);
    // Meanwhile the cities' lessons still cross the hub.
    fed.client(0)
        .await
        .create_lesson("Written while a county hub floods", "honest", vec![])
        .await
        .unwrap();
    wait_for_title(&fed.client(1).await, "Written while a county hub floods").await;

    let status = final_status(&mut inbound).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("150 frames per second (burst 1200)")
            && status.message().contains(
                "limits.peer_frames_per_second × 3 for a county hub, limits.county_budget_cities"
            ),
        "{}",
        status.message()
    );
    drop(inbound);
    let sent = flooding.await.unwrap();
    assert!(
        sent > 1_200,
        "the county hub went over its weighted burst ({sent} frames)"
    );
    let refused = raw_link_as(&fed, &skane, None).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("try again in"),
        "{}",
        refused.message()
    );
    for city in ["helsingborg", "malmo"] {
        let (state, error) = hub_view_of(&fed, city).await.unwrap();
        assert_eq!(
            (state.as_str(), error.as_str()),
            ("connected", ""),
            "{city}"
        );
    }
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_city_that_stops_reading_is_disconnected_and_others_keep_syncing() {
    let outbox_bytes = 16 * 1024;
    let mut fed = Federation::start_with(&["helsingborg", "malmo"], |config| {
        config.limits.outbox_bytes_per_link = outbox_bytes;
    })
    .await;
    fed.client(0)
        .await
        .create_lesson("Before", "honest", vec![])
        .await
        .unwrap();
    // Lund links with small HTTP/2 windows, then asks the hub for its complete summary again
    // and again, and never reads an answer.
    let (tx, mut inbound) = raw_link(&fed, "lund", Some(16 * 1024)).await.unwrap();
    let asking = tokio::spawn(async move {
        let mut sent = 0u64;
        while sent < 200_000 {
            let frame = sfs_node::federation::sync::to_pb(sfs_sync::Frame::SummaryRequest);
            match tokio::time::timeout(DEADLINE, tx.send(frame)).await {
                Ok(Ok(())) => sent += 1,
                _ => break,
            }
        }
        sent
    });
    let error = eventually(
        "the hub closes the link of Lund, which does not read",
        || async {
            let (state, error) = hub_view_of(&fed, "lund").await?;
            (state == "disconnected").then_some(error)
        },
    )
    .await;
    assert!(
        error.contains("does not read")
            && error.contains(&format!("limits.outbox_bytes_per_link {outbox_bytes}")),
        "{error}"
    );
    // The other cities' links are untouched and still carry lessons.
    fed.client(0)
        .await
        .create_lesson("After", "honest", vec![])
        .await
        .unwrap();
    wait_for_title(&fed.client(1).await, "After").await;
    for city in ["helsingborg", "malmo"] {
        let (state, error) = hub_view_of(&fed, city).await.unwrap();
        assert_eq!(
            (state.as_str(), error.as_str()),
            ("connected", ""),
            "{city}"
        );
    }
    // Lund, reading at last, finds its link ended with the reason.
    let status = final_status(&mut inbound).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("does not read"),
        "{}",
        status.message()
    );
    drop(inbound);
    let sent = asking.await.unwrap();
    assert!(sent > 10, "Lund asked many times ({sent})");
    let metrics = fed.hub.running.as_ref().unwrap().metrics_addr.unwrap();
    let text = scrape(metrics).await;
    assert!(
        text.contains(r#"sfs_limit_refusals_total{limit="outbox_per_link"} 1"#),
        "{text}"
    );
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_link_from_the_same_city_replaces_the_older_one() {
    let mut fed = Federation::start(&["malmo"]).await;
    let (_old_tx, mut old) = raw_link(&fed, "lund", None).await.unwrap();
    // The first link works: the hub greets it.
    tokio::time::timeout(DEADLINE, old.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (_new_tx, mut new) = raw_link(&fed, "lund", None).await.unwrap();
    let status = final_status(&mut old).await;
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    assert!(
        status.message().contains("replaced by a newer link")
            && status.message().contains("one link per peer"),
        "{}",
        status.message()
    );
    // The newer link is served, and the hub counts one link for Lund.
    let hello = tokio::time::timeout(DEADLINE, new.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(hello.body, Some(pb::frame::Body::Hello(_))));
    eventually("the hub shows Lund connected once", || async {
        let status = fed.hub_client().await.status().await.ok()?;
        let lund: Vec<_> = status
            .peers
            .iter()
            .filter(|p| p.peer_id == "lund")
            .collect();
        (lund.len() == 1 && lund[0].state == "connected").then_some(())
    })
    .await;
    // Malmö's link is untouched: its lessons still arrive at the hub.
    fed.client(0)
        .await
        .create_lesson("Unaffected", "", vec![])
        .await
        .unwrap();
    wait_for_title(&fed.hub_client().await, "Unaffected").await;
    fed.stop_all().await;
}

/// Calls `call` until it is refused with a status, at most `max` times: how many calls
/// succeeded first, and the status.
async fn first_refusal<F, Fut>(max: usize, mut call: F) -> Option<(usize, tonic::Status)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), sfs_client::ClientError>>,
{
    for i in 0..max {
        match call().await {
            Ok(()) => continue,
            Err(sfs_client::ClientError::Status(status)) => return Some((i, status)),
            Err(err) => panic!("{err}"),
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_token_over_its_request_rate_is_refused_and_other_tokens_are_not() {
    let mut fed = Federation::start_with(&["lund"], |config| {
        config.limits.api_requests_per_second = 2;
        config.limits.api_request_burst = 20;
    })
    .await;
    let flooder = fed.client_with_role(0, ApiRole::Reader).await;
    let mut other = fed.client_with_role(0, ApiRole::Reader).await;
    let (at, status) = first_refusal(200, || {
        let mut flooder = flooder.clone();
        async move { flooder.list_lessons("cities/-").await.map(drop) }
    })
    .await
    .expect("the flooding token is refused");
    assert!(
        at >= 20,
        "the burst of 20 is allowed first (refused at {at})"
    );
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status
            .message()
            .contains("more than 2 requests per second (burst 20) for this API token")
            && status.message().contains("limits.api_requests_per_second"),
        "{}",
        status.message()
    );
    // Another token is served at once.
    for _ in 0..10 {
        other.list_lessons("cities/-").await.unwrap();
    }
    // The flooding token is served again once its bucket refills.
    eventually("the flooding token is served again", || {
        let mut flooder = flooder.clone();
        async move { flooder.list_lessons("cities/-").await.ok() }
    })
    .await;
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_token_over_its_daily_bytes_is_refused_and_other_tokens_are_not() {
    // 40 kB a day: a few lessons of 8 kB each, request and response counted.
    let mut fed = Federation::start_with(&["lund"], |config| {
        config.limits.api_bytes_per_day = 40_000;
    })
    .await;
    let heavy = fed.client_with_role(0, ApiRole::Editor).await;
    let mut other = fed.client_with_role(0, ApiRole::Editor).await;
    let body = "Erfarenhet från nattpersonalen. ".repeat(250);
    let mut i = 0;
    let (at, status) = first_refusal(100, || {
        let (mut heavy, body) = (heavy.clone(), body.clone());
        i += 1;
        async move {
            heavy
                .create_lesson(&format!("Heavy {i}"), &body, vec![])
                .await
                .map(drop)
        }
    })
    .await
    .expect("the heavy token is refused");
    assert!(
        at >= 2,
        "the first requests fit the budget (refused at {at})"
    );
    assert!(at <= 6, "the budget is counted (refused only at {at})");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("limits.api_bytes_per_day"),
        "{}",
        status.message()
    );
    // Another token is served; the refused request stored nothing.
    other.create_lesson("Light", "short", vec![]).await.unwrap();
    let titles: Vec<String> = other
        .list_lessons("cities/lund")
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.title)
        .collect();
    assert_eq!(titles.len(), at + 1, "{titles:?}");
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_api_request_times_out_but_a_backup_runs_to_its_end() {
    let mut fed = Federation::start_with(&["lund"], |config| {
        config.limits.api_request_timeout_ms = 500;
    })
    .await;
    let mut lund = fed.client(0).await;
    lund.create_lesson("Before", "", vec![]).await.unwrap();
    // Hold Lund's sync engine, as a long operation would, until the test lets go.
    let sync = fed.cities[0].running.as_ref().unwrap().sync().clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        sync.read(|_| {
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(DEADLINE);
        })
    });
    tokio::task::spawn_blocking(move || locked_rx.recv_timeout(DEADLINE).unwrap())
        .await
        .unwrap();
    // A backup starts now and waits for the engine longer than the request timeout.
    let mut backup_client = fed.client(0).await;
    let backup = tokio::spawn(async move {
        let mut stream = backup_client
            .node
            .backup(pb::BackupRequest {})
            .await?
            .into_inner();
        let mut bytes = 0;
        while let Some(chunk) = stream.message().await? {
            bytes += chunk.data.len();
        }
        Ok::<usize, tonic::Status>(bytes)
    });
    let started = Instant::now();
    let err = lund
        .create_lesson("Waits for the engine", "", vec![])
        .await
        .unwrap_err();
    let waited = started.elapsed();
    let sfs_client::ClientError::Status(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
    assert!(status.message().contains("Timeout expired"), "{status:?}");
    assert!(
        waited >= Duration::from_millis(500) && waited < DEADLINE,
        "{waited:?}"
    );
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let bytes = tokio::time::timeout(DEADLINE, backup)
        .await
        .expect("the backup ends")
        .unwrap()
        .expect("the backup is not cut by the request timeout");
    assert!(bytes > 0);
    fed.stop_all().await;
}

/// Letters and spaces only, so the privacy guard has nothing to object to, and varied, so the
/// text is as large on the wire as it is long.
fn random_words(len: usize, seed: u64) -> String {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut text = String::with_capacity(len);
    while text.len() < len {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let c = (state >> 59) as u8 % 27;
        text.push(if c == 26 { ' ' } else { (b'a' + c) as char });
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_city_catches_up_with_more_than_its_outbox_bound() {
    let outbox_bytes = 16 * 1024;
    let writers = ["helsingborg", "malmo", "uppsala", "umea"];
    let mut fed = Federation::start_with(&[&writers[..], &["lund"]].concat(), |config| {
        config.limits.outbox_bytes_per_link = outbox_bytes;
    })
    .await;
    fed.stop_city(writers.len()).await;
    // While Lund is away, four documents grow well past Lund's outbox bound together.
    for (i, city) in writers.iter().enumerate() {
        let body = random_words(12_000, i as u64);
        fed.client(i)
            .await
            .create_lesson(&format!("Long from {city}"), &body, vec![])
            .await
            .unwrap();
    }
    // Lund comes back: the hub sends what it lacks at once, and Lund is not cut off for it.
    fed.start_city(writers.len()).await;
    let lund = fed.client(writers.len()).await;
    for city in writers {
        wait_for_title(&lund, &format!("Long from {city}")).await;
    }
    let (state, error) = hub_view_of(&fed, "lund").await.unwrap();
    assert_eq!((state.as_str(), error.as_str()), ("connected", ""));
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_city_over_its_daily_bytes_is_cut_off_before_the_frame_is_handled() {
    let per_day = 256 * 1024;
    let mut fed = Federation::start_with(&["helsingborg", "malmo"], |config| {
        config.limits.peer_bytes_per_day = per_day;
    })
    .await;
    let (tx, mut inbound) = raw_link(&fed, "lund", None).await.unwrap();
    // One frame larger than Lund's whole daily budget.
    tx.send(pb::Frame {
        body: Some(pb::frame::Body::DocSync(pb::DocSync {
            doc_id: "shared/lessons/lund".into(),
            message: vec![0x42; 300 * 1024],
            generation: 0,
        })),
    })
    .await
    .unwrap();
    let status = final_status(&mut inbound).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains(&format!(
            "daily byte limit exceeded: more than {per_day} bytes per day (limits.peer_bytes_per_day)"
        )),
        "{}",
        status.message()
    );
    // Cut off before the frame was handled: the hub's tap (which sees every frame handed to
    // the engine) saw Lund's handshake and nothing of the large frame.
    let tapped: Vec<usize> = fed
        .hub_tap
        .lock()
        .unwrap()
        .iter()
        .filter(|(peer, _)| peer == "lund")
        .map(|(_, frame)| frame.len())
        .collect();
    assert!(!tapped.is_empty(), "the handshake was handled");
    assert!(tapped.iter().all(|len| *len < 1024), "{tapped:?}");
    // The other cities go on.
    fed.client(0)
        .await
        .create_lesson("Still flowing", "", vec![])
        .await
        .unwrap();
    wait_for_title(&fed.client(1).await, "Still flowing").await;
    fed.stop_all().await;
}
