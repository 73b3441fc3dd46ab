//! The privacy guard (DESIGN.md promise 7): text bound for a shared document is checked as it
//! will stand after the edit, before it is committed, because Automerge never forgets what it
//! once held.
//!
//! Refused: Swedish personal identity and coordination numbers (with a valid checksum in any
//! spelling, and date-shaped numbers written like one even with a wrong check digit), phone
//! numbers, e-mail addresses (also spelled out: `anna at example dot se`), street addresses
//! (except right after the name of a public office), the names of the city's own contact
//! persons, and the words on the city's deny list. A finding names the field and the kind of
//! data, never the data itself, so it can be logged and shown safely.
//!
//! Every text is first normalised ([`normalize`]): Unicode compatibility decomposition (so
//! full-width digits are digits), combining marks dropped (diacritics folded: `Åsa` → `asa`),
//! zero-width, bidi and other invisible characters removed, line breaks and other spaces made
//! plain spaces, lower case. The matchers then work on that text only.
//!
//! [`check_change`] is the choke point: the federation's `SyncHandle::edit_at` calls it for every
//! edit of every shareable document with the document as merged after the edit, and the change
//! it made; it checks every string value and text the change wrote or altered.
//!
//! The guard is pure: no I/O. A city builds it once per version of its register
//! ([`GuardCache`]); building compiles one Aho-Corasick automaton over every contact name and
//! deny-list word, so checking a text costs one pass per matcher, whatever the number of names.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use automerge::{Automerge, ObjId, ObjType, Prop, ReadDoc, ScalarValueRef, Value, ValueRef};
use regex::Regex;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

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
    /// More text than the guard reads ([`MAX_GUARDED_CHARS`]); refused unread.
    TooLong,
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
            Kind::TooLong => "more text than the privacy guard reads",
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

/// Largest text the guard reads (characters); the API's own limits are far lower, so only a
/// document model that forgot its limit meets this, and then the text is refused unread.
pub const MAX_GUARDED_CHARS: usize = 1_000_000;

/// What the guard knows about the city: names and words that must not be shared, compiled
/// into one automaton.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Every contact name and deny-list word, normalised into words separated by one space.
    names: Option<AhoCorasick>,
    /// The kind of each pattern of `names`, by pattern index.
    kinds: Vec<Kind>,
}

impl Guard {
    /// The built-in checks alone (a hub, which keeps no register).
    pub fn builtin() -> Arc<Guard> {
        static BUILTIN: OnceLock<Arc<Guard>> = OnceLock::new();
        BUILTIN.get_or_init(|| Arc::new(Guard::default())).clone()
    }

    /// A guard for a city's contact names and deny list. Names are matched as whole words in
    /// normalised text, also in the possessive (`Annas`), and two-word names also reversed
    /// (`Lindqvist, Anna`). Entries shorter than three characters are ignored.
    pub fn new(contact_names: &[String], denied_words: &[String]) -> Guard {
        let mut patterns: Vec<String> = Vec::new();
        let mut kinds: Vec<Kind> = Vec::new();
        let mut seen = HashSet::new();
        let mut add = |pattern: String, kind: Kind| {
            if pattern.chars().count() >= 3 && seen.insert(pattern.clone()) {
                patterns.push(pattern);
                kinds.push(kind);
            }
        };
        for name in contact_names {
            let key = words_key(&normalize(name));
            let parts: Vec<&str> = key.split(' ').collect();
            if parts.len() == 2 {
                add(format!("{} {}", parts[1], parts[0]), Kind::ContactName);
            }
            add(key, Kind::ContactName);
        }
        for word in denied_words {
            add(words_key(&normalize(word)), Kind::DeniedWord);
        }
        let names = if patterns.is_empty() {
            None
        } else {
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::Standard)
                .build(&patterns)
                .ok()
        };
        Guard { names, kinds }
    }

    /// Checks one field of text bound for a shared document.
    pub fn check(&self, field: &str, text: &str) -> Result<(), Finding> {
        match self.scan(text) {
            None => Ok(()),
            Some(kind) => Err(Finding {
                field: field.to_string(),
                kind,
            }),
        }
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

    /// The kind of personal data in `text`, if any.
    pub fn scan(&self, text: &str) -> Option<Kind> {
        if text.len() > MAX_GUARDED_CHARS * 4 || text.chars().count() > MAX_GUARDED_CHARS {
            // Refused unread rather than read at any cost.
            return Some(Kind::TooLong);
        }
        let normal = normalize(text);
        let normal = blank_hex_ids(&normal);
        builtin_scan(&normal).or_else(|| self.names_in(&normal))
    }

    fn names_in(&self, normal: &str) -> Option<Kind> {
        let automaton = self.names.as_ref()?;
        let key = words_key(normal);
        let bytes = key.as_bytes();
        let boundary_before = |start: usize| start == 0 || bytes[start - 1] == b' ';
        let boundary_after = |end: usize| {
            end == bytes.len()
                || bytes[end] == b' '
                // The possessive: `Annas`, `Lindqvists`.
                || (bytes[end] == b's' && (end + 1 == bytes.len() || bytes[end + 1] == b' '))
        };
        automaton
            .find_overlapping_iter(&key)
            .find(|m| boundary_before(m.start()) && boundary_after(m.end()))
            .map(|m| self.kinds[m.pattern().as_usize()])
    }
}

