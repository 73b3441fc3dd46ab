//! The city's local network register, `local/network`: member organisations, groups,
//! contacts, meetings and the referral routine. Records are kept as the API's own messages
//! (collections `organisations`, `groups`, `contacts`, `meetings`; list `routine`).
//!
//! Local documents live in `storage::local::LocalReplicas`, which holds the only handle to the
//! local store. Nothing here is known to the sync engine, so no code path can put it on a
//! federation link.

use automerge::transaction::{Transactable, Transaction};
use automerge::{ActorId, Automerge, ObjId, ReadDoc};
use sfs_proto::v1 as pb;
use sfs_sync::DocId;

use crate::domain::docmodel::{self as dm};
use crate::domain::model::{check_date, check_len, doc_error, invalid, ModelError};

/// Sectors a member organisation can belong to.
pub const SECTORS: &[&str] = &[
    "municipality",
    "police",
    "region",
    "county_board",
    "civil_society",
    "business",
    "other",
];

/// A copy of `source`'s current state as a new document with one change and no history: what
/// was overwritten or deleted in `source` is not in it.
pub fn without_history(
    source: &Automerge,
    actor: ActorId,
) -> Result<Automerge, automerge::AutomergeError> {
    let mut fresh = Automerge::new().with_actor(actor);
    fresh
        .transact(|tx| copy_object(source, &automerge::ROOT, tx, &automerge::ROOT))
        .map_err(|failure| failure.error)?;
    Ok(fresh)
}

/// Where a value goes in its new parent.
enum Slot<'a> {
    Key(&'a str),
    Index(usize),
}

fn copy_value(
    source: &Automerge,
    value: automerge::Value<'_>,
    from: &ObjId,
    tx: &mut Transaction<'_>,
    parent: &ObjId,
    slot: Slot<'_>,
) -> Result<(), automerge::AutomergeError> {
    match value {
        automerge::Value::Scalar(scalar) => match slot {
            Slot::Key(key) => tx.put(parent, key, scalar.into_owned()),
            Slot::Index(i) => tx.insert(parent, i, scalar.into_owned()),
        },
        automerge::Value::Object(kind) => {
            let to = match slot {
                Slot::Key(key) => tx.put_object(parent, key, kind)?,
                Slot::Index(i) => tx.insert_object(parent, i, kind)?,
            };
            if kind == automerge::ObjType::Text {
                tx.splice_text(&to, 0, 0, &source.text(from)?)
            } else {
                copy_object(source, from, tx, &to)
            }
        }
    }
}

fn copy_object(
    source: &Automerge,
    from: &ObjId,
    tx: &mut Transaction<'_>,
    to: &ObjId,
) -> Result<(), automerge::AutomergeError> {
    match source.object_type(from)? {
        automerge::ObjType::List => {
            for i in 0..source.length(from) {
                if let Some((value, id)) = source.get(from, i)? {
                    copy_value(source, value, &id, tx, to, Slot::Index(i))?;
                }
            }
        }
        automerge::ObjType::Text => {}
        automerge::ObjType::Map | automerge::ObjType::Table => {
            for key in source.keys(from) {
                if let Some((value, id)) = source.get(from, &key)? {
                    copy_value(source, value, &id, tx, to, Slot::Key(&key))?;
                }
            }
        }
    }
    Ok(())
}

/// The register document.
pub fn network() -> DocId {
    DocId::local("network").expect("local/network is a document id")
}

/// The id of `organisations/{id}` if that organisation exists in `doc`.
pub fn existing_organisation<R: ReadDoc>(
    doc: &R,
    field: &str,
    name: &str,
) -> Result<String, ModelError> {
    let id = crate::domain::model::parse_name(name, "organisations", field)?;
    if dm::record(doc, "organisations", &id).is_none() {
        return Err(invalid(field, format!("{name} does not exist")));
    }
    Ok(id)
}

