//! Starting and stopping a node: open the store, load documents, bind listeners, start tasks.
//!
//! [`start`] takes a [`NodeConfig`] and returns a [`RunningNode`] with the addresses it bound
//! (port 0 in the configuration means an OS-assigned port, which tests and the demo use).
//! [`RunningNode::stop`] ends every link, stops the listeners and waits for every task, so the
//! data directory can be opened again at once.

pub mod config;
pub mod demo;
pub mod memory;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sfs_proto::v1 as pb;
use sfs_sync::{EngineConfig, NodeId, Role};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::api::tokens::TokenRegistry;
use crate::api::{self, ApiState};
use crate::federation::hub::{AcceptedPeers, FederationService};
use crate::federation::pki;
use crate::federation::sync::{actor_for, FrameTap, HubLinkConfig, SyncHandle, MAX_FRAME_BYTES};
use crate::node::config::NodeConfig;
use crate::storage::local::LocalReplicas;
use crate::storage::store::Store;

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Store(#[from] crate::storage::store::StoreError),
    #[error("{0}")]
    Tokens(#[from] crate::api::tokens::TokenError),
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("certificate {path}: {message}")]
    Certificate {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("{}", bind_message(listener, setting, addr, error))]
    Bind {
        /// Which listener, in words: "the API listener".
        listener: &'static str,
        /// Its configuration setting and environment variable.
        setting: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] tonic::transport::Error),
    #[error("web app: {0}")]
    Web(#[from] sfs_web::WebError),
}

/// Why a listener could not bind, naming it and the setting that moves it.
fn bind_message(
    listener: &str,
    setting: &str,
    addr: &SocketAddr,
    error: &std::io::Error,
) -> String {
    let what = match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            "the address is in use by another program (another node?)".to_string()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "the address is not one of this machine's".to_string()
        }
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".to_string()
        }
        _ => error.to_string(),
    };
    format!("{listener} cannot listen on {addr}: {what}; stop what holds it or choose another address with {setting}")
}

/// Extra hooks for tests and tools.
#[derive(Default, Clone)]
pub struct StartOptions {
    /// Sees every frame the node receives on a federation link.
    pub frame_tap: Option<FrameTap>,
}

/// A started node.
pub struct RunningNode {
    /// The node's identity.
    pub id: NodeId,
    /// The bound API address.
    pub api_addr: SocketAddr,
    /// The bound federation address (national hub and county hubs only).
    pub federation_addr: Option<SocketAddr>,
    /// The bound metrics address, if metrics are served.
    pub metrics_addr: Option<SocketAddr>,
    /// The coordinators' web app, if configured (`[web] listen`).
    pub web: Option<sfs_web::WebHandle>,
    shutdown: watch::Sender<bool>,
    sync: Arc<SyncHandle>,
    local: Arc<LocalReplicas>,
    /// The store's writes, made durable once more when the node stops.
    durability: Arc<crate::storage::store::Durability>,
    tasks: Vec<JoinHandle<()>>,
    /// Tasks started per request or per link (hub link readers, backups): joined on stop too.
    request_tasks: TaskTracker,
}

impl RunningNode {
    /// The node's shared documents and links (for in-process tools such as the demo).
    pub fn sync(&self) -> &Arc<SyncHandle> {
        &self.sync
    }

    /// The node's local documents (for in-process tools such as the demo).
    pub fn local(&self) -> &Arc<LocalReplicas> {
        &self.local
    }

