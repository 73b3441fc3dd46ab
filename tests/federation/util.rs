//! Helpers: a federation of real nodes on 127.0.0.1 with free ports, real mutual TLS,
//! temporary data directories, and polling with a deadline instead of sleeps.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sfs_client::Client;
use sfs_node::api::tokens::{self, ApiRole};
use sfs_node::federation::pki::{self, CaFiles, NodeFiles};
use sfs_node::node::config::{ApiConfig, FederationConfig, NodeConfig, TlsConfig};
use sfs_node::node::{self, RunningNode, StartOptions};
use sfs_sync::{NodeId, Role};

use crate::ports::restartable_ports;

/// The longest any test waits for something to happen.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
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

/// Every frame the hub received, with the sending peer.
pub type Tap = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// One node of a test federation.
pub struct TestNode {
    pub config: NodeConfig,
    pub admin_token: String,
    pub running: Option<RunningNode>,
}

/// A hub and some cities in a temporary directory.
pub struct Federation {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub hub: TestNode,
    pub cities: Vec<TestNode>,
    pub hub_tap: Tap,
    /// The national coordinator's private release key, when every node is configured with
    /// its public key ([`Federation::start_signed`]).
    pub release_key: Option<PathBuf>,
}

impl Federation {
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// Makes the PKI and configurations, starts the hub and then every city.
    pub async fn start(cities: &[&str]) -> Federation {
        Federation::start_inner(cities, false, |_| {}).await
    }

    /// Like [`Federation::start`], with a release key made outside every data directory and
    /// its public key configured on the hub and every city.
    pub async fn start_signed(cities: &[&str]) -> Federation {
        Federation::start_inner(cities, true, |_| {}).await
    }

    /// Like [`Federation::start`], with each node's configuration changed by `configure` first.
    pub async fn start_with(cities: &[&str], configure: impl Fn(&mut NodeConfig)) -> Federation {
        Federation::start_inner(cities, false, configure).await
    }

    async fn start_inner(
        cities: &[&str],
        signed: bool,
        configure: impl Fn(&mut NodeConfig),
    ) -> Federation {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        pki::init_ca(&pki_dir).unwrap();
        let ca_pem = std::fs::read_to_string(CaFiles::in_dir(&pki_dir).cert).unwrap();
        let (release_key, public_key) = (
            dir.path().join("coordinator/release.key"),
            dir.path().join("coordinator/release.pub"),
        );
        if signed {
            sfs_client::release::generate_key_files(&release_key, &public_key).unwrap();
        }
        let configure = |node: &mut TestNode| {
            if signed {
                node.config.method.release_public_key = Some(public_key.clone());
            }
            configure(&mut node.config);
        };
        let mut hub = prepare(dir.path(), NodeId::hub("national").unwrap(), None);
        configure(&mut hub);
        let mut fed = Federation {
            hub,
            cities: Vec::new(),
            ca_pem,
            hub_tap: Arc::new(Mutex::new(Vec::new())),
            release_key: signed.then_some(release_key),
            dir,
        };
        fed.start_hub().await;
        let hub_url = fed.hub_url();
        for city in cities {
            let mut node = prepare(
                fed.dir.path(),
                NodeId::city(city).unwrap(),
                Some(hub_url.clone()),
            );
            configure(&mut node);
            fed.cities.push(node);
        }
        for i in 0..fed.cities.len() {
            fed.start_city(i).await;
        }
        for i in 0..fed.cities.len() {
            fed.wait_linked(i).await;
        }
        fed
    }

    pub fn hub_url(&self) -> String {
        format!("https://{}", self.hub_federation_addr())
    }

    pub fn hub_federation_addr(&self) -> SocketAddr {
        self.hub
            .running
            .as_ref()
            .and_then(|n| n.federation_addr)
            .or(self.hub.config.federation.listen)
            .unwrap()
    }

