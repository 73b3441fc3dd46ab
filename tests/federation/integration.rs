//! What integrators and operators rely on: health, reflection and gRPC-Web on the API listener.

use sfs_client::v1 as pb;

use crate::util::Federation;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generic_tools_find_the_services_and_their_health_without_a_token() {
    let mut fed = Federation::start(&["lund"]).await;
    let addr = fed.cities[0].running.as_ref().unwrap().api_addr;
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&fed.ca_pem)),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in sfs_node::api::API_SERVICES.iter().chain([&""]) {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }

    // Reflection v1 and v1alpha list exactly what this port serves: the API, health and
    // reflection; not the federation service, which only the hub's federation port serves.
    let mut expected: Vec<String> = sfs_node::api::listener::served_services()
        .into_iter()
        .map(String::from)
        .collect();
    expected.sort();
    assert!(expected.contains(&"grpc.health.v1.Health".to_string()));
    let v1 = reflection_v1_services(channel.clone()).await;
    assert_eq!(v1, expected, "reflection v1");
    let v1alpha = reflection_v1alpha_services(channel).await;
    assert_eq!(v1alpha, expected, "reflection v1alpha");
    assert!(!v1.iter().any(|s| s.contains("Federation")), "{v1:?}");
    fed.stop_all().await;
}

async fn reflection_v1_services(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let response = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

async fn reflection_v1alpha_services(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let response = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grpc_web_client_creates_and_lists_lessons_over_http1() {
    let mut fed = Federation::start(&["lund"]).await;
    let addr = fed.cities[0].running.as_ref().unwrap().api_addr;

    // A real gRPC-Web client (tonic-web's) over HTTP/1.1 and TLS, as a browser would speak it.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut fed.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let http1 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, tonic_web::GrpcWebCall<tonic::body::Body>>(connector);
    let service = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(http1);
    let origin: tonic::codegen::http::Uri = format!("https://{addr}").parse().unwrap();
    let token: tonic::metadata::MetadataValue<_> = format!("Bearer {}", fed.cities[0].admin_token)
        .parse()
        .unwrap();
    let with_token = move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", token.clone());
        Ok(request)
    };
    let mut lessons = pb::lessons_client::LessonsClient::with_origin(
        tonic::service::interceptor::InterceptedService::new(service, with_token),
        origin,
    );
    let created = lessons
        .create_lesson(pb::CreateLessonRequest {
            lesson: Some(pb::Lesson {
                title: "From a browser".into(),
                body: "gRPC-Web".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.name.starts_with("cities/lund/lessons/"));
    let listed = lessons
        .list_lessons(pb::ListLessonsRequest {
            parent: "cities/lund".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.lessons.len(), 1);
    // Errors arrive as gRPC statuses through gRPC-Web too.
    let err = lessons
        .get_lesson(pb::GetLessonRequest {
            name: "nonsense".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    fed.stop_all().await;
}

/// Fetches `/metrics` with a plain HTTP/1.1 request.
pub(crate) async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_metrics_describe_links_frames_api_calls_storage_and_fsyncs() {
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    let mut lund = fed.client(0).await;
    lund.create_lesson("Counted", "", vec![]).await.unwrap();
    let _ = lund.get_lesson("nonsense").await.unwrap_err();
    let hub_metrics = fed.hub.running.as_ref().unwrap().metrics_addr.unwrap();
    let lund_metrics = fed.cities[0]
        .running
        .as_ref()
        .unwrap()
        .metrics_addr
        .unwrap();
    let text = crate::util::eventually(
        "the hub counts frames from Lund and sees both cities in step",
        || async move {
            let text = scrape(hub_metrics).await;
            let in_step =
                text.contains(r#"sfs_sync_lag_changes{doc="shared/lessons/lund",peer="malmo"} 0"#);
            (text.contains("sfs_peers_connected 2") && in_step).then_some(text)
        },
    )
    .await;
    assert!(
        text.contains(r#"sfs_federation_frames_total{peer="lund",direction="received"}"#),
        "{text}"
    );
    assert!(text.contains("sfs_federation_frame_bytes_total"), "{text}");
    let lund_text = scrape(lund_metrics).await;
    assert!(
        lund_text.contains(
            r#"sfs_api_requests_total{method="stadforstad.v1.Lessons/CreateLesson",code="Ok"} 1"#
        ),
        "{lund_text}"
    );
    assert!(lund_text.contains(r#"sfs_api_requests_total{method="stadforstad.v1.Lessons/GetLesson",code="InvalidArgument"} 1"#), "{lund_text}");
    assert!(lund_text.contains("sfs_fsync_seconds_count"), "{lund_text}");
    // The node's own certificate expiry, as issued (30 days in these tests).
    let expiry: i64 = lund_text
        .lines()
        .find(|l| l.starts_with("sfs_certificate_expiry_timestamp_seconds "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no certificate expiry in {lund_text}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (29..=30).contains(&sfs_node::federation::pki::days_left(expiry, now)),
        "{expiry}"
    );
    // The hub shows each linked city's certificate expiry.
    for city in ["lund", "malmo"] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    r#"sfs_city_certificate_expiry_timestamp_seconds{{city="{city}"}} "#
                ))
            })
            .unwrap_or_else(|| panic!("no certificate expiry of {city} in {text}"));
        let at: i64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(
            (29..=30).contains(&sfs_node::federation::pki::days_left(at, now)),
            "{line}"
        );
    }
    let storage: f64 = lund_text
        .lines()
        .find(|l| l.starts_with("sfs_storage_bytes "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(storage > 0.0);
    fed.stop_all().await;
}
