//! A federation for measuring: real node processes (this binary re-run as `serve-node`, which
//! is the node's own start-up code) on 127.0.0.1 with OS-assigned ports and real mutual TLS,
//! and, for the scenarios with hundreds of cities, many cities in this process — each with its
//! own certificate, its own sled store and the node's own sync and link code.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use sfs_node::api::tokens::{self, ApiRole};
use sfs_node::federation::pki::{self, CaFiles, NodeFiles};
use sfs_node::federation::sync::{run_hub_link, HubLinkConfig, SyncHandle};
use sfs_node::node::config::{ApiConfig, FederationConfig, MetricsConfig, NodeConfig, TlsConfig};
use sfs_node::storage::store::Store;
use sfs_sync::{EngineConfig, NodeId, Role};
use tokio::sync::watch;

/// How long any wait in the harness may take before the run fails.
pub const DEADLINE: Duration = Duration::from_secs(600);

/// A node running as a child process.
pub struct NodeProcess {
    pub id: NodeId,
    pub config_path: PathBuf,
    pub config: NodeConfig,
    pub admin_token: String,
    pub coordinator_token: String,
    pub api: String,
    pub federation: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    child: Option<Child>,
    /// Time from spawning the process to its `ready` line, at the last start.
    pub start_time: Duration,
}

