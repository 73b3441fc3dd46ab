//! The coordinators' web app: server-rendered pages in Swedish (English selectable), served by
//! every node on its own listener (`[web] listen`).
//!
//! The app holds no data of its own. Every page is a view of the node's public gRPC API, called
//! with the signed-in person's own API token over TLS ([`sfs_client::Client`]), so the app can
//! never do what that person's token cannot. It keeps only sessions, one-time sign-in codes
//! and the time of each token's last visit, in memory.
//!
//! Security: sessions live server-side behind an HttpOnly, Secure, SameSite=Strict cookie with
//! an idle timeout; every POST must carry the session's CSRF token (checked in one middleware
//! before any handler runs); every response carries a strict Content-Security-Policy (no
//! inline script or style), `X-Frame-Options: DENY` and `Referrer-Policy: same-origin` (a sign-in code in a URL never leaves the site; the browser still sends the `Origin` that the CSRF check compares).

pub mod chart;
pub mod format;
pub mod i18n;
mod pages;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::i18n::{Lang, Tr};
use crate::session::{Session, Sessions};

/// Errors starting the web app.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the web listener {0} is not a loopback address: serving it needs a certificate and key (web.cert, web.key)")]
    NotLoopback(SocketAddr),
    #[error("web TLS certificate or key: {0}")]
    Tls(String),
}

/// How to start the web app.
#[derive(Clone)]
pub struct WebOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The node's API, for example `https://127.0.0.1:7443`.
    pub api_endpoint: String,
    /// The CA that signed the node's API certificate (PEM).
    pub ca_pem: String,
    /// A certificate chain and key (PEM) to serve HTTPS with; without them the listener must
    /// be a loopback address and serves plain HTTP (browsers treat loopback as secure).
    pub tls: Option<(String, String)>,
    /// How long a session lasts without a request.
    pub session_idle: Duration,
    /// How long a one-time sign-in code is valid.
    pub code_ttl: Duration,
    /// How often a live page's server side asks the API whether lessons changed.
    pub live_poll: Duration,
    /// Where `sfs-node web sign-in-link` writes one-time codes ([`session::CODE_DIR`] in the
    /// node's data directory); none: only codes the running node mints.
    pub code_dir: Option<std::path::PathBuf>,
}

impl WebOptions {
    /// Options with the defaults: 30 minutes idle, 15-minute codes, a poll every second.
    pub fn new(listen: SocketAddr, api_endpoint: String, ca_pem: String) -> WebOptions {
        WebOptions {
            listen,
            api_endpoint,
            ca_pem,
            tls: None,
            session_idle: Duration::from_secs(30 * 60),
            code_ttl: Duration::from_secs(15 * 60),
            live_poll: Duration::from_secs(1),
            code_dir: None,
        }
    }
}

/// What the handlers share.
pub(crate) struct App {
    /// Cookie names carry the listener's port: browsers keep cookies per host, not per port,
    /// so two nodes on one machine (the demo) would otherwise share one session cookie.
    pub session_cookie: String,
    pub pre_cookie: String,
    pub api_endpoint: String,
    pub ca_pem: String,
    pub sessions: Sessions,
    pub live_poll: Duration,
}

type AppState = Arc<App>;

/// A running web app: its address and the sign-in codes it accepts.
#[derive(Clone)]
pub struct WebHandle {
    addr: SocketAddr,
    https: bool,
    app: AppState,
}

impl WebHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The app's base URL, for example `http://127.0.0.1:8080`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A one-time sign-in link for `token` (single use, short-lived, kept only in memory).
    pub fn sign_in_link(&self, token: &str) -> String {
        format!(
            "{}/login?code={}",
            self.url(),
            self.app.sessions.mint_code(token)
        )
    }
}

/// Binds the listener and returns the handle and the task that serves until `shutdown` is true.
pub async fn bind(
    options: WebOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(WebHandle, impl std::future::Future<Output = ()>), WebError> {
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| WebError::Bind {
            addr: options.listen,
            source,
        })?;
    serve_on(listener, options, shutdown)
}

