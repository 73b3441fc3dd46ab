//! The handbook: the chapters and steps of the release this city runs, the city's progress on
//! each step (set by a coordinator), the city's own note on each step (written by an editor,
//! kept in the city's local document through `Method.SetStepNote`: it never leaves the city),
//! and what changed since an earlier release. Printable with the notes (`static/print.css`).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::Query;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use sfs_client::v1 as pb;

use super::{api_error, field_error, Ctx, Editor, Signed};
use crate::i18n::Tr;
use crate::session::{NodeKind, Role};
use crate::{format, html};

/// One step as shown.
pub(crate) struct StepView {
    pub name: String,
    pub anchor: String,
    pub title: String,
    pub description: String,
    pub checklist: Vec<String>,
    pub state: String,
    pub state_code: String,
    pub date: String,
    /// The city's own note on the step (local).
    pub note: String,
}

/// One change since an earlier release.
pub(crate) struct ChangeView {
    pub kind: String,
    pub what: String,
    pub title: String,
}

#[derive(Template)]
#[template(path = "handbook.html")]
struct HandbookPage {
    t: Tr,
    ctx: Ctx,
    /// The release the node runs, as a sentence.
    release_text: String,
    /// A city's page shows its progress on each step; a hub has none.
    city: bool,
    release: String,
    verified: bool,
    /// The handbook was redacted at the hub; a signed release of the new generation is awaited.
    awaiting: bool,
    chapters: Vec<(String, String, Vec<StepView>)>,
    can_set: bool,
    can_note: bool,
    can_edit: bool,
    today: String,
    since: String,
    releases: Vec<String>,
    changes: Option<Vec<ChangeView>>,
    error: String,
}

#[derive(Deserialize, Default)]
pub(crate) struct HandbookQuery {
    #[serde(default)]
    since: String,
    #[serde(default)]
    error: String,
}

/// `GET /handbook`.
pub(crate) async fn page(
    Signed { t, mut session, .. }: Signed,
    Query(query): Query<HandbookQuery>,
) -> Response {
    let handbook = match session.client.handbook().await {
        Ok(handbook) => handbook,
        Err(sfs_client::ClientError::Status(status)) => return api_error(&t, &session, &status),
        Err(_) => {
            return super::error_page(
                &t,
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "error-unavailable",
            )
        }
    };
    let mut progress: BTreeMap<String, pb::StepProgress> = BTreeMap::new();
    let mut notes: BTreeMap<String, String> = BTreeMap::new();
    if session.kind == NodeKind::City {
        match session
            .client
            .method
            .list_step_notes(pb::ListStepNotesRequest {})
            .await
        {
            Ok(list) => {
                for note in list.into_inner().notes {
                    notes.insert(note.step, note.text);
                }
            }
            Err(status) => return api_error(&t, &session, &status),
        }
        if let Ok(list) = session
            .client
            .progress
            .list_progress(pb::ListProgressRequest {
                parent: format!("cities/{}", session.node_id),
            })
            .await
        {
            for p in list.into_inner().progress {
                progress.insert(p.step.clone(), p);
            }
        }
    }
    let mut releases = Vec::new();
    if let Ok(list) = session
        .client
        .method
        .list_releases(pb::ListRequest {
            page_size: 100,
            page_token: String::new(),
        })
        .await
    {
        releases = list
            .into_inner()
            .releases
            .into_iter()
            .map(|r| r.version_label)
            .collect();
    }
    let changes = if query.since.is_empty() {
        None
    } else {
        match session
            .client
            .handbook_changes_since_release(&query.since)
            .await
        {
            Ok(diff) => Some(
                diff.changes
                    .into_iter()
                    .map(|c| ChangeView {
                        kind: t.get(&format!("change-{}", c.kind)),
                        what: t.get(match c.resource.split('/').nth(1).unwrap_or("") {
                            "chapters" => "change-chapter",
                            "steps" => "change-step",
                            _ => "change-item",
                        }),
                        title: c.title,
                    })
                    .collect(),
            ),
            Err(sfs_client::ClientError::Status(status)) => {
                return api_error(&t, &session, &status)
            }
            Err(_) => None,
        }
    };
    let chapters = handbook
        .chapters
        .into_iter()
        .map(|chapter| {
            let steps = chapter
                .steps
                .into_iter()
                .map(|step| {
                    let p = progress.get(&step.name);
                    let state_code = p.map(|p| p.state.clone()).unwrap_or_default();
                    StepView {
                        anchor: step.name.replace('/', "-"),
                        state: t.get(&format!(
                            "progress-{}",
                            if state_code.is_empty() {
                                "not_started"
                            } else {
                                &state_code
                            }
                        )),
                        date: p.map(|p| format::iso_date(&t, &p.date)).unwrap_or_default(),
                        state_code,
                        note: notes.remove(&step.name).unwrap_or_default(),
                        name: step.name,
                        title: step.title,
                        description: step.description,
                        checklist: step.checklist.into_iter().map(|i| i.text).collect(),
                    }
                })
                .collect();
            (chapter.title, chapter.introduction, steps)
        })
        .collect();
    let release_text = t.arg(
        match session.kind {
            NodeKind::City => "handbook-release",
            NodeKind::County => "handbook-release-county",
            NodeKind::Hub => "handbook-release-node",
        },
        "release",
        &handbook.current_release,
    );
    let page = HandbookPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/handbook"),
        release_text,
        city: session.kind == NodeKind::City,
        release: handbook.current_release,
        verified: handbook.verified,
        awaiting: handbook.awaiting_release,
        chapters,
        can_set: session.kind == NodeKind::City && session.role >= Role::Coordinator,
        can_note: session.kind == NodeKind::City && session.role >= Role::Editor,
        can_edit: session.kind == NodeKind::Hub && session.role >= Role::Coordinator,
        today: format::today(),
        since: query.since,
        releases,
        changes,
        error: if query.error.is_empty() {
            String::new()
        } else {
            t.get("error-invalid")
        },
    };
    html(page.render())
}

