//! The link state of a county hub's cities, `county/{county}/links`, owned by that county hub
//! (only it may write it; the owner rule holds at every hop) and shared with the national hub
//! and its standby. A city under a county hub links to the county hub, not to the national hub,
//! so only the county hub knows whether it is linked; it reports that here, and the national
//! hub's directory combines the reports with its own links ([`presence`]).
//!
//! Collection `cities`, keyed by city id, each record `linked` (bool) and `last_seen_ms` (when
//! the city's link last opened, while linked, or ended; rounded down to the minute, 0 if
//! never). Nothing else: no local data, no names, no counts. The county hub rewrites a record
//! only when it changes — a link opening or ending — never per keepalive (the minute grain
//! keeps a reconnect within the minute from changing the time).

use std::collections::BTreeMap;

use automerge::transaction::{Transactable, Transaction};
use automerge::ReadDoc;
use sfs_sync::{NodeId, ShareableDocId};

use crate::domain::docmodel as dm;

/// The grain of `last_seen_ms` in the document.
pub const GRAIN_MS: i64 = 60_000;

/// The link-state document of the county hub `county`.
pub fn links_doc(county: &str) -> Option<ShareableDocId> {
    ShareableDocId::parse(&format!("county/{county}/links")).ok()
}

/// The county whose link-state document `doc` is, if it is one.
pub fn county_of(doc: &ShareableDocId) -> Option<&str> {
    doc.as_str().strip_prefix("county/")?.strip_suffix("/links")
}

/// A city's link to its county hub, as the county hub reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CityLink {
    pub linked: bool,
    /// Milliseconds since the Unix epoch, a multiple of [`GRAIN_MS`]; 0 if never seen.
    pub last_seen_ms: i64,
}

/// Rounds a time down to [`GRAIN_MS`].
pub fn coarse(ms: i64) -> i64 {
    ms.max(0) / GRAIN_MS * GRAIN_MS
}

/// Every city's link as the document reports it. Records whose key is not a city id are
/// skipped (a reader never trusts the shape of another node's document).
pub fn read<R: ReadDoc>(doc: &R) -> BTreeMap<String, CityLink> {
    dm::records(doc, "cities")
        .into_iter()
        .filter(|(id, _)| NodeId::city(id).is_ok())
        .map(|(id, obj)| {
            let link = CityLink {
                linked: dm::get_bool(doc, &obj, "linked"),
                last_seen_ms: dm::get_i64(doc, &obj, "last_seen_ms").max(0),
            };
            (id, link)
        })
        .collect()
}

/// Writes `report` over what the document holds: records that differ are rewritten, records of
/// cities no longer reported are deleted, the rest are left alone. Returns whether anything
/// changed (a transaction that changed nothing adds no change).
pub fn write(
    tx: &mut Transaction<'_>,
    report: &BTreeMap<String, CityLink>,
) -> Result<bool, automerge::AutomergeError> {
    let held = read(tx);
    let mut changed = false;
    for (city, link) in report {
        if held.get(city) == Some(link) {
            continue;
        }
        let obj = match dm::record(tx, "cities", city) {
            Some(obj) => obj,
            None => dm::new_record(tx, "cities", city)?,
        };
        tx.put(&obj, "linked", link.linked)?;
        tx.put(&obj, "last_seen_ms", link.last_seen_ms)?;
        changed = true;
    }
    for city in held.keys().filter(|c| !report.contains_key(*c)) {
        changed |= dm::delete_record(tx, "cities", city)?;
    }
    Ok(changed)
}

/// A link as a node sees it on its own links: connected now, and when last seen (ms since the
/// Unix epoch, 0 if never).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    pub connected: bool,
    pub last_seen_ms: i64,
}

/// A city's presence as the national hub shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Presence {
    pub connected: bool,
    pub last_seen_ms: i64,
    /// The county hub the city is linked through (or was last seen at), empty when it links
    /// to this hub directly or no county hub reports it.
    pub via: String,
}

