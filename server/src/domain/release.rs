//! Signed handbook releases on a node: which release it runs, and why it runs no other.
//!
//! The national coordinator signs each release of `national/method` with a key the hub never
//! holds (`sfs_release`). A node configured with the public key
//! (`method.release_public_key`) runs only a release that passes every check of [`check`]:
//! the signature verifies over the release's number, heads, label, notes and times; its heads
//! are in the node's history of the handbook; and, when it arrives ([`evaluate`]), its number is
//! greater than the running release's and it has not expired. Everything else is refused,
//! logged once and reported by `Method.GetRunningRelease`.
//!
//! The running release is kept apart from the document: [`ReleaseTracker`] stores the verified
//! release itself in `<data_dir>/running-release.pb` before it is adopted, so a restart keeps
//! it, a compromised hub cannot roll a city back to an older release by deleting or altering
//! records, and an expired running release stays running (reported as expired) rather than
//! falling back to an older one. [`evaluate`] is pure; [`ReleaseTracker`] and [`track`] do the
//! I/O.
//!
//! Redaction (`Method.RedactHandbook`) replaces the handbook with a new generation without any
//! history, so the heads every earlier release names are gone. A release names the generation
//! it was signed over (covered by the signature), and a node runs only a release of the
//! generation it holds ([`Refusal::OtherGeneration`]). When the node's handbook moves to a newer
//! generation, its running release is kept in `running-release.pb` — only its number, heads,
//! label and notes, none of the handbook's content — as the floor every later release's number
//! must exceed, but its content is no longer served ([`Evaluation::content`] is false): the node
//! serves no handbook at all, never the new generation's unsigned content, until the
//! coordinator's release of the new generation arrives.

use std::path::PathBuf;

use automerge::{Automerge, ChangeHash};
use sfs_proto::v1 as pb;
use sfs_release::{PublicKey, Statement};

use crate::domain::method;

/// Why a node does not run a release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Unsigned, malformed, altered or signed by another key (the verifier's message).
    #[error("{0}")]
    Invalid(String),
    /// The heads it names are not in this node's history of the handbook.
    #[error("its heads are not in this node's history of the handbook")]
    UnknownHeads,
    /// Its number is not greater than the running release's.
    #[error(
        "release number {number} is not greater than {running}, the number of the running release"
    )]
    NotNewer { number: i64, running: i64 },
    /// It had expired when this node checked it.
    #[error("it had expired (expire_time_ms {expire_time_ms}) when this node checked it")]
    Expired { expire_time_ms: i64 },
    /// It was signed over another generation of the handbook than the one this node holds.
    #[error("{}", other_generation(*generation, *current))]
    OtherGeneration { generation: u64, current: u64 },
}

impl Refusal {
    /// Whether the release is merely older (a lower number, or an older generation of the
    /// handbook) rather than refused.
    pub fn older(&self) -> bool {
        match self {
            Refusal::NotNewer { .. } => true,
            Refusal::OtherGeneration {
                generation,
                current,
            } => generation < current,
            _ => false,
        }
    }
}

fn other_generation(generation: u64, current: u64) -> String {
    if generation < current {
        format!(
            "it was signed over generation {generation} of the handbook, which was redacted at \
             the hub and replaced by generation {current}"
        )
    } else {
        format!(
            "it names generation {generation} of the handbook; this node holds generation {current}"
        )
    }
}

/// Errors keeping the running release on disk.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseStateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks what does not depend on time or on the running release: the signature over the
/// release's statement, that it belongs to `doc`'s generation, and that its heads are in
/// `doc`'s history.
pub fn check(
    key: &PublicKey,
    release: &pb::Release,
    doc: &Automerge,
) -> Result<Statement, Refusal> {
    let statement = key
        .verify(release)
        .map_err(|err| Refusal::Invalid(err.to_string()))?;
    let current = sfs_sync::engine::generation_of(doc);
    if statement.generation != current {
        return Err(Refusal::OtherGeneration {
            generation: statement.generation,
            current,
        });
    }
    if statement
        .heads
        .iter()
        .any(|h| doc.get_change_meta_by_hash(&ChangeHash(*h)).is_none())
    {
        return Err(Refusal::UnknownHeads);
    }
    Ok(statement)
}