impl NodeProcess {
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts the process and waits for it to print `ready`.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve-node", "--config"])
            .arg(&self.config_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("RUST_LOG", "warn")
            .spawn()
            .context("starting a node process")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        self.child = Some(child);
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .map_err(|_| anyhow!("{} did not print `ready`", self.id))?;
            // `<id> ready: api https://A [federation https://F] [metrics http://M]`
            if let Some(rest) = line.split_once(" ready: ").map(|(_, r)| r) {
                let words: Vec<&str> = rest.split_whitespace().collect();
                for pair in words.chunks(2) {
                    let [key, value] = pair else { continue };
                    let addr = value
                        .trim_start_matches("https://")
                        .trim_start_matches("http://");
                    match *key {
                        "api" => self.api = value.to_string(),
                        "federation" => self.federation = Some(addr.parse()?),
                        "metrics" => self.metrics = Some(addr.parse()?),
                        _ => {}
                    }
                }
                break;
            }
        }
        self.start_time = started.elapsed();
        // Restarts keep the ports, so that cities find the hub where it was.
        self.config.api.listen = self.api.trim_start_matches("https://").parse()?;
        self.config.federation.listen = self.federation;
        self.config.metrics.listen = self.metrics;
        write_config(&self.config_path, &self.config)?;
        // Keep reading stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Ok(())
    }

    /// Stops the process with SIGTERM and waits for it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    child.kill()?;
                    child.wait()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// An API client with the admin token.
    pub async fn client(&self, ca_pem: &str) -> anyhow::Result<sfs_client::Client> {
        Ok(sfs_client::Client::connect(&self.api, &self.admin_token, ca_pem).await?)
    }

    /// An API client with the coordinator token.
    pub async fn coordinator(&self, ca_pem: &str) -> anyhow::Result<sfs_client::Client> {
        Ok(sfs_client::Client::connect(&self.api, &self.coordinator_token, ca_pem).await?)
    }

    /// Resident memory of the process, in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// CPU time used by the process so far (user + system).
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let after_name = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_millis(ticks * 10))
    }

    /// Federation frames and bytes the node sent and received, from its metrics.
    pub async fn frame_totals(&self) -> anyhow::Result<(u64, u64)> {
        let text = scrape(self.metrics.context("metrics address")?).await?;
        let sum = |name: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .map(|v| v as u64)
                .sum()
        };
        Ok((
            sum("sfs_federation_frames_total"),
            sum("sfs_federation_frame_bytes_total"),
        ))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value of the metric line `name` (with its labels, if any) in scraped `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Reads `/metrics` over plain HTTP/1.0.
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

fn write_config(path: &Path, config: &NodeConfig) -> anyhow::Result<()> {
    std::fs::write(path, toml::to_string_pretty(config)?)?;
    Ok(())
}

/// A federation under measurement, in a temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub hub: NodeProcess,
    pub cities: BTreeMap<String, NodeProcess>,
    /// County hubs, by county id.
    pub counties: BTreeMap<String, NodeProcess>,
}

impl Cluster {
    fn pki_dir(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// A hub process, started.
    pub fn with_hub() -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let pki_dir = dir.path().join("pki");
        pki::init_ca(&pki_dir)?;
        let ca_pem = std::fs::read_to_string(CaFiles::in_dir(&pki_dir).cert)?;
        let mut hub = prepare(dir.path(), NodeId::hub("national")?, Upstream::None)?;
        hub.start()?;
        Ok(Cluster {
            dir,
            ca_pem,
            hub,
            cities: BTreeMap::new(),
            counties: BTreeMap::new(),
        })
    }

    /// Starts a county hub process for `cities`, linked to the national hub.
    pub async fn start_county(&mut self, county: &str, cities: Vec<String>) -> anyhow::Result<()> {
        let id = NodeId::county(county)?;
        let mut node = prepare(
            self.dir.path(),
            id,
            Upstream::National {
                url: self.hub_url(),
                serves: cities,
            },
        )?;
        node.start()?;
        wait_linked(&node, &self.ca_pem, "hub").await?;
        self.counties.insert(county.to_string(), node);
        Ok(())
    }

    /// The federation address of a county hub.
    pub fn county_url(&self, county: &str) -> anyhow::Result<String> {
        let node = self.counties.get(county).context("no such county hub")?;
        Ok(format!(
            "https://{}",
            node.federation.context("the county hub listens")?
        ))
    }

    /// Adds a city process under a county hub (not started).
    pub fn add_city_under(&mut self, name: &str, county: &str) -> anyhow::Result<()> {
        let upstream = Upstream::County {
            url: self.county_url(county)?,
            county: county.to_string(),
        };
        let node = prepare(self.dir.path(), NodeId::city(name)?, upstream)?;
        self.cities.insert(name.to_string(), node);
        Ok(())
    }

    pub fn hub_url(&self) -> String {
        format!("https://{}", self.hub.federation.expect("the hub listens"))
    }

    /// Adds a city process (not started).
    pub fn add_city(&mut self, name: &str) -> anyhow::Result<&mut NodeProcess> {
        let node = prepare(
            self.dir.path(),
            NodeId::city(name)?,
            Upstream::National {
                url: self.hub_url(),
                serves: Vec::new(),
            },
        )?;
        self.cities.insert(name.to_string(), node);
        Ok(self.cities.get_mut(name).expect("just added"))
    }

    /// Starts a city process and waits until its hub link is up.
    pub async fn start_city(&mut self, name: &str) -> anyhow::Result<()> {
        let ca = self.ca_pem.clone();
        let city = self.cities.get_mut(name).context("no such city")?;
        city.start()?;
        let upstream = if city.config.federation.county_id.is_some() {
            "county"
        } else {
            "hub"
        };
        wait_linked(city, &ca, upstream).await
    }

    /// Many cities in this process, each with its own certificate and store.
    pub async fn emulated_cities(&self, count: usize) -> anyhow::Result<Vec<EmulatedCity>> {
        let mut cities = Vec::with_capacity(count);
        for i in 0..count {
            let id = NodeId::city(&format!("kommun{i:03}"))?;
            let upstream = (self.hub_url(), NodeId::hub("national")?);
            cities.push(EmulatedCity::start(self, id, upstream).await?);
        }
        Ok(cities)
    }

    /// Like [`Cluster::emulated_cities`], each city linked to the county hub `county_of` names.
    pub async fn emulated_cities_under(
        &self,
        ids: &[NodeId],
        county_of: impl Fn(usize) -> String,
    ) -> anyhow::Result<Vec<EmulatedCity>> {
        let mut cities = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let county = county_of(i);
            let upstream = (self.county_url(&county)?, NodeId::county(&county)?);
            cities.push(EmulatedCity::start(self, id.clone(), upstream).await?);
        }
        Ok(cities)
    }
}

/// Waits until `node` reports its link to its upstream (`hub` or `county`) connected.
async fn wait_linked(node: &NodeProcess, ca: &str, upstream: &str) -> anyhow::Result<()> {
    let client = node.client(ca).await?;
    wait_for(&format!("{} linked to its {upstream}", node.id), || async {
        let status = client.clone().status().await.ok()?;
        status
            .peers
            .iter()
            .any(|p| p.peer_role == upstream && p.state == "connected")
            .then_some(())
    })
    .await
}

/// What a node of the cluster links to.
enum Upstream {
    /// Nothing: the national hub.
    None,
    /// The national hub (a city, or a county hub serving `serves`).
    National { url: String, serves: Vec<String> },
    /// A county hub (a city under it).
    County { url: String, county: String },
}

fn prepare(dir: &Path, id: NodeId, upstream: Upstream) -> anyhow::Result<NodeProcess> {
    let (hub_url, county_id, serves) = match upstream {
        Upstream::None => (None, None, Vec::new()),
        Upstream::National { url, serves } => (Some(url), None, serves),
        Upstream::County { url, county } => (Some(url), Some(county), Vec::new()),
    };
    let pki_dir = dir.join("pki");
    let files = pki::issue(&pki_dir, &id, &[], 30)?;
    let node_dir = dir.join(id.name());
    let data_dir = node_dir.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let admin_token = tokens::create_token(&data_dir, ApiRole::Admin, "bench")?;
    let coordinator_token = tokens::create_token(&data_dir, ApiRole::Coordinator, "bench")?;
    let config = NodeConfig {
        id: id.name().to_string(),
        role: id.role().as_str().to_string(),
        data_dir,
        api: ApiConfig {
            listen: "127.0.0.1:0".parse()?,
            cors_allowed_origins: Vec::new(),
        },
        federation: FederationConfig {
            listen: (id.role() != Role::City).then(|| "127.0.0.1:0".parse().expect("address")),
            hub_url,
            hub_id: None,
            county_id,
            max_backoff_ms: Some(1_000),
            keepalive_ms: None,
            ..Default::default()
        },
        tls: TlsConfig {
            ca: CaFiles::in_dir(&pki_dir).cert,
            cert: files.cert,
            key: files.key,
            revoked: (id.role() != Role::City).then(|| CaFiles::in_dir(&pki_dir).revoked),
            handshake_timeout_ms: None,
        },
        metrics: MetricsConfig {
            listen: Some("127.0.0.1:0".parse()?),
        },
        log: Default::default(),
        store: Default::default(),
        privacy: Default::default(),
        method: Default::default(),
        // The harness drives each node with one API token from many clients at full speed
        // (the reader beside the writers alone makes well over 1,000 calls a second): it
        // measures the node, not the per-token rate limit.
        limits: sfs_node::node::config::LimitsConfig {
            api_requests_per_second: 1_000_000,
            api_request_burst: 1_000_000,
            ..Default::default()
        },
        web: Default::default(),
        county: sfs_node::node::config::CountyConfig { cities: serves },
    };
    let config_path = node_dir.join("node.toml");
    write_config(&config_path, &config)?;
    Ok(NodeProcess {
        id,
        config_path,
        config,
        admin_token,
        coordinator_token,
        api: String::new(),
        federation: None,
        metrics: None,
        child: None,
        start_time: Duration::ZERO,
    })
}

/// A city inside this process: its own certificate, sled store, sync engine and hub link.
pub struct EmulatedCity {
    pub id: NodeId,
    pub sync: Arc<SyncHandle>,
    /// When each frame from the hub arrived (before the city acted on it).
    pub arrivals: Arc<std::sync::Mutex<Vec<Instant>>>,
    shutdown: watch::Sender<bool>,
    link: tokio::task::JoinHandle<()>,
}

impl EmulatedCity {
    /// Starts a city linked to `upstream` (its address and identity: the national hub or a
    /// county hub).
    async fn start(
        cluster: &Cluster,
        id: NodeId,
        upstream: (String, NodeId),
    ) -> anyhow::Result<EmulatedCity> {
        let pki_dir = cluster.pki_dir();
        let files = match NodeFiles::in_dir(&pki_dir, &id) {
            files if files.cert.exists() => files,
            _ => pki::issue(&pki_dir, &id, &[], 30)?,
        };
        let store = Store::open(
            &cluster.dir.path().join("emulated").join(id.name()),
            Duration::from_secs(10),
            sfs_node::storage::seal::MasterKey::generate(),
        )?;
        let arrivals: Arc<std::sync::Mutex<Vec<Instant>>> = Arc::default();
        let tap = {
            let arrivals = arrivals.clone();
            Arc::new(move |_: &NodeId, _: &[u8]| {
                arrivals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Instant::now());
            })
        };
        let sync = Arc::new(SyncHandle::open(
            id.clone(),
            store.shared,
            store.sync_states,
            EngineConfig {
                defer_local_pushes: true,
                national_hub: Some(NodeId::hub("national")?),
                ..EngineConfig::default()
            },
            Some(tap),
            Arc::new(sfs_node::metrics::Metrics::new()),
        )?);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (hub_url, hub_id) = upstream;
        let config = HubLinkConfig {
            hub_url,
            hub_id,
            ca_pem: cluster.ca_pem.clone(),
            cert_pem: std::fs::read_to_string(&files.cert)?,
            key_pem: std::fs::read_to_string(&files.key)?,
            max_backoff: Duration::from_millis(1_000),
        };
        let link = tokio::spawn(run_hub_link(sync.clone(), config, shutdown_rx));
        Ok(EmulatedCity {
            id,
            sync,
            arrivals,
            shutdown,
            link,
        })
    }

    /// Whether the link to the hub is up.
    pub fn linked(&self) -> bool {
        self.sync
            .peer_states()
            .iter()
            .any(|(peer, state)| peer.role() != Role::City && state.state == "connected")
    }

    /// Stops the link.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.link.await;
    }
}

/// Waits for every emulated city to be linked.
pub async fn wait_all_linked(cities: &[EmulatedCity]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    wait_for("every city linked", || async {
        cities.iter().all(EmulatedCity::linked).then_some(())
    })
    .await?;
    Ok(started.elapsed())
}

/// Polls `check` (every 5 ms) until it returns `Some`, or fails after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs a node until SIGTERM or Ctrl-C: the `serve-node` subcommand.
pub async fn serve_node(config: &Path) -> anyhow::Result<()> {
    // What a node warns of goes to the harness's standard error (`RUST_LOG`, set to `warn`
    // by [`NodeProcess::start`]): a refused link or a cut-off shows in the run's output.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let config = NodeConfig::load(config)?;
    let signal = sfs_node::node::shutdown_signal();
    let node = sfs_node::node::start(config, Default::default()).await?;
    let mut line = format!("{} ready: api https://{}", node.id, node.api_addr);
    if let Some(addr) = node.federation_addr {
        line += &format!(" federation https://{addr}");
    }
    if let Some(addr) = node.metrics_addr {
        line += &format!(" metrics http://{addr}");
    }
    println!("{line}");
    node.run_until_signal(signal).await;
    Ok(())
}
