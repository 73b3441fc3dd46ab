//! Node configuration: one TOML file per node (`node.toml`), every field documented.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sfs_sync::{NodeId, Role};

/// Errors reading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration of one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's name (`helsingborg`, `national`); must match its certificate.
    pub id: String,
    /// `city`, `county` (a county hub between its cities and the national hub) or `hub` (the
    /// national hub).
    pub role: String,
    /// Where the node keeps its store, tokens and logs. Relative paths are taken from the
    /// directory of the configuration file.
    pub data_dir: PathBuf,
    /// The API listener for apps and the CLI.
    #[serde(default)]
    pub api: ApiConfig,
    /// The federation link.
    #[serde(default)]
    pub federation: FederationConfig,
    /// Certificates and keys.
    pub tls: TlsConfig,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Storage.
    #[serde(default)]
    pub store: StoreConfig,
    /// Personal data.
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// The national method handbook.
    #[serde(default)]
    pub method: MethodConfig,
    /// Limits that keep one city or one API token from hurting the others.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The coordinators' web app.
    #[serde(default)]
    pub web: WebConfig,
    /// County hub only: the cities it serves.
    #[serde(default, skip_serializing_if = "CountyConfig::is_empty")]
    pub county: CountyConfig,
}

/// A county hub's cities (`[county]`, role `county` only). The county hub accepts a link from a
/// city only if the city's certificate is from the federation's CA, is not revoked
/// (`tls.revoked`) and names a city listed here; every other peer is refused with
/// PERMISSION_DENIED. Adding or removing a city is a change of this list and a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountyConfig {
    /// The ids of the cities that link to this county hub (`["malmo", "lund"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cities: Vec<String>,
}

impl CountyConfig {
    fn is_empty(&self) -> bool {
        self.cities.is_empty()
    }
}

/// The coordinators' web app (`[web]`), off unless `listen` is set. It talks to the node only
/// through the node's own API, with the signed-in person's token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Address of the web app's listener. Without `cert` and `key` it must be a loopback
    /// address (plain HTTP, which browsers treat as a secure context only on loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Certificate chain (PEM) to serve HTTPS with, for a listener others reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Minutes without a request after which a session ends (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_idle_minutes: Option<u64>,
}

/// Limits on peers, links and API tokens (`[limits]`). Every value must be at least 1. The
/// defaults leave honest traffic far below them: 290 cities syncing against one hub, and the
/// benchmarks' write bursts, stay well within.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Hub: sustained federation frames per second one city may send (default 1000).
    pub peer_frames_per_second: u64,
    /// Hub: frames a city may send at once above the sustained rate (default 20000; a city's
    /// first sync with a full federation is about one frame per document, ~900 for 290 cities).
    pub peer_frame_burst: u64,
    /// Hub: bytes of frames one city may send per day, refilled evenly (default 8 GiB).
    pub peer_bytes_per_day: u64,
    /// Hub: after a city was cut off for a rate or byte limit, its new links are refused with
    /// RESOURCE_EXHAUSTED for this long (default 10000 ms).
    pub peer_cooldown_ms: u64,
    /// Documents a peer may list in its summary (default 10000; a full federation has ~900).
    pub docs_per_peer: u64,
    /// Hub: links one city may open per minute, sustained (default 6); above it (and its burst)
    /// a new link is refused with RESOURCE_EXHAUSTED. An honest city reconnects with backoff.
    pub peer_links_per_minute: u64,
    /// Hub: links one city may open at once above the sustained rate (default 20).
    pub peer_link_burst: u64,
    /// Hub: bytes of frames the hub may send one city per day, refilled evenly (default 8 GiB);
    /// a city over it is cut off like one over its received bytes.
    pub peer_bytes_sent_per_day: u64,
    /// National hub: a county hub carries its cities' traffic on one link, so its frame rate,
    /// burst and daily bytes (received and sent) are this many times a city's (default 50; the
    /// largest county has 49 municipalities).
    pub county_budget_cities: u64,
    /// Bytes waiting to be sent on one link before the link is closed because its peer does
    /// not read (default 64 MiB; a single larger frame still passes alone).
    pub outbox_bytes_per_link: u64,
    /// Frames waiting to be sent on one link before the link is closed (default 100000).
    pub outbox_frames_per_link: u64,
    /// Concurrent HTTP/2 streams per connection on the federation listener (default 4; a city
    /// uses one).
    pub federation_max_streams: u64,
    /// Sustained API requests per second per API token (default 1000).
    pub api_requests_per_second: u64,
    /// API requests one token may make at once above the sustained rate (default 10000).
    pub api_request_burst: u64,
    /// Longest time an API request may take until its response starts (default 30000 ms); a
    /// streaming response (Backup) is not cut by it once it has started.
    pub api_request_timeout_ms: u64,
    /// Concurrent HTTP/2 streams per connection on the API listener (default 128).
    pub api_max_streams: u64,
    /// Bytes of request and response bodies one API token may move per day, refilled evenly
    /// (default 8 GiB); a token over it is refused with RESOURCE_EXHAUSTED until it refills.
    pub api_bytes_per_day: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            peer_frames_per_second: 1_000,
            peer_frame_burst: 20_000,
            peer_bytes_per_day: 8 * 1024 * 1024 * 1024,
            peer_cooldown_ms: 10_000,
            docs_per_peer: 10_000,
            peer_links_per_minute: 6,
            peer_link_burst: 20,
            peer_bytes_sent_per_day: 8 * 1024 * 1024 * 1024,
            county_budget_cities: 50,
            outbox_bytes_per_link: 64 * 1024 * 1024,
            outbox_frames_per_link: 100_000,
            federation_max_streams: 4,
            api_requests_per_second: 1_000,
            api_request_burst: 10_000,
            api_request_timeout_ms: 30_000,
            api_max_streams: 128,
            api_bytes_per_day: 8 * 1024 * 1024 * 1024,
        }
    }
}

