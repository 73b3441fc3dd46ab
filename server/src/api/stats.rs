//! The `Statistics` service: raw records in, protected releases out, national figures at the hub.

use sfs_proto::v1 as pb;
use sfs_sync::Role;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::{
    blocking, doc_error, edit_status, new_id, now_ms, paginate, parse_name, require, ApiState,
};
use crate::api::tokens::ApiRole;
use crate::domain::stats::disclosure::{self, CellStatus, Policy, ProtectedCell};
use crate::domain::stats::documents::{self as docs, Draft};
use crate::domain::stats::national::{self, PublishedRelease};
use crate::domain::stats::{self, ActivityRecord, InvalidField, SupportRecord};

/// The `Statistics` gRPC service.
pub struct StatsService(pub ApiState);

fn invalid(err: InvalidField) -> Status {
    Status::invalid_argument(err.to_string())
}

/// Checks an optional quarter filter (empty for every quarter).
fn check_quarter_filter(quarter: &str) -> Result<(), Status> {
    if quarter.is_empty() || stats::parse_quarter(quarter).is_some() {
        Ok(())
    } else {
        Err(invalid(InvalidField {
            field: "quarter",
            message: format!(
                "{:?} is not a quarter YYYY-Qn (or empty for every quarter)",
                quarter.chars().take(40).collect::<String>()
            ),
        }))
    }
}

/// Today as (year, month), for refusing quarters that have not begun.
fn today() -> (i32, u8) {
    let now = time::OffsetDateTime::now_utc();
    (now.year(), now.month() as u8)
}

fn support_to_pb(id: &str, r: &SupportRecord) -> pb::SupportRecord {
    pb::SupportRecord {
        name: format!("stats/support/{id}"),
        quarter: r.quarter.clone(),
        sex: r.sex.clone(),
        age_band: r.age_band.clone(),
        citizenship: r.citizenship.clone(),
        exploitation: r.exploitation.clone(),
        referral_source: r.referral_source.clone(),
        person_ref: r.person_ref.clone(),
    }
}

fn cell_to_pb(c: &ProtectedCell) -> pb::StatsCell {
    pb::StatsCell {
        table: c.pos.table.clone(),
        row: c.pos.row.clone(),
        col: c.pos.col.clone(),
        value: c.value,
        status: match c.status {
            CellStatus::Exact => "exact",
            CellStatus::Suppressed => "suppressed",
            CellStatus::Noisy => "noisy",
        }
        .to_string(),
        sd: c.sd,
        reason: match c.reason {
            Some(disclosure::Reason::Primary) => "primary".into(),
            Some(disclosure::Reason::Secondary) => "secondary".into(),
            Some(disclosure::Reason::Correction) => "correction".into(),
            Some(disclosure::Reason::Group) => "group".into(),
            None => String::new(),
        },
    }
}

fn release_to_pb(r: &PublishedRelease, draft: bool) -> pb::StatsRelease {
    pb::StatsRelease {
        name: format!("cities/{}/stats/{}", r.city, r.id),
        city: r.city.clone(),
        quarter: r.quarter.clone(),
        number: r.number as i32,
        corrects: r.corrects.clone(),
        mode: r.mode.clone(),
        k: r.k as i32,
        epsilon_milli: r.epsilon_milli as i32,
        year_spent_milli: r.year_spent_milli as i32,
        year_cap_milli: r.year_cap_milli as i32,
        cells: r.cells.iter().map(cell_to_pb).collect(),
        activity: r.activity.clone().into_iter().collect(),
        create_time_ms: r.created_ms,
        draft,
    }
}

fn policy_to_pb(p: &Policy) -> pb::DisclosurePolicy {
    pb::DisclosurePolicy {
        mode: p.mode.clone(),
        k: p.k as i32,
        mechanism: "discrete_laplace".into(),
        epsilon_milli: p.epsilon_milli as i32,
        year_cap_milli: p.year_cap_milli as i32,
    }
}

impl StatsService {
    fn city(&self) -> Result<String, Status> {
        let me = self.0.sync.me();
        if me.role() == Role::City {
            Ok(me.name().to_string())
        } else {
            Err(Status::failed_precondition(
                "the hub keeps no records of its own; statistics are recorded by cities",
            ))
        }
    }

    fn policy(&self) -> Policy {
        self.0
            .sync
            .read(|engine| docs::read_policy(engine.document(&docs::policy_doc())))
    }

    fn own_releases(&self, city: &str) -> Vec<PublishedRelease> {
        let doc = docs::city_stats_doc(city).expect("a city name makes a document id");
        self.0.sync.read(|engine| {
            engine
                .document(&doc)
                .map(docs::releases)
                .unwrap_or_default()
        })
    }

