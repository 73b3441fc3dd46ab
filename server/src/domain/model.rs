//! What every domain model shares: the typed error a model returns ([`ModelError`]), the
//! checks of what a client wrote (lengths, dates, resource names, update masks), quoting a
//! client's value in an error, and the clock.
//!
//! Models (lessons, register, method, progress, directory, signals) use only this and the
//! layers below it; they know nothing of gRPC. The API maps a [`ModelError`] to a status in one
//! place (`impl From<ModelError> for tonic::Status` in `api`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Why a model refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The request is wrong as written (a field too long, a date in the future…).
    #[error("{0}")]
    Invalid(String),
    /// A record the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the state it needs does not hold.
    #[error("{0}")]
    Precondition(String),
    /// Storing the change failed; nothing was acknowledged.
    #[error("{0}")]
    Storage(String),
    /// Automerge refused an operation on a document (a bug or damaged data, not bad input).
    #[error("document: {0}")]
    Document(#[from] automerge::AutomergeError),
}

/// `Invalid` naming the field: ``field `{field}`: {message}``.
pub fn invalid(field: &str, message: impl std::fmt::Display) -> ModelError {
    ModelError::Invalid(format!("field `{field}`: {message}"))
}

/// `NotFound` for a resource name.
pub fn not_found(name: &str) -> ModelError {
    ModelError::NotFound(format!("{name} does not exist"))
}

/// Maps a document error (kept for `map_err`, reads better than `ModelError::from`).
pub fn doc_error(err: automerge::AutomergeError) -> ModelError {
    ModelError::Document(err)
}

/// Longest part of a client's value an error message repeats (characters).
pub const MAX_QUOTED_CHARS: usize = 100;

/// A client's value for an error message: quoted, cut after [`MAX_QUOTED_CHARS`] characters,
/// and never repeated at all when it looks like personal data.
pub fn quote(value: &str) -> String {
    if let Some(kind) = crate::domain::privacy::looks_personal(value) {
        return format!(
            "(the value is not repeated: it looks like {})",
            kind.describe()
        );
    }
    let chars = value.chars().count();
    if chars <= MAX_QUOTED_CHARS {
        format!("{value:?}")
    } else {
        let cut: String = value.chars().take(MAX_QUOTED_CHARS).collect();
        format!("{cut:?}… ({chars} characters)")
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A short random resource id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

/// The id in a resource name `{collection}/{id}`, or an error naming `field`.
pub fn parse_name(name: &str, collection: &str, field: &str) -> Result<String, ModelError> {
    match name
        .strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(id) if !id.is_empty() && !id.contains('/') && id.len() <= 64 => Ok(id.to_string()),
        _ => Err(invalid(
            field,
            format!("{} is not of the form {collection}/{{id}}", quote(name)),
        )),
    }
}

/// Checks an update mask against the fields that may be updated; empty means all of them.
pub fn update_mask(mask: Vec<String>, allowed: &[&str]) -> Result<Vec<String>, ModelError> {
    if mask.is_empty() {
        return Ok(allowed.iter().map(|f| f.to_string()).collect());
    }
    for path in &mask {
        if !allowed.contains(&path.as_str()) {
            return Err(invalid(
                "update_mask",
                format!(
                    "{} cannot be updated; use {}",
                    quote(path),
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(mask)
}

/// The latest date that is "today" somewhere on Earth (UTC+14). A date a person types is
/// their own local date: just after midnight in Stockholm it is still yesterday in UTC, and
/// that person's today must not be refused as a date in the future.
pub fn latest_today() -> time::Date {
    (time::OffsetDateTime::now_utc() + time::Duration::hours(14)).date()
}

/// Checks a `YYYY-MM-DD` date; `not_future` refuses dates after today in every time zone
/// (see [`latest_today`]).
pub fn check_date(field: &str, value: &str, not_future: bool) -> Result<(), ModelError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(value, &format).map_err(|_| {
        invalid(
            field,
            format!("{} is not a date of the form YYYY-MM-DD", quote(value)),
        )
    })?;
    if not_future && date > latest_today() {
        return Err(invalid(field, format!("{value} is in the future")));
    }
    Ok(())
}

/// Today's date, `YYYY-MM-DD` (UTC).
pub fn today() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::now_utc()
        .date()
        .format(&format)
        .unwrap_or_default()
}

/// Checks a text field's length in characters.
pub fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<(), ModelError> {
    let chars = value.trim().chars().count();
    if chars < min {
        return Err(invalid(field, "must not be empty"));
    }
    if chars > max {
        return Err(invalid(
            field,
            format!("has {chars} characters; at most {max} are allowed"),
        ));
    }
    Ok(())
}

/// Deletes `{collection}/{id}` (named `name` in errors), or answers `NotFound`.
pub fn delete_or_not_found(
    tx: &mut automerge::transaction::Transaction<'_>,
    collection: &str,
    id: &str,
    name: &str,
) -> Result<(), ModelError> {
    if crate::domain::docmodel::delete_record(tx, collection, id)? {
        Ok(())
    } else {
        Err(not_found(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ymd(date: time::Date) -> String {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        date.format(&format).unwrap()
    }

    #[test]
    fn today_in_stockholm_and_further_east_is_not_the_future() {
        let now = time::OffsetDateTime::now_utc();
        // Stockholm in winter and summer (UTC+1, UTC+2), then further east up to UTC+14.
        for hours in [1, 2, 10, 14] {
            let local_today = ymd((now + time::Duration::hours(hours)).date());
            assert!(
                check_date("date", &local_today, true).is_ok(),
                "{local_today} (today at UTC+{hours}) was refused"
            );
        }
    }

    #[test]
    fn a_date_after_today_everywhere_is_refused() {
        let tomorrow_everywhere = latest_today().next_day().unwrap();
        let error = check_date("date", &ymd(tomorrow_everywhere), true).unwrap_err();
        assert!(error.to_string().contains("in the future"), "{error:?}");
        assert!(check_date("date", &ymd(tomorrow_everywhere), false).is_ok());
    }

    #[test]
    fn errors_name_the_field_and_quote_at_most_a_hundred_characters() {
        let long = "x".repeat(5_000);
        let error = parse_name(&long, "lessons", "name").unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("field `name`: "), "{text}");
        assert!(text.len() < 300, "{} characters", text.len());
        assert!(matches!(
            check_len("title", " ", 1, 10),
            Err(ModelError::Invalid(_))
        ));
    }
}
