//! The hub's handbook authoring page, for the national coordinator: the draft (the newest
//! state of `national/method`) with forms to add, change and delete chapters, steps and
//! checklist items through the `Method` API, and the preparation of a release. A release is
//! signed on the coordinator's own machine: the page shows the exact `sfs handbook release`
//! command with the draft's version and the next release number; the release key never
//! reaches the hub.

use askama::Template;
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use sfs_client::v1 as pb;
use tonic::Code;

use super::{api_error, Ctx, HubCoordinator, Signed};
use crate::html;
use crate::i18n::Tr;

#[derive(Template)]
#[template(path = "handbook_edit.html")]
struct EditPage {
    t: Tr,
    ctx: Ctx,
    version: String,
    chapters: Vec<ChapterView>,
    error: String,
    release: Option<ReleaseCommand>,
    label: String,
    notes: String,
    valid_days: String,
}

/// A chapter of the draft, with what its forms need.
struct ChapterView {
    anchor: String,
    id: String,
    name: String,
    title: String,
    introduction: String,
    position: i32,
    steps: Vec<StepView>,
}

/// A step of the draft.
struct StepView {
    anchor: String,
    id: String,
    name: String,
    title: String,
    description: String,
    position: i32,
    items: Vec<ItemView>,
}

/// A checklist item of the draft.
struct ItemView {
    anchor: String,
    id: String,
    text: String,
    position: i32,
}

fn chapter_view(chapter: pb::Chapter) -> ChapterView {
    ChapterView {
        anchor: anchor(&chapter.name),
        id: id_of(&chapter.name).to_string(),
        steps: chapter
            .steps
            .into_iter()
            .map(|step| StepView {
                anchor: anchor(&step.name),
                id: id_of(&step.name).to_string(),
                items: step
                    .checklist
                    .into_iter()
                    .map(|item| ItemView {
                        anchor: anchor(&item.name),
                        id: id_of(&item.name).to_string(),
                        text: item.text,
                        position: item.position,
                    })
                    .collect(),
                name: step.name,
                title: step.title,
                description: step.description,
                position: step.position,
            })
            .collect(),
        name: chapter.name,
        title: chapter.title,
        introduction: chapter.introduction,
        position: chapter.position,
    }
}

/// The release the coordinator prepared, as the command that signs it.
struct ReleaseCommand {
    command: String,
}

#[derive(Deserialize, Default)]
pub(crate) struct EditQuery {
    #[serde(default)]
    error: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    notes: String,
    #[serde(default)]
    valid_days: String,
}

/// The id in a resource name `method/{collection}/{id}`, for form actions.
fn id_of(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or_default()
}

/// The page's anchor of a chapter, step or item: `c-`, `s-` or `i-` and its id.
pub(crate) fn anchor(name: &str) -> String {
    let mut parts = name.rsplit('/');
    let id = parts.next().unwrap_or_default();
    let kind = parts.next().and_then(|k| k.chars().next()).unwrap_or('x');
    format!("{kind}-{id}")
}

/// Quotes a value for a POSIX shell when it needs it.
pub(crate) fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:=+,@".contains(c));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// The command that signs and uploads a release of exactly `version` as number `number`.
pub(crate) fn release_command(
    label: &str,
    notes: &str,
    number: i64,
    version: &str,
    valid_days: i64,
) -> String {
    let mut command = format!("sfs handbook release --label {}", shell_quote(label.trim()));
    if !notes.trim().is_empty() {
        command.push_str(&format!(" --notes {}", shell_quote(notes.trim())));
    }
    command.push_str(&format!(
        " --number {number} --version {} --valid-days {valid_days} --key release.key",
        shell_quote(version)
    ));
    command
}

