//! The mutual-TLS matrix: every kind of wrong certificate is refused, by the hub and by cities.

use std::time::Duration;

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sfs_client::v1 as pb;
use sfs_sync::NodeId;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::util::{eventually, Federation};

/// A change to a certificate's parameters.
type Shape = Box<dyn FnOnce(&mut CertificateParams)>;

/// A certificate signed by the federation's own CA, shaped by `shape`.
fn certificate(fed: &Federation, shape: impl FnOnce(&mut CertificateParams)) -> (String, String) {
    let pki = fed.pki_dir();
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&fed.ca_pem, ca_key).unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.subject_alt_names.push(SanType::URI(
        NodeId::city("lund")
            .unwrap()
            .spiffe_uri()
            .try_into()
            .unwrap(),
    ));
    params.distinguished_name.push(DnType::CommonName, "test");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(1);
    shape(&mut params);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Tries to open a federation stream with `identity`; the status if refused at any stage.
async fn try_link(fed: &Federation, identity: (String, String)) -> Result<(), String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&fed.ca_pem))
        .identity(Identity::from_pem(identity.0, identity.1))
        .domain_name(NodeId::hub("national").unwrap().dns_name());
    let channel = Endpoint::from_shared(fed.hub_url())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = pb::federation_client::FederationClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(sfs_node::federation::sync::to_pb(sfs_sync::Frame::Hello {
        protocol_version: sfs_sync::PROTOCOL_VERSION,
    }))
    .unwrap();
    let mut inbound = client
        .sync(UnboundedReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    // A stream was granted: the hub must also say hello back.
    match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        other => Err(format!("no answer: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_wrong_certificate_is_refused() {
    let mut fed = Federation::start(&["malmo"]).await;
    // Control: a well-formed certificate from the national CA links.
    assert_eq!(try_link(&fed, certificate(&fed, |_| {})).await, Ok(()));

    let now = time::OffsetDateTime::now_utc();
    // Refused by TLS itself (with TLS 1.3 the client learns it on its first call: "") or by the
    // hub after TLS, with the status named.
    let cases: Vec<(&str, Shape, &str)> = vec![
        (
            "expired",
            Box::new(move |p| {
                p.not_before = now - time::Duration::days(10);
                p.not_after = now - time::Duration::days(1);
            }),
            "",
        ),
        (
            "not yet valid",
            Box::new(move |p| {
                p.not_before = now + time::Duration::days(1);
                p.not_after = now + time::Duration::days(10);
            }),
            "",
        ),
        (
            "no client-auth key usage",
            Box::new(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]),
            "",
        ),
        (
            "no stadforstad identity",
            Box::new(|p| {
                p.subject_alt_names
                    .retain(|s| !matches!(s, SanType::URI(_)))
            }),
            "Unauthenticated",
        ),
        (
            "a foreign identity",
            Box::new(|p| {
                p.subject_alt_names
                    .retain(|s| !matches!(s, SanType::URI(_)));
                p.subject_alt_names.push(SanType::URI(
                    "spiffe://example.org/city/lund".try_into().unwrap(),
                ));
            }),
            "Unauthenticated",
        ),
        (
            "a hub, not a city",
            Box::new(|p| {
                p.subject_alt_names
                    .retain(|s| !matches!(s, SanType::URI(_)));
                p.subject_alt_names.push(SanType::URI(
                    NodeId::hub("rogue")
                        .unwrap()
                        .spiffe_uri()
                        .try_into()
                        .unwrap(),
                ));
            }),
            "PermissionDenied",
        ),
    ];
    for (name, shape, expected) in cases {
        let result = try_link(&fed, certificate(&fed, shape)).await;
        let err = result.expect_err(name);
        assert!(err.contains(expected), "{name}: {err}");
    }

    // A city checks whom it dialled: pointed at another city (which holds a valid certificate
    // from the same CA, but not the hub's name), it never links.
    let mut config = fed.cities[0].config.clone();
    let impostor = fed.cities[0].running.as_ref().unwrap().api_addr;
    config.federation.hub_url = Some(format!("https://{impostor}"));
    config.data_dir = fed.dir.path().join("lund-misled");
    config.id = "lund".into();
    let files =
        sfs_node::federation::pki::issue(&fed.pki_dir(), &NodeId::city("lund").unwrap(), &[], 1)
            .unwrap();
    config.tls.cert = files.cert;
    config.tls.key = files.key;
    config.metrics.listen = None;
    config.api.listen = "127.0.0.1:0".parse().unwrap();
    let token = sfs_node::api::tokens::create_token(
        &config.data_dir,
        sfs_node::api::tokens::ApiRole::Admin,
        "t",
    )
    .unwrap();
    let lund = sfs_node::node::start(config, Default::default())
        .await
        .unwrap();
    let client =
        sfs_client::Client::connect(&format!("https://{}", lund.api_addr), &token, &fed.ca_pem)
            .await
            .unwrap();
    let error = eventually("Lund reports why it cannot link", || {
        let mut client = client.clone();
        async move {
            let status = client.status().await.ok()?;
            let hub = status.peers.iter().find(|p| p.peer_role == "hub")?;
            assert_ne!(hub.state, "connected", "linked to an impostor");
            (!hub.last_error.is_empty()).then(|| hub.last_error.clone())
        }
    })
    .await;
    assert!(error.contains("certificate"), "{error}");
    lund.stop().await;
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_city_is_cut_off_at_once_and_a_new_certificate_lets_it_back() {
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    let lund = NodeId::city("lund").unwrap();
    let old_identity = crate::identity_of(&fed, &lund);
    let serial = sfs_node::federation::pki::revoke(&fed.pki_dir(), &lund).unwrap();
    // The open link is closed within the hub's one-second check, and stays down.
    let mut lund_client = fed.client(0).await;
    eventually("lund's link is closed as revoked", || {
        let mut client = lund_client.clone();
        async move {
            let status = client.status().await.ok()?;
            let hub = status.peers.iter().find(|p| p.peer_role == "hub")?;
            (hub.state != "connected" && hub.last_error.contains("revoked")).then_some(())
        }
    })
    .await;
    // A new connection with the revoked certificate is refused.
    let refused = try_link(&fed, old_identity).await.unwrap_err();
    assert!(refused.contains("PermissionDenied"), "{refused}");
    assert!(refused.contains(&serial), "{refused}");
    // Malmö is not affected.
    let mut malmo = fed.client(1).await;
    malmo
        .create_lesson("Malmö after the revocation", "still linked", vec![])
        .await
        .unwrap();
    let mut hub = fed.hub_client().await;
    eventually("the hub gets Malmö's lesson", || {
        let mut hub = hub.clone();
        async move {
            let lessons = hub.list_lessons("cities/malmo").await.ok()?;
            (!lessons.is_empty()).then_some(())
        }
    })
    .await;
    // Rotation: Lund gets a new certificate (a new random serial) and is back.
    fed.stop_city(0).await;
    sfs_node::federation::pki::issue(&fed.pki_dir(), &lund, &[], 30).unwrap();
    fed.start_city(0).await;
    fed.wait_linked(0).await;
    lund_client = fed.client(0).await;
    lund_client
        .create_lesson("Lund with its new certificate", "back", vec![])
        .await
        .unwrap();
    eventually("Lund's lesson reaches the hub again", || {
        let mut hub = hub.clone();
        async move {
            let lessons = hub.list_lessons("cities/lund").await.ok()?;
            (!lessons.is_empty()).then_some(())
        }
    })
    .await;
    let _ = &mut hub;
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_that_never_finish_the_tls_handshake_are_closed() {
    let mut fed = Federation::start(&[]).await;
    fed.stop_hub().await;
    fed.hub.config.tls.handshake_timeout_ms = Some(300);
    fed.start_hub().await;
    let api = fed.hub.running.as_ref().unwrap().api_addr;
    for addr in [fed.hub_federation_addr(), api] {
        // A client that connects and then says nothing, holding the connection open.
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "{addr}: the server must close a silent connection, got {read:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{addr}: closed only after {:?}",
            started.elapsed()
        );
    }
    fed.stop_all().await;
}
