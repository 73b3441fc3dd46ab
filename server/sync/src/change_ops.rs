//! What a change touches: the map keys it wrote (or deleted) and the sequences (texts, lists)
//! it edited, read from the change's own columns.
//!
//! The privacy guard reads every string a new change wrote, which means knowing where each of
//! its operations sits. Automerge's only public view of a change's operations is
//! `Change::decode`, which expands every operation into an owned value with its own copies of
//! actor ids — about a quarter of a microsecond per operation, a millisecond for a 4 KB text.
//! [`touched`] reads only the two columns it needs (the object and the key of each operation)
//! straight from the change's bytes, as Automerge encodes them, and keeps each place once.
//! Anything it does not read completely (a compressed chunk, a column of an unexpected type or
//! length) falls back to `Change::decode`, so the answer never depends on this reader
//! understanding a layout. Debug builds compare every answer with the decoded one.

use std::collections::HashSet;

use automerge::{ActorId, Automerge, ObjId};

use crate::columns::{decode_rle, Reader, DEFLATE_BIT};
use crate::saved::CHUNK_MAGIC;
use crate::screen::CHUNK_TYPE_CHANGE;

/// An object a change's operation sits in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjRef {
    /// The document's root map.
    Root,
    /// The object made by the operation `counter@actor`.
    Made { counter: u64, actor: ActorId },
}

impl ObjRef {
    /// The object as `doc` names it, if `doc` holds it.
    pub fn in_doc(&self, doc: &Automerge) -> Option<ObjId> {
        match self {
            ObjRef::Root => Some(automerge::ROOT),
            ObjRef::Made { counter, actor } => doc.import_obj(&format!("{counter}@{actor}")).ok(),
        }
    }
}

/// The places a change's operations sit, each once, in the order of the change's operations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Map keys written, deleted or incremented, with the map they belong to.
    pub keys: Vec<(ObjRef, String)>,
    /// Sequences (texts and lists) with an operation on any of their elements.
    pub sequences: Vec<ObjRef>,
}

/// The places `change`'s operations sit (see the module documentation).
pub fn touched(change: &automerge::Change) -> Touched {
    let found = from_columns(change).unwrap_or_else(|| from_decoded(change));
    #[cfg(debug_assertions)]
    {
        let expected = from_decoded(change);
        assert_eq!(
            normalized(&found),
            normalized(&expected),
            "the change's columns and Automerge's decoding disagree on what change {} touches",
            change.hash()
        );
    }
    found
}

#[cfg(debug_assertions)]
fn normalized(touched: &Touched) -> (Vec<(ObjRef, String)>, Vec<ObjRef>) {
    let mut keys = touched.keys.clone();
    keys.sort();
    let mut sequences = touched.sequences.clone();
    sequences.sort();
    (keys, sequences)
}

/// Collects places once each.
#[derive(Default)]
struct Collector {
    touched: Touched,
    keys_seen: HashSet<(ObjRef, String)>,
    sequences_seen: HashSet<ObjRef>,
}

impl Collector {
    fn key(&mut self, obj: ObjRef, key: &str) {
        if self.keys_seen.insert((obj.clone(), key.to_string())) {
            self.touched.keys.push((obj, key.to_string()));
        }
    }

    fn sequence(&mut self, obj: ObjRef) {
        if self.sequences_seen.insert(obj.clone()) {
            self.touched.sequences.push(obj);
        }
    }
}

/// Through Automerge's own expansion of the change.
fn from_decoded(change: &automerge::Change) -> Touched {
    use automerge::legacy::{Key, ObjectId};
    let expanded = change.decode();
    let mut collector = Collector::default();
    for op in &expanded.operations {
        let obj = match &op.obj {
            ObjectId::Root => ObjRef::Root,
            ObjectId::Id(id) => ObjRef::Made {
                counter: id.counter(),
                actor: id.actor().clone(),
            },
        };
        match &op.key {
            Key::Map(key) => collector.key(obj, key.as_str()),
            Key::Seq(_) => collector.sequence(obj),
        }
    }
    collector.touched
}

/// Column specifications (column id << 4 | type) of a change's operation columns: the
/// object's actor (type 1, actor), its counter (type 2, integer), the map key (type 5, string).
const OBJ_ACTOR: u32 = 0x01;
const OBJ_COUNTER: u32 = 0x02;
const KEY_STRING: u32 = 0x15;

/// Straight from the change's bytes; `None` when anything is not as expected.
fn from_columns(change: &automerge::Change) -> Option<Touched> {
    let actors: Vec<&ActorId> = change.actors().collect();
    from_chunk(change.raw_bytes(), change.len(), &actors)
}

