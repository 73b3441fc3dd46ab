//! Signals (coordinator and admin only): list, open, add, follow up, close; and the access log
//! (admin), which shows who read or changed which signal and when, in Stockholm time.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use sfs_client::v1 as pb;

use super::{api_error, field_error, Admin, Coordinator, Ctx, Signed};
use crate::i18n::Tr;
use crate::session::Session;
use crate::{format, html};

const STATUSES: [&str; 4] = ["new", "referred", "in_support", "closed"];
const KINDS: [&str; 2] = ["signal", "support_contact"];

/// A signal as the pages show it.
pub(crate) struct SignalView {
    pub href: String,
    pub date: String,
    pub organisation: String,
    pub kind: String,
    pub status: String,
    pub status_code: String,
    pub description: String,
    pub follow_ups: Vec<(String, String, String, bool)>,
}

async fn organisations(session: &mut Session) -> BTreeMap<String, String> {
    match session.client.list_organisations().await {
        Ok(list) => list.into_iter().map(|o| (o.name, o.display_name)).collect(),
        Err(_) => BTreeMap::new(),
    }
}

fn view(t: &Tr, signal: pb::Signal, orgs: &BTreeMap<String, String>) -> SignalView {
    let id = signal.name.strip_prefix("signals/").unwrap_or(&signal.name);
    SignalView {
        href: format!("/signals/{id}"),
        date: format::iso_date(t, &signal.date),
        organisation: orgs
            .get(&signal.reporting_organisation)
            .cloned()
            .unwrap_or_else(|| t.get("unknown-organisation")),
        kind: t.get(&format!("signal-kind-{}", signal.kind)),
        status: t.get(&format!("signal-status-{}", signal.status)),
        status_code: signal.status,
        description: signal.description,
        follow_ups: signal
            .follow_ups
            .into_iter()
            .map(|f| {
                (
                    f.action,
                    orgs.get(&f.owner).cloned().unwrap_or_default(),
                    format::iso_date(t, &f.due_date),
                    f.done,
                )
            })
            .collect(),
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    page: String,
}

#[derive(Template)]
#[template(path = "signals.html")]
struct ListPage {
    t: Tr,
    ctx: Ctx,
    signals: Vec<SignalView>,
    total: String,
    status: String,
    statuses: Vec<(String, String)>,
    next_href: String,
}

fn status_options(t: &Tr) -> Vec<(String, String)> {
    STATUSES
        .iter()
        .map(|s| (s.to_string(), t.get(&format!("signal-status-{s}"))))
        .collect()
}

/// `GET /signals`.
pub(crate) async fn list(
    Signed { t, mut session, .. }: Signed<Coordinator>,
    Query(query): Query<ListQuery>,
) -> Response {
    let page = match session
        .client
        .signals
        .list_signals(pb::ListSignalsRequest {
            page_size: 50,
            page_token: query.page.clone(),
            status: query.status.clone(),
        })
        .await
    {
        Ok(page) => page.into_inner(),
        Err(status) => return api_error(&t, &session, &status),
    };
    let orgs = organisations(&mut session).await;
    let next_href = if page.next_page_token.is_empty() {
        String::new()
    } else {
        format!(
            "/signals?{}",
            serde_urlencoded::to_string([
                ("status", query.status.as_str()),
                ("page", page.next_page_token.as_str())
            ])
            .unwrap_or_default()
        )
    };
    let page = ListPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/signals"),
        total: t.count("signals-total", "count", i64::from(page.total_size)),
        signals: page
            .signals
            .into_iter()
            .map(|s| view(&t, s, &orgs))
            .collect(),
        status: query.status,
        statuses: status_options(&t),
        next_href,
    };
    html(page.render())
}

#[derive(Deserialize, Default)]
pub(crate) struct SignalForm {
    #[serde(default)]
    date: String,
    #[serde(default)]
    organisation: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    description: String,
}

#[derive(Template)]
#[template(path = "signal_form.html")]
struct FormPage {
    t: Tr,
    ctx: Ctx,
    form: SignalForm,
    organisations: Vec<(String, String)>,
    kinds: Vec<(String, String)>,
    date_error: String,
    organisation_error: String,
    description_error: String,
    other_error: String,
}

async fn form_page(
    t: Tr,
    mut session: Session,
    form: SignalForm,
    error: Option<(String, String)>,
) -> Response {
    let organisations = organisations(&mut session).await.into_iter().collect();
    let mut page = FormPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/signals"),
        form,
        organisations,
        kinds: KINDS
            .iter()
            .map(|k| (k.to_string(), t.get(&format!("signal-kind-{k}"))))
            .collect(),
        date_error: String::new(),
        organisation_error: String::new(),
        description_error: String::new(),
        other_error: String::new(),
    };
    let status = super::form_status(error.is_some());
    if let Some((field, text)) = error {
        match field.trim_start_matches("signal.") {
            "date" => page.date_error = text,
            "reporting_organisation" => page.organisation_error = text,
            "description" => page.description_error = text,
            _ => page.other_error = text,
        }
    }
    (status, html(page.render())).into_response()
}

/// `GET /signals/new`.
pub(crate) async fn new_form(Signed { t, session, .. }: Signed<Coordinator>) -> Response {
    let form = SignalForm {
        date: format::today(),
        kind: "signal".into(),
        ..Default::default()
    };
    form_page(t, session, form, None).await
}

