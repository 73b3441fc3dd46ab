//! Anonymised statistics, free of I/O: categories, tables, disclosure control, national sums.
//!
//! Raw records (one per person supported in a quarter, and activity counts) stay in the city.
//! A release is built from them as four tables with margins ([`TABLES`]); before anything
//! leaves the city it is protected by the national policy ([`disclosure`]): small counts are
//! suppressed together with enough other cells that none can be worked out from the margins,
//! or integer noise is added with a yearly privacy budget. The hub sums releases into national
//! figures that say which cells are exact, lower bounds, or noisy ([`national`]).

pub mod disclosure;
pub mod documents;
pub mod national;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Sex categories.
pub const SEXES: &[&str] = &["female", "male", "other_or_unknown"];
/// Age bands; the first two are children.
pub const AGE_BANDS: &[&str] = &[
    "0-11", "12-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown",
];
/// Age groups derived from the band.
pub const AGE_GROUPS: &[&str] = &["child", "adult", "unknown"];
/// Citizenship groups.
pub const CITIZENSHIPS: &[&str] = &["swedish", "other_eu", "non_eu", "unknown"];
/// Forms of exploitation.
pub const EXPLOITATIONS: &[&str] = &[
    "sexual",
    "forced_labour",
    "forced_criminality",
    "begging",
    "other",
];
/// Referral sources.
pub const REFERRAL_SOURCES: &[&str] = &[
    "police",
    "social_services",
    "civil_society",
    "business",
    "self_or_other",
];
/// Kinds of activity record.
pub const ACTIVITY_KINDS: &[&str] = &[
    "trainings_held",
    "people_trained",
    "outreach_sessions",
    "network_meetings",
    "businesses_enrolled",
];

/// One person supported or identified in a quarter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupportRecord {
    pub quarter: String,
    pub sex: String,
    pub age_band: String,
    pub citizenship: String,
    pub exploitation: String,
    pub referral_source: String,
    pub person_ref: String,
}

/// A count of activity in a quarter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityRecord {
    pub quarter: String,
    pub kind: String,
    pub count: i64,
}

/// A validation failure, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct InvalidField {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidField {
    InvalidField {
        field,
        message: message.into(),
    }
}

fn one_of(field: &'static str, value: &str, allowed: &[&str]) -> Result<(), InvalidField> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:?} is not one of {}", allowed.join(", ")),
        ))
    }
}

/// The years a quarter or a national query may name.
pub const YEARS: std::ops::RangeInclusive<i32> = 2000..=2100;

/// A quarter in its one canonical form `YYYY-Qn`: four ASCII digits of a year in [`YEARS`], `-Q`
/// and one digit from 1 to 4, nothing else (no sign, no leading zero, no lower-case `q`, no
/// spaces). Every spelling of a quarter maps to at most one accepted string, so the same people
/// cannot be counted under two spellings of one quarter. Returns (year, n).
pub fn parse_quarter(quarter: &str) -> Option<(i32, u8)> {
    let bytes = quarter.as_bytes();
    if bytes.len() != 7 || &bytes[4..6] != b"-Q" {
        return None;
    }
    if !bytes[..4].iter().all(u8::is_ascii_digit) || !(b'1'..=b'4').contains(&bytes[6]) {
        return None;
    }
    let year: i32 = quarter[..4].parse().ok().filter(|y| YEARS.contains(y))?;
    Some((year, bytes[6] - b'0'))
}

/// Checks a year of national figures (the same years quarters may name).
pub fn check_year(year: i32) -> Result<i32, InvalidField> {
    if YEARS.contains(&year) {
        Ok(year)
    } else {
        Err(invalid(
            "year",
            format!(
                "{year} is not a year from {} to {}",
                YEARS.start(),
                YEARS.end()
            ),
        ))
    }
}

/// Checks a period filter: empty (every period), a year `YYYY` or a quarter `YYYY-Qn`.
pub fn check_period(field: &'static str, period: &str) -> Result<(), InvalidField> {
    let year_ok = period.len() == 4
        && period.bytes().all(|b| b.is_ascii_digit())
        && period.parse().is_ok_and(|y: i32| YEARS.contains(&y));
    if period.is_empty() || year_ok || parse_quarter(period).is_some() {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{:?} is not a year YYYY or a quarter YYYY-Qn from {} to {}",
                period.chars().take(40).collect::<String>(),
                YEARS.start(),
                YEARS.end()
            ),
        ))
    }
}

/// Checks a quarter; `today` is (year, month) and a quarter that has not begun is refused.
pub fn check_quarter(quarter: &str, today: (i32, u8)) -> Result<(i32, u8), InvalidField> {
    let (year, q) = parse_quarter(quarter).ok_or_else(|| {
        invalid(
            "quarter",
            format!(
                "{:?} is not a quarter: write it as YYYY-Qn (for example 2026-Q1), with a year from {} to {}",
                quarter.chars().take(40).collect::<String>(),
                YEARS.start(),
                YEARS.end()
            ),
        )
    })?;
    let current_q = (today.1 - 1) / 3 + 1;
    if (year, q) > (today.0, current_q) {
        return Err(invalid("quarter", format!("{quarter} has not begun yet")));
    }
    Ok((year, q))
}