/// The built-in checks alone, on `text` (for errors that must not repeat personal data).
pub fn looks_personal(text: &str) -> Option<Kind> {
    Guard::builtin().scan(text)
}

/// Caches a city's guard per version of its register, so the automaton is built once per
/// change of the contact names or deny list and shared by every edit.
#[derive(Default)]
pub struct GuardCache {
    current: Mutex<Option<(String, Arc<Guard>)>>,
}

impl GuardCache {
    /// The guard cached last (the built-in checks alone before any).
    pub fn current(&self) -> Arc<Guard> {
        match self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some((_, guard)) => guard.clone(),
            None => Guard::builtin(),
        }
    }

    /// The guard for register version `version`, built with `build` if the cache holds another.
    pub fn get(&self, version: &str, build: impl FnOnce() -> Guard) -> Arc<Guard> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match current.as_ref() {
            Some((cached, guard)) if cached == version => guard.clone(),
            _ => {
                let guard = Arc::new(build());
                *current = Some((version.to_string(), guard.clone()));
                guard
            }
        }
    }
}

/// Checks every string value and text that `change` wrote or altered in `doc`, as `doc` holds
/// it now (after the change and its merge with everything else the document holds). The field
/// named in a finding is the document key the text sits under (`body`, `display_name`, `tags`).
pub fn check_change(
    doc: &Automerge,
    change: &automerge::Change,
    guard: &Guard,
) -> Result<(), Finding> {
    // Each map key and each sequence the change touched, once (a 4 KB text is 4,096
    // operations on one object), read from the change's columns.
    let touched = sfs_sync::change_ops::touched(change);
    for (obj, key) in &touched.keys {
        let Some(obj) = obj.in_doc(doc) else {
            continue;
        };
        // A key a client chose is shared data too; it is named by where it sits.
        guard.check(&field_of(doc, &obj), key)?;
        check_every_value(doc, &obj, key.as_str(), key, guard)?;
    }
    for obj in &touched.sequences {
        let Some(obj) = obj.in_doc(doc) else {
            continue;
        };
        match doc.object_type(&obj) {
            Ok(ObjType::Text) => {
                let text = doc.text(&obj).unwrap_or_default();
                guard.check(&field_of(doc, &obj), &text)?;
            }
            Ok(ObjType::List) => {
                let field = field_of(doc, &obj);
                for item in doc.list_range(&obj, ..) {
                    if item.conflict {
                        check_every_value(doc, &obj, item.index, &field, guard)?;
                    } else if let ValueRef::Scalar(ScalarValueRef::Str(text)) = &item.value {
                        guard.check(&field, text)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks every string value at `prop` of `obj`, conflicting ones included: a value that lost
/// a conflict still leaves the city in the change.
fn check_every_value(
    doc: &Automerge,
    obj: &ObjId,
    prop: impl Into<Prop>,
    field: &str,
    guard: &Guard,
) -> Result<(), Finding> {
    for (value, _) in doc.get_all(obj, prop).unwrap_or_default() {
        if let Value::Scalar(scalar) = &value {
            if let Some(text) = scalar.as_str() {
                guard.check(field, text)?;
            }
        }
    }
    Ok(())
}

/// The nearest map key above `obj` (the field a text or list sits under).
fn field_of(doc: &Automerge, obj: &ObjId) -> String {
    if let Ok(parents) = doc.parents(obj) {
        for parent in parents {
            if let Prop::Map(key) = parent.prop {
                return key;
            }
        }
    }
    "(document root)".to_string()
}

/// Normalises text before any matching: compatibility decomposition, combining marks
/// (diacritics) dropped, invisible characters removed, every space or control character made
/// one plain space, dashes and slashes unified, lower case.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.nfkd() {
        if is_combining_mark(c) || is_invisible(c) {
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            out.push(' ');
            continue;
        }
        match c {
            'ø' | 'Ø' => out.push('o'),
            'æ' | 'Æ' => out.push_str("ae"),
            'ß' => out.push_str("ss"),
            'đ' | 'Đ' | 'ð' | 'Ð' => out.push('d'),
            'ł' | 'Ł' => out.push('l'),
            'þ' | 'Þ' => out.push_str("th"),
            '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' => out.push('-'),
            '\u{2044}' | '\u{2215}' => out.push('/'),
            '\u{00B7}' | '\u{2022}' | '\u{2024}' => out.push('.'),
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// Characters that show nothing: zero-width, bidi controls, soft hyphen, variation selectors,
/// fillers and tags.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E007F}')
}

/// Normalised text as words of letters and digits separated by single spaces.
fn words_key(normal: &str) -> String {
    let mut key = String::with_capacity(normal.len());
    for c in normal.chars() {
        if c.is_alphanumeric() {
            key.push(c);
        } else if !key.is_empty() && !key.ends_with(' ') {
            key.push(' ');
        }
    }
    if key.ends_with(' ') {
        key.pop();
    }
    key
}

/// The pattern in `cell`, compiled at its first use.
pub(crate) fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("valid pattern"))
}

/// Machine identifiers (record ids, digests, signatures: 16 or more hex characters with
/// letters and digits) are blanked, so a digit run inside one is not taken for a number.
fn blank_hex_ids(normal: &str) -> Cow<'_, str> {
    static HEX: OnceLock<Regex> = OnceLock::new();
    let re = regex(&HEX, r"\b[0-9a-f]{16,}\b");
    re.replace_all(normal, |caps: &regex::Captures<'_>| {
        let token = &caps[0];
        let letters = token.bytes().any(|b| b.is_ascii_alphabetic());
        let digits = token.bytes().any(|b| b.is_ascii_digit());
        if letters && digits {
            "#".to_string()
        } else {
            token.to_string()
        }
    })
}

/// The built-in checks on normalised text.
fn builtin_scan(normal: &str) -> Option<Kind> {
    if !normal.bytes().any(|b| b.is_ascii_digit()) {
        return email_address(normal).then_some(Kind::EmailAddress);
    }
    let groups = digit_groups(normal);
    let numbers = identity_numbers(normal, &groups);
    if let Some(kind) = numbers.valid {
        return Some(kind);
    }
    if email_address(normal) {
        return Some(Kind::EmailAddress);
    }
    if phone_number(normal) {
        return Some(Kind::PhoneNumber);
    }
    if let Some(kind) = numbers.mistyped {
        return Some(kind);
    }
    if street_address(normal) {
        return Some(Kind::StreetAddress);
    }
    None
}

/// A maximal run of ASCII digits, by byte range.
#[derive(Debug, Clone, Copy)]
struct Group {
    start: usize,
    end: usize,
}

impl Group {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

fn digit_groups(text: &str) -> Vec<Group> {
    let bytes = text.as_bytes();
    let mut groups = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            groups.push(Group { start, end: i });
        } else {
            i += 1;
        }
    }
    groups
}

/// The characters between two groups, when they join the groups into one number: one to
/// three of `allowed` (spaces, dashes, dots, slashes, plus signs).
fn joint<'a>(text: &'a str, a: &Group, b: &Group, allowed: &str) -> Option<&'a str> {
    let gap = &text[a.end..b.start];
    (!gap.is_empty() && gap.len() <= 3 && gap.chars().all(|c| allowed.contains(c))).then_some(gap)
}

