//! The privacy guard against its corpora (promise 7): personal data in the spellings people and
//! evaders use must be refused, ordinary lesson text must pass.
//!
//! `data/privacy/variants.txt` holds the variants the guard was built against,
//! `data/privacy/heldout.txt` variants written before the guard was first run on them and never
//! tuned to, and `data/privacy/clean.txt` ordinary lesson text. The test prints the rates (run
//! with `--nocapture`) and asserts bypass ≤ 5 % on each variant set and false refusals ≤ 1 %.

use sfs_node::domain::privacy::{Guard, Kind};

const VARIANTS: &str = include_str!("data/privacy/variants.txt");
const HELD_OUT: &str = include_str!("data/privacy/heldout.txt");
const CLEAN: &str = include_str!("data/privacy/clean.txt");

/// The register the corpora assume.
fn guard() -> Guard {
    let names: Vec<String> = [
        "Anna Lindqvist",
        "Åsa Öberg",
        "Per-Olof Nilsson",
        "Sara Holm",
        "Jöns Åkesson",
    ]
    .map(String::from)
    .to_vec();
    let words: Vec<String> = ["Solgården", "Villa Rosen", "Pensionat Måsen"]
        .map(String::from)
        .to_vec();
    Guard::new(&names, &words)
}

/// Replaces `\n` with a line break and `\u{XXXX}` with the character.
fn unescape(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("\\n") {
            out.push('\n');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("\\u{") {
            let end = after.find('}').expect("a closed \\u{…} escape");
            let code = u32::from_str_radix(&after[..end], 16).expect("hex in \\u{…}");
            out.push(char::from_u32(code).expect("a Unicode scalar value"));
            rest = &after[end + 1..];
        } else {
            out.push('\\');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn lines(corpus: &str) -> impl Iterator<Item = &str> {
    corpus
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
}

fn expected(kind: &str) -> Kind {
    match kind {
        "pin" => Kind::PersonalIdentityNumber,
        "coord" => Kind::CoordinationNumber,
        "phone" => Kind::PhoneNumber,
        "email" => Kind::EmailAddress,
        "street" => Kind::StreetAddress,
        "name" => Kind::ContactName,
        "deny" => Kind::DeniedWord,
        other => panic!("unknown kind {other:?} in a corpus"),
    }
}

/// (texts, missed texts) of a variant corpus.
fn bypasses(corpus: &str) -> (usize, Vec<String>) {
    let guard = guard();
    let mut total = 0;
    let mut missed = Vec::new();
    for line in lines(corpus) {
        let (kind, text) = line.split_once('\t').expect("kind<TAB>text");
        let _ = expected(kind);
        total += 1;
        if guard.scan(&unescape(text)).is_none() {
            missed.push(format!("{kind}: {text}"));
        }
    }
    (total, missed)
}

fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

#[test]
fn bypass_rate_on_the_variants_is_at_most_five_percent() {
    for (name, corpus) in [("variants", VARIANTS), ("held-out", HELD_OUT)] {
        let (total, missed) = bypasses(corpus);
        let rate = percent(missed.len(), total);
        println!(
            "{name}: {} of {total} passed the guard ({rate:.1} % bypass)",
            missed.len()
        );
        for text in &missed {
            println!("  missed {text}");
        }
        assert!(total >= 40, "the {name} corpus is too small");
        assert!(rate <= 5.0, "{name}: bypass {rate:.1} % > 5 %: {missed:?}");
    }
}

#[test]
fn variants_are_refused_as_the_kind_they_are() {
    // The kind matters for the error message; a phone number that is also a date-shaped
    // number may be named as either.
    let guard = guard();
    let mut wrong = Vec::new();
    for line in lines(VARIANTS) {
        let (kind, text) = line.split_once('\t').expect("kind<TAB>text");
        let found = guard.scan(&unescape(text));
        if found.is_some() && found != Some(expected(kind)) {
            wrong.push(format!("{kind} named {found:?}: {text}"));
        }
    }
    println!("variants named as another kind: {wrong:?}");
    assert!(wrong.len() <= 2, "{wrong:?}");
}

#[test]
fn false_refusals_on_ordinary_lesson_text_are_at_most_one_percent() {
    let guard = guard();
    let texts: Vec<&str> = lines(CLEAN).collect();
    let refused: Vec<String> = texts
        .iter()
        .filter_map(|t| guard.scan(t).map(|kind| format!("{kind:?}: {t}")))
        .collect();
    let rate = percent(refused.len(), texts.len());
    println!(
        "clean: {} of {} refused ({rate:.1} % false refusals): {refused:?}",
        refused.len(),
        texts.len()
    );
    assert!(texts.len() >= 100, "the clean corpus is too small");
    assert!(rate <= 1.0, "false refusals {rate:.1} % > 1 %: {refused:?}");
}