impl LimitsConfig {
    /// Every limit with its field name, for checks and environment overrides.
    fn fields_mut(&mut self) -> [(&'static str, &mut u64); 17] {
        [
            ("peer_frames_per_second", &mut self.peer_frames_per_second),
            ("peer_frame_burst", &mut self.peer_frame_burst),
            ("peer_bytes_per_day", &mut self.peer_bytes_per_day),
            ("peer_cooldown_ms", &mut self.peer_cooldown_ms),
            ("docs_per_peer", &mut self.docs_per_peer),
            ("peer_links_per_minute", &mut self.peer_links_per_minute),
            ("peer_link_burst", &mut self.peer_link_burst),
            ("peer_bytes_sent_per_day", &mut self.peer_bytes_sent_per_day),
            ("county_budget_cities", &mut self.county_budget_cities),
            ("outbox_bytes_per_link", &mut self.outbox_bytes_per_link),
            ("outbox_frames_per_link", &mut self.outbox_frames_per_link),
            ("federation_max_streams", &mut self.federation_max_streams),
            ("api_requests_per_second", &mut self.api_requests_per_second),
            ("api_request_burst", &mut self.api_request_burst),
            ("api_request_timeout_ms", &mut self.api_request_timeout_ms),
            ("api_max_streams", &mut self.api_max_streams),
            ("api_bytes_per_day", &mut self.api_bytes_per_day),
        ]
    }

    /// The limits on federation peers and links.
    pub fn peer_limits(&self) -> crate::federation::limits::PeerLimits {
        crate::federation::limits::PeerLimits {
            frames_per_second: self.peer_frames_per_second,
            frame_burst: self.peer_frame_burst,
            bytes_per_day: self.peer_bytes_per_day,
            cooldown: Duration::from_millis(self.peer_cooldown_ms),
            links_per_minute: self.peer_links_per_minute,
            link_burst: self.peer_link_burst,
            bytes_sent_per_day: self.peer_bytes_sent_per_day,
            outbox_bytes: usize::try_from(self.outbox_bytes_per_link).unwrap_or(usize::MAX),
            outbox_frames: usize::try_from(self.outbox_frames_per_link).unwrap_or(usize::MAX),
            county_budget_cities: self.county_budget_cities,
        }
    }

    /// The API request timeout.
    pub fn api_request_timeout(&self) -> Duration {
        Duration::from_millis(self.api_request_timeout_ms)
    }
}

/// How long personal data is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Days after which a closed signal is erased for good (fractions allowed; 0 keeps closed
    /// signals until they are erased by hand).
    #[serde(default = "default_closed_signal_retention_days")]
    pub closed_signal_retention_days: f64,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            closed_signal_retention_days: default_closed_signal_retention_days(),
        }
    }
}

fn default_closed_signal_retention_days() -> f64 {
    365.0
}

impl PrivacyConfig {
    /// The retention period of closed signals, if they are erased automatically.
    pub fn closed_signal_retention(&self) -> Option<Duration> {
        (self.closed_signal_retention_days > 0.0)
            .then(|| Duration::from_secs_f64(self.closed_signal_retention_days * 86_400.0))
    }
}

/// How the node treats handbook releases.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// The national coordinator's release public key (PEM, made by `sfs-node pki release-key`).
    /// With it a city runs only releases whose signature verifies and refuses tampered, older
    /// and expired ones, and the hub accepts only signed releases. Without it releases are not
    /// verified (development only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_public_key: Option<PathBuf>,
}

/// How the node uses its disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Free bytes the data directory must keep: writes are refused with UNAVAILABLE below it,
    /// so the store never runs into a full disk (0 turns the check off).
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
    /// The at-rest key that seals the node's local data (register, signals, statistical
    /// records, access log). It must lie outside the data directory; keep it off the backups
    /// of the data directory. Created on the node's first start if missing. Default: beside the
    /// data directory, named after it with `.key` (`/var/lib/stadforstad/lund.key` for
    /// `/var/lib/stadforstad/lund`).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            min_free_bytes: default_min_free_bytes(),
            key_file: None,
        }
    }
}

fn default_min_free_bytes() -> u64 {
    64 * 1024 * 1024
}

/// Where Prometheus scrapes the node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP listener serving `/metrics`; none when absent.
    pub listen: Option<SocketAddr>,
}

/// How the node logs (to standard error).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors (one JSON object per line).
    #[serde(default = "default_log_format")]
    pub format: String,
    /// A tracing filter, for example `info` or `info,sfs_node::federation::sync=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

fn default_log_format() -> String {
    "text".into()
}

fn default_log_level() -> String {
    "info".into()
}

/// The API listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the gRPC API; loopback unless an operator opens it on purpose.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// Web origins (`https://app.example.se`) whose pages may call the API from a browser with
    /// gRPC-Web (CORS); empty (the default) allows none, which leaves gRPC-Web to clients that
    /// are not browsers and to pages served by the node itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors_allowed_origins: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api_listen(),
            cors_allowed_origins: Vec::new(),
        }
    }
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7443))
}

