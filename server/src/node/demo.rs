//! `sfs-node demo`: a whole federation on this machine, a hub, some cities and optionally county
//! hubs between some of them and the hub (`--county skane=helsingborg,malmo,lund`) and a standby
//! national hub (`--standby`), each a real node with its own data directory, certificate, token
//! and listeners on 127.0.0.1.
//!
//! Layout under the demo directory: `pki/` (the CA and node certificates), `coordinator/`
//! (the national coordinator's release key pair, outside every data directory; every node is
//! configured with its public key), `<node>/node.toml` and `<node>/data/` per node, and
//! `federation.json` describing how to reach each node.
//! Running the demo again on the same directory reuses all of it (ports are chosen anew).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sfs_client::v1 as pb;
use sfs_client::Client;
use sfs_sync::NodeId;

use crate::api::tokens::{self, ApiRole};
use crate::federation::pki::{self, CaFiles, NodeFiles};
use crate::node::config::{ApiConfig, FederationConfig, NodeConfig, TlsConfig};
use crate::node::{self, RunningNode, StartOptions};

/// The name of the demo's hub.
pub const HUB_NAME: &str = "national";

/// The name of the demo's standby national hub (`--standby`).
pub const STANDBY_NAME: &str = "standby";

/// `federation.json`: how to reach each node of a local federation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FederationFile {
    /// Path of the CA certificate that signed every node's certificate.
    pub ca: PathBuf,
    /// The national hub.
    pub hub: FederationNode,
    /// The standby national hub, when the demo runs one (`--standby`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<FederationNode>,
    /// Every city, by name.
    pub cities: BTreeMap<String, FederationNode>,
    /// Every county hub, by name, with its cities.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counties: BTreeMap<String, FederationNode>,
    /// The national coordinator's private release key, which signs handbook releases. The demo
    /// keeps it beside the federation, outside every data directory; a real coordinator keeps
    /// it on their own machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_key: Option<PathBuf>,
}

/// Where the demo keeps the coordinator's release key: `(private, public)`.
pub fn release_key_files(dir: &Path) -> (PathBuf, PathBuf) {
    let keys = dir.join("coordinator");
    (keys.join("release.key"), keys.join("release.pub"))
}

/// One node in `federation.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FederationNode {
    /// The node's name (`national`, `malmo`).
    pub name: String,
    /// The API endpoint, for example `https://127.0.0.1:40123`.
    pub api: String,
    /// The coordinators' web app, for example `http://127.0.0.1:40124`; empty if not served.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub web: String,
    /// An admin API token.
    pub token: String,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// A county hub: the cities linked to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cities: Vec<String>,
}

/// A county hub of the demo and its cities: `skane=helsingborg,malmo,lund`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoCounty {
    pub name: String,
    pub cities: Vec<String>,
}

impl std::str::FromStr for DemoCounty {
    type Err = String;

    fn from_str(text: &str) -> Result<DemoCounty, String> {
        let (name, cities) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not COUNTY=CITY,CITY (skane=malmo,lund)"))?;
        NodeId::county(name).map_err(|err| err.to_string())?;
        let cities: Vec<String> = cities
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect();
        if cities.is_empty() {
            return Err(format!("the county hub {name} has no cities"));
        }
        Ok(DemoCounty {
            name: name.to_string(),
            cities,
        })
    }
}

/// Refuses a county's city that is not one of `cities`, and a city in two counties.
fn check_counties(cities: &[String], counties: &[DemoCounty]) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for county in counties {
        for city in &county.cities {
            if !cities.contains(city) {
                bail!(
                    "--county {}: {city} is not one of --cities {}",
                    county.name,
                    cities.join(",")
                );
            }
            if !seen.insert(city) {
                bail!("--county: {city} is in more than one county");
            }
        }
    }
    Ok(())
}

/// Makes (or reuses) the CA, certificates, configurations and admin tokens for a federation.
pub fn prepare(dir: &Path, cities: &[String]) -> anyhow::Result<Vec<(NodeConfig, String)>> {
    prepare_with_counties(dir, cities, &[])
}