#[derive(Deserialize, Default)]
pub(crate) struct ProgressForm {
    #[serde(default)]
    step: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    date: String,
}

/// `POST /handbook/progress`: the city's state on a step, and since when.
pub(crate) async fn set_progress(
    Signed { t, mut session, .. }: Signed,
    Form(form): Form<ProgressForm>,
) -> Response {
    let anchor = form.step.replace('/', "-");
    let result = session
        .client
        .progress
        .set_step_progress(pb::SetStepProgressRequest {
            progress: Some(pb::StepProgress {
                step: form.step,
                state: form.state,
                date: form.date,
                ..Default::default()
            }),
        })
        .await;
    match result {
        Ok(_) => Redirect::to(&format!("/handbook#{anchor}")).into_response(),
        Err(status) if field_error(&t, &status).is_some() => {
            Redirect::to(&format!("/handbook?error=1#{anchor}")).into_response()
        }
        Err(status) => api_error(&t, &session, &status),
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct NoteForm {
    #[serde(default)]
    step: String,
    #[serde(default)]
    text: String,
}

/// `POST /handbook/notes`: the city's own note on a step (empty text removes it).
pub(crate) async fn set_note(
    Signed { t, mut session, .. }: Signed<Editor>,
    Form(form): Form<NoteForm>,
) -> Response {
    let anchor = form.step.replace('/', "-");
    let result = session
        .client
        .method
        .set_step_note(pb::SetStepNoteRequest {
            note: Some(pb::StepNote {
                step: form.step,
                // Browsers send line breaks as CR LF; keep what the person sees.
                text: form.text.replace("\r\n", "\n"),
                ..Default::default()
            }),
        })
        .await;
    match result {
        Ok(_) => Redirect::to(&format!("/handbook#{anchor}")).into_response(),
        Err(status) if field_error(&t, &status).is_some() => {
            Redirect::to(&format!("/handbook?error=1#{anchor}")).into_response()
        }
        Err(status) => api_error(&t, &session, &status),
    }
}