fn existing_owner<R: ReadDoc>(doc: &R, field: &str, name: &str) -> Result<(), ModelError> {
    let (collection, id) = name
        .split_once('/')
        .ok_or_else(|| invalid(field, "must be organisations/{id} or contacts/{id}"))?;
    if !matches!(collection, "organisations" | "contacts")
        || dm::record(doc, collection, id).is_none()
    {
        return Err(invalid(
            field,
            format!("{name} is not an existing organisation or contact"),
        ));
    }
    Ok(())
}

// Organisations.

/// Checks an organisation's fields.
pub fn check_organisation(org: &pb::Organisation) -> Result<(), ModelError> {
    check_len("display_name", &org.display_name, 1, 200)?;
    if !SECTORS.contains(&org.sector.as_str()) {
        return Err(invalid(
            "sector",
            format!("{:?} is not one of {}", org.sector, SECTORS.join(", ")),
        ));
    }
    Ok(())
}

/// Writes an organisation's fields into its record.
pub fn write_organisation(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    org: &pb::Organisation,
) -> Result<(), ModelError> {
    tx.put(obj, "display_name", org.display_name.trim())
        .map_err(doc_error)?;
    tx.put(obj, "sector", org.sector.as_str())
        .map_err(doc_error)?;
    Ok(())
}

/// Reads an organisation.
pub fn read_organisation<R: ReadDoc>(doc: &R, id: &str, obj: &ObjId) -> pb::Organisation {
    pb::Organisation {
        name: format!("organisations/{id}"),
        display_name: dm::get_str(doc, obj, "display_name"),
        sector: dm::get_str(doc, obj, "sector"),
    }
}

/// Whether anything in the register refers to an organisation.
pub fn organisation_in_use<R: ReadDoc>(doc: &R, name: &str) -> Option<String> {
    for (id, obj) in dm::records(doc, "contacts") {
        if dm::get_str(doc, &obj, "organisation") == name {
            return Some(format!("contacts/{id}"));
        }
    }
    for (id, obj) in dm::records(doc, "groups") {
        if dm::get_str_list(doc, &obj, "organisations")
            .iter()
            .any(|o| o == name)
        {
            return Some(format!("groups/{id}"));
        }
    }
    if read_routine(doc)
        .steps
        .iter()
        .any(|s| s.organisation == name)
    {
        return Some("routine".to_string());
    }
    None
}

// Groups.

/// Checks a group's fields against the register.
pub fn check_group<R: ReadDoc>(doc: &R, group: &pb::Group) -> Result<(), ModelError> {
    check_len("display_name", &group.display_name, 1, 200)?;
    check_len("description", &group.description, 0, 2000)?;
    for org in &group.organisations {
        existing_organisation(doc, "organisations", org)?;
    }
    Ok(())
}

/// Writes a group's fields.
pub fn write_group(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    group: &pb::Group,
) -> Result<(), ModelError> {
    tx.put(obj, "display_name", group.display_name.trim())
        .map_err(doc_error)?;
    dm::put_text(tx, obj, "description", &group.description).map_err(doc_error)?;
    dm::put_str_list(tx, obj, "organisations", &group.organisations).map_err(doc_error)?;
    Ok(())
}

/// Reads a group.
pub fn read_group<R: ReadDoc>(doc: &R, id: &str, obj: &ObjId) -> pb::Group {
    pb::Group {
        name: format!("groups/{id}"),
        display_name: dm::get_str(doc, obj, "display_name"),
        description: dm::get_str(doc, obj, "description"),
        organisations: dm::get_str_list(doc, obj, "organisations"),
    }
}

// Contacts.

/// Checks a contact's fields against the register.
pub fn check_contact<R: ReadDoc>(doc: &R, contact: &pb::Contact) -> Result<(), ModelError> {
    check_len("full_name", &contact.full_name, 1, 200)?;
    check_len("role", &contact.role, 0, 200)?;
    check_len("phone", &contact.phone, 0, 50)?;
    check_len("email", &contact.email, 0, 200)?;
    if !contact.email.is_empty() && !contact.email.contains('@') {
        return Err(invalid("email", "is not an e-mail address"));
    }
    existing_organisation(doc, "organisation", &contact.organisation)?;
    Ok(())
}