/// The federation links: the national hub listens; a county hub listens for its cities and
/// dials the national hub; a city dials its upstream (its county hub, or the national hub).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// National hub and county hub: the address cities (and, at the national hub, county hubs)
    /// connect to.
    pub listen: Option<SocketAddr>,
    /// City and county hub: the upstream's URL, for example `https://hub.example.se:7444` —
    /// the national hub's, or for a city under a county hub that county hub's.
    pub hub_url: Option<String>,
    /// City and county hub: the national hub's name as in its certificate (default
    /// `national`).
    pub hub_id: Option<String>,
    /// City only: the county hub `hub_url` points to, by its name as in its certificate
    /// (`skane`); unset, `hub_url` is the national hub's. Moving a city between its county hub
    /// and the national hub is a change of `hub_url` and this field, with no data loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub county_id: Option<String>,
    /// City and county hub: the standby national hub's URL, dialled when the upstream at
    /// `hub_url` cannot be reached (see `standby_id`). A standby national hub instead sets
    /// `hub_url` and `hub_id` to the national hub it stands by for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_url: Option<String>,
    /// City and county hub: the standby national hub's name as in its certificate (`standby`).
    /// Every node that knows a standby sets it, also a city under a county hub without
    /// `standby_url`: national edits made at the standby are taken only from a standby named
    /// here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_id: Option<String>,
    /// National hub only: the standby national hubs (their names as in their certificates)
    /// that may link to this hub and whose national edits it takes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standby_hubs: Vec<String>,
    /// City and county hub with a `standby_url`: while linked to the standby, how often the
    /// node tries the upstream at `hub_url` again, in milliseconds (default 60000); once that
    /// one answers, the node closes the standby link and moves back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback_ms: Option<u64>,
    /// City and county hub: longest wait between reconnect attempts, in milliseconds (default
    /// 30000).
    pub max_backoff_ms: Option<u64>,
    /// Send a keepalive after this many milliseconds with nothing else sent (default 15000).
    pub keepalive_ms: Option<u64>,
}

/// Paths of the CA certificate and the node's own certificate and key (PEM).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Hub only: the revocation list `sfs-node pki revoke` writes (`revoked.txt` beside the
    /// CA). Re-read every second: a revoked city is refused at once and its open link closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<PathBuf>,
    /// A connection that has not finished its TLS handshake after this long is closed, on the
    /// API and the federation listener (default 10 000 ms), so idle half-open connections
    /// cannot pile up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_timeout_ms: Option<u64>,
}

impl TlsConfig {
    /// The TLS handshake timeout.
    pub fn handshake_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.handshake_timeout_ms.unwrap_or(10_000))
    }
}

