//! The gRPC API that apps and the CLI use: lessons, the register, and node status.
//!
//! Every request carries `authorization: Bearer <token>`; the token's role is checked by each
//! method ([`require`]). Bad input answers `INVALID_ARGUMENT` with a message naming the field;
//! a write to a document owned by another node answers `FAILED_PRECONDITION`; a write that could
//! not be stored answers `UNAVAILABLE` and is not acknowledged.

/// The fully qualified names of the API's services, for the health service.
pub const API_SERVICES: &[&str] = &[
    "stadforstad.v1.Lessons",
    "stadforstad.v1.Register",
    "stadforstad.v1.Signals",
    "stadforstad.v1.Method",
    "stadforstad.v1.Progress",
    "stadforstad.v1.Directory",
    "stadforstad.v1.Statistics",
    "stadforstad.v1.Node",
];

pub mod directory;
pub mod error_text;
pub mod lessons;
pub mod listener;
pub mod method;
pub mod node;
pub mod progress;
pub mod register;
pub mod signals;
pub mod stats;
pub mod tokens;

use std::sync::Arc;

use tonic::{Request, Status};

use crate::api::tokens::{ApiRole, TokenRegistry};
pub use crate::domain::model::{
    check_date, check_len, new_id, now_ms, parse_name, quote, today, update_mask, ModelError,
    MAX_QUOTED_CHARS,
};
use crate::federation::sync::SyncHandle;
use crate::storage::local::LocalReplicas;

/// What every API service shares.
#[derive(Clone)]
pub struct ApiState {
    /// Shared and national documents, through the sync engine.
    pub sync: Arc<SyncHandle>,
    /// Local documents; only the API holds them.
    pub local: Arc<LocalReplicas>,
    /// Known API tokens.
    pub tokens: Arc<TokenRegistry>,
    /// Who read or changed which personal record.
    pub access_log: Arc<crate::storage::store::AccessLog>,
    /// The node's data directory (for backups of the token file).
    pub data_dir: std::path::PathBuf,
    /// The at-rest key, which seals local data in backups too.
    pub at_rest: crate::storage::seal::MasterKey,
    /// The signed handbook release this node runs.
    pub releases: Arc<crate::federation::releases::ReleaseTracker>,
    /// The privacy guard built from the register's contact names and deny list, rebuilt after
    /// every change of the register; every edit of a shareable document reads it.
    pub guards: Arc<crate::domain::privacy::GuardCache>,
    /// Work a request starts that outlives its handler (a backup streaming behind its
    /// response): the node waits for it on stop.
    pub request_tasks: tokio_util::task::TaskTracker,
    /// Listings of the lessons documents, reused while a document is unchanged.
    pub lesson_listings: Arc<crate::domain::lessons::ListingCache>,
    /// This node's certificate expiry and, at the hub, the certificates cities presented.
    pub certificates: Arc<crate::federation::hub::CertificateWatch>,
    /// At a county hub, the cities it serves (`county.cities`): its `Directory.ListCities`
    /// lists these only, seen from its own links (the county coordinator's view).
    pub county_cities: Option<Arc<crate::federation::county::CountyMembers>>,
}

impl ApiState {
    /// Changes a shareable document this node owns, off the async workers; storage failures
    /// answer `UNAVAILABLE`, documents owned by another node `FAILED_PRECONDITION`.
    pub async fn edit_shared<R: Send + 'static>(
        &self,
        doc: sfs_sync::ShareableDocId,
        change: impl FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<R, Status>
            + Send
            + 'static,
    ) -> Result<R, Status> {
        let sync = self.sync.clone();
        blocking(move || sync.edit(&doc, change))
            .await?
            .map_err(edit_status)
    }

    /// Changes a local document, off the async workers.
    pub async fn edit_local<R: Send + 'static>(
        &self,
        doc: sfs_sync::DocId,
        change: impl FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<R, Status>
            + Send
            + 'static,
    ) -> Result<R, Status> {
        let (local, guards) = (self.local.clone(), self.guards.clone());
        blocking(move || {
            let edited = local.edit(&doc, change);
            if doc == crate::domain::register::network() {
                refresh_privacy_guard(&local, &guards);
            }
            edited
        })
        .await?
    }
}

/// Rebuilds the privacy guard from the register's contact names and deny list if the register
/// changed since it was built. Called without any document lock held (the guard is read by
/// every edit of a shareable document, which must never wait for a local document).
pub fn refresh_privacy_guard(local: &LocalReplicas, guards: &crate::domain::privacy::GuardCache) {
    local.read(&crate::domain::register::network(), |doc| {
        let version = crate::domain::docmodel::version_of(&doc.get_heads());
        guards.get(&version, || crate::domain::register::privacy_guard(doc));
    });
}