    /// What a release of `quarter` is computed from, as a digest: the quarter's records, the
    /// policy, and the releases already made of the quarter.
    fn digest(
        &self,
        quarter: &str,
        policy: &Policy,
        releases: &[PublishedRelease],
    ) -> (String, Vec<SupportRecord>, Vec<ActivityRecord>) {
        let (support, activity) = self.0.local.read(&docs::records_doc(), |doc| {
            (
                docs::support_records(doc, Some(quarter))
                    .into_iter()
                    .map(|(_, r)| r)
                    .collect::<Vec<_>>(),
                docs::activity_records(doc, Some(quarter))
                    .into_iter()
                    .map(|(_, r)| r)
                    .collect::<Vec<_>>(),
            )
        });
        let earlier: Vec<&str> = releases
            .iter()
            .filter(|r| r.quarter == quarter)
            .map(|r| r.id.as_str())
            .collect();
        let text =
            serde_json::to_string(&(&support, &activity, policy, earlier)).expect("serialises");
        (
            hex::encode(Sha256::digest(text.as_bytes())),
            support,
            activity,
        )
    }

    /// The national figures of `year` as this node has them (empty if none yet).
    /// The figures of `year` this node serves: the national figures, or at a county hub the
    /// county's own (the sums of its cities' releases).
    fn national_year(&self, year: i32) -> national::NationalYear {
        let figures = docs::figures_doc(self.0.sync.me()).unwrap_or_else(docs::national_doc);
        self.0
            .sync
            .read(|engine| {
                engine
                    .document(&figures)
                    .and_then(|doc| docs::read_national(doc, year))
            })
            .unwrap_or_else(|| national::NationalYear {
                year,
                ..Default::default()
            })
    }

    /// Removes the preview of a quarter once it is published.
    async fn clear_draft(&self, quarter: &str) -> Result<(), Status> {
        let (local, quarter) = (self.0.local.clone(), quarter.to_string());
        blocking(move || {
            local.edit(&docs::records_doc(), |tx| {
                crate::domain::docmodel::delete_record(tx, "drafts", &quarter)
                    .map_err(doc_error)
                    .map(|_| ())
            })
        })
        .await?
    }

    /// Refuses a noise release that would take the city over its yearly budget; returns what
    /// the city has spent in the quarter's year and the year's cap (zeros for suppression).
    fn check_budget(
        policy: &Policy,
        quarter: &str,
        releases: &[PublishedRelease],
    ) -> Result<(i64, i64), Status> {
        if policy.mode != "noise" {
            return Ok((0, 0));
        }
        disclosure::year_budget(policy, quarter, releases)
            .map_err(|err| Status::resource_exhausted(err.to_string()))
    }
}

#[tonic::async_trait]
impl pb::statistics_server::Statistics for StatsService {
    async fn create_support_record(
        &self,
        request: Request<pb::CreateSupportRecordRequest>,
    ) -> Result<Response<pb::SupportRecord>, Status> {
        require(&request, ApiRole::Coordinator)?;
        self.city()?;
        let r = request
            .into_inner()
            .record
            .ok_or_else(|| Status::invalid_argument("field `record`: is required"))?;
        let record = SupportRecord {
            quarter: r.quarter,
            sex: r.sex,
            age_band: r.age_band,
            citizenship: r.citizenship,
            exploitation: r.exploitation,
            referral_source: r.referral_source,
            person_ref: r.person_ref.trim().to_string(),
        };
        record.check(today()).map_err(invalid)?;
        let id = new_id();
        let local = self.0.local.clone();
        let stored = record.clone();
        let record_id = id.clone();
        blocking(move || {
            local.edit(&docs::records_doc(), |tx| {
                let duplicate = docs::support_records(tx, Some(&stored.quarter)).into_iter().any(|(_, r)| r.person_ref == stored.person_ref);
                if duplicate {
                    return Err(Status::already_exists(format!(
                        "field `person_ref`: this person is already counted in {}; each person counts once per quarter",
                        stored.quarter
                    )));
                }
                docs::write_support(tx, &record_id, &stored).map_err(doc_error)
            })
        })
        .await??;
        Ok(Response::new(support_to_pb(&id, &record)))
    }

