//! A national hub killed with SIGKILL in the middle of relaying (DESIGN.md promise 4, with a
//! standby national hub): A runs as a real `sfs-node run --config` process; its standby B, the
//! county hubs of Skåne (Malmö, Lund) and Norrbotten (Luleå), and Umeå (linked to A directly)
//! run in this process. While all four cities write, A is killed: no Goodbye is sent, the
//! kernel closes its connections. Every city reaches B (Umeå directly, the others through their
//! county hubs), every lesson acknowledged before and during the failover is listed everywhere,
//! A started again from its data directory catches up from B, and the nodes move back to A.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Process;
use sfs_client::Client;
use sfs_node::api::tokens::{self, ApiRole};
use sfs_node::federation::pki::{self, CaFiles};
use sfs_node::node::config::{ApiConfig, FederationConfig, NodeConfig, TlsConfig};
use sfs_node::node::{self, RunningNode, StartOptions};
use sfs_sync::{NodeId, Role};
use tokio::sync::watch;

/// The longest the test waits for any one thing (generous: a loaded 2-core machine).
const DEADLINE: Duration = Duration::from_secs(60);
/// Keepalives every 250 ms: a silent link is dropped after 1 s.
const KEEPALIVE_MS: u64 = 250;
/// How often a node on the standby tries A again.
const FAILBACK_MS: u64 = 300;

/// Polls `check` until it returns `Some`, or panics with `what` after [`DEADLINE`].
async fn eventually<T, Fut>(what: &str, mut check: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A node's configuration and admin token, made with its certificate under `dir`.
struct Prepared {
    config: NodeConfig,
    token: String,
}

fn prepare(dir: &Path, id: NodeId, hub_url: Option<String>) -> Prepared {
    let pki_dir = dir.join("pki");
    let files = pki::issue(&pki_dir, &id, &[], 30).unwrap();
    let data_dir = dir.join(id.name());
    let token = tokens::create_token(&data_dir, ApiRole::Admin, "test admin").unwrap();
    let serves = matches!(id.role(), Role::Hub | Role::County);
    let config = NodeConfig {
        id: id.name().to_string(),
        role: id.role().as_str().to_string(),
        data_dir,
        api: ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cors_allowed_origins: Vec::new(),
        },
        federation: FederationConfig {
            listen: serves.then(|| "127.0.0.1:0".parse().unwrap()),
            hub_url,
            max_backoff_ms: Some(500),
            keepalive_ms: Some(KEEPALIVE_MS),
            ..Default::default()
        },
        tls: TlsConfig {
            ca: CaFiles::in_dir(&pki_dir).cert,
            cert: files.cert,
            key: files.key,
            revoked: serves.then(|| CaFiles::in_dir(&pki_dir).revoked),
            handshake_timeout_ms: None,
        },
        metrics: Default::default(),
        log: Default::default(),
        store: Default::default(),
        privacy: Default::default(),
        method: Default::default(),
        limits: Default::default(),
        web: Default::default(),
        county: Default::default(),
    };
    Prepared { config, token }
}

/// Names the standby hub `standby` (at `url`, if the node may dial it) as a node's second
/// upstream.
fn with_standby(config: &mut NodeConfig, url: Option<String>) {
    config.federation.standby_id = Some("standby".into());
    config.federation.standby_url = url;
    config.federation.failback_ms = Some(FAILBACK_MS);
}

/// The national hub A as an `sfs-node run --config` process.
struct HubProcess {
    config_file: PathBuf,
    config: NodeConfig,
    process: Option<Process>,
    api: String,
    federation: String,
}

impl HubProcess {
    /// Writes A's configuration and starts it; every start listens on the configured ports.
    fn start(config_file: PathBuf, config: NodeConfig) -> HubProcess {
        let mut hub = HubProcess {
            config_file,
            config,
            process: None,
            api: String::new(),
            federation: String::new(),
        };
        hub.run();
        hub
    }

    fn run(&mut self) {
        std::fs::write(&self.config_file, toml::to_string(&self.config).unwrap()).unwrap();
        let mut process = Process::spawn(&["run", "--config", self.config_file.to_str().unwrap()]);
        let line = process.wait_for_line("ready");
        let words: Vec<&str> = line.split_whitespace().collect();
        self.api = words[3].to_string();
        self.federation = words[5].to_string();
        let port = |url: &str| url.trim_start_matches("https://").parse().unwrap();
        self.config.api.listen = port(&self.api);
        self.config.federation.listen = Some(port(&self.federation));
        self.process = Some(process);
    }

    /// SIGKILL: no Goodbye, nothing flushed; the kernel closes the sockets.
    fn kill(&mut self) {
        let mut process = self.process.take().unwrap();
        let pid = process.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = process.child.wait().unwrap();
        assert!(!exit.success(), "A was killed: {exit}");
    }
}

/// An in-process node with an admin client.
struct InProcess {
    id: String,
    running: Option<RunningNode>,
    client: Client,
}

