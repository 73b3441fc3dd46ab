//! API tokens against a running node: revocation is effective at the next request, expiry is
//! enforced, the admin API lists tokens with their last use and never a secret, and only an
//! admin may list or revoke.

use std::time::Duration;

use sfs_client::v1 as pb;
use sfs_node::api::tokens::{self, ApiRole};

use crate::util::{eventually, Federation};

async fn connect(fed: &Federation, token: &str) -> sfs_client::Client {
    let addr = fed.cities[0].running.as_ref().unwrap().api_addr;
    sfs_client::Client::connect(&format!("https://{addr}"), token, &fed.ca_pem)
        .await
        .unwrap()
}

fn id_of(token: &str) -> String {
    tokens::hash(token)[..8].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_or_expired_token_is_refused_at_once_while_others_work() {
    let mut fed = Federation::start(&["helsingborg"]).await;
    let data_dir = fed.cities[0].config.data_dir.clone();
    let leaked = tokens::create_token(&data_dir, ApiRole::Coordinator, "Anna Svensson").unwrap();
    let reader = tokens::create_token(&data_dir, ApiRole::Reader, "").unwrap();
    let mut leaked_client = connect(&fed, &leaked).await;
    let mut reader_client = connect(&fed, &reader).await;
    leaked_client
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap();
    reader_client.list_lessons("cities/-").await.unwrap();

    // The admin sees every token with its last use, and nothing secret.
    let mut admin = fed.client(0).await;
    let listed = admin
        .node
        .list_tokens(pb::ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let entry = listed
        .iter()
        .find(|t| t.id == id_of(&leaked))
        .expect("the coordinator token is listed");
    assert_eq!(entry.role, "coordinator");
    assert_eq!(entry.state, "active");
    assert!(entry.labelled);
    assert!(entry.last_use_time_ms > 0, "{entry:?}");
    assert!(entry.create_time_ms > 0 && entry.expire_time_ms == 0);
    let shown = format!("{listed:?}");
    for secret in [
        leaked.as_str(),
        reader.as_str(),
        &tokens::hash(&leaked),
        "Anna",
    ] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    let file = std::fs::read_to_string(tokens::token_file(&data_dir)).unwrap();
    assert!(!file.contains("Anna"), "labels are not stored in clear");

    // Only an admin lists or revokes; a refused revocation changes nothing.
    let err = leaked_client
        .node
        .list_tokens(pb::ListTokensRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    let err = leaked_client
        .node
        .revoke_token(pb::RevokeTokenRequest { id: id_of(&reader) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    reader_client.list_lessons("cities/-").await.unwrap();

    // Bad ids get clear errors.
    for (id, code) in [
        ("abc", tonic::Code::InvalidArgument),
        ("not-hex!", tonic::Code::InvalidArgument),
        ("", tonic::Code::InvalidArgument),
    ] {
        let err = admin
            .node
            .revoke_token(pb::RevokeTokenRequest { id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{id:?}: {err}");
        assert!(err.message().contains("field `id`"), "{err}");
    }
    let absent = if id_of(&leaked) == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let err = admin
        .node
        .revoke_token(pb::RevokeTokenRequest { id: absent.into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");

    // Revoked through the API: refused at the very next request, the others still work.
    let revoked = admin
        .node
        .revoke_token(pb::RevokeTokenRequest { id: id_of(&leaked) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.state, "revoked");
    assert!(revoked.revoke_time_ms > 0);
    let err = leaked_client
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(err.message().contains("revoked"), "{err}");
    reader_client.list_lessons("cities/-").await.unwrap();
    admin.status().await.unwrap();

    // Revoked through the file (what `sfs-node token revoke` does) while the node runs.
    tokens::revoke_token(&data_dir, &id_of(&reader)).unwrap();
    let err = reader_client
        .list_lessons("cities/-")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("UNAUTHENTICATED") && err.contains("revoked"),
        "{err}"
    );
    admin.status().await.unwrap();

    // A line deleted by hand counts at once too.
    let doomed = tokens::create_token(&data_dir, ApiRole::Reader, "").unwrap();
    let mut doomed_client = connect(&fed, &doomed).await;
    doomed_client.list_lessons("cities/-").await.unwrap();
    let path = tokens::token_file(&data_dir);
    let kept: String = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.contains(&tokens::hash(&doomed)))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, kept).unwrap();
    let err = doomed_client
        .list_lessons("cities/-")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("UNAUTHENTICATED") && err.contains("unknown API token"),
        "{err}"
    );
    admin.status().await.unwrap();

    // An expired token is refused; one that expires soon works until it does.
    let expired =
        tokens::create_token_expiring(&data_dir, ApiRole::Admin, "", Some(Duration::ZERO)).unwrap();
    let err = connect(&fed, &expired)
        .await
        .status()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("UNAUTHENTICATED") && err.contains("expired"),
        "{err}"
    );
    let short =
        tokens::create_token_expiring(&data_dir, ApiRole::Reader, "", Some(Duration::from_secs(2)))
            .unwrap();
    let mut short_client = connect(&fed, &short).await;
    short_client.list_lessons("cities/-").await.unwrap();
    eventually("the short-lived token expires", || {
        let mut client = short_client.clone();
        async move {
            let err = client.list_lessons("cities/-").await.err()?;
            (err.to_string().starts_with("UNAUTHENTICATED") && err.to_string().contains("expired"))
                .then_some(())
        }
    })
    .await;

    // The list shows each state; the CLI shows the same.
    let listed = admin
        .node
        .list_tokens(pb::ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let state = |token: &str| {
        listed
            .iter()
            .find(|t| t.id == id_of(token))
            .map(|t| t.state.clone())
    };
    assert_eq!(state(&leaked).as_deref(), Some("revoked"));
    assert_eq!(state(&reader).as_deref(), Some("revoked"));
    assert_eq!(state(&expired).as_deref(), Some("expired"));
    assert_eq!(state(&short).as_deref(), Some("expired"));
    assert_eq!(state(&doomed), None);
    let ca = fed.pki_dir().join("ca.crt");
    let addr = fed.cities[0].running.as_ref().unwrap().api_addr;
    let mut out = Vec::new();
    sfs_client::cli::run(
        [
            "sfs",
            "--endpoint",
            &format!("https://{addr}"),
            "--token",
            &fed.cities[0].admin_token,
            "--ca",
            ca.to_str().unwrap(),
            "tokens",
            "list",
        ]
        .map(String::from),
        &mut out,
    )
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.lines()
            .any(|l| l.starts_with(&id_of(&leaked)) && l.contains("revoked")),
        "{out}"
    );

    // Last use survives a restart (written when the node stops).
    let admin_id = id_of(&fed.cities[0].admin_token);
    fed.stop_city(0).await;
    let offline = tokens::list_tokens(&data_dir, None).unwrap();
    assert!(
        offline
            .iter()
            .find(|t| t.id == admin_id)
            .and_then(|t| t.last_used_unix)
            .is_some(),
        "{offline:?}"
    );
    fed.stop_all().await;
}
