//! Exports for integrators: lessons, the register, progress and published statistics as flat
//! tables, written as CSV (RFC 4180) or JSON (an array of objects with the same columns).
//!
//! Everything here is read through the ordinary API with the caller's token, so an export holds
//! exactly what that token may read; the register is read from the city's own node only (it is
//! local and never synchronised). Text cells that a spreadsheet would run as a formula (starting
//! with `=`, `+`, `-`, `@`, a tab or a carriage return) are prefixed with `'` in CSV; JSON keeps
//! every value as it is.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::v1 as pb;

/// One cell of an export.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// No value (a suppressed statistic).
    Empty,
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::Text(text.to_string())
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell::Text(text)
    }
}

impl From<i64> for Cell {
    fn from(value: i64) -> Cell {
        Cell::Int(value)
    }
}

impl From<bool> for Cell {
    fn from(value: bool) -> Cell {
        Cell::Bool(value)
    }
}

/// A flat table: named columns and rows of cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
}

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

impl Export {
    fn new(columns: &[&'static str]) -> Export {
        Export {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// The table in `format`, ending with a newline.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Csv => self.to_csv(),
            Format::Json => format!("{}\n", Value::Array(self.to_json())),
        }
    }

    /// CSV with a header line; lines end with CRLF as RFC 4180 says.
    pub fn to_csv(&self) -> String {
        let mut csv = String::new();
        let header: Vec<String> = self.columns.iter().map(|c| c.to_string()).collect();
        csv.push_str(&header.join(","));
        csv.push_str("\r\n");
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(csv_cell).collect();
            csv.push_str(&cells.join(","));
            csv.push_str("\r\n");
        }
        csv
    }

    /// One JSON object per row, keyed by column.
    pub fn to_json(&self) -> Vec<Value> {
        self.rows
            .iter()
            .map(|row| {
                let mut object = Map::new();
                for (column, cell) in self.columns.iter().zip(row) {
                    let value = match cell {
                        Cell::Text(text) => Value::String(text.clone()),
                        Cell::Int(n) => Value::from(*n),
                        Cell::Float(x) => Value::from(*x),
                        Cell::Bool(b) => Value::Bool(*b),
                        Cell::Empty => Value::Null,
                    };
                    object.insert(column.to_string(), value);
                }
                Value::Object(object)
            })
            .collect()
    }
}

fn csv_cell(cell: &Cell) -> String {
    match cell {
        Cell::Text(text) => {
            let guarded = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                format!("'{text}")
            } else {
                text.clone()
            };
            if guarded.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", guarded.replace('"', "\"\""))
            } else {
                guarded
            }
        }
        Cell::Int(n) => n.to_string(),
        Cell::Float(x) => format!("{x:.2}"),
        Cell::Bool(b) => b.to_string(),
        Cell::Empty => String::new(),
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 in UTC (what a program reads); empty for 0.
fn utc(ms: i64) -> Cell {
    if ms == 0 {
        return Cell::Text(String::new());
    }
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| Cell::Text(t.to_string()))
        .unwrap_or(Cell::Int(ms))
}

/// Lessons, one row each; tags separated by `;`.
pub fn lessons(lessons: &[pb::Lesson], step_titles: &BTreeMap<String, String>) -> Export {
    let mut export = Export::new(&[
        "name",
        "city",
        "title",
        "body",
        "tags",
        "method_step",
        "method_step_title",
        "archived",
        "created",
        "updated",
    ]);
    for l in lessons {
        export.push(vec![
            l.name.as_str().into(),
            l.city.as_str().into(),
            l.title.as_str().into(),
            l.body.as_str().into(),
            l.tags.join(";").into(),
            l.method_step.as_str().into(),
            step_titles
                .get(&l.method_step)
                .cloned()
                .unwrap_or_default()
                .into(),
            l.archived.into(),
            utc(l.create_time_ms),
            utc(l.update_time_ms),
        ]);
    }
    export
}

