//! Editing the network register (editors and up, on a city node): organisations, contacts, and
//! meetings with their decisions and follow-ups. Plain forms through the register API; a field
//! the API refuses is shown again with the refusal next to it, in the person's language.

use askama::Template;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use sfs_client::v1 as pb;

use super::{api_error, field_error, Ctx, Editor, Signed};
use crate::html;
use crate::i18n::Tr;
use crate::session::Session;

/// Organisation sectors, as the API knows them.
const SECTORS: &[&str] = &[
    "municipality",
    "police",
    "region",
    "county_board",
    "civil_society",
    "business",
    "other",
];

/// Follow-up rows a meeting form offers beyond the existing ones.
const NEW_FOLLOW_UPS: usize = 2;

const PAGE: pb::ListRequest = pb::ListRequest {
    page_size: 500,
    page_token: String::new(),
};

/// How a field is entered.
pub(crate) enum Input {
    Text,
    Date,
    Email,
    Tel,
    Area,
    /// Options: value, label.
    Select(Vec<(String, String)>),
    /// Options: value, label, checked.
    Checks(Vec<(String, String, bool)>),
}

/// One field of a form.
pub(crate) struct FieldView {
    pub name: &'static str,
    pub label: String,
    pub help: String,
    pub input: Input,
    pub value: String,
    pub error: String,
}

impl FieldView {
    fn new(t: &Tr, name: &'static str, label: &str, input: Input, value: String) -> FieldView {
        FieldView {
            name,
            label: t.get(label),
            help: String::new(),
            input,
            value,
            error: String::new(),
        }
    }

    /// The `type` of an `<input>`.
    pub fn input_type(&self) -> &'static str {
        match self.input {
            Input::Date => "date",
            Input::Email => "email",
            Input::Tel => "tel",
            _ => "text",
        }
    }

    fn help(mut self, text: String) -> FieldView {
        self.help = text;
        self
    }
}

/// One follow-up row of the meeting form.
pub(crate) struct FollowUpRow {
    pub index: usize,
    pub action: String,
    pub owner: String,
    pub due_date: String,
    pub done: bool,
}

#[derive(Template)]
#[template(path = "register_form.html")]
struct FormPage {
    t: Tr,
    ctx: Ctx,
    heading: String,
    action: String,
    fields: Vec<FieldView>,
    /// Meetings only.
    follow_ups: Vec<FollowUpRow>,
    owners: Vec<(String, String)>,
    follow_up_error: String,
    other_error: String,
}

impl FormPage {
    /// Puts an API refusal next to its field (`organisation.display_name` or `display_name`),
    /// or above the form when it names no field of it.
    fn place_error(&mut self, field: &str, text: String) {
        let field = field.rsplit_once('.').map_or(field, |(head, tail)| {
            if head == "follow_ups" || head.ends_with(".follow_ups") {
                "follow_ups"
            } else {
                tail
            }
        });
        if field == "follow_ups" {
            self.follow_up_error = text;
        } else if let Some(f) = self.fields.iter_mut().find(|f| f.name == field) {
            f.error = text;
        } else {
            self.other_error = text;
        }
    }
}

fn page(
    t: Tr,
    session: &Session,
    heading: &str,
    action: String,
    fields: Vec<FieldView>,
) -> FormPage {
    FormPage {
        t,
        ctx: Ctx::new(&t, Some(session), "/register"),
        heading: t.get(heading),
        action,
        fields,
        follow_ups: Vec::new(),
        owners: Vec::new(),
        follow_up_error: String::new(),
        other_error: String::new(),
    }
}

/// Renders a form page; with an error, as 422 with the error at its field.
fn show(mut form: FormPage, error: Option<(String, String)>) -> Response {
    let status = super::form_status(error.is_some());
    if let Some((field, text)) = error {
        form.place_error(&field, text);
    }
    (status, html(form.render())).into_response()
}

/// The answer to a failed create or update: the form again with the error at its field, or
/// the error page.
fn refused(t: &Tr, session: &Session, form: FormPage, status: tonic::Status) -> Response {
    match field_error(t, &status) {
        Some(error) => show(form, Some(error)),
        None => api_error(t, session, &status),
    }
}

/// The values of a posted form (repeated names kept, as check boxes send them).
type Pairs = Vec<(String, String)>;