/// `POST /signals`.
pub(crate) async fn create(
    Signed { t, mut session, .. }: Signed,
    Form(form): Form<SignalForm>,
) -> Response {
    let signal = pb::Signal {
        date: form.date.clone(),
        reporting_organisation: form.organisation.clone(),
        kind: form.kind.clone(),
        description: form.description.clone(),
        status: "new".into(),
        ..Default::default()
    };
    match session
        .client
        .signals
        .create_signal(pb::CreateSignalRequest {
            signal: Some(signal),
        })
        .await
    {
        Ok(created) => {
            let created = created.into_inner();
            let id = created.name.strip_prefix("signals/").unwrap_or_default();
            Redirect::to(&format!("/signals/{id}")).into_response()
        }
        Err(status) => match field_error(&t, &status) {
            Some(error) => form_page(t, session, form, Some(error)).await,
            None => api_error(&t, &session, &status),
        },
    }
}

#[derive(Template)]
#[template(path = "signal.html")]
struct ShowPage {
    t: Tr,
    ctx: Ctx,
    signal: SignalView,
    statuses: Vec<(String, String)>,
    organisations: Vec<(String, String)>,
    error: String,
}

/// `GET /signals/{id}` (the API writes the read to the access log).
pub(crate) async fn show(
    Signed { t, mut session, .. }: Signed<Coordinator>,
    Path(id): Path<String>,
) -> Response {
    let signal = match session
        .client
        .signals
        .get_signal(pb::GetRequest {
            name: format!("signals/{id}"),
        })
        .await
    {
        Ok(signal) => signal.into_inner(),
        Err(status) => return api_error(&t, &session, &status),
    };
    let orgs = organisations(&mut session).await;
    let page = ShowPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/signals"),
        signal: view(&t, signal, &orgs),
        statuses: status_options(&t),
        organisations: orgs.into_iter().collect(),
        error: String::new(),
    };
    html(page.render())
}

#[derive(Deserialize, Default)]
pub(crate) struct UpdateForm {
    #[serde(default)]
    status: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    due_date: String,
}

/// `POST /signals/{id}`: a new status, and a follow-up if one is written.
pub(crate) async fn update(
    Signed { t, mut session, .. }: Signed,
    Path(id): Path<String>,
    Form(form): Form<UpdateForm>,
) -> Response {
    let name = format!("signals/{id}");
    let mut signal = match session
        .client
        .signals
        .get_signal(pb::GetRequest { name: name.clone() })
        .await
    {
        Ok(signal) => signal.into_inner(),
        Err(status) => return api_error(&t, &session, &status),
    };
    let mut mask = Vec::new();
    if !form.status.is_empty() && form.status != signal.status {
        signal.status = form.status.clone();
        mask.push("status".to_string());
    }
    if !form.action.trim().is_empty() {
        signal.follow_ups.push(pb::FollowUp {
            action: form.action.trim().to_string(),
            owner: form.owner.clone(),
            due_date: form.due_date.clone(),
            done: false,
        });
        mask.push("follow_ups".to_string());
    }
    if !mask.is_empty() {
        let request = pb::UpdateSignalRequest {
            signal: Some(signal),
            update_mask: mask,
        };
        if let Err(status) = session.client.signals.update_signal(request).await {
            if let Some((_, text)) = field_error(&t, &status) {
                let signal = session
                    .client
                    .signals
                    .get_signal(pb::GetRequest { name })
                    .await;
                let Ok(signal) = signal else {
                    return api_error(&t, &session, &status);
                };
                let orgs = organisations(&mut session).await;
                let page = ShowPage {
                    t,
                    ctx: Ctx::new(&t, Some(&session), "/signals"),
                    signal: view(&t, signal.into_inner(), &orgs),
                    statuses: status_options(&t),
                    organisations: orgs.into_iter().collect(),
                    error: text,
                };
                return (StatusCode::UNPROCESSABLE_ENTITY, html(page.render())).into_response();
            }
            return api_error(&t, &session, &status);
        }
    }
    Redirect::to(&format!("/signals/{id}")).into_response()
}

/// One access-log line as shown.
pub(crate) struct EntryView {
    pub time: String,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "access_log.html")]
struct AccessLogPage {
    t: Tr,
    ctx: Ctx,
    entries: Vec<EntryView>,
    total: String,
    next_href: String,
}

#[derive(Deserialize, Default)]
pub(crate) struct PageQuery {
    #[serde(default)]
    page: String,
}

/// `GET /access-log` (admin).
pub(crate) async fn access_log(
    Signed { t, mut session, .. }: Signed<Admin>,
    Query(query): Query<PageQuery>,
) -> Response {
    let page = match session
        .client
        .signals
        .list_access_log(pb::ListRequest {
            page_size: 100,
            page_token: query.page,
        })
        .await
    {
        Ok(page) => page.into_inner(),
        Err(status) => return api_error(&t, &session, &status),
    };
    let entries = page
        .entries
        .into_iter()
        .map(|e| EntryView {
            time: format::date_time(&t, e.time_ms),
            actor: e.actor,
            action: t.get(&format!("access-action-{}", e.action)),
            href: e
                .resource
                .strip_prefix("signals/")
                .map(|id| format!("/signals/{id}"))
                .unwrap_or_default(),
            resource: e.resource,
        })
        .collect();
    let page = AccessLogPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/access-log"),
        entries,
        total: t.count("access-log-total", "count", i64::from(page.total_size)),
        next_href: if page.next_page_token.is_empty() {
            String::new()
        } else {
            format!("/access-log?page={}", super::encode(&page.next_page_token))
        },
    };
    html(page.render())
}
