//! The `Directory` service: the member cities, kept by the hub. At a county hub,
//! `ListCities` is the county coordinator's view: the county's own cities, with their presence
//! and handbook release as seen from the county hub's links. At the national hub a city under a
//! county hub is shown as its county hub reports it (`county/<id>/links`,
//! `domain::county_links::presence`): linked through that county hub, and when last seen there.

use automerge::transaction::Transaction;
use sfs_proto::v1 as pb;
use sfs_sync::{NodeId, Role};
use tonic::{Request, Response, Status};

use super::{doc_error, paginate, parse_name, require, today, update_mask, ApiState};
use crate::api::tokens::ApiRole;
use crate::domain::county_links as links;
use crate::domain::directory::{self as dir, directory_doc};
use crate::domain::docmodel as dm;
use crate::domain::method::{self, method_doc};
use crate::domain::model::now_ms;

/// County hubs' reports of their cities' links, read once per request.
#[derive(Default)]
struct CountyReports {
    /// By city: (county, link) pairs.
    by_city: std::collections::BTreeMap<String, Vec<(String, links::CityLink)>>,
    /// How this node sees each reporting county hub on its own links.
    counties: std::collections::BTreeMap<String, links::Seen>,
}

/// Milliseconds since the Unix epoch.
fn unix_ms(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The `Directory` gRPC service.
pub struct DirectoryService(pub ApiState);

use super::not_found;

impl DirectoryService {
    async fn edit<R: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Transaction<'_>) -> Result<R, Status> + Send + 'static,
    ) -> Result<R, Status> {
        self.0.edit_shared(directory_doc(), change).await
    }

    /// Adds what only the live links know: whether the city is connected now and, at the hub,
    /// the release in the heads it announced.
    fn with_live_state(&self, mut city: pb::City, reports: Option<&CountyReports>) -> pb::City {
        let id = city.name.trim_start_matches("cities/").to_string();
        let Ok(node) = NodeId::city(&id) else {
            return city;
        };
        if let Ok(progress) = crate::domain::progress::progress_doc(&id) {
            let reported = self.0.sync.read(|engine| {
                engine
                    .document(&progress)
                    .map(crate::domain::release::reported_release)
            });
            if let Some((label, number)) = reported {
                city.running_release = label;
                city.running_release_number = number;
            }
        }
        // Presence lives in the hub's memory, not in the directory document (a reconnect is
        // not a fact to replicate to every city forever).
        let presence = self
            .0
            .sync
            .peer_states()
            .into_iter()
            .find(|(peer, _)| *peer == node)
            .map(|(_, state)| state);
        city.connected = presence
            .as_ref()
            .is_some_and(|state| state.state == "connected");
        if let Some(seen) = presence.as_ref().and_then(|state| state.last_seen) {
            let seen = if city.connected {
                std::time::SystemTime::now()
            } else {
                seen
            };
            city.last_seen_ms = unix_ms(seen);
        }
        if let Some((of_city, all)) = reports.and_then(|r| Some((r.by_city.get(&id)?, r))) {
            // A city under a county hub links to the county hub: what that county hub reports.
            let direct = links::Seen {
                connected: city.connected,
                last_seen_ms: city.last_seen_ms,
            };
            let county_seen = |c: &str| all.counties.get(c).copied().unwrap_or_default();
            let combined = links::presence(direct, of_city, county_seen, now_ms());
            city.connected = combined.connected;
            city.last_seen_ms = combined.last_seen_ms;
            city.linked_via = combined.via;
        }
        if let Ok(lessons) = sfs_sync::ShareableDocId::lessons(&id) {
            city.lessons_generation = self.0.sync.generation(&lessons).unwrap_or(0) as i64;
        }
        if let Some(cert) = self.0.certificates.of_city(&id) {
            city.certificate_expire_time_ms = cert.not_after_unix.saturating_mul(1000);
            city.revoked = cert.revoked;
        }
        let last_heads = presence.map(|state| state.last_heads).unwrap_or_default();
        let known = self.0.sync.read(|engine| {
            let heads = if city.connected {
                engine.peer_heads(&node, &method_doc())?
            } else {
                last_heads
                    .into_iter()
                    .find(|(doc, _)| *doc == method_doc())
                    .map(|(_, heads)| heads)?
            };
            let doc = engine.document(&method_doc())?;
            method::newest_release_within(doc, &heads)
        });
        if let Some(release) = known {
            city.handbook_release = release.version_label;
        }
        city
    }

    /// At the national hub (or its standby): every county hub's report of its cities' links,
    /// by city. `None` at a county hub, whose view is its own links.
    fn county_reports(&self) -> Option<CountyReports> {
        if self.0.sync.me().role() != Role::Hub {
            return None;
        }
        let mut reports = CountyReports::default();
        self.0.sync.read(|engine| {
            for (doc_id, doc) in engine.documents() {
                let Some(county) = links::county_of(doc_id) else {
                    continue;
                };
                for (city, link) in links::read(doc) {
                    reports
                        .by_city
                        .entry(city)
                        .or_default()
                        .push((county.to_string(), link));
                }
            }
        });
        for (peer, state) in self.0.sync.peer_states() {
            if peer.role() == Role::County {
                let seen = links::Seen {
                    connected: state.state == "connected",
                    last_seen_ms: state.last_seen.map_or(0, unix_ms),
                };
                reports.counties.insert(peer.name().to_string(), seen);
            }
        }
        Some(reports)
    }

    fn list_all(&self) -> Vec<pb::City> {
        self.0.sync.read(|engine| {
            engine
                .document(&directory_doc())
                .map(|doc| {
                    dm::records(doc, "cities")
                        .into_iter()
                        .map(|(id, obj)| dir::read(doc, &id, &obj))
                        .collect()
                })
                .unwrap_or_default()
        })
    }
}