fn one(pairs: &Pairs, name: &str) -> String {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

fn all(pairs: &Pairs, name: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

/// A path segment as a record id: refuses anything but the characters ids are made of.
fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// Organisations.

fn organisation_fields(t: &Tr, org: &pb::Organisation) -> Vec<FieldView> {
    vec![
        FieldView::new(
            t,
            "display_name",
            "register-name",
            Input::Text,
            org.display_name.clone(),
        ),
        FieldView::new(
            t,
            "sector",
            "register-sector",
            Input::Select(
                SECTORS
                    .iter()
                    .map(|s| (s.to_string(), t.get(&format!("sector-{s}"))))
                    .collect(),
            ),
            org.sector.clone(),
        ),
    ]
}

fn organisation_from(pairs: &Pairs) -> pb::Organisation {
    pb::Organisation {
        display_name: one(pairs, "display_name"),
        sector: one(pairs, "sector"),
        ..Default::default()
    }
}

/// `GET /register/organisations/new`.
pub(crate) async fn new_organisation(Signed { t, session, .. }: Signed<Editor>) -> Response {
    let org = pb::Organisation {
        sector: "municipality".into(),
        ..Default::default()
    };
    let fields = organisation_fields(&t, &org);
    let form = page(
        t,
        &session,
        "register-new-organisation",
        "/register/organisations".into(),
        fields,
    );
    show(form, None)
}

/// `POST /register/organisations`.
pub(crate) async fn create_organisation(
    Signed { t, mut session, .. }: Signed<Editor>,
    Form(pairs): Form<Pairs>,
) -> Response {
    let org = organisation_from(&pairs);
    let request = pb::CreateOrganisationRequest {
        organisation: Some(org.clone()),
    };
    match session.client.register.create_organisation(request).await {
        Ok(_) => Redirect::to("/register#organisations").into_response(),
        Err(status) => {
            let fields = organisation_fields(&t, &org);
            let form = page(
                t,
                &session,
                "register-new-organisation",
                "/register/organisations".into(),
                fields,
            );
            refused(&t, &session, form, status)
        }
    }
}

/// `GET /register/organisations/{id}/edit`.
pub(crate) async fn edit_organisation(
    Signed { t, mut session, .. }: Signed<Editor>,
    Path(id): Path<String>,
) -> Response {
    if !id_ok(&id) {
        return super::error_page(&t, StatusCode::NOT_FOUND, "error-not-found");
    }
    let org = match session
        .client
        .register
        .get_organisation(pb::GetRequest {
            name: format!("organisations/{id}"),
        })
        .await
    {
        Ok(org) => org.into_inner(),
        Err(status) => return api_error(&t, &session, &status),
    };
    let fields = organisation_fields(&t, &org);
    let form = page(
        t,
        &session,
        "register-edit-organisation",
        format!("/register/organisations/{id}"),
        fields,
    );
    show(form, None)
}

/// `POST /register/organisations/{id}`.
pub(crate) async fn update_organisation(
    Signed { t, mut session, .. }: Signed<Editor>,
    Path(id): Path<String>,
    Form(pairs): Form<Pairs>,
) -> Response {
    if !id_ok(&id) {
        return super::error_page(&t, StatusCode::NOT_FOUND, "error-not-found");
    }
    let mut org = organisation_from(&pairs);
    org.name = format!("organisations/{id}");
    let request = pb::UpdateOrganisationRequest {
        organisation: Some(org.clone()),
        update_mask: vec!["display_name".into(), "sector".into()],
    };
    match session.client.register.update_organisation(request).await {
        Ok(_) => Redirect::to("/register#organisations").into_response(),
        Err(status) => {
            let fields = organisation_fields(&t, &org);
            let form = page(
                t,
                &session,
                "register-edit-organisation",
                format!("/register/organisations/{id}"),
                fields,
            );
            refused(&t, &session, form, status)
        }
    }
}

// Contacts.

/// Organisations by name, as options.
async fn organisation_options(
    session: &mut Session,
) -> Result<Vec<(String, String)>, tonic::Status> {
    let orgs = session
        .client
        .register
        .list_organisations(PAGE)
        .await?
        .into_inner()
        .organisations;
    let mut options: Vec<(String, String)> =
        orgs.into_iter().map(|o| (o.name, o.display_name)).collect();
    options.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(options)
}

fn contact_fields(
    t: &Tr,
    contact: &pb::Contact,
    organisations: Vec<(String, String)>,
) -> Vec<FieldView> {
    vec![
        FieldView::new(
            t,
            "full_name",
            "register-full-name",
            Input::Text,
            contact.full_name.clone(),
        ),
        FieldView::new(
            t,
            "role",
            "register-role",
            Input::Text,
            contact.role.clone(),
        ),
        FieldView::new(
            t,
            "organisation",
            "register-organisation",
            Input::Select(organisations),
            contact.organisation.clone(),
        ),
        FieldView::new(
            t,
            "phone",
            "register-phone",
            Input::Tel,
            contact.phone.clone(),
        ),
        FieldView::new(
            t,
            "email",
            "register-email",
            Input::Email,
            contact.email.clone(),
        ),
    ]
}

fn contact_from(pairs: &Pairs) -> pb::Contact {
    pb::Contact {
        full_name: one(pairs, "full_name"),
        role: one(pairs, "role"),
        organisation: one(pairs, "organisation"),
        phone: one(pairs, "phone"),
        email: one(pairs, "email"),
        ..Default::default()
    }
}

/// `GET /register/contacts/new`.
pub(crate) async fn new_contact(Signed { t, mut session, .. }: Signed<Editor>) -> Response {
    let organisations = match organisation_options(&mut session).await {
        Ok(options) => options,
        Err(status) => return api_error(&t, &session, &status),
    };
    let fields = contact_fields(&t, &pb::Contact::default(), organisations);
    let form = page(
        t,
        &session,
        "register-new-contact",
        "/register/contacts".into(),
        fields,
    );
    show(form, None)
}

/// `POST /register/contacts`.
pub(crate) async fn create_contact(
    Signed { t, mut session, .. }: Signed<Editor>,
    Form(pairs): Form<Pairs>,
) -> Response {
    let contact = contact_from(&pairs);
    let request = pb::CreateContactRequest {
        contact: Some(contact.clone()),
    };
    match session.client.register.create_contact(request).await {
        Ok(_) => Redirect::to("/register#contacts").into_response(),
        Err(status) => {
            let organisations = organisation_options(&mut session).await.unwrap_or_default();
            let fields = contact_fields(&t, &contact, organisations);
            let form = page(
                t,
                &session,
                "register-new-contact",
                "/register/contacts".into(),
                fields,
            );
            refused(&t, &session, form, status)
        }
    }
}

/// `GET /register/contacts/{id}/edit`.
pub(crate) async fn edit_contact(
    Signed { t, mut session, .. }: Signed<Editor>,
    Path(id): Path<String>,
) -> Response {
    if !id_ok(&id) {
        return super::error_page(&t, StatusCode::NOT_FOUND, "error-not-found");
    }
    let contact = match session
        .client
        .register
        .get_contact(pb::GetRequest {
            name: format!("contacts/{id}"),
        })
        .await
    {
        Ok(contact) => contact.into_inner(),
        Err(status) => return api_error(&t, &session, &status),
    };
    let organisations = match organisation_options(&mut session).await {
        Ok(options) => options,
        Err(status) => return api_error(&t, &session, &status),
    };
    let fields = contact_fields(&t, &contact, organisations);
    let form = page(
        t,
        &session,
        "register-edit-contact",
        format!("/register/contacts/{id}"),
        fields,
    );
    show(form, None)
}

/// `POST /register/contacts/{id}`.
pub(crate) async fn update_contact(
    Signed { t, mut session, .. }: Signed<Editor>,
    Path(id): Path<String>,
    Form(pairs): Form<Pairs>,
) -> Response {
    if !id_ok(&id) {
        return super::error_page(&t, StatusCode::NOT_FOUND, "error-not-found");
    }
    let mut contact = contact_from(&pairs);
    contact.name = format!("contacts/{id}");
    let request = pb::UpdateContactRequest {
        contact: Some(contact.clone()),
        update_mask: ["full_name", "role", "organisation", "phone", "email"]
            .map(String::from)
            .to_vec(),
    };
    match session.client.register.update_contact(request).await {
        Ok(_) => Redirect::to("/register#contacts").into_response(),
        Err(status) => {
            let organisations = organisation_options(&mut session).await.unwrap_or_default();
            let fields = contact_fields(&t, &contact, organisations);
            let form = page(
                t,
                &session,
                "register-edit-contact",
                format!("/register/contacts/{id}"),
                fields,
            );
            refused(&t, &session, form, status)
        }
    }
}

// Meetings.

/// Owners of follow-ups: organisations and contacts, by name.
async fn owner_options(session: &mut Session) -> Result<Vec<(String, String)>, tonic::Status> {
    let mut options = organisation_options(session).await?;
    let contacts = session
        .client
        .register
        .list_contacts(PAGE)
        .await?
        .into_inner()
        .contacts;
    let mut people: Vec<(String, String)> = contacts
        .into_iter()
        .map(|c| (c.name, c.full_name))
        .collect();
    people.sort_by(|a, b| a.1.cmp(&b.1));
    options.extend(people);
    Ok(options)
}

fn meeting_page(
    t: Tr,
    session: &Session,
    heading: &str,
    action: String,
    meeting: &pb::Meeting,
    organisations: Vec<(String, String)>,
    owners: Vec<(String, String)>,
) -> FormPage {
    let fields = vec![
        FieldView::new(
            &t,
            "date",
            "register-date",
            Input::Date,
            meeting.date.clone(),
        ),
        FieldView::new(
            &t,
            "organisations",
            "register-participants",
            Input::Checks(
                organisations
                    .into_iter()
                    .map(|(name, label)| {
                        let checked = meeting.organisations.contains(&name);
                        (name, label, checked)
                    })
                    .collect(),
            ),
            String::new(),
        ),
        FieldView::new(
            &t,
            "agenda",
            "register-agenda",
            Input::Area,
            meeting.agenda.clone(),
        ),
        FieldView::new(
            &t,
            "notes",
            "register-notes",
            Input::Area,
            meeting.notes.clone(),
        ),
        FieldView::new(
            &t,
            "decisions",
            "register-decisions",
            Input::Area,
            meeting.decisions.join("\n"),
        )
        .help(t.get("register-decisions-help")),
    ];
    let mut form = page(t, session, heading, action, fields);
    let existing = meeting.follow_ups.len();
    form.follow_ups = meeting
        .follow_ups
        .iter()
        .enumerate()
        .map(|(index, f)| FollowUpRow {
            index,
            action: f.action.clone(),
            owner: f.owner.clone(),
            due_date: f.due_date.clone(),
            done: f.done,
        })
        .chain(
            (existing..existing + NEW_FOLLOW_UPS).map(|index| FollowUpRow {
                index,
                action: String::new(),
                owner: String::new(),
                due_date: String::new(),
                done: false,
            }),
        )
        .collect();
    form.owners = owners;
    form
}

fn meeting_from(pairs: &Pairs) -> pb::Meeting {
    let mut follow_ups = Vec::new();
    for index in 0..100 + NEW_FOLLOW_UPS {
        let action = one(pairs, &format!("fu_action_{index}"));
        let owner = one(pairs, &format!("fu_owner_{index}"));
        let due_date = one(pairs, &format!("fu_due_{index}"));
        let present = pairs
            .iter()
            .any(|(k, _)| k == &format!("fu_action_{index}"));
        if !present {
            break;
        }
        // A row without an action is no follow-up (an emptied row removes one).
        if action.is_empty() {
            continue;
        }
        follow_ups.push(pb::FollowUp {
            action,
            owner,
            due_date,
            done: !one(pairs, &format!("fu_done_{index}")).is_empty(),
        });
    }
    pb::Meeting {
        date: one(pairs, "date"),
        organisations: all(pairs, "organisations"),
        agenda: one(pairs, "agenda"),
        notes: one(pairs, "notes"),
        decisions: one(pairs, "decisions")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        follow_ups,
        ..Default::default()
    }
}

async fn meeting_options(
    session: &mut Session,
) -> Result<(Vec<(String, String)>, Vec<(String, String)>), tonic::Status> {
    let organisations = organisation_options(session).await?;
    let owners = owner_options(session).await?;
    Ok((organisations, owners))
}

/// `GET /register/meetings/new`.
pub(crate) async fn new_meeting(Signed { t, mut session, .. }: Signed<Editor>) -> Response {
    let (organisations, owners) = match meeting_options(&mut session).await {
        Ok(options) => options,
        Err(status) => return api_error(&t, &session, &status),
    };
    let meeting = pb::Meeting {
        date: crate::format::today(),
        ..Default::default()
    };
    let form = meeting_page(
        t,
        &session,
        "register-new-meeting",
        "/register/meetings".into(),
        &meeting,
        organisations,
        owners,
    );
    show(form, None)
}

/// `POST /register/meetings`.
pub(crate) async fn create_meeting(
    Signed { t, mut session, .. }: Signed<Editor>,
    Form(pairs): Form<Pairs>,
) -> Response {
    let meeting = meeting_from(&pairs);
    let request = pb::CreateMeetingRequest {
        meeting: Some(meeting.clone()),
    };
    match session.client.register.create_meeting(request).await {
        Ok(_) => Redirect::to("/register#meetings").into_response(),
        Err(status) => {
            let (organisations, owners) = meeting_options(&mut session).await.unwrap_or_default();
            let form = meeting_page(
                t,
                &session,
                "register-new-meeting",
                "/register/meetings".into(),
                &meeting,
                organisations,
                owners,
            );
            refused(&t, &session, form, status)
        }
    }
}

/// `GET /register/meetings/{id}/edit`.
pub(crate) async fn edit_meeting(
    Signed { t, mut session, .. }: Signed<Editor>,
    Path(id): Path<String>,
) -> Response {
    if !id_ok(&id) {
        return super::error_page(&t, StatusCode::NOT_FOUND, "error-not-found");
    }
    let meeting = match session
        .client
        .register
        .get_meeting(pb::GetRequest {
            name: format!("meetings/{id}"),
        })
        .await
    {
        Ok(meeting) => meeting.into_inner(),
        Err(status) => return api_error(&t, &session, &status),
    };
    let (organisations, owners) = match meeting_options(&mut session).await {
        Ok(options) => options,
        Err(status) => return api_error(&t, &session, &status),
    };
    let form = meeting_page(
        t,
        &session,
        "register-edit-meeting",
        format!("/register/meetings/{id}"),
        &meeting,
        organisations,
        owners,
    );
    show(form, None)
}

/// `POST /register/meetings/{id}`.
pub(crate) async fn update_meeting(
    Signed { t, mut session, .. }: Signed<Editor>,
    Path(id): Path<String>,
    Form(pairs): Form<Pairs>,
) -> Response {
    if !id_ok(&id) {
        return super::error_page(&t, StatusCode::NOT_FOUND, "error-not-found");
    }
    let mut meeting = meeting_from(&pairs);
    meeting.name = format!("meetings/{id}");
    let request = pb::UpdateMeetingRequest {
        meeting: Some(meeting.clone()),
        update_mask: Vec::new(),
    };
    match session.client.register.update_meeting(request).await {
        Ok(_) => Redirect::to("/register#meetings").into_response(),
        Err(status) => {
            let (organisations, owners) = meeting_options(&mut session).await.unwrap_or_default();
            let form = meeting_page(
                t,
                &session,
                "register-edit-meeting",
                format!("/register/meetings/{id}"),
                &meeting,
                organisations,
                owners,
            );
            refused(&t, &session, form, status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_meeting_form_reads_participants_decisions_and_follow_ups() {
        let meeting = meeting_from(&pairs(&[
            ("date", "2026-11-02"),
            ("organisations", "organisations/a"),
            ("organisations", "organisations/b"),
            ("decisions", "Bjud in polisen\n\n  Ses i mars \n"),
            ("fu_action_0", "Skicka inbjudan"),
            ("fu_owner_0", "contacts/c"),
            ("fu_due_0", "2026-12-01"),
            ("fu_done_0", "on"),
            ("fu_action_1", ""),
            ("fu_owner_1", "organisations/a"),
            ("fu_due_1", ""),
            ("fu_action_2", "Boka lokal"),
            ("fu_owner_2", ""),
            ("fu_due_2", ""),
        ]));
        assert_eq!(
            meeting.organisations,
            ["organisations/a", "organisations/b"]
        );
        assert_eq!(meeting.decisions, ["Bjud in polisen", "Ses i mars"]);
        assert_eq!(meeting.follow_ups.len(), 2, "the empty row is no follow-up");
        assert!(meeting.follow_ups[0].done && !meeting.follow_ups[1].done);
        assert_eq!(meeting.follow_ups[0].owner, "contacts/c");
        assert_eq!(meeting.follow_ups[1].action, "Boka lokal");
    }

    #[test]
    fn refusals_land_at_their_field() {
        let t = Tr::new(crate::i18n::Lang::Sv);
        let fields = organisation_fields(&t, &pb::Organisation::default());
        let mut form = FormPage {
            t,
            ctx: Ctx::new(&t, None, "/register"),
            heading: String::new(),
            action: String::new(),
            fields,
            follow_ups: Vec::new(),
            owners: Vec::new(),
            follow_up_error: String::new(),
            other_error: String::new(),
        };
        form.place_error("organisation.display_name", "tom".into());
        form.place_error("follow_ups.due_date", "datum".into());
        form.place_error("something_else", "annat".into());
        assert_eq!(form.fields[0].error, "tom");
        assert_eq!(form.follow_up_error, "datum");
        assert_eq!(form.other_error, "annat");
        assert!(!id_ok("../x") && !id_ok("") && id_ok("a1-b_2"));
    }
}
