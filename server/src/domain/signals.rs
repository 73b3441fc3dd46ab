//! Signals and support contacts, `local/signals`: personal data that never leaves the city.
//!
//! Collection `signals`; each record holds the fields of the API's `Signal` message, the
//! description as Automerge text and follow-ups as a list of maps.

use automerge::transaction::{Transactable, Transaction};
use automerge::{ObjId, ReadDoc};
use sfs_proto::v1 as pb;
use sfs_sync::DocId;

use crate::domain::docmodel as dm;
use crate::domain::model::{check_date, check_len, doc_error, invalid, ModelError};
use crate::domain::register::read_follow_ups;

/// Kinds of signal.
pub const KINDS: &[&str] = &["signal", "support_contact"];
/// The states a signal goes through.
pub const STATUSES: &[&str] = &["new", "referred", "in_support", "closed"];

/// The signals document.
pub fn signals_doc() -> DocId {
    DocId::local("signals").expect("local/signals is a document id")
}

/// Checks the fields a signal carries by itself (references are checked against the register
/// by the caller).
pub fn check_signal(signal: &pb::Signal) -> Result<(), ModelError> {
    check_date("date", &signal.date, true)?;
    if !KINDS.contains(&signal.kind.as_str()) {
        return Err(invalid(
            "kind",
            format!("{:?} is not one of {}", signal.kind, KINDS.join(", ")),
        ));
    }
    check_len("description", &signal.description, 1, 5000)?;
    if !STATUSES.contains(&signal.status.as_str()) {
        return Err(invalid(
            "status",
            format!("{:?} is not one of {}", signal.status, STATUSES.join(", ")),
        ));
    }
    Ok(())
}

/// Writes a signal's fields.
pub fn write_signal(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    signal: &pb::Signal,
    now_ms: i64,
    created: bool,
) -> Result<(), ModelError> {
    tx.put(obj, "date", signal.date.as_str())
        .map_err(doc_error)?;
    tx.put(
        obj,
        "reporting_organisation",
        signal.reporting_organisation.as_str(),
    )
    .map_err(doc_error)?;
    tx.put(obj, "kind", signal.kind.as_str())
        .map_err(doc_error)?;
    let was_closed = !created && dm::get_str(tx, obj, "status") == "closed";
    if signal.status == "closed" {
        if !was_closed {
            tx.put(obj, "closed_ms", now_ms).map_err(doc_error)?;
        }
    } else if tx.get(obj, "closed_ms").map_err(doc_error)?.is_some() {
        tx.delete(obj, "closed_ms").map_err(doc_error)?;
    }
    dm::put_text(tx, obj, "description", &signal.description).map_err(doc_error)?;
    tx.put(obj, "status", signal.status.as_str())
        .map_err(doc_error)?;
    crate::domain::register::write_follow_ups(tx, obj, &signal.follow_ups)?;
    if created {
        tx.put(obj, "created_ms", now_ms).map_err(doc_error)?;
    }
    tx.put(obj, "updated_ms", now_ms).map_err(doc_error)?;
    Ok(())
}

/// Reads a signal.
pub fn read_signal<R: ReadDoc>(doc: &R, id: &str, obj: &ObjId) -> pb::Signal {
    pb::Signal {
        name: format!("signals/{id}"),
        date: dm::get_str(doc, obj, "date"),
        reporting_organisation: dm::get_str(doc, obj, "reporting_organisation"),
        kind: dm::get_str(doc, obj, "kind"),
        description: dm::get_str(doc, obj, "description"),
        status: dm::get_str(doc, obj, "status"),
        follow_ups: read_follow_ups(doc, obj),
        create_time_ms: dm::get_i64(doc, obj, "created_ms"),
        update_time_ms: dm::get_i64(doc, obj, "updated_ms"),
        close_time_ms: dm::get_i64(doc, obj, "closed_ms"),
    }
}

/// The closed signals whose retention period is over at `now_ms`: closed for at least
/// `retention_ms` (signals closed before the close time was recorded count from their last
/// update).
pub fn expired<R: ReadDoc>(doc: &R, now_ms: i64, retention_ms: i64) -> Vec<String> {
    dm::records(doc, "signals")
        .into_iter()
        .filter(|(_, obj)| {
            if dm::get_str(doc, obj, "status") != "closed" {
                return false;
            }
            let closed = match dm::get_i64(doc, obj, "closed_ms") {
                0 => dm::get_i64(doc, obj, "updated_ms"),
                at => at,
            };
            closed.saturating_add(retention_ms) <= now_ms
        })
        .map(|(id, _)| id)
        .collect()
}