struct IdentityNumbers {
    /// A number with a valid checksum.
    valid: Option<Kind>,
    /// A date-shaped number written as one (`YYMMDD-NNNN`, ten or twelve digits) whose check
    /// digit is wrong: someone's mistyped number.
    mistyped: Option<Kind>,
}

/// Personal identity and coordination numbers in every spelling: ten or twelve digits, the
/// date as one group or as `YY MM DD` / `YYYY-MM-DD`, then the last four digits (also as
/// `NN NN`), joined by spaces, dashes, dots, slashes or `+`.
fn identity_numbers(text: &str, groups: &[Group]) -> IdentityNumbers {
    const SEPARATORS: &str = " -./+";
    let digits = |g: &Group| &text[g.start..g.end];
    let mut found = IdentityNumbers {
        valid: None,
        mistyped: None,
    };
    let mut judge = |number: String, strong: bool| {
        if let Some((kind, checksum_ok)) = identity_kind(&number) {
            if checksum_ok {
                found.valid.get_or_insert(kind);
            } else if strong {
                found.mistyped.get_or_insert(kind);
            }
        }
    };
    for i in 0..groups.len() {
        let first = &groups[i];
        if matches!(first.len(), 10 | 12) {
            judge(digits(first).to_string(), true);
        }
        // (groups taken for the date, the date's digits, written with dashes only)
        let mut dates: Vec<(usize, String, bool)> = Vec::new();
        if matches!(first.len(), 6 | 8) {
            dates.push((1, digits(first).to_string(), true));
        }
        if i + 2 < groups.len() && matches!(first.len(), 2 | 4) {
            let (b, c) = (&groups[i + 1], &groups[i + 2]);
            if b.len() == 2 && c.len() == 2 {
                if let (Some(j1), Some(j2)) = (
                    joint(text, first, b, SEPARATORS),
                    joint(text, b, c, SEPARATORS),
                ) {
                    dates.push((
                        3,
                        format!("{}{}{}", digits(first), digits(b), digits(c)),
                        j1 == "-" && j2 == "-",
                    ));
                }
            }
        }
        for (taken, date, dashed) in dates {
            let j = i + taken;
            let Some(tail) = groups.get(j) else { continue };
            let Some(sep) = joint(text, &groups[j - 1], tail, SEPARATORS) else {
                continue;
            };
            let strong_sep = dashed && (sep == "-" || sep == "+");
            if tail.len() == 4 {
                judge(format!("{date}{}", digits(tail)), strong_sep);
            } else if let Some(next) = groups.get(j + 1) {
                let pair = (tail.len(), next.len());
                if (pair == (2, 2) || pair == (3, 1)) && joint(text, tail, next, " -").is_some() {
                    judge(format!("{date}{}{}", digits(tail), digits(next)), false);
                }
            }
        }
    }
    found
}