    /// Stops the node and waits until its data directory is released.
    pub async fn stop(self) {
        let sync = self.sync.clone();
        let _ = tokio::task::spawn_blocking(move || sync.close_all_links()).await;
        let _ = self.shutdown.send(true);
        for (i, task) in self.tasks.into_iter().enumerate() {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::error!(node = %self.id, task = i, "a task did not stop within 10 s");
            }
        }
        // With the listeners gone no new link or request starts: wait for the ones running.
        self.request_tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.request_tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(node = %self.id, running = self.request_tasks.len(), "link or request tasks did not stop within 10 s");
        }
        // Snapshots that fell due and were not stored yet (their worker stopped with the other
        // tasks) are stored now, so a stopped node's store keeps each document within the
        // compaction bounds (chunks at most half the snapshot), not up to twice them.
        let sync = self.sync.clone();
        match tokio::task::spawn_blocking(move || sync.compact_pending()).await {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => {
                tracing::error!(node = %self.id, error = %failure, "storing the snapshots that fell due failed at the stop")
            }
            Err(_) => {
                tracing::error!(node = %self.id, "storing the snapshots that fell due was interrupted at the stop")
            }
        }
        // Nothing writes any more: what was put without a sync (the sync states of the last
        // frames) is made durable, so that the links resume from them at the next start.
        let durability = self.durability.clone();
        match tokio::task::spawn_blocking(move || durability.sync_everything()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(node = %self.id, error = %err, "the store could not be synced at the stop")
            }
            Err(_) => tracing::error!(node = %self.id, "syncing the store at the stop failed"),
        }
    }

    /// Waits until the node is stopped by a signal (Ctrl-C or SIGTERM), then stops it.
    pub async fn run_until_signal(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!(node = %self.id, "stopping");
        self.stop().await;
    }
}

/// Installs the Ctrl-C and SIGTERM handlers now, so that a signal arriving before the returned
/// future is first polled is not lost, and returns a future that resolves on either.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        let mut interrupt = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn read(path: &std::path::Path) -> Result<String, NodeError> {
    std::fs::read_to_string(path).map_err(|source| NodeError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The sockets a node serves on, bound before it starts: [`Listeners::bind`] binds what the
/// configuration names; tests bind `127.0.0.1:0` themselves and read the ports back.
pub struct Listeners {
    /// The API (always).
    pub api: TcpListener,
    /// The federation (the national hub and county hubs only).
    pub federation: Option<TcpListener>,
    /// The coordinators' web app, if served.
    pub web: Option<TcpListener>,
    /// Prometheus metrics, if served.
    pub metrics: Option<TcpListener>,
}

async fn bind_one(
    addr: SocketAddr,
    listener: &'static str,
    setting: &'static str,
) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| NodeError::Bind {
            listener,
            setting,
            addr,
            error,
        })
}

impl Listeners {
    /// Binds every listener `config` names for a node of `role` (`api.listen`,
    /// `federation.listen` at the national hub and a county hub, `web.listen`,
    /// `metrics.listen`), saying which setting to
    /// change when one is taken.
    pub async fn bind(config: &NodeConfig, role: Role) -> Result<Listeners, NodeError> {
        let api = bind_one(
            config.api.listen,
            "the API listener",
            "api.listen (SFS_API_LISTEN)",
        )
        .await?;
        let federation = match (config.federation.listen, role) {
            (Some(listen), Role::Hub | Role::County) => Some(
                bind_one(
                    listen,
                    "the federation listener",
                    "federation.listen (SFS_FEDERATION_LISTEN)",
                )
                .await?,
            ),
            _ => None,
        };
        let web = match config.web.listen {
            Some(listen) => Some(
                bind_one(
                    listen,
                    "the web app's listener",
                    "web.listen (SFS_WEB_LISTEN)",
                )
                .await?,
            ),
            None => None,
        };
        let metrics = match config.metrics.listen {
            Some(listen) => Some(
                bind_one(
                    listen,
                    "the metrics listener",
                    "metrics.listen (SFS_METRICS_LISTEN)",
                )
                .await?,
            ),
            None => None,
        };
        Ok(Listeners {
            api,
            federation,
            web,
            metrics,
        })
    }
}

fn local_addr(
    listener: &TcpListener,
    name: &'static str,
    setting: &'static str,
) -> Result<SocketAddr, NodeError> {
    listener.local_addr().map_err(|error| NodeError::Bind {
        listener: name,
        setting,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        error,
    })
}

/// Starts a node as configured, binding the listeners it names.
pub async fn start(config: NodeConfig, options: StartOptions) -> Result<RunningNode, NodeError> {
    let id = preflight(&config)?.id;
    tracing::info!(node = %id, data_dir = %config.data_dir.display(), "starting");
    let listeners = Listeners::bind(&config, id.role()).await?;
    start_on(config, listeners, options).await
}

