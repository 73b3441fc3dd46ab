//! The `Method` service: the national handbook, written at the hub, read everywhere.

use automerge::transaction::Transaction;
use sfs_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{doc_error, new_id, now_ms, paginate, parse_name, require, update_mask, ApiState};
use crate::api::tokens::ApiRole;
use crate::domain::docmodel as dm;
use crate::domain::handbook_notes::{self as notes, notes_doc};
use crate::domain::method::{self as m, method_doc};

/// The `Method` gRPC service.
pub struct MethodService(pub ApiState);

use super::not_found;

fn has(mask: &[String], field: &str) -> bool {
    mask.iter().any(|m| m == field)
}

impl MethodService {
    /// Changes the handbook; refused with FAILED_PRECONDITION anywhere but at the hub.
    async fn edit<R: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Transaction<'_>) -> Result<R, Status> + Send + 'static,
    ) -> Result<R, Status> {
        self.0.edit_shared(method_doc(), change).await
    }

    fn read<R>(&self, f: impl FnOnce(&automerge::Automerge) -> R) -> R {
        self.0
            .sync
            .read(|engine| match engine.document(&method_doc()) {
                Some(doc) => f(doc),
                None => f(&automerge::Automerge::new()),
            })
    }

    /// Checks a signed release before it is stored: its fields, its signature (with the hub's
    /// release key, if configured), its heads, and that it has not expired.
    fn check_signed_release(&self, release: &pb::Release) -> Result<(), Status> {
        use sfs_release::{ReleaseError, Statement};
        if release.version_label != release.version_label.trim() {
            return Err(Status::invalid_argument(
                "field `version_label`: a signed label must not start or end with spaces",
            ));
        }
        let verified = match self.0.releases.key() {
            Some(key) => key.verify(release),
            None => {
                tracing::warn!(
                    label = %release.version_label,
                    "storing a signed release without checking it: no method.release_public_key"
                );
                Statement::of(release)
            }
        };
        let statement = verified.map_err(|err| match err {
            ReleaseError::BadSignature { .. } => Status::permission_denied(err.to_string()),
            _ => Status::invalid_argument(err.to_string()),
        })?;
        if release.expire_time_ms <= now_ms() {
            return Err(Status::failed_precondition(
                "field `expire_time_ms`: the release has already expired; sign it again",
            ));
        }
        let current = self.read(m::generation);
        if statement.generation != current {
            return Err(Status::failed_precondition(format!(
                "field `generation`: the release was signed over generation {} of the handbook; \
                 this hub holds generation {current} (it was redacted since): sign it again",
                statement.generation
            )));
        }
        let unknown = self.read(|doc| {
            statement.heads.iter().any(|h| {
                doc.get_change_meta_by_hash(&automerge::ChangeHash(*h))
                    .is_none()
            })
        });
        if unknown {
            return Err(Status::failed_precondition(
                "field `version`: the release names heads this hub's handbook does not have",
            ));
        }
        Ok(())
    }

    /// Refuses the city's own notes at the hub, which has no city of its own.
    fn city_only(&self) -> Result<(), Status> {
        if self.0.sync.me().role() != sfs_sync::Role::City {
            return Err(Status::failed_precondition(
                "step notes are kept by each city; the hub keeps none",
            ));
        }
        Ok(())
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
        collection: &'static str,
        child: Option<(&'static str, &'static str)>,
    ) -> Result<Response<pb::Empty>, Status> {
        require(&request, ApiRole::Coordinator)?;
        let name = request.into_inner().name;
        let id = parse_name(&name, &format!("method/{collection}"), "name")?;
        self.edit(move |tx| {
            if let Some((child_collection, parent_field)) = child {
                let in_use = dm::records(tx, child_collection)
                    .into_iter()
                    .any(|(_, obj)| dm::get_str(tx, &obj, parent_field) == name);
                if in_use {
                    return Err(Status::failed_precondition(format!(
                        "{name} still has {child_collection}; delete them first"
                    )));
                }
            }
            super::delete_or_not_found(tx, collection, &id, &name)
        })
        .await?;
        Ok(Response::new(pb::Empty {}))
    }
}

