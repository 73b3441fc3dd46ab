//! `sfs-node demo`: a whole federation on this machine, a hub and some cities, each a real node
//! with its own data directory, certificate, token and listeners on 127.0.0.1.
//!
//! Layout under the demo directory: `pki/` (the CA and node certificates), `<node>/node.toml`
//! and `<node>/data/` per node, and `federation.json` describing how to reach each node.
//! Running the demo again on the same directory reuses all of it (ports are chosen anew).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sfs_sync::{DocId, NodeId, ShareableDocId};

use crate::config::{ApiConfig, FederationConfig, NodeConfig, TlsConfig};
use crate::node::{self, RunningNode, StartOptions};
use crate::pki::{self, CaFiles, NodeFiles};
use crate::register::{self, ContactRecord, OrganisationRecord};
use crate::tokens::{self, ApiRole};

/// The name of the demo's hub.
pub const HUB_NAME: &str = "national";

/// `federation.json`: how to reach each node of a local federation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FederationFile {
    /// Path of the CA certificate that signed every node's certificate.
    pub ca: PathBuf,
    /// The national hub.
    pub hub: FederationNode,
    /// Every city, by name.
    pub cities: BTreeMap<String, FederationNode>,
}

/// One node in `federation.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FederationNode {
    /// The node's name (`national`, `malmo`).
    pub name: String,
    /// The API endpoint, for example `https://127.0.0.1:40123`.
    pub api: String,
    /// An admin API token.
    pub token: String,
    /// The node's data directory.
    pub data_dir: PathBuf,
}

/// Makes (or reuses) the CA, certificates, configurations and admin tokens for a federation.
pub fn prepare(dir: &Path, cities: &[String]) -> anyhow::Result<Vec<(NodeConfig, String)>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let pki_dir = dir.join("pki");
    if !CaFiles::in_dir(&pki_dir).cert.exists() {
        pki::init_ca(&pki_dir)?;
    }
    let mut ids = vec![NodeId::hub(HUB_NAME)?];
    for city in cities {
        ids.push(NodeId::city(city).with_context(|| format!("city name {city:?}"))?);
    }
    let mut prepared = Vec::new();
    for id in ids {
        let files = NodeFiles::in_dir(&pki_dir, &id);
        if !files.cert.exists() {
            pki::issue(&pki_dir, &id, &[], 365)?;
        }
        let node_dir = dir.join(id.name());
        let data_dir = node_dir.join("data");
        std::fs::create_dir_all(&data_dir)?;
        let token_path = node_dir.join("admin.token");
        let token = match std::fs::read_to_string(&token_path) {
            Ok(token) => token.trim().to_string(),
            Err(_) => {
                let token = tokens::create_token(&data_dir, ApiRole::Admin, "demo admin")?;
                pki::write_private(&token_path, &token)?;
                token
            }
        };
        let config = NodeConfig {
            id: id.name().to_string(),
            role: id.role().as_str().to_string(),
            data_dir,
            api: ApiConfig {
                listen: "127.0.0.1:0".parse()?,
            },
            federation: FederationConfig {
                listen: (id.role() == sfs_sync::Role::Hub)
                    .then(|| "127.0.0.1:0".parse().expect("address")),
                hub_url: (id.role() == sfs_sync::Role::City)
                    .then(|| "https://127.0.0.1:0".to_string()),
                hub_id: None,
                max_backoff_ms: Some(2_000),
                keepalive_ms: None,
            },
            tls: TlsConfig {
                ca: CaFiles::in_dir(&pki_dir).cert,
                cert: files.cert,
                key: files.key,
            },
        };
        prepared.push((config, token));
    }
    Ok(prepared)
}

