//! The national overview: every member city with the step of the method it has reached, when
//! the hub last saw it and the handbook release it runs; and how each step is adopted.

use askama::Template;
use axum::response::Response;
use sfs_client::v1 as pb;

use super::{api_error, Ctx, Signed};
use crate::i18n::Tr;
use crate::{format, html};

/// One city's row.
pub(crate) struct CityRow {
    pub name: String,
    pub county: String,
    pub connected: String,
    pub last_seen: String,
    pub release: String,
    pub steps_done: String,
    pub latest_step: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    t: Tr,
    ctx: Ctx,
    cities: Vec<CityRow>,
    steps: Vec<(String, String, String)>,
}

/// `GET /overview`.
pub(crate) async fn page(Signed { t, mut session, .. }: Signed) -> Response {
    let cities = match session
        .client
        .directory
        .list_cities(pb::ListRequest {
            page_size: 500,
            page_token: String::new(),
        })
        .await
    {
        Ok(list) => list.into_inner().cities,
        Err(status) => return api_error(&t, &session, &status),
    };
    let adoption = match session
        .client
        .progress
        .get_adoption(pb::GetAdoptionRequest {})
        .await
    {
        Ok(adoption) => adoption.into_inner().steps,
        Err(status) => return api_error(&t, &session, &status),
    };
    let total = adoption.len() as i64;
    let rows = cities
        .into_iter()
        .map(|city| {
            let id = city.name.trim_start_matches("cities/").to_string();
            let done: Vec<&pb::StepAdoption> = adoption
                .iter()
                .filter(|s| s.cities.iter().any(|c| c.city == id && c.state == "done"))
                .collect();
            CityRow {
                name: city.display_name,
                county: city.county,
                connected: t.get(if city.connected { "yes" } else { "no" }),
                last_seen: format::date_time(&t, city.last_seen_ms),
                release: if city.running_release.is_empty() {
                    city.handbook_release
                } else {
                    city.running_release
                },
                steps_done: t.arg(
                    "overview-steps-done",
                    "done",
                    format!("{} / {}", done.len(), total),
                ),
                latest_step: done.last().map(|s| s.title.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let steps = adoption
        .into_iter()
        .map(|s| {
            let count = |state: &str| s.cities.iter().filter(|c| c.state == state).count() as i64;
            (
                s.title,
                format::number(count("done")),
                format::number(count("started")),
            )
        })
        .collect();
    let page = OverviewPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/overview"),
        cities: rows,
        steps,
    };
    html(page.render())
}
