//! The privacy guard (DESIGN.md promise 7): text bound for a shared document is checked before
//! it is committed, because Automerge never forgets what it once held.
//!
//! Refused: Swedish personal identity and coordination numbers (with a valid checksum), phone
//! numbers, e-mail addresses, street addresses where recognisable, the names of the city's own
//! contact persons, and the words on the city's deny list. The finding names the field and the
//! kind of data, never the data itself, so it can be logged and shown safely.

use std::sync::OnceLock;

use regex::Regex;

/// What kind of personal data was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PersonalIdentityNumber,
    CoordinationNumber,
    PhoneNumber,
    EmailAddress,
    StreetAddress,
    ContactName,
    DeniedWord,
}

impl Kind {
    /// Words for an error message.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::PersonalIdentityNumber => "a personal identity number",
            Kind::CoordinationNumber => "a coordination number",
            Kind::PhoneNumber => "a phone number",
            Kind::EmailAddress => "an e-mail address",
            Kind::StreetAddress => "a street address",
            Kind::ContactName => "the name of one of the city's contact persons",
            Kind::DeniedWord => "a word on the city's deny list",
        }
    }
}

/// A refusal: which field, and what kind of data (never the data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: contains what looks like {}; shared text is kept forever and must not hold personal data", kind.describe())]
pub struct Finding {
    pub field: String,
    pub kind: Kind,
}

/// What the guard knows about the city: names and words that must not be shared.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Full names of the city's contact persons.
    pub contact_names: Vec<String>,
    /// Words an admin put on the deny list.
    pub denied_words: Vec<String>,
}

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("valid pattern"))
}