/// Starts a node on listeners bound already (see [`Listeners`]). Every task it spawns is
/// joined by [`RunningNode::stop`].
pub async fn start_on(
    config: NodeConfig,
    listeners: Listeners,
    options: StartOptions,
) -> Result<RunningNode, NodeError> {
    let Listeners {
        api: api_listener,
        federation: federation_listener,
        web: web_listener,
        metrics: metrics_listener,
    } = listeners;
    let Preflight {
        id,
        ca_pem,
        cert_pem,
        key_pem,
    } = preflight(&config)?;

    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::Read {
        path: config.data_dir.clone(),
        source,
    })?;
    let key_file = config.key_file();
    let (at_rest, created) =
        crate::storage::seal::MasterKey::for_data_dir(&key_file, &config.data_dir)
            .map_err(crate::storage::store::StoreError::from)?;
    if created {
        tracing::info!(
            key_file = %key_file.display(),
            "created the at-rest key of this node's local data; keep it apart from backups of the data directory"
        );
    }
    let data_dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || {
        Store::open(&data_dir, Duration::from_secs(10), at_rest)
    })
    .await
    .map_err(|_| NodeError::Config("opening the store failed".into()))??;
    let at_rest = store.keyring.master().clone();
    let mut engine_config = EngineConfig {
        defer_local_pushes: true,
        ..EngineConfig::default()
    };
    engine_config.max_docs_per_peer =
        usize::try_from(config.limits.docs_per_peer).unwrap_or(usize::MAX);
    if id.role() != Role::Hub || config.federation.hub_url.is_some() {
        // A city under a county hub checks who wrote a national document two hops away.
        engine_config.national_hub = Some(config.hub_id().map_err(NodeError::Config)?);
    }
    // National edits made at a standby national hub reach this node relayed by the other hub.
    engine_config.standby_hubs = config.standby_hubs().map_err(NodeError::Config)?;
    if let Some(ms) = config.federation.keepalive_ms {
        engine_config.keepalive_interval_ms = ms;
        engine_config.peer_timeout_ms = ms * 4;
    }
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let cert_expiry = crate::federation::pki::not_after_of_pem(cert_pem.as_bytes())
        .map_err(|err| NodeError::Config(format!("tls.cert: {err}")))?;
    metrics.certificate_expiry.set(cert_expiry);
    store.durability.observe(metrics.clone());
    store.durability.set_reserve(config.store.min_free_bytes);
    let durability = store.durability.clone();
    let sync = Arc::new(
        SyncHandle::open(
            id.clone(),
            store.shared,
            store.sync_states,
            engine_config,
            options.frame_tap,
            metrics.clone(),
        )?
        .with_limits(config.limits.peer_limits()),
    );
    let local = Arc::new(LocalReplicas::open(store.local, actor_for(&id))?);
    // Only the nodes others connect to enforce revocation: the national hub and county hubs.
    let revocations = Arc::new(
        crate::federation::hub::Revocations::load(
            config
                .tls
                .revoked
                .clone()
                .filter(|_| matches!(id.role(), Role::Hub | Role::County)),
        )
        .map_err(|err| NodeError::Config(format!("tls.revoked: {err}")))?,
    );
    let tokens = Arc::new(TokenRegistry::open(&config.data_dir)?);
    let release_key = match &config.method.release_public_key {
        Some(path) => Some(
            sfs_release::PublicKey::read(path)
                .map_err(|err| NodeError::Config(format!("method.release_public_key: {err}")))?,
        ),
        None => {
            tracing::warn!(
                "no method.release_public_key configured: handbook releases are not verified"
            );
            None
        }
    };
    let releases = Arc::new(
        crate::federation::releases::ReleaseTracker::open(release_key, &config.data_dir)
            .map_err(|err| NodeError::Config(format!("running handbook release: {err}")))?,
    );
    // Every edit of a shareable document passes the privacy guard; a city's guard knows its
    // contact names and deny list and is rebuilt whenever the register changes.
    let guards = Arc::new(crate::domain::privacy::GuardCache::default());
    crate::api::refresh_privacy_guard(&local, &guards);
    {
        let guards = guards.clone();
        sync.set_privacy_guard(Arc::new(move || guards.current()));
    }
    let request_tasks = TaskTracker::new();
    let certificates = Arc::new(crate::federation::hub::CertificateWatch::new(
        cert_expiry,
        revocations.clone(),
    ));
    // A county hub's cities: configured, and onboarded through the API since.
    let county_members = match id.role() {
        Role::County => Some(Arc::new(
            crate::federation::county::CountyMembers::open(&config.data_dir, &config.county.cities)
                .map_err(|err| NodeError::Config(err.to_string()))?,
        )),
        _ => None,
    };
    let state = ApiState {
        certificates: certificates.clone(),
        guards,
        sync: sync.clone(),
        local: local.clone(),
        tokens: tokens.clone(),
        access_log: Arc::new(store.access_log),
        data_dir: config.data_dir.clone(),
        at_rest,
        releases: releases.clone(),
        request_tasks: request_tasks.clone(),
        lesson_listings: Default::default(),
        county_cities: county_members.clone(),
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let identity = Identity::from_pem(&cert_pem, &key_pem);
    let mut tasks = Vec::new();

    // The API listener: server TLS, bearer tokens.
    let api_addr = local_addr(
        &api_listener,
        "the API listener",
        "api.listen (SFS_API_LISTEN)",
    )?;
    let api_limits = Arc::new(api::ApiLimits::new(
        config.limits.api_requests_per_second,
        config.limits.api_request_burst,
        config.limits.api_bytes_per_day,
        metrics.clone(),
    ));
    let auth = api::authenticate(tokens.clone(), api_limits.clone());
    // Generic tools (grpcurl, Postman, Evans, grpcio-reflection) list and call the API through
    // reflection, v1 and the older v1alpha, which lists exactly what this port serves; probes
    // use the standard health service. Neither needs a token.
    let reflection_v1 = crate::api::listener::reflection()
        .build_v1()
        .map_err(|err| NodeError::Config(format!("reflection: {err}")))?;
    let reflection_v1alpha = crate::api::listener::reflection()
        .build_v1alpha()
        .map_err(|err| NodeError::Config(format!("reflection: {err}")))?;
    let cors =
        crate::api::listener::cors(&config.api.cors_allowed_origins).map_err(NodeError::Config)?;
    let api_tls = crate::api::listener::tls_acceptor(&cert_pem, &key_pem)
        .map_err(|err| NodeError::Config(format!("API TLS: {err}")))?;
    let (health, health_service) = tonic_health::server::health_reporter();
    for service in crate::api::API_SERVICES {
        health
            .set_service_status(*service, tonic_health::ServingStatus::Serving)
            .await;
    }
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let api_router = Server::builder()
        // gRPC-Web over HTTP/1.1 (TLS offers h2 and http/1.1, see api_listener) for browsers
        // and tools, next to plain gRPC over HTTP/2.
        .accept_http1(true)
        .max_concurrent_streams(Some(config.limits.api_max_streams as u32))
        // Until the response starts; a streaming response (Backup) then runs to its end.
        .timeout(config.limits.api_request_timeout())
        // Outermost: answers CORS preflights for the allowed origins before anything else.
        .layer(cors)
        .layer(api::ApiBytesLayer(api_limits))
        .layer(crate::metrics::ApiMetricsLayer(metrics.clone()))
        .layer(tonic_web::GrpcWebLayer::new())
        // Innermost: no error leaves with personal data in it, whichever service made it.
        .layer(api::error_text::ErrorTextLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::lessons_server::LessonsServer::with_interceptor(
            api::lessons::LessonsService(state.clone()),
            auth.clone(),
        ))
        .add_service(pb::register_server::RegisterServer::with_interceptor(
            api::register::RegisterService(state.clone()),
            auth.clone(),
        ))
        .add_service(pb::node_server::NodeServer::with_interceptor(
            api::node::NodeService(state.clone()),
            auth.clone(),
        ))
        .add_service(pb::signals_server::SignalsServer::with_interceptor(
            api::signals::SignalsService(state.clone()),
            auth.clone(),
        ))
        .add_service(pb::method_server::MethodServer::with_interceptor(
            api::method::MethodService(state.clone()),
            auth.clone(),
        ))
        .add_service(pb::progress_server::ProgressServer::with_interceptor(
            api::progress::ProgressService(state.clone()),
            auth.clone(),
        ))
        .add_service(pb::directory_server::DirectoryServer::with_interceptor(
            api::directory::DirectoryService(state.clone()),
            auth.clone(),
        ))
        .add_service(pb::statistics_server::StatisticsServer::with_interceptor(
            api::stats::StatsService(state.clone()),
            auth,
        ));
    if let (Role::City, Some(retention)) = (id.role(), config.privacy.closed_signal_retention()) {
        tasks.push(tokio::spawn(crate::node::workers::erase_expired_signals(
            state.clone(),
            retention,
            shutdown_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(crate::federation::sync::compact_when_due(
        sync.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(crate::federation::releases::track(
        sync.clone(),
        releases,
        shutdown_rx.clone(),
    )));
    if matches!(id.role(), Role::Hub | Role::County) {
        tasks.push(tokio::spawn(
            crate::node::workers::aggregate_national_stats(state.clone(), shutdown_rx.clone()),
        ));
    }
    if id.role() == Role::County {
        tasks.push(tokio::spawn(crate::node::workers::publish_county_links(
            state.clone(),
            shutdown_rx.clone(),
        )));
    }
    let mut api_shutdown = shutdown_rx.clone();
    let (incoming, accept_loop) = crate::api::listener::incoming(
        api_listener,
        api_tls,
        config.tls.handshake_timeout(),
        shutdown_rx.clone(),
    );
    tasks.push(tokio::spawn(accept_loop));
    tasks.push(tokio::spawn(async move {
        let health = health;
        let result = api_router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = api_shutdown.wait_for(|stop| *stop).await;
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
            })
            .await;
        if let Err(err) = result {
            tracing::error!(error = %err, "API server failed");
        }
    }));

    // The coordinators' web app, if configured: it reaches this node only through the API
    // above, over TLS with each signed-in person's own token.
    let mut web = None;
    if let Some(listener) = web_listener {
        let listen = local_addr(&listener, "the web app's listener", "web.listen")?;
        let api_host = match api_addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => {
                SocketAddr::from(([127, 0, 0, 1], api_addr.port()))
            }
            ip if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, api_addr.port()))
            }
            _ => api_addr,
        };
        let mut options =
            sfs_web::WebOptions::new(listen, format!("https://{api_host}"), ca_pem.clone());
        if let (Some(cert), Some(key)) = (&config.web.cert, &config.web.key) {
            options.tls = Some((read(cert)?, read(key)?));
        }
        options.code_dir = Some(config.data_dir.join(sfs_web::session::CODE_DIR));
        if let Some(minutes) = config.web.session_idle_minutes {
            options.session_idle = Duration::from_secs(minutes.saturating_mul(60));
        }
        let (handle, serve) =
            sfs_web::serve_on(listener, options, shutdown_rx.clone()).map_err(|err| match err {
                sfs_web::WebError::Bind { addr, source } => NodeError::Bind {
                    listener: "the web app's listener",
                    setting: "web.listen (SFS_WEB_LISTEN)",
                    addr,
                    error: source,
                },
                other => NodeError::Web(other),
            })?;
        tracing::info!(node = %id, web = %handle.url(), "web app listening");
        tasks.push(tokio::spawn(serve));
        web = Some(handle);
    }

    // The federation: the national hub listens with mutual TLS; a county hub listens for its
    // cities and dials the national hub; a city dials its upstream (county hub or national hub).
    let mut federation_addr = None;
    if matches!(id.role(), Role::Hub | Role::County) {
        let listener = federation_listener.ok_or_else(|| {
            NodeError::Config(format!(
                "a {} needs a federation listener (federation.listen)",
                id.role()
            ))
        })?;
        let bound = local_addr(
            &listener,
            "the federation listener",
            "federation.listen (SFS_FEDERATION_LISTEN)",
        )?;
        federation_addr = Some(bound);
        let tls = ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(Certificate::from_pem(&ca_pem))
            .timeout(config.tls.handshake_timeout());
        let accepted = if id.role() == Role::County {
            AcceptedPeers::County(
                county_members
                    .clone()
                    .expect("a county hub has its list of cities"),
            )
        } else {
            AcceptedPeers::National(config.federation.standby_hubs.iter().cloned().collect())
        };
        let service = pb::federation_server::FederationServer::new(FederationService {
            sync: sync.clone(),
            shutdown: shutdown_rx.clone(),
            revocations: revocations.clone(),
            metrics: metrics.clone(),
            link_tasks: request_tasks.clone(),
            certificates: certificates.clone(),
            accepted,
        })
        .max_decoding_message_size(MAX_FRAME_BYTES)
        .max_encoding_message_size(MAX_FRAME_BYTES);
        let router = Server::builder()
            .max_concurrent_streams(Some(config.limits.federation_max_streams as u32))
            .tls_config(tls)?
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(service);
        let mut fed_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let result = router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = fed_shutdown.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(err) = result {
                tracing::error!(error = %err, "federation listener failed");
            }
        }));
    }
    // A standby national hub dials the national hub like a county hub does.
    if matches!(id.role(), Role::City | Role::County) || config.federation.hub_url.is_some() {
        let link = HubLinkConfig {
            hub_url: config
                .federation
                .hub_url
                .clone()
                .expect("checked by NodeConfig::check"),
            hub_id: config.upstream_id().map_err(NodeError::Config)?,
            ca_pem,
            cert_pem,
            key_pem,
            max_backoff: config.max_backoff(),
        };
        let standby = match (&config.federation.standby_url, config.standby_id()) {
            (Some(url), Ok(Some(id))) => Some(crate::federation::upstream::StandbyLink {
                url: url.clone(),
                id,
                failback: config.failback_interval(),
            }),
            (_, Err(err)) => return Err(NodeError::Config(err)),
            _ => None,
        };
        tasks.push(tokio::spawn(
            crate::federation::upstream::run_upstream_links(
                sync.clone(),
                link,
                standby,
                shutdown_rx.clone(),
            ),
        ));
    }

    // Prometheus metrics, if configured.
    let mut metrics_addr = None;
    if let Some(listener) = metrics_listener {
        metrics_addr = Some(local_addr(
            &listener,
            "the metrics listener",
            "metrics.listen (SFS_METRICS_LISTEN)",
        )?);
        let (sync_for_refresh, metrics_for_refresh) = (sync.clone(), metrics.clone());
        let durability = durability.clone();
        let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            sync_for_refresh.refresh_metrics();
            metrics_for_refresh
                .storage_bytes
                .set(durability.size_on_disk() as i64);
        });
        tasks.push(tokio::spawn(crate::metrics::serve(
            listener,
            metrics.clone(),
            refresh,
            shutdown_rx.clone(),
        )));
    }

    // The node's own certificate: a warning from 30 days before it expires, again every
    // 12 hours, so an expiry never takes the node off the federation silently.
    let mut expiry_shutdown = shutdown_rx.clone();
    let cert_path = config.tls.cert.clone();
    tasks.push(tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(12 * 3600));
        loop {
            tokio::select! {
                _ = interval.tick() => warn_if_expiring(&cert_path, cert_expiry),
                _ = expiry_shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }));

    // Last-use times of API tokens: kept in memory, written at most once a minute and when
    // the node stops.
    let used_tokens = tokens.clone();
    let mut used_shutdown = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let mut interval = tokio::time::interval(crate::api::tokens::LAST_USED_FLUSH);
        interval.tick().await;
        loop {
            let stopping = tokio::select! {
                _ = interval.tick() => false,
                _ = used_shutdown.wait_for(|stop| *stop) => true,
            };
            let registry = used_tokens.clone();
            if let Ok(Err(err)) =
                tokio::task::spawn_blocking(move || registry.flush_last_used()).await
            {
                tracing::warn!(error = %err, "writing the last use of API tokens failed");
            }
            if stopping {
                return;
            }
        }
    }));

    // The clock of the sync engine: keepalives and silent-peer detection; at a hub (national or
    // county) also the revocation list, so a revoked certificate's open link is closed within
    // about a second.
    let ticker = sync.clone();
    let ticker_revocations = revocations.clone();
    let mut tick_shutdown = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    let (ticker, revocations) = (ticker.clone(), ticker_revocations.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        match revocations.refresh() {
                            Ok(true) => ticker.close_revoked_links(&revocations.serials()),
                            Ok(false) => {}
                            Err(err) => tracing::error!(error = %err, "reading the revocation list failed"),
                        }
                        ticker.tick()
                    })
                    .await;
                }
                _ = tick_shutdown.changed() => return,
            }
        }
    }));

    tracing::info!(node = %id, %api_addr, ?federation_addr, "node started");
    Ok(RunningNode {
        id,
        api_addr,
        federation_addr,
        metrics_addr,
        web,
        shutdown: shutdown_tx,
        sync,
        local,
        durability,
        tasks,
        request_tasks,
    })
}