/// `GET /handbook/edit`: the draft with its forms; with `label`, the release command too.
pub(crate) async fn page(
    Signed { t, mut session, .. }: Signed<HubCoordinator>,
    Query(query): Query<EditQuery>,
) -> Response {
    let draft = match session.client.handbook_latest().await {
        Ok(draft) => draft,
        Err(sfs_client::ClientError::Status(status)) => return api_error(&t, &session, &status),
        Err(_) => {
            return super::error_page(
                &t,
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "error-unavailable",
            )
        }
    };
    let mut error = match query.error.as_str() {
        "" => String::new(),
        "in-use" => t.get("handbook-edit-in-use"),
        _ => t.get("error-invalid"),
    };
    let valid_days = if query.valid_days.is_empty() {
        "365".to_string()
    } else {
        query.valid_days.clone()
    };
    let mut release = None;
    if !query.label.trim().is_empty() {
        let releases = session
            .client
            .method
            .list_releases(pb::ListRequest {
                page_size: 1000,
                page_token: String::new(),
            })
            .await;
        match (releases, valid_days.trim().parse::<i64>()) {
            (Ok(list), Ok(days)) if (1..=3650).contains(&days) => {
                let list = list.into_inner().releases;
                if list.iter().any(|r| r.version_label == query.label.trim()) {
                    error = t.get("handbook-edit-label-taken");
                } else {
                    let number = list.iter().map(|r| r.number).max().unwrap_or(0) + 1;
                    release = Some(ReleaseCommand {
                        command: release_command(
                            &query.label,
                            &query.notes,
                            number,
                            &draft.version,
                            days,
                        ),
                    });
                }
            }
            (Err(status), _) => return api_error(&t, &session, &status),
            _ => error = t.get("handbook-edit-bad-days"),
        }
    }
    let page = EditPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/handbook/edit"),
        version: draft.version,
        chapters: draft.chapters.into_iter().map(chapter_view).collect(),
        error,
        release,
        label: query.label,
        notes: query.notes,
        valid_days,
    };
    html(page.render())
}

/// What the forms of the page send (each form only some of it).
#[derive(Deserialize, Default)]
pub(crate) struct EditForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    introduction: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    position: String,
    #[serde(default)]
    chapter: String,
    #[serde(default)]
    step: String,
}

impl EditForm {
    fn position(&self) -> Option<i32> {
        match self.position.trim() {
            "" => Some(0),
            p => p.parse().ok(),
        }
    }
}

/// Back to the page at `anchor`, or with the error the API's refusal calls for.
fn answer<T>(
    t: &Tr,
    session: &crate::session::Session,
    result: Result<T, tonic::Status>,
    anchor: &str,
) -> Response {
    match result {
        Ok(_) => Redirect::to(&format!("/handbook/edit#{anchor}")).into_response(),
        Err(status) if status.code() == Code::InvalidArgument => {
            Redirect::to(&format!("/handbook/edit?error=invalid#{anchor}")).into_response()
        }
        Err(status)
            if status.code() == Code::FailedPrecondition
                && status.message().contains("delete them first") =>
        {
            Redirect::to(&format!("/handbook/edit?error=in-use#{anchor}")).into_response()
        }
        Err(status) => api_error(t, session, &status),
    }
}

fn invalid() -> Response {
    Redirect::to("/handbook/edit?error=invalid").into_response()
}

/// `POST /handbook/edit/{chapters|steps|items}`: adds a chapter, a step or a checklist item.
pub(crate) async fn create(
    Signed { t, mut session, .. }: Signed<HubCoordinator>,
    Path(kind): Path<String>,
    Form(form): Form<EditForm>,
) -> Response {
    let Some(position) = form.position() else {
        return invalid();
    };
    let method = &mut session.client.method;
    match kind.as_str() {
        "chapters" => {
            let result = method
                .create_chapter(pb::CreateChapterRequest {
                    chapter: Some(pb::Chapter {
                        title: form.title,
                        introduction: form.introduction.replace("\r\n", "\n"),
                        position,
                        ..Default::default()
                    }),
                })
                .await
                .map(|c| c.into_inner().name);
            let anchor = result.as_deref().map(anchor).unwrap_or_default();
            answer(&t, &session, result, &anchor)
        }
        "steps" => {
            let anchor = anchor(&form.chapter);
            let result = method
                .create_step(pb::CreateStepRequest {
                    step: Some(pb::Step {
                        chapter: form.chapter,
                        title: form.title,
                        description: form.description.replace("\r\n", "\n"),
                        position,
                        ..Default::default()
                    }),
                })
                .await;
            answer(&t, &session, result, &anchor)
        }
        "items" => {
            let anchor = anchor(&form.step);
            let result = method
                .create_checklist_item(pb::CreateChecklistItemRequest {
                    item: Some(pb::ChecklistItem {
                        step: form.step,
                        text: form.text,
                        position,
                        ..Default::default()
                    }),
                })
                .await;
            answer(&t, &session, result, &anchor)
        }
        _ => super::error_page(&t, axum::http::StatusCode::NOT_FOUND, "error-not-found"),
    }
}

