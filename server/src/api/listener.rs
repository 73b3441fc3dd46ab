//! The API port's transport: TLS that offers HTTP/2 and HTTP/1.1 (ALPN), so gRPC clients and
//! gRPC-Web clients that speak only HTTP/1.1 (browsers behind some proxies, `curl --http1.1`,
//! plain HTTP libraries) both reach the same services; CORS for browser pages on the origins
//! the operator allows; and the list of services reflection advertises.
//!
//! tonic's own TLS offers only `h2`, so the API listener terminates TLS here and hands tonic
//! plain streams; the federation listener keeps tonic's mutual TLS.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Protocols the API port offers in the TLS handshake, preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Every service the API port serves, as reflection lists them: the API, the standard health
/// service and reflection itself (both versions). The federation service is not served here.
pub fn served_services() -> Vec<&'static str> {
    let mut services = crate::api::API_SERVICES.to_vec();
    services.extend([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]);
    services
}

/// A reflection builder that lists exactly [`served_services`], with the descriptors of each.
pub fn reflection() -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sfs_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    for service in served_services() {
        builder = builder.with_service_name(service);
    }
    builder
}

/// CORS for gRPC-Web calls from browser pages on `origins` (exact `scheme://host[:port]`):
/// preflights are answered here, and only those origins get `Access-Control-Allow-Origin`. An
/// empty list allows no other origin.
pub fn cors(origins: &[String]) -> Result<tower_http::cors::CorsLayer, String> {
    use tonic::codegen::http::{header, HeaderName, HeaderValue, Method};
    let origins = origins
        .iter()
        .map(|origin| {
            HeaderValue::from_str(origin)
                .map_err(|_| format!("api.cors_allowed_origins: {origin:?} is not a valid origin"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let allowed_headers = [
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        HeaderName::from_static("x-grpc-web"),
        HeaderName::from_static("x-user-agent"),
        HeaderName::from_static("grpc-timeout"),
    ];
    let exposed_headers = [
        HeaderName::from_static("grpc-status"),
        HeaderName::from_static("grpc-message"),
        HeaderName::from_static("grpc-status-details-bin"),
    ];
    Ok(tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::list(origins))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers(allowed_headers)
        .expose_headers(exposed_headers)
        .max_age(Duration::from_secs(24 * 3600)))
}

/// The API port's TLS configuration: the node's certificate, no client certificates (clients
/// authenticate with tokens), `h2` and `http/1.1` offered.
pub fn tls_acceptor(cert_pem: &str, key_pem: &str) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.cert: {e}"))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("tls.key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.cert and tls.key: {e}"))?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// One accepted API connection after its TLS handshake.
pub struct ApiConnection(TlsStream<TcpStream>);

impl Connected for ApiConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for ApiConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ApiConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// The connections of the API port, for tonic's `serve_with_incoming_shutdown`.
pub type Incoming = tokio_stream::wrappers::ReceiverStream<std::io::Result<ApiConnection>>;

/// Accepts TCP connections until shutdown and yields those whose TLS handshake completes
/// within `handshake_timeout`; each handshake runs on its own task, so a slow or silent client
/// never holds up the others. Failed handshakes are logged at debug level and dropped. Returns
/// the connections and the accept loop to spawn (it releases the port when it ends).
pub fn incoming(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> (
    Incoming,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel(64);
    let accept_loop = async move {
        while !*shutdown.borrow() {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.changed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(ApiConnection(tls))).await;
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "API TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
                }
            });
        }
    };
    (tokio_stream::wrappers::ReceiverStream::new(rx), accept_loop)
}
