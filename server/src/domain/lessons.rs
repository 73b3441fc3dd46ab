//! The lessons document, `shared/lessons/{city}`: what one city learned, for every city to read.
//!
//! Schema: the root map holds `lessons`, a map from lesson id to a map with `title` (string),
//! `body` (Automerge text, so concurrent edits merge), `tags` (list of strings), `created_ms`
//! and `updated_ms` (integers).

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ObjType, ReadDoc, Value, ROOT};

/// Limits on lesson fields.
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_BODY_CHARS: usize = 20_000;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG_CHARS: usize = 50;

/// A lesson as read from its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LessonRecord {
    pub id: String,
    pub city: String,
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub method_step: String,
    pub archived: bool,
}

/// Errors of lesson changes, each naming the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum LessonError {
    #[error("field `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("lesson {0} does not exist")]
    NotFound(String),
    #[error("document: {0}")]
    Automerge(#[from] automerge::AutomergeError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> LessonError {
    LessonError::Invalid {
        field,
        message: message.into(),
    }
}

/// Checks a title.
pub fn check_title(title: &str) -> Result<(), LessonError> {
    let chars = title.trim().chars().count();
    if chars == 0 {
        return Err(invalid("title", "must not be empty"));
    }
    if chars > MAX_TITLE_CHARS {
        return Err(invalid(
            "title",
            format!("has {chars} characters; at most {MAX_TITLE_CHARS} are allowed"),
        ));
    }
    Ok(())
}

/// Checks a body.
pub fn check_body(body: &str) -> Result<(), LessonError> {
    let chars = body.chars().count();
    if chars > MAX_BODY_CHARS {
        return Err(invalid(
            "body",
            format!("has {chars} characters; at most {MAX_BODY_CHARS} are allowed"),
        ));
    }
    Ok(())
}

/// Checks tags.
pub fn check_tags(tags: &[String]) -> Result<(), LessonError> {
    if tags.len() > MAX_TAGS {
        return Err(invalid(
            "tags",
            format!("has {} tags; at most {MAX_TAGS} are allowed", tags.len()),
        ));
    }
    for tag in tags {
        let chars = tag.trim().chars().count();
        if chars == 0 || chars > MAX_TAG_CHARS {
            return Err(invalid(
                "tags",
                format!(
                    "each tag needs 1 to {MAX_TAG_CHARS} characters; {} has {chars}",
                    crate::domain::model::quote(tag)
                ),
            ));
        }
    }
    Ok(())
}

fn lessons_map(tx: &mut Transaction<'_>) -> Result<automerge::ObjId, LessonError> {
    match tx.get(ROOT, "lessons")? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        _ => Ok(tx.put_object(ROOT, "lessons", ObjType::Map)?),
    }
}

/// What a new lesson holds, as its writer gives it.
#[derive(Debug, Clone, Copy)]
pub struct NewLesson<'a> {
    pub title: &'a str,
    pub body: &'a str,
    pub tags: &'a [String],
    pub method_step: &'a str,
}

impl NewLesson<'_> {
    /// The title as stored: without the spaces around it.
    fn stored_title(&self) -> &str {
        self.title.trim()
    }

    /// The tags as stored: each without the spaces around it.
    fn stored_tags(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|tag| tag.trim())
    }

    /// The record [`create`] writes for this lesson, as a read of it returns it: so that the
    /// API can answer a new lesson without reading it back.
    pub fn record(&self, city: &str, id: &str, now_ms: i64) -> LessonRecord {
        LessonRecord {
            id: id.to_string(),
            city: city.to_string(),
            title: self.stored_title().to_string(),
            body: self.body.to_string(),
            tags: self.stored_tags().map(str::to_string).collect(),
            created_ms: now_ms,
            updated_ms: now_ms,
            method_step: self.method_step.to_string(),
            archived: false,
        }
    }
}

