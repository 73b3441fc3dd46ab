//! Small helpers shared by the document models: collections of records kept as Automerge maps.
//!
//! A document holds named collections (`root[collection][id]` is a map of fields). Strings are
//! scalars, long free text is Automerge text (so concurrent edits merge), lists of strings are
//! Automerge lists. Readers work on anything that reads a document — the current state, a
//! transaction in progress, or a fork at older heads (for "what changed since").

use automerge::transaction::{Transactable, Transaction};
use automerge::{AutomergeError, ChangeHash, ObjId, ObjType, ReadDoc, Value, ROOT};

/// The map `root[name]`, made if missing.
pub fn collection(tx: &mut Transaction<'_>, name: &str) -> Result<ObjId, AutomergeError> {
    match tx.get(ROOT, name)? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        _ => tx.put_object(ROOT, name, ObjType::Map),
    }
}

/// The record `root[collection][id]`, if it exists.
pub fn record<R: ReadDoc>(doc: &R, collection: &str, id: &str) -> Option<ObjId> {
    let Ok(Some((Value::Object(ObjType::Map), coll))) = doc.get(ROOT, collection) else {
        return None;
    };
    match doc.get(&coll, id) {
        Ok(Some((Value::Object(ObjType::Map), obj))) => Some(obj),
        _ => None,
    }
}

/// Every record of a collection, by id.
pub fn records<R: ReadDoc>(doc: &R, collection: &str) -> Vec<(String, ObjId)> {
    let Ok(Some((Value::Object(ObjType::Map), coll))) = doc.get(ROOT, collection) else {
        return Vec::new();
    };
    doc.keys(&coll)
        .filter_map(|key| match doc.get(&coll, &key) {
            Ok(Some((Value::Object(ObjType::Map), obj))) => Some((key, obj)),
            _ => None,
        })
        .collect()
}

/// Makes a new, empty record (replacing any record with the same id).
pub fn new_record(
    tx: &mut Transaction<'_>,
    collection: &str,
    id: &str,
) -> Result<ObjId, AutomergeError> {
    let coll = self::collection(tx, collection)?;
    tx.put_object(&coll, id, ObjType::Map)
}

/// Deletes a record; returns whether it existed.
pub fn delete_record(
    tx: &mut Transaction<'_>,
    collection: &str,
    id: &str,
) -> Result<bool, AutomergeError> {
    let Some(_) = record(tx, collection, id) else {
        return Ok(false);
    };
    let coll = self::collection(tx, collection)?;
    tx.delete(&coll, id)?;
    Ok(true)
}

/// A string field (a scalar string or a text object).
pub fn get_str<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> String {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => s.as_str().unwrap_or_default().to_string(),
        Ok(Some((Value::Object(ObjType::Text), text))) => doc.text(&text).unwrap_or_default(),
        _ => String::new(),
    }
}

/// An integer field (0 when missing).
pub fn get_i64<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> i64 {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => s.as_i64().unwrap_or_default(),
        _ => 0,
    }
}

/// A boolean field (false when missing).
pub fn get_bool<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> bool {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => s.as_bool().unwrap_or_default(),
        _ => false,
    }
}

/// A list-of-strings field.
pub fn get_str_list<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Vec<String> {
    match doc.get(obj, key) {
        Ok(Some((Value::Object(ObjType::List), list))) => (0..doc.length(&list))
            .filter_map(|i| match doc.get(&list, i) {
                Ok(Some((Value::Scalar(s), _))) => s.as_str().map(str::to_string),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The list object under `key`, if any (for lists of maps).
pub fn get_list<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Vec<ObjId> {
    match doc.get(obj, key) {
        Ok(Some((Value::Object(ObjType::List), list))) => (0..doc.length(&list))
            .filter_map(|i| match doc.get(&list, i) {
                Ok(Some((Value::Object(ObjType::Map), item))) => Some(item),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Sets a long text field as Automerge text; an existing text is updated as a diff, so edits
/// made concurrently elsewhere in the text survive.
pub fn put_text(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    value: &str,
) -> Result<(), AutomergeError> {
    match tx.get(obj, key)? {
        Some((Value::Object(ObjType::Text), text)) => tx.update_text(&text, value),
        _ => {
            let text = tx.put_object(obj, key, ObjType::Text)?;
            tx.splice_text(&text, 0, 0, value)
        }
    }
}

/// Replaces a list-of-strings field.
pub fn put_str_list(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    values: &[String],
) -> Result<(), AutomergeError> {
    let list = tx.put_object(obj, key, ObjType::List)?;
    for (i, value) in values.iter().enumerate() {
        tx.insert(&list, i, value.as_str())?;
    }
    Ok(())
}

/// Replaces a field with a new, empty list (for lists of maps) and returns it.
pub fn put_list(tx: &mut Transaction<'_>, obj: &ObjId, key: &str) -> Result<ObjId, AutomergeError> {
    tx.put_object(obj, key, ObjType::List)
}

/// Heads as one opaque, printable version string.
pub fn version_of(heads: &[ChangeHash]) -> String {
    let mut heads: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
    heads.sort();
    heads.join(".")
}

/// Parses a version string made by [`version_of`].
pub fn parse_version(version: &str) -> Option<Vec<ChangeHash>> {
    if version.is_empty() {
        return Some(Vec::new());
    }
    version.split('.').map(|h| h.parse().ok()).collect()
}