/// Luhn checksum over the ten digits YYMMDDNNNC.
fn luhn_ok(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let v = u32::from(*d) * if i % 2 == 0 { 2 } else { 1 };
            v / 10 + v % 10
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A personal identity or coordination number in `text`, if any.
fn identity_number(text: &str) -> Option<Kind> {
    static PNR: OnceLock<Regex> = OnceLock::new();
    let re = regex(
        &PNR,
        r"(?:^|[^\d])((?:19|20)?(\d{6})[-+ ]?(\d{4}))(?:[^\d]|$)",
    );
    for caps in re.captures_iter(text) {
        let date = caps.get(2)?.as_str().as_bytes();
        let tail = caps.get(3)?.as_str().as_bytes();
        let digits: Vec<u8> = date.iter().chain(tail.iter()).map(|b| b - b'0').collect();
        let month = digits[2] * 10 + digits[3];
        let day = digits[4] * 10 + digits[5];
        if !(1..=12).contains(&month) || !luhn_ok(&digits) {
            continue;
        }
        if (1..=31).contains(&day) {
            return Some(Kind::PersonalIdentityNumber);
        }
        if (61..=91).contains(&day) {
            return Some(Kind::CoordinationNumber);
        }
    }
    None
}

fn phone_number(text: &str) -> bool {
    static PHONE: OnceLock<Regex> = OnceLock::new();
    // A number starting with + or 0, digits with optional spaces, dashes or parentheses, at
    // least eight digits in all (Swedish numbers have eight to ten).
    let re = regex(
        &PHONE,
        r"(?:^|[^\w+])((?:\+|00)\d[\d \-()]{6,}\d|0\d[\d \-()]{5,}\d)",
    );
    re.captures_iter(text).any(|caps| {
        let digits = caps[1].chars().filter(|c| c.is_ascii_digit()).count();
        (8..=15).contains(&digits)
    })
}

fn email_address(text: &str) -> bool {
    static EMAIL: OnceLock<Regex> = OnceLock::new();
    regex(&EMAIL, r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+").is_match(text)
}

fn street_address(text: &str) -> bool {
    static STREET: OnceLock<Regex> = OnceLock::new();
    regex(
        &STREET,
        r"(?i)\b[\p{L}\-]*(?:gatan|gata|vägen|väg|gränd|gränden|stigen|allén|allé|torget|torg|backen|platsen|street|road)\s+\d{1,4}\s?[a-z]?\b",
    )
    .is_match(text)
}

/// Whether `name` occurs in `text` as whole words, ignoring case.
fn contains_words(text: &str, name: &str) -> bool {
    let name = name.trim();
    if name.chars().count() < 3 {
        return false;
    }
    let pattern = format!(
        r"(?i)(?:^|[^\p{{L}}\p{{N}}]){}(?:[^\p{{L}}\p{{N}}]|$)",
        regex::escape(name)
    );
    Regex::new(&pattern)
        .map(|re| re.is_match(text))
        .unwrap_or(false)
}

impl Guard {
    /// Checks one field of text bound for a shared document.
    pub fn check(&self, field: &str, text: &str) -> Result<(), Finding> {
        let found = |kind| {
            Err(Finding {
                field: field.to_string(),
                kind,
            })
        };
        if let Some(kind) = identity_number(text) {
            return found(kind);
        }
        if email_address(text) {
            return found(Kind::EmailAddress);
        }
        if phone_number(text) {
            return found(Kind::PhoneNumber);
        }
        if street_address(text) {
            return found(Kind::StreetAddress);
        }
        if self.contact_names.iter().any(|n| contains_words(text, n)) {
            return found(Kind::ContactName);
        }
        if self.denied_words.iter().any(|w| contains_words(text, w)) {
            return found(Kind::DeniedWord);
        }
        Ok(())
    }

    /// Checks several fields; the first finding wins.
    pub fn check_all<'a>(
        &self,
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), Finding> {
        fields
            .into_iter()
            .try_for_each(|(field, text)| self.check(field, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Option<Kind> {
        Guard {
            contact_names: vec!["Anna Lindqvist".into()],
            denied_words: vec!["Solgården".into()],
        }
        .check("body", text)
        .err()
        .map(|f| f.kind)
    }

    #[test]
    fn identity_numbers_are_found_only_with_a_valid_checksum() {
        // 811218-9876 is the Tax Agency's example number; its checksum is valid.
        for text in [
            "born 811218-9876 in",
            "19811218-9876",
            "198112189876",
            "8112189876",
            "811218+9876",
        ] {
            assert_eq!(kind(text), Some(Kind::PersonalIdentityNumber), "{text}");
        }
        assert_eq!(
            kind("811218-9875"),
            None,
            "a wrong checksum is not an identity number"
        );
        // A coordination number adds 60 to the day: 81-12-78.
        assert_eq!(kind("811278-9873"), Some(Kind::CoordinationNumber));
        assert_eq!(kind("case 2026-11-28, 15 people"), None);
    }

    #[test]
    fn phone_numbers_emails_and_addresses_are_found() {
        for text in [
            "call 070-123 45 67",
            "+46 70 123 45 67",
            "ring 0701234567",
            "tel (08) 123 456 78",
            "0046701234567",
        ] {
            assert_eq!(kind(text), Some(Kind::PhoneNumber), "{text}");
        }
        assert_eq!(kind("write to anna.l@example.se"), Some(Kind::EmailAddress));
        for text in [
            "she lives at Storgatan 12",
            "Ringvägen 3B",
            "near Kungsgatan 7 a",
        ] {
            assert_eq!(kind(text), Some(Kind::StreetAddress), "{text}");
        }
        for text in [
            "In 2026 we trained 45 people in 3 sessions.",
            "The year 2025-2026 went well",
            "Storgatan is busy",
            "room 101",
        ] {
            assert_eq!(kind(text), None, "{text}");
        }
    }

    #[test]
    fn the_citys_contact_names_and_denied_words_are_found_as_whole_words() {
        assert_eq!(
            kind("Thanks to anna lindqvist for the idea"),
            Some(Kind::ContactName)
        );
        assert_eq!(kind("the Solgården hotel"), Some(Kind::DeniedWord));
        assert_eq!(kind("Annalindqvistsson"), None);
        assert_eq!(kind("A lesson about training"), None);
    }

    #[test]
    fn findings_never_repeat_the_data() {
        let finding = Guard::default()
            .check("title", "call 070-123 45 67")
            .unwrap_err();
        let message = finding.to_string();
        assert!(message.contains("field `title`") && message.contains("phone number"));
        assert!(!message.contains("070"));
    }
}
