//! The gRPC API that apps and the CLI use: lessons, the register, and node status.
//!
//! Every request carries `authorization: Bearer <token>`; the token's role is checked by each
//! method ([`require`]). Bad input answers `INVALID_ARGUMENT` with a message naming the field;
//! a write to a document owned by another node answers `FAILED_PRECONDITION`; a write that could
//! not be stored answers `UNAVAILABLE` and is not acknowledged.

pub mod lessons;
pub mod node;
pub mod register;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::{Request, Status};

use crate::register::LocalReplicas;
use crate::sync::SyncHandle;
use crate::tokens::{ApiRole, TokenRegistry};

/// What every API service shares.
#[derive(Clone)]
pub struct ApiState {
    /// Shared and national documents, through the sync engine.
    pub sync: Arc<SyncHandle>,
    /// Local documents; only the API holds them.
    pub local: Arc<LocalReplicas>,
    /// Known API tokens.
    pub tokens: Arc<TokenRegistry>,
}

/// The role of the request's caller, put in the request by [`authenticate`].
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub ApiRole);

/// Checks the bearer token and records the caller's role; unknown tokens are refused.
pub fn authenticate(
    tokens: Arc<TokenRegistry>,
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
        let role = tokens
            .role_of(token.trim())
            .ok_or_else(|| Status::unauthenticated("unknown API token"))?;
        request.extensions_mut().insert(Caller(role));
        Ok(request)
    }
}

/// Refuses the request unless the caller has at least `needed`.
pub fn require<T>(request: &Request<T>, needed: ApiRole) -> Result<(), Status> {
    let Caller(role) = request
        .extensions()
        .get::<Caller>()
        .copied()
        .ok_or_else(|| Status::unauthenticated("no API token"))?;
    if role >= needed {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "this method needs role {} or higher; the token has role {}",
            needed.as_str(),
            role.as_str()
        )))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A short random resource id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

/// Runs blocking work (document edits that fsync) off the async workers.
pub async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Status::internal("the request handler failed"))
}
