//! The node's background workers: work that runs on its own schedule, not for a request.
//! Each runs until the node's shutdown signal and is joined by `RunningNode::stop`.
//!
//! - [`erase_expired_signals`] (city): erases closed signals past their retention period.
//! - [`aggregate_national_stats`] (hub): recomputes `national/stats` when a city publishes.
//! - [`publish_county_links`] (county hub): reports its cities' link state in
//!   `county/<id>/links` when a link opens or ends.
//! - The running handbook release is tracked by [`crate::federation::releases::track`].

use std::collections::BTreeMap;

use tonic::Status;

use crate::api::{self, ApiState};
use crate::domain::model::now_ms;
use crate::domain::signals::{self as sig, signals_doc};
use crate::domain::stats;
use crate::domain::stats::documents as docs;
use crate::domain::stats::national::{self, PublishedRelease};

/// Erases closed signals once their retention period is over, checking a few times per period
/// (at least every 10 minutes), until `shutdown`. Each erasure is written to the access log
/// with the actor `retention`.
pub async fn erase_expired_signals(
    state: ApiState,
    retention: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let every = (retention / 4).clamp(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(600),
    );
    let retention_ms = retention.as_millis().min(i64::MAX as u128) as i64;
    loop {
        let local = state.local.clone();
        let log = state.access_log.clone();
        let swept = api::blocking(move || -> Result<usize, Status> {
            let now = now_ms();
            let due = local.read(&signals_doc(), |doc| sig::expired(doc, now, retention_ms));
            if due.is_empty() {
                return Ok(0);
            }
            // Decided again under the document's lock, so a signal reopened a moment ago stays.
            local.erase(&signals_doc(), |tx| {
                let ids = sig::expired(tx, now, retention_ms);
                api::log_erasure(
                    &log,
                    "retention",
                    ids.iter().map(|id| format!("signals/{id}")),
                )?;
                for id in &ids {
                    api::delete_or_not_found(tx, "signals", id, &format!("signals/{id}"))?;
                }
                Ok(ids.len())
            })
        })
        .await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(count)) => tracing::info!(count, "erased closed signals past their retention"),
            Ok(Err(status)) | Err(status) => {
                tracing::warn!(error = %status.message(), "erasing expired signals failed; retrying")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// At the national hub: recomputes `national/stats` whenever a city's published statistics or
/// the directory change; at a county hub, likewise its county's figures (`county/<id>/stats`)
/// from the releases of the cities it serves only. Runs until the node shuts down.
pub async fn aggregate_national_stats(
    state: ApiState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Some(figures_doc) = docs::figures_doc(state.sync.me()) else {
        return;
    };
    // At a county hub, only its cities' releases count.
    let counted = state.county_cities.clone();
    let mut changes = state.sync.subscribe_changes();
    // The first round runs at once, for releases stored before the node started.
    let mut first = true;
    loop {
        let changed = if std::mem::take(&mut first) {
            Err(tokio::sync::broadcast::error::RecvError::Lagged(0))
        } else {
            tokio::select! {
                changed = changes.recv() => changed,
                _ = shutdown.changed() => return,
            }
        };
        let relevant = match &changed {
            Ok(doc) => {
                doc.as_str().starts_with("shared/stats/") || doc.as_str() == "national/directory"
            }
            // Missed some notifications: recompute to be safe.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if !relevant {
            continue;
        }
        let sync = state.sync.clone();
        let (counted, figures_doc) = (counted.clone(), figures_doc.clone());
        let result = api::blocking(move || {
            let (releases, counties) = sync.read(|engine| {
                let releases: Vec<PublishedRelease> = engine
                    .documents()
                    .filter(|(id, _)| {
                        id.as_str()
                            .strip_prefix("shared/stats/")
                            .is_some_and(|city| counted.as_ref().is_none_or(|c| c.contains(city)))
                    })
                    .flat_map(|(_, doc)| docs::releases(doc))
                    .collect();
                let counties: BTreeMap<String, String> = engine
                    .document(&crate::domain::directory::directory_doc())
                    .map(|doc| {
                        crate::domain::docmodel::records(doc, "cities")
                            .into_iter()
                            .map(|(id, obj)| {
                                (id, crate::domain::docmodel::get_str(doc, &obj, "county"))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (releases, counties)
            });
            let years: std::collections::BTreeSet<i32> = releases
                .iter()
                .filter_map(|r| stats::parse_quarter(&r.quarter).map(|(y, _)| y))
                .collect();
            let figures: Vec<national::NationalYear> = years
                .into_iter()
                .map(|y| national::combine(&releases, y, &counties))
                .collect();
            sync.edit(&figures_doc, |tx| {
                for year in &figures {
                    docs::write_national(tx, year)?;
                }
                Ok::<(), automerge::AutomergeError>(())
            })
        })
        .await;
        if let Ok(Err(err)) = result {
            tracing::warn!(error = %err, "recomputing the national statistics failed");
        }
    }
}

/// How often a county hub compares its cities' links with what it last reported. Only a
/// difference is written, so a stable county adds no change however long it runs.
pub const COUNTY_LINKS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// At a county hub: keeps `county/<id>/links` (the link state of each city it serves: linked,
/// and when last seen to the minute) in step with its links, for the national hub's directory.
/// Checks every [`COUNTY_LINKS_EVERY`] and writes one change when a city's link opened or ended
/// since (never per keepalive); runs until the node shuts down.
pub async fn publish_county_links(
    state: ApiState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use crate::domain::county_links::{self as cl, CityLink};
    let (Some(members), Some(doc)) = (
        state.county_cities.clone(),
        cl::links_doc(state.sync.me().name()),
    ) else {
        return;
    };
    loop {
        let peers = state.sync.peer_states();
        let held = state
            .sync
            .read(|engine| engine.document(&doc).map(cl::read))
            .unwrap_or_default();
        let report: BTreeMap<String, CityLink> = members
            .list()
            .into_iter()
            .map(|city| {
                let seen = peers
                    .iter()
                    .find(|(peer, _)| peer.role() == sfs_sync::Role::City && peer.name() == city)
                    .map(|(_, seen)| seen);
                let linked = seen.is_some_and(|s| s.state == "connected");
                let last_seen = seen
                    .and_then(|s| s.last_seen)
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| cl::coarse(d.as_millis() as i64));
                // A restarted county hub has not seen the city yet: it keeps the time reported.
                let before = held.get(&city).map_or(0, |l| l.last_seen_ms);
                let link = CityLink {
                    linked,
                    last_seen_ms: last_seen.max(before),
                };
                (city, link)
            })
            .collect();
        if report != held {
            let (sync, doc) = (state.sync.clone(), doc.clone());
            let written = api::blocking(move || sync.edit(&doc, |tx| cl::write(tx, &report))).await;
            if let Ok(Err(err)) = written {
                tracing::warn!(error = %err, "reporting the county's city links failed; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(COUNTY_LINKS_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}
