//! The right to erasure, retention and the access log, attacked through the real API: after an
//! erasure nothing of the record is readable in the data directory (even with the at-rest key),
//! in a backup made afterwards or in any document history; closed signals go by themselves once
//! their retention ends; the access log only grows.

use std::path::Path;

use sfs_client::v1 as pb;
use sfs_node::api::tokens::ApiRole;

use crate::util::Federation;
use crate::util::{all_files, contains, eventually, readable_with_key, readable_with_key_of};

async fn backup(client: &mut sfs_client::Client, to: &Path) -> Vec<u8> {
    let bytes = crate::util::backup_bytes(client).await;
    std::fs::write(to, &bytes).unwrap();
    bytes
}

fn signal(org: &str, description: &str, status: &str) -> pb::Signal {
    pb::Signal {
        date: "2026-11-01".into(),
        reporting_organisation: org.into(),
        kind: "signal".into(),
        description: description.into(),
        status: status.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erased_contact_or_signal_is_unreadable_everywhere_even_with_the_key() {
    let mut fed = Federation::start(&["lund"]).await;
    let mut lund = fed.client(0).await;
    let data_dir = fed.cities[0].config.data_dir.clone();
    let scratch = tempfile::tempdir().unwrap();

    let org = lund
        .create_organisation("Lund social services", "municipality")
        .await
        .unwrap();
    // The contact's first name is changed once, so its history holds two versions.
    let (erased_name, earlier_name) = ("Ingrid Kvarnström", "Ingela Kvarnström");
    let erased_phone = "0701-938271";
    let contact = lund
        .create_contact(pb::Contact {
            full_name: earlier_name.into(),
            organisation: org.name.clone(),
            phone: erased_phone.into(),
            email: "ingrid.k@example.org".into(),
            role: "outreach".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    lund.register
        .update_contact(pb::UpdateContactRequest {
            contact: Some(pb::Contact {
                name: contact.name.clone(),
                full_name: erased_name.into(),
                ..Default::default()
            }),
            update_mask: vec!["full_name".into()],
        })
        .await
        .unwrap();
    let kept_name = "Bertil Kept-Person";
    lund.create_contact(pb::Contact {
        full_name: kept_name.into(),
        organisation: org.name.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let erased_signal_text = "Girl-7731 seen at the harbour hostel";
    let erased_signal = lund
        .signals
        .create_signal(pb::CreateSignalRequest {
            signal: Some(signal(&org.name, erased_signal_text, "new")),
        })
        .await
        .unwrap()
        .into_inner();
    lund.signals
        .update_signal(pb::UpdateSignalRequest {
            signal: Some(signal(
                &org.name,
                &format!("{erased_signal_text}, referred"),
                "referred",
            )),
            update_mask: vec!["description".into(), "status".into()],
        })
        .await
        .map(drop)
        .unwrap_err(); // no name: refused, nothing changed
    lund.signals
        .update_signal(pb::UpdateSignalRequest {
            signal: Some(pb::Signal {
                name: erased_signal.name.clone(),
                ..signal(
                    &org.name,
                    &format!("{erased_signal_text}, referred"),
                    "referred",
                )
            }),
            update_mask: vec!["description".into(), "status".into()],
        })
        .await
        .unwrap();
    let kept_signal_text = "Kept-signal-5120 at the station";
    lund.signals
        .create_signal(pb::CreateSignalRequest {
            signal: Some(signal(&org.name, kept_signal_text, "new")),
        })
        .await
        .unwrap();
    let erased = [
        erased_name,
        earlier_name,
        erased_phone,
        "ingrid.k@example.org",
        erased_signal_text,
    ];
    let kept = [kept_name, kept_signal_text];

    // Before: sealed on disk, readable with the key (the scan sees what it looks for).
    let before = readable_with_key(&data_dir);
    for text in erased.iter().chain(&kept) {
        assert!(
            contains(&before, text),
            "{text} readable before the erasure"
        );
        for (path, bytes) in all_files(&data_dir) {
            assert!(
                !contains(&bytes, text),
                "{text} unsealed in {}",
                path.display()
            );
        }
    }
    let backup_before = scratch.path().join("before.backup");
    let raw = backup(&mut lund, &backup_before).await;
    assert!(
        erased.iter().all(|t| !contains(&raw, t)),
        "backups are sealed"
    );
    let readable = readable_with_key_of(&data_dir, &backup_before);
    assert!(erased.iter().all(|t| contains(&readable, t)));
    let log_before = crate::util::access_log(&mut lund).await;

    // Who may erase, and bad input.
    let mut editor = fed.client_with_role(0, ApiRole::Editor).await;
    let err = editor
        .register
        .erase_contact(pb::EraseRequest {
            name: contact.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let err = lund
        .register
        .erase_contact(pb::EraseRequest {
            name: "signals/1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // Erase.
    let done = lund
        .register
        .erase_contact(pb::EraseRequest {
            name: contact.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.name, contact.name);
    lund.signals
        .erase_signal(pb::EraseRequest {
            name: erased_signal.name.clone(),
        })
        .await
        .unwrap();
    let err = lund
        .register
        .get_contact(pb::GetRequest {
            name: contact.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = lund
        .signals
        .erase_signal(pb::EraseRequest {
            name: erased_signal.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "erasing twice: {err:?}");
    let contacts = lund.list_contacts().await.unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].full_name, kept_name);

    // After: nothing of it readable with the key, in the directory or a new backup.
    let after = readable_with_key(&data_dir);
    let backup_after = scratch.path().join("after.backup");
    backup(&mut lund, &backup_after).await;
    let after_backup = readable_with_key_of(&data_dir, &backup_after);
    for text in erased {
        assert!(
            !contains(&after, text),
            "{text} still readable in the data directory"
        );
        assert!(
            !contains(&after_backup, text),
            "{text} in a backup made afterwards"
        );
    }
    for text in kept {
        assert!(contains(&after, text), "{text} was kept");
        assert!(
            contains(&after_backup, text),
            "{text} was kept in the backup"
        );
    }

    // The access log kept every earlier entry and gained the erasures.
    let log_after = crate::util::access_log(&mut lund).await;
    assert!(
        log_after.ends_with(&log_before),
        "earlier entries unchanged (newest first)"
    );
    for name in [&contact.name, &erased_signal.name] {
        assert!(
            log_after
                .iter()
                .any(|e| e.action == "erase" && &e.resource == name),
            "erasure of {name} logged"
        );
    }

    // And after a restart, from the store alone.
    fed.stop_city(0).await;
    let stopped = readable_with_key(&data_dir);
    assert!(erased.iter().all(|t| !contains(&stopped, t)));
    fed.start_city(0).await;
    let mut lund = fed.client(0).await;
    assert_eq!(lund.list_contacts().await.unwrap().len(), 1);
    let signals = lund
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .signals;
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].description, kept_signal_text);
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closed_signals_are_erased_when_their_retention_ends() {
    let mut fed = Federation::start(&["lund"]).await;
    fed.stop_city(0).await;
    // Two seconds of retention.
    fed.cities[0].config.privacy.closed_signal_retention_days = 2.0 / 86_400.0;
    fed.start_city(0).await;
    let data_dir = fed.cities[0].config.data_dir.clone();
    let mut lund = fed.client(0).await;
    let org = lund
        .create_organisation("Lund police", "police")
        .await
        .unwrap();
    let closed_text = "Closed-case-4410 outside the club";
    let open_text = "Open-case-9902 near the hotel";
    let closed = lund
        .signals
        .create_signal(pb::CreateSignalRequest {
            signal: Some(signal(&org.name, closed_text, "closed")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(closed.close_time_ms > 0, "the close time is recorded");
    let open = lund
        .signals
        .create_signal(pb::CreateSignalRequest {
            signal: Some(signal(&org.name, open_text, "in_support")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(open.close_time_ms, 0);
    assert!(contains(&readable_with_key(&data_dir), closed_text));

    eventually("the closed signal is erased by the retention rule", || {
        let mut lund = lund.clone();
        let name = closed.name.clone();
        async move {
            let gone = lund
                .signals
                .get_signal(pb::GetRequest { name })
                .await
                .is_err_and(|status| status.code() == tonic::Code::NotFound);
            gone.then_some(())
        }
    })
    .await;
    // The open one stays, however long it has been open.
    let still = lund
        .signals
        .get_signal(pb::GetRequest {
            name: open.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.description, open_text);
    let readable = readable_with_key(&data_dir);
    assert!(!contains(&readable, closed_text), "nothing of it readable");
    assert!(contains(&readable, open_text));
    let log = crate::util::access_log(&mut lund).await;
    assert!(log
        .iter()
        .any(|e| e.actor == "retention" && e.action == "erase" && e.resource == closed.name));
    fed.stop_all().await;
}

#[test]
fn no_api_method_can_change_or_remove_access_log_entries() {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(sfs_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut touching = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                let types = [
                    method.input_type.clone().unwrap_or_default(),
                    method.output_type.clone().unwrap_or_default(),
                ];
                if method.name().contains("AccessLog")
                    || types.iter().any(|t| t.contains("AccessLog"))
                {
                    touching.push(format!("{}.{}", service.name(), method.name()));
                }
            }
        }
    }
    // The only method that reaches the access log reads it.
    assert_eq!(touching, vec!["Signals.ListAccessLog".to_string()]);
}
