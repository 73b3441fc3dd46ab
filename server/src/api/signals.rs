//! The `Signals` service: personal data, for coordinators and admins only, every access logged.

use sfs_proto::v1 as pb;
use sfs_sync::Role;
use tonic::{Request, Response, Status};

use super::{
    blocking, doc_error, new_id, now_ms, paginate, parse_name, require, update_mask, ApiState,
    Caller,
};
use crate::api::tokens::ApiRole;
use crate::domain::docmodel as dm;
use crate::domain::register::{self as reg, network};
use crate::domain::signals::{self as sig, signals_doc};

/// The `Signals` gRPC service.
pub struct SignalsService(pub ApiState);

impl SignalsService {
    fn guard<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = require(request, ApiRole::Coordinator)?;
        if self.0.sync.me().role() != Role::City {
            return Err(Status::failed_precondition("the hub keeps no signals"));
        }
        Ok(caller)
    }

    /// Writes access-log entries durably before any personal data is handed out.
    async fn log(
        &self,
        caller: &Caller,
        action: &str,
        resources: Vec<String>,
    ) -> Result<(), Status> {
        let entries = super::access_entries(&caller.actor, action, resources);
        let log = self.0.access_log.clone();
        blocking(move || log.append(&entries))
            .await?
            .map_err(|err| {
                Status::unavailable(format!(
                    "the access log could not be written, so nothing is shown: {err}"
                ))
            })
    }

    /// Checks the signal's references against the register.
    fn check_references(&self, signal: &pb::Signal) -> Result<(), Status> {
        self.0.local.read(&network(), |doc| {
            reg::existing_organisation(
                doc,
                "reporting_organisation",
                &signal.reporting_organisation,
            )?;
            reg::check_follow_ups(doc, &signal.follow_ups)
        })?;
        Ok(())
    }
}

use super::not_found;

#[tonic::async_trait]
impl pb::signals_server::Signals for SignalsService {
    async fn create_signal(
        &self,
        request: Request<pb::CreateSignalRequest>,
    ) -> Result<Response<pb::Signal>, Status> {
        let caller = self.guard(&request)?;
        let mut signal = request
            .into_inner()
            .signal
            .ok_or_else(|| Status::invalid_argument("field `signal`: is required"))?;
        if signal.status.is_empty() {
            signal.status = "new".to_string();
        }
        sig::check_signal(&signal)?;
        self.check_references(&signal)?;
        let id = new_id();
        let local = self.0.local.clone();
        let signal_id = id.clone();
        let created = blocking(move || {
            local.edit(&signals_doc(), |tx| {
                let obj = dm::new_record(tx, "signals", &signal_id).map_err(doc_error)?;
                sig::write_signal(tx, &obj, &signal, now_ms(), true)?;
                Ok::<_, Status>(sig::read_signal(tx, &signal_id, &obj))
            })
        })
        .await??;
        self.log(&caller, "create", vec![format!("signals/{id}")])
            .await?;
        Ok(Response::new(created))
    }