/// Starts the prepared federation: the hub first, then every city pointed at it.
pub async fn start(
    dir: &Path,
    cities: &[String],
) -> anyhow::Result<(Vec<RunningNode>, FederationFile)> {
    let prepared = prepare(dir, cities)?;
    let dir = dir.canonicalize()?;
    let mut running = Vec::new();
    let mut cities = BTreeMap::new();
    let mut hub = None;
    let mut hub_url = String::new();
    for (mut config, token) in prepared {
        if let Some(url) = config.federation.hub_url.as_mut() {
            *url = hub_url.clone();
        }
        let node_dir = dir.join(&config.id);
        std::fs::write(node_dir.join("node.toml"), toml::to_string_pretty(&config)?)?;
        let node = node::start(config.clone(), StartOptions::default())
            .await
            .with_context(|| format!("starting {}", config.id))?;
        if let Some(addr) = node.federation_addr {
            hub_url = format!("https://{addr}");
        }
        let entry = FederationNode {
            name: config.id.clone(),
            api: format!("https://{}", node.api_addr),
            token,
            data_dir: config.data_dir.clone(),
        };
        if node.id.role() == sfs_sync::Role::Hub {
            hub = Some(entry);
        } else {
            cities.insert(config.id.clone(), entry);
        }
        running.push(node);
    }
    let Some(hub) = hub else {
        bail!("the hub did not start");
    };
    let file = FederationFile {
        ca: CaFiles::in_dir(&dir.join("pki")).cert,
        hub,
        cities,
    };
    std::fs::write(
        dir.join("federation.json"),
        serde_json::to_string_pretty(&file)?,
    )?;
    Ok((running, file))
}

/// Writes sample content into a city that has none yet: a few lessons and a small register.
pub fn seed_city(node: &RunningNode) -> anyhow::Result<()> {
    let city = node.id.name().to_string();
    let doc = ShareableDocId::lessons(&city)?;
    let has_lessons = node
        .sync()
        .read(|e| e.document(&doc).is_some_and(|d| !d.get_heads().is_empty()));
    if has_lessons {
        return Ok(());
    }
    let samples: [(&str, &str, &[&str]); 2] = [
        (
            "Hotel staff spot more when the whole shift is trained",
            "We trained reception, cleaning and night staff together in one session. Signals from hotels doubled in the quarter after, and most came from cleaning staff who had never been invited before.",
            &["hotels", "training"],
        ),
        (
            "One phone number for the whole network",
            "Partners hesitated when they had to pick the right authority. A single number to the social services' on-call team, which then involves the police, made first contact faster.",
            &["referral", "routine"],
        ),
    ];
    for (title, body, tags) in samples {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        let id = crate::api::new_id();
        node.sync()
            .edit(&doc, |tx| {
                crate::lessons::create(tx, &id, title, body, &tags, crate::api::now_ms())
            })
            .map_err(|err| anyhow::anyhow!("seeding lessons: {err}"))?;
    }
    let network = DocId::local("network")?;
    let org = OrganisationRecord {
        id: crate::api::new_id(),
        display_name: format!("Social services, {city}"),
        sector: "municipality".into(),
    };
    node.local()
        .edit(&network, |tx| register::create_organisation(tx, &org))?;
    let contact = ContactRecord {
        id: crate::api::new_id(),
        full_name: "Coordinator on duty".into(),
        role: "network coordinator".into(),
        organisation_id: org.id.clone(),
        phone: String::new(),
        email: String::new(),
    };
    node.local()
        .edit(&network, |tx| register::create_contact(tx, &contact))?;
    Ok(())
}

/// `sfs-node demo`: start, seed, print `ready`, run until interrupted.
pub async fn run(dir: &Path, cities: &[String]) -> anyhow::Result<()> {
    let (running, file) = start(dir, cities).await?;
    for node in running
        .iter()
        .filter(|n| n.id.role() == sfs_sync::Role::City)
    {
        let node_ref: &RunningNode = node;
        tokio::task::block_in_place(|| seed_city(node_ref))?;
    }
    let federation = dir.canonicalize()?.join("federation.json");
    println!("{:<14} hub   {}", file.hub.name, file.hub.api);
    for (name, node) in &file.cities {
        println!("{name:<14} city  {}", node.api);
    }
    println!(
        "federation ready: {} (try: sfs --federation {} --node {} lessons list --all-cities)",
        federation.display(),
        federation.display(),
        cities.first().map(String::as_str).unwrap_or(HUB_NAME)
    );
    node::wait_for_signal().await;
    for node in running {
        node.stop().await;
    }
    Ok(())
}
