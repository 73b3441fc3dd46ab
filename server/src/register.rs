//! The city's local network register, `local/network`: member organisations and contacts.
//!
//! Local documents live in [`LocalReplicas`], which holds the only handle to the local store.
//! Nothing here is known to the sync engine, so no code path can put it on a federation link.

use std::collections::BTreeMap;
use std::sync::Mutex;

use automerge::transaction::{Transactable, Transaction};
use automerge::{ActorId, Automerge, ChangeHash, ObjType, ReadDoc, Value, ROOT};
use sfs_sync::{DocId, PersistKind};

use crate::store::{LocalDocs, StoreError};

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

const COMPACT_AFTER_CHUNKS: usize = 64;

struct LocalEntry {
    doc: Automerge,
    persisted_heads: Vec<ChangeHash>,
    chunks: usize,
}

/// Errors of register changes, naming the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("field `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("document: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    #[error("the change was not stored: {0}")]
    Storage(#[from] StoreError),
}

/// The city's local documents, in memory and in the local store.
pub struct LocalReplicas {
    store: LocalDocs,
    actor: ActorId,
    docs: Mutex<BTreeMap<DocId, LocalEntry>>,
}

impl LocalReplicas {
    /// Loads every local document.
    pub fn open(store: LocalDocs, actor: ActorId) -> Result<LocalReplicas, StoreError> {
        let mut docs = BTreeMap::new();
        for stored in store.load_all()? {
            let mut doc = stored.doc;
            doc.set_actor(actor.clone());
            let heads = doc.get_heads();
            docs.insert(
                stored.id,
                LocalEntry {
                    doc,
                    persisted_heads: heads,
                    chunks: stored.chunks,
                },
            );
        }
        Ok(LocalReplicas {
            store,
            actor,
            docs: Mutex::new(docs),
        })
    }

    /// Reads a local document (an empty one if it was never written).
    pub fn read<R>(&self, id: &DocId, f: impl FnOnce(&Automerge) -> R) -> R {
        let docs = self.docs.lock().unwrap_or_else(|p| p.into_inner());
        match docs.get(id) {
            Some(entry) => f(&entry.doc),
            None => f(&Automerge::new()),
        }
    }

