//! The start page: what changed since the person's last visit.

use askama::Template;
use axum::response::Response;
use sfs_client::v1 as pb;

use super::lessons::{steps, view, LessonView};
use super::{city_names, Ctx, Signed};
use crate::i18n::Tr;
use crate::session::{NodeKind, Role};
use crate::{format, html};

#[derive(Template)]
#[template(path = "start.html")]
struct StartPage {
    t: Tr,
    ctx: Ctx,
    since: String,
    new_lessons_heading: String,
    new_lessons: Vec<LessonView>,
    /// The release the node runs, as a sentence; empty if none.
    release: String,
    release_new: bool,
    /// At a county hub: its cities and how many are linked, as sentences.
    county_cities: Option<(String, String)>,
    signals_waiting: Option<String>,
    meetings: Vec<(String, String)>,
}

/// `GET /`.
pub(crate) async fn page(Signed { t, mut session, .. }: Signed) -> Response {
    let since_ms = session.previous_visit_ms;
    let cities = city_names(&mut session).await;
    let steps = steps(&mut session).await;
    let mut new_lessons = Vec::new();
    let request = pb::ListLessonsRequest {
        parent: "cities/-".into(),
        page_size: 50,
        county: super::lessons::county_filter(&session),
        ..Default::default()
    };
    if let Ok(page) = session.client.lessons.list_lessons(request).await {
        new_lessons = page
            .into_inner()
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
                t.arg(
                    match session.kind {
                        NodeKind::City => "start-release",
                        NodeKind::County => "start-release-county",
                        NodeKind::Hub => "start-release-node",
                    },
                    "release",
                    r.version_label,
                ),
                r.issue_time_ms.max(r.create_time_ms) > since_ms,
            ),
            None => (String::new(), false),
        },
        Err(_) => (String::new(), false),
    };
    // At a county hub: how many of the county's cities there are and how many are linked.
    let mut county_cities = None;
    if session.kind == NodeKind::County {
        if let Ok(list) = session
            .client
            .directory
            .list_cities(pb::ListRequest {
                page_size: 500,
                page_token: String::new(),
            })
            .await
        {
            let cities = list.into_inner().cities;
            let linked = cities.iter().filter(|c| c.connected).count() as i64;
            county_cities = Some((
                t.count("start-county-cities", "count", cities.len() as i64),
                t.count("start-county-linked", "count", linked),
            ));
        }
    }
    let mut signals_waiting = None;
    let mut meetings = Vec::new();
    if session.kind == NodeKind::City {
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
        new_lessons_heading: t.get(if session.kind == NodeKind::County {
            "start-new-county-lessons"
        } else {
            "start-new-lessons"
        }),
        new_lessons,
        release,
        release_new,
        county_cities,
        signals_waiting,
        meetings,
    };
    html(page.render())
}
