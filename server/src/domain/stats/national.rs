//! National figures: the sum of every city's latest release per quarter, per year, per county.
//!
//! A national cell is `exact` when every city's part was published exactly; a `lower_bound`
//! when some city suppressed its part (the true value is at least the sum shown); `noisy` when
//! parts carry noise (the standard deviations add in quadrature).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::disclosure::{CellStatus, ProtectedCell};
use super::CellPos;

/// A release as published in `shared/stats/{city}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedRelease {
    pub id: String,
    pub city: String,
    pub quarter: String,
    pub number: i64,
    pub corrects: String,
    pub mode: String,
    pub k: i64,
    pub epsilon_milli: i64,
    pub year_spent_milli: i64,
    pub year_cap_milli: i64,
    pub cells: Vec<ProtectedCell>,
    pub activity: BTreeMap<String, i64>,
    pub created_ms: i64,
    /// The preview this release was published from.
    pub draft_id: String,
}

/// One national (or county) figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NationalCell {
    pub period: String,
    pub county: String,
    pub pos: CellPos,
    pub value: i64,
    pub status: String,
    pub sd: f64,
    pub cities: i64,
}

/// The national figures of a year.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NationalYear {
    pub year: i32,
    pub cells: Vec<NationalCell>,
    /// (period, kind) → total.
    pub activity: Vec<(String, String, i64)>,
    pub releases: Vec<String>,
}

#[derive(Default, Clone)]
struct Acc {
    value: i64,
    suppressed: bool,
    noisy: bool,
    variance: f64,
    /// The cities whose releases went into the figure (a city counts once however many of its
    /// quarters are summed).
    cities: BTreeSet<String>,
}

impl Acc {
    fn add_cell(&mut self, city: &str, cell: &ProtectedCell) {
        match cell.status {
            CellStatus::Suppressed => self.suppressed = true,
            CellStatus::Noisy => {
                self.noisy = true;
                self.variance += cell.sd * cell.sd;
            }
            CellStatus::Exact => {}
        }
        self.value += cell.value.unwrap_or(0);
        self.cities.insert(city.to_string());
    }

    fn add(&mut self, other: &Acc) {
        self.value += other.value;
        self.suppressed |= other.suppressed;
        self.noisy |= other.noisy;
        self.variance += other.variance;
        self.cities.extend(other.cities.iter().cloned());
    }

    fn status(&self) -> &'static str {
        match (self.suppressed, self.noisy) {
            (false, false) => "exact",
            (true, false) => "lower_bound",
            (false, true) => "noisy",
            (true, true) => "lower_bound_noisy",
        }
    }
}

/// The latest release of each city for each quarter of `year`.
pub fn latest_releases(releases: &[PublishedRelease], year: i32) -> Vec<&PublishedRelease> {
    let mut latest: BTreeMap<(&str, &str), &PublishedRelease> = BTreeMap::new();
    for release in releases {
        if super::parse_quarter(&release.quarter).map(|(y, _)| y) != Some(year) {
            continue;
        }
        let slot = latest
            .entry((release.city.as_str(), release.quarter.as_str()))
            .or_insert(release);
        if release.number > slot.number {
            *slot = release;
        }
    }
    latest.into_values().collect()
}

/// The county under which the figures of a city with no county in the directory are summed.
/// County names are data as people read them (`Skåne län`), so this one is Swedish too; an
/// empty county is never used for it, since an empty county means the whole country.
pub const UNKNOWN_COUNTY: &str = "okänt län";

/// Sums the latest releases of `year`; `county_of` maps a city to its county.
pub fn combine(
    releases: &[PublishedRelease],
    year: i32,
    county_of: &BTreeMap<String, String>,
) -> NationalYear {
    let latest = latest_releases(releases, year);
    let mut quarters: BTreeMap<(String, CellPos), Acc> = BTreeMap::new();
    let mut counties: BTreeMap<(String, CellPos), Acc> = BTreeMap::new();
    let mut activity: BTreeMap<(String, String), i64> = BTreeMap::new();
    for release in &latest {
        let county = county_of
            .get(&release.city)
            .map(|county| county.trim())
            .filter(|county| !county.is_empty())
            .unwrap_or(UNKNOWN_COUNTY)
            .to_string();
        for cell in &release.cells {
            quarters
                .entry((release.quarter.clone(), cell.pos.clone()))
                .or_default()
                .add_cell(&release.city, cell);
            counties
                .entry((county.clone(), cell.pos.clone()))
                .or_default()
                .add_cell(&release.city, cell);
        }
        for (kind, value) in &release.activity {
            *activity
                .entry((release.quarter.clone(), kind.clone()))
                .or_default() += value;
            *activity
                .entry((year.to_string(), kind.clone()))
                .or_default() += value;
        }
    }
    let mut years: BTreeMap<CellPos, Acc> = BTreeMap::new();
    for ((_, pos), acc) in &quarters {
        years.entry(pos.clone()).or_default().add(acc);
    }
    let cell = |period: String, county: String, pos: &CellPos, acc: &Acc| NationalCell {
        period,
        county,
        pos: pos.clone(),
        value: acc.value,
        status: acc.status().to_string(),
        sd: acc.variance.sqrt(),
        cities: acc.cities.len() as i64,
    };
    let mut cells: Vec<NationalCell> = quarters
        .iter()
        .map(|((q, pos), acc)| cell(q.clone(), String::new(), pos, acc))
        .collect();
    cells.extend(
        years
            .iter()
            .map(|(pos, acc)| cell(year.to_string(), String::new(), pos, acc)),
    );
    cells.extend(
        counties
            .iter()
            .map(|((county, pos), acc)| cell(year.to_string(), county.clone(), pos, acc)),
    );
    NationalYear {
        year,
        cells,
        activity: activity.into_iter().map(|((p, k), v)| (p, k, v)).collect(),
        releases: latest
            .iter()
            .map(|r| format!("cities/{}/stats/{}", r.city, r.id))
            .collect(),
    }
}

