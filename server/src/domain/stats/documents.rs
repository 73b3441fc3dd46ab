//! How statistics live in documents.
//!
//! - `local/stats-records` (never leaves the city): collections `support` and `activity` of raw
//!   records, and `drafts` (one previewed release per quarter, kept until published or stale).
//! - `shared/stats/{city}`: collection `releases`, each a published release as JSON; a release
//!   is written once and never changed.
//! - `national/policy`: the disclosure policy, owned by the hub.
//! - `national/stats`: collection `years`, the hub's national figures per year as JSON.

use automerge::transaction::{Transactable, Transaction};
use automerge::{ObjId, ReadDoc, ROOT};
use sfs_sync::{DocId, ShareableDocId};

use super::disclosure::Policy;
use super::national::{NationalYear, PublishedRelease};
use super::{ActivityRecord, SupportRecord};
use crate::domain::docmodel as dm;

/// The raw records document.
pub fn records_doc() -> DocId {
    DocId::local("stats-records").expect("local/stats-records is a document id")
}

/// A city's published statistics.
pub fn city_stats_doc(city: &str) -> Option<ShareableDocId> {
    ShareableDocId::parse(&format!("shared/stats/{city}")).ok()
}

/// The national disclosure policy document.
pub fn policy_doc() -> ShareableDocId {
    ShareableDocId::parse("national/policy").expect("national/policy is a document id")
}

/// The national figures document.
pub fn national_doc() -> ShareableDocId {
    ShareableDocId::parse("national/stats").expect("national/stats is a document id")
}

/// A county's published figures (`county/<id>/stats`, written by its county hub): the sums of
/// its cities' published releases, in the national figures' form.
pub fn county_doc(county: &str) -> Option<ShareableDocId> {
    ShareableDocId::parse(&format!("county/{county}/stats")).ok()
}

/// The figures document a node of `me`'s role computes and serves: `national/stats` at the
/// national hub, its county's at a county hub; a city computes none.
pub fn figures_doc(me: &sfs_sync::NodeId) -> Option<ShareableDocId> {
    match me.role() {
        sfs_sync::Role::Hub => Some(national_doc()),
        sfs_sync::Role::County => county_doc(me.name()),
        sfs_sync::Role::City => None,
    }
}

/// Writes a support record.
pub fn write_support(
    tx: &mut Transaction<'_>,
    id: &str,
    r: &SupportRecord,
) -> Result<(), automerge::AutomergeError> {
    let obj = dm::new_record(tx, "support", id)?;
    for (key, value) in [
        ("quarter", &r.quarter),
        ("sex", &r.sex),
        ("age_band", &r.age_band),
        ("citizenship", &r.citizenship),
        ("exploitation", &r.exploitation),
        ("referral_source", &r.referral_source),
        ("person_ref", &r.person_ref),
    ] {
        tx.put(&obj, key, value.trim())?;
    }
    Ok(())
}

fn read_support_at<R: ReadDoc>(doc: &R, obj: &ObjId) -> SupportRecord {
    let s = |k| dm::get_str(doc, obj, k);
    SupportRecord {
        quarter: s("quarter"),
        sex: s("sex"),
        age_band: s("age_band"),
        citizenship: s("citizenship"),
        exploitation: s("exploitation"),
        referral_source: s("referral_source"),
        person_ref: s("person_ref"),
    }
}

/// Every support record (of one quarter, if given), by id.
pub fn support_records<R: ReadDoc>(doc: &R, quarter: Option<&str>) -> Vec<(String, SupportRecord)> {
    let mut all: Vec<(String, SupportRecord)> = dm::records(doc, "support")
        .into_iter()
        .map(|(id, obj)| (id, read_support_at(doc, &obj)))
        .filter(|(_, r)| quarter.is_none_or(|q| r.quarter == q))
        .collect();
    all.sort_by(|a, b| (&a.1.quarter, &a.0).cmp(&(&b.1.quarter, &b.0)));
    all
}

/// Writes an activity record.
pub fn write_activity(
    tx: &mut Transaction<'_>,
    id: &str,
    r: &ActivityRecord,
) -> Result<(), automerge::AutomergeError> {
    let obj = dm::new_record(tx, "activity", id)?;
    tx.put(&obj, "quarter", r.quarter.as_str())?;
    tx.put(&obj, "kind", r.kind.as_str())?;
    tx.put(&obj, "count", r.count)?;
    Ok(())
}