impl NodeConfig {
    /// Reads and checks a configuration file; `SFS_*` environment variables override it.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        NodeConfig::load_with_env(path, |name| std::env::var(name).ok())
    }

    /// Like [`NodeConfig::load`], with the environment given as a lookup function.
    pub fn load_with_env(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: NodeConfig = toml::from_str(&text).map_err(|err| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        config
            .apply_env(env)
            .map_err(|message| ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.data_dir,
            &mut config.tls.ca,
            &mut config.tls.cert,
            &mut config.tls.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for p in [
            config.tls.revoked.as_mut(),
            config.store.key_file.as_mut(),
            config.method.release_public_key.as_mut(),
            config.web.cert.as_mut(),
            config.web.key.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config.node_id().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Applies the environment variables that override fields (every one in [`env_overrides`]).
    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        for (var, field) in env_overrides() {
            if let Some(value) = env(&var) {
                self.set_field(&field, value)
                    .map_err(|problem| format!("field `{field}` (from {var}): {problem}"))?;
            }
        }
        Ok(())
    }

    /// Sets one field, named by its path (`api.listen`), from the text of an environment
    /// variable.
    fn set_field(&mut self, field: &str, value: String) -> Result<(), String> {
        fn addr(value: &str) -> Result<SocketAddr, String> {
            value
                .parse()
                .map_err(|_| format!("{value:?} is not an address like 127.0.0.1:7443"))
        }
        fn whole(value: &str) -> Result<u64, String> {
            value
                .parse()
                .map_err(|_| format!("{value:?} is not a whole number"))
        }
        if let Some(limit) = field.strip_prefix("limits.") {
            let parsed = whole(&value)?;
            for (name, slot) in self.limits.fields_mut() {
                if name == limit {
                    *slot = parsed;
                    return Ok(());
                }
            }
            return Err("no such limit".into());
        }
        match field {
            "id" => self.id = value,
            "role" => self.role = value,
            "data_dir" => self.data_dir = value.into(),
            "api.listen" => self.api.listen = addr(&value)?,
            "api.cors_allowed_origins" => {
                self.api.cors_allowed_origins = value
                    .split(',')
                    .map(str::trim)
                    .filter(|origin| !origin.is_empty())
                    .map(String::from)
                    .collect();
            }
            "federation.listen" => self.federation.listen = Some(addr(&value)?),
            "federation.hub_url" => self.federation.hub_url = Some(value),
            "federation.hub_id" => self.federation.hub_id = Some(value),
            "federation.county_id" => self.federation.county_id = Some(value),
            "federation.standby_url" => self.federation.standby_url = Some(value),
            "federation.standby_id" => self.federation.standby_id = Some(value),
            "federation.standby_hubs" => {
                self.federation.standby_hubs = value
                    .split(',')
                    .map(str::trim)
                    .filter(|hub| !hub.is_empty())
                    .map(String::from)
                    .collect();
            }
            "federation.failback_ms" => self.federation.failback_ms = Some(whole(&value)?),
            "federation.max_backoff_ms" => self.federation.max_backoff_ms = Some(whole(&value)?),
            "federation.keepalive_ms" => self.federation.keepalive_ms = Some(whole(&value)?),
            "tls.ca" => self.tls.ca = value.into(),
            "tls.cert" => self.tls.cert = value.into(),
            "tls.key" => self.tls.key = value.into(),
            "tls.revoked" => self.tls.revoked = Some(value.into()),
            "tls.handshake_timeout_ms" => self.tls.handshake_timeout_ms = Some(whole(&value)?),
            "metrics.listen" => self.metrics.listen = Some(addr(&value)?),
            "log.format" => self.log.format = value,
            "log.level" => self.log.level = value,
            "store.min_free_bytes" => {
                self.store.min_free_bytes = value
                    .parse()
                    .map_err(|_| format!("{value:?} is not a number of bytes"))?;
            }
            "store.key_file" => self.store.key_file = Some(value.into()),
            "privacy.closed_signal_retention_days" => {
                self.privacy.closed_signal_retention_days = value
                    .parse()
                    .map_err(|_| format!("{value:?} is not a number of days"))?;
            }
            "method.release_public_key" => self.method.release_public_key = Some(value.into()),
            "web.listen" => self.web.listen = Some(addr(&value)?),
            "web.cert" => self.web.cert = Some(value.into()),
            "web.key" => self.web.key = Some(value.into()),
            "web.session_idle_minutes" => self.web.session_idle_minutes = Some(whole(&value)?),
            "county.cities" => {
                self.county.cities = value
                    .split(',')
                    .map(str::trim)
                    .filter(|city| !city.is_empty())
                    .map(String::from)
                    .collect();
            }
            _ => return Err("no environment variable sets this field".into()),
        }
        Ok(())
    }

    /// The at-rest key file: `store.key_file`, or beside the data directory.
    pub fn key_file(&self) -> PathBuf {
        default_key_file(&self.data_dir, self.store.key_file.as_deref())
    }

    /// The identity this configuration claims.
    pub fn node_id(&self) -> Result<NodeId, String> {
        let role = Role::parse(&self.role).ok_or_else(|| {
            format!(
                "field `role`: expected \"city\", \"county\" or \"hub\", got {:?}",
                self.role
            )
        })?;
        NodeId::new(role, &self.id).map_err(|err| format!("field `id`: {err}"))
    }

    /// Checks the fields that depend on the role.
    pub fn check(&self) -> Result<(), String> {
        let id = self.node_id()?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(format!(
                "field `log.format`: expected \"text\" or \"json\", got {:?}",
                self.log.format
            ));
        }
        let mut limits = self.limits.clone();
        for (field, value) in limits.fields_mut() {
            if *value == 0 {
                return Err(format!("field `limits.{field}`: must be at least 1"));
            }
        }
        if u32::try_from(self.limits.federation_max_streams).is_err()
            || u32::try_from(self.limits.api_max_streams).is_err()
        {
            return Err("field `limits.*_max_streams`: at most 4294967295".into());
        }
        if self.web.cert.is_some() != self.web.key.is_some() {
            return Err("field `web.cert` and `web.key`: give both or neither".into());
        }
        if let Some(listen) = self.web.listen {
            if self.web.cert.is_none() && !listen.ip().is_loopback() {
                return Err(format!(
                    "field `web.listen`: {listen} is not a loopback address; serving the web app to others needs HTTPS (web.cert and web.key)"
                ));
            }
        }
        crate::storage::seal::check_outside(&self.key_file(), &self.data_dir)
            .map_err(|err| format!("field `store.key_file`: {err}"))?;
        for origin in &self.api.cors_allowed_origins {
            check_origin(origin)
                .map_err(|problem| format!("field `api.cors_allowed_origins`: {problem}"))?;
        }
        if self.web.session_idle_minutes == Some(0) {
            return Err("field `web.session_idle_minutes`: must be at least 1".into());
        }
        let days = self.privacy.closed_signal_retention_days;
        if !days.is_finite() || !(0.0..=36_500.0).contains(&days) {
            return Err(format!(
                "field `privacy.closed_signal_retention_days`: expected 0 to 36500 days, got {days}"
            ));
        }
        self.hub_id()?;
        self.upstream_id()?;
        if id.role() != Role::City && self.federation.county_id.is_some() {
            return Err(format!(
                "field `federation.county_id`: only a city links to a county hub; a {} links to the national hub",
                id.role()
            ));
        }
        if id.role() != Role::County && !self.county.cities.is_empty() {
            return Err(format!(
                "field `county.cities`: only a county hub (role \"county\") serves cities, not a {}",
                id.role()
            ));
        }
        for city in &self.county.cities {
            NodeId::city(city).map_err(|err| format!("field `county.cities`: {err}"))?;
        }
        self.check_standby(&id)?;
        match id.role() {
            Role::Hub | Role::County if self.federation.listen.is_none() => Err(format!(
                "field `federation.listen`: a {} needs an address for its cities to connect to",
                if id.role() == Role::Hub { "hub" } else { "county hub" }
            )),
            Role::County if self.federation.hub_url.is_none() => Err(
                "field `federation.hub_url`: a county hub needs the national hub's URL".into(),
            ),
            Role::City if self.federation.hub_url.is_none() => Err(
                "field `federation.hub_url`: a city needs the URL of its county hub or the national hub"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    /// Checks the standby fields: a city or county hub names the standby national hub
    /// (`standby_id`, needed with `standby_url`); the national hub lists its standbys
    /// (`standby_hubs`); a standby national hub dials the national hub (`hub_url`, `hub_id`).
    fn check_standby(&self, id: &NodeId) -> Result<(), String> {
        let fed = &self.federation;
        if let Some(standby) = self.standby_id()? {
            if id.role() == Role::Hub {
                return Err("field `federation.standby_id`: a national hub lists its standbys in `federation.standby_hubs`; a standby names the national hub in `federation.hub_id`".into());
            }
            if standby == self.hub_id()? {
                return Err(format!(
                    "field `federation.standby_id`: the standby must be another hub than the national hub ({standby})"
                ));
            }
        }
        if fed.standby_url.is_some() {
            if id.role() == Role::Hub {
                return Err("field `federation.standby_url`: a hub does not fail over; a standby national hub dials the national hub at `federation.hub_url`".into());
            }
            if fed.standby_id.is_none() {
                return Err(
                    "field `federation.standby_id`: `federation.standby_url` needs the standby hub's name as in its certificate"
                        .into(),
                );
            }
        }
        if fed.failback_ms == Some(0) {
            return Err("field `federation.failback_ms`: must be at least 1".into());
        }
        if !fed.standby_hubs.is_empty() {
            if id.role() != Role::Hub {
                return Err(format!(
                    "field `federation.standby_hubs`: only the national hub has standbys, not a {}; name the standby in `federation.standby_id`",
                    id.role()
                ));
            }
            if fed.hub_url.is_some() {
                return Err("field `federation.standby_hubs`: this hub is a standby itself (it has `federation.hub_url`); only the national hub lists standbys".into());
            }
        }
        for hub in &fed.standby_hubs {
            let standby = NodeId::hub(hub)
                .map_err(|err| format!("field `federation.standby_hubs`: {err}"))?;
            if &standby == id {
                return Err(format!(
                    "field `federation.standby_hubs`: {standby} is this hub itself"
                ));
            }
        }
        if id.role() == Role::Hub && fed.hub_url.is_some() && &self.hub_id()? == id {
            return Err(format!(
                "field `federation.hub_id`: a standby hub dials the national hub, another hub than itself ({id}); set the national hub's name"
            ));
        }
        Ok(())
    }

    /// The standby national hub's identity (`federation.standby_id`), if one is configured.
    pub fn standby_id(&self) -> Result<Option<NodeId>, String> {
        self.federation
            .standby_id
            .as_deref()
            .map(|name| {
                NodeId::hub(name).map_err(|err| format!("field `federation.standby_id`: {err}"))
            })
            .transpose()
    }

    /// The standby national hubs whose national edits this node takes: its `standby_id`, or at
    /// the national hub its `standby_hubs`.
    pub fn standby_hubs(&self) -> Result<Vec<NodeId>, String> {
        let mut hubs: Vec<NodeId> = self.standby_id()?.into_iter().collect();
        for hub in &self.federation.standby_hubs {
            hubs.push(
                NodeId::hub(hub)
                    .map_err(|err| format!("field `federation.standby_hubs`: {err}"))?,
            );
        }
        Ok(hubs)
    }

    /// How often a node linked to its standby tries its first upstream again.
    pub fn failback_interval(&self) -> Duration {
        Duration::from_millis(self.federation.failback_ms.unwrap_or(60_000))
    }

    /// The national hub's identity (`federation.hub_id`, default `national`).
    pub fn hub_id(&self) -> Result<NodeId, String> {
        NodeId::hub(self.federation.hub_id.as_deref().unwrap_or("national"))
            .map_err(|err| format!("field `federation.hub_id`: {err}"))
    }

    /// The node a city or county hub dials at `federation.hub_url`: the county hub
    /// `federation.county_id` if set, else the national hub.
    pub fn upstream_id(&self) -> Result<NodeId, String> {
        match &self.federation.county_id {
            Some(county) => {
                NodeId::county(county).map_err(|err| format!("field `federation.county_id`: {err}"))
            }
            None => self.hub_id(),
        }
    }

    /// Longest reconnect wait.
    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.federation.max_backoff_ms.unwrap_or(30_000))
    }
}

/// Checks a web origin as browsers send it: `scheme://host[:port]`, nothing after.
fn check_origin(origin: &str) -> Result<(), String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', '*', ' ']) => Ok(()),
        _ => Err(format!(
            "{origin:?} is not an origin like https://app.example.se (scheme, host and port only; no wildcards)"
        )),
    }
}