/// Access-log entries of one `action` by `actor` on `resources`, stamped now.
pub fn access_entries(
    actor: &str,
    action: &str,
    resources: impl IntoIterator<Item = String>,
) -> Vec<crate::storage::store::AccessEntry> {
    let time_ms = now_ms();
    resources
        .into_iter()
        .map(|resource| crate::storage::store::AccessEntry {
            time_ms,
            actor: actor.to_string(),
            action: action.to_string(),
            resource,
        })
        .collect()
}

/// Writes the erasure of `resources` to the access log, durably. Called while the record is
/// still there, before it is destroyed, so that no erasure goes unrecorded.
pub fn log_erasure(
    log: &crate::storage::store::AccessLog,
    actor: &str,
    resources: impl IntoIterator<Item = String>,
) -> Result<(), Status> {
    log.append(&access_entries(actor, "erase", resources))
        .map_err(|err| {
            Status::unavailable(format!(
                "the access log could not be written, so nothing was erased: {err}"
            ))
        })
}

/// The caller of a request, put in the request by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Caller {
    /// What the caller's token allows.
    pub role: ApiRole,
    /// Who the caller is, for the access log: the token's label, role and hash prefix.
    pub actor: String,
}

/// Request-rate limits and daily byte budgets per API token, shared by every service of the
/// API listener.
pub struct ApiLimits {
    rates: std::sync::Mutex<crate::federation::limits::TokenRates>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl ApiLimits {
    /// `per_second` sustained requests per token, `burst` at once, `bytes_per_day` of request
    /// and response bodies.
    pub fn new(
        per_second: u64,
        burst: u64,
        bytes_per_day: u64,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> ApiLimits {
        ApiLimits {
            rates: std::sync::Mutex::new(crate::federation::limits::TokenRates::new(
                per_second,
                burst,
                bytes_per_day,
            )),
            metrics,
        }
    }

    /// Counts bytes moved for the token with hash `token_hash`.
    fn count_bytes(&self, token_hash: &str, bytes: u64) {
        self.rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .count_bytes(token_hash, bytes, std::time::Instant::now());
    }

    /// Charges one request to the token with hash `token_hash`; `RESOURCE_EXHAUSTED` when the
    /// token is over its rate (other tokens are not affected).
    fn charge(&self, token_hash: &str, label: &str) -> Result<(), Status> {
        let charged = self
            .rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .charge(token_hash, std::time::Instant::now());
        charged.map_err(|err| {
            tracing::warn!(token = %label, hash_prefix = &token_hash[..8], error = %err, "refused an API request over a limit");
            self.metrics.limit_refused(err.name());
            Status::resource_exhausted(err.to_string())
        })
    }
}

/// Counts the body bytes of every API request and response against the daily budget of the
/// request's token ([`ApiLimits`]); the token check itself is [`authenticate`]'s.
#[derive(Clone)]
pub struct ApiBytesLayer(pub Arc<ApiLimits>);

impl<S> tower::Layer<S> for ApiBytesLayer {
    type Service = ApiBytesService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ApiBytesService {
            inner,
            limits: self.0.clone(),
        }
    }
}

/// The service made by [`ApiBytesLayer`].
#[derive(Clone)]
pub struct ApiBytesService<S> {
    inner: S,
    limits: Arc<ApiLimits>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, RB> tower::Service<hyper::Request<tonic::body::Body>> for ApiBytesService<S>
where
    S: tower::Service<hyper::Request<tonic::body::Body>, Response = hyper::Response<RB>> + Send,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = hyper::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: hyper::Request<tonic::body::Body>) -> Self::Future {
        let token: Option<Arc<str>> = request
            .headers()
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(|t| crate::api::tokens::hash(t.trim()).into());
        let limits = self.limits.clone();
        let counted = |body: tonic::body::Body| match &token {
            Some(token) => tonic::body::Body::new(CountedBody {
                inner: Box::pin(body),
                limits: limits.clone(),
                token: token.clone(),
            }),
            None => body,
        };
        let future = self.inner.call(request.map(counted));
        let limits = self.limits.clone();
        let token_after = token.clone();
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| match token_after {
                Some(token) => tonic::body::Body::new(CountedBody {
                    inner: Box::pin(body),
                    limits,
                    token,
                }),
                None => tonic::body::Body::new(body),
            }))
        })
    }
}

/// A body that counts its data bytes for a token as they pass.
struct CountedBody<B> {
    inner: std::pin::Pin<Box<B>>,
    limits: Arc<ApiLimits>,
    token: Arc<str>,
}