async fn start_in_process(prepared: &Prepared, ca: &str) -> InProcess {
    let running = node::start(prepared.config.clone(), StartOptions::default())
        .await
        .unwrap();
    let client = Client::connect(
        &format!("https://{}", running.api_addr),
        &prepared.token,
        ca,
    )
    .await
    .unwrap();
    InProcess {
        id: prepared.config.id.clone(),
        running: Some(running),
        client,
    }
}

fn federation_url(node: &InProcess) -> String {
    format!(
        "https://{}",
        node.running.as_ref().unwrap().federation_addr.unwrap()
    )
}

/// Whether `client`'s node reports its link to `peer` connected.
async fn linked(client: &Client, peer: &str) -> bool {
    let mut client = client.clone();
    let Ok(status) = client.status().await else {
        return false;
    };
    status
        .peers
        .iter()
        .any(|p| p.peer_id == peer && p.state == "connected")
}

async fn wait_linked(node: &InProcess, peer: &str) {
    let what = format!("{} linked to {peer}", node.id);
    eventually(&what, || async {
        linked(&node.client, peer).await.then_some(())
    })
    .await;
}

async fn wait_unlinked(node: &InProcess, peer: &str) {
    let what = format!("{} no longer linked to {peer}", node.id);
    eventually(&what, || async {
        (!linked(&node.client, peer).await).then_some(())
    })
    .await;
}

/// Every city's lesson titles `client` lists, sorted (a title twice is listed twice).
async fn all_titles(client: &Client) -> Option<Vec<String>> {
    let mut client = client.clone();
    let mut titles: Vec<String> = client
        .list_lessons("cities/-")
        .await
        .ok()?
        .into_iter()
        .map(|l| l.title)
        .collect();
    titles.sort();
    Some(titles)
}

/// Waits until `client` lists exactly `expected` among every city's lessons, each once.
async fn wait_for_exactly(client: &Client, who: &str, expected: &[String]) {
    let mut expected = expected.to_vec();
    expected.sort();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let titles = all_titles(client).await;
        if titles.as_deref() == Some(&expected[..]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{who} lists {titles:?}, not the {} acknowledged {expected:?}",
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes lessons at `client` one after another until `stop` turns true; every acknowledged
/// title goes into `acknowledged`. The writes are spread out a little, so that they run
/// before, during and after the kill rather than all at once.
async fn write_until(
    mut client: Client,
    city: &'static str,
    acknowledged: Arc<Mutex<Vec<String>>>,
    mut stop: watch::Receiver<bool>,
) -> usize {
    let mut written = 0;
    while !*stop.borrow() {
        let title = format!("{city} {written}");
        client
            .create_lesson(&title, "Written while the hubs change.", vec![])
            .await
            .unwrap_or_else(|e| panic!("{city} could not write {title:?}: {e}"));
        acknowledged.lock().unwrap().push(title);
        written += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(40)) => {}
            _ = stop.changed() => {}
        }
    }
    written
}

/// How many lessons each city has had acknowledged so far.
fn counts(acknowledged: &Mutex<Vec<String>>, cities: &[&str]) -> Vec<usize> {
    let all = acknowledged.lock().unwrap();
    cities
        .iter()
        .map(|city| {
            all.iter()
                .filter(|t| t.starts_with(&format!("{city} ")))
                .count()
        })
        .collect()
}

