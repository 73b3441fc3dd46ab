//! Dates in Europe/Stockholm time written the Swedish way (`2 nov. 2026`), and numbers with
//! Swedish digit grouping (`12 345`).

use jiff::tz::TimeZone;
use jiff::Timestamp;
use num_format::{Locale, ToFormattedString};

use crate::i18n::Tr;

fn stockholm() -> TimeZone {
    static ZONE: std::sync::OnceLock<TimeZone> = std::sync::OnceLock::new();
    ZONE.get_or_init(|| {
        TimeZone::get("Europe/Stockholm").expect("the bundled time zone database has Stockholm")
    })
    .clone()
}

/// The civil date and time in Stockholm of milliseconds since the Unix epoch.
fn civil(ms: i64) -> Option<jiff::civil::DateTime> {
    let ts = Timestamp::from_millisecond(ms).ok()?;
    Some(ts.to_zoned(stockholm()).datetime())
}

/// `2 nov. 2026` (Swedish) or `2 Nov 2026` (English); empty for 0 or an impossible time.
pub fn date(t: &Tr, ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    let Some(dt) = civil(ms) else {
        return String::new();
    };
    t.arg_date(dt.day(), dt.month(), dt.year())
}

/// `2 nov. 2026 14:05`, Stockholm time.
pub fn date_time(t: &Tr, ms: i64) -> String {
    let Some(dt) = civil(ms).filter(|_| ms > 0) else {
        return String::new();
    };
    format!(
        "{} {:02}:{:02}",
        t.arg_date(dt.day(), dt.month(), dt.year()),
        dt.hour(),
        dt.minute()
    )
}

/// A `YYYY-MM-DD` date as written in the interface; the text unchanged if it is no date.
pub fn iso_date(t: &Tr, text: &str) -> String {
    match text.parse::<jiff::civil::Date>() {
        Ok(d) => t.arg_date(d.day(), d.month(), d.year()),
        Err(_) => text.to_string(),
    }
}

/// The ISO date `YYYY-MM-DD` in Stockholm of milliseconds since the epoch.
pub fn iso_day(ms: i64) -> String {
    civil(ms)
        .map(|dt| dt.date().to_string())
        .unwrap_or_default()
}

/// Today in Stockholm, `YYYY-MM-DD`.
pub fn today() -> String {
    Timestamp::now().to_zoned(stockholm()).date().to_string()
}

/// A whole number with Swedish grouping: `12 345` (a no-break space between groups).
pub fn number(n: i64) -> String {
    n.to_formatted_string(&Locale::sv)
}

impl Tr {
    /// A date from its parts in the words of the language (`date = { $day } { $month } { $year }`).
    pub fn arg_date(&self, day: i8, month: i8, year: i16) -> String {
        let month = self.get(&format!("month-{month}"));
        let mut args = fluent_bundle::FluentArgs::new();
        args.set("day", day.to_string());
        args.set("month", month);
        args.set("year", year.to_string());
        self.format_with("date", &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::{Lang, Tr};

    #[test]
    fn dates_are_swedish_in_stockholm_time() {
        let sv = Tr::new(Lang::Sv);
        // 2026-11-01T23:30:00Z is already 2 November in Stockholm (UTC+1 in winter).
        let ms = 1_793_575_800_000;
        assert_eq!(date(&sv, ms), "2 nov. 2026");
        assert_eq!(date_time(&sv, ms), "2 nov. 2026 00:30");
        assert_eq!(date(&Tr::new(Lang::En), ms), "2 Nov 2026");
        // Summer time: 2026-07-01T22:15Z is 00:15 on 2 July in Stockholm (UTC+2).
        assert_eq!(date_time(&sv, 1_782_944_100_000), "2 juli 2026 00:15");
        assert_eq!(iso_date(&sv, "2026-03-05"), "5 mars 2026");
        assert_eq!(iso_date(&sv, "not a date"), "not a date");
        assert_eq!(date(&sv, 0), "");
    }

    #[test]
    fn numbers_have_swedish_grouping() {
        assert_eq!(number(7), "7");
        assert_eq!(number(12_345).replace('\u{a0}', " "), "12 345");
        // Swedish typography writes a real minus sign.
        assert_eq!(
            number(-1_234_567).replace('\u{a0}', " "),
            "\u{2212}1 234 567"
        );
    }
}