#[tonic::async_trait]
impl pb::directory_server::Directory for DirectoryService {
    async fn create_city(
        &self,
        request: Request<pb::CreateCityRequest>,
    ) -> Result<Response<pb::City>, Status> {
        require(&request, ApiRole::Admin)?;
        let city = request
            .into_inner()
            .city
            .ok_or_else(|| Status::invalid_argument("field `city`: is required"))?;
        let id = parse_name(&city.name, "cities", "city.name")?;
        NodeId::city(&id)
            .map_err(|e| Status::invalid_argument(format!("field `city.name`: {e}")))?;
        if let Some(county) = self.0.county_cities.clone() {
            // At a county hub: onboarding a city into the county; from now on its federation
            // listener admits the city (the national directory is the national hub's).
            let city_id = id.clone();
            let added = super::blocking(move || county.add(&city_id)).await??;
            if !added {
                return Err(Status::already_exists(format!(
                    "cities/{id} is already one of this county hub's cities"
                )));
            }
            let name = format!("cities/{id}");
            let listed = self
                .list_all()
                .into_iter()
                .find(|c| c.name == name)
                .unwrap_or(pb::City {
                    name,
                    display_name: id,
                    ..Default::default()
                });
            return Ok(Response::new(self.with_live_state(listed, None)));
        }
        let created = self
            .edit(move |tx| {
                use automerge::transaction::Transactable;
                if dm::record(tx, "cities", &id).is_some() {
                    return Err(Status::already_exists(format!(
                        "cities/{id} is already a member"
                    )));
                }
                let obj = dm::new_record(tx, "cities", &id).map_err(doc_error)?;
                dir::write(tx, &obj, &city)?;
                tx.put(&obj, "joined_date", today().as_str())
                    .map_err(doc_error)?;
                Ok(dir::read(tx, &id, &obj))
            })
            .await?;
        let reports = self.county_reports();
        Ok(Response::new(
            self.with_live_state(created, reports.as_ref()),
        ))
    }

    async fn get_city(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::City>, Status> {
        require(&request, ApiRole::Reader)?;
        let name = request.into_inner().name;
        parse_name(&name, "cities", "name")?;
        let city = self
            .list_all()
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| not_found(&name))?;
        let reports = self.county_reports();
        Ok(Response::new(self.with_live_state(city, reports.as_ref())))
    }

    async fn list_cities(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListCitiesResponse>, Status> {
        require(&request, ApiRole::Reader)?;
        let request = request.into_inner();
        let mut listed = self.list_all();
        if let Some(county) = &self.0.county_cities {
            // A county hub lists its own cities, those not in the national directory yet
            // by their id alone.
            listed.retain(|c| county.contains(c.name.trim_start_matches("cities/")));
            for id in county.list().iter() {
                let name = format!("cities/{id}");
                if !listed.iter().any(|c| c.name == name) {
                    listed.push(pb::City {
                        name,
                        display_name: id.clone(),
                        ..Default::default()
                    });
                }
            }
        }
        let reports = self.county_reports();
        let mut all: Vec<pb::City> = listed
            .into_iter()
            .map(|c| self.with_live_state(c, reports.as_ref()))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let (cities, next_page_token, total_size) =
            paginate(all, request.page_size, &request.page_token)?;
        Ok(Response::new(pb::ListCitiesResponse {
            cities,
            next_page_token,
            total_size,
        }))
    }

    async fn update_city(
        &self,
        request: Request<pb::UpdateCityRequest>,
    ) -> Result<Response<pb::City>, Status> {
        require(&request, ApiRole::Admin)?;
        let request = request.into_inner();
        let new = request
            .city
            .ok_or_else(|| Status::invalid_argument("field `city`: is required"))?;
        let mask = update_mask(request.update_mask, &["display_name", "county"])?;
        let id = parse_name(&new.name, "cities", "city.name")?;
        let updated = self
            .edit(move |tx| {
                let obj = dm::record(tx, "cities", &id).ok_or_else(|| not_found(&new.name))?;
                let mut city = dir::read(tx, &id, &obj);
                if mask.iter().any(|m| m == "display_name") {
                    city.display_name = new.display_name;
                }
                if mask.iter().any(|m| m == "county") {
                    city.county = new.county;
                }
                dir::write(tx, &obj, &city)?;
                Ok(city)
            })
            .await?;
        let reports = self.county_reports();
        Ok(Response::new(
            self.with_live_state(updated, reports.as_ref()),
        ))
    }

    async fn delete_city(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        require(&request, ApiRole::Admin)?;
        let name = request.into_inner().name;
        let id = parse_name(&name, "cities", "name")?;
        if let Some(county) = self.0.county_cities.clone() {
            // At a county hub: the county stops serving the city, and its open link ends.
            let city_id = id.clone();
            let removed = super::blocking(move || county.remove(&city_id)).await??;
            if !removed {
                return Err(Status::not_found(format!(
                    "{name} is not one of this county hub's cities"
                )));
            }
            if let Ok(peer) = NodeId::city(&id) {
                let sync = self.0.sync.clone();
                let why = format!("{peer} is no longer one of this county hub's cities");
                super::blocking(move || sync.close_links_of(&peer, &why)).await?;
            }
            return Ok(Response::new(pb::Empty {}));
        }
        self.edit(move |tx| super::delete_or_not_found(tx, "cities", &id, &name))
            .await?;
        Ok(Response::new(pb::Empty {}))
    }
}
