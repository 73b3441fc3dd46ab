//! Statistics: a city enters support and activity records, previews a quarter as the real
//! cross-tables (hidden cells marked, with why), and publishes it after a confirmation; every
//! node shows the national figures, lower bounds and noisy cells drawn as such, with a CSV.

use askama::Template;
use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use sfs_client::v1 as pb;

use super::{api_error, field_error, Coordinator, Ctx, Signed};
use crate::chart::{self, Bar, Mark};
use crate::i18n::Tr;
use crate::session::{NodeKind, Session};
use crate::{format, html};

const SEXES: &[&str] = &["female", "male", "other_or_unknown"];
const AGE_BANDS: &[&str] = &[
    "0-11", "12-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown",
];
const CITIZENSHIPS: &[&str] = &["swedish", "other_eu", "non_eu", "unknown"];
const EXPLOITATIONS: &[&str] = &[
    "sexual",
    "forced_labour",
    "forced_criminality",
    "begging",
    "other",
];
const REFERRAL_SOURCES: &[&str] = &[
    "police",
    "social_services",
    "civil_society",
    "business",
    "self_or_other",
];
const ACTIVITY_KINDS: &[&str] = &[
    "trainings_held",
    "people_trained",
    "outreach_sessions",
    "network_meetings",
    "businesses_enrolled",
];

/// A category's words; age bands are numbers and stay as they are.
fn category(t: &Tr, value: &str) -> String {
    if value.is_empty() {
        t.get("cell-total")
    } else if value.starts_with(|c: char| c.is_ascii_digit()) {
        value.to_string()
    } else {
        t.get(&format!("cat-{value}"))
    }
}

fn options(t: &Tr, values: &[&str]) -> Vec<(String, String)> {
    values
        .iter()
        .map(|v| (v.to_string(), category(t, v)))
        .collect()
}

/// One cell as drawn: its text, a class saying what kind it is, and its status in words.
pub(crate) struct CellView {
    pub text: String,
    pub class: &'static str,
    pub note: String,
}

/// One cross-table.
pub(crate) struct TableView {
    pub title: String,
    pub cols: Vec<String>,
    pub rows: Vec<(String, Vec<CellView>)>,
}

/// Builds tables from `(table, row, col, cell)` in the order the cells come.
fn tables(t: &Tr, cells: Vec<(String, String, String, CellView)>) -> Vec<TableView> {
    let mut order: Vec<String> = Vec::new();
    for (table, ..) in &cells {
        if !order.contains(table) {
            order.push(table.clone());
        }
    }
    order
        .into_iter()
        .map(|table| {
            let mine: Vec<_> = cells.iter().filter(|c| c.0 == table).collect();
            let mut rows: Vec<&str> = Vec::new();
            let mut cols: Vec<&str> = Vec::new();
            for (_, row, col, _) in &mine {
                if !rows.contains(&row.as_str()) {
                    rows.push(row);
                }
                if !cols.contains(&col.as_str()) {
                    cols.push(col);
                }
            }
            // Totals last.
            rows.sort_by_key(|r| r.is_empty());
            cols.sort_by_key(|c| c.is_empty());
            let rows = rows
                .iter()
                .map(|row| {
                    let cells = cols
                        .iter()
                        .map(|col| {
                            mine.iter()
                                .find(|c| c.1 == *row && c.2 == *col)
                                .map(|c| CellView {
                                    text: c.3.text.clone(),
                                    class: c.3.class,
                                    note: c.3.note.clone(),
                                })
                                .unwrap_or(CellView {
                                    text: String::new(),
                                    class: "",
                                    note: String::new(),
                                })
                        })
                        .collect();
                    (category(t, row), cells)
                })
                .collect();
            TableView {
                title: t.get(&format!("table-{table}")),
                cols: cols.iter().map(|c| category(t, c)).collect(),
                rows,
            }
        })
        .collect()
}

fn preview_cell(t: &Tr, cell: &pb::StatsCell) -> CellView {
    match (cell.status.as_str(), cell.value) {
        ("suppressed", _) | (_, None) => CellView {
            text: t.get("cell-hidden"),
            class: "hidden-cell",
            note: t.get(if cell.reason.starts_with("secondary") {
                "cell-hidden-secondary"
            } else {
                "cell-hidden-primary"
            }),
        },
        ("noisy", Some(v)) => CellView {
            text: format!("≈ {}", format::number(v)),
            class: "noisy-cell",
            note: t.get("cell-noisy"),
        },
        (_, Some(v)) => CellView {
            text: format::number(v),
            class: "",
            note: String::new(),
        },
    }
}