#[tonic::async_trait]
impl pb::method_server::Method for MethodService {
    async fn get_handbook(
        &self,
        request: Request<pb::GetHandbookRequest>,
    ) -> Result<Response<pb::Handbook>, Status> {
        require(&request, ApiRole::Reader)?;
        let latest = request.into_inner().latest;
        let tracker = &self.0.releases;
        if tracker.key().is_some() && !latest {
            // Serve what the national coordinator signed: the handbook at the running release.
            // Nothing else, ever: not the newest (unsigned) state, not while the running
            // release's content is gone after a redaction.
            let generation = self.read(m::generation);
            let awaiting = pb::Handbook {
                generation,
                awaiting_release: tracker.awaiting(),
                ..Default::default()
            };
            let Some(running) = tracker.running() else {
                return Ok(Response::new(awaiting));
            };
            let heads = dm::parse_version(&running.version)
                .ok_or_else(|| Status::internal("the running release has a damaged version"))?;
            let chapters = self.read(|doc| {
                // The handbook may have been replaced by a newer generation since the tracker
                // last looked: then the release's heads are gone, and nothing is served.
                let present = m::generation(doc) == running.generation
                    && heads
                        .iter()
                        .all(|h| doc.get_change_meta_by_hash(h).is_some());
                if !present {
                    return Ok(None);
                }
                doc.fork_at(&heads)
                    .map(|at| Some(m::read_handbook(&at)))
                    .map_err(doc_error)
            })?;
            let Some(chapters) = chapters else {
                return Ok(Response::new(pb::Handbook {
                    awaiting_release: true,
                    ..awaiting
                }));
            };
            return Ok(Response::new(pb::Handbook {
                chapters,
                version: running.version,
                current_release: running.version_label,
                verified: true,
                generation: running.generation,
                awaiting_release: false,
            }));
        }
        Ok(Response::new(self.read(|doc| {
            pb::Handbook {
                chapters: m::read_handbook(doc),
                version: dm::version_of(&doc.get_heads()),
                current_release: m::releases(doc)
                    .into_iter()
                    .find(|r| r.generation == m::generation(doc))
                    .map(|r| r.version_label)
                    .unwrap_or_default(),
                verified: false,
                generation: m::generation(doc),
                awaiting_release: false,
            }
        })))
    }

    async fn create_chapter(
        &self,
        request: Request<pb::CreateChapterRequest>,
    ) -> Result<Response<pb::Chapter>, Status> {
        require(&request, ApiRole::Coordinator)?;
        let chapter = request
            .into_inner()
            .chapter
            .ok_or_else(|| Status::invalid_argument("field `chapter`: is required"))?;
        let id = new_id();
        let created = self
            .edit(move |tx| {
                let obj = dm::new_record(tx, "chapters", &id).map_err(doc_error)?;
                m::write_chapter(tx, &obj, &chapter)?;
                Ok(m::read_chapter(tx, &id, &obj))
            })
            .await?;
        Ok(Response::new(created))
    }

    async fn update_chapter(
        &self,
        request: Request<pb::UpdateChapterRequest>,
    ) -> Result<Response<pb::Chapter>, Status> {
        require(&request, ApiRole::Coordinator)?;
        let request = request.into_inner();
        let new = request
            .chapter
            .ok_or_else(|| Status::invalid_argument("field `chapter`: is required"))?;
        let mask = update_mask(request.update_mask, &["title", "introduction", "position"])?;
        let id = parse_name(&new.name, "method/chapters", "chapter.name")?;
        let updated = self
            .edit(move |tx| {
                let obj = dm::record(tx, "chapters", &id).ok_or_else(|| not_found(&new.name))?;
                let mut chapter = m::read_chapter(tx, &id, &obj);
                if has(&mask, "title") {
                    chapter.title = new.title;
                }
                if has(&mask, "introduction") {
                    chapter.introduction = new.introduction;
                }
                if has(&mask, "position") {
                    chapter.position = new.position;
                }
                m::write_chapter(tx, &obj, &chapter)?;
                Ok(chapter)
            })
            .await?;
        Ok(Response::new(updated))
    }