/// Writes a contact's fields.
pub fn write_contact(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    contact: &pb::Contact,
) -> Result<(), ModelError> {
    for (key, value) in [
        ("full_name", &contact.full_name),
        ("role", &contact.role),
        ("organisation", &contact.organisation),
        ("phone", &contact.phone),
        ("email", &contact.email),
    ] {
        tx.put(obj, key, value.trim()).map_err(doc_error)?;
    }
    Ok(())
}

/// Reads a contact.
pub fn read_contact<R: ReadDoc>(doc: &R, id: &str, obj: &ObjId) -> pb::Contact {
    pb::Contact {
        name: format!("contacts/{id}"),
        full_name: dm::get_str(doc, obj, "full_name"),
        role: dm::get_str(doc, obj, "role"),
        organisation: dm::get_str(doc, obj, "organisation"),
        phone: dm::get_str(doc, obj, "phone"),
        email: dm::get_str(doc, obj, "email"),
    }
}

/// The full names of every contact person (for checks that keep them out of shared text).
pub fn contact_names<R: ReadDoc>(doc: &R) -> Vec<String> {
    dm::records(doc, "contacts")
        .into_iter()
        .map(|(_, obj)| dm::get_str(doc, &obj, "full_name"))
        .collect()
}

// Follow-ups (meetings and signals).

/// Checks follow-ups; owners must exist in the register `doc`.
pub fn check_follow_ups<R: ReadDoc>(
    doc: &R,
    follow_ups: &[pb::FollowUp],
) -> Result<(), ModelError> {
    if follow_ups.len() > 100 {
        return Err(invalid("follow_ups", "at most 100 follow-ups"));
    }
    for f in follow_ups {
        check_len("follow_ups.action", &f.action, 1, 500)?;
        if !f.owner.is_empty() {
            existing_owner(doc, "follow_ups.owner", &f.owner)?;
        }
        if !f.due_date.is_empty() {
            check_date("follow_ups.due_date", &f.due_date, false)?;
        }
    }
    Ok(())
}

/// Writes follow-ups as a list of maps.
pub fn write_follow_ups(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    follow_ups: &[pb::FollowUp],
) -> Result<(), ModelError> {
    let list = dm::put_list(tx, obj, "follow_ups").map_err(doc_error)?;
    for (i, f) in follow_ups.iter().enumerate() {
        let item = tx
            .insert_object(&list, i, automerge::ObjType::Map)
            .map_err(doc_error)?;
        tx.put(&item, "action", f.action.trim())
            .map_err(doc_error)?;
        tx.put(&item, "owner", f.owner.as_str())
            .map_err(doc_error)?;
        tx.put(&item, "due_date", f.due_date.as_str())
            .map_err(doc_error)?;
        tx.put(&item, "done", f.done).map_err(doc_error)?;
    }
    Ok(())
}

/// Reads follow-ups.
pub fn read_follow_ups<R: ReadDoc>(doc: &R, obj: &ObjId) -> Vec<pb::FollowUp> {
    dm::get_list(doc, obj, "follow_ups")
        .iter()
        .map(|item| pb::FollowUp {
            action: dm::get_str(doc, item, "action"),
            owner: dm::get_str(doc, item, "owner"),
            due_date: dm::get_str(doc, item, "due_date"),
            done: dm::get_bool(doc, item, "done"),
        })
        .collect()
}

// Meetings.

/// Checks a meeting's fields against the register.
pub fn check_meeting<R: ReadDoc>(doc: &R, meeting: &pb::Meeting) -> Result<(), ModelError> {
    check_date("date", &meeting.date, false)?;
    for org in &meeting.organisations {
        existing_organisation(doc, "organisations", org)?;
    }
    check_len("agenda", &meeting.agenda, 0, 5000)?;
    check_len("notes", &meeting.notes, 0, 5000)?;
    if meeting.decisions.len() > 100 {
        return Err(invalid("decisions", "at most 100 decisions"));
    }
    for decision in &meeting.decisions {
        check_len("decisions", decision, 1, 1000)?;
    }
    check_follow_ups(doc, &meeting.follow_ups)
}

