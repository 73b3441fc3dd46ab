//! The national method handbook, `national/method`, owned by the hub.
//!
//! Flat collections `chapters`, `steps` (each naming its chapter), `items` (each naming its
//! step) and `releases`. Long texts are Automerge text. A release records the document's heads
//! when it was cut; "what changed since" compares the handbook read at those heads (a fork of
//! the document at that point of its history) with the handbook now.

use std::collections::BTreeMap;

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ChangeHash, ObjId, ReadDoc};
use sfs_proto::v1 as pb;
use sfs_sync::ShareableDocId;

use crate::domain::docmodel as dm;
use crate::domain::model::{check_len, doc_error, ModelError};

/// The handbook document.
pub fn method_doc() -> ShareableDocId {
    ShareableDocId::parse("national/method").expect("national/method is a document id")
}

/// Reads a chapter without its steps.
pub fn read_chapter<R: ReadDoc>(doc: &R, id: &str, obj: &ObjId) -> pb::Chapter {
    pb::Chapter {
        name: format!("method/chapters/{id}"),
        title: dm::get_str(doc, obj, "title"),
        introduction: dm::get_str(doc, obj, "introduction"),
        position: dm::get_i64(doc, obj, "position") as i32,
        steps: Vec::new(),
    }
}

/// Reads a step without its checklist.
pub fn read_step<R: ReadDoc>(doc: &R, id: &str, obj: &ObjId) -> pb::Step {
    pb::Step {
        name: format!("method/steps/{id}"),
        chapter: dm::get_str(doc, obj, "chapter"),
        title: dm::get_str(doc, obj, "title"),
        description: dm::get_str(doc, obj, "description"),
        position: dm::get_i64(doc, obj, "position") as i32,
        checklist: Vec::new(),
    }
}

/// Reads a checklist item.
pub fn read_item<R: ReadDoc>(doc: &R, id: &str, obj: &ObjId) -> pb::ChecklistItem {
    pb::ChecklistItem {
        name: format!("method/items/{id}"),
        step: dm::get_str(doc, obj, "step"),
        text: dm::get_str(doc, obj, "text"),
        position: dm::get_i64(doc, obj, "position") as i32,
    }
}

/// Reads a release.
pub fn read_release<R: ReadDoc>(doc: &R, id: &str, obj: &ObjId) -> pb::Release {
    pb::Release {
        name: format!("method/releases/{id}"),
        version_label: dm::get_str(doc, obj, "version_label"),
        notes: dm::get_str(doc, obj, "notes"),
        version: dm::get_str(doc, obj, "version"),
        create_time_ms: dm::get_i64(doc, obj, "created_ms"),
        number: dm::get_i64(doc, obj, "number"),
        issue_time_ms: dm::get_i64(doc, obj, "issue_time_ms"),
        expire_time_ms: dm::get_i64(doc, obj, "expire_time_ms"),
        // Kept as hex text; anything that is not hex reads as no signature (and is refused).
        signature: hex::decode(dm::get_str(doc, obj, "signature")).unwrap_or_default(),
        key_id: dm::get_str(doc, obj, "key_id"),
        generation: dm::get_i64(doc, obj, "generation").max(0) as u64,
    }
}

/// Writes the release record `releases/{id}` exactly as given (a signed release is stored as
/// signed: every field its signature covers, unchanged). `created_ms` is the node's clock.
pub fn write_release(
    tx: &mut Transaction<'_>,
    id: &str,
    release: &pb::Release,
) -> Result<pb::Release, automerge::AutomergeError> {
    use automerge::transaction::Transactable;
    let obj = dm::new_record(tx, "releases", id)?;
    tx.put(&obj, "version_label", release.version_label.as_str())?;
    dm::put_text(tx, &obj, "notes", &release.notes)?;
    tx.put(&obj, "version", release.version.as_str())?;
    tx.put(&obj, "created_ms", crate::domain::model::now_ms())?;
    if !release.signature.is_empty() {
        tx.put(&obj, "number", release.number)?;
        tx.put(&obj, "issue_time_ms", release.issue_time_ms)?;
        tx.put(&obj, "expire_time_ms", release.expire_time_ms)?;
        tx.put(&obj, "signature", hex::encode(&release.signature))?;
        tx.put(&obj, "key_id", release.key_id.as_str())?;
    }
    if release.generation != 0 {
        tx.put(&obj, "generation", release.generation as i64)?;
    }
    Ok(read_release(tx, id, &obj))
}