/// A city's progress through the method, one row per step it started or finished.
pub fn progress(
    city: &str,
    progress: &[pb::StepProgress],
    step_titles: &BTreeMap<String, String>,
) -> Export {
    let mut export = Export::new(&["city", "step", "step_title", "state", "date", "note"]);
    for p in progress {
        export.push(vec![
            city.into(),
            p.step.as_str().into(),
            step_titles.get(&p.step).cloned().unwrap_or_default().into(),
            p.state.as_str().into(),
            p.date.as_str().into(),
            p.note.as_str().into(),
        ]);
    }
    export
}

/// Published statistics: one row per cell of every release, then one per activity count.
/// Previews (drafts) are never exported.
pub fn statistics(releases: &[pb::StatsRelease]) -> Export {
    let mut export = Export::new(&[
        "city", "release", "quarter", "number", "corrects", "mode", "table", "row", "col", "value",
        "status", "sd", "reason",
    ]);
    for r in releases.iter().filter(|r| !r.draft) {
        let head = |table: &str| -> Vec<Cell> {
            vec![
                r.city.as_str().into(),
                r.name.as_str().into(),
                r.quarter.as_str().into(),
                i64::from(r.number).into(),
                r.corrects.as_str().into(),
                r.mode.as_str().into(),
                table.into(),
            ]
        };
        for c in &r.cells {
            let mut row = head(&c.table);
            row.extend([
                c.row.as_str().into(),
                c.col.as_str().into(),
                c.value.map_or(Cell::Empty, Cell::Int),
                c.status.as_str().into(),
                Cell::Float(c.sd),
                c.reason.as_str().into(),
            ]);
            export.push(row);
        }
        for (kind, value) in &r.activity {
            let mut row = head("activity");
            row.extend([
                kind.as_str().into(),
                "".into(),
                Cell::Int(*value),
                "exact".into(),
                Cell::Float(0.0),
                "".into(),
            ]);
            export.push(row);
        }
    }
    export
}

/// The parts of the register, each its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RegisterTable {
    Organisations,
    Groups,
    Contacts,
    Meetings,
    Routine,
}

impl RegisterTable {
    pub const ALL: [RegisterTable; 5] = [
        RegisterTable::Organisations,
        RegisterTable::Groups,
        RegisterTable::Contacts,
        RegisterTable::Meetings,
        RegisterTable::Routine,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RegisterTable::Organisations => "organisations",
            RegisterTable::Groups => "groups",
            RegisterTable::Contacts => "contacts",
            RegisterTable::Meetings => "meetings",
            RegisterTable::Routine => "routine",
        }
    }
}

/// The city's register as read through its own node.
#[derive(Debug, Clone, Default)]
pub struct Register {
    pub organisations: Vec<pb::Organisation>,
    pub groups: Vec<pb::Group>,
    pub contacts: Vec<pb::Contact>,
    pub meetings: Vec<pb::Meeting>,
    pub routine: Vec<pb::RoutineStep>,
}

