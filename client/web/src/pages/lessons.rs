//! Lessons: the national feed with search and filters, writing, editing (merged by the API
//! with what others changed meanwhile) and archiving, and a live feed by server-sent events.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use sfs_client::v1 as pb;

use super::{api_error, city_names, field_error, Ctx, Editor, Signed};
use crate::i18n::Tr;
use crate::session::{NodeKind, Role, Session};
use crate::{format, html, AppState};

/// Lessons per page.
const PAGE_SIZE: i32 = 20;

/// A lesson as the pages show it.
pub(crate) struct LessonView {
    pub href: String,
    pub title: String,
    pub body: String,
    pub city: String,
    pub date: String,
    pub iso_date: String,
    pub step: String,
    pub tags: Vec<String>,
    pub archived: bool,
    pub editable: bool,
}

/// Step titles by name (`method/steps/{id}`), in handbook order.
pub(crate) async fn steps(session: &mut Session) -> Vec<(String, String)> {
    match session.client.handbook().await {
        Ok(handbook) => handbook
            .chapters
            .into_iter()
            .flat_map(|c| c.steps)
            .map(|s| (s.name, s.title))
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub(crate) fn view(
    t: &Tr,
    session: &Session,
    lesson: pb::Lesson,
    cities: &BTreeMap<String, String>,
    steps: &[(String, String)],
) -> LessonView {
    let href = format!(
        "/{}",
        lesson
            .name
            .replacen("cities/", "lessons/", 1)
            .replacen("/lessons/", "/", 1)
    );
    let editable = session.kind == NodeKind::City
        && session.role >= Role::Editor
        && lesson.city == session.node_id;
    LessonView {
        href,
        city: cities
            .get(&lesson.city)
            .cloned()
            .unwrap_or_else(|| super::city_name(&lesson.city)),
        date: format::date(t, lesson.create_time_ms),
        iso_date: format::iso_day(lesson.create_time_ms),
        step: steps
            .iter()
            .find(|(name, _)| *name == lesson.method_step)
            .map(|(_, title)| title.clone())
            .unwrap_or_default(),
        title: lesson.title,
        body: lesson.body,
        tags: lesson.tags,
        archived: lesson.archived,
        editable,
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct Filters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    page: String,
}

#[derive(Template)]
#[template(path = "lessons.html")]
struct ListPage {
    t: Tr,
    ctx: Ctx,
    title: String,
    /// The city filter's "every city" (at a county hub, every city of the county).
    all_cities: String,
    lessons: Vec<LessonView>,
    total: String,
    q: String,
    tag: String,
    city: String,
    step: String,
    cities: Vec<(String, String)>,
    steps: Vec<(String, String)>,
    next_href: String,
    first_href: String,
    can_write: bool,
}

/// The county whose cities' lessons a page lists: at a county hub its own (the county
/// coordinator's feed), elsewhere none (every city's).
pub(crate) fn county_filter(session: &Session) -> String {
    if session.kind == NodeKind::County {
        session.node_id.clone()
    } else {
        String::new()
    }
}

/// `GET /lessons`: the national feed (or one city's; at a county hub the county's cities'),
/// newest first.
pub(crate) async fn list(
    Signed { t, mut session, .. }: Signed,
    Query(filters): Query<Filters>,
) -> Response {
    let parent = if filters.city.is_empty() {
        "cities/-".to_string()
    } else {
        format!("cities/{}", filters.city)
    };
    let request = pb::ListLessonsRequest {
        parent,
        page_size: PAGE_SIZE,
        page_token: filters.page.clone(),
        tag: filters.tag.trim().to_string(),
        method_step: filters.step.clone(),
        query: filters.q.trim().to_string(),
        show_archived: false,
        county: county_filter(&session),
    };
    let page = match session.client.lessons.list_lessons(request).await {
        Ok(page) => page.into_inner(),
        Err(status) => return api_error(&t, &session, &status),
    };
    let cities = city_names(&mut session).await;
    let steps = steps(&mut session).await;
    let query = |page: &str| {
        let mut pairs = vec![
            ("q", filters.q.as_str()),
            ("tag", filters.tag.as_str()),
            ("city", filters.city.as_str()),
            ("step", filters.step.as_str()),
        ];
        if !page.is_empty() {
            pairs.push(("page", page));
        }
        let pairs: Vec<_> = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        format!(
            "/lessons?{}",
            serde_urlencoded::to_string(pairs).unwrap_or_default()
        )
    };
    let next_href = if page.next_page_token.is_empty() {
        String::new()
    } else {
        query(&page.next_page_token)
    };
    let first_href = if filters.page.is_empty() {
        String::new()
    } else {
        query("")
    };
    let lessons = page
        .lessons
        .into_iter()
        .map(|l| view(&t, &session, l, &cities, &steps))
        .collect();
    let (title, all_cities) = if session.kind == NodeKind::County {
        (
            t.arg("county-lessons-title", "county", &session.county_name),
            t.get("county-all-cities"),
        )
    } else {
        (t.get("lessons-title"), t.get("lessons-all-cities"))
    };
    let page = ListPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/lessons"),
        title,
        all_cities,
        lessons,
        total: t.count("lessons-total", "count", i64::from(page.total_size)),
        q: filters.q,
        tag: filters.tag,
        city: filters.city,
        step: filters.step,
        cities: cities.into_iter().collect(),
        steps,
        next_href,
        first_href,
        can_write: session.kind == NodeKind::City && session.role >= Role::Editor,
    };
    html(page.render())
}

#[derive(Template)]
#[template(path = "lesson.html")]
struct ShowPage {
    t: Tr,
    ctx: Ctx,
    lesson: LessonView,
    archive_action: String,
}

/// `GET /lessons/{city}/{id}`: one lesson.
pub(crate) async fn show(
    Signed { t, mut session, .. }: Signed,
    Path((city, id)): Path<(String, String)>,
) -> Response {
    let lesson = match session
        .client
        .get_lesson(&format!("cities/{city}/lessons/{id}"))
        .await
    {
        Ok(lesson) => lesson,
        Err(sfs_client::ClientError::Status(status)) => return api_error(&t, &session, &status),
        Err(_) => {
            return super::error_page(&t, StatusCode::SERVICE_UNAVAILABLE, "error-unavailable")
        }
    };
    let cities = city_names(&mut session).await;
    let steps = steps(&mut session).await;
    let lesson = view(&t, &session, lesson, &cities, &steps);
    let page = ShowPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/lessons"),
        archive_action: format!("{}/archive", lesson.href),
        lesson,
    };
    html(page.render())
}

/// The values and errors of the lesson form.
#[derive(Deserialize, Default)]
pub(crate) struct LessonForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    etag: String,
}