    pub async fn start_hub(&mut self) {
        let tap = self.hub_tap.clone();
        let options = StartOptions {
            frame_tap: Some(Arc::new(move |peer: &NodeId, bytes: &[u8]| {
                tap.lock()
                    .unwrap()
                    .push((peer.name().to_string(), bytes.to_vec()));
            })),
        };
        let running = node::start(self.hub.config.clone(), options).await.unwrap();
        // Restarts keep the same ports, so cities find the hub where it was.
        self.hub.config.metrics.listen = running.metrics_addr;
        self.hub.config.federation.listen = running.federation_addr;
        self.hub.config.api.listen = running.api_addr;
        self.hub.running = Some(running);
    }

    pub async fn stop_hub(&mut self) {
        self.hub.running.take().unwrap().stop().await;
    }

    pub async fn start_city(&mut self, i: usize) {
        let city = &mut self.cities[i];
        // The test binds the city's API listener itself (port 0 the first time, the same port
        // at a restart) and hands it to the node.
        let listeners = node::Listeners {
            api: bind(city.config.api.listen).await,
            federation: None,
            web: bind_if(city.config.web.listen).await,
            metrics: bind_if(city.config.metrics.listen).await,
        };
        let running = node::start_on(city.config.clone(), listeners, StartOptions::default())
            .await
            .unwrap();
        city.config.api.listen = running.api_addr;
        city.running = Some(running);
    }

    pub async fn stop_city(&mut self, i: usize) {
        self.cities[i].running.take().unwrap().stop().await;
    }

    /// Waits until city `i` reports its hub link connected.
    pub async fn wait_linked(&self, i: usize) {
        self.wait_node_linked(&self.cities[i], "hub").await;
    }

    /// Waits until `node` reports its link to its upstream of `role` (`hub`, `county`)
    /// connected.
    pub async fn wait_node_linked(&self, node: &TestNode, role: &str) {
        let client = self.client_of(node).await;
        let name = node.config.id.clone();
        eventually(&format!("{name} linked to its {role}"), || {
            let mut client = client.clone();
            async move {
                let status = client.status().await.ok()?;
                status
                    .peers
                    .iter()
                    .any(|p| p.peer_role == role && p.state == "connected")
                    .then_some(())
            }
        })
        .await;
    }

    pub async fn client_of(&self, node: &TestNode) -> Client {
        let addr = node.running.as_ref().unwrap().api_addr;
        Client::connect(&format!("https://{addr}"), &node.admin_token, &self.ca_pem)
            .await
            .unwrap()
    }

    pub async fn client(&self, city: usize) -> Client {
        self.client_of(&self.cities[city]).await
    }

    pub async fn hub_client(&self) -> Client {
        self.client_of(&self.hub).await
    }

    /// A client of city `i` with a token of `role`.
    pub async fn client_with_role(&self, i: usize, role: ApiRole) -> Client {
        self.node_client_with_role(&self.cities[i], role).await
    }

    /// A client of the hub with a token of `role`.
    pub async fn hub_client_with_role(&self, role: ApiRole) -> Client {
        self.node_client_with_role(&self.hub, role).await
    }

    async fn node_client_with_role(&self, node: &TestNode, role: ApiRole) -> Client {
        let token = tokens::create_token(&node.config.data_dir, role, "test").unwrap();
        let addr = node.running.as_ref().unwrap().api_addr;
        Client::connect(&format!("https://{addr}"), &token, &self.ca_pem)
            .await
            .unwrap()
    }