/// Every release, newest first.
pub fn releases<R: ReadDoc>(doc: &R) -> Vec<pb::Release> {
    let mut all: Vec<pb::Release> = dm::records(doc, "releases")
        .into_iter()
        .map(|(id, obj)| read_release(doc, &id, &obj))
        .collect();
    all.sort_by(|a, b| {
        b.create_time_ms
            .cmp(&a.create_time_ms)
            .then(b.name.cmp(&a.name))
    });
    all
}

/// The whole handbook, ordered by position.
pub fn read_handbook<R: ReadDoc>(doc: &R) -> Vec<pb::Chapter> {
    let mut items: BTreeMap<String, Vec<pb::ChecklistItem>> = BTreeMap::new();
    for (id, obj) in dm::records(doc, "items") {
        let item = read_item(doc, &id, &obj);
        items.entry(item.step.clone()).or_default().push(item);
    }
    let mut steps: BTreeMap<String, Vec<pb::Step>> = BTreeMap::new();
    for (id, obj) in dm::records(doc, "steps") {
        let mut step = read_step(doc, &id, &obj);
        let mut checklist = items.remove(&step.name).unwrap_or_default();
        checklist.sort_by(|a, b| a.position.cmp(&b.position).then(a.name.cmp(&b.name)));
        step.checklist = checklist;
        steps.entry(step.chapter.clone()).or_default().push(step);
    }
    let mut chapters: Vec<pb::Chapter> = dm::records(doc, "chapters")
        .into_iter()
        .map(|(id, obj)| {
            let mut chapter = read_chapter(doc, &id, &obj);
            let mut list = steps.remove(&chapter.name).unwrap_or_default();
            list.sort_by(|a, b| a.position.cmp(&b.position).then(a.name.cmp(&b.name)));
            chapter.steps = list;
            chapter
        })
        .collect();
    chapters.sort_by(|a, b| a.position.cmp(&b.position).then(a.name.cmp(&b.name)));
    chapters
}

/// The generation of the handbook (`sfs_sync::generation_of`, readable inside a transaction).
pub fn generation<R: ReadDoc>(doc: &R) -> u64 {
    match doc.get(automerge::ROOT, sfs_sync::engine::GENERATION_KEY) {
        Ok(Some((automerge::Value::Scalar(value), _))) => match value.as_ref() {
            automerge::ScalarValue::Uint(n) => *n,
            automerge::ScalarValue::Int(n) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        },
        _ => 0,
    }
}

/// What a redaction takes out of the handbook ([`redact`]).
#[derive(Debug, Clone, Default)]
pub struct Redaction {
    /// `method/chapters/{id}`, `method/steps/{id}` or `method/items/{id}`.
    pub names: Vec<String>,
    /// Fields to clear (or to cut `text` out of); empty: the whole resource, or with `text`
    /// every text field of it.
    pub fields: Vec<String>,
    /// Only these characters are cut out of the fields, when not empty.
    pub text: String,
}

/// The text fields of each kind of record, by collection.
fn text_fields(collection: &str) -> &'static [&'static str] {
    match collection {
        "chapters" => &["title", "introduction"],
        "steps" => &["title", "description"],
        _ => &["text"],
    }
}

/// Splits `method/{collection}/{id}`, for the collections a redaction may name.
fn parse_resource(name: &str) -> Result<(&'static str, &str), ModelError> {
    for collection in ["chapters", "steps", "items"] {
        if let Some(id) = name
            .strip_prefix("method/")
            .and_then(|rest| rest.strip_prefix(collection))
            .and_then(|rest| rest.strip_prefix('/'))
        {
            if !id.is_empty() && !id.contains('/') {
                return Ok((collection, id));
            }
        }
    }
    Err(ModelError::Invalid(format!(
        "field `names`: {} is not method/chapters/{{id}}, method/steps/{{id}} or method/items/{{id}}",
        crate::domain::model::quote(name)
    )))
}

/// Checks a redaction's request before anything is written: names well formed, fields known
/// for every named kind, and something to do.
pub fn check_redaction(redaction: &Redaction) -> Result<(), ModelError> {
    if redaction.names.is_empty() {
        return Err(ModelError::Invalid(
            "field `names`: name at least one chapter, step or checklist item".into(),
        ));
    }
    for name in &redaction.names {
        let (collection, _) = parse_resource(name)?;
        for field in &redaction.fields {
            if !text_fields(collection).contains(&field.as_str()) {
                return Err(ModelError::Invalid(format!(
                    "field `fields`: {} is not a text field of {name} (those are {})",
                    crate::domain::model::quote(field),
                    text_fields(collection).join(", ")
                )));
            }
        }
    }
    if redaction.text.trim().is_empty() && !redaction.text.is_empty() {
        return Err(ModelError::Invalid(
            "field `text`: must not be only spaces".into(),
        ));
    }
    Ok(())
}

