//! Small helpers shared by the document models: collections of records kept as Automerge maps.
//!
//! A document holds named collections (`root[collection][id]` is a map of fields). Strings are
//! scalars, long free text is Automerge text (so concurrent edits merge), lists of strings are
//! Automerge lists. Readers work on anything that reads a document — the current state, a
//! transaction in progress, or a fork at older heads (for "what changed since").

use automerge::transaction::{Transactable, Transaction};
use automerge::{AutomergeError, ChangeHash, ObjId, ObjType, ReadDoc, Value, ROOT};

/// Every map at `root[name]`, the one Automerge shows first. A collection is made lazily by the
/// first edit that needs it; two writers of one document (the national hub and its standby in
/// a partition) can each make it, and after merging the document holds both maps, of which
/// `get` shows one. Records are read, edited and deleted in all of them, so neither writer's
/// records are hidden; new records go into the one shown.
fn collection_maps<R: ReadDoc>(doc: &R, name: &str) -> Vec<ObjId> {
    let mut maps: Vec<ObjId> = doc
        .get_all(ROOT, name)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(value, id)| matches!(value, Value::Object(ObjType::Map)).then_some(id))
        .collect();
    // `get_all` lists the conflicting values in the order of their operations; `get` shows
    // the last.
    maps.reverse();
    maps
}

/// The map `root[name]`, made if missing.
pub fn collection(tx: &mut Transaction<'_>, name: &str) -> Result<ObjId, AutomergeError> {
    match tx.get(ROOT, name)? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        _ => tx.put_object(ROOT, name, ObjType::Map),
    }
}

/// The record `root[collection][id]`, if it exists.
pub fn record<R: ReadDoc>(doc: &R, collection: &str, id: &str) -> Option<ObjId> {
    collection_maps(doc, collection)
        .into_iter()
        .find_map(|coll| match doc.get(&coll, id) {
            Ok(Some((Value::Object(ObjType::Map), obj))) => Some(obj),
            _ => None,
        })
}

/// Every record of a collection, by id.
pub fn records<R: ReadDoc>(doc: &R, collection: &str) -> Vec<(String, ObjId)> {
    let mut found = std::collections::BTreeMap::new();
    for coll in collection_maps(doc, collection) {
        for key in doc.keys(&coll) {
            if let Ok(Some((Value::Object(ObjType::Map), obj))) = doc.get(&coll, &key) {
                found.entry(key).or_insert(obj);
            }
        }
    }
    found.into_iter().collect()
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
    let mut existed = false;
    for coll in collection_maps(tx, collection) {
        if let Ok(Some((Value::Object(ObjType::Map), _))) = tx.get(&coll, id) {
            tx.delete(&coll, id)?;
            existed = true;
        }
    }
    Ok(existed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::{ActorId, Automerge};

    fn add(doc: &mut Automerge, id: &str) {
        let mut tx = doc.transaction();
        let obj = new_record(&mut tx, "chapters", id).unwrap();
        tx.put(&obj, "title", id).unwrap();
        tx.commit();
    }

    #[test]
    fn a_collection_made_by_two_writers_at_once_shows_both_writers_records() {
        // The national hub and its standby each make the collection in a partition.
        let mut hub = Automerge::new().with_actor(ActorId::from(b"hub-actor".as_slice()));
        let mut standby = Automerge::new().with_actor(ActorId::from(b"standby".as_slice()));
        add(&mut hub, "a");
        add(&mut standby, "b");
        hub.merge(&mut standby).unwrap();
        assert_eq!(hub.get_all(ROOT, "chapters").unwrap().len(), 2);
        let ids: Vec<String> = records(&hub, "chapters").into_iter().map(|r| r.0).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(record(&hub, "chapters", "a").is_some() && record(&hub, "chapters", "b").is_some());
        // Edits and deletions reach a record in either map.
        let mut tx = hub.transaction();
        assert!(delete_record(&mut tx, "chapters", "a").unwrap());
        assert!(delete_record(&mut tx, "chapters", "b").unwrap());
        assert!(!delete_record(&mut tx, "chapters", "b").unwrap());
        tx.commit();
        assert!(records(&hub, "chapters").is_empty());
    }
}