/// The national figures as CSV.
pub fn to_csv(national: &NationalYear) -> String {
    let mut csv = String::from("period,county,table,row,col,value,status,sd,cities\n");
    for c in &national.cells {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{:.2},{}\n",
            c.period,
            c.county,
            c.pos.table,
            c.pos.row,
            c.pos.col,
            c.value,
            c.status,
            c.sd,
            c.cities
        ));
    }
    for (period, kind, value) in &national.activity {
        csv.push_str(&format!("{period},,activity,{kind},,{value},exact,0.00,\n"));
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(
        city: &str,
        quarter: &str,
        number: i64,
        cells: Vec<ProtectedCell>,
    ) -> PublishedRelease {
        PublishedRelease {
            id: format!("{quarter}-r{number}"),
            city: city.into(),
            quarter: quarter.into(),
            number,
            corrects: String::new(),
            mode: "suppression".into(),
            k: 5,
            epsilon_milli: 0,
            year_spent_milli: 0,
            year_cap_milli: 0,
            cells,
            activity: BTreeMap::from([("trainings_held".to_string(), 2)]),
            created_ms: 0,
            draft_id: String::new(),
        }
    }

    fn cell(value: Option<i64>) -> ProtectedCell {
        ProtectedCell {
            pos: CellPos {
                table: "referral_source".into(),
                row: "police".into(),
                col: String::new(),
            },
            value,
            status: if value.is_some() {
                CellStatus::Exact
            } else {
                CellStatus::Suppressed
            },
            sd: 0.0,
            reason: None,
        }
    }

    #[test]
    fn releases_under_another_spelling_of_a_quarter_are_not_summed() {
        // A release stored under a non-canonical quarter (by an older or hostile node) counts
        // nowhere: the same people cannot be added twice under two spellings.
        let releases = vec![
            release("lund", "2026-Q1", 1, vec![cell(Some(7))]),
            release("lund", "+2026-Q1", 1, vec![cell(Some(7))]),
            release("lund", "02026-Q1", 1, vec![cell(Some(7))]),
            release("lund", "2026-q1", 1, vec![cell(Some(7))]),
        ];
        let national = combine(&releases, 2026, &BTreeMap::new());
        assert_eq!(
            national.releases,
            vec!["cities/lund/stats/2026-Q1-r1".to_string()]
        );
        let year = national
            .cells
            .iter()
            .find(|c| c.period == "2026" && c.county.is_empty())
            .unwrap();
        assert_eq!((year.value, year.status.as_str()), (7, "exact"));
    }

    #[test]
    fn a_city_with_a_blank_county_is_summed_under_the_unknown_county_never_as_the_country() {
        let releases = vec![
            release("lund", "2026-Q1", 1, vec![cell(Some(7))]),
            release("kiruna", "2026-Q1", 1, vec![cell(Some(5))]),
        ];
        let counties = BTreeMap::from([
            ("lund".to_string(), "Skåne län".to_string()),
            ("kiruna".to_string(), "  ".to_string()),
        ]);
        let national = combine(&releases, 2026, &counties);
        let country: Vec<_> = national
            .cells
            .iter()
            .filter(|c| c.period == "2026" && c.county.is_empty())
            .collect();
        assert_eq!(country.len(), 1, "one whole-country cell: {country:?}");
        assert_eq!(country[0].value, 12);
        let unknown = national
            .cells
            .iter()
            .find(|c| c.period == "2026" && c.county == UNKNOWN_COUNTY)
            .expect("kiruna's figures under the unknown county");
        assert_eq!((unknown.value, unknown.cities), (5, 1));
    }

    #[test]
    fn national_cells_sum_the_latest_releases_and_flag_lower_bounds() {
        let releases = vec![
            release("lund", "2026-Q1", 1, vec![cell(Some(7))]),
            release("lund", "2026-Q1", 2, vec![cell(Some(8))]),
            release("malmo", "2026-Q1", 1, vec![cell(None)]),
            release("malmo", "2026-Q2", 1, vec![cell(Some(6))]),
            release("malmo", "2025-Q4", 1, vec![cell(Some(100))]),
        ];
        let counties = BTreeMap::from([("lund".to_string(), "Skåne län".to_string())]);
        let national = combine(&releases, 2026, &counties);
        let find = |period: &str, county: &str| {
            national
                .cells
                .iter()
                .find(|c| c.period == period && c.county == county)
                .unwrap()
        };
        let q1 = find("2026-Q1", "");
        assert_eq!(
            (q1.value, q1.status.as_str(), q1.cities),
            (8, "lower_bound", 2),
            "the correction replaces release 1"
        );
        let q2 = find("2026-Q2", "");
        assert_eq!((q2.value, q2.status.as_str()), (6, "exact"));
        let year = find("2026", "");
        assert_eq!((year.value, year.status.as_str()), (14, "lower_bound"));
        assert_eq!(find("2026", "Skåne län").value, 8);
        assert_eq!(year.cities, 2, "lund and malmo, however many quarters each");
        assert_eq!(
            find("2026", UNKNOWN_COUNTY).cities,
            1,
            "malmo's two quarters"
        );
        assert_eq!(find("2026", UNKNOWN_COUNTY).value, 6);
        assert!(national
            .activity
            .contains(&("2026".into(), "trainings_held".into(), 6)));
        assert!(to_csv(&national).lines().count() > 4);
    }
}