/// Adds a new lesson.
pub fn create(
    tx: &mut Transaction<'_>,
    id: &str,
    new: &NewLesson<'_>,
    now_ms: i64,
) -> Result<(), LessonError> {
    check_title(new.title)?;
    check_body(new.body)?;
    check_tags(new.tags)?;
    let lessons = lessons_map(tx)?;
    let lesson = tx.put_object(&lessons, id, ObjType::Map)?;
    tx.put(&lesson, "title", new.stored_title())?;
    let text = tx.put_object(&lesson, "body", ObjType::Text)?;
    tx.splice_text(&text, 0, 0, new.body)?;
    let list = tx.put_object(&lesson, "tags", ObjType::List)?;
    for (i, tag) in new.stored_tags().enumerate() {
        tx.insert(&list, i, tag)?;
    }
    tx.put(&lesson, "method_step", new.method_step)?;
    tx.put(&lesson, "archived", false)?;
    tx.put(&lesson, "created_ms", now_ms)?;
    tx.put(&lesson, "updated_ms", now_ms)?;
    Ok(())
}

/// The fields of a lesson an update may change; `None` keeps a field as it is.
#[derive(Debug, Default)]
pub struct LessonChanges<'a> {
    pub title: Option<&'a str>,
    pub body: Option<&'a str>,
    pub tags: Option<&'a [String]>,
    pub method_step: Option<&'a str>,
    pub archived: Option<bool>,
}

/// Changes the given fields of an existing lesson. The body is updated as a text diff, so
/// concurrent edits of different parts both survive.
pub fn update(
    tx: &mut Transaction<'_>,
    id: &str,
    changes: LessonChanges<'_>,
    now_ms: i64,
) -> Result<(), LessonError> {
    let LessonChanges {
        title,
        body,
        tags,
        method_step,
        archived,
    } = changes;
    let lessons = lessons_map(tx)?;
    let lesson = match tx.get(&lessons, id)? {
        Some((Value::Object(ObjType::Map), lesson)) => lesson,
        _ => return Err(LessonError::NotFound(id.to_string())),
    };
    if let Some(title) = title {
        check_title(title)?;
        tx.put(&lesson, "title", title.trim())?;
    }
    if let Some(body) = body {
        check_body(body)?;
        match tx.get(&lesson, "body")? {
            Some((Value::Object(ObjType::Text), text)) => tx.update_text(&text, body)?,
            _ => {
                let text = tx.put_object(&lesson, "body", ObjType::Text)?;
                tx.splice_text(&text, 0, 0, body)?;
            }
        }
    }
    if let Some(tags) = tags {
        check_tags(tags)?;
        let list = tx.put_object(&lesson, "tags", ObjType::List)?;
        for (i, tag) in tags.iter().enumerate() {
            tx.insert(&list, i, tag.trim())?;
        }
    }
    if let Some(step) = method_step {
        tx.put(&lesson, "method_step", step)?;
    }
    if let Some(archived) = archived {
        tx.put(&lesson, "archived", archived)?;
    }
    tx.put(&lesson, "updated_ms", now_ms)?;
    Ok(())
}

/// Removes a lesson (for a new generation of the document: the removal itself never reaches
/// any node, only the document without it).
pub fn delete(tx: &mut Transaction<'_>, id: &str) -> Result<(), LessonError> {
    let lessons = lessons_map(tx)?;
    match tx.get(&lessons, id)? {
        Some((Value::Object(ObjType::Map), _)) => Ok(tx.delete(&lessons, id)?),
        _ => Err(LessonError::NotFound(id.to_string())),
    }
}

/// The text fields of a lesson a redaction may clear.
pub const REDACTABLE_FIELDS: [&str; 3] = ["title", "body", "tags"];

/// Clears the text fields named (each one of [`REDACTABLE_FIELDS`]) of a lesson, for a new
/// generation of the document; the lesson stays, with `updated_ms` set to `now_ms`.
pub fn redact(
    tx: &mut Transaction<'_>,
    id: &str,
    fields: &[&str],
    now_ms: i64,
) -> Result<(), LessonError> {
    let lessons = lessons_map(tx)?;
    let lesson = match tx.get(&lessons, id)? {
        Some((Value::Object(ObjType::Map), lesson)) => lesson,
        _ => return Err(LessonError::NotFound(id.to_string())),
    };
    for field in fields {
        match *field {
            "title" => tx.put(&lesson, "title", "")?,
            "body" => drop(tx.put_object(&lesson, "body", ObjType::Text)?),
            "tags" => drop(tx.put_object(&lesson, "tags", ObjType::List)?),
            other => {
                return Err(invalid(
                    "fields",
                    format!("{other:?} is not one of title, body, tags"),
                ))
            }
        }
    }
    tx.put(&lesson, "updated_ms", now_ms)?;
    Ok(())
}

