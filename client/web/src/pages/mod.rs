//! The pages: one module per area, the layout's context and shared helpers here.

mod auth;
mod handbook;
mod handbook_edit;
mod lessons;
mod overview;
mod register;
mod register_edit;
mod signals;
mod start;
mod stats;

use std::collections::BTreeMap;
use std::marker::PhantomData;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use sfs_client::v1 as pb;
use tonic::Code;

use crate::i18n::Tr;
use crate::session::{NodeKind, Role, Session};
use crate::{html, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(start::page))
        .route("/static/app.css", get(css))
        .route("/static/print.css", get(print_css))
        .route("/static/live.js", get(live_js))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/language/{code}", get(auth::language))
        .route("/lessons", get(lessons::list).post(lessons::create))
        .route("/lessons/new", get(lessons::new_form))
        .route("/lessons/events", get(lessons::events))
        .route(
            "/lessons/{city}/{id}",
            get(lessons::show).post(lessons::update),
        )
        .route("/lessons/{city}/{id}/edit", get(lessons::edit_form))
        .route("/lessons/{city}/{id}/archive", post(lessons::archive))
        .route("/signals", get(signals::list).post(signals::create))
        .route("/signals/new", get(signals::new_form))
        .route("/signals/{id}", get(signals::show).post(signals::update))
        .route("/access-log", get(signals::access_log))
        .route("/statistics", get(stats::page))
        .route("/statistics/records", post(stats::create_record))
        .route("/statistics/preview", post(stats::preview))
        .route("/statistics/publish", post(stats::publish))
        .route("/overview", get(overview::page))
        .route("/overview/cities", post(overview::add_city))
        .route("/overview/cities/remove", post(overview::remove_city))
        .route("/register", get(register::page))
        .route(
            "/register/organisations",
            post(register_edit::create_organisation),
        )
        .route(
            "/register/organisations/new",
            get(register_edit::new_organisation),
        )
        .route(
            "/register/organisations/{id}",
            post(register_edit::update_organisation),
        )
        .route(
            "/register/organisations/{id}/edit",
            get(register_edit::edit_organisation),
        )
        .route("/register/contacts", post(register_edit::create_contact))
        .route("/register/contacts/new", get(register_edit::new_contact))
        .route(
            "/register/contacts/{id}",
            post(register_edit::update_contact),
        )
        .route(
            "/register/contacts/{id}/edit",
            get(register_edit::edit_contact),
        )
        .route("/register/meetings", post(register_edit::create_meeting))
        .route("/register/meetings/new", get(register_edit::new_meeting))
        .route(
            "/register/meetings/{id}",
            post(register_edit::update_meeting),
        )
        .route(
            "/register/meetings/{id}/edit",
            get(register_edit::edit_meeting),
        )
        .route("/handbook", get(handbook::page))
        .route("/handbook/progress", post(handbook::set_progress))
        .route("/handbook/notes", post(handbook::set_note))
        .route("/handbook/edit", get(handbook_edit::page))
        .route("/handbook/edit/{kind}", post(handbook_edit::create))
        .route("/handbook/edit/{kind}/{id}", post(handbook_edit::update))
        .route(
            "/handbook/edit/{kind}/{id}/delete",
            post(handbook_edit::delete),
        )
        .route("/national", get(stats::national))
        .route("/national.csv", get(stats::national_csv))
        .fallback(not_found)
}

async fn css() -> Response {
    static_file("text/css", include_str!("../../static/app.css"))
}

async fn print_css() -> Response {
    static_file("text/css", include_str!("../../static/print.css"))
}

async fn live_js() -> Response {
    static_file("text/javascript", include_str!("../../static/live.js"))
}