/// What [`preflight`] read.
pub struct Preflight {
    /// The node's identity.
    pub id: NodeId,
    /// The CA certificate, the node's certificate and its key (PEM).
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Every check of a configuration before a node opens its data directory, shared by
/// `sfs-node check-config` and `run`: the fields ([`NodeConfig::check`], the at-rest key file
/// outside the data directory among them), the certificate files readable and naming this
/// node, and the release public key readable.
pub fn preflight(config: &NodeConfig) -> Result<Preflight, NodeError> {
    let id = config.node_id().map_err(NodeError::Config)?;
    config.check().map_err(NodeError::Config)?;
    let ca_pem = read(&config.tls.ca)?;
    let cert_pem = read(&config.tls.cert)?;
    let key_pem = read(&config.tls.key)?;
    check_certificate_identity(config, &cert_pem, &id)?;
    if let Some(path) = &config.method.release_public_key {
        sfs_client::release::PublicKey::read(path)
            .map_err(|err| NodeError::Config(format!("method.release_public_key: {err}")))?;
    }
    Ok(Preflight {
        id,
        ca_pem,
        cert_pem,
        key_pem,
    })
}

/// Refuses to start with a certificate that names another node.
fn check_certificate_identity(
    config: &NodeConfig,
    cert_pem: &str,
    id: &NodeId,
) -> Result<(), NodeError> {
    let bad = |message: String| NodeError::Certificate {
        path: config.tls.cert.clone(),
        message,
    };
    let der = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|err| bad(err.to_string()))?
        .1
        .contents;
    let in_cert = pki::identity_of(&der).map_err(|err| bad(err.to_string()))?;
    if &in_cert != id {
        return Err(bad(format!(
            "the certificate is for {in_cert} but the configuration says {id}"
        )));
    }
    Ok(())
}