/// The outcome of looking at every release in the handbook.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// The release to run (the previous one if nothing better arrived). Its number is the floor
    /// of every later release's, also while its content is not served.
    pub running: Option<pb::Release>,
    /// Whether `running`'s content is in the document (its generation and heads): false after
    /// the handbook was redacted (a newer generation), until a release of it arrives.
    pub content: bool,
    /// Every other release with why it is not run.
    pub not_running: Vec<(pb::Release, Refusal)>,
}

/// Whether two records are the same release: equal in the signature and every signed field.
pub fn same(a: &pb::Release, b: &pb::Release) -> bool {
    a.signature == b.signature
        && a.number == b.number
        && a.version == b.version
        && a.version_label == b.version_label
        && a.notes == b.notes
        && a.issue_time_ms == b.issue_time_ms
        && a.expire_time_ms == b.expire_time_ms
}

/// Decides which release runs: the verified release with the greatest number that is greater
/// than the running one's and not expired at `now_ms`; otherwise the running one stays (if it
/// still verifies against `doc`). Pure: no clock, no disk.
pub fn evaluate(
    doc: &Automerge,
    key: &PublicKey,
    running: Option<&pb::Release>,
    now_ms: i64,
) -> Evaluation {
    // A running release that still verifies stays the floor even where its content is gone (a
    // newer generation, or heads this node does not hold): a new generation cannot reopen the
    // door to older releases. One that no longer verifies (another key) is dropped.
    let (running, content) = match running.map(|r| (r, check(key, r, doc))) {
        Some((r, Ok(_))) => (Some(r), true),
        Some((_, Err(Refusal::Invalid(_)))) | None => (None, false),
        Some((r, Err(_))) => (Some(r), false),
    };
    let checked: Vec<(pb::Release, Result<Statement, Refusal>)> = method::releases(doc)
        .into_iter()
        .map(|r| {
            let result = check(key, &r, doc);
            (r, result)
        })
        .collect();
    let floor = running.map(|r| r.number).unwrap_or(0);
    let best = checked
        .iter()
        .filter(|(r, result)| result.is_ok() && r.number > floor && r.expire_time_ms > now_ms)
        .map(|(r, _)| r)
        .max_by(|a, b| a.number.cmp(&b.number).then(b.name.cmp(&a.name)));
    let content = best.is_some() || content;
    let running = best.or(running).cloned();
    let number = running.as_ref().map(|r| r.number).unwrap_or(0);
    let not_running = checked
        .into_iter()
        .filter(|(r, _)| !running.as_ref().is_some_and(|run| same(run, r)))
        .map(|(r, result)| {
            let refusal = match result {
                Err(refusal) => refusal,
                Ok(_) if r.number <= number => Refusal::NotNewer {
                    number: r.number,
                    running: number,
                },
                Ok(_) => Refusal::Expired {
                    expire_time_ms: r.expire_time_ms,
                },
            };
            (r, refusal)
        })
        .collect();
    Evaluation {
        running,
        content,
        not_running,
    }
}