impl SupportRecord {
    /// Checks every field.
    pub fn check(&self, today: (i32, u8)) -> Result<(), InvalidField> {
        check_quarter(&self.quarter, today)?;
        one_of("sex", &self.sex, SEXES)?;
        one_of("age_band", &self.age_band, AGE_BANDS)?;
        one_of("citizenship", &self.citizenship, CITIZENSHIPS)?;
        one_of("exploitation", &self.exploitation, EXPLOITATIONS)?;
        one_of("referral_source", &self.referral_source, REFERRAL_SOURCES)?;
        let chars = self.person_ref.trim().chars().count();
        if chars == 0 || chars > 100 {
            return Err(invalid(
                "person_ref",
                format!("needs 1 to 100 characters; it has {chars}"),
            ));
        }
        Ok(())
    }

    /// The age group of the record's age band.
    pub fn age_group(&self) -> &'static str {
        match self.age_band.as_str() {
            "0-11" | "12-17" => "child",
            "unknown" => "unknown",
            _ => "adult",
        }
    }

    fn value_of(&self, dimension: &str) -> &str {
        match dimension {
            "sex" => &self.sex,
            "age_group" => self.age_group(),
            "citizenship" => &self.citizenship,
            "exploitation" => &self.exploitation,
            "referral_source" => &self.referral_source,
            _ => "",
        }
    }
}

impl ActivityRecord {
    /// Checks every field.
    pub fn check(&self, today: (i32, u8)) -> Result<(), InvalidField> {
        check_quarter(&self.quarter, today)?;
        one_of("kind", &self.kind, ACTIVITY_KINDS)?;
        if self.count < 0 {
            return Err(invalid("count", format!("{} is negative", self.count)));
        }
        if self.count > 1_000_000 {
            return Err(invalid(
                "count",
                format!("{} is more than 1000000", self.count),
            ));
        }
        Ok(())
    }
}

/// A published table: rows by one dimension, columns by another (or none).
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    pub id: &'static str,
    pub rows: &'static str,
    pub cols: Option<&'static str>,
}

/// The tables of every release.
pub const TABLES: [TableSpec; 4] = [
    TableSpec {
        id: "exploitation_by_sex",
        rows: "exploitation",
        cols: Some("sex"),
    },
    TableSpec {
        id: "exploitation_by_age_group",
        rows: "exploitation",
        cols: Some("age_group"),
    },
    TableSpec {
        id: "citizenship_by_sex",
        rows: "citizenship",
        cols: Some("sex"),
    },
    TableSpec {
        id: "referral_source",
        rows: "referral_source",
        cols: None,
    },
];

/// The categories of a dimension.
pub fn categories(dimension: &str) -> &'static [&'static str] {
    match dimension {
        "sex" => SEXES,
        "age_group" => AGE_GROUPS,
        "citizenship" => CITIZENSHIPS,
        "exploitation" => EXPLOITATIONS,
        "referral_source" => REFERRAL_SOURCES,
        _ => &[],
    }
}

/// Where a cell sits in a table; an empty `row` is the column-total row, an empty `col` the
/// row-total column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CellPos {
    pub table: String,
    pub row: String,
    pub col: String,
}

/// What a cell counts, independent of the table it is shown in: the (dimension, category) pairs
/// it is restricted to. Tables that share a margin share the cell (the grand total is `[]`).
pub type CellKey = Vec<(String, String)>;

/// An additive relation between cells: the first is the sum of the others.
pub type Relation = (CellKey, Vec<CellKey>);

impl CellPos {
    /// The cell's canonical key.
    pub fn key(&self, spec: &TableSpec) -> CellKey {
        let mut key = Vec::new();
        if !self.row.is_empty() {
            key.push((spec.rows.to_string(), self.row.clone()));
        }
        if let (Some(cols), false) = (spec.cols, self.col.is_empty()) {
            key.push((cols.to_string(), self.col.clone()));
        }
        key.sort();
        key
    }

    /// Whether the cell is an inner cell (not a total).
    pub fn is_inner(&self, spec: &TableSpec) -> bool {
        !self.row.is_empty() && (spec.cols.is_none() || !self.col.is_empty())
    }
}

/// The spec of a table by id.
pub fn spec(table: &str) -> Option<&'static TableSpec> {
    TABLES.iter().find(|t| t.id == table)
}

/// Every cell of every table, with its exact count from `records`.
pub fn tabulate(records: &[SupportRecord]) -> Vec<(CellPos, i64)> {
    let mut cells = Vec::new();
    for spec in &TABLES {
        let rows = categories(spec.rows);
        let cols: Vec<&str> = spec
            .cols
            .map(categories)
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let count = |row: Option<&str>, col: Option<&str>| {
            records
                .iter()
                .filter(|r| row.is_none_or(|v| r.value_of(spec.rows) == v))
                .filter(|r| col.is_none_or(|v| spec.cols.is_none_or(|d| r.value_of(d) == v)))
                .count() as i64
        };
        let pos = |row: &str, col: &str| CellPos {
            table: spec.id.to_string(),
            row: row.to_string(),
            col: col.to_string(),
        };
        for row in rows {
            for col in &cols {
                cells.push((pos(row, col), count(Some(row), Some(col))));
            }
            cells.push((pos(row, ""), count(Some(row), None)));
        }
        for col in &cols {
            cells.push((pos("", col), count(None, Some(col))));
        }
        cells.push((pos("", ""), count(None, None)));
    }
    cells
}