/// `POST /handbook/edit/{chapters|steps|items}/{id}`: changes one.
pub(crate) async fn update(
    Signed { t, mut session, .. }: Signed<HubCoordinator>,
    Path((kind, id)): Path<(String, String)>,
    Form(form): Form<EditForm>,
) -> Response {
    let Some(position) = form.position() else {
        return invalid();
    };
    let name = format!("method/{kind}/{id}");
    let method = &mut session.client.method;
    let result = match kind.as_str() {
        "chapters" => method
            .update_chapter(pb::UpdateChapterRequest {
                chapter: Some(pb::Chapter {
                    name,
                    title: form.title,
                    introduction: form.introduction.replace("\r\n", "\n"),
                    position,
                    ..Default::default()
                }),
                update_mask: Vec::new(),
            })
            .await
            .map(|_| ()),
        "steps" => method
            .update_step(pb::UpdateStepRequest {
                step: Some(pb::Step {
                    name,
                    title: form.title,
                    description: form.description.replace("\r\n", "\n"),
                    position,
                    ..Default::default()
                }),
                update_mask: Vec::new(),
            })
            .await
            .map(|_| ()),
        "items" => method
            .update_checklist_item(pb::UpdateChecklistItemRequest {
                item: Some(pb::ChecklistItem {
                    name,
                    text: form.text,
                    position,
                    ..Default::default()
                }),
                update_mask: Vec::new(),
            })
            .await
            .map(|_| ()),
        _ => return super::error_page(&t, axum::http::StatusCode::NOT_FOUND, "error-not-found"),
    };
    answer(
        &t,
        &session,
        result,
        &anchor(&format!("method/{kind}/{id}")),
    )
}

/// `POST /handbook/edit/{chapters|steps|items}/{id}/delete`: deletes one (the API refuses a
/// chapter with steps and a step with checklist items).
pub(crate) async fn delete(
    Signed { t, mut session, .. }: Signed<HubCoordinator>,
    Path((kind, id)): Path<(String, String)>,
) -> Response {
    let request = pb::DeleteRequest {
        name: format!("method/{kind}/{id}"),
    };
    let method = &mut session.client.method;
    let result = match kind.as_str() {
        "chapters" => method.delete_chapter(request).await,
        "steps" => method.delete_step(request).await,
        "items" => method.delete_checklist_item(request).await,
        _ => return super::error_page(&t, axum::http::StatusCode::NOT_FOUND, "error-not-found"),
    };
    answer(&t, &session, result, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_command_names_exactly_the_draft_and_quotes_for_the_shell() {
        assert_eq!(shell_quote("2026.2"), "2026.2");
        assert_eq!(shell_quote("it's new"), r"'it'\''s new'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf ~)"), "'$(rm -rf ~)'");
        let command = release_command(" 2026.2 ", "Nya steg; fler exempel", 3, "ab12.cd34", 365);
        assert_eq!(
            command,
            "sfs handbook release --label 2026.2 --notes 'Nya steg; fler exempel' \
             --number 3 --version ab12.cd34 --valid-days 365 --key release.key"
        );
        assert!(!release_command("x", "", 1, "v", 30).contains("--notes"));
        assert_eq!(anchor("method/steps/0a1b"), "s-0a1b");
        assert_eq!(id_of("method/items/0a1b"), "0a1b");
    }

    /// Splits a command the way a POSIX shell does for what `shell_quote` writes (plain words
    /// and single-quoted words, `'\''` for a quote inside).
    fn shell_words(command: &str) -> Vec<String> {
        let mut words = Vec::new();
        let (mut word, mut started) = (String::new(), false);
        let mut chars = command.chars();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    started = true;
                    for q in chars.by_ref() {
                        if q == '\'' {
                            break;
                        }
                        word.push(q);
                    }
                }
                '\\' => word.extend(chars.next()),
                ' ' => {
                    if started || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    started = false;
                }
                c => word.push(c),
            }
        }
        if started || !word.is_empty() {
            words.push(word);
        }
        words
    }

    #[test]
    fn the_sfs_command_line_accepts_the_release_command() {
        use clap::Parser;
        let command = release_command("2027.1", "Nya steg; it's \"new\" $HOME", 7, "ab12.cd34", 30);
        let words = shell_words(&command);
        assert_eq!(words[6], "Nya steg; it's \"new\" $HOME", "{words:?}");
        sfs_client::cli::Cli::try_parse_from(&words).expect("sfs parses the command");
    }
}
