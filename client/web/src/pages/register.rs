//! The network register (local to the city): the referral routine as steps with names, the
//! member organisations, groups, contacts and meetings with their follow-ups.

use std::collections::BTreeMap;

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;
use sfs_client::v1 as pb;

use super::{api_error, Ctx, Signed};
use crate::i18n::Tr;
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
pub(crate) async fn page(Signed { t, mut session, .. }: Signed) -> Response {
    if session.hub {
        return super::error_page_with(
            &t,
            Some(&session),
            StatusCode::NOT_FOUND,
            "error-not-found",
            String::new(),
        );
    }
    let c = &mut session.client;
    let orgs = match c.register.list_organisations(PAGE).await {
        Ok(list) => list.into_inner().organisations,
        Err(status) => return api_error(&t, &session, &status),
    };
    let groups = c
        .register
        .list_groups(PAGE)
        .await
        .map(|r| r.into_inner().groups);
    let contacts = c
        .register
        .list_contacts(PAGE)
        .await
        .map(|r| r.into_inner().contacts);
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