/// The at-rest key file for `data_dir`: `configured`, or `<data_dir>.key` beside it.
pub fn default_key_file(data_dir: &Path, configured: Option<&Path>) -> PathBuf {
    if let Some(path) = configured {
        return path.to_path_buf();
    }
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "data".into());
    data_dir
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("{name}.key"))
}

/// The fields an environment variable can set, by path (`api.listen`); every field of
/// [`NodeConfig`] is here (a test derives the fields from the type and compares).
const ENV_FIELDS: &[&str] = &[
    "id",
    "role",
    "data_dir",
    "api.listen",
    "api.cors_allowed_origins",
    "federation.listen",
    "federation.hub_url",
    "federation.hub_id",
    "federation.county_id",
    "federation.standby_url",
    "federation.standby_id",
    "federation.standby_hubs",
    "federation.failback_ms",
    "federation.max_backoff_ms",
    "federation.keepalive_ms",
    "tls.ca",
    "tls.cert",
    "tls.key",
    "tls.revoked",
    "tls.handshake_timeout_ms",
    "metrics.listen",
    "log.format",
    "log.level",
    "store.min_free_bytes",
    "store.key_file",
    "privacy.closed_signal_retention_days",
    "method.release_public_key",
    "web.listen",
    "web.cert",
    "web.key",
    "web.session_idle_minutes",
    "county.cities",
];

/// The environment variable of a field: `SFS_` and the field's path in capitals with `_` for
/// `.` (`api.listen` is `SFS_API_LISTEN`), except the hub's and the standby's URL and name,
/// which are `SFS_HUB_URL`, `SFS_HUB_ID`, `SFS_STANDBY_URL` and `SFS_STANDBY_ID`.
pub fn env_var_of(field: &str) -> String {
    match field {
        "federation.hub_url" => "SFS_HUB_URL".into(),
        "federation.hub_id" => "SFS_HUB_ID".into(),
        "federation.standby_url" => "SFS_STANDBY_URL".into(),
        "federation.standby_id" => "SFS_STANDBY_ID".into(),
        _ => format!("SFS_{}", field.replace('.', "_").to_uppercase()),
    }
}

/// Every environment variable that overrides a configuration field, with the field it sets:
/// `(SFS_API_LISTEN, api.listen)`. `sfs-node config env` prints this list.
pub fn env_overrides() -> Vec<(String, String)> {
    let limits = LimitsConfig::default()
        .fields_mut()
        .map(|(name, _)| format!("limits.{name}"))
        .to_vec();
    ENV_FIELDS
        .iter()
        .map(|field| field.to_string())
        .chain(limits)
        .map(|field| (env_var_of(&field), field))
        .collect()
}