/// Takes what `redaction` names out of the handbook (in the transaction that becomes the new
/// generation, `SyncHandle::new_generation`). A named resource that does not exist is
/// NOT_FOUND; `text` that occurs in none of the fields too.
pub fn redact(tx: &mut Transaction<'_>, redaction: &Redaction) -> Result<(), ModelError> {
    check_redaction(redaction)?;
    let mut found_text = false;
    // What went with a chapter or step removed whole earlier in this redaction.
    let mut removed: Vec<String> = Vec::new();
    for name in &redaction.names {
        let (collection, id) = parse_resource(name)?;
        if removed.contains(name) {
            continue;
        }
        let Some(obj) = dm::record(tx, collection, id) else {
            return Err(ModelError::NotFound(format!(
                "{} is not in the handbook",
                crate::domain::model::quote(name)
            )));
        };
        if redaction.fields.is_empty() && redaction.text.is_empty() {
            removed.extend(remove_whole(tx, collection, id, name)?);
            continue;
        }
        let fields: Vec<&str> = if redaction.fields.is_empty() {
            text_fields(collection).to_vec()
        } else {
            redaction.fields.iter().map(String::as_str).collect()
        };
        for field in fields {
            let now = dm::get_str(tx, &obj, field);
            let new = if redaction.text.is_empty() {
                String::new()
            } else if now.contains(&redaction.text) {
                found_text = true;
                now.replace(&redaction.text, "")
            } else {
                continue;
            };
            if field == "title" {
                tx.put(&obj, field, new.trim()).map_err(doc_error)?;
            } else {
                dm::put_text(tx, &obj, field, &new).map_err(doc_error)?;
            }
        }
    }
    if !redaction.text.is_empty() && !found_text {
        return Err(ModelError::NotFound(
            "field `text`: it does not occur in the fields named".into(),
        ));
    }
    Ok(())
}

/// Deletes a chapter with its steps and their items, a step with its items, or an item;
/// returns the names of everything deleted.
fn remove_whole(
    tx: &mut Transaction<'_>,
    collection: &str,
    id: &str,
    name: &str,
) -> Result<Vec<String>, ModelError> {
    let mut removed = vec![name.to_string()];
    let mut steps = Vec::new();
    if collection == "chapters" {
        steps = dm::records(tx, "steps")
            .into_iter()
            .filter(|(_, obj)| dm::get_str(tx, obj, "chapter") == name)
            .map(|(step, _)| step)
            .collect();
    } else if collection == "steps" {
        steps.push(id.to_string());
    }
    for step in &steps {
        let step_name = format!("method/steps/{step}");
        let items: Vec<String> = dm::records(tx, "items")
            .into_iter()
            .filter(|(_, obj)| dm::get_str(tx, obj, "step") == step_name)
            .map(|(item, _)| item)
            .collect();
        for item in items {
            delete_record(tx, "items", &item)?;
            removed.push(format!("method/items/{item}"));
        }
        delete_record(tx, "steps", step)?;
        removed.push(step_name);
    }
    if collection != "steps" {
        delete_record(tx, collection, id)?;
    }
    Ok(removed)
}

fn delete_record(tx: &mut Transaction<'_>, collection: &str, id: &str) -> Result<(), ModelError> {
    dm::delete_record(tx, collection, id)
        .map(|_| ())
        .map_err(doc_error)
}

/// Whether the handbook has the step `method/steps/{id}`.
pub fn has_step<R: ReadDoc>(doc: &R, name: &str) -> bool {
    name.strip_prefix("method/steps/")
        .is_some_and(|id| dm::record(doc, "steps", id).is_some())
}

/// Checks and writes a chapter's fields.
pub fn write_chapter(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    chapter: &pb::Chapter,
) -> Result<(), ModelError> {
    check_len("title", &chapter.title, 1, 200)?;
    check_len("introduction", &chapter.introduction, 0, 20_000)?;
    tx.put(obj, "title", chapter.title.trim())
        .map_err(doc_error)?;
    dm::put_text(tx, obj, "introduction", &chapter.introduction).map_err(doc_error)?;
    tx.put(obj, "position", chapter.position as i64)
        .map_err(doc_error)?;
    Ok(())
}

