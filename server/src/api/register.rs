//! The `Register` service: the city's local network register (never leaves the city).

use automerge::transaction::Transaction;
use automerge::{Automerge, ObjId};
use sfs_proto::v1 as pb;
use sfs_sync::Role;
use tonic::{Request, Response, Status};

use super::{doc_error, new_id, paginate, parse_name, require, update_mask, ApiState};
use crate::api::tokens::ApiRole;
use crate::domain::docmodel as dm;
use crate::domain::register::{self as reg, network};

/// The `Register` gRPC service.
pub struct RegisterService(pub ApiState);

impl RegisterService {
    fn city_only(&self) -> Result<(), Status> {
        if self.0.sync.me().role() == Role::City {
            Ok(())
        } else {
            Err(Status::failed_precondition(
                "the hub keeps no local network register",
            ))
        }
    }

    fn guard<T>(&self, request: &Request<T>, role: ApiRole) -> Result<(), Status> {
        require(request, role)?;
        self.city_only()
    }

    async fn edit<R: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Transaction<'_>) -> Result<R, Status> + Send + 'static,
    ) -> Result<R, Status> {
        self.0.edit_local(network(), change).await
    }

    fn read<R>(&self, f: impl FnOnce(&Automerge) -> R) -> R {
        self.0.local.read(&network(), f)
    }

    /// The record named `{collection}/{id}` in `name`, read with `read`.
    fn get_record<T>(
        &self,
        name: &str,
        collection: &str,
        read: impl Fn(&Automerge, &str, &ObjId) -> T,
    ) -> Result<T, Status> {
        let id = parse_name(name, collection, "name")?;
        self.read(|doc| dm::record(doc, collection, &id).map(|obj| read(doc, &id, &obj)))
            .ok_or_else(|| not_found(name))
    }

    /// Every record of a collection, read with `read` and sorted by `key` (ignoring case),
    /// then by name.
    fn all_records<T>(
        &self,
        collection: &str,
        read: impl Fn(&Automerge, &str, &ObjId) -> T,
        key: impl Fn(&T) -> (String, String),
    ) -> Vec<T> {
        let mut all: Vec<T> = self.read(|doc| {
            dm::records(doc, collection)
                .into_iter()
                .map(|(id, obj)| read(doc, &id, &obj))
                .collect()
        });
        all.sort_by_cached_key(|item| {
            let (sort, name) = key(item);
            (sort.to_lowercase(), name)
        });
        all
    }
}

use super::not_found;

fn has(mask: &[String], field: &str) -> bool {
    mask.iter().any(|m| m == field)
}

/// Deletes `{collection}/{id}` from the register, refusing names of another collection.
async fn delete(
    service: &RegisterService,
    request: Request<pb::DeleteRequest>,
    collection: &'static str,
) -> Result<Response<pb::Empty>, Status> {
    service.guard(&request, ApiRole::Editor)?;
    let name = request.into_inner().name;
    let id = parse_name(&name, collection, "name")?;
    service
        .edit(move |tx| {
            if collection == "organisations" {
                if let Some(user) = reg::organisation_in_use(tx, &name) {
                    return Err(Status::failed_precondition(format!(
                        "{name} is still referred to by {user}"
                    )));
                }
            }
            super::delete_or_not_found(tx, collection, &id, &name)
        })
        .await?;
    Ok(Response::new(pb::Empty {}))
}

#[tonic::async_trait]
impl pb::register_server::Register for RegisterService {
    async fn create_organisation(
        &self,
        request: Request<pb::CreateOrganisationRequest>,
    ) -> Result<Response<pb::Organisation>, Status> {
        self.guard(&request, ApiRole::Editor)?;
        let org = request
            .into_inner()
            .organisation
            .ok_or_else(|| Status::invalid_argument("field `organisation`: is required"))?;
        reg::check_organisation(&org)?;
        let id = new_id();
        let created = self
            .edit(move |tx| {
                let obj = dm::new_record(tx, "organisations", &id).map_err(doc_error)?;
                reg::write_organisation(tx, &obj, &org)?;
                Ok(reg::read_organisation(tx, &id, &obj))
            })
            .await?;
        Ok(Response::new(created))
    }