/// The kind of a ten- or twelve-digit number shaped like an identity number (a real date, or
/// a coordination number's day + 60), and whether its checksum holds.
fn identity_kind(number: &str) -> Option<(Kind, bool)> {
    let number = match number.len() {
        12 if matches!(&number[..2], "18" | "19" | "20") => &number[2..],
        10 => number,
        _ => return None,
    };
    let d: Vec<u8> = number.bytes().map(|b| b - b'0').collect();
    let month = d[2] * 10 + d[3];
    let day = d[4] * 10 + d[5];
    if !(1..=12).contains(&month) {
        return None;
    }
    let kind = match day {
        1..=31 => Kind::PersonalIdentityNumber,
        61..=91 => Kind::CoordinationNumber,
        _ => return None,
    };
    Some((kind, luhn_ok(&d)))
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

/// Phone numbers: `0` and 7 to 9 more digits, or `+`/`00` and a country code with 9 to 13
/// digits in all, in groups joined by spaces, dashes, dots, slashes or parentheses. Each group
/// that can start a number is tried, so numbers written one after the other are each found.
/// Dates are taken out first, so `2025-01-15 10 000` is not a number.
fn phone_number(normal: &str) -> bool {
    static DATES: OnceLock<Regex> = OnceLock::new();
    let dates = regex(
        &DATES,
        r"\b(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4})\b",
    );
    let text = blank_clock_times(&dates.replace_all(normal, "d"));
    let groups = digit_groups(&text);
    const SEPARATORS: &str = " -./()";
    let bytes = text.as_bytes();
    for (i, first) in groups.iter().enumerate() {
        let head = &text[first.start..first.end];
        let plus = first.start > 0 && bytes[first.start - 1] == b'+';
        let (mut digits, range) = if plus && !head.starts_with('0') {
            (first.len(), 9..=13)
        } else if head.starts_with("00") && first.len() >= 4 {
            (first.len() - 2, 9..=13)
        } else if head.starts_with('0') && first.len() >= 2 && !head.starts_with("00") {
            (first.len(), 8..=10)
        } else {
            continue;
        };
        if range.contains(&digits) {
            return true;
        }
        let mut j = i;
        while let Some(next) = groups.get(j + 1) {
            if joint(&text, &groups[j], next, SEPARATORS).is_none() {
                break;
            }
            digits += next.len();
            if digits > *range.end() {
                break;
            }
            if range.contains(&digits) {
                return true;
            }
            j += 1;
        }
    }
    false
}

/// Clock times (`08.00`, `16:30`) made a letter, unless joined to digits before them
/// (`070.123.12.34` stays a number).
fn blank_clock_times(text: &str) -> String {
    static TIME: OnceLock<Regex> = OnceLock::new();
    let time = regex(&TIME, r"\b(?:[01]?\d|2[0-3])[:.][0-5]\d\b");
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for m in time.find_iter(text) {
        let joined = m.start() >= 2
            && b" -./".contains(&bytes[m.start() - 1])
            && bytes[m.start() - 2].is_ascii_digit();
        if joined {
            continue;
        }
        out.push_str(&text[last..m.start()]);
        out.push('t');
        last = m.end();
    }
    out.push_str(&text[last..]);
    out
}

/// E-mail addresses, also with `@` spelled out (`(at)`, `[at]`, `snabel-a`, and a plain ` at `
/// when the domain's dots are spelled out too or the local part has a dot) and dots spelled
/// out (`dot`, `punkt`).
fn email_address(normal: &str) -> bool {
    static PLAIN_AT: OnceLock<Regex> = OnceLock::new();
    static AT: OnceLock<Regex> = OnceLock::new();
    static DOT: OnceLock<Regex> = OnceLock::new();
    static EMAIL: OnceLock<Regex> = OnceLock::new();
    let plain_at = regex(
        &PLAIN_AT,
        r"\b[a-z0-9_%+-]+(?:[._][a-z0-9_%+-]+)* at [a-z0-9-]+(?:(?: dot | punkt |\s*[(\[{<]\s*(?:dot|punkt)\s*[)\]}>]\s*)[a-z0-9-]+)+\b|\b[a-z0-9_%+-]+[._][a-z0-9._%+-]+ at [a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b",
    );
    if plain_at.is_match(normal) {
        return true;
    }
    let at = regex(
        &AT,
        r"\s*(?:[(\[{<]\s*(?:at|snabel-?a)\s*[)\]}>]|\bsnabel-?a\b|@)\s*",
    );
    let dot = regex(
        &DOT,
        r"\s*[(\[{<]\s*(?:dot|punkt)\s*[)\]}>]\s*|\s+(?:dot|punkt)\s+|\s+\.\s+",
    );
    let email = regex(
        &EMAIL,
        r"[a-z0-9_%+-]+(?:\.[a-z0-9_%+-]+)*@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}",
    );
    if !at.is_match(normal) {
        return false;
    }
    let text = at.replace_all(normal, "@");
    let text = dot.replace_all(&text, ".");
    email.is_match(&text)
}

/// A street name (a word ending in a Swedish street suffix) and a house number, unless the
/// name of a public office comes just before it on the same line (`Polisen, Porslinsgatan 3`).
fn street_address(normal: &str) -> bool {
    static STREET: OnceLock<Regex> = OnceLock::new();
    static OFFICE: OnceLock<Regex> = OnceLock::new();
    let street = regex(
        &STREET,
        r"\b(?:[a-z][a-z-]+ (?:street|road|avenue|lane)|[a-z][a-z-]+(?:gatan|gata|vagen|vag|grand|granden|stigen|allen|alle|torget|torg|backen|kajen|esplanaden|promenaden|street|road|avenue|g\.|v\.))\s*(?:nr\.?\s*|nummer\s*)?\d{1,3}(?:\s?[a-z])?\b",
    );
    let office = regex(
        &OFFICE,
        r"\b(?:polis\w*|kommun\w*|stadshus\w*|radhus\w*|socialtjanst\w*|socialkontor\w*|lansstyrelse\w*|migrationsverket|skatteverket|forsakringskassan|arbetsformedlingen|region\w*|sjukhus\w*|vardcentral\w*|akuten|mottagning\w*|tingsratt\w*|domstol\w*|aklagar\w*|myndighet\w*|forvaltning\w*|bibliotek\w*|kontor\w*|station\w*|city hall|police)\b",
    );
    street.find_iter(normal).any(|m| {
        let before = &normal[..m.start()];
        let from = before
            .char_indices()
            .rev()
            .nth(80)
            .map(|(i, _)| i)
            .unwrap_or(0);
        !office.is_match(&before[from..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document with a tag list and a title, forked into two actors that each change tag 0
    /// and the title concurrently, one of them writing an e-mail address into `place` (`tag`
    /// or `title`); the merged document and the second actor's change.
    fn conflicting(personal_in_first: bool, place: &str) -> (Automerge, automerge::Change) {
        use automerge::transaction::Transactable;
        use automerge::{ActorId, ROOT};
        let mut base = Automerge::new().with_actor(ActorId::from(&b"a"[..]));
        let mut tx = base.transaction();
        let tags = tx.put_object(ROOT, "tags", ObjType::List).unwrap();
        tx.insert(&tags, 0, "samverkan").unwrap();
        tx.put(ROOT, "title", "Vad vi lärde oss").unwrap();
        tx.commit();
        let edit = |doc: &mut Automerge, actor: &[u8], personal: bool| {
            let mut tx = doc.transaction();
            let value = |here: &str| match personal && place == here {
                true => "anna.lind@example.se".to_string(),
                false => format!("{here} från {}", actor[0] as char),
            };
            tx.put(&tags, 0, value("tag")).unwrap();
            tx.put(ROOT, "title", value("title")).unwrap();
            tx.commit();
        };
        let mut first = base.fork().with_actor(ActorId::from(&b"b"[..]));
        edit(&mut first, b"b", personal_in_first);
        let mut second = base.fork().with_actor(ActorId::from(&b"c"[..]));
        edit(&mut second, b"c", !personal_in_first);
        let change = second.get_change_by_hash(&second.get_heads()[0]).unwrap();
        first.merge(&mut second).unwrap();
        (first, change)
    }

    #[test]
    fn a_personal_value_in_a_conflict_is_found_whether_it_wins_or_loses() {
        let guard = Guard::builtin();
        // The change under judgement wrote the personal value (which may win or lose), or a
        // clean one beside another actor's personal value: a list element and a map key the
        // change touched are read with every conflicting value.
        for place in ["tag", "title"] {
            for personal_in_first in [false, true] {
                let (doc, change) = conflicting(personal_in_first, place);
                let tags = doc.get(automerge::ROOT, "tags").unwrap().unwrap().1;
                assert!(doc.list_range(&tags, ..).next().unwrap().conflict);
                let finding = check_change(&doc, &change, &guard)
                    .expect_err("a conflicting personal value is found");
                assert_eq!(
                    (finding.kind, finding.field.as_str()),
                    (
                        Kind::EmailAddress,
                        if place == "tag" { "tags" } else { "title" }
                    ),
                    "{place}, personal value in the first: {personal_in_first}"
                );
            }
        }
    }

    fn kind(text: &str) -> Option<Kind> {
        Guard::new(&["Anna Lindqvist".into()], &["Solgården".into()]).scan(text)
    }

    #[test]
    fn identity_numbers_are_found_with_a_valid_checksum_in_any_spelling() {
        // 811218-9876 is the Tax Agency's example number; its checksum is valid.
        for text in [
            "born 811218-9876 in",
            "19811218-9876",
            "198112189876",
            "8112189876",
            "811218+9876",
            "81 12 18-9876",
            "81.12.18-9876",
            "811218.9876",
            "811218/9876",
            "1981-12-18-9876",
            "811218 98 76",
            "８１１２１８－９８７６",
            "8112\u{200B}18-98\u{200D}76",
            "refs 123456-7890 811218-9876",
        ] {
            assert_eq!(kind(text), Some(Kind::PersonalIdentityNumber), "{text}");
        }
        // A coordination number adds 60 to the day: 81-12-78.
        assert_eq!(kind("811278-9873"), Some(Kind::CoordinationNumber));
    }

    #[test]
    fn a_date_shaped_number_with_a_wrong_check_digit_is_refused_when_written_like_one() {
        for text in [
            "811218-9875",
            "19811218-9875",
            "8112189875",
            "1981-12-18-9875",
        ] {
            assert_eq!(kind(text), Some(Kind::PersonalIdentityNumber), "{text}");
        }
        for text in [
            "case 2026-11-28, 15 people",
            "on 2025-11-28 14.30 we met",
            "SFS 2018:1197",
            "1234567890",
            "dnr 2024-001234",
        ] {
            assert_eq!(kind(text), None, "{text}");
        }
    }

    #[test]
    fn phone_numbers_emails_and_addresses_are_found() {
        for text in [
            "call 070-123 45 67",
            "+46 70 123 45 67",
            "+46 (0)70-123 45 67",
            "ring 0701234567",
            "tel (08) 123 456 78",
            "0046701234567",
            "070.123.45.67",
            "070-123 45 67 070-765 43 21",
        ] {
            assert_eq!(kind(text), Some(Kind::PhoneNumber), "{text}");
        }
        for text in [
            "write to anna.l@example.se",
            "anna at example dot se",
            "anna(at)example.se",
            "anna [at] example [dot] se",
            "anna snabel-a example punkt se",
            "anna.l at example.se",
        ] {
            assert_eq!(kind(text), Some(Kind::EmailAddress), "{text}");
        }
        for text in [
            "she lives at Storgatan 12",
            "Ringvägen 3B",
            "near Kungsgatan 7 a",
            "RINGVAGEN 3",
        ] {
            assert_eq!(kind(text), Some(Kind::StreetAddress), "{text}");
        }
        for text in [
            "In 2026 we trained 45 people in 3 sessions.",
            "The year 2025-2026 went well",
            "Storgatan is busy",
            "room 101",
            "Polisen, Porslinsgatan 3, Malmö",
            "see the guide at polisen.se",
            "on 2025-01-15 10 000 leaflets",
            "handlingsplan 2024",
        ] {
            assert_eq!(kind(text), None, "{text}");
        }
    }

    #[test]
    fn the_citys_contact_names_and_denied_words_are_found_as_whole_words() {
        for text in [
            "Thanks to anna lindqvist for the idea",
            "ANNA LINDQVIST",
            "Anna Lindqvists idea",
            "Anna\nLindqvist",
            "Lindqvist, Anna",
            "Ånna Lindqvíst",
        ] {
            assert_eq!(kind(text), Some(Kind::ContactName), "{text}");
        }
        assert_eq!(kind("the Solgården hotel"), Some(Kind::DeniedWord));
        assert_eq!(kind("the SOLGARDENS hotel"), Some(Kind::DeniedWord));
        assert_eq!(kind("Annalindqvistsson"), None);
        assert_eq!(kind("A lesson about training"), None);
    }

    #[test]
    fn machine_identifiers_are_not_numbers() {
        assert_eq!(kind("method/steps/8112189876abcdef"), None);
        assert_eq!(kind("a1b2c3d4e5f6a7b8"), None);
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