    async fn delete_chapter(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.delete(request, "chapters", Some(("steps", "chapter")))
            .await
    }

    async fn create_step(
        &self,
        request: Request<pb::CreateStepRequest>,
    ) -> Result<Response<pb::Step>, Status> {
        require(&request, ApiRole::Coordinator)?;
        let step = request
            .into_inner()
            .step
            .ok_or_else(|| Status::invalid_argument("field `step`: is required"))?;
        let id = new_id();
        let created = self
            .edit(move |tx| {
                let obj = dm::new_record(tx, "steps", &id).map_err(doc_error)?;
                m::write_step(tx, &obj, &step)?;
                Ok(m::read_step(tx, &id, &obj))
            })
            .await?;
        Ok(Response::new(created))
    }

    async fn update_step(
        &self,
        request: Request<pb::UpdateStepRequest>,
    ) -> Result<Response<pb::Step>, Status> {
        require(&request, ApiRole::Coordinator)?;
        let request = request.into_inner();
        let new = request
            .step
            .ok_or_else(|| Status::invalid_argument("field `step`: is required"))?;
        let mask = update_mask(request.update_mask, &["title", "description", "position"])?;
        let id = parse_name(&new.name, "method/steps", "step.name")?;
        let updated = self
            .edit(move |tx| {
                let obj = dm::record(tx, "steps", &id).ok_or_else(|| not_found(&new.name))?;
                let mut step = m::read_step(tx, &id, &obj);
                if has(&mask, "title") {
                    step.title = new.title;
                }
                if has(&mask, "description") {
                    step.description = new.description;
                }
                if has(&mask, "position") {
                    step.position = new.position;
                }
                m::write_step(tx, &obj, &step)?;
                Ok(step)
            })
            .await?;
        Ok(Response::new(updated))
    }

    async fn delete_step(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.delete(request, "steps", Some(("items", "step"))).await
    }

    async fn create_checklist_item(
        &self,
        request: Request<pb::CreateChecklistItemRequest>,
    ) -> Result<Response<pb::ChecklistItem>, Status> {
        require(&request, ApiRole::Coordinator)?;
        let item = request
            .into_inner()
            .item
            .ok_or_else(|| Status::invalid_argument("field `item`: is required"))?;
        let id = new_id();
        let created = self
            .edit(move |tx| {
                let obj = dm::new_record(tx, "items", &id).map_err(doc_error)?;
                m::write_item(tx, &obj, &item)?;
                Ok(m::read_item(tx, &id, &obj))
            })
            .await?;
        Ok(Response::new(created))
    }

    async fn update_checklist_item(
        &self,
        request: Request<pb::UpdateChecklistItemRequest>,
    ) -> Result<Response<pb::ChecklistItem>, Status> {
        require(&request, ApiRole::Coordinator)?;
        let request = request.into_inner();
        let new = request
            .item
            .ok_or_else(|| Status::invalid_argument("field `item`: is required"))?;
        let mask = update_mask(request.update_mask, &["text", "position"])?;
        let id = parse_name(&new.name, "method/items", "item.name")?;
        let updated = self
            .edit(move |tx| {
                let obj = dm::record(tx, "items", &id).ok_or_else(|| not_found(&new.name))?;
                let mut item = m::read_item(tx, &id, &obj);
                if has(&mask, "text") {
                    item.text = new.text;
                }
                if has(&mask, "position") {
                    item.position = new.position;
                }
                m::write_item(tx, &obj, &item)?;
                Ok(item)
            })
            .await?;
        Ok(Response::new(updated))
    }

    async fn delete_checklist_item(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.delete(request, "items", None).await
    }