impl Register {
    fn organisation(&self, name: &str) -> String {
        self.organisations
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.display_name.clone())
            .unwrap_or_default()
    }

    fn organisation_names(&self, names: &[String]) -> String {
        names
            .iter()
            .map(|n| self.organisation(n))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// One part of the register as a table; lists within a cell are separated by `;`.
    pub fn table(&self, table: RegisterTable) -> Export {
        match table {
            RegisterTable::Organisations => {
                let mut export = Export::new(&["name", "display_name", "sector"]);
                for o in &self.organisations {
                    export.push(vec![
                        o.name.as_str().into(),
                        o.display_name.as_str().into(),
                        o.sector.as_str().into(),
                    ]);
                }
                export
            }
            RegisterTable::Groups => {
                let mut export = Export::new(&[
                    "name",
                    "display_name",
                    "description",
                    "organisations",
                    "organisation_names",
                ]);
                for g in &self.groups {
                    export.push(vec![
                        g.name.as_str().into(),
                        g.display_name.as_str().into(),
                        g.description.as_str().into(),
                        g.organisations.join(";").into(),
                        self.organisation_names(&g.organisations).into(),
                    ]);
                }
                export
            }
            RegisterTable::Contacts => {
                let mut export = Export::new(&[
                    "name",
                    "full_name",
                    "role",
                    "organisation",
                    "organisation_name",
                    "phone",
                    "email",
                ]);
                for c in &self.contacts {
                    export.push(vec![
                        c.name.as_str().into(),
                        c.full_name.as_str().into(),
                        c.role.as_str().into(),
                        c.organisation.as_str().into(),
                        self.organisation(&c.organisation).into(),
                        c.phone.as_str().into(),
                        c.email.as_str().into(),
                    ]);
                }
                export
            }
            RegisterTable::Meetings => {
                let mut export = Export::new(&[
                    "name",
                    "date",
                    "organisations",
                    "organisation_names",
                    "agenda",
                    "notes",
                    "decisions",
                    "open_follow_ups",
                ]);
                for m in &self.meetings {
                    export.push(vec![
                        m.name.as_str().into(),
                        m.date.as_str().into(),
                        m.organisations.join(";").into(),
                        self.organisation_names(&m.organisations).into(),
                        m.agenda.as_str().into(),
                        m.notes.as_str().into(),
                        m.decisions.join(";").into(),
                        (m.follow_ups.iter().filter(|f| !f.done).count() as i64).into(),
                    ]);
                }
                export
            }
            RegisterTable::Routine => {
                let mut export = Export::new(&[
                    "position",
                    "description",
                    "organisation",
                    "organisation_name",
                    "how_to_reach",
                ]);
                for (i, step) in self.routine.iter().enumerate() {
                    export.push(vec![
                        (i as i64 + 1).into(),
                        step.description.as_str().into(),
                        step.organisation.as_str().into(),
                        self.organisation(&step.organisation).into(),
                        step.how_to_reach.as_str().into(),
                    ]);
                }
                export
            }
        }
    }

    /// Every part as JSON: an object with one array per table.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        for table in RegisterTable::ALL {
            object.insert(
                table.as_str().to_string(),
                Value::Array(self.table(table).to_json()),
            );
        }
        Value::Object(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it_and_defuses_formulas() {
        let mut export = Export::new(&["a", "b", "c", "d"]);
        export.push(vec![
            "plain".into(),
            "comma, \"quoted\"\nline".into(),
            "=HYPERLINK(\"x\")".into(),
            Cell::Empty,
        ]);
        export.push(vec![
            Cell::Int(-3),
            Cell::Bool(true),
            "-1".into(),
            "å".into(),
        ]);
        assert_eq!(
            export.to_csv(),
            "a,b,c,d\r\nplain,\"comma, \"\"quoted\"\"\nline\",\"'=HYPERLINK(\"\"x\"\")\",\r\n\
             -3,true,'-1,å\r\n"
        );
        let json = export.to_json();
        assert_eq!(
            json[0]["c"], "=HYPERLINK(\"x\")",
            "JSON keeps values as they are"
        );
        assert_eq!(json[0]["d"], Value::Null);
        assert_eq!(json[1]["a"], -3);
    }

    #[test]
    fn statistics_leave_out_previews_and_keep_suppressed_cells_empty() {
        let cell = |value| pb::StatsCell {
            table: "referral_source".into(),
            row: "police".into(),
            col: String::new(),
            value,
            status: if value.is_some() {
                "exact"
            } else {
                "suppressed"
            }
            .into(),
            sd: 0.0,
            reason: String::new(),
        };
        let release = |draft, value| pb::StatsRelease {
            name: "cities/lund/stats/2026-Q1-r1".into(),
            city: "lund".into(),
            quarter: "2026-Q1".into(),
            number: 1,
            mode: "suppression".into(),
            cells: vec![cell(value)],
            activity: [("trainings_held".to_string(), 2)].into(),
            draft,
            ..Default::default()
        };
        let export = statistics(&[release(false, None), release(true, Some(3))]);
        assert_eq!(export.rows.len(), 2, "one cell and one activity count");
        assert_eq!(export.rows[0][9], Cell::Empty);
        assert_eq!(export.rows[1][6], Cell::Text("activity".into()));
    }
}