/// Every activity record (of one quarter, if given), by id.
pub fn activity_records<R: ReadDoc>(
    doc: &R,
    quarter: Option<&str>,
) -> Vec<(String, ActivityRecord)> {
    let mut all: Vec<(String, ActivityRecord)> = dm::records(doc, "activity")
        .into_iter()
        .map(|(id, obj)| {
            let record = ActivityRecord {
                quarter: dm::get_str(doc, &obj, "quarter"),
                kind: dm::get_str(doc, &obj, "kind"),
                count: dm::get_i64(doc, &obj, "count"),
            };
            (id, record)
        })
        .filter(|(_, r)| quarter.is_none_or(|q| r.quarter == q))
        .collect();
    all.sort_by(|a, b| (&a.1.quarter, &a.0).cmp(&(&b.1.quarter, &b.0)));
    all
}

/// A previewed release with the digest of what it was computed from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Draft {
    pub release: PublishedRelease,
    pub digest: String,
}

/// Stores the draft of a quarter.
pub fn write_draft(
    tx: &mut Transaction<'_>,
    draft: &Draft,
) -> Result<(), automerge::AutomergeError> {
    let obj = dm::new_record(tx, "drafts", &draft.release.quarter)?;
    tx.put(
        &obj,
        "json",
        serde_json::to_string(draft).expect("draft serialises"),
    )?;
    Ok(())
}

/// The draft of a quarter, if any.
pub fn read_draft<R: ReadDoc>(doc: &R, quarter: &str) -> Option<Draft> {
    let obj = dm::record(doc, "drafts", quarter)?;
    serde_json::from_str(&dm::get_str(doc, &obj, "json")).ok()
}

/// Publishes a release into the city's statistics document.
pub fn write_release(
    tx: &mut Transaction<'_>,
    release: &PublishedRelease,
) -> Result<(), automerge::AutomergeError> {
    let obj = dm::new_record(tx, "releases", &release.id)?;
    tx.put(
        &obj,
        "json",
        serde_json::to_string(release).expect("release serialises"),
    )?;
    Ok(())
}

/// Every release in a city's statistics document.
pub fn releases<R: ReadDoc>(doc: &R) -> Vec<PublishedRelease> {
    let mut all: Vec<PublishedRelease> = dm::records(doc, "releases")
        .into_iter()
        .filter_map(|(_, obj)| serde_json::from_str(&dm::get_str(doc, &obj, "json")).ok())
        .collect();
    all.sort_by(|a, b| (&a.quarter, a.number).cmp(&(&b.quarter, b.number)));
    all
}

/// The policy in the policy document, or the default.
pub fn read_policy<R: ReadDoc>(doc: Option<&R>) -> Policy {
    let Some(doc) = doc else {
        return Policy::default();
    };
    match doc.get(ROOT, "mode") {
        Ok(Some(_)) => Policy {
            mode: dm::get_str(doc, &ROOT, "mode"),
            k: dm::get_i64(doc, &ROOT, "k"),
            epsilon_milli: dm::get_i64(doc, &ROOT, "epsilon_milli"),
            year_cap_milli: dm::get_i64(doc, &ROOT, "year_cap_milli"),
        },
        _ => Policy::default(),
    }
}

/// Writes the policy.
pub fn write_policy(
    tx: &mut Transaction<'_>,
    policy: &Policy,
) -> Result<(), automerge::AutomergeError> {
    tx.put(ROOT, "mode", policy.mode.as_str())?;
    tx.put(ROOT, "k", policy.k)?;
    tx.put(ROOT, "epsilon_milli", policy.epsilon_milli)?;
    tx.put(ROOT, "year_cap_milli", policy.year_cap_milli)?;
    Ok(())
}

/// The national figures of a year, if the hub has computed them.
pub fn read_national<R: ReadDoc>(doc: &R, year: i32) -> Option<NationalYear> {
    let obj = dm::record(doc, "years", &year.to_string())?;
    serde_json::from_str(&dm::get_str(doc, &obj, "json")).ok()
}

/// Writes the national figures of a year, if they differ from what is stored.
pub fn write_national(
    tx: &mut Transaction<'_>,
    national: &NationalYear,
) -> Result<(), automerge::AutomergeError> {
    if read_national(tx, national.year).as_ref() == Some(national) {
        return Ok(());
    }
    let obj = dm::new_record(tx, "years", &national.year.to_string())?;
    tx.put(
        &obj,
        "json",
        serde_json::to_string(national).expect("figures serialise"),
    )?;
    Ok(())
}
