//! A three-level federation of real nodes: the national hub, the county hub of Skåne with Malmö
//! and Lund under it, and Umeå linked directly to the national hub.

use std::sync::{Arc, Mutex};

use sfs_client::v1 as pb;
use sfs_node::node::{self, StartOptions};
use sfs_sync::NodeId;

use crate::util::{self, contains, eventually, Federation, TestNode};

/// Waits until `client` lists a lesson titled `title`, among every city's lessons.
async fn wait_for_title(client: &sfs_client::Client, who: &str, title: &str) {
    eventually(&format!("{who} lists {title:?}"), || {
        let mut client = client.clone();
        let title = title.to_string();
        async move {
            let lessons = client.list_lessons("cities/-").await.ok()?;
            lessons.iter().any(|l| l.title == title).then_some(())
        }
    })
    .await;
}

/// Every frame the county hub received, with the sending peer.
type Frames = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Starts (or restarts on the same ports) the county hub, its received frames noted in `tap`.
async fn start_county(county: &mut TestNode, tap: &Frames) {
    let tap = tap.clone();
    let options = StartOptions {
        frame_tap: Some(Arc::new(move |peer: &NodeId, bytes: &[u8]| {
            tap.lock()
                .unwrap()
                .push((peer.name().to_string(), bytes.to_vec()));
        })),
    };
    let running = node::start(county.config.clone(), options).await.unwrap();
    county.config.federation.listen = running.federation_addr;
    county.config.api.listen = running.api_addr;
    county.config.metrics.listen = running.metrics_addr;
    county.running = Some(running);
}

/// Prepares the county hub of Skåne serving `cities`, linked to `fed`'s national hub, starts it
/// (its received frames noted in `tap`) and returns it with its federation address.
async fn skane(fed: &Federation, cities: &[&str], tap: &Frames) -> (TestNode, String) {
    let mut county = util::prepare(
        fed.dir.path(),
        NodeId::county("skane").unwrap(),
        Some(fed.hub_url()),
    );
    county.config.county.cities = cities.iter().map(|c| c.to_string()).collect();
    start_county(&mut county, tap).await;
    let url = format!(
        "https://{}",
        county.running.as_ref().unwrap().federation_addr.unwrap()
    );
    (county, url)
}

