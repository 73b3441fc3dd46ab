//! The `Register` service: the city's local network register (never leaves the city).

use sfs_proto::v1 as pb;
use sfs_sync::{DocId, Role};
use tonic::{Request, Response, Status};

use super::{blocking, new_id, require, ApiState};
use crate::register::{self, ContactRecord, OrganisationRecord, RegisterError};
use crate::tokens::ApiRole;

/// The `Register` gRPC service.
pub struct RegisterService(pub ApiState);

fn network() -> DocId {
    DocId::local("network").expect("local/network is a document id")
}

fn register_status(err: RegisterError) -> Status {
    match err {
        err @ RegisterError::Invalid { .. } => Status::invalid_argument(err.to_string()),
        RegisterError::Storage(err) => {
            Status::unavailable(format!("the change was not stored: {err}"))
        }
        err => Status::internal(err.to_string()),
    }
}

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
}

fn org_to_pb(o: OrganisationRecord) -> pb::Organisation {
    pb::Organisation {
        name: format!("organisations/{}", o.id),
        display_name: o.display_name,
        sector: o.sector,
    }
}

fn contact_to_pb(c: ContactRecord) -> pb::Contact {
    pb::Contact {
        name: format!("contacts/{}", c.id),
        full_name: c.full_name,
        role: c.role,
        organisation: format!("organisations/{}", c.organisation_id),
        phone: c.phone,
        email: c.email,
    }
}

#[tonic::async_trait]
impl pb::register_server::Register for RegisterService {
    async fn create_organisation(
        &self,
        request: Request<pb::CreateOrganisationRequest>,
    ) -> Result<Response<pb::Organisation>, Status> {
        require(&request, ApiRole::Editor)?;
        self.city_only()?;
        let org = request
            .into_inner()
            .organisation
            .ok_or_else(|| Status::invalid_argument("field `organisation`: is required"))?;
        let record = OrganisationRecord {
            id: new_id(),
            display_name: org.display_name,
            sector: org.sector,
        };
        let local = self.0.local.clone();
        let stored = record.clone();
        blocking(move || local.edit(&network(), |tx| register::create_organisation(tx, &stored)))
            .await?
            .map_err(register_status)?;
        Ok(Response::new(org_to_pb(record)))
    }

    async fn list_organisations(
        &self,
        request: Request<pb::ListOrganisationsRequest>,
    ) -> Result<Response<pb::ListOrganisationsResponse>, Status> {
        require(&request, ApiRole::Reader)?;
        self.city_only()?;
        let organisations = self.0.local.read(&network(), register::organisations);
        Ok(Response::new(pb::ListOrganisationsResponse {
            organisations: organisations.into_iter().map(org_to_pb).collect(),
        }))
    }

    async fn create_contact(
        &self,
        request: Request<pb::CreateContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        require(&request, ApiRole::Editor)?;
        self.city_only()?;
        let contact = request
            .into_inner()
            .contact
            .ok_or_else(|| Status::invalid_argument("field `contact`: is required"))?;
        let organisation_id = contact
            .organisation
            .strip_prefix("organisations/")
            .ok_or_else(|| {
                Status::invalid_argument("field `contact.organisation`: must be organisations/{id}")
            })?
            .to_string();
        let record = ContactRecord {
            id: new_id(),
            full_name: contact.full_name,
            role: contact.role,
            organisation_id,
            phone: contact.phone,
            email: contact.email,
        };
        let local = self.0.local.clone();
        let stored = record.clone();
        blocking(move || local.edit(&network(), |tx| register::create_contact(tx, &stored)))
            .await?
            .map_err(register_status)?;
        Ok(Response::new(contact_to_pb(record)))
    }

    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Result<Response<pb::ListContactsResponse>, Status> {
        require(&request, ApiRole::Reader)?;
        self.city_only()?;
        let contacts = self.0.local.read(&network(), register::contacts);
        Ok(Response::new(pb::ListContactsResponse {
            contacts: contacts.into_iter().map(contact_to_pb).collect(),
        }))
    }
}