    async fn create_release(
        &self,
        request: Request<pb::CreateReleaseRequest>,
    ) -> Result<Response<pb::Release>, Status> {
        require(&request, ApiRole::Coordinator)?;
        let release = request
            .into_inner()
            .release
            .ok_or_else(|| Status::invalid_argument("field `release`: is required"))?;
        super::check_len("version_label", &release.version_label, 1, 50)?;
        super::check_len("notes", &release.notes, 0, 5000)?;
        let signed = !release.signature.is_empty();
        if signed {
            self.check_signed_release(&release)?;
        } else if self.0.releases.key().is_some() {
            return Err(Status::failed_precondition(
                "this hub accepts only signed releases (method.release_public_key is configured): \
                 sign the release with `sfs handbook release --key <private key file>`",
            ));
        }
        let id = new_id();
        let created = self
            .edit(move |tx| {
                let mut release = release;
                release.version_label = release.version_label.trim().to_string();
                let existing = m::releases(tx);
                let label = &release.version_label;
                if existing.iter().any(|r| &r.version_label == label) {
                    return Err(Status::already_exists(format!(
                        "field `version_label`: release {label} already exists"
                    )));
                }
                if signed {
                    let highest = existing.iter().map(|r| r.number).max().unwrap_or(0);
                    if release.number <= highest {
                        return Err(Status::failed_precondition(format!(
                            "field `number`: release number {} is not greater than {highest}, \
                             the highest release number at this hub",
                            release.number
                        )));
                    }
                    if release.generation != m::generation(tx) {
                        return Err(Status::failed_precondition(
                            "field `generation`: the handbook was redacted while the release \
                             was checked; sign it again",
                        ));
                    }
                } else {
                    // An unsigned release freezes the handbook as it was before this change.
                    release.version = dm::version_of(&tx.get_heads());
                    release.generation = m::generation(tx);
                }
                m::write_release(tx, &id, &release).map_err(doc_error)
            })
            .await?;
        Ok(Response::new(created))
    }

    async fn get_running_release(
        &self,
        request: Request<pb::GetRunningReleaseRequest>,
    ) -> Result<Response<pb::RunningRelease>, Status> {
        require(&request, ApiRole::Reader)?;
        // Look at the handbook as it is now, so the answer is never behind what arrived.
        let (sync, tracker) = (self.0.sync.clone(), self.0.releases.clone());
        if let Err(err) = super::blocking(move || tracker.refresh(&sync, now_ms())).await? {
            tracing::error!(error = %err, "storing the running handbook release failed");
        }
        let now = now_ms();
        Ok(Response::new(
            self.read(|doc| self.0.releases.report(doc, now)),
        ))
    }

    async fn redact_handbook(
        &self,
        request: Request<pb::RedactHandbookRequest>,
    ) -> Result<Response<pb::RedactHandbookResponse>, Status> {
        let caller = require(&request, ApiRole::Coordinator)?;
        if self.0.sync.me().role() != sfs_sync::Role::Hub {
            return Err(Status::failed_precondition(
                "the handbook is redacted at the hub only: this node is a city and holds a copy \
                 of the hub's handbook; ask the national coordinator",
            ));
        }
        let request = request.into_inner();
        let redaction = m::Redaction {
            names: request.names,
            fields: request.fields,
            text: request.text,
        };
        m::check_redaction(&redaction)?;
        // Refuse what names nothing before anything is logged or written.
        self.read(|doc| -> Result<(), Status> {
            let mut scratch = doc.fork();
            let mut tx = scratch.transaction();
            let checked = m::redact(&mut tx, &redaction);
            tx.rollback();
            Ok(checked?)
        })?;
        let what = if !redaction.text.is_empty() {
            "text"
        } else if redaction.fields.is_empty() {
            "whole"
        } else {
            "fields"
        };
        let action = if redaction.fields.is_empty() {
            format!("redact handbook ({what})")
        } else {
            format!("redact handbook ({what}: {})", redaction.fields.join(", "))
        };
        let entries = super::access_entries(&caller.actor, &action, redaction.names.clone());
        let log = self.0.access_log.clone();
        super::blocking(move || log.append(&entries))
            .await?
            .map_err(|err| Status::unavailable(format!("writing the access log failed: {err}")))?;
        tracing::warn!(
            actor = %caller.actor, %action, resources = %redaction.names.join(" "),
            "redacting the handbook: a new generation of national/method without the text"
        );
        let sync = self.0.sync.clone();
        let (generation, version) = super::blocking(move || {
            let doc = method_doc();
            sync.new_generation(&doc, |tx| m::redact(tx, &redaction).map_err(Status::from))?;
            let generation = sync.generation(&doc).unwrap_or(0);
            let version = sync.read(|engine| {
                engine
                    .document(&doc)
                    .map(|d| dm::version_of(&d.get_heads()))
                    .unwrap_or_default()
            });
            Ok::<_, crate::federation::sync::EditFailure<Status>>((generation, version))
        })
        .await?
        .map_err(super::edit_status)?;
        tracing::info!(
            generation,
            "the handbook's new generation is stored; cities replace theirs"
        );
        // The tracker learns at once that the running release's content is gone.
        let (sync, tracker) = (self.0.sync.clone(), self.0.releases.clone());
        if let Err(err) = super::blocking(move || tracker.refresh(&sync, now_ms())).await? {
            tracing::error!(error = %err, "storing the running handbook release failed");
        }
        Ok(Response::new(pb::RedactHandbookResponse {
            generation,
            version,
        }))
    }