/// Writes a meeting's fields.
pub fn write_meeting(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    meeting: &pb::Meeting,
) -> Result<(), ModelError> {
    tx.put(obj, "date", meeting.date.as_str())
        .map_err(doc_error)?;
    dm::put_str_list(tx, obj, "organisations", &meeting.organisations).map_err(doc_error)?;
    dm::put_text(tx, obj, "agenda", &meeting.agenda).map_err(doc_error)?;
    dm::put_text(tx, obj, "notes", &meeting.notes).map_err(doc_error)?;
    dm::put_str_list(tx, obj, "decisions", &meeting.decisions).map_err(doc_error)?;
    write_follow_ups(tx, obj, &meeting.follow_ups)
}

/// Reads a meeting.
pub fn read_meeting<R: ReadDoc>(doc: &R, id: &str, obj: &ObjId) -> pb::Meeting {
    pb::Meeting {
        name: format!("meetings/{id}"),
        date: dm::get_str(doc, obj, "date"),
        organisations: dm::get_str_list(doc, obj, "organisations"),
        agenda: dm::get_str(doc, obj, "agenda"),
        notes: dm::get_str(doc, obj, "notes"),
        decisions: dm::get_str_list(doc, obj, "decisions"),
        follow_ups: read_follow_ups(doc, obj),
    }
}

// The referral routine.

/// Checks the routine's steps against the register.
pub fn check_routine<R: ReadDoc>(doc: &R, routine: &pb::Routine) -> Result<(), ModelError> {
    if routine.steps.len() > 50 {
        return Err(invalid("steps", "at most 50 steps"));
    }
    for step in &routine.steps {
        check_len("steps.description", &step.description, 1, 500)?;
        existing_organisation(doc, "steps.organisation", &step.organisation)?;
        check_len("steps.how_to_reach", &step.how_to_reach, 0, 500)?;
    }
    Ok(())
}

/// Replaces the routine.
pub fn write_routine(tx: &mut Transaction<'_>, routine: &pb::Routine) -> Result<(), ModelError> {
    let list = tx
        .put_object(automerge::ROOT, "routine", automerge::ObjType::List)
        .map_err(doc_error)?;
    for (i, step) in routine.steps.iter().enumerate() {
        let item = tx
            .insert_object(&list, i, automerge::ObjType::Map)
            .map_err(doc_error)?;
        tx.put(&item, "description", step.description.trim())
            .map_err(doc_error)?;
        tx.put(&item, "organisation", step.organisation.as_str())
            .map_err(doc_error)?;
        tx.put(&item, "how_to_reach", step.how_to_reach.trim())
            .map_err(doc_error)?;
    }
    Ok(())
}

/// Reads the routine.
pub fn read_routine<R: ReadDoc>(doc: &R) -> pb::Routine {
    pb::Routine {
        name: "routine".to_string(),
        steps: dm::get_list(doc, &automerge::ROOT, "routine")
            .iter()
            .map(|item| pb::RoutineStep {
                description: dm::get_str(doc, item, "description"),
                organisation: dm::get_str(doc, item, "organisation"),
                how_to_reach: dm::get_str(doc, item, "how_to_reach"),
            })
            .collect(),
    }
}

// The deny list and the privacy guard.

/// Every word on the deny list, sorted.
pub fn deny_words<R: ReadDoc>(doc: &R) -> Vec<String> {
    let mut words: Vec<String> = dm::records(doc, "deny_words")
        .into_iter()
        .map(|(_, obj)| dm::get_str(doc, &obj, "word"))
        .collect();
    words.sort();
    words
}

/// The privacy guard of this city: its contact names and its deny list.
pub fn privacy_guard<R: ReadDoc>(doc: &R) -> crate::domain::privacy::Guard {
    crate::domain::privacy::Guard::new(&contact_names(doc), &deny_words(doc))
}