    /// Changes a local document in one transaction and stores it durably before returning.
    pub fn edit<R>(
        &self,
        id: &DocId,
        change: impl FnOnce(&mut Transaction<'_>) -> Result<R, RegisterError>,
    ) -> Result<R, RegisterError> {
        let mut docs = self.docs.lock().unwrap_or_else(|p| p.into_inner());
        let entry = docs.entry(id.clone()).or_insert_with(|| LocalEntry {
            doc: Automerge::new().with_actor(self.actor.clone()),
            persisted_heads: Vec::new(),
            chunks: 0,
        });
        let result = entry
            .doc
            .transact(|tx| change(tx))
            .map_err(|failure| failure.error)?;
        if result.hash.is_none() {
            return Ok(result.result);
        }
        let heads = entry.doc.get_heads();
        let (kind, bytes) = if entry.chunks + 1 >= COMPACT_AFTER_CHUNKS {
            (PersistKind::Snapshot, entry.doc.save())
        } else {
            (
                PersistKind::Incremental,
                entry.doc.save_after(&entry.persisted_heads),
            )
        };
        self.store.persist(id, kind, &bytes, &heads)?;
        entry.chunks = if kind == PersistKind::Snapshot {
            0
        } else {
            entry.chunks + 1
        };
        entry.persisted_heads = heads;
        Ok(result.result)
    }
}

/// A member organisation.
#[derive(Debug, Clone)]
pub struct OrganisationRecord {
    pub id: String,
    pub display_name: String,
    pub sector: String,
}

/// A contact person.
#[derive(Debug, Clone)]
pub struct ContactRecord {
    pub id: String,
    pub full_name: String,
    pub role: String,
    pub organisation_id: String,
    pub phone: String,
    pub email: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> RegisterError {
    RegisterError::Invalid {
        field,
        message: message.into(),
    }
}

fn check_len(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), RegisterError> {
    let chars = value.trim().chars().count();
    if chars < min || chars > max {
        return Err(invalid(
            field,
            format!("needs {min} to {max} characters; it has {chars}"),
        ));
    }
    Ok(())
}

fn child_map(tx: &mut Transaction<'_>, key: &str) -> Result<automerge::ObjId, RegisterError> {
    match tx.get(ROOT, key)? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        _ => Ok(tx.put_object(ROOT, key, ObjType::Map)?),
    }
}

fn read_str(doc: &Automerge, obj: &automerge::ObjId, key: &str) -> String {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => s.as_str().unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

fn entries(doc: &Automerge, key: &str) -> Vec<(String, automerge::ObjId)> {
    let Ok(Some((Value::Object(ObjType::Map), map))) = doc.get(ROOT, key) else {
        return Vec::new();
    };
    doc.keys(&map)
        .filter_map(|k| match doc.get(&map, &k) {
            Ok(Some((Value::Object(ObjType::Map), obj))) => Some((k, obj)),
            _ => None,
        })
        .collect()
}

/// Adds a member organisation.
pub fn create_organisation(
    tx: &mut Transaction<'_>,
    org: &OrganisationRecord,
) -> Result<(), RegisterError> {
    check_len("display_name", &org.display_name, 1, 200)?;
    if !SECTORS.contains(&org.sector.as_str()) {
        return Err(invalid(
            "sector",
            format!("{:?} is not one of {}", org.sector, SECTORS.join(", ")),
        ));
    }
    let map = child_map(tx, "organisations")?;
    let obj = tx.put_object(&map, &org.id, ObjType::Map)?;
    tx.put(&obj, "display_name", org.display_name.trim())?;
    tx.put(&obj, "sector", org.sector.as_str())?;
    Ok(())
}

/// Every member organisation.
pub fn organisations(doc: &Automerge) -> Vec<OrganisationRecord> {
    entries(doc, "organisations")
        .into_iter()
        .map(|(id, obj)| OrganisationRecord {
            display_name: read_str(doc, &obj, "display_name"),
            sector: read_str(doc, &obj, "sector"),
            id,
        })
        .collect()
}

/// Adds a contact person; the organisation must exist.
pub fn create_contact(
    tx: &mut Transaction<'_>,
    contact: &ContactRecord,
) -> Result<(), RegisterError> {
    check_len("full_name", &contact.full_name, 1, 200)?;
    check_len("role", &contact.role, 0, 200)?;
    check_len("phone", &contact.phone, 0, 50)?;
    check_len("email", &contact.email, 0, 200)?;
    if !contact.email.is_empty() && !contact.email.contains('@') {
        return Err(invalid("email", "is not an e-mail address"));
    }
    let orgs = child_map(tx, "organisations")?;
    if !matches!(
        tx.get(&orgs, &contact.organisation_id)?,
        Some((Value::Object(ObjType::Map), _))
    ) {
        return Err(invalid(
            "organisation",
            format!("organisations/{} does not exist", contact.organisation_id),
        ));
    }
    let map = child_map(tx, "contacts")?;
    let obj = tx.put_object(&map, &contact.id, ObjType::Map)?;
    tx.put(&obj, "full_name", contact.full_name.trim())?;
    tx.put(&obj, "role", contact.role.trim())?;
    tx.put(&obj, "organisation", contact.organisation_id.as_str())?;
    tx.put(&obj, "phone", contact.phone.trim())?;
    tx.put(&obj, "email", contact.email.trim())?;
    Ok(())
}

/// Every contact person.
pub fn contacts(doc: &Automerge) -> Vec<ContactRecord> {
    entries(doc, "contacts")
        .into_iter()
        .map(|(id, obj)| ContactRecord {
            full_name: read_str(doc, &obj, "full_name"),
            role: read_str(doc, &obj, "role"),
            organisation_id: read_str(doc, &obj, "organisation"),
            phone: read_str(doc, &obj, "phone"),
            email: read_str(doc, &obj, "email"),
            id,
        })
        .collect()
}