/// The list of environment variables as the Markdown table in `deploy/README.md`.
pub fn env_overrides_markdown() -> String {
    let mut out = String::from("| variable | field |\n| --- | --- |\n");
    for (var, field) in env_overrides() {
        out.push_str(&format!("| `{var}` | `{field}` |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("node.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    const CITY: &str = r#"
id = "lund"
role = "city"
data_dir = "data"
[federation]
hub_url = "https://hub.example:7444"
[tls]
ca = "ca.crt"
cert = "lund.crt"
key = "lund.key"
"#;

    #[test]
    fn a_valid_configuration_loads_with_defaults_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::load_with_env(&write(dir.path(), CITY), |_| None).unwrap();
        assert_eq!(config.api.listen, default_api_listen());
        assert_eq!(config.data_dir, dir.path().join("data"));
        assert_eq!(config.log.format, "text");
        assert!(config.metrics.listen.is_none());
        assert_eq!(config.key_file(), dir.path().join("data.key"));
        assert_eq!(
            config.privacy.closed_signal_retention(),
            Some(Duration::from_secs(365 * 86_400))
        );
    }

    #[test]
    fn environment_variables_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let env = |name: &str| match name {
            "SFS_API_LISTEN" => Some("127.0.0.1:9000".to_string()),
            "SFS_METRICS_LISTEN" => Some("127.0.0.1:9464".to_string()),
            "SFS_LOG_FORMAT" => Some("json".to_string()),
            "SFS_METHOD_RELEASE_PUBLIC_KEY" => Some("keys/release.pub".to_string()),
            _ => None,
        };
        let config = NodeConfig::load_with_env(&write(dir.path(), CITY), env).unwrap();
        assert_eq!(
            config.method.release_public_key,
            Some(dir.path().join("keys/release.pub"))
        );
        assert_eq!(config.api.listen.port(), 9000);
        assert_eq!(config.metrics.listen.unwrap().port(), 9464);
        assert_eq!(config.log.format, "json");
        assert!(
            config.web.listen.is_none(),
            "the web app is off unless configured"
        );
        let env = |name: &str| (name == "SFS_WEB_LISTEN").then(|| "127.0.0.1:8080".to_string());
        let config = NodeConfig::load_with_env(&write(dir.path(), CITY), env).unwrap();
        assert_eq!(config.web.listen, Some("127.0.0.1:8080".parse().unwrap()));
        let with_tls = format!(
            "{CITY}\n[web]\nlisten = \"0.0.0.0:443\"\ncert = \"web.crt\"\nkey = \"web.key\"\n"
        );
        let config = NodeConfig::load_with_env(&write(dir.path(), &with_tls), |_| None).unwrap();
        assert_eq!(config.web.cert, Some(dir.path().join("web.crt")));
        let env =
            |name: &str| (name == "SFS_LIMITS_PEER_FRAMES_PER_SECOND").then(|| "250".to_string());
        let config = NodeConfig::load_with_env(&write(dir.path(), CITY), env).unwrap();
        assert_eq!(config.limits.peer_frames_per_second, 250);
        assert_eq!(config.limits.api_requests_per_second, 1_000, "a default");
        let err = NodeConfig::load_with_env(&write(dir.path(), CITY), |name| {
            (name == "SFS_LIMITS_API_REQUEST_BURST").then(|| "lots".to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("limits.api_request_burst"), "{err}");
    }

    const COUNTY: &str = r#"
id = "skane"
role = "county"
data_dir = "data"
[federation]
listen = "127.0.0.1:7444"
hub_url = "https://hub.example:7444"
[tls]
ca = "ca.crt"
cert = "skane.crt"
key = "skane.key"
[county]
cities = ["malmo", "lund"]
"#;

    #[test]
    fn a_county_hub_listens_for_its_cities_and_dials_the_national_hub() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::load_with_env(&write(dir.path(), COUNTY), |_| None).unwrap();
        assert_eq!(config.node_id().unwrap(), NodeId::county("skane").unwrap());
        assert_eq!(
            config.upstream_id().unwrap(),
            NodeId::hub("national").unwrap()
        );
        assert_eq!(config.county.cities, vec!["malmo", "lund"]);
        let env = |name: &str| (name == "SFS_COUNTY_CITIES").then(|| "malmo, ystad".to_string());
        let config = NodeConfig::load_with_env(&write(dir.path(), COUNTY), env).unwrap();
        assert_eq!(config.county.cities, vec!["malmo", "ystad"]);
        // A city under the county hub names it; the national hub stays `hub_id`.
        let city = CITY.replace("hub_url =", "county_id = \"skane\"\nhub_url =");
        let config = NodeConfig::load_with_env(&write(dir.path(), &city), |_| None).unwrap();
        assert_eq!(
            config.upstream_id().unwrap(),
            NodeId::county("skane").unwrap()
        );
        assert_eq!(config.hub_id().unwrap(), NodeId::hub("national").unwrap());
        let cases = [
            (
                COUNTY.replace("listen = \"127.0.0.1:7444\"\n", ""),
                "field `federation.listen`: a county hub needs",
            ),
            (
                COUNTY.replace("hub_url = \"https://hub.example:7444\"\n", ""),
                "field `federation.hub_url`: a county hub needs the national hub's URL",
            ),
            (
                COUNTY.replace("hub_url", "county_id = \"uppsala\"\nhub_url"),
                "field `federation.county_id`: only a city links to a county hub",
            ),
            (
                COUNTY.replace("\"lund\"", "\"Lund!\""),
                "field `county.cities`",
            ),
            (
                format!("{CITY}\n[county]\ncities = [\"malmo\"]\n"),
                "field `county.cities`: only a county hub",
            ),
            (
                CITY.replace("hub_url", "county_id = \"Skåne\"\nhub_url"),
                "field `federation.county_id`",
            ),
        ];
        for (text, expected) in cases {
            let err = NodeConfig::load_with_env(&write(dir.path(), &text), |_| None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    const HUB: &str = r#"
id = "national"
role = "hub"
data_dir = "data"
[federation]
listen = "127.0.0.1:7444"
[tls]
ca = "ca.crt"
cert = "national.crt"
key = "national.key"
"#;

    #[test]
    fn a_standby_hub_dials_the_national_hub_and_cities_name_both() {
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str| NodeConfig::load_with_env(&write(dir.path(), text), |_| None);
        let standby = NodeId::hub("standby").unwrap();
        // The national hub lists its standby; the standby dials the national hub.
        let primary = load(&HUB.replace("[tls]", "standby_hubs = [\"standby\"]\n[tls]")).unwrap();
        assert_eq!(primary.standby_hubs().unwrap(), vec![standby.clone()]);
        let standby_hub = HUB
            .replace("id = \"national\"", "id = \"standby\"")
            .replace("[tls]", "hub_url = \"https://hub.example:7444\"\n[tls]");
        let config = load(&standby_hub).unwrap();
        assert_eq!(config.hub_id().unwrap(), NodeId::hub("national").unwrap());
        assert!(config.standby_hubs().unwrap().is_empty());
        // A city names the standby's URL and name; the failback interval has a default.
        let city = CITY.replace(
            "[tls]",
            "standby_url = \"https://standby.example:7444\"\nstandby_id = \"standby\"\n[tls]",
        );
        let config = load(&city).unwrap();
        assert_eq!(config.standby_hubs().unwrap(), vec![standby.clone()]);
        assert_eq!(config.failback_interval(), Duration::from_secs(60));
        let env = |name: &str| match name {
            "SFS_STANDBY_URL" => Some("https://b.example:7444".to_string()),
            "SFS_STANDBY_ID" => Some("reserve".to_string()),
            "SFS_FEDERATION_FAILBACK_MS" => Some("5000".to_string()),
            _ => None,
        };
        let config = NodeConfig::load_with_env(&write(dir.path(), CITY), env).unwrap();
        assert_eq!(
            config.federation.standby_url.as_deref(),
            Some("https://b.example:7444")
        );
        assert_eq!(
            config.standby_hubs().unwrap(),
            vec![NodeId::hub("reserve").unwrap()]
        );
        assert_eq!(config.failback_interval(), Duration::from_secs(5));
        let cases = [
            (
                CITY.replace("[tls]", "standby_url = \"https://b.example:7444\"\n[tls]"),
                "field `federation.standby_id`: `federation.standby_url` needs",
            ),
            (
                CITY.replace("[tls]", "standby_id = \"national\"\n[tls]"),
                "the standby must be another hub",
            ),
            (
                CITY.replace("[tls]", "standby_hubs = [\"standby\"]\n[tls]"),
                "field `federation.standby_hubs`: only the national hub",
            ),
            (
                HUB.replace("[tls]", "standby_id = \"standby\"\n[tls]"),
                "field `federation.standby_id`: a national hub lists",
            ),
            (
                HUB.replace("[tls]", "standby_hubs = [\"national\"]\n[tls]"),
                "is this hub itself",
            ),
            (
                HUB.replace("[tls]", "hub_url = \"https://b.example:7444\"\n[tls]"),
                "field `federation.hub_id`: a standby hub dials the national hub",
            ),
            (
                standby_hub.replace("[tls]", "standby_hubs = [\"reserve\"]\n[tls]"),
                "this hub is a standby itself",
            ),
            (
                HUB.replace("[tls]", "standby_url = \"https://b.example:7444\"\n[tls]"),
                "field `federation.standby_url`: a hub does not fail over",
            ),
        ];
        for (text, expected) in cases {
            let err = load(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn the_standby_hub_template_in_deploy_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/standby.toml"
        ));
        let config = NodeConfig::load_with_env(path, |_| None).unwrap();
        assert_eq!(config.node_id().unwrap(), NodeId::hub("standby").unwrap());
        assert_eq!(config.hub_id().unwrap(), NodeId::hub("national").unwrap());
        assert!(config.federation.hub_url.is_some());
    }

    #[test]
    fn the_county_hub_template_in_deploy_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/county.toml"
        ));
        let config = NodeConfig::load_with_env(path, |_| None).unwrap();
        assert_eq!(config.node_id().unwrap(), NodeId::county("skane").unwrap());
        assert_eq!(config.county.cities.len(), 3);
    }

    #[test]
    fn invalid_configurations_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                CITY.replace("role = \"city\"", "role = \"town\""),
                "field `role`",
            ),
            (
                CITY.replace("id = \"lund\"", "id = \"Lund!\""),
                "field `id`",
            ),
            (
                CITY.replace("hub_url = \"https://hub.example:7444\"", ""),
                "field `federation.hub_url`",
            ),
            (
                format!("{CITY}\n[log]\nformat = \"xml\"\n"),
                "field `log.format`",
            ),
            (format!("{CITY}\n[api]\nlisten = \"nowhere\"\n"), "listen"),
            (format!("{CITY}\nunknown = 1\n"), "unknown"),
            (
                format!("{CITY}\n[limits]\napi_requests_per_second = 0\n"),
                "field `limits.api_requests_per_second`: must be at least 1",
            ),
            (
                format!("{CITY}\n[limits]\nno_such_limit = 1\n"),
                "no_such_limit",
            ),
            (
                format!("{CITY}\n[web]\nlisten = \"0.0.0.0:8080\"\n"),
                "field `web.listen`: 0.0.0.0:8080 is not a loopback address",
            ),
            (
                format!("{CITY}\n[web]\nlisten = \"192.168.1.5:8080\"\n"),
                "needs HTTPS",
            ),
            (
                format!("{CITY}\n[web]\nlisten = \"127.0.0.1:8080\"\ncert = \"web.crt\"\n"),
                "field `web.cert` and `web.key`",
            ),
        ];
        for (text, expected) in cases {
            let err = NodeConfig::load_with_env(&write(dir.path(), &text), |_| None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
        let err = NodeConfig::load_with_env(&write(dir.path(), CITY), |name| {
            (name == "SFS_API_LISTEN").then(|| "x".to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("SFS_API_LISTEN") && err.contains("api.listen"),
            "{err}"
        );
    }

    /// A configuration with every optional field set, so that serialising it shows every field.
    fn every_field_set() -> NodeConfig {
        NodeConfig {
            id: "lund".into(),
            role: "city".into(),
            data_dir: "data".into(),
            api: ApiConfig {
                listen: default_api_listen(),
                cors_allowed_origins: vec!["https://app.example".into()],
            },
            federation: FederationConfig {
                listen: Some(default_api_listen()),
                hub_url: Some("https://hub.example:7444".into()),
                hub_id: Some("national".into()),
                county_id: Some("skane".into()),
                standby_url: Some("https://standby.example:7444".into()),
                standby_id: Some("standby".into()),
                standby_hubs: vec!["standby".into()],
                failback_ms: Some(1),
                max_backoff_ms: Some(1),
                keepalive_ms: Some(1),
            },
            tls: TlsConfig {
                ca: "ca".into(),
                cert: "cert".into(),
                key: "key".into(),
                revoked: Some("revoked".into()),
                handshake_timeout_ms: Some(1),
            },
            metrics: MetricsConfig {
                listen: Some(default_api_listen()),
            },
            log: LogConfig::default(),
            store: StoreConfig {
                min_free_bytes: 1,
                key_file: Some("key".into()),
            },
            privacy: PrivacyConfig::default(),
            method: MethodConfig {
                release_public_key: Some("release.pub".into()),
            },
            limits: LimitsConfig::default(),
            web: WebConfig {
                listen: Some(default_api_listen()),
                cert: Some("web.crt".into()),
                key: Some("web.key".into()),
                session_idle_minutes: Some(1),
            },
            county: CountyConfig {
                cities: vec!["malmo".into()],
            },
        }
    }

    fn leaf_paths(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaf_paths(&path, value, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }

    #[test]
    fn every_field_of_the_configuration_type_has_an_environment_variable() {
        let value = toml::Value::try_from(every_field_set()).unwrap();
        let mut fields = Vec::new();
        leaf_paths("", &value, &mut fields);
        fields.sort();
        let mut with_env: Vec<String> = env_overrides().into_iter().map(|(_, f)| f).collect();
        with_env.sort();
        assert_eq!(
            fields, with_env,
            "fields of NodeConfig vs fields with a variable"
        );
        // Each variable really sets its field (a bad value is refused naming the field and
        // the variable, never "no variable sets this field").
        for (var, field) in env_overrides() {
            let mut config = every_field_set();
            if let Err(problem) = config.set_field(&field, "not-a-value".into()) {
                assert!(!problem.contains("no "), "{var} ({field}): {problem}");
            }
        }
    }

    #[test]
    fn the_documented_environment_variables_are_the_generated_list() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/README.md"))
                .unwrap();
        assert!(
            readme.contains(&env_overrides_markdown()),
            "deploy/README.md must hold the table `sfs-node config env --markdown` prints"
        );
        for doc in ["/../deploy/RUNBOOK.md", "/../README.md"] {
            let text =
                std::fs::read_to_string(format!("{}{doc}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            assert!(
                !text.contains("`SFS_TLS_CERT`"),
                "{doc}: a second, hand-kept list of environment variables; link deploy/README.md"
            );
        }
    }

    #[test]
    fn the_variables_added_for_every_field_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let env = |name: &str| match name {
            "SFS_TLS_REVOKED" => Some("revoked.txt".to_string()),
            "SFS_FEDERATION_KEEPALIVE_MS" => Some("5000".to_string()),
            "SFS_TLS_HANDSHAKE_TIMEOUT_MS" => Some("2000".to_string()),
            "SFS_FEDERATION_MAX_BACKOFF_MS" => Some("1000".to_string()),
            "SFS_API_CORS_ALLOWED_ORIGINS" => {
                Some("https://a.example, https://b.example:8443".to_string())
            }
            _ => None,
        };
        let config = NodeConfig::load_with_env(&write(dir.path(), CITY), env).unwrap();
        assert_eq!(config.tls.revoked, Some(dir.path().join("revoked.txt")));
        assert_eq!(config.federation.keepalive_ms, Some(5000));
        assert_eq!(config.tls.handshake_timeout(), Duration::from_secs(2));
        assert_eq!(config.max_backoff(), Duration::from_secs(1));
        assert_eq!(
            config.api.cors_allowed_origins,
            vec!["https://a.example", "https://b.example:8443"]
        );
        let err = NodeConfig::load_with_env(&write(dir.path(), CITY), |name| {
            (name == "SFS_FEDERATION_KEEPALIVE_MS").then(|| "soon".to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("federation.keepalive_ms") && err.contains("SFS_FEDERATION_KEEPALIVE_MS"),
            "{err}"
        );
    }

    #[test]
    fn a_key_file_inside_the_data_directory_is_refused_when_checked() {
        let dir = tempfile::tempdir().unwrap();
        for key_file in ["data/lund.key", "data/../data/sub/lund.key"] {
            let text = format!("{CITY}\n[store]\nkey_file = \"{key_file}\"\n");
            let err = NodeConfig::load_with_env(&write(dir.path(), &text), |_| None)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("field `store.key_file`") && err.contains("inside the data directory"),
                "{err}"
            );
        }
        let err = NodeConfig::load_with_env(&write(dir.path(), CITY), |name| {
            (name == "SFS_STORE_KEY_FILE").then(|| "data/keys/lund.key".to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("inside the data directory"), "{err}");
        let text = format!("{CITY}\n[api]\ncors_allowed_origins = [\"https://*.example\"]\n");
        let err = NodeConfig::load_with_env(&write(dir.path(), &text), |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `api.cors_allowed_origins`"), "{err}");
    }
}