    async fn list_support_records(
        &self,
        request: Request<pb::ListStatsRecordsRequest>,
    ) -> Result<Response<pb::ListSupportRecordsResponse>, Status> {
        require(&request, ApiRole::Coordinator)?;
        self.city()?;
        let request = request.into_inner();
        check_quarter_filter(&request.quarter)?;
        let quarter = (!request.quarter.is_empty()).then_some(request.quarter.as_str());
        let all: Vec<pb::SupportRecord> = self
            .0
            .local
            .read(&docs::records_doc(), |doc| {
                docs::support_records(doc, quarter)
            })
            .iter()
            .map(|(id, r)| support_to_pb(id, r))
            .collect();
        let (records, next_page_token, total_size) =
            paginate(all, request.page_size, &request.page_token)?;
        Ok(Response::new(pb::ListSupportRecordsResponse {
            records,
            next_page_token,
            total_size,
        }))
    }

    async fn delete_support_record(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        require(&request, ApiRole::Coordinator)?;
        self.city()?;
        let name = request.into_inner().name;
        let id = parse_name(&name, "stats/support", "name")?;
        let local = self.0.local.clone();
        blocking(move || {
            local.edit(&docs::records_doc(), |tx| {
                if crate::domain::docmodel::delete_record(tx, "support", &id).map_err(doc_error)? {
                    Ok(())
                } else {
                    Err(Status::not_found(format!("{name} does not exist")))
                }
            })
        })
        .await??;
        Ok(Response::new(pb::Empty {}))
    }

    async fn create_activity_record(
        &self,
        request: Request<pb::CreateActivityRecordRequest>,
    ) -> Result<Response<pb::ActivityRecord>, Status> {
        require(&request, ApiRole::Editor)?;
        self.city()?;
        let r = request
            .into_inner()
            .record
            .ok_or_else(|| Status::invalid_argument("field `record`: is required"))?;
        let record = ActivityRecord {
            quarter: r.quarter,
            kind: r.kind,
            count: r.count,
        };
        record.check(today()).map_err(invalid)?;
        let id = new_id();
        let local = self.0.local.clone();
        let (stored, record_id) = (record.clone(), id.clone());
        blocking(move || {
            local.edit(&docs::records_doc(), |tx| {
                docs::write_activity(tx, &record_id, &stored).map_err(doc_error)
            })
        })
        .await??;
        Ok(Response::new(pb::ActivityRecord {
            name: format!("stats/activity/{id}"),
            quarter: record.quarter,
            kind: record.kind,
            count: record.count,
        }))
    }

    async fn list_activity_records(
        &self,
        request: Request<pb::ListStatsRecordsRequest>,
    ) -> Result<Response<pb::ListActivityRecordsResponse>, Status> {
        require(&request, ApiRole::Reader)?;
        self.city()?;
        let request = request.into_inner();
        check_quarter_filter(&request.quarter)?;
        let quarter = (!request.quarter.is_empty()).then_some(request.quarter.as_str());
        let all: Vec<pb::ActivityRecord> = self
            .0
            .local
            .read(&docs::records_doc(), |doc| {
                docs::activity_records(doc, quarter)
            })
            .into_iter()
            .map(|(id, r)| pb::ActivityRecord {
                name: format!("stats/activity/{id}"),
                quarter: r.quarter,
                kind: r.kind,
                count: r.count,
            })
            .collect();
        let (records, next_page_token, total_size) =
            paginate(all, request.page_size, &request.page_token)?;
        Ok(Response::new(pb::ListActivityRecordsResponse {
            records,
            next_page_token,
            total_size,
        }))
    }

