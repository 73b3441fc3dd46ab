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
    /// `city` or `hub`.
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
}

/// The API listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the gRPC API; loopback unless an operator opens it on purpose.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api_listen(),
        }
    }
}

fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7443))
}

/// The federation link: the hub listens, a city dials the hub.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Hub only: the address cities connect to.
    pub listen: Option<SocketAddr>,
    /// City only: the hub's URL, for example `https://hub.example.se:7444`.
    pub hub_url: Option<String>,
    /// City only: the hub's name as in its certificate (default `national`).
    pub hub_id: Option<String>,
    /// City only: longest wait between reconnect attempts, in milliseconds (default 30000).
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
}

impl NodeConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: NodeConfig = toml::from_str(&text).map_err(|err| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: err.to_string(),
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

    /// The identity this configuration claims.
    pub fn node_id(&self) -> Result<NodeId, String> {
        let role = Role::parse(&self.role).ok_or_else(|| {
            format!(
                "field `role`: expected \"city\" or \"hub\", got {:?}",
                self.role
            )
        })?;
        NodeId::new(role, &self.id).map_err(|err| format!("field `id`: {err}"))
    }

    /// Checks the fields that depend on the role.
    pub fn check(&self) -> Result<(), String> {
        let id = self.node_id()?;
        match id.role() {
            Role::Hub if self.federation.listen.is_none() => {
                Err("field `federation.listen`: a hub needs an address to listen on".into())
            }
            Role::City if self.federation.hub_url.is_none() => {
                Err("field `federation.hub_url`: a city needs the hub's URL".into())
            }
            _ => Ok(()),
        }
    }

    /// The hub's identity, for a city.
    pub fn hub_id(&self) -> Result<NodeId, String> {
        NodeId::hub(self.federation.hub_id.as_deref().unwrap_or("national"))
            .map_err(|err| format!("field `federation.hub_id`: {err}"))
    }

    /// Longest reconnect wait.
    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.federation.max_backoff_ms.unwrap_or(30_000))
    }
}
