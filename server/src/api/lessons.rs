//! The `Lessons` service: a city writes its own lessons; every node reads everyone's, and a
//! county hub also lists its own cities' lessons alone (`ListLessonsRequest.county`).

use sfs_proto::v1 as pb;
use sfs_sync::{Role, ShareableDocId};
use tonic::{Request, Response, Status};

use super::{blocking, new_id, now_ms, require, ApiState, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::api::tokens::ApiRole;
use crate::domain::lessons::{self, LessonChanges, LessonError, LessonRecord};
use crate::domain::method::{self, method_doc};
use crate::federation::sync::EditFailure;

/// The `Lessons` gRPC service.
pub struct LessonsService(pub ApiState);

fn to_pb((record, etag): (LessonRecord, String)) -> pb::Lesson {
    pb::Lesson {
        etag,
        name: format!("cities/{}/lessons/{}", record.city, record.id),
        city: record.city,
        title: record.title,
        body: record.body,
        tags: record.tags,
        create_time_ms: record.created_ms,
        update_time_ms: record.updated_ms,
        method_step: record.method_step,
        archived: record.archived,
    }
}

/// Splits `cities/{city}/lessons/{id}`.
fn parse_name(name: &str) -> Result<(String, String), Status> {
    match name.split('/').collect::<Vec<_>>().as_slice() {
        ["cities", city, "lessons", id]
            if !id.is_empty() && sfs_sync::scope::validate_node_name(city).is_ok() =>
        {
            Ok((city.to_string(), id.to_string()))
        }
        _ => Err(Status::invalid_argument(format!(
            "field `name`: {} is not of the form cities/{{city}}/lessons/{{lesson}}",
            super::quote(name)
        ))),
    }
}

fn edit_status(err: EditFailure<LessonError>) -> Status {
    match err {
        EditFailure::Engine(err @ sfs_sync::EngineError::UnknownVersion(_)) => {
            Status::invalid_argument(format!("field `lesson.etag`: {err}"))
        }
        EditFailure::Engine(err) => super::engine_status(err),
        EditFailure::Storage(err) => Status::unavailable(err.to_string()),
        EditFailure::Rejected(LessonError::NotFound(id)) => {
            Status::not_found(format!("lesson {id} does not exist"))
        }
        EditFailure::Rejected(err @ LessonError::Invalid { .. }) => {
            Status::invalid_argument(err.to_string())
        }
        EditFailure::Rejected(err) => Status::internal(err.to_string()),
        EditFailure::Private(finding) => Status::invalid_argument(finding.to_string()),
    }
}

impl LessonsService {
    fn own_lessons(&self) -> Result<(String, ShareableDocId), Status> {
        let me = self.0.sync.me();
        if me.role() != Role::City {
            return Err(Status::failed_precondition(
                "the hub does not write lessons; lessons are owned by the city that writes them",
            ));
        }
        let doc =
            ShareableDocId::lessons(me.name()).map_err(|e| Status::internal(e.to_string()))?;
        Ok((me.name().to_string(), doc))
    }

    /// A lesson and the version of its city's lessons document.
    fn read_lesson(&self, city: &str, id: &str) -> Result<(LessonRecord, String), Status> {
        let doc =
            ShareableDocId::lessons(city).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.0
            .sync
            .read(|engine| {
                let d = engine.document(&doc)?;
                let version = crate::domain::docmodel::version_of(&d.get_heads());
                lessons::read_one(d, city, id).map(|l| (l, version))
            })
            .ok_or_else(|| Status::not_found(format!("cities/{city}/lessons/{id} does not exist")))
    }

    /// The lessons document and the lesson id of `name`, a lesson of this node's own city.
    fn own_lesson(&self, name: &str) -> Result<(ShareableDocId, String), Status> {
        let (city, id) = parse_name(name)?;
        let (own_city, doc) = self.own_lessons()?;
        if city != own_city {
            return Err(Status::failed_precondition(format!(
                "cities/{city}/lessons/{id} is owned by {city}; this node ({own_city}) can only \
                 remove text from its own lessons"
            )));
        }
        self.read_lesson(&city, &id)?;
        Ok((doc, id))
    }

    /// Starts a new generation of the city's lessons without what `remove` takes out, after
    /// writing `action` on `resource` by `actor` to the access log (durably: no removal goes
    /// unrecorded). Returns the new generation.
    async fn new_generation(
        &self,
        actor: &str,
        action: &str,
        resource: &str,
        doc: ShareableDocId,
        remove: impl FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<(), LessonError>
            + Send
            + 'static,
    ) -> Result<u64, Status> {
        let entries = super::access_entries(actor, action, [resource.to_string()]);
        let log = self.0.access_log.clone();
        blocking(move || log.append(&entries))
            .await?
            .map_err(|err| Status::unavailable(format!("writing the access log failed: {err}")))?;
        let sync = self.0.sync.clone();
        blocking(move || {
            sync.new_generation(&doc, remove)
                .map(|()| sync.generation(&doc).unwrap_or(0))
        })
        .await?
        .map_err(edit_status)
    }

    /// The cities of `county`, which must be this node: only a county hub knows its cities.
    fn county_cities(&self, county: &str) -> Result<std::collections::BTreeSet<String>, Status> {
        sfs_sync::scope::validate_node_name(county).map_err(|e| {
            Status::invalid_argument(format!(
                "field `county`: {} is not a county hub's id: {e}",
                super::quote(county)
            ))
        })?;
        let me = self.0.sync.me();
        match &self.0.county_cities {
            Some(members) if me.name() == county => Ok(members.list()),
            _ => Err(Status::failed_precondition(format!(
                "field `county`: only the county hub {county} knows which cities are its own; \
                 this node is {me}: ask the county hub, or list without `county`"
            ))),
        }
    }

    /// Checks that a method step link names a step of the handbook this node has.
    fn check_method_step(&self, step: &str) -> Result<(), Status> {
        if step.is_empty() {
            return Ok(());
        }
        let known = self.0.sync.read(|engine| {
            engine
                .document(&method_doc())
                .is_some_and(|doc| method::has_step(doc, step))
        });
        if known {
            Ok(())
        } else {
            Err(Status::invalid_argument(format!(
                "field `method_step`: {} is not a step of the handbook this node has",
                super::quote(step)
            )))
        }
    }
}

#[tonic::async_trait]
impl pb::lessons_server::Lessons for LessonsService {
    async fn create_lesson(
        &self,
        request: Request<pb::CreateLessonRequest>,
    ) -> Result<Response<pb::Lesson>, Status> {
        require(&request, ApiRole::Editor)?;
        let lesson = request
            .into_inner()
            .lesson
            .ok_or_else(|| Status::invalid_argument("field `lesson`: is required"))?;
        let (city, doc) = self.own_lessons()?;
        self.check_method_step(&lesson.method_step)?;
        let id = new_id();
        let now = now_ms();
        let sync = self.0.sync.clone();
        // The answer is the lesson as written, with the version the edit made: no second
        // trip through the engine lock to read it back.
        let (record, heads) = blocking(move || {
            let new = lessons::NewLesson {
                title: &lesson.title,
                body: &lesson.body,
                tags: &lesson.tags,
                method_step: &lesson.method_step,
            };
            sync.edit_with_heads(&doc, |tx| lessons::create(tx, &id, &new, now))
                .map(|((), heads)| (new.record(&city, &id, now), heads))
        })
        .await?
        .map_err(edit_status)?;
        match heads {
            Some(heads) => Ok(Response::new(to_pb((
                record,
                crate::domain::docmodel::version_of(&heads),
            )))),
            // A new lesson always changes the document; read it back if it somehow did not.
            None => Ok(Response::new(to_pb(
                self.read_lesson(&record.city, &record.id)?,
            ))),
        }
    }

    async fn get_lesson(
        &self,
        request: Request<pb::GetLessonRequest>,
    ) -> Result<Response<pb::Lesson>, Status> {
        require(&request, ApiRole::Reader)?;
        let (city, id) = parse_name(&request.get_ref().name)?;
        Ok(Response::new(to_pb(self.read_lesson(&city, &id)?)))
    }

    async fn update_lesson(
        &self,
        request: Request<pb::UpdateLessonRequest>,
    ) -> Result<Response<pb::Lesson>, Status> {
        require(&request, ApiRole::Editor)?;
        let request = request.into_inner();
        let lesson = request
            .lesson
            .ok_or_else(|| Status::invalid_argument("field `lesson`: is required"))?;
        let (city, id) = parse_name(&lesson.name)?;
        let mask = if request.update_mask.is_empty() {
            vec![
                "title".into(),
                "body".into(),
                "tags".into(),
                "method_step".into(),
            ]
        } else {
            super::update_mask(
                request.update_mask,
                &["title", "body", "tags", "method_step", "archived"],
            )?
        };
        let (own_city, doc) = self.own_lessons()?;
        if city != own_city {
            return Err(Status::failed_precondition(format!(
                "cities/{city}/lessons/{id} is owned by {city}; this node ({own_city}) can only change its own lessons"
            )));
        }
        self.read_lesson(&city, &id)?;
        let has = |field: &str| mask.iter().any(|m| m == field);
        if has("method_step") {
            self.check_method_step(&lesson.method_step)?;
        }
        let (set_title, set_body, set_tags, set_step, set_archived) = (
            has("title"),
            has("body"),
            has("tags"),
            has("method_step"),
            has("archived"),
        );
        let base = if lesson.etag.is_empty() {
            None
        } else {
            Some(
                crate::domain::docmodel::parse_version(&lesson.etag).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "field `lesson.etag`: {} is not a version from this API",
                        super::quote(&lesson.etag)
                    ))
                })?,
            )
        };
        let sync = self.0.sync.clone();
        let lesson_id = id.clone();
        blocking(move || {
            let changes = LessonChanges {
                title: set_title.then_some(lesson.title.as_str()),
                body: set_body.then_some(lesson.body.as_str()),
                tags: set_tags.then_some(lesson.tags.as_slice()),
                method_step: set_step.then_some(lesson.method_step.as_str()),
                archived: set_archived.then_some(lesson.archived),
            };
            sync.edit_at(&doc, base.as_deref(), |tx| {
                lessons::update(tx, &lesson_id, changes, now_ms())
            })
        })
        .await?
        .map_err(edit_status)?;
        Ok(Response::new(to_pb(self.read_lesson(&city, &id)?)))
    }

    async fn delete_lesson(
        &self,
        request: Request<pb::DeleteLessonRequest>,
    ) -> Result<Response<pb::DeleteLessonResponse>, Status> {
        let caller = require(&request, ApiRole::Editor)?;
        let name = request.into_inner().name;
        let (doc, id) = self.own_lesson(&name)?;
        let generation = self
            .new_generation(&caller.actor, "delete lesson", &name, doc, move |tx| {
                lessons::delete(tx, &id)
            })
            .await?;
        Ok(Response::new(pb::DeleteLessonResponse { generation }))
    }

    async fn redact_lesson(
        &self,
        request: Request<pb::RedactLessonRequest>,
    ) -> Result<Response<pb::RedactLessonResponse>, Status> {
        let caller = require(&request, ApiRole::Coordinator)?;
        let request = request.into_inner();
        let mut fields: Vec<&'static str> = Vec::new();
        for field in &request.fields {
            let known = lessons::REDACTABLE_FIELDS
                .iter()
                .find(|f| **f == field.as_str())
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "field `fields`: {} is not one of title, body, tags",
                        super::quote(field)
                    ))
                })?;
            if !fields.contains(known) {
                fields.push(known);
            }
        }
        if fields.is_empty() {
            fields = lessons::REDACTABLE_FIELDS.to_vec();
        }
        let (doc, id) = self.own_lesson(&request.name)?;
        let action = format!("redact lesson ({})", fields.join(", "));
        let lesson_id = id.clone();
        let generation = self
            .new_generation(&caller.actor, &action, &request.name, doc, move |tx| {
                lessons::redact(tx, &lesson_id, &fields, now_ms())
            })
            .await?;
        let (city, _) = self.own_lessons()?;
        Ok(Response::new(pb::RedactLessonResponse {
            lesson: Some(to_pb(self.read_lesson(&city, &id)?)),
            generation,
        }))
    }

    async fn list_lessons(
        &self,
        request: Request<pb::ListLessonsRequest>,
    ) -> Result<Response<pb::ListLessonsResponse>, Status> {
        require(&request, ApiRole::Reader)?;
        let request = request.into_inner();
        let city_filter = match request.parent.split('/').collect::<Vec<_>>().as_slice() {
            ["cities", "-"] => None,
            ["cities", city] if sfs_sync::scope::validate_node_name(city).is_ok() => {
                Some(city.to_string())
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "field `parent`: {} must be cities/{{city}} or cities/-",
                    super::quote(&request.parent)
                )))
            }
        };
        let page_size = match request.page_size {
            n if n < 0 => {
                return Err(Status::invalid_argument(
                    "field `page_size`: must not be negative",
                ))
            }
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        let among = if request.county.is_empty() {
            None
        } else {
            Some(self.county_cities(&request.county)?)
        };
        // Filters on tags, step or text need whole records; otherwise only the creation time and
        // the archived flag of each lesson are read, and whole records for the page alone.
        let filter = lessons::ListFilter {
            city: city_filter,
            among,
            query: request.query.trim().to_lowercase(),
            tag: request.tag,
            method_step: request.method_step,
            show_archived: request.show_archived,
        };
        let full = filter.needs_records();
        let token = if request.page_token.is_empty() {
            None
        } else {
            Some(
                request
                    .page_token
                    .split_once(':')
                    .and_then(|(c, n)| Some((c.parse::<i64>().ok()?, n.to_string())))
                    .ok_or_else(|| {
                        Status::invalid_argument(
                            "field `page_token`: not a token from a previous page",
                        )
                    })?,
            )
        };
        let listings = &self.0.lesson_listings;
        let (total, page, more) = self.0.sync.read(|engine| {
            // Each lessons document's listing (from the cache while it is unchanged) and version.
            let docs: Vec<(&str, std::sync::Arc<Vec<lessons::ListedLesson>>, String)> = engine
                .documents()
                .filter_map(|(id, doc)| {
                    let city = id.as_str().strip_prefix("shared/lessons/")?;
                    if !filter.takes_city(city) {
                        return None;
                    }
                    let version = crate::domain::docmodel::version_of(&doc.get_heads());
                    Some((city, listings.listing(doc, city, full), version))
                })
                .collect();
            // (city, listed lesson, version of its document)
            let mut all: Vec<(&str, &lessons::ListedLesson, &String)> = docs
                .iter()
                .flat_map(|(city, listing, version)| {
                    listing.iter().map(move |l| (*city, l, version))
                })
                .filter(|(_, l, _)| filter.keeps(l))
                .collect();
            // Newest first; ties broken by name so that pages are stable.
            all.sort_by(|(ca, a, _), (cb, b, _)| {
                b.created_ms
                    .cmp(&a.created_ms)
                    .then_with(|| (ca, &a.id).cmp(&(cb, &b.id)))
            });
            let start = match &token {
                None => 0,
                Some((created, name)) => all
                    .iter()
                    .position(|(city, l, _)| {
                        l.created_ms < *created
                            || (l.created_ms == *created && format!("{city}/{}", l.id) > *name)
                    })
                    .unwrap_or(all.len()),
            };
            let page: Vec<(LessonRecord, String)> = all
                .iter()
                .skip(start)
                .take(page_size)
                .filter_map(|(city, l, version)| {
                    let record = match &l.record {
                        Some(record) => record.clone(),
                        None => {
                            let doc = engine.document(&ShareableDocId::lessons(city).ok()?)?;
                            lessons::read_one(doc, city, &l.id)?
                        }
                    };
                    Some((record, (*version).clone()))
                })
                .collect();
            let more = start + page.len() < all.len();
            (all.len(), page, more)
        });
        let total_size = total as i32;
        let next_page_token = if more {
            page.last()
                .map(|(l, _)| format!("{}:{}/{}", l.created_ms, l.city, l.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListLessonsResponse {
            lessons: page.into_iter().map(to_pb).collect(),
            next_page_token,
            total_size,
        }))
    }
}