    async fn preview_release(
        &self,
        request: Request<pb::PreviewReleaseRequest>,
    ) -> Result<Response<pb::StatsRelease>, Status> {
        require(&request, ApiRole::Coordinator)?;
        let city = self.city()?;
        let quarter = request.into_inner().quarter;
        stats::check_quarter(&quarter, today()).map_err(invalid)?;
        let policy = self.policy();
        let releases = self.own_releases(&city);
        let (spent, cap) = Self::check_budget(&policy, &quarter, &releases)?;
        let (digest, support, activity) = self.digest(&quarter, &policy, &releases);
        if let Some(draft) = self
            .0
            .local
            .read(&docs::records_doc(), |doc| docs::read_draft(doc, &quarter))
        {
            if draft.digest == digest {
                // The same records and policy: the same preview, noise included.
                return Ok(Response::new(release_to_pb(&draft.release, true)));
            }
        }
        let earlier: Vec<&PublishedRelease> =
            releases.iter().filter(|r| r.quarter == quarter).collect();
        let exact = stats::tabulate(&support);
        let cells = if policy.mode == "noise" {
            disclosure::protect_by_noise(&exact, policy.epsilon_milli, &mut rand_dp::rng())
        } else {
            // Every earlier suppression release of the quarter is read together with this one.
            let before: Vec<disclosure::Earlier> = earlier
                .iter()
                .filter(|r| r.mode == "suppression")
                .map(|r| disclosure::Earlier::from_cells(&r.cells, r.k))
                .collect();
            let (k, correction) = (policy.k, !before.is_empty());
            blocking(move || disclosure::protect_by_suppression(&exact, k, &before))
                .await?
                .map_err(|refusal| {
                    Status::failed_precondition(if correction {
                        format!(
                            "{quarter} cannot be published as it stands: {refusal}. The earlier release stays the published figure of {quarter}; preview again once more records of the quarter are corrected (more changes hide more), or ask the hub about the noise policy"
                        )
                    } else {
                        format!(
                            "{quarter} cannot be published by suppression: {refusal}. Ask the hub about the noise policy"
                        )
                    })
                })?
        };
        let number = earlier.len() as i64 + 1;
        let release = PublishedRelease {
            id: format!("{quarter}-r{number}"),
            city: city.clone(),
            quarter: quarter.clone(),
            number,
            corrects: earlier
                .last()
                .map(|r| format!("cities/{city}/stats/{}", r.id))
                .unwrap_or_default(),
            mode: policy.mode.clone(),
            k: if policy.mode == "suppression" {
                policy.k
            } else {
                0
            },
            epsilon_milli: if policy.mode == "noise" {
                policy.epsilon_milli
            } else {
                0
            },
            year_spent_milli: spent,
            year_cap_milli: cap,
            cells,
            activity: stats::activity_totals(&activity),
            created_ms: 0,
            draft_id: new_id(),
        };
        let draft = Draft {
            release: release.clone(),
            digest,
        };
        let local = self.0.local.clone();
        blocking(move || {
            local.edit(&docs::records_doc(), |tx| {
                docs::write_draft(tx, &draft).map_err(doc_error)
            })
        })
        .await??;
        Ok(Response::new(release_to_pb(&release, true)))
    }