/// Checks and writes a step's fields; its chapter must exist.
pub fn write_step(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    step: &pb::Step,
) -> Result<(), ModelError> {
    check_len("title", &step.title, 1, 200)?;
    check_len("description", &step.description, 0, 20_000)?;
    let chapter = step
        .chapter
        .strip_prefix("method/chapters/")
        .unwrap_or_default();
    if dm::record(tx, "chapters", chapter).is_none() {
        return Err(ModelError::Invalid(format!(
            "field `chapter`: {} is not an existing chapter",
            crate::domain::model::quote(&step.chapter)
        )));
    }
    tx.put(obj, "chapter", step.chapter.as_str())
        .map_err(doc_error)?;
    tx.put(obj, "title", step.title.trim()).map_err(doc_error)?;
    dm::put_text(tx, obj, "description", &step.description).map_err(doc_error)?;
    tx.put(obj, "position", step.position as i64)
        .map_err(doc_error)?;
    Ok(())
}

/// Checks and writes a checklist item's fields; its step must exist.
pub fn write_item(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    item: &pb::ChecklistItem,
) -> Result<(), ModelError> {
    check_len("text", &item.text, 1, 1000)?;
    if !has_step(tx, &item.step) {
        return Err(ModelError::Invalid(format!(
            "field `step`: {} is not an existing step",
            crate::domain::model::quote(&item.step)
        )));
    }
    tx.put(obj, "step", item.step.as_str()).map_err(doc_error)?;
    dm::put_text(tx, obj, "text", &item.text).map_err(doc_error)?;
    tx.put(obj, "position", item.position as i64)
        .map_err(doc_error)?;
    Ok(())
}

/// The newest release whose heads are all part of the history up to `heads`.
pub fn newest_release_within(doc: &Automerge, heads: &[ChangeHash]) -> Option<pb::Release> {
    let after: std::collections::HashSet<ChangeHash> = doc
        .get_changes_meta(heads)
        .into_iter()
        .map(|c| c.hash)
        .collect();
    releases(doc).into_iter().find(|release| {
        dm::parse_version(&release.version).is_some_and(|release_heads| {
            release_heads
                .iter()
                .all(|h| doc.get_change_meta_by_hash(h).is_some() && !after.contains(h))
        })
    })
}

/// Fields compared per kind of record, for "what changed".
const COMPARED: [(&str, &str, &[&str]); 3] = [
    (
        "chapters",
        "method/chapters",
        &["title", "introduction", "position"],
    ),
    (
        "steps",
        "method/steps",
        &["chapter", "title", "description", "position"],
    ),
    ("items", "method/items", &["step", "text", "position"]),
];

fn snapshot<R: ReadDoc>(
    doc: &R,
    collection: &str,
    fields: &[&str],
) -> BTreeMap<String, Vec<String>> {
    dm::records(doc, collection)
        .into_iter()
        .map(|(id, obj)| {
            let values = fields
                .iter()
                .map(|f| {
                    if *f == "position" {
                        dm::get_i64(doc, &obj, f).to_string()
                    } else {
                        dm::get_str(doc, &obj, f)
                    }
                })
                .collect();
            (id, values)
        })
        .collect()
}