    async fn list_releases(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        require(&request, ApiRole::Reader)?;
        let request = request.into_inner();
        let all = self.read(m::releases);
        let (releases, next_page_token, total_size) =
            paginate(all, request.page_size, &request.page_token)?;
        Ok(Response::new(pb::ListReleasesResponse {
            releases,
            next_page_token,
            total_size,
        }))
    }

    async fn diff_handbook(
        &self,
        request: Request<pb::DiffHandbookRequest>,
    ) -> Result<Response<pb::DiffHandbookResponse>, Status> {
        require(&request, ApiRole::Reader)?;
        let since = request.into_inner().since.ok_or_else(|| {
            Status::invalid_argument("field `since`: give since_release or since_version")
        })?;
        self.read(|doc| {
            let heads = match since {
                pb::diff_handbook_request::Since::SinceRelease(release) => {
                    let found = m::releases(doc)
                        .into_iter()
                        .find(|r| r.version_label == release || r.name == release)
                        .ok_or_else(|| {
                            Status::not_found(format!(
                                "field `since_release`: no release {} on this node",
                                super::quote(&release)
                            ))
                        })?;
                    let current = m::generation(doc);
                    if found.generation != current {
                        return Err(Status::failed_precondition(format!(
                            "field `since_release`: release {} belongs to generation {} of the \
                             handbook, which was redacted since (now generation {current}); \
                             its history is gone: compare with a release of generation {current}",
                            found.version_label, found.generation
                        )));
                    }
                    dm::parse_version(&found.version)
                        .ok_or_else(|| Status::internal("a stored release has a damaged version"))?
                }
                pb::diff_handbook_request::Since::SinceVersion(version) => {
                    dm::parse_version(&version).ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "field `since_version`: {} is not a version",
                            super::quote(&version)
                        ))
                    })?
                }
            };
            Ok(Response::new(pb::DiffHandbookResponse {
                changes: m::diff(doc, &heads)?,
                version: dm::version_of(&doc.get_heads()),
            }))
        })
    }

    async fn list_step_notes(
        &self,
        request: Request<pb::ListStepNotesRequest>,
    ) -> Result<Response<pb::ListStepNotesResponse>, Status> {
        require(&request, ApiRole::Reader)?;
        self.city_only()?;
        let notes = self.0.local.read(&notes_doc(), notes::read_all);
        Ok(Response::new(pb::ListStepNotesResponse { notes }))
    }

    async fn set_step_note(
        &self,
        request: Request<pb::SetStepNoteRequest>,
    ) -> Result<Response<pb::StepNote>, Status> {
        require(&request, ApiRole::Editor)?;
        self.city_only()?;
        let note = request
            .into_inner()
            .note
            .ok_or_else(|| Status::invalid_argument("field `note`: is required"))?;
        let id = notes::step_id(&note.step)?;
        notes::check(&note)?;
        if !self.read(|doc| m::has_step(doc, &note.step)) {
            return Err(Status::invalid_argument(format!(
                "field `step`: {} is not a step of the handbook this node has",
                super::quote(&note.step)
            )));
        }
        let saved = self
            .0
            .edit_local(notes_doc(), move |tx| {
                Ok(notes::write(tx, &id, &note, now_ms())?)
            })
            .await?;
        Ok(Response::new(saved))
    }
}