/// The additive relations between cells that anyone reading the tables knows: each row total
/// is the sum of its row, each column total the sum of its column, the grand total the sum of
/// the row totals and of the column totals. As `(total, parts)` over canonical keys.
pub fn relations() -> Vec<Relation> {
    let mut out = Vec::new();
    for spec in &TABLES {
        let rows = categories(spec.rows);
        let cols: Vec<&str> = spec
            .cols
            .map(categories)
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let key = |row: &str, col: &str| {
            CellPos {
                table: spec.id.to_string(),
                row: row.to_string(),
                col: col.to_string(),
            }
            .key(spec)
        };
        if !cols.is_empty() {
            for row in rows {
                out.push((key(row, ""), cols.iter().map(|c| key(row, c)).collect()));
            }
            for col in &cols {
                out.push((key("", col), rows.iter().map(|r| key(r, col)).collect()));
            }
            out.push((key("", ""), cols.iter().map(|c| key("", c)).collect()));
        }
        out.push((key("", ""), rows.iter().map(|r| key(r, "")).collect()));
    }
    out.sort();
    out.dedup();
    out
}

/// Activity counts of a quarter, summed by kind (every kind present, zero if none).
pub fn activity_totals(records: &[ActivityRecord]) -> BTreeMap<String, i64> {
    let mut totals: BTreeMap<String, i64> =
        ACTIVITY_KINDS.iter().map(|k| (k.to_string(), 0)).collect();
    for record in records {
        *totals.entry(record.kind.clone()).or_default() += record.count;
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sex: &str, age: &str, exploitation: &str) -> SupportRecord {
        SupportRecord {
            quarter: "2026-Q1".into(),
            sex: sex.into(),
            age_band: age.into(),
            citizenship: "non_eu".into(),
            exploitation: exploitation.into(),
            referral_source: "police".into(),
            person_ref: "p".into(),
        }
    }

    #[test]
    fn quarters_are_checked() {
        assert_eq!(check_quarter("2026-Q3", (2026, 11)), Ok((2026, 3)));
        assert!(check_quarter("2027-Q1", (2026, 11))
            .unwrap_err()
            .message
            .contains("not begun"));
        assert!(check_quarter("2026-Q4", (2026, 9)).is_err());
        for bad in [
            "2026Q1",
            "2026-Q5",
            "26-Q1",
            "2026-Q0",
            "",
            "+2026-Q1",
            "02026-Q1",
            "2026-q1",
            "2026-Q01",
            "2026-Q+1",
            " 2026-Q1",
            "2026-Q1 ",
            "1999-Q4",
            "2101-Q1",
            "-2026-Q1",
            "２０２６-Q1",
            "2026-Q１",
            "2026–Q1",
            "2026_Q1",
        ] {
            assert!(check_quarter(bad, (2126, 11)).is_err(), "{bad}");
            assert_eq!(parse_quarter(bad), None, "{bad}");
        }
        assert_eq!(parse_quarter("2100-Q4"), Some((2100, 4)));
        assert_eq!(parse_quarter("2000-Q1"), Some((2000, 1)));
        assert!(check_year(-1).is_err());
        assert!(check_year(2101).is_err());
        assert_eq!(check_year(2026), Ok(2026));
        for good in ["", "2026", "2026-Q2"] {
            assert!(check_period("period", good).is_ok(), "{good}");
        }
        for bad in ["+2026", "02026", "2026-q2", "20", "2026-", "1999"] {
            assert!(check_period("period", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tables_count_records_with_consistent_margins() {
        let records = vec![
            record("female", "12-17", "sexual"),
            record("female", "25-34", "sexual"),
            record("male", "unknown", "begging"),
        ];
        let cells: BTreeMap<CellPos, i64> = tabulate(&records).into_iter().collect();
        let at = |t: &str, r: &str, c: &str| {
            cells[&CellPos {
                table: t.into(),
                row: r.into(),
                col: c.into(),
            }]
        };
        assert_eq!(at("exploitation_by_sex", "sexual", "female"), 2);
        assert_eq!(at("exploitation_by_sex", "", ""), 3);
        assert_eq!(at("exploitation_by_age_group", "sexual", "child"), 1);
        assert_eq!(at("exploitation_by_age_group", "begging", "unknown"), 1);
        assert_eq!(at("referral_source", "police", ""), 3);
        // Every relation holds on the exact counts.
        let by_key: BTreeMap<CellKey, i64> = cells
            .iter()
            .map(|(pos, v)| (pos.key(spec(&pos.table).unwrap()), *v))
            .collect();
        for (total, parts) in relations() {
            assert_eq!(by_key[&total], parts.iter().map(|p| by_key[p]).sum::<i64>());
        }
    }
}
