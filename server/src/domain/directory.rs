//! The member cities, `national/directory`, owned by the hub. Collection `cities`, keyed by the
//! city's id (the name in its certificate).

use automerge::transaction::{Transactable, Transaction};
use automerge::{ObjId, ReadDoc};
use sfs_proto::v1 as pb;
use sfs_sync::ShareableDocId;

use crate::domain::docmodel as dm;
use crate::domain::model::{check_len, doc_error, ModelError};

/// The directory document.
pub fn directory_doc() -> ShareableDocId {
    ShareableDocId::parse("national/directory").expect("national/directory is a document id")
}

/// Checks and writes a city's editable fields.
pub fn write(tx: &mut Transaction<'_>, obj: &ObjId, city: &pb::City) -> Result<(), ModelError> {
    check_len("display_name", &city.display_name, 1, 200)?;
    check_len("county", &city.county, 1, 100)?;
    tx.put(obj, "display_name", city.display_name.trim())
        .map_err(doc_error)?;
    tx.put(obj, "county", city.county.trim())
        .map_err(doc_error)?;
    Ok(())
}

/// Reads a city as stored. `last_seen_ms` and `handbook_release` are read for documents written
/// before presence moved to the hub's memory; the API fills both from the live links.
pub fn read<R: ReadDoc>(doc: &R, id: &str, obj: &ObjId) -> pb::City {
    pb::City {
        name: format!("cities/{id}"),
        display_name: dm::get_str(doc, obj, "display_name"),
        county: dm::get_str(doc, obj, "county"),
        joined_date: dm::get_str(doc, obj, "joined_date"),
        last_seen_ms: dm::get_i64(doc, obj, "last_seen_ms"),
        handbook_release: dm::get_str(doc, obj, "handbook_release"),
        connected: false,
        running_release: String::new(),
        running_release_number: 0,
        certificate_expire_time_ms: 0,
        revoked: false,
        lessons_generation: 0,
        linked_via: String::new(),
    }
}
