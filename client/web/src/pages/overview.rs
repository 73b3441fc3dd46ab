//! The overview of cities: at the national hub every member city, at a county hub the county's
//! own cities (the county coordinator's view); each with the step of the method it has reached,
//! when the node last saw it and the handbook release it runs, and how each step is adopted.
//! At a county hub an admin also onboards a city into the county and removes one.

use askama::Template;
use axum::extract::Query;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use sfs_client::v1 as pb;
use tonic::Code;

use super::{api_error, city_name, form_status, CountyAdmin, Ctx, Signed};
use crate::i18n::Tr;
use crate::session::{NodeKind, Role, Session};
use crate::{format, html};

/// One city's row.
pub(crate) struct CityRow {
    pub id: String,
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
    title: String,
    intro: String,
    adoption_caption: String,
    /// The national hub shows each city's county; a county hub's cities share one.
    show_county: bool,
    cities: Vec<CityRow>,
    steps: Vec<(String, String, String)>,
    /// A county hub's admin may onboard and remove cities.
    can_onboard: bool,
    notice: String,
    /// The city id entered in the onboarding form, and why it was refused.
    city: String,
    city_error: String,
    /// Why a removal was refused.
    remove_error: String,
}

#[derive(Deserialize, Default)]
pub(crate) struct OverviewQuery {
    #[serde(default)]
    added: String,
    #[serde(default)]
    removed: String,
}

/// What the page shows besides the cities: a notice, or the form's value and errors.
#[derive(Default)]
struct Outcome {
    notice: String,
    city: String,
    city_error: String,
    remove_error: String,
}

/// `GET /overview`.
pub(crate) async fn page(
    Signed { t, session, .. }: Signed,
    Query(query): Query<OverviewQuery>,
) -> Response {
    let notice = if !query.added.is_empty() {
        t.arg("county-added", "city", city_name(&query.added))
    } else if !query.removed.is_empty() {
        t.arg("county-removed", "city", city_name(&query.removed))
    } else {
        String::new()
    };
    overview(
        t,
        session,
        Outcome {
            notice,
            ..Default::default()
        },
    )
    .await
}

async fn overview(t: Tr, mut session: Session, outcome: Outcome) -> Response {
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
            let connected = linked_now(&t, &city);
            CityRow {
                // A city onboarded before the national directory names it is listed by id.
                name: if city.display_name.is_empty() || city.display_name == id {
                    city_name(&id)
                } else {
                    city.display_name
                },
                id,
                county: city.county,
                connected,
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
    let county = session.kind == NodeKind::County;
    let (title, intro, adoption_caption) = if county {
        (
            t.arg("county-title", "county", &session.county_name),
            t.get("county-intro"),
            t.arg("county-adoption", "county", &session.county_name),
        )
    } else {
        (
            t.get("overview-title"),
            t.get("overview-intro"),
            t.get("overview-adoption"),
        )
    };
    let status = form_status(!outcome.city_error.is_empty() || !outcome.remove_error.is_empty());
    let page = OverviewPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/overview"),
        title,
        intro,
        adoption_caption,
        show_county: !county,
        cities: rows,
        steps,
        can_onboard: county && session.role >= Role::Admin,
        notice: outcome.notice,
        city: outcome.city,
        city_error: outcome.city_error,
        remove_error: outcome.remove_error,
    };
    (status, html(page.render())).into_response()
}

#[derive(Deserialize, Default)]
pub(crate) struct CityForm {
    #[serde(default)]
    city: String,
}

/// Whether a city is linked now; for a city under a county hub, through which one.
fn linked_now(t: &Tr, city: &pb::City) -> String {
    if city.connected && !city.linked_via.is_empty() {
        t.arg("overview-connected-via", "hub", &city.linked_via)
    } else {
        t.get(if city.connected { "yes" } else { "no" })
    }
}