fn static_file(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn not_found(headers: HeaderMap) -> Response {
    error_page(
        &Tr::new(crate::lang(&headers)),
        StatusCode::NOT_FOUND,
        "error-not-found",
    )
}

/// One link of the navigation.
pub(crate) struct NavItem {
    pub href: &'static str,
    pub label: String,
    pub current: bool,
}

/// What the layout needs on every page.
pub(crate) struct Ctx {
    pub signed_in: bool,
    pub csrf: String,
    pub node: String,
    pub role: String,
    pub nav: Vec<NavItem>,
    pub lang_href: String,
    pub lang_label: String,
    pub lang_code: &'static str,
}

impl Ctx {
    /// The context of a page at `path` (for the current link and the language switch).
    pub fn new(t: &Tr, session: Option<&Session>, path: &str) -> Ctx {
        let other = t.lang.other();
        let lang_href = format!("/language/{}?back={}", other.code(), encode(path));
        let lang_label = Tr::new(other).get("language-name");
        let Some(s) = session else {
            return Ctx {
                signed_in: false,
                csrf: String::new(),
                node: String::new(),
                role: String::new(),
                nav: Vec::new(),
                lang_href,
                lang_label,
                lang_code: other.code(),
            };
        };
        let mut items: Vec<(&'static str, &str)> = vec![
            ("/", "nav-start"),
            ("/lessons", "nav-lessons"),
            ("/handbook", "nav-handbook"),
        ];
        match s.kind {
            NodeKind::City => {
                items.push(("/register", "nav-register"));
                if s.role >= Role::Coordinator {
                    items.push(("/statistics", "nav-statistics"));
                }
                items.push(("/national", "nav-national"));
                if s.role >= Role::Coordinator {
                    items.push(("/signals", "nav-signals"));
                }
                if s.role >= Role::Admin {
                    items.push(("/access-log", "nav-access-log"));
                }
            }
            // The county coordinator's view: the county's cities and its figures; the
            // register and signals are a city's own.
            NodeKind::County => {
                items.push(("/overview", "nav-county-cities"));
                items.push(("/national", "nav-county-statistics"));
            }
            NodeKind::Hub => {
                items.push(("/overview", "nav-overview"));
                items.push(("/national", "nav-national"));
            }
        }
        let section = |href: &str| {
            if href == "/" {
                path == "/"
            } else {
                path == href || path.starts_with(&format!("{href}/"))
            }
        };
        Ctx {
            signed_in: true,
            csrf: s.csrf.clone(),
            node: match s.kind {
                NodeKind::Hub => t.get("node-hub"),
                NodeKind::County => t.arg("node-county", "county", &s.county_name),
                NodeKind::City => t.arg("node-city", "city", city_name(&s.node_id)),
            },
            role: t.get(s.role.label_id()),
            nav: items
                .into_iter()
                .map(|(href, id)| NavItem {
                    href,
                    label: t.get(id),
                    current: section(href),
                })
                .collect(),
            lang_href,
            lang_label,
            lang_code: other.code(),
        }
    }
}

/// Percent-encodes a query value.
pub(crate) fn encode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|s| s.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

/// A readable name for a city id (`malmo` → `Malmö`) when the directory has none.
pub(crate) fn city_name(id: &str) -> String {
    match id {
        "malmo" => "Malmö".into(),
        "goteborg" => "Göteborg".into(),
        "skane" => "Skåne".into(),
        _ => {
            let mut chars = id.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            }
        }
    }
}

/// The name people read for the county of the county hub `id`: the county (län) the national
/// directory gives most of its cities (`Skåne län`), else a readable form of the id.
pub(crate) async fn county_name(client: &mut sfs_client::Client, id: &str) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    if let Ok(response) = client
        .directory
        .list_cities(pb::ListRequest {
            page_size: 500,
            page_token: String::new(),
        })
        .await
    {
        for city in response.into_inner().cities {
            if !city.county.trim().is_empty() {
                *counts.entry(city.county.trim().to_string()).or_default() += 1;
            }
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(name, _)| name)
        .unwrap_or_else(|| city_name(id))
}

/// City display names by id, from the national directory (ids as names where it has none).
pub(crate) async fn city_names(session: &mut Session) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    if let Ok(response) = session
        .client
        .directory
        .list_cities(pb::ListRequest {
            page_size: 500,
            page_token: String::new(),
        })
        .await
    {
        for city in response.into_inner().cities {
            if let Some(id) = city.name.strip_prefix("cities/") {
                names.insert(id.to_string(), city.display_name);
            }
        }
    }
    names
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    t: Tr,
    ctx: Ctx,
    message: String,
    detail: String,
}