/// Like [`prepare`], with county hubs: the hub first, then the county hubs, then the cities.
/// A city of a county is configured with the county hub's name (`federation.county_id`); its
/// URL and every upstream URL are set by [`start_with_counties`].
pub fn prepare_with_counties(
    dir: &Path,
    cities: &[String],
    counties: &[DemoCounty],
) -> anyhow::Result<Vec<(NodeConfig, String)>> {
    prepare_federation(dir, cities, counties, false)
}

/// Like [`prepare_with_counties`], with a standby national hub (`standby`) right after the
/// hub: the hub lists it (`federation.standby_hubs`), it dials the hub, and every county hub
/// and city names it (`federation.standby_id`); the URLs are set by [`start_federation`].
pub fn prepare_federation(
    dir: &Path,
    cities: &[String],
    counties: &[DemoCounty],
    standby: bool,
) -> anyhow::Result<Vec<(NodeConfig, String)>> {
    check_counties(cities, counties)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let pki_dir = dir.join("pki");
    if !CaFiles::in_dir(&pki_dir).cert.exists() {
        pki::init_ca(&pki_dir)?;
    }
    let (release_key, release_public_key) = release_key_files(&dir);
    if !release_key.exists() {
        sfs_release::generate_key_files(&release_key, &release_public_key)?;
    }
    let mut ids = vec![NodeId::hub(HUB_NAME)?];
    if standby {
        ids.push(NodeId::hub(STANDBY_NAME)?);
    }
    for county in counties {
        ids.push(NodeId::county(&county.name)?);
    }
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
        let is_standby = id == NodeId::hub(STANDBY_NAME)?;
        let (is_hub, is_city) = (
            id.role() == sfs_sync::Role::Hub,
            id.role() == sfs_sync::Role::City,
        );
        let config = NodeConfig {
            id: id.name().to_string(),
            role: id.role().as_str().to_string(),
            data_dir,
            api: ApiConfig {
                listen: "127.0.0.1:0".parse()?,
                cors_allowed_origins: Vec::new(),
            },
            federation: FederationConfig {
                listen: (id.role() != sfs_sync::Role::City)
                    .then(|| "127.0.0.1:0".parse().expect("address")),
                hub_url: (!is_hub || (standby && is_standby))
                    .then(|| "https://127.0.0.1:0".to_string()),
                hub_id: None,
                county_id: counties
                    .iter()
                    .find(|c| {
                        id.role() == sfs_sync::Role::City && c.cities.iter().any(|n| n == id.name())
                    })
                    .map(|c| c.name.clone()),
                standby_url: (standby && !is_hub).then(|| "https://127.0.0.1:0".to_string()),
                standby_id: (standby && !is_hub).then(|| STANDBY_NAME.to_string()),
                standby_hubs: if standby && is_hub && !is_standby {
                    vec![STANDBY_NAME.to_string()]
                } else {
                    Vec::new()
                },
                failback_ms: None,
                max_backoff_ms: Some(2_000),
                keepalive_ms: None,
            },
            tls: TlsConfig {
                ca: CaFiles::in_dir(&pki_dir).cert,
                cert: files.cert,
                key: files.key,
                revoked: (!is_city).then(|| CaFiles::in_dir(&pki_dir).revoked),
                handshake_timeout_ms: None,
            },
            metrics: Default::default(),
            log: Default::default(),
            store: demo_store()?,
            privacy: Default::default(),
            method: crate::node::config::MethodConfig {
                release_public_key: Some(release_public_key.clone()),
            },
            limits: Default::default(),
            // Every demo node serves the web app, on loopback (plain HTTP): a city its own
            // pages, a county hub the county coordinator's, the hub the national coordinator's.
            web: crate::node::config::WebConfig {
                listen: Some("127.0.0.1:0".parse().expect("address")),
                ..Default::default()
            },
            county: crate::node::config::CountyConfig {
                cities: counties
                    .iter()
                    .find(|c| id.role() == sfs_sync::Role::County && c.name == id.name())
                    .map(|c| c.cities.clone())
                    .unwrap_or_default(),
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
    start_with_counties(dir, cities, &[]).await
}

/// Like [`start`], with county hubs: the hub first, then each county hub pointed at the hub,
/// then every city pointed at its county hub or at the hub.
pub async fn start_with_counties(
    dir: &Path,
    cities: &[String],
    counties: &[DemoCounty],
) -> anyhow::Result<(Vec<RunningNode>, FederationFile)> {
    start_federation(dir, cities, counties, false).await
}

/// Like [`start_with_counties`], with a standby national hub when `standby`: started right
/// after the hub and pointed at it; every county hub and city gets its URL as its second
/// upstream (`federation.standby_url`).
pub async fn start_federation(
    dir: &Path,
    cities: &[String],
    counties: &[DemoCounty],
    standby: bool,
) -> anyhow::Result<(Vec<RunningNode>, FederationFile)> {
    let prepared = prepare_federation(dir, cities, counties, standby)?;
    let dir = dir.canonicalize()?;
    let mut running = Vec::new();
    let mut cities = BTreeMap::new();
    let mut county_nodes = BTreeMap::new();
    let mut hub = None;
    let mut standby_node = None;
    let mut hub_url = String::new();
    let mut standby_url = String::new();
    let mut county_urls = BTreeMap::new();
    for (mut config, token) in prepared {
        let upstream = match &config.federation.county_id {
            Some(county) => county_urls.get(county).cloned().unwrap_or_default(),
            None => hub_url.clone(),
        };
        if let Some(url) = config.federation.hub_url.as_mut() {
            *url = upstream;
        }
        if let Some(url) = config.federation.standby_url.as_mut() {
            url.clone_from(&standby_url);
        }
        let node_dir = dir.join(&config.id);
        sfs_durable::write(
            &node_dir.join("node.toml"),
            toml::to_string_pretty(&config)?.as_bytes(),
            sfs_durable::Access::Public,
        )?;
        let node = node::start(config.clone(), StartOptions::default())
            .await
            .with_context(|| format!("starting {}", config.id))?;
        let entry = FederationNode {
            name: config.id.clone(),
            api: format!("https://{}", node.api_addr),
            web: node.web.as_ref().map(|w| w.url()).unwrap_or_default(),
            token,
            data_dir: config.data_dir.clone(),
            cities: config.county.cities.clone(),
        };
        let url = node.federation_addr.map(|addr| format!("https://{addr}"));
        match node.id.role() {
            sfs_sync::Role::Hub if config.id == STANDBY_NAME && standby => {
                standby_url = url.unwrap_or_default();
                standby_node = Some(entry);
            }
            sfs_sync::Role::Hub => {
                hub_url = url.unwrap_or_default();
                hub = Some(entry);
            }
            sfs_sync::Role::County => {
                county_urls.insert(config.id.clone(), url.unwrap_or_default());
                county_nodes.insert(config.id.clone(), entry);
            }
            sfs_sync::Role::City => {
                cities.insert(config.id.clone(), entry);
            }
        }
        running.push(node);
    }
    let Some(hub) = hub else {
        bail!("the hub did not start");
    };
    let file = FederationFile {
        ca: CaFiles::in_dir(&dir.join("pki")).cert,
        hub,
        standby: standby_node,
        cities,
        counties: county_nodes,
        release_key: Some(release_key_files(&dir).0),
    };
    // It holds every node's API token.
    sfs_durable::write(
        &dir.join("federation.json"),
        serde_json::to_string_pretty(&file)?.as_bytes(),
        sfs_durable::Access::Private,
    )?;
    Ok((running, file))
}

/// The demo's store settings: the defaults, with `SFS_STORE_MIN_FREE_BYTES` honoured as by
/// `sfs-node run` (0 runs the demo on a file system that reports no free space, such as LazyFS).
fn demo_store() -> anyhow::Result<crate::node::config::StoreConfig> {
    let mut store = crate::node::config::StoreConfig::default();
    if let Ok(value) = std::env::var("SFS_STORE_MIN_FREE_BYTES") {
        store.min_free_bytes = value.trim().parse().with_context(|| {
            format!("SFS_STORE_MIN_FREE_BYTES={value:?} is not a number of bytes")
        })?;
    }
    Ok(store)
}

/// Display name and county of well-known cities; others get their id and "okänt län".
fn city_facts(id: &str) -> (String, String) {
    let known = [
        ("helsingborg", "Helsingborg", "Skåne län"),
        ("malmo", "Malmö", "Skåne län"),
        ("lund", "Lund", "Skåne län"),
        ("stockholm", "Stockholm", "Stockholms län"),
        ("umea", "Umeå", "Västerbottens län"),
        ("ystad", "Ystad", "Skåne län"),
        ("goteborg", "Göteborg", "Västra Götalands län"),
        ("uppsala", "Uppsala", "Uppsala län"),
    ];
    known
        .iter()
        .find(|(k, _, _)| *k == id)
        .map(|(_, name, county)| (name.to_string(), county.to_string()))
        .unwrap_or_else(|| (id.to_string(), "okänt län".to_string()))
}

async fn connect(ca_pem: &str, node: &FederationNode) -> anyhow::Result<Client> {
    Ok(Client::connect(&node.api, &node.token, ca_pem).await?)
}

/// A sample chapter: title, introduction, and steps (title, description, checklist).
type SampleChapter = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str, &'static [&'static str])],
);

