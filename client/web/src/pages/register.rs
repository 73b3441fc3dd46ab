//! The network register (local to the city): the referral routine as steps with names, the
//! member organisations, groups, contacts and meetings with their follow-ups.

use std::collections::BTreeMap;

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;
use sfs_client::v1 as pb;

use super::{api_error, Ctx, Signed};
use crate::i18n::Tr;
use crate::session::NodeKind;
use crate::{format, html};

/// A meeting as shown: date, agenda, decisions, follow-ups (action, owner, due, done).
pub(crate) struct MeetingView {
    pub href: String,
    pub date: String,
    pub agenda: String,
    pub participants: String,
    pub decisions: Vec<String>,
    pub follow_ups: Vec<(String, String, String, bool)>,
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    t: Tr,
    ctx: Ctx,
    routine: Vec<(String, String, String)>,
    /// Name, sector, edit link.
    organisations: Vec<(String, String, String)>,
    groups: Vec<(String, String, String)>,
    /// Name, role, organisation, edit link.
    contacts: Vec<(String, String, String, String)>,
    meetings: Vec<MeetingView>,
    can_edit: bool,
    /// The next page of contacts, and the first (empty when there is none to go to).
    contacts_next_href: String,
    contacts_first_href: String,
}

/// Contacts shown per page of the register (a city's register may hold thousands).
const CONTACTS_PER_PAGE: i32 = 200;
/// Pages of organisations read to name every organisation a contact or meeting refers to.
const MAX_ORGANISATION_PAGES: usize = 50;

/// The register page's query: which page of contacts.
#[derive(serde::Deserialize, Default)]
pub(crate) struct RegisterQuery {
    #[serde(default)]
    contacts: String,
}

/// The edit link of a record (`organisations/abc` → `/register/organisations/abc/edit`).
fn edit_href(name: &str) -> String {
    format!("/register/{name}/edit")
}

const PAGE: pb::ListRequest = pb::ListRequest {
    page_size: 500,
    page_token: String::new(),
};

/// `GET /register`.
pub(crate) async fn page(
    Signed { t, mut session, .. }: Signed,
    axum::extract::Query(query): axum::extract::Query<RegisterQuery>,
) -> Response {
    if session.kind != NodeKind::City {
        return super::error_page_with(
            &t,
            Some(&session),
            StatusCode::NOT_FOUND,
            "error-not-found",
            String::new(),
        );
    }
    let c = &mut session.client;
    // Every organisation (contacts, groups and meetings name them), page by page.
    let mut orgs = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_ORGANISATION_PAGES {
        let request = pb::ListRequest {
            page_size: PAGE.page_size,
            page_token: token,
        };
        match c.register.list_organisations(request).await {
            Ok(list) => {
                let list = list.into_inner();
                orgs.extend(list.organisations);
                token = list.next_page_token;
            }
            Err(status) => return api_error(&t, &session, &status),
        }
        if token.is_empty() {
            break;
        }
    }
    let groups = c
        .register
        .list_groups(PAGE)
        .await
        .map(|r| r.into_inner().groups);
    let contacts = c
        .register
        .list_contacts(pb::ListRequest {
            page_size: CONTACTS_PER_PAGE,
            page_token: query.contacts.clone(),
        })
        .await
        .map(|r| r.into_inner());
    let meetings = c
        .register
        .list_meetings(PAGE)
        .await
        .map(|r| r.into_inner().meetings);
    let routine = c
        .register
        .get_routine(pb::GetRoutineRequest {})
        .await
        .map(|r| r.into_inner().steps);
    let (groups, contacts, mut meetings, routine) = match (groups, contacts, meetings, routine) {
        (Ok(g), Ok(c), Ok(m), Ok(r)) => (g, c, m, r),
        (Err(status), ..) | (_, Err(status), ..) | (_, _, Err(status), _) | (.., Err(status)) => {
            return api_error(&t, &session, &status)
        }
    };
    let contacts_next_href = if contacts.next_page_token.is_empty() {
        String::new()
    } else {
        let query = serde_urlencoded::to_string([("contacts", &contacts.next_page_token)])
            .unwrap_or_default();
        format!("/register?{query}#contacts")
    };
    let contacts_first_href = if query.contacts.is_empty() {
        String::new()
    } else {
        "/register#contacts".to_string()
    };
    let contacts = contacts.contacts;
    // Names, never ids: organisations and contacts by their resource names.
    let mut names: BTreeMap<String, String> = orgs
        .iter()
        .map(|o| (o.name.clone(), o.display_name.clone()))
        .collect();
    names.extend(
        contacts
            .iter()
            .map(|c| (c.name.clone(), c.full_name.clone())),
    );
    let name = |id: &str| {
        names
            .get(id)
            .cloned()
            .unwrap_or_else(|| t.get("unknown-organisation"))
    };
    meetings.sort_by(|a, b| b.date.cmp(&a.date));
    let can_edit = session.role >= crate::session::Role::Editor;
    let page = RegisterPage {
        t,
        can_edit,
        contacts_next_href,
        contacts_first_href,
        ctx: Ctx::new(&t, Some(&session), "/register"),
        routine: routine
            .into_iter()
            .map(|s| (s.description, name(&s.organisation), s.how_to_reach))
            .collect(),
        groups: groups
            .into_iter()
            .map(|g| {
                let members: Vec<String> = g.organisations.iter().map(|o| name(o)).collect();
                (g.display_name, g.description, members.join(", "))
            })
            .collect(),
        contacts: contacts
            .into_iter()
            .map(|c| {
                let href = edit_href(&c.name);
                (c.full_name, c.role, name(&c.organisation), href)
            })
            .collect(),
        meetings: meetings
            .into_iter()
            .map(|m| MeetingView {
                href: edit_href(&m.name),
                date: format::iso_date(&t, &m.date),
                agenda: m.agenda,
                participants: m
                    .organisations
                    .iter()
                    .map(|o| name(o))
                    .collect::<Vec<_>>()
                    .join(", "),
                decisions: m.decisions,
                follow_ups: m
                    .follow_ups
                    .into_iter()
                    .map(|f| {
                        (
                            f.action,
                            name(&f.owner),
                            format::iso_date(&t, &f.due_date),
                            f.done,
                        )
                    })
                    .collect(),
            })
            .collect(),
        organisations: orgs
            .into_iter()
            .map(|o| {
                let href = edit_href(&o.name);
                (o.display_name, t.get(&format!("sector-{}", o.sector)), href)
            })
            .collect(),
    };
    html(page.render())
}