/// A page that says what went wrong, in the person's language.
pub(crate) fn error_page(t: &Tr, status: StatusCode, id: &str) -> Response {
    error_page_with(t, None, status, id, String::new())
}

pub(crate) fn error_page_with(
    t: &Tr,
    session: Option<&Session>,
    status: StatusCode,
    id: &str,
    detail: String,
) -> Response {
    let page = ErrorPage {
        t: *t,
        ctx: Ctx::new(t, session, ""),
        message: t.get(id),
        detail,
    };
    (status, html(page.render())).into_response()
}

/// The answer to a failed API call: sign-in again, refused, not found, or unavailable.
pub(crate) fn api_error(t: &Tr, session: &Session, status: &tonic::Status) -> Response {
    let (code, id) = match status.code() {
        Code::Unauthenticated => return Redirect::to("/login").into_response(),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "error-forbidden"),
        Code::NotFound => (StatusCode::NOT_FOUND, "error-not-found"),
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => {
            (StatusCode::SERVICE_UNAVAILABLE, "error-unavailable")
        }
        Code::InvalidArgument | Code::FailedPrecondition => {
            (StatusCode::BAD_REQUEST, "error-invalid")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "error-internal"),
    };
    tracing::info!(code = ?status.code(), message = status.message(), "API call refused");
    error_page_with(t, Some(session), code, id, status.message().to_string())
}

/// The least a page asks of the person signed in, as a type for [`Signed`].
pub(crate) trait Need {
    /// The least role, on a node of kind `AT`; `None`: anyone signed in, on any node.
    const ROLE: Option<Role>;
    /// The kind of node the page is for (when `ROLE` is set).
    const AT: NodeKind = NodeKind::City;
}

/// Anyone signed in, on a city, a county hub or the hub.
pub(crate) struct Anyone;
/// At least an editor, on a city node.
pub(crate) struct Editor;
/// At least a coordinator, on a city node.
pub(crate) struct Coordinator;
/// An admin, on a city node.
pub(crate) struct Admin;
/// At least a coordinator, at the hub (the national coordinator).
pub(crate) struct HubCoordinator;
/// An admin at a county hub (the county coordinator who onboards cities).
pub(crate) struct CountyAdmin;

impl Need for Anyone {
    const ROLE: Option<Role> = None;
}
impl Need for Editor {
    const ROLE: Option<Role> = Some(Role::Editor);
}
impl Need for Coordinator {
    const ROLE: Option<Role> = Some(Role::Coordinator);
}
impl Need for Admin {
    const ROLE: Option<Role> = Some(Role::Admin);
}
impl Need for HubCoordinator {
    const ROLE: Option<Role> = Some(Role::Coordinator);
    const AT: NodeKind = NodeKind::Hub;
}
impl Need for CountyAdmin {
    const ROLE: Option<Role> = Some(Role::Admin);
    const AT: NodeKind = NodeKind::County;
}

/// The signed-in person of a request, in their language, allowed what `N` needs. Without a
/// session the request is sent to the sign-in page; with too little a role (or on the wrong
/// kind of node: a hub for a city's own pages, a city for the hub's or the county hub's) it
/// gets the refusal page. The API refuses such calls anyway: this only keeps a person from
/// reaching a page they cannot use.
pub(crate) struct Signed<N: Need = Anyone> {
    pub t: Tr,
    pub session: Session,
    need: PhantomData<N>,
}

impl<N: Need> FromRequestParts<AppState> for Signed<N> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        let t = Tr::new(crate::lang(&parts.headers));
        let Some((_, session)) = crate::session(app, &parts.headers) else {
            return Err(Redirect::to("/login").into_response());
        };
        if let Some(role) = N::ROLE {
            if session.kind != N::AT || session.role < role {
                return Err(error_page_with(
                    &t,
                    Some(&session),
                    StatusCode::FORBIDDEN,
                    "error-forbidden",
                    String::new(),
                ));
            }
        }
        Ok(Signed {
            t,
            session,
            need: PhantomData,
        })
    }
}

