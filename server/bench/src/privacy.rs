//! The privacy guard's cost (BENCHMARKS.md, "privacy"): what every edit of a shared document
//! pays before it is stored. In process, no node: the guard is pure.

use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ReadDoc, ROOT};
use sfs_node::domain::privacy::{check_change, Guard};

/// Ordinary lesson text, repeated to the wanted size (clean: the guard reads all of it).
const PARAGRAPH: &str = "The hotel group met on 2025-11-28 at 14.30 in the town hall. \
    Of 120 staff, 87 % finished the training (SFS 2018:1197 applies). We printed 2 500 \
    leaflets in 12 languages and followed up after 6, 12 and 24 months. Reception staff \
    noticed 6 signals in 2 weeks; the core group reviewed each within 48 hours. ";

const FIRST: &[&str] = &[
    "Anna", "Åsa", "Per", "Karin", "Lars", "Eva", "Björn", "Sara", "Jöns", "Maria", "Erik", "Lena",
    "Olof", "Ingrid", "Mats", "Sofia", "Anders", "Elin", "Johan", "Hanna",
];
const LAST: &[&str] = &[
    "Lindqvist",
    "Öberg",
    "Nilsson",
    "Holm",
    "Åkesson",
    "Svensson",
    "Berg",
    "Ström",
    "Lund",
    "Sjöberg",
    "Ek",
    "Dahl",
    "Forsberg",
    "Wallin",
    "Engström",
    "Hedlund",
    "Björk",
    "Lindgren",
    "Sandberg",
    "Nyström",
    "Fransson",
    "Axelsson",
    "Mattsson",
    "Persson",
    "Jakobsson",
    "Olofsson",
    "Lindström",
    "Holmberg",
    "Bergström",
    "Söderberg",
    "Hellström",
    "Blom",
    "Sundberg",
    "Håkansson",
    "Ekström",
    "Norberg",
    "Lundin",
    "Falk",
    "Strand",
    "Nyberg",
    "Isaksson",
    "Lindholm",
    "Eklund",
    "Dahlberg",
    "Hermansson",
    "Nordin",
    "Hansson",
    "Sjögren",
    "Magnusson",
    "Bengtsson",
];

/// `n` distinct contact names.
pub fn contact_names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let first = FIRST[i % FIRST.len()];
            let last = LAST[(i / FIRST.len()) % LAST.len()];
            match i / (FIRST.len() * LAST.len()) {
                0 => format!("{first} {last}"),
                k => format!("{first} {last}-{}", LAST[k % LAST.len()]),
            }
        })
        .collect()
}

/// A clean lesson of about `bytes` bytes.
pub fn lesson_text(bytes: usize) -> String {
    let mut text = String::new();
    while text.len() < bytes {
        text.push_str(PARAGRAPH);
    }
    text
}

/// Times building the guard, checking a clean lesson of `lesson_bytes`, and judging a whole
/// edit (the change and the document after it) as the node does.
pub fn measure(contacts: usize, lesson_bytes: usize, rounds: usize) -> Measured {
    let names = contact_names(contacts);
    let words: Vec<String> = (0..50).map(|i| format!("Hotell Nummer{i}")).collect();
    let started = Instant::now();
    let guard = Guard::new(&names, &words);
    let build = started.elapsed();
    let text = lesson_text(lesson_bytes);
    assert!(guard.scan(&text).is_none(), "the lesson text is clean");
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(guard.scan(std::hint::black_box(&text)));
            started.elapsed()
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];

    // A whole edit: a new lesson with title, body and 20 tags in one change.
    let mut edits: Vec<(Duration, Duration, Duration)> = (0..rounds.min(200))
        .map(|i| {
            let mut doc = Automerge::new();
            let mut tx = doc.transaction();
            let lessons = tx.put_object(ROOT, "lessons", ObjType::Map).unwrap();
            let lesson = tx
                .put_object(&lessons, format!("l{i}"), ObjType::Map)
                .unwrap();
            tx.put(&lesson, "title", "What the hotel group learned")
                .unwrap();
            let body = tx.put_object(&lesson, "body", ObjType::Text).unwrap();
            tx.splice_text(&body, 0, 0, &text).unwrap();
            let tags = tx.put_object(&lesson, "tags", ObjType::List).unwrap();
            for t in 0..20 {
                tx.insert(&tags, t, format!("tag {t}")).unwrap();
            }
            let (hash, _) = tx.commit();
            let change = doc.get_change_by_hash(&hash.unwrap()).unwrap();
            let started = Instant::now();
            check_change(&doc, &change, &guard).expect("clean");
            let whole = started.elapsed();
            let started = Instant::now();
            std::hint::black_box(sfs_sync::change_ops::touched(&change));
            let touched = started.elapsed();
            let started = Instant::now();
            std::hint::black_box(change.decode());
            (whole, touched, started.elapsed())
        })
        .collect();
    edits.sort();
    let median_of = |pick: fn(&(Duration, Duration, Duration)) -> Duration| {
        let mut times: Vec<Duration> = edits.iter().map(pick).collect();
        times.sort();
        times[times.len() / 2]
    };
    Measured {
        build,
        median,
        p99,
        edit: edits[edits.len() / 2].0,
        touched: median_of(|e| e.1),
        decode: median_of(|e| e.2),
    }
}

/// What [`measure`] found.
pub struct Measured {
    /// Building the guard.
    pub build: Duration,
    /// Checking the text: median and 99th percentile.
    pub median: Duration,
    pub p99: Duration,
    /// Judging a whole edit as the node does (median).
    pub edit: Duration,
    /// Of that, finding what the change touched from its columns (median).
    pub touched: Duration,
    /// Automerge's decoding of the change, the earlier way to find it (median).
    pub decode: Duration,
}