#[derive(Template)]
#[template(path = "lesson_form.html")]
struct FormPage {
    t: Tr,
    ctx: Ctx,
    heading: String,
    action: String,
    form: LessonForm,
    steps: Vec<(String, String)>,
    title_error: String,
    body_error: String,
    tags_error: String,
    step_error: String,
    other_error: String,
}

async fn form_page(
    t: Tr,
    mut session: Session,
    heading: &str,
    action: String,
    form: LessonForm,
    error: Option<(String, String)>,
) -> Response {
    let steps = steps(&mut session).await;
    let mut page = FormPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/lessons"),
        heading: t.get(heading),
        action,
        form,
        steps,
        title_error: String::new(),
        body_error: String::new(),
        tags_error: String::new(),
        step_error: String::new(),
        other_error: String::new(),
    };
    let status = super::form_status(error.is_some());
    if let Some((field, text)) = error {
        match field.as_str() {
            "title" | "lesson.title" => page.title_error = text,
            "body" | "lesson.body" => page.body_error = text,
            f if f.starts_with("tags") || f.starts_with("lesson.tags") => page.tags_error = text,
            "method_step" | "lesson.method_step" => page.step_error = text,
            _ => page.other_error = text,
        }
    }
    (status, html(page.render())).into_response()
}

fn lesson_from(form: &LessonForm) -> pb::Lesson {
    pb::Lesson {
        title: form.title.trim().to_string(),
        body: form.body.clone(),
        tags: form
            .tags
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        method_step: form.step.clone(),
        etag: form.etag.clone(),
        ..Default::default()
    }
}

/// `GET /lessons/new`.
pub(crate) async fn new_form(Signed { t, session, .. }: Signed<Editor>) -> Response {
    form_page(
        t,
        session,
        "lesson-new",
        "/lessons".into(),
        LessonForm::default(),
        None,
    )
    .await
}

/// `POST /lessons`: creates a lesson; a refusal is shown at its field.
pub(crate) async fn create(
    Signed { t, mut session, .. }: Signed,
    Form(form): Form<LessonForm>,
) -> Response {
    let request = pb::CreateLessonRequest {
        lesson: Some(lesson_from(&form)),
    };
    match session.client.lessons.create_lesson(request).await {
        Ok(_) => Redirect::to("/lessons").into_response(),
        Err(status) => match field_error(&t, &status) {
            Some(error) => {
                form_page(
                    t,
                    session,
                    "lesson-new",
                    "/lessons".into(),
                    form,
                    Some(error),
                )
                .await
            }
            None => api_error(&t, &session, &status),
        },
    }
}

