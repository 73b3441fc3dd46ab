//! The start page: what changed since the person's last visit.

use askama::Template;
use axum::response::Response;
use sfs_client::v1 as pb;

use super::lessons::{steps, view, LessonView};
use super::{city_names, Ctx, Signed};
use crate::i18n::Tr;
use crate::session::Role;
use crate::{format, html};

#[derive(Template)]
#[template(path = "start.html")]
struct StartPage {
    t: Tr,
    ctx: Ctx,
    since: String,
    new_lessons: Vec<LessonView>,
    release: String,
    release_new: bool,
    signals_waiting: Option<String>,
    meetings: Vec<(String, String)>,
}

/// `GET /`.
pub(crate) async fn page(Signed { t, mut session, .. }: Signed) -> Response {
    let since_ms = session.previous_visit_ms;
    let cities = city_names(&mut session).await;
    let steps = steps(&mut session).await;
    let mut new_lessons = Vec::new();
    if let Ok(page) = session.client.list_lessons_page("cities/-", 50, "").await {
        new_lessons = page
            .lessons
            .into_iter()
            .filter(|l| l.create_time_ms > since_ms && l.city != session.node_id)
            .take(10)
            .map(|l| view(&t, &session, l, &cities, &steps))
            .collect();
    }
    let (release, release_new) = match session.client.running_release().await {
        Ok(running) => match running.release {
            Some(r) => (
                r.version_label,
                r.issue_time_ms.max(r.create_time_ms) > since_ms,
            ),
            None => (String::new(), false),
        },
        Err(_) => (String::new(), false),
    };
    let mut signals_waiting = None;
    let mut meetings = Vec::new();
    if !session.hub {
        if session.role >= Role::Coordinator {
            if let Ok(page) = session
                .client
                .signals
                .list_signals(pb::ListSignalsRequest {
                    page_size: 1,
                    page_token: String::new(),
                    status: "new".into(),
                })
                .await
            {
                signals_waiting = Some(t.count(
                    "start-signals-waiting",
                    "count",
                    i64::from(page.into_inner().total_size),
                ));
            }
        }
        let today = format::today();
        if let Ok(page) = session
            .client
            .register
            .list_meetings(pb::ListRequest {
                page_size: 500,
                page_token: String::new(),
            })
            .await
        {
            let mut upcoming: Vec<pb::Meeting> = page
                .into_inner()
                .meetings
                .into_iter()
                .filter(|m| m.date >= today)
                .collect();
            upcoming.sort_by(|a, b| a.date.cmp(&b.date));
            meetings = upcoming
                .into_iter()
                .take(3)
                .map(|m| (format::iso_date(&t, &m.date), m.agenda))
                .collect();
        }
    }
    let page = StartPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/"),
        since: if since_ms > 0 {
            t.arg("start-since", "date", format::date_time(&t, since_ms))
        } else {
            t.get("start-first-visit")
        },
        new_lessons,
        release,
        release_new,
        signals_waiting,
        meetings,
    };
    html(page.render())
}