/// The status of a form page: 422 when it is shown again with an error, else 200.
pub(crate) fn form_status(has_error: bool) -> StatusCode {
    if has_error {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    }
}

/// A field error from the API (`INVALID_ARGUMENT` naming a field), in the person's language,
/// or none if the error names no field of the form. The privacy guard's refusal names the kind
/// of data; the data itself is never in the API's message nor in ours.
pub(crate) fn field_error(t: &Tr, status: &tonic::Status) -> Option<(String, String)> {
    if status.code() != Code::InvalidArgument {
        return None;
    }
    let message = status.message();
    let rest = message.strip_prefix("field `")?;
    let (field, detail) = rest.split_once('`')?;
    let kinds = [
        (
            "a personal identity number",
            "kind-personal-identity-number",
        ),
        ("a coordination number", "kind-coordination-number"),
        ("a phone number", "kind-phone-number"),
        ("an e-mail address", "kind-email-address"),
        ("a street address", "kind-street-address"),
        ("contact persons", "kind-contact-name"),
        ("deny list", "kind-denied-word"),
    ];
    // The register's own checks first: "is not an e-mail address" names a kind of data too.
    let text = if detail.contains("is not a date of the form") {
        t.get("error-date")
    } else if detail.contains("is in the future") {
        t.get("error-date-future")
    } else if detail.contains("is not an e-mail address") {
        t.get("error-email")
    } else if detail.contains("is not an existing") {
        t.get("error-unknown-reference")
    } else if let Some((_, id)) = kinds.iter().find(|(k, _)| detail.contains(k)) {
        t.arg("error-personal-data", "kind", t.get(id))
    } else if detail.contains("must not be empty") {
        t.get("error-empty")
    } else if detail.contains("characters; at most") {
        t.get("error-too-long")
    } else {
        t.arg(
            "error-field",
            "detail",
            detail.trim_start_matches(':').trim(),
        )
    };
    Some((field.to_string(), text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::Lang;

    #[test]
    fn privacy_refusals_name_the_field_and_the_kind_in_swedish() {
        let sv = Tr::new(Lang::Sv);
        let cases = [
            ("body", "a personal identity number", "ett personnummer"),
            ("title", "a coordination number", "ett samordningsnummer"),
            ("tags", "a phone number", "ett telefonnummer"),
            ("body", "an e-mail address", "en e-postadress"),
            ("body", "a street address", "en gatuadress"),
            (
                "body",
                "the name of one of the city's contact persons",
                "kontaktpersoner",
            ),
            ("body", "a word on the city's deny list", "spärrlista"),
        ];
        for (field, kind, swedish) in cases {
            let status = tonic::Status::invalid_argument(format!(
                "field `{field}`: contains what looks like {kind}; shared text is kept forever and must not hold personal data"
            ));
            let (named, text) = field_error(&sv, &status).unwrap();
            assert_eq!(named, field);
            assert!(text.contains(swedish), "{kind}: {text}");
        }
        let email = tonic::Status::invalid_argument("field `email`: is not an e-mail address");
        assert_eq!(
            field_error(&sv, &email),
            Some(("email".into(), sv.get("error-email")))
        );
        let date = tonic::Status::invalid_argument(
            "field `date`: \"2.11\" is not a date of the form YYYY-MM-DD",
        );
        assert_eq!(field_error(&sv, &date).unwrap().1, sv.get("error-date"));
        let empty = tonic::Status::invalid_argument("field `title`: must not be empty");
        assert_eq!(
            field_error(&sv, &empty),
            Some(("title".into(), sv.get("error-empty")))
        );
        assert_eq!(
            field_error(&sv, &tonic::Status::permission_denied("no")),
            None
        );
        assert_eq!(
            field_error(&sv, &tonic::Status::invalid_argument("no field")),
            None
        );
    }

    #[test]
    fn city_names_read_well_without_the_directory() {
        assert_eq!(city_name("malmo"), "Malmö");
        assert_eq!(city_name("helsingborg"), "Helsingborg");
        assert_eq!(city_name(""), "");
        assert_eq!(encode("/lessons?q=a b"), "%2Flessons%3Fq%3Da+b");
    }
}