fn national_cell(t: &Tr, cell: &pb::NationalCell) -> CellView {
    let n = format::number(cell.value);
    match cell.status.as_str() {
        "lower_bound" => CellView {
            text: format!("≥ {n}"),
            class: "lower-bound-cell",
            note: t.get("cell-lower-bound"),
        },
        "noisy" => CellView {
            text: format!("≈ {n}"),
            class: "noisy-cell",
            note: t.get("cell-noisy"),
        },
        "lower_bound_noisy" => CellView {
            text: format!("≥ ≈ {n}"),
            class: "lower-bound-cell noisy-cell",
            note: t.get("cell-lower-bound-noisy"),
        },
        _ => CellView {
            text: n,
            class: "",
            note: String::new(),
        },
    }
}

/// The current quarter in Stockholm, `YYYY-Qn`.
fn this_quarter() -> String {
    let today = format::today();
    let (year, rest) = today.split_once('-').unwrap_or(("2026", "01"));
    let month: u32 = rest[..2].parse().unwrap_or(1);
    format!("{year}-Q{}", (month - 1) / 3 + 1)
}

#[derive(Deserialize, Default)]
pub(crate) struct StatsQuery {
    #[serde(default)]
    quarter: String,
    #[serde(default)]
    done: String,
}

#[derive(Template)]
#[template(path = "statistics.html")]
struct StatsPage {
    t: Tr,
    ctx: Ctx,
    quarter: String,
    notice: String,
    error: String,
    sexes: Vec<(String, String)>,
    age_bands: Vec<(String, String)>,
    citizenships: Vec<(String, String)>,
    exploitations: Vec<(String, String)>,
    referral_sources: Vec<(String, String)>,
    activity_kinds: Vec<(String, String)>,
    records: String,
    /// Quarter, release number, date published, people supported (as the table shows it).
    published: Vec<(String, String, String, String)>,
    chart: Option<String>,
}

/// The table of the whole count of people supported, as drawn in the charts.
const TOTAL_TABLE: &str = "exploitation_by_sex";

/// The text of a figure as the tables show it (`≥ 12`, `≈ 12`, hidden).
fn figure_text(t: &Tr, bar: &Bar) -> String {
    match (bar.mark, bar.value) {
        (Mark::Hidden, _) | (_, None) => t.get("cell-hidden"),
        (Mark::Exact, Some(v)) => format::number(v),
        (Mark::Noisy { .. }, Some(v)) => format!("≈ {}", format::number(v)),
        (Mark::LowerBound, Some(v)) => format!("≥ {}", format::number(v)),
        (Mark::LowerBoundNoisy { .. }, Some(v)) => format!("≥ ≈ {}", format::number(v)),
    }
}

/// The city's own published figures over time: per quarter, its latest release's count of
/// people supported. Oldest first.
fn city_bars(releases: &[pb::StatsRelease]) -> Vec<Bar> {
    let mut latest: std::collections::BTreeMap<&str, &pb::StatsRelease> = Default::default();
    for r in releases.iter().filter(|r| !r.draft) {
        let entry = latest.entry(r.quarter.as_str()).or_insert(r);
        if r.number > entry.number {
            *entry = r;
        }
    }
    latest
        .into_iter()
        .map(|(quarter, r)| {
            let total = r
                .cells
                .iter()
                .find(|c| c.table == TOTAL_TABLE && c.row.is_empty() && c.col.is_empty());
            Bar {
                label: quarter.to_string(),
                value: total.and_then(|c| c.value),
                mark: total.map_or(Mark::Hidden, |c| match c.value {
                    None => Mark::Hidden,
                    Some(_) => Mark::of(&c.status, c.sd),
                }),
            }
        })
        .collect()
}