/// The release a city reports it runs in its progress document: `(label, number)`.
pub fn reported_release(progress: &Automerge) -> (String, i64) {
    (
        crate::domain::docmodel::get_str(progress, &automerge::ROOT, "running_release"),
        crate::domain::docmodel::get_i64(progress, &automerge::ROOT, "running_release_number"),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use sfs_release::SigningKey;

    pub(crate) fn key(seed: u8) -> SigningKey {
        // A fixed Ed25519 PKCS#8 v1 document: the RFC 8410 prefix and a 32-byte seed.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&[seed; 32]);
        SigningKey::from_pkcs8(&der).unwrap()
    }

    /// A handbook with one change per call; returns the heads after it.
    fn edit(doc: &mut Automerge, text: &str) -> String {
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "note", text).unwrap();
        tx.commit();
        crate::domain::docmodel::version_of(&doc.get_heads())
    }

    fn put_release(doc: &mut Automerge, id: &str, release: &pb::Release) {
        let mut tx = doc.transaction();
        method::write_release(&mut tx, id, release).unwrap();
        tx.commit();
    }

    pub(crate) fn signed(key: &SigningKey, version: &str, number: i64, label: &str) -> pb::Release {
        let mut release = pb::Release {
            version_label: label.into(),
            notes: "notes".into(),
            version: version.into(),
            number,
            issue_time_ms: 1_000,
            expire_time_ms: 100_000,
            ..Default::default()
        };
        key.sign(&mut release).unwrap();
        release
    }

    #[test]
    fn every_field_is_covered_by_the_signature() {
        let k = key(1);
        let mut doc = Automerge::new();
        let v1 = edit(&mut doc, "a");
        let v2 = edit(&mut doc, "b");
        let good = signed(&k, &v1, 1, "2027.1");
        let public = k.public_key();
        assert!(check(&public, &good, &doc).is_ok());
        type Tamper<'a> = Box<dyn Fn(&mut pb::Release) + 'a>;
        let tampered: Vec<(&str, Tamper)> = vec![
            ("number", Box::new(|r| r.number = 2)),
            ("version", Box::new(|r| r.version = v2.clone())),
            ("label", Box::new(|r| r.version_label = "2027.2".into())),
            ("notes", Box::new(|r| r.notes = "other".into())),
            ("issued", Box::new(|r| r.issue_time_ms += 1)),
            ("expires", Box::new(|r| r.expire_time_ms += 1)),
            ("signature", Box::new(|r| r.signature[10] ^= 1)),
        ];
        for (field, tamper) in tampered {
            let mut release = good.clone();
            tamper(&mut release);
            let err = check(&public, &release, &doc).unwrap_err();
            assert!(
                err.to_string().contains("does not verify"),
                "{field}: {err}"
            );
        }
        let other = check(&key(2).public_key(), &good, &doc).unwrap_err();
        assert!(other.to_string().contains("does not verify"), "{other}");
        let mut unsigned = good.clone();
        unsigned.signature.clear();
        assert!(check(&public, &unsigned, &doc)
            .unwrap_err()
            .to_string()
            .contains("not signed"));
        // A release naming heads this document does not have.
        let unknown = signed(&k, &"cd".repeat(32), 1, "x");
        assert_eq!(check(&public, &unknown, &doc), Err(Refusal::UnknownHeads));
    }

    #[test]
    fn the_newest_valid_release_runs_and_older_expired_or_forged_ones_do_not() {
        let k = key(1);
        let public = k.public_key();
        let mut doc = Automerge::new();
        let v1 = edit(&mut doc, "a");
        put_release(&mut doc, "r1", &signed(&k, &v1, 1, "1"));
        let first = evaluate(&doc, &public, None, 2_000);
        assert_eq!(first.running.as_ref().unwrap().version_label, "1");
        assert!(first.not_running.is_empty());

        // Forged (another key), expired, older and newer releases arrive together.
        let v2 = edit(&mut doc, "b");
        put_release(&mut doc, "forged", &signed(&key(9), &v2, 5, "forged"));
        let mut expired = signed(&k, &v2, 4, "expired");
        expired.expire_time_ms = 1_500;
        k.sign(&mut expired).unwrap();
        put_release(&mut doc, "expired", &expired);
        put_release(&mut doc, "r3", &signed(&k, &v2, 3, "3"));
        let second = evaluate(&doc, &public, first.running.as_ref(), 2_000);
        assert_eq!(second.running.as_ref().unwrap().version_label, "3");
        let reason = |label: &str| {
            second
                .not_running
                .iter()
                .find(|(r, _)| r.version_label == label)
                .map(|(_, refusal)| refusal.clone())
                .unwrap()
        };
        assert!(matches!(reason("forged"), Refusal::Invalid(_)));
        assert!(matches!(reason("expired"), Refusal::Expired { .. }));
        assert_eq!(
            reason("1"),
            Refusal::NotNewer {
                number: 1,
                running: 3
            }
        );

        // A correctly signed release with a lower number arriving later is not run.
        put_release(&mut doc, "r2", &signed(&k, &v2, 2, "2"));
        let third = evaluate(&doc, &public, second.running.as_ref(), 2_000);
        assert_eq!(third.running.as_ref().unwrap().version_label, "3");
        assert!(third
            .not_running
            .iter()
            .any(|(r, refusal)| r.version_label == "2"
                && matches!(refusal, Refusal::NotNewer { number: 2, .. })));

        // The running release stays running after it expires, and after its record is altered.
        let mut tx = doc.transaction();
        let obj = crate::domain::docmodel::record(&tx, "releases", "r3").unwrap();
        tx.put(&obj, "version_label", "altered").unwrap();
        tx.commit();
        let later = evaluate(&doc, &public, third.running.as_ref(), 200_000);
        assert_eq!(later.running.as_ref().unwrap().version_label, "3");
        assert!(later
            .not_running
            .iter()
            .any(|(r, refusal)| r.version_label == "altered"
                && matches!(refusal, Refusal::Invalid(_))));
    }

    /// A new generation of `doc` as `Engine::new_generation` makes it: a fresh document with
    /// the current values, the generation marker, and none of the history.
    fn next_generation(doc: &Automerge, text: &str) -> Automerge {
        let generation = sfs_sync::engine::generation_of(doc) + 1;
        let mut fresh = Automerge::new();
        let mut tx = fresh.transaction();
        tx.put(
            automerge::ROOT,
            sfs_sync::engine::GENERATION_KEY,
            generation,
        )
        .unwrap();
        tx.put(automerge::ROOT, "note", text).unwrap();
        for release in method::releases(doc) {
            let id = release
                .name
                .trim_start_matches("method/releases/")
                .to_string();
            method::write_release(&mut tx, &id, &release).unwrap();
        }
        tx.commit();
        fresh
    }

    #[test]
    fn after_a_redaction_the_old_release_is_the_floor_and_its_content_is_not_served() {
        let k = key(1);
        let public = k.public_key();
        let mut doc = Automerge::new();
        let v1 = edit(&mut doc, "secret");
        put_release(&mut doc, "r1", &signed(&k, &v1, 1, "1"));
        let first = evaluate(&doc, &public, None, 2_000);
        assert!(first.content);
        assert_eq!(first.running.as_ref().unwrap().version_label, "1");

        // The hub redacts: generation 1, the old heads gone, the old record still there.
        let mut doc = next_generation(&doc, "redacted");
        assert!(check(&public, first.running.as_ref().unwrap(), &doc).is_err());
        let awaiting = evaluate(&doc, &public, first.running.as_ref(), 2_000);
        assert!(!awaiting.content, "no content of a destroyed generation");
        assert_eq!(
            awaiting.running.as_ref().unwrap().number,
            1,
            "the floor stays"
        );
        // The old record is not refused as an attack: it belongs to an older generation.
        assert!(
            awaiting.not_running.is_empty(),
            "{:?}",
            awaiting.not_running
        );

        // A release of generation 0 naming the new heads does not run (its statement says
        // generation 0, this node holds 1), nor one whose generation was changed after signing,
        // nor a correctly signed one of generation 1 that is not newer.
        let v2 = crate::domain::docmodel::version_of(&doc.get_heads());
        put_release(&mut doc, "gen0", &signed(&k, &v2, 2, "gen0"));
        let mut moved = signed(&k, &v2, 3, "moved");
        moved.generation = 1;
        put_release(&mut doc, "moved", &moved);
        let mut not_newer = pb::Release {
            generation: 1,
            ..signed(&k, &v2, 1, "not-newer")
        };
        k.sign(&mut not_newer).unwrap();
        put_release(&mut doc, "not-newer", &not_newer);
        let still = evaluate(&doc, &public, awaiting.running.as_ref(), 2_000);
        assert!(!still.content);
        assert_eq!(still.running.as_ref().unwrap().version_label, "1");
        let reason = |label: &str| {
            still
                .not_running
                .iter()
                .find(|(r, _)| r.version_label == label)
                .map(|(_, refusal)| refusal.clone())
                .unwrap()
        };
        assert_eq!(
            reason("gen0"),
            Refusal::OtherGeneration {
                generation: 0,
                current: 1
            }
        );
        assert!(matches!(reason("moved"), Refusal::Invalid(_)));
        assert!(matches!(reason("not-newer"), Refusal::NotNewer { .. }));

        // The coordinator's release of generation 1 runs, with its content.
        let mut next = pb::Release {
            generation: 1,
            ..signed(&k, &v2, 2, "2")
        };
        k.sign(&mut next).unwrap();
        put_release(&mut doc, "r2", &next);
        let adopted = evaluate(&doc, &public, still.running.as_ref(), 2_000);
        assert!(adopted.content);
        assert_eq!(adopted.running.as_ref().unwrap().version_label, "2");
        assert_eq!(adopted.running.as_ref().unwrap().generation, 1);
    }
}
