//! Prometheus metrics, served over HTTP at `/metrics` when `[metrics] listen` is configured.
//!
//! Counters are updated where things happen (frames in `sync`, API calls in [`ApiMetricsLayer`],
//! fsyncs in `store`); gauges that describe state (connected peers, how far each peer is behind
//! on each document, storage size) are computed from the node at scrape time.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body_util::Full;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Labels of per-peer metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
    pub direction: String,
}

/// Labels of per-city metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CityLabels {
    pub city: String,
}

/// Labels of per-document, per-peer metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DocPeerLabels {
    pub doc: String,
    pub peer: String,
}

/// Labels of API call metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub method: String,
    pub code: String,
}

/// Labels of sync messages by how they were made.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MadeByLabels {
    pub made_by: String,
}

/// Labels of limit refusals.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: String,
}

/// Every metric of a node.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub frames: Family<PeerLabels, Counter>,
    pub frame_bytes: Family<PeerLabels, Counter>,
    pub peers_connected: Gauge,
    /// Federation streams being read (a link's reader task runs from its start to its end).
    pub sync_streams_open: Gauge,
    pub sync_lag: Family<DocPeerLabels, Gauge>,
    /// Sync messages made since start, from recent changes, by Automerge, or as a whole
    /// document for a peer that held nothing (read from the engine at scrape time).
    pub sync_messages_made: Family<MadeByLabels, Gauge>,
    pub api_requests: Family<ApiLabels, Counter>,
    pub storage_bytes: Gauge,
    pub fsync_seconds: Histogram,
    pub limit_refusals: Family<LimitLabels, Counter>,
    /// When the node's own certificate expires.
    pub certificate_expiry: Gauge,
    /// At the hub: when the certificate each city last linked with expires.
    pub city_certificate_expiry: Family<CityLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered.
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Mutex::new(Registry::with_prefix("sfs")),
            frames: Family::default(),
            frame_bytes: Family::default(),
            peers_connected: Gauge::default(),
            sync_streams_open: Gauge::default(),
            sync_lag: Family::default(),
            sync_messages_made: Family::default(),
            api_requests: Family::default(),
            storage_bytes: Gauge::default(),
            limit_refusals: Family::default(),
            certificate_expiry: Gauge::default(),
            city_certificate_expiry: Family::default(),
            fsync_seconds: Histogram::new([
                0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
            ]),
        };
        {
            let mut r = metrics.registry.lock().expect("fresh lock");
            r.register(
                "federation_frames",
                "Federation frames, by peer and direction",
                metrics.frames.clone(),
            );
            r.register(
                "federation_frame_bytes",
                "Federation frame bytes, by peer and direction",
                metrics.frame_bytes.clone(),
            );
            r.register(
                "peers_connected",
                "Federation links with the handshake done",
                metrics.peers_connected.clone(),
            );
            r.register(
                "sync_streams_open",
                "Federation streams open and read by this node (handshake done or not)",
                metrics.sync_streams_open.clone(),
            );
            r.register(
                "sync_lag_changes",
                "Changes of a document the peer is not known to have (0 when in step)",
                metrics.sync_lag.clone(),
            );
            r.register(
                "sync_messages_made",
                "Sync messages made since the node started, by how: from the document's recent changes, by Automerge over its whole history, or as the whole document for a peer that held nothing of it",
                metrics.sync_messages_made.clone(),
            );
            r.register(
                "api_requests",
                "API calls, by method and gRPC status code",
                metrics.api_requests.clone(),
            );
            r.register(
                "storage_bytes",
                "Size of the node's store on disk",
                metrics.storage_bytes.clone(),
            );
            r.register(
                "limit_refusals",
                "Peers, links and API requests refused or cut off for a limit, by limit",
                metrics.limit_refusals.clone(),
            );
            r.register(
                "certificate_expiry_timestamp_seconds",
                "When the node's own certificate (tls.cert) expires, seconds since the Unix epoch",
                metrics.certificate_expiry.clone(),
            );
            r.register(
                "city_certificate_expiry_timestamp_seconds",
                "At the hub: when the certificate each city last linked with expires, seconds since the Unix epoch",
                metrics.city_certificate_expiry.clone(),
            );
            r.register(
                "fsync_seconds",
                "Time to make writes durable (flush and fsync)",
                metrics.fsync_seconds.clone(),
            );
        }
        metrics
    }

    /// Counts one frame to or from `peer`.
    pub fn frame(&self, peer: &str, direction: &str, bytes: usize) {
        let labels = PeerLabels {
            peer: peer.to_string(),
            direction: direction.to_string(),
        };
        self.frames.get_or_create(&labels).inc();
        self.frame_bytes.get_or_create(&labels).inc_by(bytes as u64);
    }

    /// Counts one refusal for `limit`.
    pub fn limit_refused(&self, limit: &str) {
        self.limit_refusals
            .get_or_create(&LimitLabels {
                limit: limit.to_string(),
            })
            .inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a string");
        text
    }
}

/// Serves `/metrics` on `listener` until shutdown; `refresh` updates the state gauges first.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    refresh: Arc<dyn Fn() + Send + Sync>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let (metrics, refresh) = (metrics.clone(), refresh.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let (metrics, refresh) = (metrics.clone(), refresh.clone());
                    async move {
                        let response = if request.uri().path() == "/metrics" {
                            let refresh = refresh.clone();
                            let _ = tokio::task::spawn_blocking(move || refresh()).await;
                            hyper::Response::builder()
                                .header(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(Full::new(hyper::body::Bytes::from(metrics.encode())))
                        } else {
                            hyper::Response::builder().status(404).body(Full::new(
                                hyper::body::Bytes::from("not found: try /metrics\n"),
                            ))
                        };
                        Ok::<_, Infallible>(response.expect("valid response"))
                    }
                },
            );
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// A tower layer that counts API calls by method and gRPC status code.
#[derive(Clone)]
pub struct ApiMetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for ApiMetricsLayer {
    type Service = ApiMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ApiMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service made by [`ApiMetricsLayer`].
#[derive(Clone)]
pub struct ApiMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<hyper::Request<B>> for ApiMetricsService<S>
where
    S: tower::Service<hyper::Request<B>, Response = hyper::Response<RB>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: hyper::Request<B>) -> Self::Future {
        let method = request.uri().path().trim_start_matches('/').to_string();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let span = tracing::info_span!("api_request", method = %method);
        let future = tracing::Instrument::instrument(self.inner.call(request), span);
        Box::pin(async move {
            let response = future.await?;
            // An error answers at once with the status in the headers (trailers-only); a
            // success carries its status in the trailers, which is always OK here.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(|c| format!("{:?}", tonic::Code::from_i32(c)))
                .unwrap_or_else(|| "Ok".to_string());
            metrics
                .api_requests
                .get_or_create(&ApiLabels { method, code })
                .inc();
            tracing::debug!(
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "API call"
            );
            Ok(response)
        })
    }
}