async fn stats_page(
    t: Tr,
    mut session: Session,
    quarter: String,
    notice: String,
    error: String,
) -> Response {
    let records = match session
        .client
        .stats
        .list_support_records(pb::ListStatsRecordsRequest {
            quarter: quarter.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
    {
        Ok(page) => t.count(
            "stats-records",
            "count",
            i64::from(page.into_inner().total_size),
        ),
        Err(status) => return api_error(&t, &session, &status),
    };
    let releases = match session
        .client
        .stats
        .list_stats_releases(pb::ListStatsReleasesRequest {
            parent: format!("cities/{}", session.node_id),
            period: String::new(),
        })
        .await
    {
        Ok(list) => list.into_inner().releases,
        Err(_) => Vec::new(),
    };
    let bars = city_bars(&releases);
    let chart = chart::bars(
        "city-chart",
        &chart::Words {
            title: &t.get("chart-city-title"),
            description: &t.get("chart-city-description"),
            y_axis: &t.get("chart-people"),
            hidden: &t.get("cell-hidden"),
            unknown_small: &t.get("chart-unknown-small"),
        },
        &bars,
    );
    let mut published: Vec<(String, String, String, String)> = releases
        .iter()
        .filter(|r| !r.draft)
        .map(|r| {
            let bar = city_bars(std::slice::from_ref(r)).pop();
            (
                r.quarter.clone(),
                r.number.to_string(),
                format::date(&t, r.create_time_ms),
                bar.map(|b| figure_text(&t, &b)).unwrap_or_default(),
            )
        })
        .collect();
    published.sort_by(|a, b| (&b.0, &b.1).cmp(&(&a.0, &a.1)));
    let status = super::form_status(!error.is_empty());
    let page = StatsPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/statistics"),
        quarter,
        notice,
        error,
        sexes: options(&t, SEXES),
        age_bands: options(&t, AGE_BANDS),
        citizenships: options(&t, CITIZENSHIPS),
        exploitations: options(&t, EXPLOITATIONS),
        referral_sources: options(&t, REFERRAL_SOURCES),
        activity_kinds: ACTIVITY_KINDS
            .iter()
            .map(|k| (k.to_string(), t.get(&format!("activity-{k}"))))
            .collect(),
        records,
        published,
        chart,
    };
    (status, html(page.render())).into_response()
}

/// `GET /statistics`.
pub(crate) async fn page(
    Signed { t, session, .. }: Signed<Coordinator>,
    Query(query): Query<StatsQuery>,
) -> Response {
    let quarter = if query.quarter.is_empty() {
        this_quarter()
    } else {
        query.quarter
    };
    let notice = match query.done.as_str() {
        "record" => t.get("stats-saved"),
        "published" => t.arg("stats-published", "quarter", &quarter),
        _ => String::new(),
    };
    stats_page(t, session, quarter, notice, String::new()).await
}

#[derive(Deserialize, Default)]
pub(crate) struct RecordForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    quarter: String,
    #[serde(default)]
    sex: String,
    #[serde(default)]
    age_band: String,
    #[serde(default)]
    citizenship: String,
    #[serde(default)]
    exploitation: String,
    #[serde(default)]
    referral_source: String,
    #[serde(default)]
    person_ref: String,
    #[serde(default)]
    activity: String,
    #[serde(default)]
    count: String,
}