/// Combines what the national hub sees of a city on its own links (`direct`) with what county
/// hubs report (`reports`: county id and the city's link there) and what it sees of those
/// county hubs (`county_seen`). A direct link wins. A city a county hub reports linked counts as
/// linked while that county hub is linked to this hub (last seen: now), and as last seen when
/// the county hub was otherwise; a city it reports not linked, as last seen when its link there
/// ended. Of several reports, a linked one counts before others, then the latest.
pub fn presence(
    direct: Seen,
    reports: &[(String, CityLink)],
    county_seen: impl Fn(&str) -> Seen,
    now_ms: i64,
) -> Presence {
    if direct.connected {
        return Presence {
            connected: true,
            last_seen_ms: now_ms,
            via: String::new(),
        };
    }
    let best = reports
        .iter()
        .map(|(county, link)| {
            let hub = county_seen(county);
            let (connected, seen) = match (link.linked, hub.connected) {
                (true, true) => (true, now_ms),
                (true, false) => (false, hub.last_seen_ms.min(now_ms)),
                // Never later than now, whatever the report says.
                (false, _) => (false, link.last_seen_ms.min(now_ms)),
            };
            (connected, seen, county)
        })
        .max_by_key(|(connected, seen, _)| (*connected, *seen));
    match best {
        Some((connected, seen, county)) if connected || seen >= direct.last_seen_ms => Presence {
            connected,
            last_seen_ms: seen,
            via: county.clone(),
        },
        _ => Presence {
            connected: false,
            last_seen_ms: direct.last_seen_ms,
            via: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(linked: bool, last_seen_ms: i64) -> CityLink {
        CityLink {
            linked,
            last_seen_ms,
        }
    }

    #[test]
    fn the_document_holds_only_what_changed_and_reads_back() {
        let mut report = BTreeMap::from([
            ("malmo".to_string(), link(true, coarse(125_000))),
            ("lund".to_string(), link(false, 0)),
        ]);
        let mut am = automerge::Automerge::new();
        let mut tx = am.transaction();
        assert!(write(&mut tx, &report).unwrap());
        tx.commit();
        assert_eq!(read(&am), report);
        assert_eq!(report["malmo"].last_seen_ms, 120_000);
        // The same report again changes nothing.
        let mut tx = am.transaction();
        assert!(!write(&mut tx, &report).unwrap());
        tx.rollback();
        // Lund gone from the county, Malmö's link ended.
        report.remove("lund");
        report.insert("malmo".into(), link(false, 180_000));
        let mut tx = am.transaction();
        assert!(write(&mut tx, &report).unwrap());
        tx.commit();
        assert_eq!(read(&am), report);
        // A key that is not a city id is not read.
        let mut doc = automerge::AutoCommit::new();
        let cities = doc
            .put_object(automerge::ROOT, "cities", automerge::ObjType::Map)
            .unwrap();
        doc.put_object(&cities, "Not a city!", automerge::ObjType::Map)
            .unwrap();
        assert!(read(&doc).is_empty());
    }

    #[test]
    fn a_city_behind_a_linked_county_hub_is_linked_through_it() {
        let now = 1_000_000;
        let skane_up = |c: &str| Seen {
            connected: c == "skane",
            last_seen_ms: 900_000,
        };
        let never = Seen::default();
        let reports = [("skane".to_string(), link(true, 600_000))];
        let seen = presence(never, &reports, skane_up, now);
        assert_eq!(
            seen,
            Presence {
                connected: true,
                last_seen_ms: now,
                via: "skane".into()
            }
        );
        // The county hub is away: last seen when it was.
        let skane_down = |_: &str| Seen {
            connected: false,
            last_seen_ms: 900_000,
        };
        let seen = presence(never, &reports, skane_down, now);
        assert_eq!((seen.connected, seen.last_seen_ms), (false, 900_000));
        assert_eq!(seen.via, "skane");
        // The city's link there ended: last seen then.
        let reports = [("skane".to_string(), link(false, 840_000))];
        let seen = presence(never, &reports, skane_up, now);
        assert_eq!((seen.connected, seen.last_seen_ms), (false, 840_000));
        // Linked directly: the county's report does not count.
        let direct = Seen {
            connected: true,
            last_seen_ms: 0,
        };
        let seen = presence(direct, &reports, skane_up, now);
        assert_eq!((seen.connected, seen.via.as_str()), (true, ""));
        // Seen directly more recently than the county reports: the direct time.
        let earlier = Seen {
            connected: false,
            last_seen_ms: 990_000,
        };
        let seen = presence(earlier, &reports, skane_up, now);
        assert_eq!((seen.last_seen_ms, seen.via.as_str()), (990_000, ""));
        // A report of a time to come counts as now.
        let reports = [("skane".to_string(), link(false, 5_000_000))];
        let seen = presence(never, &reports, skane_up, now);
        assert_eq!(seen.last_seen_ms, now);
        // No report, never seen.
        assert_eq!(presence(never, &[], skane_up, now), Presence::default());
    }
}