/// Writes the sample handbook, a release (signed when `release_key` is given) and the directory
/// at the hub, if it has none yet.
async fn seed_hub(
    hub: &mut Client,
    cities: &[String],
    release_key: Option<&Path>,
) -> anyhow::Result<()> {
    if !hub.handbook_latest().await?.chapters.is_empty() {
        return Ok(());
    }
    let handbook: [SampleChapter; 3] = [
        (
            "Bygg det lokala nätverket",
            "Metoden börjar med dem som redan möter problemet: socialtjänsten, polisen, vården och de organisationer som stöttar utsatta.",
            &[
                ("Kartlägg aktörerna i staden", "Ta reda på vilka som möter personer i riskzonen och vilka som kan agera på en signal.", &["Lista de myndigheter och organisationer som möter frågan", "Utse en samordnare på socialtjänsten"]),
                ("Bilda en kärngrupp", "En liten grupp som träffas regelbundet och äger den lokala rutinen.", &["Kom överens om hur ofta kärngruppen träffas", "Kom överens om hur signaler delas utan att personuppgifter sprids"]),
            ],
        ),
        (
            "Samverka med näringslivet",
            "Hotell, fastighetsägare och transportföretag ser ofta de första tecknen.",
            &[
                ("Utbilda hotellpersonal", "Kort utbildning för varje skift, med ett tydligt nummer att ringa.", &["Erbjud utbildningen till varje skift, även nattpersonalen", "Lämna kontaktkort i receptionen"]),
                ("Nå fastighetsägarna", "Fastighetsägare kan upptäcka exploatering i lägenheter och lokaler.", &["Kom överens om vilka tecken som är värda att rapportera"]),
            ],
        ),
        (
            "Stöd och uppföljning",
            "Varje signal behöver en väg till stöd, och nätverket behöver lära av varje ärende.",
            &[
                ("Kom överens om en hänvisningsrutin", "Vem gör vad, och i vilken ordning, när någon får kännedom om ett ärende.", &["Skriv ner rutinen och dela den med alla medlemmar"]),
                ("Följ upp varje kvartal", "Gå igenom kvartalets signaler och aktiviteter tillsammans.", &["Publicera kvartalets anonymiserade siffror"]),
            ],
        ),
    ];
    for (position, (title, introduction, steps)) in handbook.iter().enumerate() {
        let chapter = hub
            .method
            .create_chapter(pb::CreateChapterRequest {
                chapter: Some(pb::Chapter {
                    title: title.to_string(),
                    introduction: introduction.to_string(),
                    position: position as i32,
                    ..Default::default()
                }),
            })
            .await?
            .into_inner();
        for (step_position, (title, description, items)) in steps.iter().enumerate() {
            let step = hub
                .method
                .create_step(pb::CreateStepRequest {
                    step: Some(pb::Step {
                        chapter: chapter.name.clone(),
                        title: title.to_string(),
                        description: description.to_string(),
                        position: step_position as i32,
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner();
            for (item_position, text) in items.iter().enumerate() {
                hub.method
                    .create_checklist_item(pb::CreateChecklistItemRequest {
                        item: Some(pb::ChecklistItem {
                            step: step.name.clone(),
                            text: text.to_string(),
                            position: item_position as i32,
                            ..Default::default()
                        }),
                    })
                    .await?;
            }
        }
    }
    let (label, notes) = ("2026.1", "Handbokens första nationella utgåva.");
    match release_key {
        Some(path) => {
            let key = sfs_release::SigningKey::read(path)?;
            let draft = sfs_client::ReleaseDraft {
                label: label.into(),
                notes: notes.into(),
                valid_for_ms: 365 * 86_400_000,
                number: None,
                version: None,
            };
            hub.create_signed_release(&key, draft).await?;
        }
        None => {
            hub.method
                .create_release(pb::CreateReleaseRequest {
                    release: Some(pb::Release {
                        version_label: label.into(),
                        notes: notes.into(),
                        ..Default::default()
                    }),
                })
                .await?;
        }
    }
    // A change after the release, so that "what changed since 2026.1" has an answer.
    let step = hub
        .handbook_latest()
        .await?
        .chapters
        .last()
        .and_then(|c| c.steps.first().cloned())
        .ok_or_else(|| anyhow::anyhow!("the sample handbook has no steps"))?;
    hub.method
        .create_checklist_item(pb::CreateChecklistItemRequest {
            item: Some(pb::ChecklistItem {
                step: step.name,
                text: "Se över rutinen efter varje ärende".into(),
                position: 9,
                ..Default::default()
            }),
        })
        .await?;
    for city in cities {
        let (display_name, county) = city_facts(city);
        hub.directory
            .create_city(pb::CreateCityRequest {
                city: Some(pb::City {
                    name: format!("cities/{city}"),
                    display_name,
                    county,
                    ..Default::default()
                }),
            })
            .await?;
    }
    Ok(())
}

/// Writes a sample register, lessons and progress into a city that has no lessons yet.
async fn seed_city(city: &mut Client, name: &str) -> anyhow::Result<()> {
    if !city
        .list_lessons(&format!("cities/{name}"))
        .await?
        .is_empty()
    {
        return Ok(());
    }
    let (display, _) = city_facts(name);
    let mut orgs = Vec::new();
    for (org, sector) in [
        (format!("Socialtjänsten, {display}"), "municipality"),
        (format!("Polisen, {display}"), "police"),
        ("Regionens hälso- och sjukvård".to_string(), "region"),
        ("Länsstyrelsen".to_string(), "county_board"),
        ("Stödorganisation för utsatta".to_string(), "civil_society"),
        ("Lokal hotellförening".to_string(), "business"),
    ] {
        orgs.push(city.create_organisation(&org, sector).await?.name);
    }
    city.register
        .create_group(pb::CreateGroupRequest {
            group: Some(pb::Group {
                display_name: "Kärngrupp".into(),
                description: "Träffas varje månad och äger rutinen.".into(),
                organisations: orgs[..3].to_vec(),
                ..Default::default()
            }),
        })
        .await?;
    city.register
        .create_group(pb::CreateGroupRequest {
            group: Some(pb::Group {
                display_name: "Hotellgrupp".into(),
                description: "Hotell som har utbildat sin personal.".into(),
                organisations: vec![orgs[0].clone(), orgs[5].clone()],
                ..Default::default()
            }),
        })
        .await?;
    let contact = city
        .create_contact(pb::Contact {
            full_name: "Nätverkssamordnare i tjänst".into(),
            role: "coordinator".into(),
            organisation: orgs[0].clone(),
            ..Default::default()
        })
        .await?;
    city.register
        .create_meeting(pb::CreateMeetingRequest {
            meeting: Some(pb::Meeting {
                date: crate::domain::model::today(),
                organisations: orgs[..3].to_vec(),
                agenda: "Genomgång av rutinen; plan för hotellutbildning".into(),
                notes: "Rutinen fungerade i båda ärendena det här kvartalet.".into(),
                decisions: vec!["Erbjud hotellutbildningen igen i vår".into()],
                follow_ups: vec![pb::FollowUp {
                    action: "Boka utbildningen".into(),
                    owner: contact.name.clone(),
                    due_date: String::new(),
                    done: false,
                }],
                ..Default::default()
            }),
        })
        .await?;
    city.register
        .update_routine(pb::UpdateRoutineRequest {
            routine: Some(pb::Routine {
                name: "routine".into(),
                steps: vec![
                    pb::RoutineStep {
                        description: "Den som får kännedom om ett ärende ringer socialjouren"
                            .into(),
                        organisation: orgs[0].clone(),
                        how_to_reach: "Jourens nummer, dygnet runt".into(),
                    },
                    pb::RoutineStep {
                        description: "Socialjouren kopplar in polisen vid misstanke om brott"
                            .into(),
                        organisation: orgs[1].clone(),
                        how_to_reach: "Polisens kontaktperson för nätverket".into(),
                    },
                    pb::RoutineStep {
                        description: "Vården och stödorganisationen erbjuder stöd".into(),
                        organisation: orgs[4].clone(),
                        how_to_reach: "Via kärngruppen".into(),
                    },
                ],
            }),
        })
        .await?;
    // Lessons and progress refer to the handbook, which arrives from the hub.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let handbook = loop {
        let handbook = city.handbook().await?;
        if handbook
            .chapters
            .iter()
            .map(|c| c.steps.len())
            .sum::<usize>()
            >= 6
        {
            break handbook;
        }
        if std::time::Instant::now() > deadline {
            bail!("{name} did not receive the handbook from the hub");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let steps: Vec<&pb::Step> = handbook
        .chapters
        .iter()
        .flat_map(|c| c.steps.iter())
        .collect();
    let samples: [(&str, &str, &[&str], usize); 2] = [
        (
            "Hotellpersonal ser mer när hela skiftet är utbildat",
            "Vi utbildade reception, städ och nattpersonal tillsammans vid ett och samma tillfälle. Signalerna från hotellen fördubblades kvartalet efter, och de flesta kom från städpersonal som aldrig hade bjudits in tidigare.",
            &["hotell", "utbildning"],
            2,
        ),
        (
            "Ett telefonnummer för hela nätverket",
            "Partnerna tvekade när de själva måste välja rätt myndighet. Ett enda nummer till socialjouren, som sedan kopplar in polisen, gjorde den första kontakten snabbare.",
            &["hänvisning", "rutin"],
            4,
        ),
    ];
    for (title, body, tags, step) in samples {
        city.create_lesson_from(pb::Lesson {
            title: title.into(),
            body: body.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            method_step: steps[step].name.clone(),
            ..Default::default()
        })
        .await?;
    }
    // A quarter of statistics, recorded and published under the national disclosure rules.
    let quarter = "2026-Q3";
    let people: [(&str, &str, &str, &str, &str); 9] = [
        ("female", "25-34", "non_eu", "sexual", "police"),
        ("female", "18-24", "non_eu", "sexual", "police"),
        ("female", "25-34", "other_eu", "sexual", "civil_society"),
        ("female", "35-44", "non_eu", "sexual", "police"),
        ("female", "18-24", "non_eu", "sexual", "business"),
        ("female", "12-17", "swedish", "sexual", "social_services"),
        (
            "male",
            "35-44",
            "other_eu",
            "forced_labour",
            "social_services",
        ),
        ("male", "25-34", "other_eu", "forced_labour", "police"),
        ("female", "45-54", "other_eu", "begging", "civil_society"),
    ];
    for (i, (sex, age_band, citizenship, exploitation, referral_source)) in
        people.iter().enumerate()
    {
        city.stats
            .create_support_record(pb::CreateSupportRecordRequest {
                record: Some(pb::SupportRecord {
                    quarter: quarter.into(),
                    sex: sex.to_string(),
                    age_band: age_band.to_string(),
                    citizenship: citizenship.to_string(),
                    exploitation: exploitation.to_string(),
                    referral_source: referral_source.to_string(),
                    person_ref: format!("{name}-case-{i}"),
                    ..Default::default()
                }),
            })
            .await?;
    }
    for (kind, count) in [
        ("trainings_held", 2),
        ("people_trained", 35),
        ("outreach_sessions", 6),
        ("network_meetings", 3),
        ("businesses_enrolled", 4),
    ] {
        city.stats
            .create_activity_record(pb::CreateActivityRecordRequest {
                record: Some(pb::ActivityRecord {
                    quarter: quarter.into(),
                    kind: kind.into(),
                    count,
                    ..Default::default()
                }),
            })
            .await?;
    }
    city.stats
        .preview_release(pb::PreviewReleaseRequest {
            quarter: quarter.into(),
        })
        .await?;
    city.stats
        .publish_release(pb::PublishReleaseRequest {
            quarter: quarter.into(),
        })
        .await?;
    for (step, state) in [(0, "done"), (1, "started")] {
        city.progress
            .set_step_progress(pb::SetStepProgressRequest {
                progress: Some(pb::StepProgress {
                    step: steps[step].name.clone(),
                    state: state.into(),
                    date: crate::domain::model::today(),
                    note: String::new(),
                    ..Default::default()
                }),
            })
            .await?;
    }
    Ok(())
}

/// Fills a new demo federation with sample content; a federation that has it is left alone.
pub async fn seed(file: &FederationFile) -> anyhow::Result<()> {
    let ca_pem = std::fs::read_to_string(&file.ca)?;
    let cities: Vec<String> = file.cities.keys().cloned().collect();
    seed_hub(
        &mut connect(&ca_pem, &file.hub).await?,
        &cities,
        file.release_key.as_deref(),
    )
    .await
    .context("seeding the hub")?;
    for (name, node) in &file.cities {
        seed_city(&mut connect(&ca_pem, node).await?, name)
            .await
            .with_context(|| format!("seeding {name}"))?;
    }
    Ok(())
}

/// `sfs-node demo`: start, seed, print `ready`, run until interrupted.
pub async fn run(
    dir: &Path,
    cities: &[String],
    counties: &[DemoCounty],
    standby: bool,
) -> anyhow::Result<()> {
    let signal = node::shutdown_signal();
    let (running, file) = start_federation(dir, cities, counties, standby).await?;
    seed(&file).await?;
    let federation = dir.canonicalize()?.join("federation.json");
    // A one-time sign-in link per node, for its admin token (single use, valid 15 minutes).
    let sign_in = |name: &str, token: &str| {
        running
            .iter()
            .find(|n| n.id.name() == name)
            .and_then(|n| n.web.as_ref())
            .map(|web| web.sign_in_link(token))
            .unwrap_or_default()
    };
    println!(
        "{:<14} hub     {}   web {}",
        file.hub.name, file.hub.api, file.hub.web
    );
    println!(
        "{:<14}         sign in: {}",
        "",
        sign_in(&file.hub.name, &file.hub.token)
    );
    if let Some(node) = &file.standby {
        println!("{:<14} standby {}   web {}", node.name, node.api, node.web);
        println!(
            "{:<14}         sign in: {}",
            "",
            sign_in(&node.name, &node.token)
        );
    }
    for (name, node) in &file.counties {
        println!(
            "{name:<14} county  {}   web {}   cities {}",
            node.api,
            node.web,
            node.cities.join(",")
        );
        println!("{:<14}         sign in: {}", "", sign_in(name, &node.token));
    }
    for (name, node) in &file.cities {
        println!("{name:<14} city    {}   web {}", node.api, node.web);
        println!("{:<14}         sign in: {}", "", sign_in(name, &node.token));
    }
    println!(
        "federation ready: {} (try: sfs --federation {} --node {} lessons list --all-cities)",
        federation.display(),
        federation.display(),
        cities.first().map(String::as_str).unwrap_or(HUB_NAME)
    );
    signal.await;
    // Cities first, then county hubs: a hub stopped before them would leave them redialling
    // it in vain.
    for node in running.into_iter().rev() {
        node.stop().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_honours_the_free_space_reserve_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        // Only this test reads the variable in this process (the configuration's own tests
        // pass their environment in).
        std::env::set_var("SFS_STORE_MIN_FREE_BYTES", "0");
        let prepared = prepare(dir.path(), &["lund".to_string()]);
        std::env::set_var("SFS_STORE_MIN_FREE_BYTES", "many");
        let refused = prepare(dir.path(), &["lund".to_string()]).unwrap_err();
        std::env::remove_var("SFS_STORE_MIN_FREE_BYTES");
        let prepared = prepared.unwrap();
        assert_eq!(prepared.len(), 2);
        assert!(prepared.iter().all(|(c, _)| c.store.min_free_bytes == 0));
        assert!(
            refused.to_string().contains("SFS_STORE_MIN_FREE_BYTES"),
            "{refused}"
        );
        let defaults = prepare(dir.path(), &["lund".to_string()]).unwrap();
        assert!(defaults.iter().all(|(c, _)| c.store.min_free_bytes > 0));
    }

    #[test]
    fn a_demo_county_hub_serves_its_cities_between_them_and_the_hub() {
        let county: DemoCounty = "skane=malmo,lund".parse().unwrap();
        assert_eq!(county.cities, ["malmo", "lund"]);
        assert!("skane".parse::<DemoCounty>().is_err());
        assert!("Skåne=malmo".parse::<DemoCounty>().is_err());
        assert!("skane=".parse::<DemoCounty>().is_err());
        let cities: Vec<String> = ["malmo", "lund", "umea"].map(String::from).to_vec();
        let dir = tempfile::tempdir().unwrap();
        let prepared =
            prepare_with_counties(dir.path(), &cities, std::slice::from_ref(&county)).unwrap();
        let roles: Vec<(String, String, Option<String>)> = prepared
            .iter()
            .map(|(c, _)| (c.role.clone(), c.id.clone(), c.federation.county_id.clone()))
            .collect();
        let skane = Some("skane".to_string());
        assert_eq!(
            roles,
            [
                ("hub".into(), "national".into(), None),
                ("county".into(), "skane".into(), None),
                ("city".into(), "malmo".into(), skane.clone()),
                ("city".into(), "lund".into(), skane),
                ("city".into(), "umea".into(), None),
            ]
        );
        let (skane_config, _) = &prepared[1];
        assert_eq!(skane_config.county.cities, ["malmo", "lund"]);
        assert!(skane_config.check().is_ok());
        let outside: DemoCounty = "skane=ystad".parse().unwrap();
        assert!(prepare_with_counties(dir.path(), &cities, &[outside]).is_err());
        let twice = ["skane=malmo", "blekinge=malmo"].map(|c| c.parse().unwrap());
        assert!(prepare_with_counties(dir.path(), &cities, &twice).is_err());
    }
}