    /// Adds a chapter with one step at the hub and waits until city `i` has the step; returns
    /// the step's name.
    pub async fn hub_step(&self, i: usize, title: &str) -> String {
        let mut hub = self.hub_client().await;
        let chapter = hub
            .method
            .create_chapter(sfs_client::v1::CreateChapterRequest {
                chapter: Some(sfs_client::v1::Chapter {
                    title: format!("Chapter of {title}"),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .name;
        let step = hub
            .method
            .create_step(sfs_client::v1::CreateStepRequest {
                step: Some(sfs_client::v1::Step {
                    chapter,
                    title: title.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .name;
        let city = self.client(i).await;
        eventually("the city has the step", || {
            let (mut city, step) = (city.clone(), step.clone());
            async move {
                let handbook = city.handbook().await.ok()?;
                handbook
                    .chapters
                    .iter()
                    .flat_map(|c| &c.steps)
                    .any(|s| s.name == step)
                    .then_some(())
            }
        })
        .await;
        step
    }

    pub async fn stop_all(&mut self) {
        for i in 0..self.cities.len() {
            if self.cities[i].running.is_some() {
                self.stop_city(i).await;
            }
        }
        if self.hub.running.is_some() {
            self.stop_hub().await;
        }
    }
}

/// Makes a node's certificate, admin token and configuration under `dir` (the national hub and
/// county hubs listen on port 0; `hub_url` is a city's or county hub's upstream).
pub fn prepare(dir: &Path, id: NodeId, hub_url: Option<String>) -> TestNode {
    let pki_dir = dir.join("pki");
    let files = pki::issue(&pki_dir, &id, &[], 30).unwrap();
    let data_dir = dir.join(id.name());
    let admin_token = tokens::create_token(&data_dir, ApiRole::Admin, "test admin").unwrap();
    // Nodes restart on the ports of their first start: ports that no outgoing connection takes.
    let base = restartable_ports(3);
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let config = NodeConfig {
        id: id.name().to_string(),
        role: id.role().as_str().to_string(),
        data_dir,
        api: ApiConfig {
            listen: at(base),
            cors_allowed_origins: Vec::new(),
        },
        federation: FederationConfig {
            listen: matches!(id.role(), Role::Hub | Role::County).then(|| at(base + 1)),
            hub_url,
            hub_id: None,
            county_id: None,
            max_backoff_ms: Some(500),
            keepalive_ms: None,
            ..Default::default()
        },
        tls: TlsConfig {
            ca: CaFiles::in_dir(&pki_dir).cert,
            cert: files.cert,
            key: files.key,
            revoked: matches!(id.role(), Role::Hub | Role::County)
                .then(|| CaFiles::in_dir(&pki_dir).revoked),
            handshake_timeout_ms: None,
        },
        metrics: sfs_node::node::config::MetricsConfig {
            listen: Some(at(base + 2)),
        },
        log: Default::default(),
        store: Default::default(),
        privacy: Default::default(),
        method: Default::default(),
        limits: Default::default(),
        web: Default::default(),
        county: Default::default(),
    };
    TestNode {
        config,
        admin_token,
        running: None,
    }
}

/// Certificate and key files of a node, for tests that dial the hub by hand.
pub fn node_files(pki_dir: &Path, id: &NodeId) -> NodeFiles {
    NodeFiles::in_dir(pki_dir, id)
}

/// A whole backup archive of the node `client` talks to, through the API (admin token).
pub async fn backup_bytes(client: &mut Client) -> Vec<u8> {
    let mut stream = client
        .node
        .backup(sfs_client::v1::BackupRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend(chunk.data);
    }
    bytes
}

/// Everything a node's at-rest key can read in its data directory (or in a backup file of
/// the node whose data directory is `data_dir`), documents expanded with their whole history.
pub fn readable_with_key_of(data_dir: &Path, path: &Path) -> Vec<u8> {
    let key_file = sfs_node::node::config::default_key_file(data_dir, None);
    let key = sfs_node::storage::seal::MasterKey::load(&key_file).unwrap();
    sfs_node::storage::store::readable_with_key(path, &key).unwrap()
}

/// Everything a node's at-rest key can read in its data directory.
pub fn readable_with_key(data_dir: &Path) -> Vec<u8> {
    readable_with_key_of(data_dir, data_dir)
}

/// Every file under `dir`, read whole.
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files.push((path, bytes));
            }
        }
    }
    files
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The node's access log, as the node lists it (first 500 entries).
pub async fn access_log(client: &mut Client) -> Vec<sfs_proto::v1::AccessLogEntry> {
    client
        .signals
        .list_access_log(sfs_proto::v1::ListRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}

async fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind(addr).await.unwrap()
}

async fn bind_if(addr: Option<SocketAddr>) -> Option<tokio::net::TcpListener> {
    match addr {
        Some(addr) => Some(bind(addr).await),
        None => None,
    }
}