    async fn get_organisation(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::Organisation>, Status> {
        self.guard(&request, ApiRole::Reader)?;
        let name = request.into_inner().name;
        self.get_record(&name, "organisations", |doc, id, obj| {
            reg::read_organisation(doc, id, obj)
        })
        .map(Response::new)
    }

    async fn list_organisations(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListOrganisationsResponse>, Status> {
        self.guard(&request, ApiRole::Reader)?;
        let request = request.into_inner();
        let all = self.all_records("organisations", reg::read_organisation, |x| {
            (x.display_name.clone(), x.name.clone())
        });
        let (organisations, next_page_token, total_size) =
            paginate(all, request.page_size, &request.page_token)?;
        Ok(Response::new(pb::ListOrganisationsResponse {
            organisations,
            next_page_token,
            total_size,
        }))
    }

    async fn update_organisation(
        &self,
        request: Request<pb::UpdateOrganisationRequest>,
    ) -> Result<Response<pb::Organisation>, Status> {
        self.guard(&request, ApiRole::Editor)?;
        let request = request.into_inner();
        let new = request
            .organisation
            .ok_or_else(|| Status::invalid_argument("field `organisation`: is required"))?;
        let mask = update_mask(request.update_mask, &["display_name", "sector"])?;
        let id = parse_name(&new.name, "organisations", "organisation.name")?;
        let updated = self
            .edit(move |tx| {
                let obj =
                    dm::record(tx, "organisations", &id).ok_or_else(|| not_found(&new.name))?;
                let mut org = reg::read_organisation(tx, &id, &obj);
                if has(&mask, "display_name") {
                    org.display_name = new.display_name;
                }
                if has(&mask, "sector") {
                    org.sector = new.sector;
                }
                reg::check_organisation(&org)?;
                reg::write_organisation(tx, &obj, &org)?;
                Ok(org)
            })
            .await?;
        Ok(Response::new(updated))
    }

    async fn delete_organisation(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        delete(self, request, "organisations").await
    }

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        self.guard(&request, ApiRole::Editor)?;
        let group = request
            .into_inner()
            .group
            .ok_or_else(|| Status::invalid_argument("field `group`: is required"))?;
        let id = new_id();
        let created = self
            .edit(move |tx| {
                reg::check_group(tx, &group)?;
                let obj = dm::new_record(tx, "groups", &id).map_err(doc_error)?;
                reg::write_group(tx, &obj, &group)?;
                Ok(reg::read_group(tx, &id, &obj))
            })
            .await?;
        Ok(Response::new(created))
    }

    async fn get_group(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        self.guard(&request, ApiRole::Reader)?;
        let name = request.into_inner().name;
        self.get_record(&name, "groups", |doc, id, obj| {
            reg::read_group(doc, id, obj)
        })
        .map(Response::new)
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        self.guard(&request, ApiRole::Reader)?;
        let request = request.into_inner();
        let all = self.all_records("groups", reg::read_group, |x| {
            (x.display_name.clone(), x.name.clone())
        });
        let (groups, next_page_token, total_size) =
            paginate(all, request.page_size, &request.page_token)?;
        Ok(Response::new(pb::ListGroupsResponse {
            groups,
            next_page_token,
            total_size,
        }))
    }

    async fn update_group(
        &self,
        request: Request<pb::UpdateGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        self.guard(&request, ApiRole::Editor)?;
        let request = request.into_inner();
        let new = request
            .group
            .ok_or_else(|| Status::invalid_argument("field `group`: is required"))?;
        let mask = update_mask(
            request.update_mask,
            &["display_name", "description", "organisations"],
        )?;
        let id = parse_name(&new.name, "groups", "group.name")?;
        let updated = self
            .edit(move |tx| {
                let obj = dm::record(tx, "groups", &id).ok_or_else(|| not_found(&new.name))?;
                let mut group = reg::read_group(tx, &id, &obj);
                if has(&mask, "display_name") {
                    group.display_name = new.display_name;
                }
                if has(&mask, "description") {
                    group.description = new.description;
                }
                if has(&mask, "organisations") {
                    group.organisations = new.organisations;
                }
                reg::check_group(tx, &group)?;
                reg::write_group(tx, &obj, &group)?;
                Ok(group)
            })
            .await?;
        Ok(Response::new(updated))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        delete(self, request, "groups").await
    }

    async fn create_contact(
        &self,
        request: Request<pb::CreateContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        self.guard(&request, ApiRole::Editor)?;
        let contact = request
            .into_inner()
            .contact
            .ok_or_else(|| Status::invalid_argument("field `contact`: is required"))?;
        let id = new_id();
        let created = self
            .edit(move |tx| {
                reg::check_contact(tx, &contact)?;
                let obj = dm::new_record(tx, "contacts", &id).map_err(doc_error)?;
                reg::write_contact(tx, &obj, &contact)?;
                Ok(reg::read_contact(tx, &id, &obj))
            })
            .await?;
        Ok(Response::new(created))
    }

    async fn get_contact(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        self.guard(&request, ApiRole::Reader)?;
        let name = request.into_inner().name;
        self.get_record(&name, "contacts", |doc, id, obj| {
            reg::read_contact(doc, id, obj)
        })
        .map(Response::new)
    }

    async fn list_contacts(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListContactsResponse>, Status> {
        self.guard(&request, ApiRole::Reader)?;
        let request = request.into_inner();
        let all = self.all_records("contacts", reg::read_contact, |x| {
            (x.full_name.clone(), x.name.clone())
        });
        let (contacts, next_page_token, total_size) =
            paginate(all, request.page_size, &request.page_token)?;
        Ok(Response::new(pb::ListContactsResponse {
            contacts,
            next_page_token,
            total_size,
        }))
    }

    async fn update_contact(
        &self,
        request: Request<pb::UpdateContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        self.guard(&request, ApiRole::Editor)?;
        let request = request.into_inner();
        let new = request
            .contact
            .ok_or_else(|| Status::invalid_argument("field `contact`: is required"))?;
        let mask = update_mask(
            request.update_mask,
            &["full_name", "role", "organisation", "phone", "email"],
        )?;
        let id = parse_name(&new.name, "contacts", "contact.name")?;
        let updated = self
            .edit(move |tx| {
                let obj = dm::record(tx, "contacts", &id).ok_or_else(|| not_found(&new.name))?;
                let mut contact = reg::read_contact(tx, &id, &obj);
                for (field, target, value) in [
                    ("full_name", &mut contact.full_name, new.full_name),
                    ("role", &mut contact.role, new.role),
                    ("organisation", &mut contact.organisation, new.organisation),
                    ("phone", &mut contact.phone, new.phone),
                    ("email", &mut contact.email, new.email),
                ] {
                    if has(&mask, field) {
                        *target = value;
                    }
                }
                reg::check_contact(tx, &contact)?;
                reg::write_contact(tx, &obj, &contact)?;
                Ok(contact)
            })
            .await?;
        Ok(Response::new(updated))
    }

    async fn delete_contact(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        delete(self, request, "contacts").await
    }

    async fn erase_contact(
        &self,
        request: Request<pb::EraseRequest>,
    ) -> Result<Response<pb::EraseResponse>, Status> {
        let caller = require(&request, ApiRole::Coordinator)?;
        self.city_only()?;
        let name = request.into_inner().name;
        let id = parse_name(&name, "contacts", "name")?;
        let local = self.0.local.clone();
        let log = self.0.access_log.clone();
        let erased = name.clone();
        let guards = self.0.guards.clone();
        super::blocking(move || {
            let result = local.erase(&network(), |tx| {
                if dm::record(tx, "contacts", &id).is_none() {
                    return Err(super::not_found(&erased));
                }
                super::log_erasure(&log, &caller.actor, [erased.clone()])?;
                super::delete_or_not_found(tx, "contacts", &id, &erased)
            });
            // The erased name leaves the guard too.
            super::refresh_privacy_guard(&local, &guards);
            result
        })
        .await??;
        Ok(Response::new(pb::EraseResponse {
            name,
            erase_time_ms: super::now_ms(),
        }))
    }

    async fn create_meeting(
        &self,
        request: Request<pb::CreateMeetingRequest>,
    ) -> Result<Response<pb::Meeting>, Status> {
        self.guard(&request, ApiRole::Editor)?;
        let meeting = request
            .into_inner()
            .meeting
            .ok_or_else(|| Status::invalid_argument("field `meeting`: is required"))?;
        let id = new_id();
        let created = self
            .edit(move |tx| {
                reg::check_meeting(tx, &meeting)?;
                let obj = dm::new_record(tx, "meetings", &id).map_err(doc_error)?;
                reg::write_meeting(tx, &obj, &meeting)?;
                Ok(reg::read_meeting(tx, &id, &obj))
            })
            .await?;
        Ok(Response::new(created))
    }

    async fn get_meeting(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::Meeting>, Status> {
        self.guard(&request, ApiRole::Reader)?;
        let name = request.into_inner().name;
        self.get_record(&name, "meetings", |doc, id, obj| {
            reg::read_meeting(doc, id, obj)
        })
        .map(Response::new)
    }

    async fn list_meetings(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListMeetingsResponse>, Status> {
        self.guard(&request, ApiRole::Reader)?;
        let request = request.into_inner();
        let mut all = self.read(|doc| {
            dm::records(doc, "meetings")
                .into_iter()
                .map(|(id, obj)| reg::read_meeting(doc, &id, &obj))
                .collect::<Vec<_>>()
        });
        all.sort_by(|a, b| b.date.cmp(&a.date).then(a.name.cmp(&b.name)));
        let (meetings, next_page_token, total_size) =
            paginate(all, request.page_size, &request.page_token)?;
        Ok(Response::new(pb::ListMeetingsResponse {
            meetings,
            next_page_token,
            total_size,
        }))
    }

    async fn update_meeting(
        &self,
        request: Request<pb::UpdateMeetingRequest>,
    ) -> Result<Response<pb::Meeting>, Status> {
        self.guard(&request, ApiRole::Editor)?;
        let request = request.into_inner();
        let new = request
            .meeting
            .ok_or_else(|| Status::invalid_argument("field `meeting`: is required"))?;
        let mask = update_mask(
            request.update_mask,
            &[
                "date",
                "organisations",
                "agenda",
                "notes",
                "decisions",
                "follow_ups",
            ],
        )?;
        let id = parse_name(&new.name, "meetings", "meeting.name")?;
        let updated = self
            .edit(move |tx| {
                let obj = dm::record(tx, "meetings", &id).ok_or_else(|| not_found(&new.name))?;
                let mut meeting = reg::read_meeting(tx, &id, &obj);
                if has(&mask, "date") {
                    meeting.date = new.date;
                }
                if has(&mask, "organisations") {
                    meeting.organisations = new.organisations;
                }
                if has(&mask, "agenda") {
                    meeting.agenda = new.agenda;
                }
                if has(&mask, "notes") {
                    meeting.notes = new.notes;
                }
                if has(&mask, "decisions") {
                    meeting.decisions = new.decisions;
                }
                if has(&mask, "follow_ups") {
                    meeting.follow_ups = new.follow_ups;
                }
                reg::check_meeting(tx, &meeting)?;
                reg::write_meeting(tx, &obj, &meeting)?;
                Ok(meeting)
            })
            .await?;
        Ok(Response::new(updated))
    }

    async fn delete_meeting(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        delete(self, request, "meetings").await
    }

    async fn get_routine(
        &self,
        request: Request<pb::GetRoutineRequest>,
    ) -> Result<Response<pb::Routine>, Status> {
        self.guard(&request, ApiRole::Reader)?;
        Ok(Response::new(self.read(reg::read_routine)))
    }

    async fn update_routine(
        &self,
        request: Request<pb::UpdateRoutineRequest>,
    ) -> Result<Response<pb::Routine>, Status> {
        self.guard(&request, ApiRole::Editor)?;
        let routine = request
            .into_inner()
            .routine
            .ok_or_else(|| Status::invalid_argument("field `routine`: is required"))?;
        let updated = self
            .edit(move |tx| {
                reg::check_routine(tx, &routine)?;
                reg::write_routine(tx, &routine)?;
                Ok(reg::read_routine(tx))
            })
            .await?;
        Ok(Response::new(updated))
    }

    async fn list_deny_words(
        &self,
        request: Request<pb::ListDenyWordsRequest>,
    ) -> Result<Response<pb::DenyWords>, Status> {
        self.guard(&request, ApiRole::Admin)?;
        Ok(Response::new(pb::DenyWords {
            words: self.read(reg::deny_words),
        }))
    }

    async fn add_deny_word(
        &self,
        request: Request<pb::DenyWordRequest>,
    ) -> Result<Response<pb::DenyWords>, Status> {
        use automerge::transaction::Transactable;
        self.guard(&request, ApiRole::Admin)?;
        let word = request.into_inner().word.trim().to_string();
        super::check_len("word", &word, 3, 100)?;
        let words = self
            .edit(move |tx| {
                let key = word.to_lowercase();
                let obj = dm::new_record(tx, "deny_words", &key).map_err(doc_error)?;
                tx.put(&obj, "word", word.as_str()).map_err(doc_error)?;
                Ok(reg::deny_words(tx))
            })
            .await?;
        Ok(Response::new(pb::DenyWords { words }))
    }

    async fn remove_deny_word(
        &self,
        request: Request<pb::DenyWordRequest>,
    ) -> Result<Response<pb::DenyWords>, Status> {
        self.guard(&request, ApiRole::Admin)?;
        let word = request.into_inner().word.trim().to_lowercase();
        let words = self
            .edit(move |tx| {
                if !dm::delete_record(tx, "deny_words", &word).map_err(doc_error)? {
                    return Err(Status::not_found(format!(
                        "field `word`: {} is not on the deny list",
                        super::quote(&word)
                    )));
                }
                Ok(reg::deny_words(tx))
            })
            .await?;
        Ok(Response::new(pb::DenyWords { words }))
    }
}