/// Reads an uncompressed change chunk of `rows` operations whose actors (the author first) are
/// `actors`.
fn from_chunk(bytes: &[u8], rows: usize, actors: &[&ActorId]) -> Option<Touched> {
    if bytes.len() < 9 || bytes[..4] != CHUNK_MAGIC || bytes[8] != CHUNK_TYPE_CHANGE {
        return None;
    }
    let mut header = Reader::new(&bytes[9..]);
    let length = header.uleb()?;
    let body_start = 9 + header.at;
    if length != (bytes.len() - body_start) as u64 {
        return None;
    }
    let mut body = Reader::new(&bytes[body_start..]);
    // Dependencies, actor, sequence number, first operation, time, message, other actors.
    let deps = body.uleb()?;
    body.take(deps.checked_mul(32)?)?;
    let actor_len = body.uleb()?;
    body.take(actor_len)?;
    body.uleb()?;
    body.uleb()?;
    body.sleb()?;
    let message_len = body.uleb()?;
    body.take(message_len)?;
    let others = body.uleb()?;
    for _ in 0..others {
        let len = body.uleb()?;
        body.take(len)?;
    }
    let columns = body.columns()?;
    let mut obj_actor = None;
    let mut obj_counter = None;
    let mut key_string = None;
    for (spec, len) in columns {
        let data = body.take(len)?;
        if spec & DEFLATE_BIT != 0 {
            return None;
        }
        match spec {
            OBJ_ACTOR => obj_actor = Some(decode_rle(data, rows, |r| r.uleb())?),
            OBJ_COUNTER => obj_counter = Some(decode_rle(data, rows, |r| r.uleb())?),
            KEY_STRING => {
                key_string = Some(decode_rle(data, rows, |r| {
                    let len = r.uleb()?;
                    std::str::from_utf8(r.take(len)?).ok()
                })?)
            }
            _ => {}
        }
    }
    let mut collector = Collector::default();
    // Rows as read (object actor and counter, map key), each handled once: a text's
    // operations repeat one row thousands of times.
    let mut seen: HashSet<(Option<u64>, Option<u64>, Option<&str>)> = HashSet::new();
    let mut last = None;
    for row in 0..rows {
        let place = (
            obj_actor.as_ref().and_then(|column| column[row]),
            obj_counter.as_ref().and_then(|column| column[row]),
            key_string.as_ref().and_then(|column| column[row]),
        );
        if last == Some(place) || !seen.insert(place) {
            continue;
        }
        last = Some(place);
        let obj = match (place.0, place.1) {
            (None, None) => ObjRef::Root,
            (Some(actor), Some(counter)) => ObjRef::Made {
                counter,
                actor: (*actors.get(usize::try_from(actor).ok()?)?).clone(),
            },
            _ => return None,
        };
        match place.2 {
            Some(key) => collector.key(obj, key),
            None => collector.sequence(obj),
        }
    }
    Some(collector.touched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ReadDoc, ROOT};
    use proptest::prelude::*;

    fn last_change(doc: &Automerge) -> automerge::Change {
        let hash = doc.get_heads()[0];
        doc.get_change_by_hash(&hash).unwrap()
    }

    #[test]
    fn a_new_lesson_touches_its_keys_once_and_its_text_and_list() {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        let lessons = tx.put_object(ROOT, "lessons", ObjType::Map).unwrap();
        let lesson = tx.put_object(&lessons, "l1", ObjType::Map).unwrap();
        tx.put(&lesson, "title", "Vad hotellgruppen lärde sig")
            .unwrap();
        tx.put(&lesson, "title", "Vad gruppen lärde sig").unwrap();
        let body = tx.put_object(&lesson, "body", ObjType::Text).unwrap();
        tx.splice_text(&body, 0, 0, &"Mötet hölls i stadshuset. ".repeat(40))
            .unwrap();
        let tags = tx.put_object(&lesson, "tags", ObjType::List).unwrap();
        for i in 0..5 {
            tx.insert(&tags, i, format!("tagg {i}")).unwrap();
        }
        tx.commit();
        let change = last_change(&doc);
        let found = from_columns(&change).expect("an uncompressed change is read");
        let keys: Vec<&str> = found.keys.iter().map(|(_, key)| key.as_str()).collect();
        assert_eq!(keys, ["lessons", "l1", "title", "body", "tags"]);
        assert_eq!(found.sequences.len(), 2, "the body text and the tag list");
        for (obj, _) in &found.keys {
            assert!(obj.in_doc(&doc).is_some(), "{obj:?} is in the document");
        }
        assert_eq!(found, from_decoded(&change));
    }

    #[test]
    fn a_change_by_another_actor_on_an_object_made_by_the_first_names_both_actors() {
        let mut first = Automerge::new().with_actor(ActorId::from(&b"first"[..]));
        let mut tx = first.transaction();
        let text = tx.put_object(ROOT, "body", ObjType::Text).unwrap();
        tx.splice_text(&text, 0, 0, "hej").unwrap();
        tx.commit();
        let mut second = first.fork().with_actor(ActorId::from(&b"second"[..]));
        let mut tx = second.transaction();
        tx.splice_text(&text, 3, 0, " då").unwrap();
        tx.put(ROOT, "title", "x").unwrap();
        tx.commit();
        let change = last_change(&second);
        let found = from_columns(&change).unwrap();
        assert_eq!(
            found.sequences,
            vec![ObjRef::Made {
                counter: 1,
                actor: ActorId::from(&b"first"[..])
            }]
        );
        assert_eq!(found.keys, vec![(ObjRef::Root, "title".to_string())]);
        assert_eq!(found.sequences[0].in_doc(&second), Some(text));
    }

    #[test]
    fn a_chunk_this_reader_does_not_understand_completely_is_not_read() {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        let text = tx.put_object(ROOT, "body", ObjType::Text).unwrap();
        tx.splice_text(&text, 0, 0, "hej hej").unwrap();
        tx.commit();
        let change = last_change(&doc);
        let actors: Vec<&ActorId> = change.actors().collect();
        let bytes = change.raw_bytes();
        let rows = change.len();
        assert!(from_chunk(bytes, rows, &actors).is_some());
        // A compressed chunk.
        let mut compressed = bytes.to_vec();
        compressed[8] = 2;
        assert_eq!(from_chunk(&compressed, rows, &actors), None);
        // More or fewer operations than the change has.
        assert_eq!(from_chunk(bytes, rows + 1, &actors), None);
        assert_eq!(from_chunk(bytes, rows - 1, &actors), None);
        // An actor the change does not name.
        assert_eq!(from_chunk(bytes, rows, &[]), None);
        // Cut anywhere.
        for cut in 0..bytes.len() {
            assert_eq!(
                from_chunk(&bytes[..cut], rows, &actors),
                None,
                "cut at {cut}"
            );
        }
        // Whatever the path, the answer is Automerge's.
        assert_eq!(touched(&change), from_decoded(&change));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Put(u8, u8),
        Delete(u8),
        NewText(u8),
        Splice(u8, u8, String),
        NewList(u8),
        Insert(u8, String),
        Increment(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Step::Put(k, v)),
            any::<u8>().prop_map(Step::Delete),
            any::<u8>().prop_map(Step::NewText),
            (any::<u8>(), any::<u8>(), "[a-zåäö0-9 ]{0,40}")
                .prop_map(|(t, at, s)| Step::Splice(t, at, s)),
            any::<u8>().prop_map(Step::NewList),
            (any::<u8>(), "[a-z]{0,8}").prop_map(|(l, s)| Step::Insert(l, s)),
            any::<u8>().prop_map(Step::Increment),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever mix of operations, over one or two changes by two actors, the columns say
        /// what Automerge's decoding says.
        #[test]
        fn the_columns_agree_with_automerges_decoding(
            first in proptest::collection::vec(step(), 1..30),
            second in proptest::collection::vec(step(), 1..30),
        ) {
            let mut doc = Automerge::new().with_actor(ActorId::from(&b"one"[..]));
            let mut texts: Vec<ObjId> = Vec::new();
            let mut lists: Vec<ObjId> = Vec::new();
            for (round, steps) in [first, second].into_iter().enumerate() {
                if round == 1 {
                    doc = doc.fork().with_actor(ActorId::from(&b"two"[..]));
                }
                let mut tx = doc.transaction();
                for step in steps {
                    match step {
                        Step::Put(k, v) => {
                            tx.put(ROOT, format!("k{}", k % 8), format!("v{v}")).unwrap();
                        }
                        Step::Delete(k) => {
                            let _ = tx.delete(ROOT, format!("k{}", k % 8));
                        }
                        Step::NewText(k) => {
                            texts.push(tx.put_object(ROOT, format!("t{}", k % 4), ObjType::Text).unwrap());
                        }
                        Step::Splice(t, at, s) if !texts.is_empty() => {
                            let text = texts[t as usize % texts.len()].clone();
                            let len = tx.length(&text);
                            let at = if len == 0 { 0 } else { at as usize % (len + 1) };
                            let _ = tx.splice_text(&text, at, 0, &s);
                        }
                        Step::NewList(k) => {
                            lists.push(tx.put_object(ROOT, format!("l{}", k % 4), ObjType::List).unwrap());
                        }
                        Step::Insert(l, s) if !lists.is_empty() => {
                            let list = lists[l as usize % lists.len()].clone();
                            let _ = tx.insert(&list, 0, s);
                        }
                        Step::Increment(k) => {
                            let key = format!("c{}", k % 3);
                            if tx.get(ROOT, &key).unwrap().is_none() {
                                tx.put(ROOT, &key, automerge::ScalarValue::counter(0)).unwrap();
                            } else {
                                let _ = tx.increment(ROOT, &key, 1);
                            }
                        }
                        _ => {}
                    }
                }
                tx.commit();
                if let Some(hash) = doc.get_heads().first().copied() {
                    let change = doc.get_change_by_hash(&hash).unwrap();
                    let from_bytes = from_columns(&change);
                    prop_assert!(from_bytes.is_some(), "an honest change is read");
                    prop_assert_eq!(from_bytes.unwrap(), from_decoded(&change));
                }
            }
        }
    }
}