/// Prepares `city` configured to dial the county hub of Skåne at `county_url` (not started).
fn under_skane(fed: &Federation, city: &str, county_url: &str) -> TestNode {
    let mut node = util::prepare(
        fed.dir.path(),
        NodeId::city(city).unwrap(),
        Some(county_url.to_string()),
    );
    node.config.federation.county_id = Some("skane".into());
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lessons_cross_the_county_hub_and_the_national_hub_and_local_data_stays_home() {
    // The national hub with Umeå linked directly.
    let mut fed = Federation::start(&["umea"]).await;
    let hub_url = fed.hub_url();
    let county_tap: Frames = Default::default();
    let (mut county, county_url) = skane(&fed, &["malmo", "lund"], &county_tap).await;
    fed.wait_node_linked(&county, "hub").await;
    // Malmö and Lund dial the county hub: the same city configuration, another URL and the
    // county hub's name.
    for city in ["malmo", "lund"] {
        let node = under_skane(&fed, city, &county_url);
        fed.cities.push(node);
    }
    let (umea, malmo, lund) = (0, 1, 2);
    for i in [malmo, lund] {
        fed.start_city(i).await;
        fed.wait_node_linked(&fed.cities[i], "county").await;
    }

    // Malmö's local register, which must never leave Malmö.
    let mut malmo_client = fed.client(malmo).await;
    let org_canary = "CANARY-ORG-skane-41c7";
    let contact_canary = "CANARY-PERSON-skane-9e02";
    let org = malmo_client
        .create_organisation(org_canary, "civil_society")
        .await
        .unwrap();
    malmo_client
        .create_contact(pb::Contact {
            full_name: contact_canary.into(),
            organisation: org.name,
            role: "outreach".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // With the national hub stopped, a lesson from Malmö reaches Lund through the county hub.
    fed.stop_hub().await;
    malmo_client
        .create_lesson("Skåne night shifts", "Written in Malmö.", vec![])
        .await
        .unwrap();
    let lund_client = fed.client(lund).await;
    wait_for_title(&lund_client, "Lund", "Skåne night shifts").await;
    let mut lund_writer = lund_client.clone();
    lund_writer
        .create_lesson("Lund before the move", "Written in Lund.", vec![])
        .await
        .unwrap();
    wait_for_title(&malmo_client, "Malmö", "Lund before the move").await;

    // Once the national hub runs again, the lessons reach Umeå, and Umeå's reach Malmö.
    fed.start_hub().await;
    let umea_client = fed.client(umea).await;
    wait_for_title(&umea_client, "Umeå", "Skåne night shifts").await;
    wait_for_title(&umea_client, "Umeå", "Lund before the move").await;
    let mut umea_writer = umea_client.clone();
    umea_writer
        .create_lesson("Norrland outreach", "Written in Umeå.", vec![])
        .await
        .unwrap();
    wait_for_title(&malmo_client, "Malmö", "Norrland outreach").await;

    // Lund moves from the county hub to the national hub: a change of its configuration.
    fed.stop_city(lund).await;
    fed.cities[lund].config.federation.hub_url = Some(hub_url.clone());
    fed.cities[lund].config.federation.county_id = None;
    fed.start_city(lund).await;
    fed.wait_node_linked(&fed.cities[lund], "hub").await;
    let mut lund_client = fed.client(lund).await;
    let mut titles: Vec<String> = lund_client
        .list_lessons("cities/lund")
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.title)
        .collect();
    titles.sort();
    assert_eq!(titles, ["Lund before the move"], "Lund keeps its lessons");
    lund_client
        .create_lesson("Lund after the move", "Written in Lund.", vec![])
        .await
        .unwrap();
    wait_for_title(&malmo_client, "Malmö", "Lund after the move").await;
    malmo_client
        .create_lesson("Malmö to Lund the long way", "Written in Malmö.", vec![])
        .await
        .unwrap();
    wait_for_title(&lund_client, "Lund", "Malmö to Lund the long way").await;
    wait_for_title(&umea_client, "Umeå", "Lund after the move").await;

    // Malmö's register never reached the county hub nor the national hub: not on the wire to
    // either, not in their stores (everything their keys can read, whole history included).
    let county_dir = county.config.data_dir.clone();
    let hub_dir = fed.hub.config.data_dir.clone();
    let county_frames = county_tap.lock().unwrap().clone();
    let hub_frames = fed.hub_tap.lock().unwrap().clone();
    county.running.take().unwrap().stop().await;
    fed.stop_all().await;
    let county_readable = util::readable_with_key(&county_dir);
    let hub_readable = util::readable_with_key(&hub_dir);
    // Positive controls: the scans see what was shared through them.
    assert!(county_frames
        .iter()
        .any(|(peer, f)| peer == "malmo" && contains(f, "Skåne night shifts")));
    assert!(contains(&county_readable, "Skåne night shifts"));
    assert!(contains(&hub_readable, "Skåne night shifts"));
    for canary in [org_canary, contact_canary] {
        for (peer, frame) in county_frames.iter().chain(&hub_frames) {
            assert!(
                !contains(frame, canary),
                "{canary} crossed the wire from {peer}"
            );
        }
        assert!(
            !contains(&county_readable, canary),
            "{canary} in the county hub"
        );
        assert!(
            !contains(&hub_readable, canary),
            "{canary} in the national hub"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_county_hub_refuses_a_city_it_does_not_serve_and_a_revoked_one() {
    let fed = Federation::start(&[]).await;
    let (mut county, county_url) = skane(&fed, &["malmo"], &Default::default()).await;
    let mut umea = under_skane(&fed, "umea", &county_url);
    umea.running = Some(
        node::start(umea.config.clone(), StartOptions::default())
            .await
            .unwrap(),
    );
    let client = fed.client_of(&umea).await;
    let error = eventually("Umeå refused by the county hub", || {
        let mut client = client.clone();
        async move {
            let status = client.status().await.ok()?;
            status
                .peers
                .into_iter()
                .find(|p| p.peer_role == "county" && p.last_error.contains("PERMISSION_DENIED"))
                .map(|p| p.last_error)
        }
    })
    .await;
    assert!(error.contains("county.cities"), "{error}");
    umea.running.take().unwrap().stop().await;

    // Malmö, listed, links; once its certificate is revoked the county hub closes its link and
    // refuses it, as the national hub would.
    let mut fed = fed;
    let malmo = under_skane(&fed, "malmo", &county_url);
    fed.cities.push(malmo);
    fed.start_city(0).await;
    fed.wait_node_linked(&fed.cities[0], "county").await;
    sfs_node::federation::pki::revoke(&fed.pki_dir(), &NodeId::city("malmo").unwrap()).unwrap();
    let client = fed.client(0).await;
    eventually("Malmö cut off by the county hub", || {
        let mut client = client.clone();
        async move {
            let status = client.status().await.ok()?;
            status.peers.into_iter().find(|p| {
                p.peer_role == "county"
                    && p.state != "connected"
                    && p.last_error.contains("revoked")
            })
        }
    })
    .await;
    county.running.take().unwrap().stop().await;
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_starts_a_county_hub_between_its_cities_and_the_national_hub() {
    let dir = tempfile::tempdir().unwrap();
    let cities = ["malmo", "umea"].map(String::from);
    let counties = ["skane=malmo".parse().unwrap()];
    let (running, file) = sfs_node::node::demo::start_with_counties(dir.path(), &cities, &counties)
        .await
        .unwrap();
    let listed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("federation.json")).unwrap())
            .unwrap();
    assert_eq!(
        listed["counties"]["skane"]["cities"],
        serde_json::json!(["malmo"])
    );
    // The county hub serves the county coordinator's web app, like every other demo node.
    let web = &file.counties["skane"].web;
    let addr = web
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("the county hub's web app: {web:?}"));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let ca_pem = std::fs::read_to_string(&file.ca).unwrap();
    async fn connect(
        node: &sfs_node::node::demo::FederationNode,
        ca_pem: &str,
    ) -> sfs_client::Client {
        sfs_client::Client::connect(&node.api, &node.token, ca_pem)
            .await
            .unwrap()
    }
    let peers = |mut client: sfs_client::Client| async move {
        let status = client.status().await.ok()?;
        let mut peers: Vec<(String, String)> = status
            .peers
            .into_iter()
            .filter(|p| p.state == "connected")
            .map(|p| (p.peer_role, p.peer_id))
            .collect();
        peers.sort();
        Some(peers)
    };
    let skane = connect(&file.counties["skane"], &ca_pem).await;
    let malmo = connect(&file.cities["malmo"], &ca_pem).await;
    let umea = connect(&file.cities["umea"], &ca_pem).await;
    for (client, expected) in [
        (skane, vec![("city", "malmo"), ("hub", "national")]),
        (malmo, vec![("county", "skane")]),
        (umea, vec![("hub", "national")]),
    ] {
        let expected: Vec<(String, String)> = expected
            .into_iter()
            .map(|(r, n)| (r.to_string(), n.to_string()))
            .collect();
        eventually(&format!("links {expected:?}"), || {
            let (client, expected) = (client.clone(), expected.clone());
            async move { (peers(client).await? == expected).then_some(()) }
        })
        .await;
    }
    for node in running.into_iter().rev() {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_county_hub_lists_its_own_cities_with_presence_and_handbook_release() {
    let mut fed = Federation::start(&["umea"]).await;
    let (mut county, county_url) = skane(&fed, &["malmo", "lund"], &Default::default()).await;
    fed.wait_node_linked(&county, "hub").await;
    let malmo = under_skane(&fed, "malmo", &county_url);
    fed.cities.push(malmo);
    fed.start_city(1).await;
    fed.wait_node_linked(&fed.cities[1], "county").await;
    // The national directory names Malmö and Umeå; Lund is the county's but not listed yet.
    let mut hub = fed.hub_client().await;
    for (id, display_name) in [("malmo", "Malmö"), ("umea", "Umeå")] {
        hub.directory
            .create_city(pb::CreateCityRequest {
                city: Some(pb::City {
                    name: format!("cities/{id}"),
                    display_name: display_name.into(),
                    county: "Skåne län".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    hub.method
        .create_release(pb::CreateReleaseRequest {
            release: Some(pb::Release {
                version_label: "2026.1".into(),
                notes: "First release.".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let county_client = fed.client_of(&county).await;
    let cities = eventually("the county hub lists its cities", || {
        let mut client = county_client.clone();
        async move {
            let cities = client
                .directory
                .list_cities(pb::ListRequest::default())
                .await
                .ok()?
                .into_inner()
                .cities;
            let malmo = cities.iter().find(|c| c.name == "cities/malmo")?;
            (malmo.display_name == "Malmö" && malmo.handbook_release == "2026.1").then_some(cities)
        }
    })
    .await;
    let listed: Vec<(&str, &str, bool)> = cities
        .iter()
        .map(|c| (c.name.as_str(), c.display_name.as_str(), c.connected))
        .collect();
    assert_eq!(
        listed,
        [
            ("cities/lund", "lund", false),
            ("cities/malmo", "Malmö", true)
        ],
        "the county's own cities only, Malmö linked to it"
    );
    assert!(cities[1].last_seen_ms > 0);
    // The CLI's table at the county hub shows the links, as at the national hub.
    let table = crate::cli::sfs(&fed, &county, &["cities", "list"]).await;
    let malmo_row = crate::cli::row(&table, "malmo");
    assert!(malmo_row.contains("connected"), "{table}");
    county.running.take().unwrap().stop().await;
    fed.stop_all().await;
}

/// Titles of the lessons `client` lists for `request`, or the refusal's code.
async fn titles_of(
    client: &sfs_client::Client,
    request: pb::ListLessonsRequest,
) -> Result<Vec<String>, tonic::Code> {
    let mut client = client.clone();
    let page = client
        .lessons
        .list_lessons(request)
        .await
        .map_err(|status| status.code())?
        .into_inner();
    assert_eq!(page.total_size as usize, page.lessons.len());
    let mut titles: Vec<String> = page.lessons.into_iter().map(|l| l.title).collect();
    titles.sort();
    Ok(titles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_county_hub_lists_the_lessons_of_its_own_cities_when_asked() {
    let mut fed = Federation::start(&["umea"]).await;
    let (mut county, county_url) = skane(&fed, &["malmo"], &Default::default()).await;
    fed.wait_node_linked(&county, "hub").await;
    fed.cities.push(under_skane(&fed, "malmo", &county_url));
    fed.start_city(1).await;
    fed.wait_node_linked(&fed.cities[1], "county").await;
    let (mut umea, mut malmo) = (fed.client(0).await, fed.client(1).await);
    umea.create_lesson("Norrland outreach", "Written in Umeå.", vec![])
        .await
        .unwrap();
    malmo
        .create_lesson("Skåne night shifts", "Written in Malmö.", vec![])
        .await
        .unwrap();
    let county_client = fed.client_of(&county).await;
    // Without the filter, the county hub lists every city's lessons, as any node does.
    wait_for_title(&county_client, "the county hub", "Norrland outreach").await;
    wait_for_title(&county_client, "the county hub", "Skåne night shifts").await;
    let every = pb::ListLessonsRequest {
        parent: "cities/-".into(),
        ..Default::default()
    };
    let skane_only = pb::ListLessonsRequest {
        county: "skane".into(),
        ..every.clone()
    };
    assert_eq!(
        titles_of(&county_client, every.clone()).await.unwrap(),
        ["Norrland outreach", "Skåne night shifts"]
    );
    // With it, the county's cities only; with one city outside the county, none.
    assert_eq!(
        titles_of(&county_client, skane_only.clone()).await.unwrap(),
        ["Skåne night shifts"]
    );
    let umea_in_skane = pb::ListLessonsRequest {
        parent: "cities/umea".into(),
        ..skane_only.clone()
    };
    assert_eq!(
        titles_of(&county_client, umea_in_skane).await.unwrap(),
        Vec::<String>::new()
    );
    // A city onboarded through the API counts from then on, and no longer once removed.
    let mut admin = county_client.clone();
    admin
        .directory
        .create_city(pb::CreateCityRequest {
            city: Some(pb::City {
                name: "cities/umea".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    assert_eq!(
        titles_of(&county_client, skane_only.clone()).await.unwrap(),
        ["Norrland outreach", "Skåne night shifts"]
    );
    admin
        .directory
        .delete_city(pb::DeleteRequest {
            name: "cities/umea".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        titles_of(&county_client, skane_only.clone()).await.unwrap(),
        ["Skåne night shifts"]
    );
    // Only the county hub itself knows its cities: another county's id, the national hub and
    // a city refuse, and an id that is no node name is invalid.
    let other_county = pb::ListLessonsRequest {
        county: "halland".into(),
        ..every.clone()
    };
    assert_eq!(
        titles_of(&county_client, other_county).await,
        Err(tonic::Code::FailedPrecondition)
    );
    for client in [fed.hub_client().await, fed.client(0).await] {
        assert_eq!(
            titles_of(&client, skane_only.clone()).await,
            Err(tonic::Code::FailedPrecondition)
        );
    }
    let invalid = pb::ListLessonsRequest {
        county: "Skåne".into(),
        ..every.clone()
    };
    assert_eq!(
        titles_of(&county_client, invalid).await,
        Err(tonic::Code::InvalidArgument)
    );
    // The CLI asks the same.
    let listed = crate::cli::sfs(&fed, &county, &["lessons", "list", "--county", "skane"]).await;
    assert!(
        listed.contains("Skåne night shifts") && !listed.contains("Norrland"),
        "{listed}"
    );
    county.running.take().unwrap().stop().await;
    fed.stop_all().await;
}

/// The national hub's directory entry of `city`, once `ready` holds for it.
async fn national_entry(
    fed: &Federation,
    city: &str,
    what: &str,
    ready: impl Fn(&pb::City) -> bool,
) -> pb::City {
    let hub = fed.hub_client().await;
    let name = format!("cities/{city}");
    eventually(what, || {
        let (mut hub, name) = (hub.clone(), name.clone());
        let ready = &ready;
        async move {
            let cities = hub
                .directory
                .list_cities(pb::ListRequest::default())
                .await
                .ok()?
                .into_inner()
                .cities;
            cities.into_iter().find(|c| c.name == name && ready(c))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_national_hub_lists_a_city_under_a_county_hub_as_linked_through_it() {
    let mut fed = Federation::start(&["umea"]).await;
    let (mut county, county_url) = skane(&fed, &["malmo", "lund"], &Default::default()).await;
    fed.wait_node_linked(&county, "hub").await;
    let malmo = under_skane(&fed, "malmo", &county_url);
    fed.cities.push(malmo);
    fed.start_city(1).await;
    fed.wait_node_linked(&fed.cities[1], "county").await;
    let mut hub = fed.hub_client().await;
    for (id, display_name) in [("malmo", "Malmö"), ("umea", "Umeå")] {
        hub.directory
            .create_city(pb::CreateCityRequest {
                city: Some(pb::City {
                    name: format!("cities/{id}"),
                    display_name: display_name.into(),
                    county: "Skåne län".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    // Malmö's link ends at the county hub; the county hub reports it linked, and the national
    // hub shows it so, through Skåne. Umeå is linked to the national hub itself.
    let malmo = national_entry(&fed, "malmo", "Malmö linked via Skåne", |c| {
        c.connected && c.linked_via == "skane"
    })
    .await;
    assert!(malmo.last_seen_ms > 0);
    let umea = national_entry(&fed, "umea", "Umeå linked", |c| c.connected).await;
    assert_eq!(
        umea.linked_via, "",
        "Umeå links to the national hub directly"
    );
    let table = crate::cli::sfs(&fed, &fed.hub, &["cities", "list"]).await;
    assert!(
        crate::cli::row(&table, "malmo").contains("connected via skane"),
        "{table}"
    );
    // Malmö stops: the county hub reports it, and the national hub shows it not linked, last
    // seen (to the minute) at Skåne.
    fed.stop_city(1).await;
    let stopped = national_entry(&fed, "malmo", "Malmö no longer linked", |c| !c.connected).await;
    assert_eq!(stopped.linked_via, "skane");
    let minute = 60_000;
    assert!(
        stopped.last_seen_ms > 0 && stopped.last_seen_ms % minute == 0,
        "last seen to the minute: {}",
        stopped.last_seen_ms
    );
    let table = crate::cli::sfs(&fed, &fed.hub, &["cities", "list"]).await;
    assert!(
        crate::cli::row(&table, "malmo").contains("disconnected via skane"),
        "{table}"
    );
    county.running.take().unwrap().stop().await;
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compromised_county_hub_cannot_write_documents_it_does_not_own() {
    let mut fed = Federation::start(&["malmo"]).await;
    let mut malmo = fed.client(0).await;
    malmo
        .create_lesson("Malmö's own lesson", "honest", vec![])
        .await
        .unwrap();
    let skane = NodeId::county("skane").unwrap();
    // Skåne's real certificate, in hostile hands: a national document and another county's are
    // refused by the owner-writes rule before Automerge sees them (the author check on the
    // documents a county hub relays is held by the engine tests).
    for target in ["national/method", "county/blekinge/guidance"] {
        let (tx, mut inbound) = crate::rogue_link_as(&fed, &skane).await;
        tx.send(pb::Frame {
            body: Some(pb::frame::Body::DocSync(pb::DocSync {
                doc_id: target.into(),
                message: crate::forged_sync_message(),
                generation: 0,
            })),
        })
        .unwrap();
        let status = tokio::time::timeout(util::DEADLINE, async {
            loop {
                match inbound.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("stream ended without a status"),
                    Err(status) => break status,
                }
            }
        })
        .await
        .expect("the national hub refuses the forged change in time");
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{target}: {status:?}"
        );
        assert!(status.message().contains(target), "{}", status.message());
    }
    // Nothing of it was applied at the hub nor relayed to Malmö.
    let frames = fed.hub_tap.lock().unwrap().clone();
    assert!(frames
        .iter()
        .any(|(peer, f)| peer == "skane" && contains(f, "FORGED-CONTENT-31c")));
    for mut client in [fed.hub_client().await, fed.client(0).await] {
        let status = client.status().await.unwrap();
        for doc in [
            "national/method",
            "county/blekinge/guidance",
            "county/skane/guidance",
        ] {
            assert!(
                status.documents.iter().all(|d| d.doc_id != doc),
                "{doc} was created"
            );
        }
        let lessons = client.list_lessons("cities/malmo").await.unwrap();
        assert_eq!(lessons.len(), 1);
        assert_eq!(lessons[0].title, "Malmö's own lesson");
    }
    let hub_dir = fed.hub.config.data_dir.clone();
    fed.stop_all().await;
    assert!(!contains(
        &util::readable_with_key(&hub_dir),
        "FORGED-CONTENT-31c"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_county_hub_publishes_the_sums_of_its_cities_releases_and_the_national_hub_all() {
    let mut fed = Federation::start(&["umea"]).await;
    let (mut county, county_url) = skane(&fed, &["malmo", "lund"], &Default::default()).await;
    fed.wait_node_linked(&county, "hub").await;
    for city in ["malmo", "lund"] {
        let node = under_skane(&fed, city, &county_url);
        fed.cities.push(node);
    }
    for i in [1, 2] {
        fed.start_city(i).await;
        fed.wait_node_linked(&fed.cities[i], "county").await;
    }
    // Every city publishes the first quarter.
    for (i, tag) in [(0, "umea"), (1, "malmo"), (2, "lund")] {
        let mut client = fed.client(i).await;
        crate::stats::record_quarter(&mut client, "2026-Q1", tag).await;
        crate::stats::preview(&mut client, "2026-Q1").await.unwrap();
        crate::stats::publish(&mut client, "2026-Q1").await.unwrap();
    }
    let releases_counted = |client: sfs_client::Client, expected: usize| async move {
        eventually(&format!("figures from {expected} releases"), || {
            let mut client = client.clone();
            async move {
                let figures = client
                    .stats
                    .get_national_stats(pb::GetNationalStatsRequest { year: 2026 })
                    .await
                    .ok()?
                    .into_inner();
                (figures.releases.len() == expected).then_some(figures)
            }
        })
        .await
    };
    // The county hub's figures are its own cities' releases only; the national hub's all.
    let county_figures = releases_counted(fed.client_of(&county).await, 2).await;
    let mut names = county_figures.releases.clone();
    names.sort();
    assert!(
        names.iter().all(|n| !n.contains("umea")),
        "the county counts only its cities: {names:?}"
    );
    assert!(
        county_figures.cells.iter().any(|c| c.cities == 2),
        "county cells sum two cities"
    );
    let national = releases_counted(fed.hub_client().await, 3).await;
    assert!(national.cells.iter().any(|c| c.cities == 3));
    // The county's figures are a document of its own, relayed like any other: the national hub
    // holds it.
    let mut hub = fed.hub_client().await;
    eventually("the national hub holds county/skane/stats", || {
        let mut hub = hub.clone();
        async move {
            let status = hub.status().await.ok()?;
            status
                .documents
                .iter()
                .any(|d| d.doc_id == "county/skane/stats" && !d.heads.is_empty())
                .then_some(())
        }
    })
    .await;
    // The county coordinator's adoption view: the county's cities only.
    let mut coordinator = fed
        .hub_client_with_role(sfs_node::api::tokens::ApiRole::Coordinator)
        .await;
    let chapter = coordinator
        .method
        .create_chapter(pb::CreateChapterRequest {
            chapter: Some(pb::Chapter {
                title: "Kartlägg".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    coordinator
        .method
        .create_step(pb::CreateStepRequest {
            step: Some(pb::Step {
                chapter: chapter.name,
                title: "Map the actors".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let adoption_at = |client: sfs_client::Client| async move {
        eventually("the step is in the adoption view", || {
            let mut client = client.clone();
            async move {
                let adoption = client
                    .progress
                    .get_adoption(pb::GetAdoptionRequest {})
                    .await
                    .ok()?
                    .into_inner();
                let step = adoption.steps.into_iter().next()?;
                let mut cities: Vec<String> = step.not_started;
                cities.extend(step.cities.into_iter().map(|c| c.city));
                cities.sort();
                Some(cities)
            }
        })
        .await
    };
    assert_eq!(
        adoption_at(fed.client_of(&county).await).await,
        ["lund", "malmo"],
        "the county hub's adoption view lists its own cities"
    );
    assert!(adoption_at(hub.clone()).await.contains(&"umea".to_string()));
    let _ = &mut hub;
    county.running.take().unwrap().stop().await;
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_county_coordinator_onboards_a_city_and_stops_serving_it() {
    let mut fed = Federation::start(&[]).await;
    let tap: Frames = Default::default();
    let (mut county, county_url) = skane(&fed, &["malmo"], &tap).await;
    fed.wait_node_linked(&county, "hub").await;
    // Lund is configured for the county hub, which does not serve it yet.
    let mut lund = under_skane(&fed, "lund", &county_url);
    lund.config.federation.max_backoff_ms = Some(200);
    fed.cities.push(lund);
    fed.start_city(0).await;
    let lund_client = fed.client(0).await;
    eventually("Lund is refused by the county hub", || {
        let mut client = lund_client.clone();
        async move {
            let status = client.status().await.ok()?;
            status
                .peers
                .iter()
                .any(|p| p.last_error.contains("not one of this county hub's cities"))
                .then_some(())
        }
    })
    .await;
    // The county coordinator onboards Lund: it links, and stays onboarded across a restart.
    let added = crate::cli::sfs(&fed, &county, &["cities", "add", "--id", "lund"]).await;
    assert!(added.contains("cities/lund"), "{added}");
    fed.wait_node_linked(&fed.cities[0], "county").await;
    county.running.take().unwrap().stop().await;
    start_county(&mut county, &tap).await;
    fed.wait_node_linked(&fed.cities[0], "county").await;
    let listed = crate::cli::sfs(&fed, &county, &["cities", "list"]).await;
    assert!(
        crate::cli::row(&listed, "lund").contains("connected"),
        "{listed}"
    );
    // A city of the configuration is not removed through the API.
    let refused = crate::cli::sfs_as(
        &fed,
        &county,
        &county.admin_token,
        &["cities", "remove", "malmo"],
    )
    .await
    .unwrap_err();
    assert!(refused.contains("county.cities"), "{refused}");
    // Removing Lund ends its link, and it is refused from then on.
    crate::cli::sfs(&fed, &county, &["cities", "remove", "lund"]).await;
    eventually(
        "Lund's link to the county hub ended and stays refused",
        || {
            let mut client = lund_client.clone();
            async move {
                let status = client.status().await.ok()?;
                let county = status.peers.iter().find(|p| p.peer_role == "county")?;
                (county.state != "connected"
                    && county
                        .last_error
                        .contains("one of this county hub's cities"))
                .then_some(())
            }
        },
    )
    .await;
    let listed = crate::cli::sfs(&fed, &county, &["cities", "list"]).await;
    assert!(!listed.contains("lund"), "{listed}");
    county.running.take().unwrap().stop().await;
    fed.stop_all().await;
}
