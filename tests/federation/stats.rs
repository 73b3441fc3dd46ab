//! Statistics through the real API: records stay home, releases pass the disclosure rules,
//! and the hub's national figures are the sums of what cities published.

use std::collections::BTreeMap;

use sfs_client::v1 as pb;
use sfs_client::Client;
use sfs_node::api::tokens::ApiRole;
use tonic::Code;

use crate::util::{all_files, contains, eventually, Federation};

fn code_of<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (Code, String) {
    let status = result.expect_err("the call should fail");
    (status.code(), status.message().to_string())
}

fn support(
    quarter: &str,
    sex: &str,
    age: &str,
    exploitation: &str,
    referral: &str,
    person: &str,
) -> pb::SupportRecord {
    pb::SupportRecord {
        quarter: quarter.into(),
        sex: sex.into(),
        age_band: age.into(),
        citizenship: "non_eu".into(),
        exploitation: exploitation.into(),
        referral_source: referral.into(),
        person_ref: person.into(),
        ..Default::default()
    }
}

async fn record(client: &mut Client, r: pb::SupportRecord) {
    client
        .stats
        .create_support_record(pb::CreateSupportRecordRequest { record: Some(r) })
        .await
        .unwrap();
}

/// Thirteen people: eight women in sexual exploitation, four men in forced labour, and one
/// woman in begging — a cell of one that the women's column total would give away unless
/// another cell is hidden too.
pub(crate) async fn record_quarter(client: &mut Client, quarter: &str, tag: &str) {
    for i in 0..8 {
        record(
            client,
            support(
                quarter,
                "female",
                "25-34",
                "sexual",
                "police",
                &format!("{tag}-w{i}"),
            ),
        )
        .await;
    }
    for i in 0..4 {
        record(
            client,
            support(
                quarter,
                "male",
                "35-44",
                "forced_labour",
                "social_services",
                &format!("{tag}-m{i}"),
            ),
        )
        .await;
    }
    record(
        client,
        support(
            quarter,
            "female",
            "55-64",
            "begging",
            "civil_society",
            &format!("{tag}-b"),
        ),
    )
    .await;
    client
        .stats
        .create_activity_record(pb::CreateActivityRecordRequest {
            record: Some(pb::ActivityRecord {
                quarter: quarter.into(),
                kind: "trainings_held".into(),
                count: 3,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

fn comparable(release: &pb::StatsRelease) -> Vec<(String, String, String, Option<i64>, String)> {
    release
        .cells
        .iter()
        .map(|c| {
            (
                c.table.clone(),
                c.row.clone(),
                c.col.clone(),
                c.value,
                c.status.clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_records_are_refused_with_the_field_named_and_nothing_is_stored() {
    let mut fed = Federation::start(&["lund"]).await;
    let mut lund = fed.client(0).await;
    let mut editor = fed.client_with_role(0, ApiRole::Editor).await;
    let good = support("2026-Q1", "female", "18-24", "sexual", "police", "case-1");
    for (field, bad) in [
        (
            "exploitation",
            pb::SupportRecord {
                exploitation: "smuggling".into(),
                ..good.clone()
            },
        ),
        (
            "sex",
            pb::SupportRecord {
                sex: "f".into(),
                ..good.clone()
            },
        ),
        (
            "age_band",
            pb::SupportRecord {
                age_band: "18-25".into(),
                ..good.clone()
            },
        ),
        (
            "quarter",
            pb::SupportRecord {
                quarter: "2999-Q1".into(),
                ..good.clone()
            },
        ),
        (
            "quarter",
            pb::SupportRecord {
                quarter: "2026-Q5".into(),
                ..good.clone()
            },
        ),
        (
            "person_ref",
            pb::SupportRecord {
                person_ref: String::new(),
                ..good.clone()
            },
        ),
    ] {
        let (code, message) = code_of(
            lund.stats
                .create_support_record(pb::CreateSupportRecordRequest { record: Some(bad) })
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "{field}: {message}");
        assert!(message.contains(&format!("field `{field}`")), "{message}");
    }
    let (code, message) = code_of(
        lund.stats
            .create_activity_record(pb::CreateActivityRecordRequest {
                record: Some(pb::ActivityRecord {
                    quarter: "2026-Q1".into(),
                    kind: "trainings_held".into(),
                    count: -1,
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("field `count`"), "{message}");
    let (code, _) = code_of(
        editor
            .stats
            .create_support_record(pb::CreateSupportRecordRequest {
                record: Some(good.clone()),
            })
            .await,
    );
    assert_eq!(code, Code::PermissionDenied, "editors do not record people");
    let all = pb::ListStatsRecordsRequest::default();
    assert!(lund
        .stats
        .list_support_records(all.clone())
        .await
        .unwrap()
        .into_inner()
        .records
        .is_empty());
    assert!(lund
        .stats
        .list_activity_records(all.clone())
        .await
        .unwrap()
        .into_inner()
        .records
        .is_empty());
    record(&mut lund, good.clone()).await;
    let (code, message) = code_of(
        lund.stats
            .create_support_record(pb::CreateSupportRecordRequest {
                record: Some(good.clone()),
            })
            .await,
    );
    assert_eq!(
        code,
        Code::AlreadyExists,
        "each person once per quarter: {message}"
    );
    assert_eq!(
        lund.stats
            .list_support_records(all)
            .await
            .unwrap()
            .into_inner()
            .records
            .len(),
        1
    );
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn published_releases_equal_their_previews_and_sum_into_national_figures() {
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    let mut hub = fed.hub_client().await;
    for city in ["lund", "malmo"] {
        hub.directory
            .create_city(pb::CreateCityRequest {
                city: Some(pb::City {
                    name: format!("cities/{city}"),
                    display_name: city.into(),
                    county: "Skåne län".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    let mut lund = fed.client(0).await;
    let mut malmo = fed.client(1).await;
    let canary = "RAWREF-CANARY-5d2e";
    record_quarter(&mut lund, "2026-Q1", canary).await;
    record_quarter(&mut malmo, "2026-Q1", "malmo").await;
    // Malmö has a second begging case, so its begging row is 2: still small.
    record(
        &mut malmo,
        support(
            "2026-Q1", "female", "12-17", "begging", "business", "malmo-b2",
        ),
    )
    .await;

    let (code, message) = code_of(
        lund.stats
            .publish_release(pb::PublishReleaseRequest {
                quarter: "2026-Q1".into(),
            })
            .await,
    );
    assert_eq!(
        code,
        Code::FailedPrecondition,
        "publishing needs a preview first: {message}"
    );
    let preview = lund
        .stats
        .preview_release(pb::PreviewReleaseRequest {
            quarter: "2026-Q1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(preview.draft);
    let begging = |r: &pb::StatsRelease, table: &str| {
        r.cells
            .iter()
            .find(|c| c.table == table && c.row == "begging" && c.col.is_empty())
            .unwrap()
            .clone()
    };
    assert_eq!(
        begging(&preview, "exploitation_by_sex").status,
        "suppressed"
    );
    assert_eq!(begging(&preview, "exploitation_by_sex").reason, "primary");
    assert_eq!(
        begging(&preview, "exploitation_by_age_group").status,
        "suppressed",
        "a shared margin is hidden in both tables"
    );
    assert!(
        preview.cells.iter().any(|c| c.reason == "secondary"),
        "hiding one cell needs others hidden too"
    );
    assert!(
        preview
            .cells
            .iter()
            .all(|c| c.value.is_none_or(|v| v == 0 || v >= 5)),
        "no published count from 1 to 4"
    );
    let published = lund
        .stats
        .publish_release(pb::PublishReleaseRequest {
            quarter: "2026-Q1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!published.draft);
    assert_eq!(
        comparable(&published),
        comparable(&preview),
        "publish sends exactly the preview"
    );
    assert_eq!(published.activity["trainings_held"], 3);
    malmo
        .stats
        .preview_release(pb::PreviewReleaseRequest {
            quarter: "2026-Q1".into(),
        })
        .await
        .unwrap();
    let malmo_release = malmo
        .stats
        .publish_release(pb::PublishReleaseRequest {
            quarter: "2026-Q1".into(),
        })
        .await
        .unwrap()
        .into_inner();

    // Every node sees both releases as published; the hub sums them.
    eventually("Malmö lists Lund's release", || {
        let mut malmo = malmo.clone();
        let name = published.name.clone();
        async move {
            let releases = malmo
                .stats
                .list_stats_releases(pb::ListStatsReleasesRequest {
                    parent: "cities/-".into(),
                    period: "2026".into(),
                })
                .await
                .ok()?
                .into_inner()
                .releases;
            releases.iter().any(|r| r.name == name).then_some(())
        }
    })
    .await;
    let national = eventually("the hub has national figures from both releases", || {
        let mut hub = hub.clone();
        async move {
            let national = hub
                .stats
                .get_national_stats(pb::GetNationalStatsRequest { year: 2026 })
                .await
                .ok()?
                .into_inner();
            (national.releases.len() == 2).then_some(national)
        }
    })
    .await;
    let by_city: Vec<&pb::StatsRelease> = vec![&published, &malmo_release];
    let mut checked = 0;
    for cell in national
        .cells
        .iter()
        .filter(|c| c.period == "2026-Q1" && c.county.is_empty())
    {
        let parts: Vec<&pb::StatsCell> = by_city
            .iter()
            .map(|r| {
                r.cells
                    .iter()
                    .find(|c| c.table == cell.table && c.row == cell.row && c.col == cell.col)
                    .unwrap()
            })
            .collect();
        let sum: i64 = parts.iter().map(|c| c.value.unwrap_or(0)).sum();
        assert_eq!(cell.value, sum, "{cell:?}");
        let any_suppressed = parts.iter().any(|c| c.status == "suppressed");
        assert_eq!(
            cell.status,
            if any_suppressed {
                "lower_bound"
            } else {
                "exact"
            },
            "{cell:?}"
        );
        checked += 1;
    }
    assert_eq!(checked, published.cells.len());
    let county_total = national
        .cells
        .iter()
        .find(|c| c.county == "Skåne län" && c.table == "referral_source" && c.row.is_empty())
        .unwrap();
    let year_total = national
        .cells
        .iter()
        .find(|c| {
            c.period == "2026"
                && c.county.is_empty()
                && c.table == "referral_source"
                && c.row.is_empty()
        })
        .unwrap();
    assert_eq!(county_total.value, year_total.value);
    assert!(national
        .activity
        .iter()
        .any(|a| a.period == "2026" && a.kind == "trainings_held" && a.value == 6));
    let csv = hub
        .stats
        .export_national_stats_csv(pb::GetNationalStatsRequest { year: 2026 })
        .await
        .unwrap()
        .into_inner();
    assert!(csv
        .csv
        .starts_with("period,county,table,row,col,value,status,sd,cities"));
    assert!(csv.csv.contains("lower_bound"));

    // A correction is a new release that says what it corrects; the national figure follows it.
    record(
        &mut lund,
        support(
            "2026-Q1",
            "female",
            "25-34",
            "sexual",
            "police",
            "late-case",
        ),
    )
    .await;
    let (code, _) = code_of(
        lund.stats
            .publish_release(pb::PublishReleaseRequest {
                quarter: "2026-Q1".into(),
            })
            .await,
    );
    assert_eq!(
        code,
        Code::FailedPrecondition,
        "a stale preview is not published"
    );
    let correction = lund
        .stats
        .preview_release(pb::PreviewReleaseRequest {
            quarter: "2026-Q1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(correction.number, 2);
    assert_eq!(correction.corrects, published.name);
    lund.stats
        .publish_release(pb::PublishReleaseRequest {
            quarter: "2026-Q1".into(),
        })
        .await
        .unwrap();
    let releases = lund
        .stats
        .list_stats_releases(pb::ListStatsReleasesRequest {
            parent: "cities/lund".into(),
            period: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .releases;
    assert_eq!(releases.len(), 2, "the first release is kept as it was");
    assert_eq!(comparable(&releases[0]), comparable(&published));

    // Raw records never reach a shared document, a frame or another node's disk.
    let lund_dir = fed.cities[0].config.data_dir.clone();
    let histories: Vec<(String, Vec<u8>)> =
        fed.cities[0]
            .running
            .as_ref()
            .unwrap()
            .sync()
            .read(|engine| {
                engine
                    .documents()
                    .map(|(id, doc)| (id.to_string(), doc.save_nocompress()))
                    .collect()
            });
    let local_history = fed.cities[0]
        .running
        .as_ref()
        .unwrap()
        .local()
        .read(&sfs_sync::DocId::local("stats-records").unwrap(), |doc| {
            doc.save_nocompress()
        });
    let frames = fed.hub_tap.lock().unwrap().clone();
    let others = [
        fed.hub.config.data_dir.clone(),
        fed.cities[1].config.data_dir.clone(),
    ];
    fed.stop_all().await;
    assert!(
        contains(&local_history, canary),
        "control: the raw records hold the canary"
    );
    assert!(
        contains(&crate::util::readable_with_key(&lund_dir), canary),
        "control: stored in Lund"
    );
    assert!(
        all_files(&lund_dir)
            .iter()
            .all(|(_, b)| !contains(b, canary)),
        "raw records are stored sealed"
    );
    assert!(histories.iter().any(|(id, _)| id == "shared/stats/lund"));
    for (id, history) in &histories {
        assert!(
            !contains(history, canary),
            "raw record in the history of {id}"
        );
    }
    assert!(
        frames.iter().all(|(_, f)| !contains(f, canary)),
        "raw record crossed the wire"
    );
    for dir in others {
        for (path, bytes) in all_files(&dir) {
            assert!(
                !contains(&bytes, canary),
                "raw record in {}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn noise_releases_spend_a_yearly_budget_and_are_refused_beyond_it() {
    let mut fed = Federation::start(&["lund"]).await;
    let mut hub = fed.hub_client().await;
    let mut lund = fed.client(0).await;
    let (code, _) = code_of(
        lund.stats
            .update_disclosure_policy(pb::UpdateDisclosurePolicyRequest {
                policy: Some(pb::DisclosurePolicy {
                    mode: "noise".into(),
                    k: 5,
                    epsilon_milli: 800,
                    year_cap_milli: 2000,
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_eq!(
        code,
        Code::FailedPrecondition,
        "only the hub sets the policy"
    );
    let (code, message) = code_of(
        hub.stats
            .update_disclosure_policy(pb::UpdateDisclosurePolicyRequest {
                policy: Some(pb::DisclosurePolicy {
                    mode: "suppression".into(),
                    k: 2,
                    epsilon_milli: 800,
                    year_cap_milli: 2000,
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("field `k`"), "{message}");
    hub.stats
        .update_disclosure_policy(pb::UpdateDisclosurePolicyRequest {
            policy: Some(pb::DisclosurePolicy {
                mode: "noise".into(),
                k: 5,
                epsilon_milli: 800,
                year_cap_milli: 2000,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    eventually("Lund applies the national noise policy", || {
        let mut lund = lund.clone();
        async move {
            (lund
                .stats
                .get_disclosure_policy(pb::GetDisclosurePolicyRequest {})
                .await
                .ok()?
                .into_inner()
                .mode
                == "noise")
                .then_some(())
        }
    })
    .await;
    for (i, quarter) in ["2026-Q1", "2026-Q2"].iter().enumerate() {
        record_quarter(&mut lund, quarter, &format!("q{i}")).await;
        let first = lund
            .stats
            .preview_release(pb::PreviewReleaseRequest {
                quarter: quarter.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        let again = lund
            .stats
            .preview_release(pb::PreviewReleaseRequest {
                quarter: quarter.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            comparable(&first),
            comparable(&again),
            "the noise is drawn once per preview, not per call"
        );
        assert!(first
            .cells
            .iter()
            .all(|c| c.status == "noisy" && c.sd > 0.0));
        assert_eq!(first.epsilon_milli, 800);
        assert_eq!(first.year_spent_milli, 800 * i as i32);
        let published = lund
            .stats
            .publish_release(pb::PublishReleaseRequest {
                quarter: quarter.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(comparable(&published), comparable(&first));
        // Activity counts are published exactly, even in noise mode.
        assert_eq!(published.activity["trainings_held"], 3);
    }
    record_quarter(&mut lund, "2026-Q3", "q3").await;
    let (code, message) = code_of(
        lund.stats
            .preview_release(pb::PreviewReleaseRequest {
                quarter: "2026-Q3".into(),
            })
            .await,
    );
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(message.contains("yearly cap"), "{message}");
    let releases = lund
        .stats
        .list_stats_releases(pb::ListStatsReleasesRequest {
            parent: "cities/lund".into(),
            period: "2026".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .releases;
    assert_eq!(releases.len(), 2);
    let national = eventually("the hub reports noisy national cells", || {
        let mut hub = hub.clone();
        async move {
            let national = hub
                .stats
                .get_national_stats(pb::GetNationalStatsRequest { year: 2026 })
                .await
                .ok()?
                .into_inner();
            (national.releases.len() == 2).then_some(national)
        }
    })
    .await;
    let by_key: BTreeMap<(String, String, String, String), &pb::NationalCell> = national
        .cells
        .iter()
        .filter(|c| c.county.is_empty())
        .map(|c| {
            (
                (
                    c.period.clone(),
                    c.table.clone(),
                    c.row.clone(),
                    c.col.clone(),
                ),
                c,
            )
        })
        .collect();
    let year = by_key[&(
        "2026".to_string(),
        "referral_source".to_string(),
        String::new(),
        String::new(),
    )];
    assert_eq!(year.status, "noisy");
    let q1 = by_key[&(
        "2026-Q1".to_string(),
        "referral_source".to_string(),
        String::new(),
        String::new(),
    )];
    let q2 = by_key[&(
        "2026-Q2".to_string(),
        "referral_source".to_string(),
        String::new(),
        String::new(),
    )];
    assert_eq!(year.value, q1.value + q2.value);
    assert!((year.sd - (q1.sd.powi(2) + q2.sd.powi(2)).sqrt()).abs() < 1e-9);
    fed.stop_all().await;
}

/// Sets the national policy at the hub and waits until city 0 applies it.
async fn set_policy(fed: &Federation, policy: pb::DisclosurePolicy) {
    let mut hub = fed.hub_client().await;
    hub.stats
        .update_disclosure_policy(pb::UpdateDisclosurePolicyRequest {
            policy: Some(policy.clone()),
        })
        .await
        .unwrap();
    let city = fed.client(0).await;
    eventually("the city applies the national policy", || {
        let mut city = city.clone();
        let want = policy.clone();
        async move {
            let have = city
                .stats
                .get_disclosure_policy(pb::GetDisclosurePolicyRequest {})
                .await
                .ok()?
                .into_inner();
            (have.mode == want.mode && have.year_cap_milli == want.year_cap_milli).then_some(())
        }
    })
    .await;
}

pub(crate) async fn preview(
    client: &mut Client,
    quarter: &str,
) -> Result<pb::StatsRelease, tonic::Status> {
    client
        .stats
        .preview_release(pb::PreviewReleaseRequest {
            quarter: quarter.into(),
        })
        .await
        .map(|r| r.into_inner())
}

pub(crate) async fn publish(
    client: &mut Client,
    quarter: &str,
) -> Result<pb::StatsRelease, tonic::Status> {
    client
        .stats
        .publish_release(pb::PublishReleaseRequest {
            quarter: quarter.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn releases_of(client: &mut Client, parent: &str, period: &str) -> Vec<pb::StatsRelease> {
    client
        .stats
        .list_stats_releases(pb::ListStatsReleasesRequest {
            parent: parent.into(),
            period: period.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .releases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_never_spend_more_than_the_yearly_cap() {
    let mut fed = Federation::start(&["lund"]).await;
    let mut lund = fed.client(0).await;
    let noise = |cap: i32| pb::DisclosurePolicy {
        mode: "noise".into(),
        k: 5,
        epsilon_milli: 500,
        year_cap_milli: cap,
        ..Default::default()
    };
    set_policy(&fed, noise(2000)).await;
    // One trial per year: Q1–Q3 spend 1.5 of 2.0; then Q4 and a Q1 correction, each fine on
    // its own, are published at the same moment. Exactly one may go through.
    for year in 2021..=2025 {
        for q in 1..=4 {
            let quarter = format!("{year}-Q{q}");
            record(
                &mut lund,
                support(
                    &quarter,
                    "female",
                    "25-34",
                    "sexual",
                    "police",
                    &format!("{quarter}-a"),
                ),
            )
            .await;
            if q < 4 {
                preview(&mut lund, &quarter).await.unwrap();
                publish(&mut lund, &quarter).await.unwrap();
            }
        }
        let (q4, q1) = (format!("{year}-Q4"), format!("{year}-Q1"));
        assert_eq!(
            preview(&mut lund, &q4).await.unwrap().year_spent_milli,
            1500
        );
        let correction = preview(&mut lund, &q1).await.unwrap();
        assert_eq!(correction.number, 2);
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let racers: Vec<_> = [q4.clone(), q1.clone()]
            .into_iter()
            .map(|quarter| {
                let (mut client, barrier) = (lund.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    publish(&mut client, &quarter).await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for racer in racers {
            outcomes.push(racer.await.unwrap());
        }
        let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(
            accepted, 1,
            "{year}: exactly one of two publishers over the cap: {outcomes:?}"
        );
        for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
            assert!(
                matches!(
                    refused.code(),
                    Code::ResourceExhausted | Code::FailedPrecondition
                ),
                "{refused:?}"
            );
            assert!(
                refused.message().contains("preview again")
                    || refused.message().contains("yearly cap"),
                "{refused:?}"
            );
        }
        let of_year = releases_of(&mut lund, "cities/lund", &year.to_string()).await;
        let spent: i32 = of_year.iter().map(|r| r.epsilon_milli).sum();
        assert_eq!((of_year.len(), spent), (4, 2000), "{year}");
        // The loser cannot get through on a second try either.
        let loser = if outcomes[0].is_ok() { &q1 } else { &q4 };
        let (code, message) = code_of(preview(&mut lund, loser).await);
        assert_eq!(code, Code::ResourceExhausted, "{message}");
    }

    // The cap raised mid-year: 2025 stays spent under the cap it was spent under; the new
    // cap holds from the next year on.
    set_policy(&fed, noise(4000)).await;
    record(
        &mut lund,
        support(
            "2025-Q2",
            "male",
            "35-44",
            "begging",
            "police",
            "2025-Q2-late",
        ),
    )
    .await;
    let (code, message) = code_of(preview(&mut lund, "2025-Q2").await);
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(
        message.contains("the yearly cap for 2025 is 2.000"),
        "{message}"
    );
    record(
        &mut lund,
        support("2026-Q1", "male", "35-44", "begging", "police", "2026-Q1-a"),
    )
    .await;
    let fresh = preview(&mut lund, "2026-Q1").await.unwrap();
    assert_eq!((fresh.year_spent_milli, fresh.year_cap_milli), (0, 4000));
    publish(&mut lund, "2026-Q1").await.unwrap();
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quarter_has_one_spelling_and_years_one_range_everywhere() {
    let mut fed = Federation::start(&["lund"]).await;
    let mut lund = fed.client(0).await;
    let mut hub = fed.hub_client().await;
    record(
        &mut lund,
        support(
            "2025-Q4",
            "female",
            "25-34",
            "sexual",
            "police",
            "same-person",
        ),
    )
    .await;
    let spellings = [
        "+2025-Q4",
        "02025-Q4",
        "2025-q4",
        "2025-Q04",
        "2025-Q+4",
        " 2025-Q4",
        "2025-Q4 ",
        "２０２５-Q4",
        "2025-Ｑ4",
        "2025\u{200b}-Q4",
        "-2025-Q4",
        "1999-Q4",
        "2101-Q1",
        "2025-Q4\n",
    ];
    for spelling in spellings {
        let (code, message) = code_of(
            lund.stats
                .create_support_record(pb::CreateSupportRecordRequest {
                    record: Some(support(
                        spelling,
                        "female",
                        "25-34",
                        "sexual",
                        "police",
                        "same-person",
                    )),
                })
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "{spelling:?}: {message}");
        assert!(
            message.contains("field `quarter`") && message.contains("YYYY-Qn"),
            "{message}"
        );
        let (code, _) = code_of(
            lund.stats
                .create_activity_record(pb::CreateActivityRecordRequest {
                    record: Some(pb::ActivityRecord {
                        quarter: spelling.into(),
                        kind: "trainings_held".into(),
                        count: 1,
                        ..Default::default()
                    }),
                })
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "activity {spelling:?}");
        for result in [
            preview(&mut lund, spelling).await.map(|_| ()),
            publish(&mut lund, spelling).await.map(|_| ()),
            lund.stats
                .list_support_records(pb::ListStatsRecordsRequest {
                    quarter: spelling.into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            lund.stats
                .list_activity_records(pb::ListStatsRecordsRequest {
                    quarter: spelling.into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ] {
            let (code, message) = code_of(result);
            assert_eq!(code, Code::InvalidArgument, "{spelling:?}: {message}");
            assert!(message.contains("field `quarter`"), "{message}");
        }
    }
    // The person is counted once, under the one spelling.
    let records = lund
        .stats
        .list_support_records(pb::ListStatsRecordsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(records.len(), 1);
    for period in ["+2025", "02025", "2025-q4", "25", "1999"] {
        let (code, message) = code_of(
            lund.stats
                .list_stats_releases(pb::ListStatsReleasesRequest {
                    parent: "cities/-".into(),
                    period: period.into(),
                })
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "{period:?}: {message}");
        assert!(message.contains("field `period`"), "{message}");
    }
    // National queries and the CSV export refuse the same years, with the same message.
    for year in [-1, 0, 1999, 2101, i32::MAX] {
        let request = pb::GetNationalStatsRequest { year };
        let (code, message) = code_of(hub.stats.get_national_stats(request).await);
        assert_eq!(code, Code::InvalidArgument, "{year}");
        let (csv_code, csv_message) = code_of(hub.stats.export_national_stats_csv(request).await);
        assert_eq!(
            (csv_code, csv_message.as_str()),
            (code, message.as_str()),
            "{year}"
        );
        assert!(message.contains("field `year`"), "{message}");
    }
    assert!(hub
        .stats
        .export_national_stats_csv(pb::GetNationalStatsRequest { year: 2025 })
        .await
        .is_ok());
    fed.stop_all().await;
}

fn as_earlier(release: &pb::StatsRelease) -> sfs_node::domain::stats::disclosure::Earlier {
    use sfs_node::domain::stats::disclosure::{CellStatus, Earlier, ProtectedCell};
    use sfs_node::domain::stats::CellPos;
    let cells: Vec<ProtectedCell> = release
        .cells
        .iter()
        .map(|c| ProtectedCell {
            pos: CellPos {
                table: c.table.clone(),
                row: c.row.clone(),
                col: c.col.clone(),
            },
            value: c.value,
            status: if c.value.is_some() {
                CellStatus::Exact
            } else {
                CellStatus::Suppressed
            },
            sd: 0.0,
            reason: None,
        })
        .collect();
    Earlier::from_cells(&cells, release.k as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrections_reveal_nothing_their_quarter_hid() {
    use sfs_node::domain::stats::disclosure::{findings, Layout};
    let mut fed = Federation::start(&["lund", "malmo"]).await;
    let mut lund = fed.client(0).await;
    let malmo = fed.client(1).await;
    // Each case: a quarter of 25 people, then a correction adding one person (to a new or
    // an existing cell) or removing one.
    let cases: [(&str, Option<pb::SupportRecord>, bool); 3] = [
        (
            "2024-Q1",
            Some(support(
                "2024-Q1",
                "male",
                "18-24",
                "forced_labour",
                "business",
                "added",
            )),
            false,
        ),
        (
            "2024-Q2",
            Some(support(
                "2024-Q2", "female", "25-34", "sexual", "police", "added",
            )),
            false,
        ),
        ("2024-Q3", None, true),
    ];
    let (mut published, mut refused) = (0, 0);
    for (quarter, added, remove) in cases {
        let mut names = Vec::new();
        for i in 0..25 {
            let (sex, age, exploitation, referral) = match i % 5 {
                0 | 1 => ("female", "25-34", "sexual", "police"),
                2 => ("female", "18-24", "sexual", "civil_society"),
                3 => ("male", "35-44", "forced_labour", "social_services"),
                _ => (
                    ["male", "female", "other_or_unknown"][i % 3],
                    "12-17",
                    ["begging", "forced_criminality"][i % 2],
                    "self_or_other",
                ),
            };
            let created = lund
                .stats
                .create_support_record(pb::CreateSupportRecordRequest {
                    record: Some(support(
                        quarter,
                        sex,
                        age,
                        exploitation,
                        referral,
                        &format!("{quarter}-{i}"),
                    )),
                })
                .await
                .unwrap()
                .into_inner();
            names.push(created.name);
        }
        preview(&mut lund, quarter).await.unwrap();
        let first = publish(&mut lund, quarter).await.unwrap();
        if let Some(added) = added {
            record(&mut lund, added).await;
        }
        if remove {
            // Remove one of the small group (a hidden cell of the first release).
            lund.stats
                .delete_support_record(pb::DeleteRequest {
                    name: names[4].clone(),
                })
                .await
                .unwrap();
        }
        match preview(&mut lund, quarter).await {
            Ok(correction) => {
                assert_eq!(correction.number, 2);
                assert!(correction
                    .cells
                    .iter()
                    .all(|c| c.value.is_none_or(|v| v == 0 || v >= 5)));
                publish(&mut lund, quarter).await.unwrap();
                // What another city holds: both releases, as published.
                let both = eventually("Malmö has both releases", || {
                    let mut malmo = malmo.clone();
                    async move {
                        let all = releases_of(&mut malmo, "cities/lund", quarter).await;
                        (all.len() == 2).then_some(all)
                    }
                })
                .await;
                assert_eq!(comparable(&both[0]), comparable(&first));
                let alone = findings(&Layout::standard(), &[as_earlier(&both[0])]);
                let together = findings(
                    &Layout::standard(),
                    &[as_earlier(&both[0]), as_earlier(&both[1])],
                );
                assert!(
                    together.is_subset(&alone),
                    "{quarter}: read together the releases give away {:?}",
                    together.difference(&alone).collect::<Vec<_>>()
                );
                published += 1;
            }
            Err(status) => {
                eprintln!("{quarter}: {}", status.message());
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(
                    status.message().contains("stays the published figure"),
                    "a plain explanation that says what to do: {}",
                    status.message()
                );
                refused += 1;
            }
        }
    }
    eprintln!("corrections published {published}, refused {refused}");
    assert!(published >= 1, "some correction can be published");
    fed.stop_all().await;
}