/// Logs a warning when the certificate at `path` expires within
/// [`crate::federation::pki::EXPIRY_WARNING_DAYS`], an error once it has expired.
fn warn_if_expiring(path: &std::path::Path, not_after_unix: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = crate::federation::pki::days_left(not_after_unix, now);
    if now >= not_after_unix {
        tracing::error!(cert = %path.display(), "the node's certificate has expired: peers refuse it; issue a new one (`sfs-node pki issue`) and restart");
    } else if days < crate::federation::pki::EXPIRY_WARNING_DAYS {
        tracing::warn!(cert = %path.display(), days_left = days, "the node's certificate expires soon: issue a new one (`sfs-node pki issue`) and restart before it does");
    }
}

/// Restores a backup into an empty data directory: the store (documents and access log, see
/// [`crate::storage::store::restore`]), then the token file and the running handbook release, each
/// written durably. Returns the number of documents restored.
pub fn restore(
    data_dir: &std::path::Path,
    archive: &pb::BackupArchive,
    key: crate::storage::seal::MasterKey,
) -> Result<usize, crate::storage::store::RestoreError> {
    use crate::storage::store::StoreError;
    let count = crate::storage::store::restore(data_dir, archive, key)?;
    if !archive.running_release.is_empty() {
        let path = crate::federation::releases::ReleaseTracker::file(data_dir);
        sfs_durable::write(&path, &archive.running_release, sfs_durable::Access::Public)
            .map_err(|source| StoreError::Io { path, source })?;
    }
    if !archive.tokens.is_empty() {
        crate::api::tokens::restore_file(data_dir, &archive.tokens).map_err(|err| match err {
            crate::api::tokens::TokenError::Io { path, source } => StoreError::Io { path, source },
            other => StoreError::Io {
                path: crate::api::tokens::token_file(data_dir),
                source: std::io::Error::other(other.to_string()),
            },
        })?;
    }
    Ok(count)
}
