//! The `Progress` service: each city marks method steps; every node shows adoption.

use std::collections::BTreeSet;

use sfs_proto::v1 as pb;
use sfs_sync::Role;
use tonic::{Request, Response, Status};

use super::{blocking, edit_status, require, ApiState};
use crate::api::tokens::ApiRole;
use crate::domain::docmodel as dm;
use crate::domain::method::{self, method_doc};
use crate::domain::progress::{self, progress_doc};

/// The `Progress` gRPC service.
pub struct ProgressService(pub ApiState);

#[tonic::async_trait]
impl pb::progress_server::Progress for ProgressService {
    async fn set_step_progress(
        &self,
        request: Request<pb::SetStepProgressRequest>,
    ) -> Result<Response<pb::StepProgress>, Status> {
        require(&request, ApiRole::Coordinator)?;
        let me = self.0.sync.me().clone();
        if me.role() != Role::City {
            return Err(Status::failed_precondition(
                "progress is kept by each city; the hub has none of its own",
            ));
        }
        let progress = request
            .into_inner()
            .progress
            .ok_or_else(|| Status::invalid_argument("field `progress`: is required"))?;
        progress::check(&progress)?;
        let step_known = self.0.sync.read(|engine| {
            engine
                .document(&method_doc())
                .is_some_and(|doc| method::has_step(doc, &progress.step))
        });
        if !step_known {
            return Err(Status::invalid_argument(format!(
                "field `step`: {} is not a step of the handbook this node has",
                super::quote(&progress.step)
            )));
        }
        let step_id = progress
            .step
            .trim_start_matches("method/steps/")
            .to_string();
        let doc = progress_doc(me.name())?;
        let sync = self.0.sync.clone();
        let city = me.name().to_string();
        let saved = blocking(move || {
            sync.edit(&doc, |tx| {
                progress::write(tx, &step_id, &progress)?;
                Ok(progress::read_all(tx, &city)
                    .into_iter()
                    .find(|p| p.step == progress.step))
            })
        })
        .await?
        .map_err(edit_status)?;
        saved
            .map(Response::new)
            .ok_or_else(|| Status::internal("progress was written but cannot be read back"))
    }

    async fn list_progress(
        &self,
        request: Request<pb::ListProgressRequest>,
    ) -> Result<Response<pb::ListProgressResponse>, Status> {
        require(&request, ApiRole::Reader)?;
        let parent = request.into_inner().parent;
        let city = parent
            .strip_prefix("cities/")
            .filter(|c| sfs_sync::scope::validate_node_name(c).is_ok())
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "field `parent`: {} must be cities/{{city}}",
                    super::quote(&parent)
                ))
            })?
            .to_string();
        let doc = progress_doc(&city)?;
        let progress = self.0.sync.read(|engine| {
            engine
                .document(&doc)
                .map(|d| progress::read_all(d, &city))
                .unwrap_or_default()
        });
        Ok(Response::new(pb::ListProgressResponse { progress }))
    }

    async fn get_adoption(
        &self,
        request: Request<pb::GetAdoptionRequest>,
    ) -> Result<Response<pb::Adoption>, Status> {
        require(&request, ApiRole::Reader)?;
        let county_cities = self.0.county_cities.clone();
        let adoption = self.0.sync.read(|engine| {
            let handbook = engine
                .document(&method_doc())
                .map(method::read_handbook)
                .unwrap_or_default();
            let mut cities: BTreeSet<String> = BTreeSet::new();
            if let Some(directory) = engine.document(&crate::domain::directory::directory_doc()) {
                cities.extend(
                    dm::records(directory, "cities")
                        .into_iter()
                        .map(|(id, _)| id),
                );
            }
            let mut progress = Vec::new();
            for (id, doc) in engine.documents() {
                for prefix in ["shared/lessons/", "shared/progress/", "shared/stats/"] {
                    if let Some(city) = id.as_str().strip_prefix(prefix) {
                        cities.insert(city.to_string());
                        if prefix == "shared/progress/" {
                            progress.extend(
                                progress::read_all(doc, city)
                                    .into_iter()
                                    .map(|p| (city.to_string(), p)),
                            );
                        }
                    }
                }
            }
            // At a county hub, the county coordinator's view: its own cities only.
            if let Some(county) = &county_cities {
                cities.retain(|city| county.contains(city));
                progress.retain(|(city, _)| county.contains(city));
            }
            let steps = handbook
                .iter()
                .flat_map(|chapter| chapter.steps.iter())
                .map(|step| {
                    let states: Vec<pb::CityState> = progress
                        .iter()
                        .filter(|(_, p)| p.step == step.name)
                        .map(|(city, p)| pb::CityState {
                            city: city.clone(),
                            state: p.state.clone(),
                            date: p.date.clone(),
                        })
                        .collect();
                    let not_started = cities
                        .iter()
                        .filter(|c| !states.iter().any(|s| &s.city == *c))
                        .cloned()
                        .collect();
                    pb::StepAdoption {
                        step: step.name.clone(),
                        title: step.title.clone(),
                        cities: states,
                        not_started,
                    }
                })
                .collect();
            pb::Adoption { steps }
        });
        Ok(Response::new(adoption))
    }
}