/// The refusal of an onboarding or a removal in the person's language, or none if it is no
/// refusal of what was entered (the node is unreachable, the session ended).
fn refusal(t: &Tr, city: &str, status: &tonic::Status) -> Option<String> {
    let name = city_name(city);
    match status.code() {
        Code::InvalidArgument => Some(t.get("county-city-invalid")),
        Code::AlreadyExists => Some(t.arg("county-city-exists", "city", name)),
        Code::NotFound => Some(t.arg("county-city-unknown", "city", name)),
        // A city of the county hub's configuration (`county.cities`) stays until the
        // configuration changes.
        Code::FailedPrecondition if status.message().contains("county.cities") => {
            Some(t.arg("county-city-configured", "city", name))
        }
        _ => None,
    }
}

/// `POST /overview/cities`: onboards a city into the county (`Directory.CreateCity` at the
/// county hub): from now on the county hub admits its link.
pub(crate) async fn add_city(
    Signed { t, mut session, .. }: Signed<CountyAdmin>,
    Form(form): Form<CityForm>,
) -> Response {
    let city = form.city.trim().to_lowercase();
    let request = pb::CreateCityRequest {
        city: Some(pb::City {
            name: format!("cities/{city}"),
            ..Default::default()
        }),
    };
    let result = if city.is_empty() {
        Err(tonic::Status::invalid_argument("field `city.name`: empty"))
    } else {
        session.client.directory.create_city(request).await
    };
    match result {
        Ok(_) => Redirect::to(&format!("/overview?added={}", super::encode(&city))).into_response(),
        Err(status) => match refusal(&t, &city, &status) {
            Some(error) => {
                let outcome = Outcome {
                    city: form.city,
                    city_error: error,
                    ..Default::default()
                };
                overview(t, session, outcome).await
            }
            None => api_error(&t, &session, &status),
        },
    }
}

/// `POST /overview/cities/remove`: the county stops serving a city onboarded through the app
/// or the API (`Directory.DeleteCity` at the county hub); its open link ends.
pub(crate) async fn remove_city(
    Signed { t, mut session, .. }: Signed<CountyAdmin>,
    Form(form): Form<CityForm>,
) -> Response {
    let city = form.city.trim().to_string();
    match session
        .client
        .directory
        .delete_city(pb::DeleteRequest {
            name: format!("cities/{city}"),
        })
        .await
    {
        Ok(_) => {
            Redirect::to(&format!("/overview?removed={}", super::encode(&city))).into_response()
        }
        Err(status) => match refusal(&t, &city, &status) {
            Some(error) => {
                let outcome = Outcome {
                    remove_error: error,
                    ..Default::default()
                };
                overview(t, session, outcome).await
            }
            None => api_error(&t, &session, &status),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::Lang;

    #[test]
    fn a_city_linked_through_a_county_hub_says_which() {
        let sv = Tr::new(Lang::Sv);
        let city = |connected: bool, via: &str| pb::City {
            connected,
            linked_via: via.into(),
            ..Default::default()
        };
        assert_eq!(
            linked_now(&sv, &city(true, "skane")),
            "Ja, via länshubben skane"
        );
        assert_eq!(linked_now(&sv, &city(true, "")), "Ja");
        assert_eq!(linked_now(&sv, &city(false, "")), "Nej");
        let en = Tr::new(Lang::En);
        assert_eq!(
            linked_now(&en, &city(true, "skane")),
            "Yes, through the county hub skane"
        );
    }

    #[test]
    fn refusals_of_the_county_api_read_as_swedish_sentences() {
        let sv = Tr::new(Lang::Sv);
        let configured = tonic::Status::failed_precondition(
            "malmo is named in county.cities of this county hub's configuration; remove it there \
             (and restart) to stop serving it",
        );
        let text = refusal(&sv, "malmo", &configured).unwrap();
        assert!(
            text.contains("Malmö") && text.contains("county.cities"),
            "{text}"
        );
        let exists = tonic::Status::already_exists("cities/lund is already one of …");
        assert!(refusal(&sv, "lund", &exists).unwrap().contains("Lund"));
        let bad = tonic::Status::invalid_argument("field `city.name`: …");
        assert_eq!(
            refusal(&sv, "x y", &bad),
            Some(sv.get("county-city-invalid"))
        );
        assert_eq!(
            refusal(&sv, "lund", &tonic::Status::unavailable("down")),
            None
        );
        assert_eq!(
            refusal(&sv, "lund", &tonic::Status::failed_precondition("other")),
            None
        );
    }
}