    async fn get_signal(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::Signal>, Status> {
        let caller = self.guard(&request)?;
        let name = request.into_inner().name;
        let id = parse_name(&name, "signals", "name")?;
        let signal = self
            .0
            .local
            .read(&signals_doc(), |doc| {
                dm::record(doc, "signals", &id).map(|obj| sig::read_signal(doc, &id, &obj))
            })
            .ok_or_else(|| not_found(&name))?;
        self.log(&caller, "read", vec![name]).await?;
        Ok(Response::new(signal))
    }

    async fn list_signals(
        &self,
        request: Request<pb::ListSignalsRequest>,
    ) -> Result<Response<pb::ListSignalsResponse>, Status> {
        let caller = self.guard(&request)?;
        let request = request.into_inner();
        if !request.status.is_empty() && !sig::STATUSES.contains(&request.status.as_str()) {
            return Err(Status::invalid_argument(format!(
                "field `status`: {} is not one of {}",
                super::quote(&request.status),
                sig::STATUSES.join(", ")
            )));
        }
        let mut all = self.0.local.read(&signals_doc(), |doc| {
            dm::records(doc, "signals")
                .into_iter()
                .map(|(id, obj)| sig::read_signal(doc, &id, &obj))
                .collect::<Vec<_>>()
        });
        all.retain(|s| request.status.is_empty() || s.status == request.status);
        all.sort_by(|a, b| {
            b.date
                .cmp(&a.date)
                .then(b.create_time_ms.cmp(&a.create_time_ms))
                .then(a.name.cmp(&b.name))
        });
        let (signals, next_page_token, total_size) =
            paginate(all, request.page_size, &request.page_token)?;
        self.log(
            &caller,
            "list",
            signals.iter().map(|s| s.name.clone()).collect(),
        )
        .await?;
        Ok(Response::new(pb::ListSignalsResponse {
            signals,
            next_page_token,
            total_size,
        }))
    }

    async fn update_signal(
        &self,
        request: Request<pb::UpdateSignalRequest>,
    ) -> Result<Response<pb::Signal>, Status> {
        let caller = self.guard(&request)?;
        let request = request.into_inner();
        let new = request
            .signal
            .ok_or_else(|| Status::invalid_argument("field `signal`: is required"))?;
        let mask = update_mask(
            request.update_mask,
            &[
                "date",
                "reporting_organisation",
                "kind",
                "description",
                "status",
                "follow_ups",
            ],
        )?;
        let name = new.name.clone();
        let id = parse_name(&new.name, "signals", "signal.name")?;
        let mut signal = self
            .0
            .local
            .read(&signals_doc(), |doc| {
                dm::record(doc, "signals", &id).map(|obj| sig::read_signal(doc, &id, &obj))
            })
            .ok_or_else(|| not_found(&name))?;
        let has = |f: &str| mask.iter().any(|m| m == f);
        if has("date") {
            signal.date = new.date;
        }
        if has("reporting_organisation") {
            signal.reporting_organisation = new.reporting_organisation;
        }
        if has("kind") {
            signal.kind = new.kind;
        }
        if has("description") {
            signal.description = new.description;
        }
        if has("status") {
            signal.status = new.status;
        }
        if has("follow_ups") {
            signal.follow_ups = new.follow_ups;
        }
        sig::check_signal(&signal)?;
        self.check_references(&signal)?;
        let local = self.0.local.clone();
        let updated = blocking(move || {
            local.edit(&signals_doc(), |tx| {
                let obj = dm::record(tx, "signals", &id).ok_or_else(|| not_found(&signal.name))?;
                sig::write_signal(tx, &obj, &signal, now_ms(), false)?;
                Ok::<_, Status>(sig::read_signal(tx, &id, &obj))
            })
        })
        .await??;
        self.log(&caller, "update", vec![name]).await?;
        Ok(Response::new(updated))
    }

    async fn erase_signal(
        &self,
        request: Request<pb::EraseRequest>,
    ) -> Result<Response<pb::EraseResponse>, Status> {
        let caller = self.guard(&request)?;
        let name = request.into_inner().name;
        let id = parse_name(&name, "signals", "name")?;
        let local = self.0.local.clone();
        let log = self.0.access_log.clone();
        let erased = name.clone();
        blocking(move || {
            local.erase(&signals_doc(), |tx| {
                if dm::record(tx, "signals", &id).is_none() {
                    return Err(not_found(&erased));
                }
                super::log_erasure(&log, &caller.actor, [erased.clone()])?;
                super::delete_or_not_found(tx, "signals", &id, &erased)
            })
        })
        .await??;
        Ok(Response::new(pb::EraseResponse {
            name,
            erase_time_ms: now_ms(),
        }))
    }

    async fn list_access_log(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListAccessLogResponse>, Status> {
        require(&request, ApiRole::Admin)?;
        let request = request.into_inner();
        let log = self.0.access_log.clone();
        let all = blocking(move || log.list())
            .await?
            .map_err(|err| Status::unavailable(err.to_string()))?;
        let all: Vec<pb::AccessLogEntry> = all
            .into_iter()
            .map(|e| pb::AccessLogEntry {
                time_ms: e.time_ms,
                actor: e.actor,
                action: e.action,
                resource: e.resource,
            })
            .collect();
        let (entries, next_page_token, total_size) =
            paginate(all, request.page_size, &request.page_token)?;
        Ok(Response::new(pb::ListAccessLogResponse {
            entries,
            next_page_token,
            total_size,
        }))
    }
}