/// `POST /statistics/records`: a support record (`kind=support`) or an activity record.
pub(crate) async fn create_record(
    Signed { t, mut session, .. }: Signed,
    Form(form): Form<RecordForm>,
) -> Response {
    let quarter = form.quarter.trim().to_string();
    let result = if form.kind == "support" {
        session
            .client
            .stats
            .create_support_record(pb::CreateSupportRecordRequest {
                record: Some(pb::SupportRecord {
                    quarter: quarter.clone(),
                    sex: form.sex,
                    age_band: form.age_band,
                    citizenship: form.citizenship,
                    exploitation: form.exploitation,
                    referral_source: form.referral_source,
                    person_ref: form.person_ref,
                    ..Default::default()
                }),
            })
            .await
            .map(|_| ())
    } else {
        let Ok(count) = form.count.trim().parse::<i64>() else {
            let error = t.get("stats-count-invalid");
            return stats_page(t, session, quarter, String::new(), error).await;
        };
        session
            .client
            .stats
            .create_activity_record(pb::CreateActivityRecordRequest {
                record: Some(pb::ActivityRecord {
                    quarter: quarter.clone(),
                    kind: form.activity,
                    count,
                    ..Default::default()
                }),
            })
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => Redirect::to(&format!(
            "/statistics?quarter={}&done=record",
            super::encode(&quarter)
        ))
        .into_response(),
        Err(status) => match field_error(&t, &status) {
            Some((_, text)) => stats_page(t, session, quarter, String::new(), text).await,
            None => api_error(&t, &session, &status),
        },
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct QuarterForm {
    #[serde(default)]
    quarter: String,
    #[serde(default)]
    confirm: String,
}

#[derive(Template)]
#[template(path = "statistics_preview.html")]
struct PreviewPage {
    t: Tr,
    ctx: Ctx,
    quarter: String,
    tables: Vec<TableView>,
    activity: Vec<(String, String)>,
    error: String,
}

/// `POST /statistics/preview`: the quarter as it would be published.
pub(crate) async fn preview(
    Signed { t, session, .. }: Signed,
    Form(form): Form<QuarterForm>,
) -> Response {
    preview_page(t, session, form.quarter.trim().to_string(), String::new()).await
}

async fn preview_page(t: Tr, mut session: Session, quarter: String, error: String) -> Response {
    let release = match session
        .client
        .stats
        .preview_release(pb::PreviewReleaseRequest {
            quarter: quarter.clone(),
        })
        .await
    {
        Ok(release) => release.into_inner(),
        Err(status) => {
            return match field_error(&t, &status) {
                Some((_, text)) => stats_page(t, session, quarter, String::new(), text).await,
                None => api_error(&t, &session, &status),
            }
        }
    };
    let cells = release
        .cells
        .iter()
        .map(|c| {
            (
                c.table.clone(),
                c.row.clone(),
                c.col.clone(),
                preview_cell(&t, c),
            )
        })
        .collect();
    let mut activity: Vec<(String, String)> = release
        .activity
        .iter()
        .map(|(kind, n)| (t.get(&format!("activity-{kind}")), format::number(*n)))
        .collect();
    activity.sort();
    let status = super::form_status(!error.is_empty());
    let page = PreviewPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/statistics"),
        quarter,
        tables: tables(&t, cells),
        activity,
        error,
    };
    (status, html(page.render())).into_response()
}

/// `POST /statistics/publish`: publishes the previewed quarter, once confirmed.
pub(crate) async fn publish(
    Signed { t, mut session, .. }: Signed,
    Form(form): Form<QuarterForm>,
) -> Response {
    let quarter = form.quarter.trim().to_string();
    if form.confirm != "yes" {
        let error = t.get("stats-confirm-missing");
        return preview_page(t, session, quarter, error).await;
    }
    match session
        .client
        .stats
        .publish_release(pb::PublishReleaseRequest {
            quarter: quarter.clone(),
        })
        .await
    {
        Ok(_) => Redirect::to(&format!(
            "/statistics?quarter={}&done=published",
            super::encode(&quarter)
        ))
        .into_response(),
        Err(status) => api_error(&t, &session, &status),
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct YearQuery {
    #[serde(default)]
    year: String,
}

#[derive(Template)]
#[template(path = "national.html")]
struct NationalPage {
    t: Tr,
    ctx: Ctx,
    /// The whole country's, or at a county hub the county's.
    title: String,
    /// At a county hub, what the county's figures are; else empty.
    intro: String,
    year: String,
    periods: Vec<(String, Vec<TableView>)>,
    csv_href: String,
    charts: Vec<String>,
}

/// A national cell as a bar.
fn national_bar(label: String, cell: Option<&pb::NationalCell>) -> Bar {
    match cell {
        Some(c) => Bar {
            label,
            value: Some(c.value),
            mark: Mark::of(&c.status, c.sd),
        },
        None => Bar {
            label,
            value: None,
            mark: Mark::Hidden,
        },
    }
}

/// The national charts of a year (a county's, at its county hub: `county` names it): people
/// supported per quarter, and per form of exploitation over the year.
fn national_charts(
    t: &Tr,
    year: i32,
    cells: &[pb::NationalCell],
    county: Option<&str>,
) -> Vec<String> {
    let country = |period: &str, row: &str| {
        cells.iter().find(|c| {
            c.county.is_empty()
                && c.period == period
                && c.table == TOTAL_TABLE
                && c.row == row
                && c.col.is_empty()
        })
    };
    let quarters: Vec<Bar> = (1..=4)
        .map(|q| format!("{year}-Q{q}"))
        .filter_map(|period| {
            let cell = country(&period, "")?;
            Some(national_bar(period, Some(cell)))
        })
        .collect();
    let year_text = year.to_string();
    let by_exploitation: Vec<Bar> = if country(&year_text, "").is_some() {
        EXPLOITATIONS
            .iter()
            .map(|e| national_bar(category(t, e), country(&year_text, e)))
            .collect()
    } else {
        Vec::new()
    };
    let hidden = t.get("cell-hidden");
    let unknown_small = t.get("chart-unknown-small");
    let people = t.get("chart-people");
    let (description, quarters_title, exploitation_title) = match county {
        None => (
            t.get("chart-national-description"),
            t.arg("chart-national-quarters-title", "year", &year_text),
            t.arg("chart-national-exploitation-title", "year", &year_text),
        ),
        Some(county) => (
            t.arg("chart-county-description", "county", county),
            t.args(
                "chart-county-quarters-title",
                &[("county", county), ("year", &year_text)],
            ),
            t.args(
                "chart-county-exploitation-title",
                &[("county", county), ("year", &year_text)],
            ),
        ),
    };
    [
        ("national-quarters", quarters_title, quarters),
        ("national-exploitation", exploitation_title, by_exploitation),
    ]
    .into_iter()
    .filter_map(|(id, title, bars)| {
        chart::bars(
            id,
            &chart::Words {
                title: &title,
                description: &description,
                y_axis: &people,
                hidden: &hidden,
                unknown_small: &unknown_small,
            },
            &bars,
        )
    })
    .collect()
}

fn year_of(query: &YearQuery) -> i32 {
    query
        .year
        .trim()
        .parse()
        .unwrap_or_else(|_| this_quarter()[..4].parse().unwrap_or(2026))
}

/// `GET /national`: the national figures of a year, per period, for the whole country; at a
/// county hub the county's figures (the API serves them there, with the same accuracy marks).
pub(crate) async fn national(
    Signed { t, mut session, .. }: Signed,
    Query(query): Query<YearQuery>,
) -> Response {
    let year = year_of(&query);
    let stats = match session
        .client
        .stats
        .get_national_stats(pb::GetNationalStatsRequest { year })
        .await
    {
        Ok(stats) => stats.into_inner(),
        Err(status) => return api_error(&t, &session, &status),
    };
    let mut periods: Vec<String> = Vec::new();
    for cell in &stats.cells {
        if cell.county.is_empty() && !periods.contains(&cell.period) {
            periods.push(cell.period.clone());
        }
    }
    periods.sort();
    let periods = periods
        .into_iter()
        .map(|period| {
            let cells = stats
                .cells
                .iter()
                .filter(|c| c.county.is_empty() && c.period == period)
                .map(|c| {
                    (
                        c.table.clone(),
                        c.row.clone(),
                        c.col.clone(),
                        national_cell(&t, c),
                    )
                })
                .collect();
            (period, tables(&t, cells))
        })
        .collect();
    let county = (session.kind == NodeKind::County).then_some(session.county_name.as_str());
    let charts = national_charts(&t, year, &stats.cells, county);
    let title = match county {
        Some(county) => t.arg("county-stats-title", "county", county),
        None => t.get("national-title"),
    };
    let page = NationalPage {
        t,
        ctx: Ctx::new(&t, Some(&session), "/national"),
        title,
        intro: if county.is_some() {
            t.get("county-stats-intro")
        } else {
            String::new()
        },
        charts,
        csv_href: format!("/national.csv?year={year}"),
        year: year.to_string(),
        periods,
    };
    html(page.render())
}

/// `GET /national.csv`: the national figures as the API exports them.
pub(crate) async fn national_csv(
    Signed { t, mut session, .. }: Signed,
    Query(query): Query<YearQuery>,
) -> Response {
    let year = year_of(&query);
    match session
        .client
        .stats
        .export_national_stats_csv(pb::GetNationalStatsRequest { year })
        .await
    {
        Ok(export) => {
            let export = export.into_inner();
            let filename: String = export
                .filename
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect();
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{filename}\""),
                    ),
                ],
                export.csv,
            )
                .into_response()
        }
        Err(status) => api_error(&t, &session, &status),
    }
}