/// What changed in the handbook between `since` (older heads) and the document's current state.
pub fn diff(doc: &Automerge, since: &[ChangeHash]) -> Result<Vec<pb::HandbookChange>, ModelError> {
    for head in since {
        if doc.get_change_meta_by_hash(head).is_none() {
            return Err(ModelError::Invalid(format!(
                "field `since_version`: this node does not know version {head}"
            )));
        }
    }
    let old = doc.fork_at(since).map_err(doc_error)?;
    let mut changes = Vec::new();
    for (collection, prefix, fields) in COMPARED {
        let before = snapshot(&old, collection, fields);
        let after = snapshot(doc, collection, fields);
        let title_index = fields
            .iter()
            .position(|f| *f == "title" || *f == "text")
            .unwrap_or(0);
        for (id, values) in &after {
            let resource = format!("{prefix}/{id}");
            match before.get(id) {
                None => changes.push(pb::HandbookChange {
                    kind: "added".into(),
                    resource,
                    title: values[title_index].clone(),
                    fields: Vec::new(),
                }),
                Some(old_values) if old_values != values => changes.push(pb::HandbookChange {
                    kind: "changed".into(),
                    resource,
                    title: values[title_index].clone(),
                    fields: fields
                        .iter()
                        .zip(old_values.iter().zip(values.iter()))
                        .filter(|(_, (a, b))| a != b)
                        .map(|(f, _)| f.to_string())
                        .collect(),
                }),
                Some(_) => {}
            }
        }
        for (id, values) in &before {
            if !after.contains_key(id) {
                changes.push(pb::HandbookChange {
                    kind: "removed".into(),
                    resource: format!("{prefix}/{id}"),
                    title: values[title_index].clone(),
                    fields: Vec::new(),
                });
            }
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handbook with chapters `a` (step `s` with items `i`, `j`) and `b` (step `t`).
    fn handbook() -> Automerge {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        for (id, title) in [("a", "Chapter A"), ("b", "Chapter B")] {
            let obj = dm::new_record(&mut tx, "chapters", id).unwrap();
            let chapter = pb::Chapter {
                title: title.into(),
                introduction: format!("Intro of {id}, secret-x here"),
                ..Default::default()
            };
            write_chapter(&mut tx, &obj, &chapter).unwrap();
        }
        for (id, chapter) in [("s", "a"), ("t", "b")] {
            let obj = dm::new_record(&mut tx, "steps", id).unwrap();
            let step = pb::Step {
                chapter: format!("method/chapters/{chapter}"),
                title: format!("Step {id}"),
                description: "Do it. secret-x".into(),
                ..Default::default()
            };
            write_step(&mut tx, &obj, &step).unwrap();
        }
        for id in ["i", "j"] {
            let obj = dm::new_record(&mut tx, "items", id).unwrap();
            let item = pb::ChecklistItem {
                step: "method/steps/s".into(),
                text: format!("Item {id}"),
                ..Default::default()
            };
            write_item(&mut tx, &obj, &item).unwrap();
        }
        tx.commit();
        doc
    }

    fn redacted(names: &[&str], fields: &[&str], text: &str) -> Result<Automerge, ModelError> {
        let mut doc = handbook();
        let mut tx = doc.transaction();
        let redaction = Redaction {
            names: names.iter().map(|n| n.to_string()).collect(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            text: text.into(),
        };
        redact(&mut tx, &redaction)?;
        tx.commit();
        Ok(doc)
    }

    #[test]
    fn a_redaction_removes_whole_resources_fields_or_text() {
        // A chapter whole: its steps and their items go with it; the other chapter stays.
        let doc = redacted(&["method/chapters/a"], &[], "").unwrap();
        let left = read_handbook(&doc);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].title, "Chapter B");
        assert!(dm::records(&doc, "items").is_empty());
        assert_eq!(dm::records(&doc, "steps").len(), 1);

        // Naming a chapter and what is in it is not an error.
        let doc = redacted(
            &["method/chapters/a", "method/steps/s", "method/items/i"],
            &[],
            "",
        )
        .unwrap();
        assert_eq!(read_handbook(&doc).len(), 1);

        // A step whole: its items go with it; its chapter stays.
        let doc = redacted(&["method/steps/s"], &[], "").unwrap();
        assert_eq!(read_handbook(&doc).len(), 2);
        assert!(dm::records(&doc, "items").is_empty());
        assert_eq!(dm::records(&doc, "steps").len(), 1);

        // Fields cleared.
        let doc = redacted(&["method/steps/s"], &["description"], "").unwrap();
        let step = &read_handbook(&doc)[0].steps[0];
        assert_eq!(
            (step.title.as_str(), step.description.as_str()),
            ("Step s", "")
        );
        assert_eq!(step.checklist.len(), 2);

        // Only the text, wherever it occurs in the named resources.
        let doc = redacted(&["method/chapters/b", "method/steps/t"], &[], "secret-x").unwrap();
        let all = format!("{:?}", read_handbook(&doc));
        assert_eq!(all.matches("secret-x").count(), 2, "only a's texts keep it");
        assert!(all.contains("Intro of b,  here"));
    }

    #[test]
    fn a_redaction_naming_nothing_or_the_wrong_thing_is_refused() {
        let invalid = |r: Result<Automerge, ModelError>| matches!(r, Err(ModelError::Invalid(_)));
        let not_found =
            |r: Result<Automerge, ModelError>| matches!(r, Err(ModelError::NotFound(_)));
        assert!(invalid(redacted(&[], &[], "")));
        assert!(invalid(redacted(&["method/releases/x"], &[], "")));
        assert!(invalid(redacted(&["method/steps/"], &[], "")));
        assert!(invalid(redacted(&["method/items/i"], &["title"], "")));
        assert!(invalid(redacted(&["method/items/i"], &[], "  ")));
        assert!(not_found(redacted(&["method/steps/nope"], &[], "")));
        assert!(not_found(redacted(&["method/items/i"], &[], "absent")));
    }
}