/// `GET /lessons/{city}/{id}/edit`: the form, with the version read (sent back on save).
pub(crate) async fn edit_form(
    Signed { t, mut session, .. }: Signed,
    Path((city, id)): Path<(String, String)>,
) -> Response {
    let lesson = match session
        .client
        .lessons
        .get_lesson(pb::GetLessonRequest {
            name: format!("cities/{city}/lessons/{id}"),
        })
        .await
    {
        Ok(lesson) => lesson.into_inner(),
        Err(status) => return api_error(&t, &session, &status),
    };
    let form = LessonForm {
        title: lesson.title,
        body: lesson.body,
        tags: lesson.tags.join(", "),
        step: lesson.method_step,
        etag: lesson.etag,
    };
    form_page(
        t,
        session,
        "lesson-edit",
        format!("/lessons/{city}/{id}"),
        form,
        None,
    )
    .await
}

/// `POST /lessons/{city}/{id}`: saves an edit; the API merges it with changes made since the
/// version the form was read at.
pub(crate) async fn update(
    Signed { t, mut session, .. }: Signed,
    Path((city, id)): Path<(String, String)>,
    Form(form): Form<LessonForm>,
) -> Response {
    let mut lesson = lesson_from(&form);
    lesson.name = format!("cities/{city}/lessons/{id}");
    match session.client.update_lesson(lesson, Vec::new()).await {
        Ok(_) => Redirect::to(&format!("/lessons/{city}/{id}")).into_response(),
        Err(sfs_client::ClientError::Status(status)) => match field_error(&t, &status) {
            Some(error) => {
                let action = format!("/lessons/{city}/{id}");
                form_page(t, session, "lesson-edit", action, form, Some(error)).await
            }
            None => api_error(&t, &session, &status),
        },
        Err(_) => super::error_page(&t, StatusCode::SERVICE_UNAVAILABLE, "error-unavailable"),
    }
}

/// `POST /lessons/{city}/{id}/archive`: archives a lesson (kept, left out of the feed).
pub(crate) async fn archive(
    Signed { t, mut session, .. }: Signed,
    Path((city, id)): Path<(String, String)>,
) -> Response {
    let lesson = pb::Lesson {
        name: format!("cities/{city}/lessons/{id}"),
        archived: true,
        ..Default::default()
    };
    match session
        .client
        .update_lesson(lesson, vec!["archived".into()])
        .await
    {
        Ok(_) => Redirect::to("/lessons").into_response(),
        Err(sfs_client::ClientError::Status(status)) => api_error(&t, &session, &status),
        Err(_) => super::error_page(&t, StatusCode::SERVICE_UNAVAILABLE, "error-unavailable"),
    }
}

/// What the live feed compares: the heads of every city's lessons document (at a county hub,
/// of its cities' only), from the node's status (cheap: no lesson is read, however many there
/// are).
async fn fingerprint(session: &mut Session) -> Option<Vec<(String, Vec<String>)>> {
    let county = if session.kind == NodeKind::County {
        Some(city_names(session).await)
    } else {
        None
    };
    let status = session.client.status().await.ok()?;
    Some(
        status
            .documents
            .into_iter()
            .filter(|d| {
                d.doc_id
                    .strip_prefix("shared/lessons/")
                    .is_some_and(|city| county.as_ref().is_none_or(|c| c.contains_key(city)))
            })
            .map(|d| (d.doc_id, d.heads))
            .collect(),
    )
}

/// `GET /lessons/events`: a server-sent event `lessons` whenever a lesson arrives or changes
/// anywhere in the federation. The web app asks the API (with the person's token) once per
/// poll interval; the browser only listens.
pub(crate) async fn events(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some((session_id, mut session)) = crate::session(&app, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let poll = app.live_poll;
    let first = fingerprint(&mut session).await;
    let stream = futures::stream::unfold(
        (app, session_id, session, first),
        move |(app, id, mut session, last)| async move {
            loop {
                tokio::time::sleep(poll).await;
                // A signed-out or idle session ends the stream.
                app.sessions.peek(&id)?;
                let now = fingerprint(&mut session).await;
                if now.is_some() && now != last {
                    let event = Event::default().event("lessons").data("changed");
                    return Some((Ok::<_, Infallible>(event), (app, id, session, now)));
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