    async fn publish_release(
        &self,
        request: Request<pb::PublishReleaseRequest>,
    ) -> Result<Response<pb::StatsRelease>, Status> {
        require(&request, ApiRole::Coordinator)?;
        let city = self.city()?;
        let quarter = request.into_inner().quarter;
        stats::check_quarter(&quarter, today()).map_err(invalid)?;
        let draft = self
            .0
            .local
            .read(&docs::records_doc(), |doc| docs::read_draft(doc, &quarter))
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "preview {quarter} first; publishing sends exactly what the preview showed"
                ))
            })?;
        let releases = self.own_releases(&city);
        let policy = self.policy();
        // The releases other than one made from this very preview (which exists if an earlier
        // publish stored it and then stopped before clearing the preview).
        let (done, others): (Vec<PublishedRelease>, Vec<PublishedRelease>) = releases
            .iter()
            .cloned()
            .partition(|r| r.draft_id == draft.release.draft_id);
        let (digest, _, _) = self.digest(&quarter, &policy, &others);
        if digest != draft.digest {
            return Err(Status::failed_precondition(format!(
                "the records of {quarter}, the policy or the releases changed since the preview; preview again"
            )));
        }
        if let Some(done) = done.first() {
            self.clear_draft(&quarter).await?;
            return Ok(Response::new(release_to_pb(done, false)));
        }
        let mut release = draft.release.clone();
        release.created_ms = now_ms();
        for cell in &mut release.cells {
            cell.reason = None;
        }
        let doc = docs::city_stats_doc(&city).expect("a city name makes a document id");
        let (sync, stored) = (self.0.sync.clone(), release);
        // Check and spend in one step: the checks read the releases inside the transaction
        // that writes the new one, under the lock every edit of the document takes, so two
        // publishers cannot both pass them.
        let release = blocking(move || {
            sync.edit(&doc, |tx| {
                let now = docs::releases(tx);
                if let Some(done) = now.iter().find(|r| r.draft_id == stored.draft_id) {
                    return Ok(done.clone());
                }
                if now.iter().any(|r| r.id == stored.id) {
                    return Err(Status::failed_precondition(format!(
                        "{} was published meanwhile; preview {} again",
                        stored.id, stored.quarter
                    )));
                }
                if stored.mode == "noise" {
                    let (spent, cap) = Self::check_budget(&policy, &stored.quarter, &now)?;
                    if (spent, cap) != (stored.year_spent_milli, stored.year_cap_milli) {
                        return Err(Status::failed_precondition(format!(
                            "the ε spent in the year of {} changed since the preview; preview again",
                            stored.quarter
                        )));
                    }
                }
                docs::write_release(tx, &stored).map_err(doc_error)?;
                Ok(stored)
            })
        })
        .await?
        .map_err(edit_status)?;
        self.clear_draft(&quarter).await?;
        Ok(Response::new(release_to_pb(&release, false)))
    }

    async fn list_stats_releases(
        &self,
        request: Request<pb::ListStatsReleasesRequest>,
    ) -> Result<Response<pb::ListStatsReleasesResponse>, Status> {
        require(&request, ApiRole::Reader)?;
        let request = request.into_inner();
        let city = match request.parent.strip_prefix("cities/") {
            Some("-") => None,
            Some(city) if sfs_sync::scope::validate_node_name(city).is_ok() => {
                Some(city.to_string())
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "field `parent`: {:?} must be cities/{{city}} or cities/-",
                    request.parent
                )))
            }
        };
        stats::check_period("period", &request.period).map_err(invalid)?;
        let releases: Vec<PublishedRelease> = self.0.sync.read(|engine| {
            engine
                .documents()
                .filter(|(id, _)| {
                    id.as_str()
                        .strip_prefix("shared/stats/")
                        .is_some_and(|c| city.as_deref().is_none_or(|want| want == c))
                })
                .flat_map(|(_, doc)| docs::releases(doc))
                .filter(|r| request.period.is_empty() || r.quarter.starts_with(&request.period))
                .collect()
        });
        Ok(Response::new(pb::ListStatsReleasesResponse {
            releases: releases.iter().map(|r| release_to_pb(r, false)).collect(),
        }))
    }

    async fn get_disclosure_policy(
        &self,
        request: Request<pb::GetDisclosurePolicyRequest>,
    ) -> Result<Response<pb::DisclosurePolicy>, Status> {
        require(&request, ApiRole::Reader)?;
        Ok(Response::new(policy_to_pb(&self.policy())))
    }

    async fn update_disclosure_policy(
        &self,
        request: Request<pb::UpdateDisclosurePolicyRequest>,
    ) -> Result<Response<pb::DisclosurePolicy>, Status> {
        require(&request, ApiRole::Coordinator)?;
        let p = request
            .into_inner()
            .policy
            .ok_or_else(|| Status::invalid_argument("field `policy`: is required"))?;
        if !p.mechanism.is_empty() && p.mechanism != "discrete_laplace" {
            return Err(Status::invalid_argument(format!(
                "field `mechanism`: {:?} is not offered; use discrete_laplace",
                p.mechanism
            )));
        }
        let policy = Policy {
            mode: p.mode,
            k: p.k as i64,
            epsilon_milli: p.epsilon_milli as i64,
            year_cap_milli: p.year_cap_milli as i64,
        };
        policy.check().map_err(invalid)?;
        let (sync, stored) = (self.0.sync.clone(), policy.clone());
        blocking(move || {
            sync.edit(&docs::policy_doc(), |tx| {
                docs::write_policy(tx, &stored).map_err(doc_error)
            })
        })
        .await?
        .map_err(edit_status)?;
        Ok(Response::new(policy_to_pb(&policy)))
    }

    async fn get_national_stats(
        &self,
        request: Request<pb::GetNationalStatsRequest>,
    ) -> Result<Response<pb::NationalStats>, Status> {
        require(&request, ApiRole::Reader)?;
        let year = stats::check_year(request.into_inner().year).map_err(invalid)?;
        let national = self.national_year(year);
        Ok(Response::new(pb::NationalStats {
            year,
            cells: national
                .cells
                .iter()
                .map(|c| pb::NationalCell {
                    period: c.period.clone(),
                    county: c.county.clone(),
                    table: c.pos.table.clone(),
                    row: c.pos.row.clone(),
                    col: c.pos.col.clone(),
                    value: c.value,
                    status: c.status.clone(),
                    sd: c.sd,
                    cities: c.cities as i32,
                })
                .collect(),
            activity: national
                .activity
                .iter()
                .map(|(period, kind, value)| pb::NationalActivity {
                    period: period.clone(),
                    kind: kind.clone(),
                    value: *value,
                })
                .collect(),
            releases: national.releases.clone(),
        }))
    }

    async fn export_national_stats_csv(
        &self,
        request: Request<pb::GetNationalStatsRequest>,
    ) -> Result<Response<pb::CsvExport>, Status> {
        require(&request, ApiRole::Reader)?;
        let year = stats::check_year(request.into_inner().year).map_err(invalid)?;
        let national = self.national_year(year);
        Ok(Response::new(pb::CsvExport {
            filename: format!("national-stats-{year}.csv"),
            csv: national::to_csv(&national),
        }))
    }
}