/// Waits until every city has had `more` lessons acknowledged beyond `since`.
async fn wait_for_writes(acknowledged: &Mutex<Vec<String>>, cities: &[&str], more: usize) {
    let since = counts(acknowledged, cities);
    eventually("every city wrote more lessons", || {
        let now = counts(acknowledged, cities);
        let done = now.iter().zip(&since).all(|(n, s)| *n >= s + more);
        async move { done.then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_national_hub_killed_mid_relay_is_replaced_by_the_standby_and_catches_up_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki::init_ca(&d.join("pki")).unwrap();
    let ca = std::fs::read_to_string(CaFiles::in_dir(&d.join("pki")).cert).unwrap();

    // A, as a process.
    let mut national = prepare(d, NodeId::hub("national").unwrap(), None);
    national.config.federation.standby_hubs = vec!["standby".into()];
    // A restarts on the same ports while everyone redials it: ports outside the ephemeral range.
    let base = common::ports::restartable_ports(2);
    national.config.api.listen = ([127, 0, 0, 1], base).into();
    national.config.federation.listen = Some(([127, 0, 0, 1], base + 1).into());
    let mut a = HubProcess::start(d.join("national.toml"), national.config.clone());
    let a_url = a.federation.clone();
    let a_client = Client::connect(&a.api, &national.token, &ca).await.unwrap();

    // B dials A; the county hubs and Umeå dial A with B as their standby; the cities under the
    // county hubs know B (to take national edits made there) but dial only their county hub.
    let standby = prepare(d, NodeId::hub("standby").unwrap(), Some(a_url.clone()));
    let b = start_in_process(&standby, &ca).await;
    let b_url = federation_url(&b);
    let mut upstreams = Vec::new();
    let mut cities = Vec::new();
    let mut umea = prepare(d, NodeId::city("umea").unwrap(), Some(a_url.clone()));
    with_standby(&mut umea.config, Some(b_url.clone()));
    for (county, members) in [
        ("skane", &["malmo", "lund"][..]),
        ("norrbotten", &["lulea"]),
    ] {
        let mut hub = prepare(d, NodeId::county(county).unwrap(), Some(a_url.clone()));
        hub.config.county.cities = members.iter().map(|c| c.to_string()).collect();
        with_standby(&mut hub.config, Some(b_url.clone()));
        let hub = start_in_process(&hub, &ca).await;
        let county_url = federation_url(&hub);
        for city in members {
            let mut node = prepare(d, NodeId::city(city).unwrap(), Some(county_url.clone()));
            node.config.federation.county_id = Some(county.into());
            with_standby(&mut node.config, None);
            cities.push(start_in_process(&node, &ca).await);
        }
        upstreams.push(hub);
    }
    cities.insert(0, start_in_process(&umea, &ca).await);
    let names = ["umea", "malmo", "lund", "lulea"];
    assert_eq!(
        cities.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        names
    );
    wait_linked(&b, "national").await;
    for county in &upstreams {
        wait_linked(county, "national").await;
    }
    wait_linked(&cities[0], "national").await;
    wait_linked(&cities[1], "skane").await;
    wait_linked(&cities[2], "skane").await;
    wait_linked(&cities[3], "norrbotten").await;
    let on_a = |nodes: &[&InProcess]| {
        nodes
            .iter()
            .map(|n| n.id.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let firsts: Vec<&InProcess> = std::iter::once(&cities[0]).chain(&upstreams).collect();
    eprintln!("linked to A: {}", on_a(&firsts));

    // All four cities write continuously; A is killed once each city's writes are flowing
    // through it (some acknowledged and not yet relayed, others in flight).
    let acknowledged: Arc<Mutex<Vec<String>>> = Default::default();
    let (stop, stopped) = watch::channel(false);
    let writers: Vec<_> = cities
        .iter()
        .zip(names)
        .map(|(city, name)| {
            tokio::spawn(write_until(
                city.client.clone(),
                name,
                acknowledged.clone(),
                stopped.clone(),
            ))
        })
        .collect();
    wait_for_writes(&acknowledged, &names, 3).await;
    let killed = Instant::now();
    a.kill();

    // Umeå and both county hubs reach B within the timeouts, and the writes go on.
    wait_linked(&cities[0], "standby").await;
    for county in &upstreams {
        wait_linked(county, "standby").await;
    }
    let failover = killed.elapsed();
    wait_for_writes(&acknowledged, &names, 3).await;
    stop.send(true).unwrap();
    for writer in writers {
        assert!(writer.await.unwrap() >= 6);
    }
    let written = acknowledged.lock().unwrap().clone();
    // Every lesson acknowledged before and during the failover is listed everywhere, once.
    let converge = Instant::now();
    for node in cities.iter().chain(&upstreams).chain([&b]) {
        wait_for_exactly(&node.client, &node.id, &written).await;
    }
    let converged = converge.elapsed();

    // A starts again from its data directory (same ports): it catches up from B, and Umeå and
    // the county hubs move back to it.
    let restarted = Instant::now();
    a.run();
    wait_for_exactly(&a_client, "A", &written).await;
    let caught_up = restarted.elapsed();
    wait_linked(&cities[0], "national").await;
    for county in &upstreams {
        wait_linked(county, "national").await;
        wait_unlinked(county, "standby").await;
    }
    wait_unlinked(&cities[0], "standby").await;
    let moved_back = restarted.elapsed();

    // Syncing goes on through A: a lesson from Luleå reaches every node.
    let mut written = written;
    let mut lulea = cities[3].client.clone();
    lulea
        .create_lesson("Luleå after A is back", "Through A.", vec![])
        .await
        .unwrap();
    written.push("Luleå after A is back".into());
    wait_for_exactly(&a_client, "A", &written).await;
    for node in cities.iter().chain(&upstreams).chain([&b]) {
        wait_for_exactly(&node.client, &node.id, &written).await;
    }
    eprintln!(
        "A killed with SIGKILL after its cities' writes began: every upstream on B after {} ms; \
         {} lessons listed everywhere {} ms later; A restarted: caught up from B in {} ms, \
         every upstream back on A in {} ms",
        failover.as_millis(),
        written.len() - 1,
        converged.as_millis(),
        caught_up.as_millis(),
        moved_back.as_millis()
    );

    for mut node in cities.into_iter().chain(upstreams).chain([b]) {
        node.running.take().unwrap().stop().await;
    }
    a.process.take().unwrap().terminate();
}