fn read_str(doc: &Automerge, obj: &automerge::ObjId, key: &str) -> String {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => s.as_str().unwrap_or_default().to_string(),
        Ok(Some((Value::Object(ObjType::Text), text))) => doc.text(&text).unwrap_or_default(),
        _ => String::new(),
    }
}

fn read_i64(doc: &Automerge, obj: &automerge::ObjId, key: &str) -> i64 {
    match doc.get(obj, key) {
        Ok(Some((Value::Scalar(s), _))) => s.as_i64().unwrap_or_default(),
        _ => 0,
    }
}

/// One lesson of a city's lessons document, if it exists.
pub fn read_one(doc: &Automerge, city: &str, id: &str) -> Option<LessonRecord> {
    let Ok(Some((Value::Object(ObjType::Map), lessons))) = doc.get(ROOT, "lessons") else {
        return None;
    };
    let Ok(Some((Value::Object(ObjType::Map), lesson))) = doc.get(&lessons, id) else {
        return None;
    };
    Some(read_lesson(doc, city, id, &lesson))
}

fn read_lesson(doc: &Automerge, city: &str, id: &str, lesson: &automerge::ObjId) -> LessonRecord {
    let tags = match doc.get(lesson, "tags") {
        Ok(Some((Value::Object(ObjType::List), list))) => (0..doc.length(&list))
            .filter_map(|i| match doc.get(&list, i) {
                Ok(Some((Value::Scalar(tag), _))) => tag.as_str().map(str::to_string),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    LessonRecord {
        id: id.to_string(),
        city: city.to_string(),
        title: read_str(doc, lesson, "title"),
        body: read_str(doc, lesson, "body"),
        tags,
        created_ms: read_i64(doc, lesson, "created_ms"),
        updated_ms: read_i64(doc, lesson, "updated_ms"),
        method_step: read_str(doc, lesson, "method_step"),
        archived: crate::domain::docmodel::get_bool(doc, lesson, "archived"),
    }
}

/// What a listing needs to filter and order one lesson, read without its text unless asked.
#[derive(Debug, Clone)]
pub struct ListedLesson {
    pub id: String,
    pub created_ms: i64,
    /// The whole record, read only when a filter needs more than the creation time and the
    /// archived flag.
    pub record: Option<LessonRecord>,
    pub archived: bool,
}

/// Listings of lessons documents ([`list`]), kept per city and reused while the document's
/// heads are unchanged, so a page of the national feed reads no lesson that did not change
/// since the last listing (a changed document is listed again, whole).
#[derive(Default)]
pub struct ListingCache {
    docs: std::sync::Mutex<std::collections::HashMap<String, CachedListing>>,
}

#[derive(Default)]
struct CachedListing {
    heads: Vec<automerge::ChangeHash>,
    /// Creation time and archived flag of each lesson.
    brief: Option<std::sync::Arc<Vec<ListedLesson>>>,
    /// Whole records (for filters on tags, step or text).
    full: Option<std::sync::Arc<Vec<ListedLesson>>>,
}

impl ListingCache {
    /// The listing of `doc` (the lessons of `city`), whole records if `full`.
    pub fn listing(
        &self,
        doc: &Automerge,
        city: &str,
        full: bool,
    ) -> std::sync::Arc<Vec<ListedLesson>> {
        let heads = doc.get_heads();
        let mut docs = self.docs.lock().unwrap_or_else(|p| p.into_inner());
        let entry = docs.entry(city.to_string()).or_default();
        if entry.heads != heads {
            *entry = CachedListing {
                heads,
                ..Default::default()
            };
        }
        if !full {
            if let Some(listing) = entry.full.as_ref().or(entry.brief.as_ref()) {
                return listing.clone();
            }
        }
        let slot = if full {
            &mut entry.full
        } else {
            &mut entry.brief
        };
        slot.get_or_insert_with(|| std::sync::Arc::new(list(doc, city, full)))
            .clone()
    }
}

/// Every lesson of a city's lessons document for a listing: creation time and archived flag
/// for each (cheap), the whole record only when `full` is set (a filter on tags, step or text).
pub fn list(doc: &Automerge, city: &str, full: bool) -> Vec<ListedLesson> {
    let Ok(Some((Value::Object(ObjType::Map), lessons))) = doc.get(ROOT, "lessons") else {
        return Vec::new();
    };
    doc.map_range(&lessons, ..)
        .filter(|item| matches!(item.value, automerge::ValueRef::Object(ObjType::Map)))
        .map(|item| {
            let lesson = item.id();
            if full {
                let record = read_lesson(doc, city, &item.key, &lesson);
                ListedLesson {
                    id: record.id.clone(),
                    created_ms: record.created_ms,
                    archived: record.archived,
                    record: Some(record),
                }
            } else {
                ListedLesson {
                    id: item.key.to_string(),
                    created_ms: read_i64(doc, &lesson, "created_ms"),
                    archived: crate::domain::docmodel::get_bool(doc, &lesson, "archived"),
                    record: None,
                }
            }
        })
        .collect()
}

/// What a listing of lessons keeps: whose lessons (`city`, `among`) and which of them
/// (tag, method step, text, archived). Built by the API from a request; knows nothing of it.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// One city's lessons only (none: every city's).
    pub city: Option<String>,
    /// Only lessons of these cities (a county's; none: no such limit).
    pub among: Option<std::collections::BTreeSet<String>>,
    /// Only lessons carrying this tag (empty: any).
    pub tag: String,
    /// Only lessons linked to this method step (empty: any).
    pub method_step: String,
    /// Only lessons whose title, body or tags contain this text, lowercase (empty: any).
    pub query: String,
    /// Archived lessons too.
    pub show_archived: bool,
}

impl ListFilter {
    /// Whether the lessons of `city` are listed at all.
    pub fn takes_city(&self, city: &str) -> bool {
        self.city.as_deref().is_none_or(|c| c == city)
            && self.among.as_ref().is_none_or(|among| among.contains(city))
    }

    /// Whether the filter needs whole records (tags, step or text), not only the creation
    /// time and the archived flag.
    pub fn needs_records(&self) -> bool {
        !self.tag.is_empty() || !self.method_step.is_empty() || !self.query.is_empty()
    }

    /// Whether a listed lesson is kept (its city taken already): its record is read when
    /// [`ListFilter::needs_records`] says so.
    pub fn keeps(&self, lesson: &ListedLesson) -> bool {
        if lesson.archived && !self.show_archived {
            return false;
        }
        let Some(l) = &lesson.record else {
            return true;
        };
        let query = self.query.as_str();
        (self.tag.is_empty() || l.tags.contains(&self.tag))
            && (self.method_step.is_empty() || l.method_step == self.method_step)
            && (query.is_empty()
                || l.title.to_lowercase().contains(query)
                || l.body.to_lowercase().contains(query)
                || l.tags.iter().any(|t| t.to_lowercase().contains(query)))
    }
}

/// Every lesson in a city's lessons document.
pub fn read_all(doc: &Automerge, city: &str) -> Vec<LessonRecord> {
    let Ok(Some((Value::Object(ObjType::Map), lessons))) = doc.get(ROOT, "lessons") else {
        return Vec::new();
    };
    doc.map_range(&lessons, ..)
        .filter(|item| matches!(item.value, automerge::ValueRef::Object(ObjType::Map)))
        .map(|item| read_lesson(doc, city, &item.key, &item.id()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_filter_takes_the_cities_and_lessons_asked_for() {
        let county = ListFilter {
            among: Some(["lund".to_string(), "malmo".to_string()].into()),
            ..Default::default()
        };
        assert!(county.takes_city("malmo") && !county.takes_city("umea"));
        let one_outside = ListFilter {
            city: Some("umea".into()),
            ..county.clone()
        };
        assert!(!one_outside.takes_city("umea") && !one_outside.takes_city("malmo"));
        assert!(ListFilter::default().takes_city("umea"));
        let record = LessonRecord {
            id: "a".into(),
            city: "malmo".into(),
            title: "Night shifts".into(),
            body: "Cleaning staff saw most.".into(),
            tags: vec!["hotels".into()],
            created_ms: 1,
            updated_ms: 1,
            method_step: String::new(),
            archived: false,
        };
        let listed = |archived: bool| ListedLesson {
            id: "a".into(),
            created_ms: 1,
            record: Some(LessonRecord {
                archived,
                ..record.clone()
            }),
            archived,
        };
        let text = ListFilter {
            query: "cleaning".into(),
            tag: "hotels".into(),
            ..Default::default()
        };
        assert!(text.needs_records() && !ListFilter::default().needs_records());
        assert!(text.keeps(&listed(false)) && !text.keeps(&listed(true)));
        let other_tag = ListFilter {
            tag: "transport".into(),
            ..Default::default()
        };
        assert!(!other_tag.keeps(&listed(false)));
        let archived_too = ListFilter {
            show_archived: true,
            ..text
        };
        assert!(archived_too.keeps(&listed(true)));
    }

    fn add(doc: &mut Automerge, id: &str, title: &str, now_ms: i64) {
        let new = NewLesson {
            title,
            body: "Body",
            tags: &[],
            method_step: "",
        };
        doc.transact(|tx| create(tx, id, &new, now_ms))
            .map_err(|f| f.error)
            .unwrap();
    }

    #[test]
    fn a_listing_is_reused_while_the_document_is_unchanged_and_redone_after_a_change() {
        let cache = ListingCache::default();
        let mut doc = Automerge::new();
        add(&mut doc, "a", "First", 1);
        let first = cache.listing(&doc, "lund", false);
        assert_eq!(first.len(), 1);
        assert!(first[0].record.is_none());
        // Unchanged: the same listing, not read again.
        assert!(std::sync::Arc::ptr_eq(
            &first,
            &cache.listing(&doc, "lund", false)
        ));
        // Whole records when a filter needs them, which then serve the brief listing too.
        let full = cache.listing(&doc, "lund", true);
        assert_eq!(full[0].record.as_ref().unwrap().title, "First");
        assert!(std::sync::Arc::ptr_eq(
            &full,
            &cache.listing(&doc, "lund", false)
        ));
        // A change to the document: listed again, with the new lesson.
        add(&mut doc, "b", "Second", 2);
        let after = cache.listing(&doc, "lund", false);
        let mut ids: Vec<&str> = after.iter().map(|l| l.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
        // Each city's document is kept apart.
        assert_eq!(cache.listing(&Automerge::new(), "malmo", false).len(), 0);
        assert_eq!(cache.listing(&doc, "lund", false).len(), 2);
    }

    /// What the API answers for a new lesson without reading it back is what a read of it
    /// returns, spaces around the title and tags and all.
    #[test]
    fn the_created_record_is_what_a_read_of_the_new_lesson_returns() {
        let cases: [(&str, &str, &[&str], &str); 3] = [
            ("Plain", "A body.", &[], ""),
            (
                "  Spaced title \t",
                " body with spaces kept \n",
                &[" tag ", "x", "\tflik"],
                "step-2",
            ),
            ("Å ä ö", "Rad ett\nRad två", &["Ålder", " ung "], "steg-1"),
        ];
        for (i, (title, body, tags, step)) in cases.into_iter().enumerate() {
            let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            let id = format!("l{i}");
            let mut doc = Automerge::new();
            let new = NewLesson {
                title,
                body,
                tags: &tags,
                method_step: step,
            };
            doc.transact(|tx| create(tx, &id, &new, 42))
                .map_err(|f| f.error)
                .unwrap();
            assert_eq!(
                read_one(&doc, "lund", &id),
                Some(new.record("lund", &id, 42)),
                "case {i}"
            );
        }
    }
}