impl<B> http_body::Body for CountedBody<B>
where
    B: http_body::Body<Data = bytes::Bytes>,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.limits.count_bytes(&self.token, data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Checks the bearer token and records the caller's role; unknown tokens are refused, and a
/// token over its request rate is refused with `RESOURCE_EXHAUSTED`.
pub fn authenticate(
    tokens: Arc<TokenRegistry>,
    limits: Arc<ApiLimits>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let header = request.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing `authorization: Bearer <token>` header")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("the authorization header must be `Bearer <token>`")
            })?;
        let found = tokens
            .check(token.trim())
            .map_err(|refused| Status::unauthenticated(refused.to_string()))?;
        limits.charge(&crate::api::tokens::hash(token.trim()), &found.label)?;
        request.extensions_mut().insert(Caller {
            role: found.role,
            actor: format!("{} ({})", found.label, found.role.as_str()),
        });
        Ok(request)
    }
}

/// Refuses the request unless the caller has at least `needed`.
pub fn require<T>(request: &Request<T>, needed: ApiRole) -> Result<Caller, Status> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no API token"))?;
    let role = caller.role;
    if role >= needed {
        Ok(caller)
    } else {
        Err(Status::permission_denied(format!(
            "this method needs role {} or higher; the token has role {}",
            needed.as_str(),
            role.as_str()
        )))
    }
}

/// Runs blocking work (document edits that fsync) off the async workers.
pub async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Status::internal("the request handler failed"))
}

/// Default and largest page sizes of List methods.
pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 500;

/// One page of `items` (already in their final order): the page, the next page token, and the
/// total count. Page tokens are opaque to clients.
pub fn paginate<T>(
    items: Vec<T>,
    page_size: i32,
    page_token: &str,
) -> Result<(Vec<T>, String, i32), Status> {
    let size = match page_size {
        n if n < 0 => {
            return Err(Status::invalid_argument(
                "field `page_size`: must not be negative",
            ))
        }
        0 => DEFAULT_PAGE_SIZE,
        n => (n as usize).min(MAX_PAGE_SIZE),
    };
    let start = if page_token.is_empty() {
        0
    } else {
        page_token
            .strip_prefix("o")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                Status::invalid_argument("field `page_token`: not a token from a previous page")
            })?
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(size).collect();
    let next = if start + page.len() < total {
        format!("o{}", start + page.len())
    } else {
        String::new()
    };
    Ok((page, next, total as i32))
}

/// A document error as a status (for handlers that edit documents themselves).
pub fn doc_error(err: automerge::AutomergeError) -> Status {
    ModelError::from(err).into()
}

/// `NOT_FOUND` for a resource name.
pub fn not_found(name: &str) -> Status {
    crate::domain::model::not_found(name).into()
}

/// Deletes `{collection}/{id}` (named `name` in errors), or answers `NOT_FOUND`.
pub fn delete_or_not_found(
    tx: &mut automerge::transaction::Transaction<'_>,
    collection: &str,
    id: &str,
    name: &str,
) -> Result<(), Status> {
    Ok(crate::domain::model::delete_or_not_found(
        tx, collection, id, name,
    )?)
}

/// The one mapping of a model's typed error to a gRPC status.
impl From<ModelError> for Status {
    fn from(err: ModelError) -> Status {
        match err {
            ModelError::Invalid(message) => Status::invalid_argument(message),
            ModelError::NotFound(message) => Status::not_found(message),
            ModelError::Precondition(message) => Status::failed_precondition(message),
            ModelError::Storage(message) => Status::unavailable(message),
            err @ ModelError::Document(_) => Status::internal(err.to_string()),
        }
    }
}

/// A county hub's list of cities that could not be changed, as a status.
impl From<crate::federation::county::CountyError> for Status {
    fn from(err: crate::federation::county::CountyError) -> Status {
        use crate::federation::county::CountyError;
        match err {
            CountyError::Configured(_) => Status::failed_precondition(err.to_string()),
            CountyError::Io { .. } | CountyError::Format { .. } => {
                Status::unavailable(err.to_string())
            }
        }
    }
}

/// Maps the sync engine's refusal of an edit to a status: a document over the content limits
/// every peer enforces is `RESOURCE_EXHAUSTED`, the rest `FAILED_PRECONDITION`.
pub fn engine_status(err: sfs_sync::EngineError) -> Status {
    match err {
        err @ sfs_sync::EngineError::OverContentLimit { .. } => {
            Status::resource_exhausted(err.to_string())
        }
        err => Status::failed_precondition(err.to_string()),
    }
}

/// Maps a failed edit of a shareable document to a status.
pub fn edit_status(err: crate::federation::sync::EditFailure<Status>) -> Status {
    match err {
        crate::federation::sync::EditFailure::Engine(err) => engine_status(err),
        crate::federation::sync::EditFailure::Storage(err) => {
            Status::unavailable(format!("the change was not stored: {err}"))
        }
        crate::federation::sync::EditFailure::Rejected(status) => status,
        crate::federation::sync::EditFailure::Private(finding) => {
            Status::invalid_argument(finding.to_string())
        }
    }
}