/// Like [`bind`], on a listener bound already (`options.listen` is then only checked: plain
/// HTTP is served on loopback alone).
pub fn serve_on(
    listener: TcpListener,
    options: WebOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(WebHandle, impl std::future::Future<Output = ()>), WebError> {
    let addr = listener.local_addr().map_err(|source| WebError::Bind {
        addr: options.listen,
        source,
    })?;
    let acceptor = match &options.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None if !addr.ip().is_loopback() => return Err(WebError::NotLoopback(addr)),
        None => None,
    };
    let app = Arc::new(App {
        session_cookie: format!("{SESSION_COOKIE}_{}", addr.port()),
        pre_cookie: format!("{PRE_COOKIE}_{}", addr.port()),
        api_endpoint: options.api_endpoint,
        ca_pem: options.ca_pem,
        sessions: Sessions::new(options.session_idle, options.code_ttl, options.code_dir),
        live_poll: options.live_poll,
    });
    let handle = WebHandle {
        addr,
        https: acceptor.is_some(),
        app: app.clone(),
    };
    let router = router(app);
    Ok((handle, serve(listener, acceptor, router, shutdown)))
}

fn tls_acceptor(cert_pem: &str, key_pem: &str) -> Result<tokio_rustls::TlsAcceptor, WebError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |e: &dyn std::fmt::Display| WebError::Tls(e.to_string());
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until shutdown; then every open connection (live pages included) is
/// closed, so stopping the node never waits on a browser.
async fn serve(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, _) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "web listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let builder = hyper::server::conn::http1::Builder::new();
            let result = match acceptor {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => tls,
                        _ => return,
                    };
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await
                }
                None => {
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(err) = result {
                tracing::debug!(error = %err, "web connection ended");
            }
        });
    }
    connections.shutdown().await;
}

fn router(app: AppState) -> Router {
    pages::routes()
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            check_csrf,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

/// The headers every response carries.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Cookie names.
pub(crate) const SESSION_COOKIE: &str = "sfs_session";
pub(crate) const LANG_COOKIE: &str = "sfs_lang";
pub(crate) const PRE_COOKIE: &str = "sfs_pre";

/// The value of cookie `name` in the request.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session of the request, if signed in.
pub(crate) fn session(app: &App, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = cookie(headers, &app.session_cookie)?;
    app.sessions.get(id).map(|s| (id.to_string(), s))
}

/// The language of the request: the cookie, else Swedish.
pub(crate) fn lang(headers: &HeaderMap) -> Lang {
    cookie(headers, LANG_COOKIE)
        .and_then(Lang::parse)
        .unwrap_or_default()
}

/// Largest form the app accepts.
const MAX_FORM_BYTES: usize = 256 * 1024;

/// Refuses every POST that does not carry the right CSRF token: the session's, or before
/// sign-in the one in the pre-session cookie. Also refuses a POST from another origin.
async fn check_csrf(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let t = Tr::new(lang(request.headers()));
    let refuse = |id: &str| pages::error_page(&t, StatusCode::FORBIDDEN, id);
    if let (Some(origin), Some(host)) = (
        request.headers().get(header::ORIGIN),
        request.headers().get(header::HOST),
    ) {
        let origin = origin.to_str().unwrap_or("");
        let host = host.to_str().unwrap_or("");
        let same = origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host);
        if !same {
            return refuse("error-csrf");
        }
    }
    // The sign-in form is checked against the pre-session cookie it came with; every other
    // form against the session's token.
    let expected = if request.uri().path() == "/login" {
        cookie(request.headers(), &app.pre_cookie).map(str::to_string)
    } else {
        session(&app, request.headers()).map(|(_, s)| s.csrf)
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return pages::error_page(&t, StatusCode::PAYLOAD_TOO_LARGE, "error-too-large");
    };
    let sent: Option<String> = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v));
    match (expected, sent) {
        (Some(expected), Some(sent)) if session::same_secret(&expected, &sent) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        _ => refuse("error-csrf"),
    }
}

/// Lets the `Response` type be built from a template quickly.
pub(crate) fn html(result: Result<String, askama::Error>) -> Response {
    match result {
        Ok(body) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "rendering a page failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
