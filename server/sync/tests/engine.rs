//! Drives several engines wired in memory, with no sockets and no clock, until they are quiet.
//!
//! Every node's output is executed by the one driver ([`sfs_sync::driver::Driver`]) over an
//! in-memory store; the harness takes the frames the driver released and delivers them. Tests
//! of the engine's own decisions call the engine directly ([`Driver::engine_mut`]), look at its
//! output, and hand it to the driver ([`Federation::absorb`]).

use std::collections::{BTreeMap, VecDeque};

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ReadDoc, ROOT};
use std::sync::Arc;

use sfs_sync::{
    ConnId, Driver, EditError, Engine, EngineConfig, EngineError, Frame, LogEvent, MemoryStorage,
    NodeId, Output, RecordingTransport, Released, ShareableDocId, StatusCode, Storage,
};

/// A hub and some cities (and, in the three-level tests, county hubs), each link a pair of
/// in-memory queues.
struct Federation {
    engines: BTreeMap<String, TestDriver>,
    /// link id -> (the node that dials, the hub it dials: national or county); both sides use
    /// the same conn id.
    links: BTreeMap<ConnId, (String, String)>,
    queue: VecDeque<(String, ConnId, Frame)>,
    frames_delivered: usize,
    /// Encoded size of the frames delivered, counted the way the transport would.
    bytes_delivered: usize,
    closes: Vec<(String, ConnId, StatusCode, String)>,
    events: Vec<LogEvent>,
}

impl Federation {
    fn new(cities: &[&str]) -> Federation {
        let mut engines = BTreeMap::new();
        let hub = NodeId::hub("national").unwrap();
        engines.insert("hub".to_string(), driver(engine(hub)));
        for city in cities {
            engines.insert(
                city.to_string(),
                driver(engine(NodeId::city(city).unwrap())),
            );
        }
        Federation {
            engines,
            links: BTreeMap::new(),
            queue: VecDeque::new(),
            frames_delivered: 0,
            bytes_delivered: 0,
            closes: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Three levels: the national hub (`hub`), county hubs each with its cities, and cities
    /// linked to the national hub directly. Every node knows the national hub's identity. No
    /// link is open yet.
    fn three_level(counties: &[(&str, &[&str])], direct: &[&str]) -> Federation {
        let hub = NodeId::hub("national").unwrap();
        let mut nodes = vec![("hub".to_string(), hub.clone())];
        for (county, cities) in counties {
            nodes.push((county.to_string(), NodeId::county(county).unwrap()));
            for city in *cities {
                nodes.push((city.to_string(), NodeId::city(city).unwrap()));
            }
        }
        for city in direct {
            nodes.push((city.to_string(), NodeId::city(city).unwrap()));
        }
        let mut fed = Federation::new(&[]);
        for (name, id) in nodes {
            let actor = sfs_sync::run_actor(&id, [7; 8]);
            let config = EngineConfig {
                national_hub: Some(hub.clone()),
                ..EngineConfig::default()
            };
            fed.engines
                .insert(name, driver(Engine::new(id, actor, config)));
        }
        fed
    }

    fn connect(&mut self, city: &str, link: ConnId) {
        self.connect_to(city, "hub", link);
    }

    /// Opens link `link` from `lower` (a city or a county hub) to `upper` (a county hub or the
    /// national hub), each side starting from the sync states it stored for the other.
    fn connect_to(&mut self, lower: &str, upper: &str, link: ConnId) {
        self.links
            .insert(link, (lower.to_string(), upper.to_string()));
        let upper_id = self.engines[upper].lock_engine().me().clone();
        let lower_id = self.engines[lower].lock_engine().me().clone();
        let stored = self.states_of(lower, upper);
        let out = self
            .engines
            .get_mut(lower)
            .unwrap()
            .engine_mut()
            .connect(link, upper_id, stored, 0);
        self.absorb(lower, out);
        let stored = self.states_of(upper, lower);
        let out = self
            .engines
            .get_mut(upper)
            .unwrap()
            .engine_mut()
            .connect(link, lower_id, stored, 0);
        self.absorb(upper, out);
    }

    fn disconnect(&mut self, link: ConnId) {
        let (city, hub) = self.links.remove(&link).unwrap();
        let out = self
            .engines
            .get_mut(&city)
            .unwrap()
            .engine_mut()
            .disconnect(link);
        self.absorb(&city, out);
        let out = self
            .engines
            .get_mut(&hub)
            .unwrap()
            .engine_mut()
            .disconnect(link);
        self.absorb(&hub, out);
        self.queue.retain(|(_, l, _)| *l != link);
    }

    /// The sync states `node` persisted for links with `peer`.
    fn states_of(&self, node: &str, peer: &str) -> Vec<(ShareableDocId, Vec<u8>)> {
        let peer = self.engines[peer].lock_engine().me().clone();
        self.engines[node].storage().sync_states_for(&peer).unwrap()
    }

    /// `node` loses every sync state it stored (a restore from an old backup, say).
    fn forget_sync_states(&self, node: &str) {
        let storage = self.engines[node].storage();
        let docs: Vec<ShareableDocId> = self.engines[node]
            .lock_engine()
            .documents()
            .map(|(id, _)| id.clone())
            .collect();
        for doc in docs {
            storage.remove_sync_states(&doc).unwrap();
        }
        storage.sync().unwrap();
    }

    fn other_end(&self, from: &str, link: ConnId) -> Option<String> {
        let (city, hub) = self.links.get(&link)?;
        Some(if from == city {
            hub.clone()
        } else {
            city.clone()
        })
    }

    /// Hands an output of `from`'s engine to its driver, and queues what the driver released.
    fn absorb(&mut self, from: &str, out: Output) {
        let driver = &self.engines[from];
        driver
            .perform(move |_| out)
            .expect("the in-memory store takes writes");
        for released in driver.transport().take() {
            match released {
                Released::Frame(link, frame) => {
                    self.queue.push_back((from.to_string(), link, frame))
                }
                Released::Close(link, reason) => {
                    self.closes
                        .push((from.to_string(), link, reason.code, reason.message))
                }
                Released::Event(event) => self.events.push(event),
                Released::Changed(_) | Released::End(_) => {}
            }
        }
    }

    /// Delivers frames until none are left; bounded so a livelock fails the test.
    fn run_until_quiet(&mut self) {
        for _ in 0..100_000 {
            let Some((from, link, frame)) = self.queue.pop_front() else {
                return;
            };
            let Some(to) = self.other_end(&from, link) else {
                continue;
            };
            self.frames_delivered += 1;
            self.bytes_delivered += frame_size(&frame);
            let out = self
                .engines
                .get_mut(&to)
                .unwrap()
                .engine_mut()
                .receive(link, frame, 0);
            self.absorb(&to, out);
        }
        panic!("federation did not go quiet");
    }

    fn add_lesson(&mut self, city: &str, key: &str, title: &str) {
        let doc = ShareableDocId::lessons(city).unwrap();
        let (_, out) = self
            .engines
            .get_mut(city)
            .unwrap()
            .engine_mut()
            .edit(&doc, 0, |tx| -> Result<(), automerge::AutomergeError> {
                tx.put(ROOT, key, title)?;
                Ok(())
            })
            .unwrap();
        self.absorb(city, out);
    }

    fn lesson(&self, node: &str, city: &str, key: &str) -> Option<String> {
        let engine = self.engines[node].lock_engine();
        let doc = engine.document(&ShareableDocId::lessons(city).unwrap())?;
        let (value, _) = doc.get(ROOT, key).unwrap()?;
        Some(value.into_string().unwrap())
    }
}

/// About the size of a frame on the wire: its payload bytes plus a little framing.
fn frame_size(frame: &Frame) -> usize {
    8 + match frame {
        Frame::Hello { .. } | Frame::Keepalive | Frame::SummaryRequest => 4,
        Frame::Summary(summary) => {
            summary.digest.len()
                + summary
                    .docs
                    .iter()
                    .map(|(doc, heads)| doc.as_str().len() + 32 * heads.len() + 4)
                    .sum::<usize>()
        }
        Frame::DocSync { doc, message, .. } => doc.as_str().len() + message.len(),
        Frame::Goodbye { message, .. } => 4 + message.len(),
    }
}

/// A node's one driver over an in-memory store, releasing to a recording transport.
type TestDriver = Driver<Arc<MemoryStorage>, RecordingTransport>;

fn driver(engine: Engine) -> TestDriver {
    Driver::open(
        engine,
        Arc::new(MemoryStorage::new()),
        RecordingTransport::new(),
    )
    .unwrap()
}

fn engine(me: NodeId) -> Engine {
    let actor = sfs_sync::run_actor(&me, [7; 8]);
    Engine::new(me, actor, EngineConfig::default())
}

#[test]
fn a_lesson_travels_from_one_city_to_another_through_the_hub() {
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.run_until_quiet();
    fed.add_lesson("helsingborg", "l1", "Hotel staff training works");
    fed.run_until_quiet();
    assert_eq!(
        fed.lesson("hub", "helsingborg", "l1").as_deref(),
        Some("Hotel staff training works")
    );
    assert_eq!(
        fed.lesson("malmo", "helsingborg", "l1").as_deref(),
        Some("Hotel staff training works")
    );
    assert!(fed.closes.is_empty(), "{:?}", fed.closes);
}

#[test]
fn an_offline_city_catches_up_and_its_own_writes_go_out() {
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    fed.connect("helsingborg", 1);
    fed.add_lesson("malmo", "m1", "written while offline");
    fed.add_lesson("helsingborg", "h1", "written while malmo was away");
    fed.run_until_quiet();
    fed.connect("malmo", 2);
    fed.run_until_quiet();
    assert_eq!(
        fed.lesson("malmo", "helsingborg", "h1").as_deref(),
        Some("written while malmo was away")
    );
    assert_eq!(
        fed.lesson("helsingborg", "malmo", "m1").as_deref(),
        Some("written while offline")
    );
}

#[test]
fn a_reconnect_with_nothing_changed_sends_no_sync_messages() {
    let mut fed = Federation::new(&["helsingborg"]);
    fed.connect("helsingborg", 1);
    fed.add_lesson("helsingborg", "h1", "one");
    fed.run_until_quiet();
    fed.disconnect(1);
    fed.connect("helsingborg", 2);
    fed.frames_delivered = 0;
    fed.run_until_quiet();
    // Hello and Summary from each side, nothing else.
    assert_eq!(fed.frames_delivered, 4);
    // And the next change costs one message there and one acknowledgement back.
    fed.add_lesson("helsingborg", "h2", "two");
    fed.frames_delivered = 0;
    fed.run_until_quiet();
    assert_eq!(fed.frames_delivered, 2);
    assert_eq!(
        fed.lesson("hub", "helsingborg", "h2").as_deref(),
        Some("two")
    );
}

/// A federation whose one city holds `docs` lesson documents of other cities, all in step.
fn federation_with_many_documents(docs: usize) -> Federation {
    let mut fed = Federation::new(&["helsingborg"]);
    for i in 0..docs {
        let city = format!("city{i}");
        let mut engine = engine(NodeId::city(&city).unwrap());
        let doc = ShareableDocId::lessons(&city).unwrap();
        let _ = engine
            .edit(&doc, 0, |tx| -> Result<(), automerge::AutomergeError> {
                tx.put(ROOT, "first", city.as_str())?;
                Ok(())
            })
            .unwrap();
        let saved = engine.document(&doc).unwrap().save();
        fed.engines
            .get_mut("hub")
            .unwrap()
            .engine_mut()
            .load_document(doc, Automerge::load(&saved).unwrap(), 0);
    }
    fed.connect("helsingborg", 1);
    fed.run_until_quiet();
    fed.disconnect(1);
    fed
}

#[test]
fn a_reconnect_costs_the_same_whatever_the_number_of_unchanged_documents() {
    let mut costs = Vec::new();
    for docs in [10, 300] {
        let mut fed = federation_with_many_documents(docs);
        assert_eq!(
            fed.engines["helsingborg"].lock_engine().documents().count(),
            docs,
            "the city holds every document"
        );
        fed.connect("helsingborg", 2);
        fed.frames_delivered = 0;
        fed.bytes_delivered = 0;
        fed.run_until_quiet();
        costs.push((fed.frames_delivered, fed.bytes_delivered));
    }
    // Hello and a summary of no changes from each side, under 1 KB, for 10 or 300 documents.
    assert_eq!(costs[0], costs[1]);
    assert_eq!(costs[1].0, 4);
    assert!(costs[1].1 < 1024, "{} bytes", costs[1].1);
}

#[test]
fn a_reconnect_with_one_changed_document_syncs_that_document_only() {
    let mut fed = federation_with_many_documents(300);
    fed.add_lesson("helsingborg", "h1", "written while away");
    fed.connect("helsingborg", 2);
    fed.frames_delivered = 0;
    let mut synced = std::collections::BTreeSet::new();
    for _ in 0..1000 {
        let Some((from, link, frame)) = fed.queue.pop_front() else {
            break;
        };
        if let Frame::DocSync { doc, .. } = &frame {
            synced.insert(doc.clone());
        }
        let to = fed.other_end(&from, link).unwrap();
        fed.frames_delivered += 1;
        let out = fed
            .engines
            .get_mut(&to)
            .unwrap()
            .engine_mut()
            .receive(link, frame, 0);
        fed.absorb(&to, out);
    }
    assert!(fed.queue.is_empty());
    assert_eq!(
        synced.into_iter().collect::<Vec<_>>(),
        vec![ShareableDocId::lessons("helsingborg").unwrap()]
    );
    // Hello and summary each way, the change, its acknowledgement.
    assert_eq!(fed.frames_delivered, 6);
    assert_eq!(
        fed.lesson("hub", "helsingborg", "h1").as_deref(),
        Some("written while away")
    );
}

#[test]
fn a_summary_that_does_not_add_up_is_answered_with_a_complete_one() {
    let mut fed = federation_with_many_documents(20);
    // The city lost what it remembered of the last sync (say, a restore from an old backup):
    // the hub's summary of changes lists nothing, which does not add up at the city.
    fed.forget_sync_states("helsingborg");
    fed.add_lesson("helsingborg", "h1", "after the restore");
    fed.connect("helsingborg", 2);
    let mut requests = 0;
    for _ in 0..10_000 {
        let Some((from, link, frame)) = fed.queue.pop_front() else {
            break;
        };
        if frame == Frame::SummaryRequest {
            requests += 1;
        }
        let to = fed.other_end(&from, link).unwrap();
        let out = fed
            .engines
            .get_mut(&to)
            .unwrap()
            .engine_mut()
            .receive(link, frame, 0);
        fed.absorb(&to, out);
    }
    assert!(fed.queue.is_empty());
    assert_eq!(requests, 1);
    assert!(fed.closes.is_empty(), "{:?}", fed.closes);
    assert_eq!(
        fed.lesson("hub", "helsingborg", "h1").as_deref(),
        Some("after the restore")
    );
    // Both sides are in step on every document.
    for (doc, hub_doc) in fed.engines["hub"].lock_engine().documents() {
        let city = fed.engines["helsingborg"].lock_engine();
        let city_doc = city.document(doc).unwrap();
        assert_eq!(city_doc.get_heads(), hub_doc.get_heads(), "{doc}");
    }
}

#[test]
fn a_city_cannot_edit_what_it_does_not_own() {
    let mut fed = Federation::new(&["helsingborg"]);
    let method = ShareableDocId::parse("national/method").unwrap();
    let err = fed
        .engines
        .get_mut("helsingborg")
        .unwrap()
        .engine_mut()
        .edit(&method, 0, |tx| -> Result<(), automerge::AutomergeError> {
            tx.put(ROOT, "x", "y")
        })
        .unwrap_err();
    assert!(matches!(err, EditError::Engine(_)));
}

#[test]
fn changes_to_a_document_the_peer_does_not_own_are_refused_and_not_applied() {
    for target in ["national/method", "shared/lessons/malmo"] {
        let mut fed = Federation::new(&["helsingborg", "malmo"]);
        fed.connect("malmo", 2);
        fed.add_lesson("malmo", "m1", "honest");
        fed.connect("helsingborg", 1);
        fed.run_until_quiet();
        let doc = ShareableDocId::parse(target).unwrap();
        let heads_before = fed.engines["hub"]
            .lock_engine()
            .document(&doc)
            .map(|d| d.get_heads());

        // A rogue Helsingborg forges a change and sends it as a sync message.
        let mut forged = Automerge::new();
        forged.transact(|tx| tx.put(ROOT, "m1", "forged")).unwrap();
        let mut state = automerge::sync::State::new();
        let empty = Automerge::new();
        let request = empty
            .generate_sync_message(&mut automerge::sync::State::new())
            .unwrap();
        forged.receive_sync_message(&mut state, request).unwrap();
        let message = forged.generate_sync_message(&mut state).unwrap();
        assert!(!message.changes.is_empty());
        let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
            1,
            Frame::DocSync {
                generation: 0,
                doc: doc.clone(),
                message: message.encode(),
            },
            0,
        );
        assert_eq!(out.closes.len(), 1, "{target}");
        assert_eq!(out.closes[0].1.code, StatusCode::PermissionDenied);
        assert!(out.persist_docs.is_empty());
        assert!(out
            .events
            .iter()
            .any(|e| matches!(e, LogEvent::Refused { .. })));
        let heads_after = fed.engines["hub"]
            .lock_engine()
            .document(&doc)
            .map(|d| d.get_heads());
        assert_eq!(heads_before, heads_after, "{target}: nothing applied");
        assert_eq!(fed.lesson("hub", "malmo", "m1").as_deref(), Some("honest"));
    }
}

#[test]
fn a_wrong_protocol_version_is_refused() {
    let mut fed = Federation::new(&["helsingborg"]);
    let city = NodeId::city("helsingborg").unwrap();
    let hub = fed.engines.get_mut("hub").unwrap().engine_mut();
    let _ = hub.connect(9, city, Vec::new(), 0);
    let out = hub.receive(
        9,
        Frame::Hello {
            protocol_version: 99,
        },
        0,
    );
    assert_eq!(out.closes[0].1.code, StatusCode::FailedPrecondition);
}

#[test]
fn quiet_links_get_keepalives_and_silent_peers_are_dropped() {
    let mut fed = Federation::new(&["helsingborg"]);
    fed.connect("helsingborg", 1);
    fed.run_until_quiet();
    let hub = fed.engines.get_mut("hub").unwrap().engine_mut();
    let out = hub.tick(20_000);
    assert!(matches!(out.sends.as_slice(), [(1, Frame::Keepalive)]));
    let out = hub.tick(61_000);
    assert_eq!(out.closes[0].1.code, StatusCode::DeadlineExceeded);
    assert_eq!(hub.links().count(), 0);
}

#[test]
fn a_failed_write_forgets_the_unsaved_change_closes_links_and_snapshots_next() {
    let mut fed = Federation::new(&["lund"]);
    fed.connect("lund", 1);
    let doc = ShareableDocId::lessons("lund").unwrap();
    let mut stored = Vec::new();
    for key in ["a", "b"] {
        let (_, out) = fed
            .engines
            .get_mut("lund")
            .unwrap()
            .engine_mut()
            .edit(&doc, 0, |tx| -> Result<(), automerge::AutomergeError> {
                tx.put(ROOT, key, "v")
            })
            .unwrap();
        assert_eq!(out.persist_docs[0].kind, sfs_sync::PersistKind::Incremental);
        stored.extend(out.persist_docs[0].bytes.clone());
        fed.absorb("lund", out);
    }
    fed.run_until_quiet();
    // The third edit cannot be stored: its output is dropped, as the node does.
    let lund = fed.engines.get_mut("lund").unwrap().engine_mut();
    let (_, lost) = lund
        .edit(&doc, 0, |tx| -> Result<(), automerge::AutomergeError> {
            tx.put(ROOT, "c", "lost")
        })
        .unwrap();
    drop(lost);
    let out = lund.persist_failed(&doc, Some(Automerge::load(&stored).unwrap()));
    assert_eq!(out.closes.len(), 1, "every link is closed");
    assert_eq!(out.closes[0].1.code, StatusCode::Unavailable);
    let document = lund.document(&doc).unwrap();
    assert!(
        document.get(ROOT, "c").unwrap().is_none(),
        "the unsaved change is forgotten"
    );
    assert!(
        document.get(ROOT, "b").unwrap().is_some(),
        "what was stored stays"
    );
    // The next write stores the whole document, and the link resyncs from what is stored.
    let (_, out) = lund
        .edit(&doc, 0, |tx| -> Result<(), automerge::AutomergeError> {
            tx.put(ROOT, "d", "v")
        })
        .unwrap();
    assert_eq!(out.persist_docs[0].kind, sfs_sync::PersistKind::Snapshot);
    let reloaded = Automerge::load(&out.persist_docs[0].bytes).unwrap();
    assert_eq!(
        reloaded.get_heads(),
        lund.document(&doc).unwrap().get_heads()
    );
    fed.absorb("lund", out);
    fed.disconnect(1);
    fed.connect("lund", 2);
    fed.run_until_quiet();
    assert_eq!(fed.lesson("hub", "lund", "d").as_deref(), Some("v"));
    assert_eq!(fed.lesson("hub", "lund", "c"), None);
}

#[test]
fn messages_outside_what_an_honest_peer_sends_are_refused() {
    let mut fed = Federation::new(&["helsingborg"]);
    fed.connect("helsingborg", 1);
    fed.run_until_quiet();
    let heads: Vec<automerge::ChangeHash> = (0..2000u32)
        .map(|i| {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&i.to_be_bytes());
            automerge::ChangeHash(bytes)
        })
        .collect();
    let message = automerge::sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: automerge::sync::ChunkList::empty(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
        1,
        Frame::DocSync {
            doc,
            generation: 0,
            message: message.encode(),
        },
        0,
    );
    assert_eq!(out.closes.len(), 1);
    assert_eq!(out.closes[0].1.code, StatusCode::InvalidArgument);
    assert!(
        out.closes[0].1.message.contains("2000 heads"),
        "{}",
        out.closes[0].1.message
    );
    // Garbage that does not decode is refused too, and the engine goes on serving others.
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.run_until_quiet();
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
        1,
        Frame::DocSync {
            doc,
            generation: 0,
            message: vec![0x42, 0xff, 0xff, 0xff, 0xff, 0xff],
        },
        0,
    );
    assert_eq!(out.closes[0].1.code, StatusCode::InvalidArgument);
    fed.add_lesson("malmo", "m1", "still flowing");
    fed.run_until_quiet();
    assert_eq!(
        fed.lesson("hub", "malmo", "m1").as_deref(),
        Some("still flowing")
    );
}

#[test]
fn compressed_changes_and_documents_beyond_their_bounds_are_refused_before_automerge_inflates_them()
{
    // A document whose saved form is small but inflates to megabytes: a bomb, as a peer could
    // send it, as a whole document and as a compressed change.
    let mut bomb = Automerge::new().with_actor(sfs_sync::run_actor(
        &NodeId::city("helsingborg").unwrap(),
        [9; 8],
    ));
    bomb.transact(|tx| tx.put(ROOT, "l1", "x".repeat(4 * 1024 * 1024)))
        .unwrap();
    let whole = bomb.save();
    assert!(whole.len() < 64 * 1024, "the document compresses well");
    let mut change = bomb.get_last_local_change().unwrap().clone();
    let compressed = change.bytes().to_vec();
    assert!(compressed.len() < 64 * 1024, "the change compresses well");
    // A plain change with the bomb hidden behind it in the same entry.
    let mut small = Automerge::new().with_actor(sfs_sync::run_actor(
        &NodeId::city("helsingborg").unwrap(),
        [8; 8],
    ));
    small.transact(|tx| tx.put(ROOT, "l0", "plain")).unwrap();
    let plain = small.get_last_local_change().unwrap().raw_bytes().to_vec();
    let smuggled = [plain.clone(), whole.clone()].concat();
    let trailing = [whole.clone(), plain.clone()].concat();
    let message = |chunks: Vec<Vec<u8>>| {
        automerge::sync::Message {
            heads: bomb.get_heads(),
            need: Vec::new(),
            have: Vec::new(),
            changes: chunks.into(),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        }
        .encode()
    };
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    for (chunks, expected) in [
        (vec![compressed], "a compressed change"),
        (vec![smuggled], "one plain change per entry"),
        (
            vec![plain, whole.clone()],
            "a whole document beside other chunks",
        ),
        (vec![trailing], "exactly one document is accepted"),
    ] {
        let fed = hub_refuses_bytes_and_goes_on(message(chunks), expected, |_| {});
        assert!(
            fed.engines["hub"].lock_engine().document(&doc).is_none(),
            "nothing applied"
        );
    }
    // Whole, alone in its message, it is inflated only within the bytes a document may take.
    let config = EngineConfig {
        max_document_bytes: 1024 * 1024,
        ..EngineConfig::default()
    };
    let fed = hub_with_config_refuses(
        config,
        message(vec![whole]),
        StatusCode::ResourceExhausted,
        "does not inflate within the 1048576 bytes",
    );
    assert!(fed.engines["hub"].lock_engine().document(&doc).is_none());
}

/// Sends `message` for Helsingborg's lessons from Helsingborg to a hub (after `prepare`), and
/// checks that the hub closes that link with `INVALID_ARGUMENT` naming `expected`, while Malmö
/// keeps syncing. Returns the federation for further checks.
fn hub_refuses_and_goes_on(
    message: automerge::sync::Message,
    expected: &str,
    prepare: impl FnOnce(&mut Federation),
) -> Federation {
    hub_refuses_bytes_and_goes_on(message.encode(), expected, prepare)
}

/// [`hub_refuses_and_goes_on`] for a message already encoded.
fn hub_refuses_bytes_and_goes_on(
    message: Vec<u8>,
    expected: &str,
    prepare: impl FnOnce(&mut Federation),
) -> Federation {
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    prepare(&mut fed);
    refused_and_going_on(fed, message, StatusCode::InvalidArgument, expected)
}

/// Like [`hub_refuses_bytes_and_goes_on`] with a hub holding peers to `config`, refusing with
/// `code`.
fn hub_with_config_refuses(
    config: EngineConfig,
    message: Vec<u8>,
    code: StatusCode,
    expected: &str,
) -> Federation {
    let fed = federation_with_hub_config(&["helsingborg", "malmo"], config);
    refused_and_going_on(fed, message, code, expected)
}

fn refused_and_going_on(
    mut fed: Federation,
    message: Vec<u8>,
    code: StatusCode,
    expected: &str,
) -> Federation {
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.run_until_quiet();
    let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
        1,
        Frame::DocSync {
            generation: 0,
            doc: ShareableDocId::lessons("helsingborg").unwrap(),
            message,
        },
        0,
    );
    assert_eq!(out.closes.len(), 1, "{expected}");
    assert_eq!(out.closes[0].1.code, code);
    assert!(
        out.closes[0].1.message.contains(expected),
        "{}",
        out.closes[0].1.message
    );
    fed.add_lesson("malmo", "m1", "still flowing");
    fed.run_until_quiet();
    assert_eq!(
        fed.lesson("hub", "malmo", "m1").as_deref(),
        Some("still flowing")
    );
    fed
}

#[test]
fn engines_send_plain_changes_only_even_when_the_peer_lacks_most_of_a_document() {
    let mut fed = Federation::new(&["helsingborg"]);
    // Local edits wait for a push, as in the node: a burst goes out as one message.
    let me = NodeId::city("helsingborg").unwrap();
    let config = EngineConfig {
        defer_local_pushes: true,
        ..EngineConfig::default()
    };
    let city = Engine::new(me.clone(), sfs_sync::run_actor(&me, [7; 8]), config);
    fed.engines.insert("helsingborg".to_string(), driver(city));
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    fed.connect("helsingborg", 1);
    fed.add_lesson("helsingborg", "l0", "first");
    let out = fed
        .engines
        .get_mut("helsingborg")
        .unwrap()
        .engine_mut()
        .push_pending(0);
    fed.absorb("helsingborg", out);
    fed.run_until_quiet();
    // The hub now lacks almost all of the document: Automerge alone would send it whole and
    // compressed to a peer that advertised version-2 messages, as every peer does.
    for i in 1..=20 {
        fed.add_lesson("helsingborg", &format!("l{i}"), &"a lesson ".repeat(100));
    }
    let out = fed
        .engines
        .get_mut("helsingborg")
        .unwrap()
        .engine_mut()
        .push_pending(0);
    fed.absorb("helsingborg", out);
    let mut chunks = 0;
    for (_, _, frame) in &fed.queue {
        if let Frame::DocSync { message, .. } = frame {
            let message = automerge::sync::Message::decode(message).unwrap();
            for chunk in message.changes.iter() {
                assert_eq!(chunk[8], 1, "only plain change chunks are sent");
                chunks += 1;
            }
        }
    }
    assert_eq!(chunks, 20, "every change went as its own chunk");
    fed.run_until_quiet();
    assert_eq!(
        fed.engines["hub"]
            .lock_engine()
            .document(&doc)
            .unwrap()
            .get_heads(),
        fed.engines["helsingborg"]
            .lock_engine()
            .document(&doc)
            .unwrap()
            .get_heads()
    );
}

#[test]
fn too_many_changes_in_one_message_or_documents_in_one_summary_are_refused() {
    let mut fed = Federation::new(&["helsingborg"]);
    fed.connect("helsingborg", 1);
    fed.run_until_quiet();
    let message = automerge::sync::Message {
        heads: Vec::new(),
        need: Vec::new(),
        have: Vec::new(),
        changes: vec![Vec::new(); sfs_sync::screen::MAX_CHUNKS + 1].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
        1,
        Frame::DocSync {
            generation: 0,
            doc: ShareableDocId::lessons("helsingborg").unwrap(),
            message: message.encode(),
        },
        0,
    );
    assert_eq!(out.closes.len(), 1);
    assert!(
        out.closes[0]
            .1
            .message
            .contains("change chunks (at most 100000)"),
        "{}",
        out.closes[0].1.message
    );
    // A summary naming more documents than any peer may have.
    let me = NodeId::hub("national").unwrap();
    let mut hub = Engine::new(
        me.clone(),
        sfs_sync::run_actor(&me, [1; 8]),
        EngineConfig {
            max_docs_per_peer: 5,
            ..EngineConfig::default()
        },
    );
    let _ = hub.connect(7, NodeId::city("lund").unwrap(), Vec::new(), 0);
    let _ = hub.receive(
        7,
        Frame::Hello {
            protocol_version: sfs_sync::PROTOCOL_VERSION,
        },
        0,
    );
    let docs: Vec<_> = (0..6)
        .map(|i| {
            (
                ShareableDocId::lessons(&format!("c{i}")).unwrap(),
                Vec::new(),
            )
        })
        .collect();
    let out = hub.receive(
        7,
        Frame::Summary(sfs_sync::Summary {
            docs,
            only_changed: false,
            digest: [0; 32],
            generations: Vec::new(),
        }),
        0,
    );
    assert_eq!(out.closes.len(), 1);
    assert_eq!(out.closes[0].1.code, StatusCode::ResourceExhausted);
    assert!(
        out.closes[0]
            .1
            .message
            .contains("6 documents; the limit is 5"),
        "{}",
        out.closes[0].1.message
    );
    assert!(hub.links().next().is_none());
}

/// Found by the `receive_path` fuzz target: Automerge divides by a Bloom filter's size and
/// loops once per probe, trusting the sender. A filter with entries but no bits (a panic), or
/// with four billion probes (gigabytes and minutes under the engine lock), is refused before
/// Automerge sees it; other cities go on.
#[test]
fn bloom_filters_with_parameters_no_honest_peer_uses_are_refused() {
    let cases: [(&[u8], &str); 3] = [
        // 1 entry, 0 bits per entry, 0 probes: no bits at all.
        (&[1, 0, 0], "0 bits per entry"),
        // 1 entry, 8 bits per entry, 2^32 - 1 probes, one byte of bits.
        (
            &[1, 8, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xff],
            "4294967295 probes",
        ),
        // 1 entry, 10 bits per entry, 0 probes.
        (&[1, 10, 0, 0xff, 0xff], "0 probes"),
    ];
    for (bloom, expected) in cases {
        let message = automerge::sync::Message {
            heads: Vec::new(),
            need: Vec::new(),
            have: vec![automerge::sync::Have {
                last_sync: Vec::new(),
                bloom: automerge::sync::BloomFilter::try_from(bloom).unwrap(),
            }],
            changes: automerge::sync::ChunkList::empty(),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        };
        // The hub holds changes, so Automerge would consult the filter when it answers.
        hub_refuses_and_goes_on(message, expected, |fed| {
            fed.add_lesson("helsingborg", "h1", "held by the hub")
        });
    }
}

/// A real sync message from a city that has a lesson, to mutate.
fn honest_message() -> Vec<u8> {
    let mut city = Automerge::new();
    city.transact(|tx| tx.put(ROOT, "l1", "a lesson with some text in it"))
        .unwrap();
    let mut state = automerge::sync::State::new();
    let request = Automerge::new()
        .generate_sync_message(&mut automerge::sync::State::new())
        .unwrap();
    city.receive_sync_message(&mut state, request).unwrap();
    city.generate_sync_message(&mut state).unwrap().encode()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, .. proptest::prelude::ProptestConfig::default() })]

    /// Random and mutated messages never take the engine down: each is applied, or refused
    /// with a status that closes only the sender's link.
    #[test]
    fn mutated_messages_never_crash_the_hub(flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..8), truncate in 0usize..4096, random in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
        let mut fed = Federation::new(&["helsingborg", "malmo"]);
        fed.connect("helsingborg", 1);
        fed.connect("malmo", 2);
        fed.run_until_quiet();
        let mut message = honest_message();
        for (at, byte) in flips {
            let len = message.len();
            message[at % len] ^= byte;
        }
        message.truncate(truncate.max(1));
        let doc = ShareableDocId::lessons("helsingborg").unwrap();
        for bytes in [message, random] {
            let hub = fed.engines.get_mut("hub").unwrap().engine_mut();
            let out = hub.receive(1, Frame::DocSync { doc: doc.clone(), generation: 0, message: bytes }, 0);
            for (_, reason) in &out.closes {
                proptest::prop_assert!(matches!(reason.code, StatusCode::InvalidArgument | StatusCode::PermissionDenied | StatusCode::ResourceExhausted), "{reason:?}");
            }
        }
        // Malmö's link is unaffected.
        fed.add_lesson("malmo", "m1", "still flowing");
        fed.run_until_quiet();
        let lesson = fed.lesson("hub", "malmo", "m1");
        proptest::prop_assert_eq!(lesson.as_deref(), Some("still flowing"));
    }
}

#[test]
fn a_change_relayed_to_many_cities_in_step_is_one_message_for_all() {
    let cities: Vec<String> = (0..30).map(|i| format!("city{i}")).collect();
    let names: Vec<&str> = cities.iter().map(String::as_str).collect();
    let mut fed = Federation::new(&names);
    for (i, city) in names.iter().enumerate() {
        fed.connect(city, i as ConnId + 1);
    }
    fed.add_lesson("city0", "first", "in step");
    fed.run_until_quiet();
    fed.add_lesson("city0", "second", "relayed");
    // Deliver the change to the hub; collect what the hub sends on.
    let (from, link, frame) = fed.queue.pop_front().unwrap();
    assert_eq!(from, "city0");
    let out = fed
        .engines
        .get_mut("hub")
        .unwrap()
        .engine_mut()
        .receive(link, frame, 0);
    let relayed: Vec<&Vec<u8>> = out
        .sends
        .iter()
        .filter(|(to, _)| *to != link)
        .filter_map(|(_, frame)| match frame {
            Frame::DocSync { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(relayed.len(), 29, "every other city gets the change");
    assert!(relayed.windows(2).all(|w| w[0] == w[1]), "the same message");
    fed.absorb("hub", out);
    fed.run_until_quiet();
    for city in &names {
        assert_eq!(
            fed.lesson(city, "city0", "second").as_deref(),
            Some("relayed")
        );
    }
}

/// A sync message from `doc`'s holder carrying one change written by `actor` on top of `base`.
fn message_with_change_by(base: &Automerge, actor: ActorId) -> Vec<u8> {
    let mut forged = base.fork().with_actor(actor);
    forged.transact(|tx| tx.put(ROOT, "forged", "x")).unwrap();
    let mut receiver = base.fork();
    let (mut sent, mut received) = (automerge::sync::State::new(), automerge::sync::State::new());
    for _ in 0..10 {
        if let Some(m) = forged.generate_sync_message(&mut sent) {
            if !m.changes.is_empty() {
                return m.encode();
            }
            receiver.receive_sync_message(&mut received, m).unwrap();
        }
        if let Some(m) = receiver.generate_sync_message(&mut received) {
            forged.receive_sync_message(&mut sent, m).unwrap();
            // Shaped like the engine's own messages (plain changes, never a whole document),
            // so that it is the author check that refuses it.
            if let Some(caps) = sent.their_capabilities.as_mut() {
                caps.retain(|c| *c != automerge::sync::Capability::MessageV2);
            }
        }
    }
    panic!("no message with the change");
}

#[test]
fn a_city_cannot_write_its_own_document_under_another_nodes_actor() {
    let mut fed = Federation::new(&["lund", "malmo"]);
    fed.connect("lund", 1);
    fed.connect("malmo", 2);
    fed.add_lesson("lund", "l1", "honest");
    fed.run_until_quiet();
    let doc = ShareableDocId::lessons("lund").unwrap();
    let base = fed.engines["hub"]
        .lock_engine()
        .document(&doc)
        .unwrap()
        .clone();
    let heads_before = base.get_heads();
    let malmo = NodeId::city("malmo").unwrap();
    let hub = NodeId::hub("national").unwrap();
    for actor in [
        sfs_sync::run_actor(&malmo, [1; 8]),
        sfs_sync::run_actor(&hub, [1; 8]),
        ActorId::random(),
    ] {
        let message = message_with_change_by(&base, actor.clone());
        let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
            1,
            Frame::DocSync {
                generation: 0,
                doc: doc.clone(),
                message,
            },
            0,
        );
        assert_eq!(out.closes.len(), 1, "actor {actor}: the link is closed");
        assert_eq!(out.closes[0].1.code, StatusCode::PermissionDenied);
        assert!(out
            .events
            .iter()
            .any(|e| matches!(e, LogEvent::Refused { .. })));
        assert!(
            out.sends.iter().all(|(to, _)| *to == 1),
            "nothing is relayed to other cities"
        );
        assert_eq!(
            fed.engines["hub"]
                .lock_engine()
                .document(&doc)
                .unwrap()
                .get_heads(),
            heads_before,
            "nothing of it is applied"
        );
        fed.disconnect(1);
        fed.connect("lund", 1);
        fed.run_until_quiet();
    }
    // Lund's own edits still go through (edits at an older version are covered by the simulator).
    fed.add_lesson("lund", "l2", "still honest");
    fed.run_until_quiet();
    assert_eq!(
        fed.lesson("malmo", "lund", "l2").as_deref(),
        Some("still honest")
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile peers, round two
// ---------------------------------------------------------------------------------------------

/// A sync message with these fields and no changes, as a hand-written client would send it.
fn bare_message(
    heads: Vec<automerge::ChangeHash>,
    need: Vec<automerge::ChangeHash>,
    have: Vec<automerge::sync::Have>,
) -> automerge::sync::Message {
    automerge::sync::Message {
        heads,
        need,
        have,
        changes: Vec::<Vec<u8>>::new().into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    }
}

/// Encodes a version-1 sync message without changes by hand (Automerge's encoder asserts the
/// sorted order a hostile client need not keep): heads, needs and haves as given.
fn raw_message(
    heads: &[automerge::ChangeHash],
    need: &[automerge::ChangeHash],
    haves: &[Vec<automerge::ChangeHash>],
) -> Vec<u8> {
    let hashes = |out: &mut Vec<u8>, list: &[automerge::ChangeHash]| {
        out.push(list.len() as u8);
        for h in list {
            out.extend_from_slice(&h.0);
        }
    };
    let mut out = vec![0x42];
    hashes(&mut out, heads);
    hashes(&mut out, need);
    out.push(haves.len() as u8);
    for last_sync in haves {
        hashes(&mut out, last_sync);
        out.push(0); // an empty Bloom filter
    }
    out.push(0); // no changes
    out
}

/// The hashes of every change the hub holds of `doc`.
fn hub_hashes(fed: &Federation, doc: &ShareableDocId) -> Vec<automerge::ChangeHash> {
    fed.engines["hub"]
        .lock_engine()
        .document(doc)
        .unwrap()
        .get_changes(&[])
        .iter()
        .map(|c| c.hash())
        .collect()
}

/// Helsingborg with a few lessons the hub holds, so that its document has hashes to name.
fn with_lessons(fed: &mut Federation) {
    for i in 0..3 {
        fed.add_lesson("helsingborg", &format!("h{i}"), "a lesson");
    }
}

#[test]
fn lists_of_hashes_with_repeats_or_out_of_order_are_refused_before_automerge_sees_them() {
    // The issue's exact bytes: no heads, need [x, x], then a flags section with the reset flag —
    // Automerge 0.12 panics generating the reply. Every hash of the document is tried, and each
    // variant of the class.
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    let mut probe = Federation::new(&["helsingborg"]);
    probe.connect("helsingborg", 1);
    with_lessons(&mut probe);
    probe.run_until_quiet();
    let hashes = hub_hashes(&probe, &doc);
    assert_eq!(hashes.len(), 3);
    let mut sorted = hashes.clone();
    sorted.sort();
    let (lo, hi) = (sorted[0], sorted[2]);
    let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
    for x in &hashes {
        let mut issue = vec![0x42, 0x00, 0x02];
        issue.extend_from_slice(&x.0);
        issue.extend_from_slice(&x.0);
        issue.extend_from_slice(&[0x00, 0x00, 0x02, 0x02, 0x85]);
        cases.push((issue, "twice"));
        cases.push((raw_message(&[], &[*x, *x], &[]), "twice"));
        cases.push((raw_message(&[], &[*x, *x], &[vec![]]), "twice"));
    }
    cases.push((raw_message(&[], &[hi, lo], &[]), "not sorted"));
    cases.push((raw_message(&[lo, lo], &[], &[]), "twice"));
    cases.push((raw_message(&[hi, lo], &[], &[]), "not sorted"));
    cases.push((raw_message(&[], &[], &[vec![lo, lo]]), "twice"));
    cases.push((raw_message(&[], &[], &[vec![hi, lo]]), "not sorted"));
    cases.push((
        raw_message(&[], &[], &[vec![], vec![]]),
        "have entries (at most 1)",
    ));
    for (message, expected) in cases {
        let fed = hub_refuses_bytes_and_goes_on(message, expected, with_lessons);
        assert_eq!(hub_hashes(&fed, &doc).len(), 3, "the document is intact");
    }
}

#[test]
fn a_valid_change_beside_a_repeated_need_is_refused_whole_and_the_next_one_relayed_at_once() {
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    with_lessons(&mut fed);
    fed.run_until_quiet();
    let x = hub_hashes(&fed, &doc)[0];
    // Helsingborg's next change, taken from its own engine, in a message that also needs x twice.
    fed.add_lesson("helsingborg", "h9", "carried beside the attack");
    let (_, _, frame) = fed.queue.pop_front().unwrap();
    let Frame::DocSync { message, .. } = frame else {
        panic!("a sync message")
    };
    let mut message = automerge::sync::Message::decode(&message).unwrap();
    assert_eq!(message.changes.len(), 1);
    message.need = vec![x, x];
    let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
        1,
        Frame::DocSync {
            generation: 0,
            doc: doc.clone(),
            message: message.encode(),
        },
        0,
    );
    assert_eq!(out.closes.len(), 1);
    assert_eq!(out.closes[0].1.code, StatusCode::InvalidArgument);
    assert!(out.persist_docs.is_empty(), "nothing of it is stored");
    assert!(out.sends.iter().all(|(to, _)| *to == 1), "nothing relayed");
    assert_eq!(fed.lesson("hub", "helsingborg", "h9"), None);
    // Reconnected, the change arrives and is relayed to Malmö within the same run.
    fed.disconnect(1);
    fed.connect("helsingborg", 1);
    fed.run_until_quiet();
    assert_eq!(
        fed.lesson("malmo", "helsingborg", "h9").as_deref(),
        Some("carried beside the attack")
    );
}

/// A change whose chunk header does not carry its hash's checksum is one Automerge's
/// `load_incremental` would skip: the hub applies the changes it parsed itself, so it refuses
/// such a change (whichever checksum byte is wrong, and with a valid change before it) and
/// stores, applies and relays nothing of the message.
#[test]
fn a_change_that_does_not_match_its_checksum_is_refused_and_nothing_of_its_message_is_kept() {
    for (wrong_byte, with_valid_first) in [(4usize, false), (7, false), (5, true)] {
        let mut fed = Federation::new(&["helsingborg", "malmo"]);
        fed.connect("helsingborg", 1);
        fed.connect("malmo", 2);
        with_lessons(&mut fed);
        fed.run_until_quiet();
        fed.add_lesson("helsingborg", "h8", "valid");
        fed.add_lesson("helsingborg", "h9", "checksum changed");
        let mut chunks = Vec::new();
        while let Some((_, _, frame)) = fed.queue.pop_front() {
            if let Frame::DocSync { message, .. } = frame {
                let message = automerge::sync::Message::decode(&message).unwrap();
                chunks.extend(message.changes.iter().map(|c| c.to_vec()));
            }
        }
        assert_eq!(chunks.len(), 2, "two changes were sent");
        let mut bad = chunks[1].clone();
        bad[wrong_byte] ^= 0x01;
        assert!(
            automerge::Change::from_bytes(bad.clone()).is_ok(),
            "the change still parses: only the checksum catches it"
        );
        let carried = if with_valid_first {
            vec![chunks[0].clone(), bad]
        } else {
            vec![bad]
        };
        let message = automerge::sync::Message {
            heads: Vec::new(),
            need: Vec::new(),
            have: Vec::new(),
            changes: carried.into(),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        };
        let out = hub_receives_from_helsingborg(&mut fed, 0, message.encode());
        assert_closed(
            &out,
            StatusCode::InvalidArgument,
            "does not match its checksum",
        );
        assert!(out.persist_docs.is_empty(), "nothing of it is stored");
        assert!(out.sends.iter().all(|(to, _)| *to == 1), "nothing relayed");
        assert_eq!(fed.lesson("hub", "helsingborg", "h8"), None);
        assert_eq!(fed.lesson("hub", "helsingborg", "h9"), None);
    }
}

#[test]
fn a_goodbye_ends_the_link_for_the_driver_too() {
    let mut fed = Federation::new(&["helsingborg"]);
    fed.connect("helsingborg", 1);
    fed.add_lesson("helsingborg", "h1", "a lesson");
    fed.run_until_quiet();
    let hub = fed.engines.get_mut("hub").unwrap().engine_mut();
    let out = hub.receive(
        1,
        Frame::Goodbye {
            code: 0,
            message: "x".repeat(1_000_000),
        },
        0,
    );
    assert_eq!(out.ended, vec![1], "the driver is told to end the stream");
    assert!(out.sends.is_empty(), "no Goodbye is sent back");
    assert_eq!(hub.links().count(), 0);
    assert!(!out.persist_sync_states.is_empty(), "its states are kept");
}

/// The whole-document request a peer may send: no heads, an empty Bloom filter, and
/// optionally the reset flag.
fn reset_request(flag: bool) -> Vec<u8> {
    let mut message = bare_message(
        vec![],
        vec![],
        vec![automerge::sync::Have {
            last_sync: vec![],
            bloom: automerge::sync::BloomFilter::default(),
        }],
    );
    if flag {
        let mut flags = automerge::sync::MessageFlags::new();
        flags.set(automerge::sync::MessageFlags::SYNC_RESET);
        message.flags = Some(flags);
        message.version = automerge::sync::MessageVersion::V2;
    }
    message.encode()
}

#[test]
fn repeated_requests_for_a_whole_unchanged_document_are_answered_cheaply() {
    let doc = ShareableDocId::parse("national/method").unwrap();
    let mut fed = Federation::new(&["helsingborg"]);
    fed.connect("helsingborg", 1);
    let (_, out) = fed
        .engines
        .get_mut("hub")
        .unwrap()
        .engine_mut()
        .edit(&doc, 0, |tx| -> Result<(), automerge::AutomergeError> {
            for i in 0..50 {
                tx.put(ROOT, format!("step{i}"), "a step of the method ".repeat(20))?;
            }
            Ok(())
        })
        .unwrap();
    fed.absorb("hub", out);
    fed.run_until_quiet();
    // What the hub sends back: its bytes, and whether it carries the document (whole, as the
    // peer says it holds nothing, or as changes).
    let hub_answer = |fed: &mut Federation, now: u64, flag: bool| -> (usize, bool) {
        let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
            1,
            Frame::DocSync {
                generation: 0,
                doc: doc.clone(),
                message: reset_request(flag),
            },
            now,
        );
        assert!(out.closes.is_empty(), "{:?}", out.closes);
        let bytes = out.sends.iter().map(|(_, f)| frame_size(f)).sum();
        let carries = out.sends.iter().any(|(_, frame)| match frame {
            Frame::DocSync { message, .. } => !automerge::sync::Message::decode(message)
                .unwrap()
                .changes
                .is_empty(),
            _ => false,
        });
        (bytes, carries)
    };
    let (_, full) = hub_answer(&mut fed, 1, false);
    assert!(full, "the first request is answered with the document");
    for (i, flag) in [false, true, false, true].into_iter().enumerate() {
        let (bytes, again) = hub_answer(&mut fed, 2 + i as u64, flag);
        assert!(!again && bytes < 1_000, "request {i} costs {bytes} bytes");
    }
    // After the interval, one more full resend.
    let interval = EngineConfig::default().reset_interval_ms;
    let (_, later) = hub_answer(&mut fed, 10 + interval, false);
    assert!(later);
}

/// A federation whose hub holds peers to `config`.
fn federation_with_hub_config(cities: &[&str], config: EngineConfig) -> Federation {
    let mut fed = Federation::new(cities);
    let hub = NodeId::hub("national").unwrap();
    let actor = sfs_sync::run_actor(&hub, [7; 8]);
    fed.engines
        .insert("hub".to_string(), driver(Engine::new(hub, actor, config)));
    fed
}

/// Helsingborg's first message to the hub that carries the change `edit` makes to its lessons
/// (what comes before it is delivered), as bytes; it is taken off the wire, not delivered.
fn hub_heads(fed: &Federation, doc: &ShareableDocId) -> Vec<automerge::ChangeHash> {
    fed.engines["hub"]
        .lock_engine()
        .document(doc)
        .map(|d| d.get_heads())
        .unwrap_or_default()
}

fn city_message_after(
    fed: &mut Federation,
    edit: impl FnOnce(&mut automerge::transaction::Transaction<'_>),
) -> Vec<u8> {
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    let (_, out) = fed
        .engines
        .get_mut("helsingborg")
        .unwrap()
        .engine_mut()
        .edit(&doc, 0, |tx| -> Result<(), automerge::AutomergeError> {
            edit(tx);
            Ok(())
        })
        .unwrap();
    fed.absorb("helsingborg", out);
    for _ in 0..1_000 {
        let (from, link, frame) = fed.queue.pop_front().expect("the change is sent");
        if let (true, Frame::DocSync { message, .. }) = (from == "helsingborg", &frame) {
            let decoded = automerge::sync::Message::decode(message).unwrap();
            if !decoded.changes.is_empty() {
                return message.clone();
            }
        }
        let to = fed.other_end(&from, link).unwrap();
        let out = fed
            .engines
            .get_mut(&to)
            .unwrap()
            .engine_mut()
            .receive(link, frame, 0);
        fed.absorb(&to, out);
    }
    panic!("the change was never sent");
}

#[test]
fn an_owner_refuses_its_own_edit_that_no_peer_would_accept() {
    // The limits a peer enforces on receive hold where a change is made: an edit over them
    // would be acknowledged and then refused by every peer, for ever.
    let config = EngineConfig {
        max_change_ops: 5_000,
        max_doc_ops: 12_000,
        ..EngineConfig::default()
    };
    let city = NodeId::city("helsingborg").unwrap();
    let mut engine = Engine::new(city.clone(), sfs_sync::run_actor(&city, [7; 8]), config);
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    let keys = |from: usize, n: usize| {
        move |tx: &mut automerge::transaction::Transaction<'_>| -> Result<(), automerge::AutomergeError> {
            for i in from..from + n {
                tx.put(ROOT, format!("k{i}"), i as i64)?;
            }
            Ok(())
        }
    };
    let refused = |result: Result<((), Output), EditError<automerge::AutomergeError>>| match result
    {
        Err(EditError::Engine(err @ EngineError::OverContentLimit { .. })) => err.to_string(),
        Err(other) => panic!("refused for another reason: {other:?}"),
        Ok(_) => panic!("accepted"),
    };
    // One change over the per-change limit.
    let message = refused(engine.edit(&doc, 0, keys(0, 6_000)));
    assert!(
        message.contains("the change has 6000 operations, and a peer accepts at most 5000"),
        "{message}"
    );
    assert!(engine
        .document(&doc)
        .is_none_or(|d| d.get_heads().is_empty()));
    // Two changes within both limits; the third would take the document over its own.
    for round in 0..2 {
        let (_, out) = engine.edit(&doc, 0, keys(round * 4_500, 4_500)).unwrap();
        assert_eq!(out.persist_docs.len(), 1);
    }
    let heads = engine.document(&doc).unwrap().get_heads();
    let message = refused(engine.edit(&doc, 0, keys(9_000, 4_500)));
    assert!(
        message.contains("it would hold 13500 operations, and a peer accepts at most 12000"),
        "{message}"
    );
    assert_eq!(
        engine.document(&doc).unwrap().get_heads(),
        heads,
        "the refused change is taken back"
    );
    assert_eq!(engine.document(&doc).unwrap().stats().num_ops, 9_000);
    // A new generation is one change holding the whole document: over the per-change limit, it
    // is refused too, and the document stays as it was.
    let message = refused(engine.new_generation(&doc, 0, |_| Ok(())));
    assert!(
        message.contains("a peer accepts at most 5000 per change"),
        "{message}"
    );
    assert_eq!(engine.document(&doc).unwrap().get_heads(), heads);
    assert_eq!(engine.generation(&doc), Some(0));
}

#[test]
fn changes_over_the_content_limits_are_refused_before_they_are_applied() {
    let config = EngineConfig {
        max_change_ops: 5_000,
        max_doc_ops: 12_000,
        max_text_insert_chars: 2_000,
        ..EngineConfig::default()
    };
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    type Edit = Box<dyn FnOnce(&mut automerge::transaction::Transaction<'_>)>;
    let text = |chars: usize| -> Edit {
        Box::new(move |tx| {
            let body = tx
                .put_object(ROOT, "body", automerge::ObjType::Text)
                .unwrap();
            tx.splice_text(&body, 0, 0, &"å".repeat(chars)).unwrap();
        })
    };
    let keys = |n: usize| -> Edit {
        Box::new(move |tx| {
            for i in 0..n {
                tx.put(ROOT, format!("k{i}"), i as i64).unwrap();
            }
        })
    };
    // Each as a change to a document the hub holds, and the first two also as the first
    // message of a document it holds nothing of (sent whole: operations are counted from the
    // changes' metadata; characters per text are not, see `check_document_content`).
    for (edit, expected, hub_holds_some) in [
        (
            keys(6_000),
            "a change with 6000 operations (at most 5000 per change)",
            false,
        ),
        (
            keys(6_000),
            "a change with 6000 operations (at most 5000 per change)",
            true,
        ),
        (
            text(3_000),
            "more than 2000 characters or elements into one text",
            true,
        ),
    ] {
        let mut fed = federation_with_hub_config(&["helsingborg", "malmo"], config.clone());
        fed.connect("helsingborg", 1);
        fed.connect("malmo", 2);
        fed.run_until_quiet();
        if hub_holds_some {
            fed.add_lesson("helsingborg", "l0", "first");
            fed.run_until_quiet();
        }
        let held = hub_heads(&fed, &doc);
        let message = city_message_after(&mut fed, edit);
        let whole = automerge::sync::Message::decode(&message)
            .unwrap()
            .changes
            .iter()
            .any(|chunk| chunk[8] == 0);
        assert_eq!(whole, !hub_holds_some, "{expected}");
        let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
            1,
            Frame::DocSync {
                generation: 0,
                doc: doc.clone(),
                message,
            },
            0,
        );
        assert_eq!(out.closes.len(), 1, "{expected}");
        assert_eq!(out.closes[0].1.code, StatusCode::ResourceExhausted);
        assert!(
            out.closes[0].1.message.contains(expected),
            "{}",
            out.closes[0].1.message
        );
        assert!(out.persist_docs.is_empty());
        assert_eq!(hub_heads(&fed, &doc), held, "nothing applied");
    }
    // Within the limits per change, but the document would grow over its own.
    let mut fed = federation_with_hub_config(&["helsingborg", "malmo"], config);
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.run_until_quiet();
    for round in 0..2 {
        let message = city_message_after(
            &mut fed,
            Box::new(move |tx: &mut automerge::transaction::Transaction<'_>| {
                for i in 0..4_500 {
                    tx.put(ROOT, format!("r{round}k{i}"), i as i64).unwrap();
                }
            }),
        );
        let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
            1,
            Frame::DocSync {
                generation: 0,
                doc: doc.clone(),
                message,
            },
            0,
        );
        assert!(out.closes.is_empty(), "{:?}", out.closes);
        fed.absorb("hub", out);
    }
    fed.queue.clear();
    let message = city_message_after(&mut fed, keys(4_000));
    let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
        1,
        Frame::DocSync {
            generation: 0,
            doc: doc.clone(),
            message,
        },
        0,
    );
    assert_eq!(out.closes.len(), 1);
    assert_eq!(out.closes[0].1.code, StatusCode::ResourceExhausted);
    assert!(
        out.closes[0]
            .1
            .message
            .contains("at most 12000 per document"),
        "{}",
        out.closes[0].1.message
    );
    // Malmö still syncs through the same hub.
    fed.add_lesson("malmo", "m1", "still flowing");
    fed.run_until_quiet();
    assert_eq!(
        fed.lesson("hub", "malmo", "m1").as_deref(),
        Some("still flowing")
    );
}

#[test]
fn a_corrupt_change_of_the_senders_own_document_is_invalid_not_forbidden() {
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.run_until_quiet();
    let message = city_message_after(&mut fed, |tx| {
        tx.put(ROOT, "l1", "a lesson").unwrap();
    });
    let mut decoded = automerge::sync::Message::decode(&message).unwrap();
    let mut chunk = decoded.changes.iter().next().unwrap().to_vec();
    // Corrupt a byte of the body, after the header (magic, checksum, type, length).
    let last = chunk.len() - 3;
    chunk[last] ^= 0x5a;
    decoded.changes = vec![chunk].into();
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
        1,
        Frame::DocSync {
            doc,
            generation: 0,
            message: decoded.encode(),
        },
        0,
    );
    assert_eq!(out.closes.len(), 1);
    assert_eq!(
        out.closes[0].1.code,
        StatusCode::InvalidArgument,
        "{}",
        out.closes[0].1.message
    );
}

/// Resident memory of this process, and its peak, in kB (Linux).
fn rss_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A measurement, not a check (BENCHMARKS.md): memory the hub gains per megabyte of text
/// changes received from a city, each change a new 20,000-character text (the API's longest
/// field), up to the default limits. Run with
/// `cargo test -p sfs-sync --release --test engine memory_per_megabyte -- --ignored --nocapture`.
#[test]
#[ignore]
fn memory_per_megabyte_of_text_changes_received() {
    let mut fed = Federation::new(&["helsingborg"]);
    fed.connect("helsingborg", 1);
    fed.run_until_quiet();
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    // Messages made first, off the hub, so only what the hub holds is measured.
    let mut messages = Vec::new();
    let mut bytes = 0usize;
    let mut refused = None;
    for i in 0.. {
        let message = city_message_after(&mut fed, |tx| {
            let text = tx
                .put_object(ROOT, format!("body{i}"), automerge::ObjType::Text)
                .unwrap();
            tx.splice_text(&text, 0, 0, &"lärdom ".repeat(20_000 / 7))
                .unwrap();
        });
        bytes += message.len();
        messages.push(message);
        if bytes > 2 * 1024 * 1024 {
            break;
        }
    }
    let (before, _) = rss_kb();
    let started = std::time::Instant::now();
    let mut received = 0usize;
    for message in messages {
        let len = message.len();
        let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
            1,
            Frame::DocSync {
                generation: 0,
                doc: doc.clone(),
                message,
            },
            0,
        );
        if let Some((_, reason)) = out.closes.first() {
            refused = Some(reason.message.clone());
            break;
        }
        received += len;
    }
    let elapsed = started.elapsed();
    let (after, peak) = rss_kb();
    let ops = fed.engines["hub"]
        .lock_engine()
        .document(&doc)
        .map_or(0, |d| d.stats().num_ops);
    let mb = received as f64 / (1024.0 * 1024.0);
    println!(
        "received {mb:.2} MiB ({ops} operations) in {elapsed:?}: resident +{} MiB \
         ({:.0} MiB per MiB received), peak {} MiB; refused after: {refused:?}",
        (after.saturating_sub(before)) / 1024,
        (after.saturating_sub(before)) as f64 / 1024.0 / mb.max(0.001),
        peak / 1024,
    );
}

/// A sync message carrying every change of `doc`, as a peer with nothing would be sent.
fn whole_document_message(doc: &Automerge) -> automerge::sync::Message {
    let mut heads = doc.get_heads();
    heads.sort();
    let changes: Vec<Vec<u8>> = doc
        .get_changes(&[])
        .iter()
        .map(|change| change.raw_bytes().to_vec())
        .collect();
    automerge::sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: changes.into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    }
}

/// Starts a new generation of `city`'s lessons without the lesson `key`.
fn redact(fed: &mut Federation, city: &str, key: &str) {
    let doc = ShareableDocId::lessons(city).unwrap();
    let (_, out) = fed
        .engines
        .get_mut(city)
        .unwrap()
        .engine_mut()
        .new_generation(&doc, 0, |tx| -> Result<(), automerge::AutomergeError> {
            tx.delete(ROOT, key)
        })
        .unwrap();
    fed.absorb(city, out);
}

/// Whether `needle` is anywhere in what `node` holds of `doc`: its saved bytes (the whole
/// history), every change, and every sync state it stored for the document.
fn holds_trace(fed: &Federation, node: &str, doc: &ShareableDocId, needle: &str) -> bool {
    let contains = |bytes: &[u8]| {
        bytes
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    };
    let engine = fed.engines[node].lock_engine();
    let Some(held) = engine.document(doc) else {
        return false;
    };
    contains(&held.save_nocompress())
        || held
            .get_changes(&[])
            .iter()
            .any(|change| contains(change.raw_bytes()))
        || fed.engines[node]
            .storage()
            .all_bytes()
            .iter()
            .any(|bytes| contains(bytes))
}

/// After `city` redacted `removed` (its key and a canary in its text) from its lessons: every
/// one of `nodes` holds the first new generation, without the lesson or any trace of the canary,
/// and still holds the `kept` lesson (its key and text).
fn assert_redacted_everywhere(
    fed: &Federation,
    nodes: &[&str],
    city: &str,
    removed: (&str, &str),
    kept: (&str, &str),
) {
    let doc = ShareableDocId::lessons(city).unwrap();
    for node in nodes {
        assert_eq!(
            fed.engines[*node].lock_engine().generation(&doc),
            Some(1),
            "{node}"
        );
        assert_eq!(fed.lesson(node, city, removed.0), None, "{node}");
        assert_eq!(
            fed.lesson(node, city, kept.0).as_deref(),
            Some(kept.1),
            "{node}"
        );
        assert!(
            !holds_trace(fed, node, &doc, removed.1),
            "{node} still holds the removed text"
        );
    }
}

#[test]
fn a_new_generation_replaces_the_document_everywhere_without_the_removed_text() {
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.add_lesson("helsingborg", "l1", "canary-7f3a9 slipped through");
    fed.add_lesson("helsingborg", "l2", "hotel staff training works");
    fed.run_until_quiet();
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    assert!(holds_trace(&fed, "malmo", &doc, "canary-7f3a9"));

    redact(&mut fed, "helsingborg", "l1");
    fed.run_until_quiet();
    let nodes = ["helsingborg", "hub", "malmo"];
    assert_redacted_everywhere(
        &fed,
        &nodes,
        "helsingborg",
        ("l1", "canary-7f3a9"),
        ("l2", "hotel staff training works"),
    );
    for node in nodes {
        // One change: the new generation has no history.
        assert_eq!(
            fed.engines[node]
                .lock_engine()
                .document(&doc)
                .unwrap()
                .get_changes(&[])
                .len(),
            1
        );
    }
    assert!(fed.closes.is_empty(), "{:?}", fed.closes);
    assert!(fed
        .events
        .iter()
        .any(|e| matches!(e, LogEvent::NewGeneration { generation: 1, .. })));

    // Edits go on in the new generation, and reach everyone.
    fed.add_lesson("helsingborg", "l3", "after the redaction");
    fed.run_until_quiet();
    assert_eq!(
        fed.lesson("malmo", "helsingborg", "l3").as_deref(),
        Some("after the redaction")
    );
    // A reconnect with nothing changed is as cheap as before.
    fed.disconnect(2);
    fed.connect("malmo", 3);
    fed.frames_delivered = 0;
    fed.run_until_quiet();
    assert_eq!(fed.frames_delivered, 4);
}

#[test]
fn a_city_offline_during_a_new_generation_drops_the_old_one_when_it_returns() {
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.add_lesson("helsingborg", "l1", "canary-5b21 slipped through");
    fed.add_lesson("helsingborg", "l2", "kept");
    fed.run_until_quiet();
    fed.disconnect(2);
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    // Malmö keeps a copy of the old generation, as a city that was away would.
    let old = fed.engines["malmo"]
        .lock_engine()
        .document(&doc)
        .unwrap()
        .clone();

    redact(&mut fed, "helsingborg", "l1");
    fed.run_until_quiet();
    // Twice, so the hub's generation is 2 and the returning city skips one.
    redact(&mut fed, "helsingborg", "l2");
    fed.run_until_quiet();
    assert_eq!(fed.engines["hub"].lock_engine().generation(&doc), Some(2));
    assert_eq!(fed.engines["malmo"].lock_engine().generation(&doc), Some(0));

    fed.connect("malmo", 3);
    fed.run_until_quiet();
    assert_eq!(fed.engines["malmo"].lock_engine().generation(&doc), Some(2));
    assert_eq!(fed.lesson("malmo", "helsingborg", "l1"), None);
    assert!(!holds_trace(&fed, "malmo", &doc, "canary-5b21"));
    assert!(fed.closes.is_empty(), "{:?}", fed.closes);

    // The old generation's changes, sent again (by a node that restored an old copy, or a
    // hostile one), are dropped: they can never bring the removed text back.
    let message = whole_document_message(&old);
    for (link, generation) in [(1, 0), (1, 1)] {
        let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
            link,
            Frame::DocSync {
                doc: doc.clone(),
                generation,
                message: message.clone().encode(),
            },
            0,
        );
        assert!(out.persist_docs.is_empty());
        assert!(out
            .events
            .iter()
            .any(|e| matches!(e, LogEvent::StaleGeneration { ours: 2, .. })));
        fed.absorb("hub", out);
    }
    fed.run_until_quiet();
    for node in ["helsingborg", "hub", "malmo"] {
        assert!(!holds_trace(&fed, node, &doc, "canary-5b21"), "{node}");
        assert_eq!(
            fed.engines[node].lock_engine().generation(&doc),
            Some(2),
            "{node}"
        );
    }
}

#[test]
fn a_newer_generation_is_adopted_only_whole_and_as_its_owner_marked_it() {
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.add_lesson("helsingborg", "l1", "one");
    fed.run_until_quiet();
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    // Helsingborg's own document, sent whole under a generation it does not carry.
    let held = fed.engines["helsingborg"]
        .lock_engine()
        .document(&doc)
        .unwrap()
        .clone();
    let message = whole_document_message(&held);
    let out = fed.engines.get_mut("hub").unwrap().engine_mut().receive(
        1,
        Frame::DocSync {
            doc: doc.clone(),
            generation: 5,
            message: message.encode(),
        },
        0,
    );
    assert_eq!(out.closes.len(), 1);
    assert_eq!(out.closes[0].1.code, StatusCode::Aborted);
    assert!(out.replaced_docs.is_empty());
    assert_eq!(fed.engines["hub"].lock_engine().generation(&doc), Some(0));
    assert_eq!(
        fed.lesson("hub", "helsingborg", "l1").as_deref(),
        Some("one")
    );
    // Malmö may not start a generation of Helsingborg's document, nor send one.
    let refused = fed
        .engines
        .get_mut("malmo")
        .unwrap()
        .engine_mut()
        .new_generation(&doc, 0, |_| -> Result<(), automerge::AutomergeError> {
            Ok(())
        });
    assert!(matches!(refused, Err(EditError::Engine(_))));
}

#[test]
fn the_hub_starts_new_generations_of_its_national_documents() {
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    let method = ShareableDocId::parse("national/method").unwrap();
    let (_, out) = fed
        .engines
        .get_mut("hub")
        .unwrap()
        .engine_mut()
        .edit(&method, 0, |tx| -> Result<(), automerge::AutomergeError> {
            tx.put(ROOT, "step1", "canary-9e0c in the handbook")?;
            tx.put(ROOT, "step2", "meet monthly")
        })
        .unwrap();
    fed.absorb("hub", out);
    fed.run_until_quiet();
    assert!(holds_trace(&fed, "malmo", &method, "canary-9e0c"));
    let (_, out) = fed
        .engines
        .get_mut("hub")
        .unwrap()
        .engine_mut()
        .new_generation(&method, 0, |tx| -> Result<(), automerge::AutomergeError> {
            tx.put(ROOT, "step1", "removed")
        })
        .unwrap();
    fed.absorb("hub", out);
    fed.run_until_quiet();
    for node in ["hub", "helsingborg", "malmo"] {
        assert_eq!(
            fed.engines[node].lock_engine().generation(&method),
            Some(1),
            "{node}"
        );
        assert!(!holds_trace(&fed, node, &method, "canary-9e0c"), "{node}");
        let engine = fed.engines[node].lock_engine();
        let held = engine.document(&method).unwrap();
        let (value, _) = held.get(ROOT, "step2").unwrap().unwrap();
        assert_eq!(value.into_string().unwrap(), "meet monthly");
    }
    assert!(fed.closes.is_empty(), "{:?}", fed.closes);
}

// ---------------------------------------------------------------------------------------------
// Three levels: city → county hub → national hub
// ---------------------------------------------------------------------------------------------

/// Skåne (Malmö, Lund) and Västerbotten (Umeå) under the national hub, Kiruna linked to the
/// national hub directly. No link is open yet.
fn skane_and_vasterbotten() -> Federation {
    Federation::three_level(
        &[("skane", &["malmo", "lund"]), ("vasterbotten", &["umea"])],
        &["kiruna"],
    )
}

/// Every link of [`skane_and_vasterbotten`]: (dialling node, hub it dials, link id).
const THREE_LEVEL_LINKS: [(&str, &str, ConnId); 6] = [
    ("skane", "hub", 3),
    ("vasterbotten", "hub", 5),
    ("kiruna", "hub", 6),
    ("malmo", "skane", 1),
    ("lund", "skane", 2),
    ("umea", "vasterbotten", 4),
];

const THREE_LEVEL_NODES: [&str; 7] = [
    "hub",
    "skane",
    "vasterbotten",
    "malmo",
    "lund",
    "umea",
    "kiruna",
];

fn link_all(fed: &mut Federation) {
    for (lower, upper, link) in THREE_LEVEL_LINKS {
        fed.connect_to(lower, upper, link);
    }
    fed.run_until_quiet();
}

/// `node` writes `value` under `key` into `doc`, which it owns.
fn put(fed: &mut Federation, node: &str, doc: &str, key: &str, value: &str) {
    let doc = ShareableDocId::parse(doc).unwrap();
    let (_, out) = fed
        .engines
        .get_mut(node)
        .unwrap()
        .engine_mut()
        .edit(&doc, 0, |tx| -> Result<(), automerge::AutomergeError> {
            tx.put(ROOT, key, value)
        })
        .unwrap();
    fed.absorb(node, out);
}

fn get(fed: &Federation, node: &str, doc: &str, key: &str) -> Option<String> {
    let engine = fed.engines[node].lock_engine();
    let doc = engine.document(&ShareableDocId::parse(doc).unwrap())?;
    let (value, _) = doc.get(ROOT, key).ok()??;
    value.into_string().ok()
}

fn no_refusals(fed: &Federation) {
    assert!(fed.closes.is_empty(), "{:?}", fed.closes);
    assert!(
        !fed.events
            .iter()
            .any(|e| matches!(e, LogEvent::Refused { .. })),
        "{:?}",
        fed.events
    );
}

#[test]
fn a_lesson_from_malmo_reaches_lund_through_the_county_hub_alone_and_umea_through_the_national_hub()
{
    let mut fed = skane_and_vasterbotten();
    // The county hub is not linked to the national hub yet.
    fed.connect_to("malmo", "skane", 1);
    fed.connect_to("lund", "skane", 2);
    fed.run_until_quiet();
    fed.add_lesson("malmo", "m1", "Night buses reach the young");
    fed.run_until_quiet();
    for node in ["skane", "lund"] {
        assert_eq!(
            fed.lesson(node, "malmo", "m1").as_deref(),
            Some("Night buses reach the young"),
            "{node}"
        );
    }
    assert_eq!(fed.lesson("hub", "malmo", "m1"), None, "not linked yet");

    for (lower, upper, link) in [
        ("skane", "hub", 3),
        ("umea", "vasterbotten", 4),
        ("vasterbotten", "hub", 5),
        ("kiruna", "hub", 6),
    ] {
        fed.connect_to(lower, upper, link);
    }
    fed.run_until_quiet();
    for node in THREE_LEVEL_NODES {
        assert_eq!(
            fed.lesson(node, "malmo", "m1").as_deref(),
            Some("Night buses reach the young"),
            "{node}"
        );
    }

    // Back the other way, from Umeå over both hops to Malmö and Lund.
    fed.add_lesson("umea", "u1", "Sports clubs as meeting places");
    fed.run_until_quiet();
    for node in THREE_LEVEL_NODES {
        assert_eq!(
            fed.lesson(node, "umea", "u1").as_deref(),
            Some("Sports clubs as meeting places"),
            "{node}"
        );
    }
    // Once every link is in step on a document, its next change is one message and one
    // acknowledgement per link, over both hops: relayed at once by each hub, never back where
    // it came from.
    fed.frames_delivered = 0;
    fed.add_lesson("umea", "u2", "Libraries open late");
    fed.run_until_quiet();
    assert_eq!(fed.frames_delivered, 2 * THREE_LEVEL_LINKS.len());
    assert_eq!(
        fed.lesson("malmo", "umea", "u2").as_deref(),
        Some("Libraries open late")
    );
    no_refusals(&fed);
}

#[test]
fn national_and_county_documents_reach_every_node_over_both_hops() {
    let mut fed = skane_and_vasterbotten();
    link_all(&mut fed);
    put(&mut fed, "hub", "national/method", "step1", "Listen first");
    put(
        &mut fed,
        "skane",
        "county/skane/guidance",
        "g1",
        "Meet each month",
    );
    put(
        &mut fed,
        "skane",
        "county/skane/meetings",
        "2027-01-12",
        "Lund, 14:00",
    );
    put(
        &mut fed,
        "vasterbotten",
        "county/vasterbotten/stats",
        "n",
        "4",
    );
    fed.run_until_quiet();
    for node in THREE_LEVEL_NODES {
        assert_eq!(
            get(&fed, node, "national/method", "step1").as_deref(),
            Some("Listen first"),
            "{node}"
        );
        assert_eq!(
            get(&fed, node, "county/skane/guidance", "g1").as_deref(),
            Some("Meet each month"),
            "{node}"
        );
        assert_eq!(
            get(&fed, node, "county/skane/meetings", "2027-01-12").as_deref(),
            Some("Lund, 14:00"),
            "{node}"
        );
        assert_eq!(
            get(&fed, node, "county/vasterbotten/stats", "n").as_deref(),
            Some("4"),
            "{node}"
        );
    }
    no_refusals(&fed);
}

#[test]
fn a_city_under_a_county_hub_checks_national_documents_with_the_national_hubs_identity() {
    let mut fed = skane_and_vasterbotten();
    // Lund does not know the national hub: it cannot tell who wrote a national document two
    // hops away, so it refuses one rather than take it on the county hub's word.
    let lund = NodeId::city("lund").unwrap();
    let actor = sfs_sync::run_actor(&lund, [7; 8]);
    fed.engines.insert(
        "lund".to_string(),
        driver(Engine::new(lund, actor, EngineConfig::default())),
    );
    link_all(&mut fed);
    put(&mut fed, "hub", "national/method", "step1", "Listen first");
    fed.run_until_quiet();
    assert_eq!(
        get(&fed, "malmo", "national/method", "step1").as_deref(),
        Some("Listen first")
    );
    assert_eq!(get(&fed, "lund", "national/method", "step1"), None);
    assert!(
        fed.closes.iter().any(|(node, link, code, _)| node == "lund"
            && *link == 2
            && *code == StatusCode::PermissionDenied),
        "{:?}",
        fed.closes
    );
}

/// `to` receives, on `link`, a change to `doc` (as `to` holds it) written by `actor`: the
/// link must be closed with `PermissionDenied` and nothing applied. The link is then opened
/// afresh between `lower` and `upper`.
fn forged_change_is_refused(
    fed: &mut Federation,
    to: &str,
    link: ConnId,
    doc: &str,
    actor: ActorId,
) {
    let (lower, upper) = fed.links[&link].clone();
    let doc = ShareableDocId::parse(doc).unwrap();
    let base = fed.engines[to]
        .lock_engine()
        .document(&doc)
        .unwrap_or_else(|| panic!("{to} holds {doc}"))
        .clone();
    let message = message_with_change_by(&base, actor);
    let out = fed.engines.get_mut(to).unwrap().engine_mut().receive(
        link,
        Frame::DocSync {
            generation: 0,
            doc: doc.clone(),
            message,
        },
        0,
    );
    assert_eq!(out.closes.len(), 1, "{to} closes link {link} for {doc}");
    assert_eq!(out.closes[0].1.code, StatusCode::PermissionDenied, "{doc}");
    assert!(out
        .events
        .iter()
        .any(|e| matches!(e, LogEvent::Refused { .. })));
    assert!(
        out.sends.iter().all(|(sent_on, _)| *sent_on == link),
        "nothing of it is relayed"
    );
    assert_eq!(
        fed.engines[to]
            .lock_engine()
            .document(&doc)
            .unwrap()
            .get_heads(),
        base.get_heads(),
        "{to}: nothing of the change to {doc} is applied"
    );
    fed.disconnect(link);
    fed.connect_to(&lower, &upper, link);
    fed.run_until_quiet();
}

#[test]
fn a_county_hub_cannot_write_a_citys_or_a_national_document() {
    let mut fed = skane_and_vasterbotten();
    link_all(&mut fed);
    fed.add_lesson("malmo", "m1", "honest");
    put(&mut fed, "hub", "national/method", "step1", "Listen first");
    put(
        &mut fed,
        "vasterbotten",
        "county/vasterbotten/guidance",
        "g",
        "v",
    );
    fed.run_until_quiet();
    // Its own engine refuses.
    for doc in [
        "shared/lessons/malmo",
        "national/method",
        "county/vasterbotten/guidance",
    ] {
        let err = fed
            .engines
            .get_mut("skane")
            .unwrap()
            .engine_mut()
            .edit(
                &ShareableDocId::parse(doc).unwrap(),
                0,
                |tx| -> Result<(), automerge::AutomergeError> { tx.put(ROOT, "x", "y") },
            )
            .unwrap_err();
        assert!(
            matches!(err, EditError::Engine(EngineError::NotOwner { .. })),
            "{doc}: {err:?}"
        );
    }
    // A rogue county hub writes under its own actor, to the national hub above it and to a city
    // below it: each refuses, by the owner-writes rule or by the author check.
    let skane = sfs_sync::run_actor(&NodeId::county("skane").unwrap(), [1; 8]);
    for (to, link, doc) in [
        ("hub", 3, "shared/lessons/malmo"),
        ("hub", 3, "national/method"),
        ("hub", 3, "county/vasterbotten/guidance"),
        ("lund", 2, "shared/lessons/malmo"),
        ("lund", 2, "national/method"),
        ("lund", 2, "county/vasterbotten/guidance"),
    ] {
        forged_change_is_refused(&mut fed, to, link, doc, skane.clone());
    }
    // An actor id is not a signature: its prefix is public, so a rogue county hub can write
    // under the national hub's or another county's prefix. The national hub still refuses
    // both: it applies from a county hub only city documents and that county's own.
    let hub = sfs_sync::run_actor(&NodeId::hub("national").unwrap(), [9; 8]);
    let vasterbotten = sfs_sync::run_actor(&NodeId::county("vasterbotten").unwrap(), [9; 8]);
    forged_change_is_refused(&mut fed, "hub", 3, "national/method", hub);
    forged_change_is_refused(
        &mut fed,
        "hub",
        3,
        "county/vasterbotten/guidance",
        vasterbotten,
    );
    forged_change_is_refused(&mut fed, "lund", 2, "national/method", ActorId::random());
    // Honest traffic still flows both ways through it.
    fed.add_lesson("malmo", "m2", "still honest");
    fed.run_until_quiet();
    assert_eq!(
        fed.lesson("umea", "malmo", "m2").as_deref(),
        Some("still honest")
    );
}

#[test]
fn a_city_cannot_write_its_countys_document() {
    let mut fed = skane_and_vasterbotten();
    link_all(&mut fed);
    put(
        &mut fed,
        "skane",
        "county/skane/guidance",
        "g1",
        "Meet each month",
    );
    fed.run_until_quiet();
    let guidance = "county/skane/guidance";
    let err = fed
        .engines
        .get_mut("malmo")
        .unwrap()
        .engine_mut()
        .edit(
            &ShareableDocId::parse(guidance).unwrap(),
            0,
            |tx| -> Result<(), automerge::AutomergeError> { tx.put(ROOT, "g1", "forged") },
        )
        .unwrap_err();
    assert!(matches!(
        err,
        EditError::Engine(EngineError::NotOwner { .. })
    ));
    let malmo = sfs_sync::run_actor(&NodeId::city("malmo").unwrap(), [1; 8]);
    let kiruna = sfs_sync::run_actor(&NodeId::city("kiruna").unwrap(), [1; 8]);
    // To its county hub, even under the county's own actor; and to the national hub directly.
    let skane = sfs_sync::run_actor(&NodeId::county("skane").unwrap(), [1; 8]);
    forged_change_is_refused(&mut fed, "skane", 1, guidance, malmo);
    forged_change_is_refused(&mut fed, "skane", 1, guidance, skane);
    forged_change_is_refused(&mut fed, "hub", 6, guidance, kiruna);
    for node in THREE_LEVEL_NODES {
        assert_eq!(
            get(&fed, node, guidance, "g1").as_deref(),
            Some("Meet each month"),
            "{node}"
        );
    }
}

#[test]
fn a_reconnect_with_nothing_changed_costs_only_the_handshake_on_each_link_of_three_levels() {
    let mut fed = skane_and_vasterbotten();
    link_all(&mut fed);
    fed.add_lesson("malmo", "m1", "one");
    fed.add_lesson("kiruna", "k1", "two");
    put(&mut fed, "hub", "national/method", "step1", "Listen first");
    put(&mut fed, "skane", "county/skane/guidance", "g1", "monthly");
    fed.run_until_quiet();
    for (_, _, link) in THREE_LEVEL_LINKS {
        fed.disconnect(link);
    }
    fed.frames_delivered = 0;
    link_all(&mut fed);
    // Hello and Summary from each side of each link, nothing else.
    assert_eq!(fed.frames_delivered, 4 * THREE_LEVEL_LINKS.len());
    no_refusals(&fed);
}

#[test]
fn a_new_generation_of_a_lesson_document_crosses_both_hops() {
    let mut fed = skane_and_vasterbotten();
    link_all(&mut fed);
    fed.add_lesson("malmo", "l1", "canary-c0un7y slipped through");
    fed.add_lesson("malmo", "l2", "kept");
    fed.run_until_quiet();
    let doc = ShareableDocId::lessons("malmo").unwrap();
    assert!(holds_trace(&fed, "umea", &doc, "canary-c0un7y"));
    redact(&mut fed, "malmo", "l1");
    fed.run_until_quiet();
    assert_redacted_everywhere(
        &fed,
        &THREE_LEVEL_NODES,
        "malmo",
        ("l1", "canary-c0un7y"),
        ("l2", "kept"),
    );
    fed.add_lesson("malmo", "l3", "after the redaction");
    fed.run_until_quiet();
    assert_eq!(
        fed.lesson("umea", "malmo", "l3").as_deref(),
        Some("after the redaction")
    );
    no_refusals(&fed);
}

#[test]
fn a_city_moves_from_the_national_hub_to_its_county_hub_and_back_without_losing_data() {
    let mut fed = skane_and_vasterbotten();
    fed.connect_to("skane", "hub", 3);
    fed.connect_to("lund", "skane", 2);
    fed.connect_to("malmo", "hub", 1);
    fed.run_until_quiet();
    fed.add_lesson("malmo", "m1", "written while direct");
    put(&mut fed, "hub", "national/method", "step1", "Listen first");
    fed.run_until_quiet();
    fed.disconnect(1);
    fed.add_lesson("malmo", "m2", "written while moving");
    put(&mut fed, "hub", "national/method", "step2", "Then act");
    fed.run_until_quiet();
    fed.connect_to("malmo", "skane", 7);
    fed.run_until_quiet();
    fed.disconnect(7);
    fed.connect_to("malmo", "hub", 8);
    fed.add_lesson("malmo", "m3", "back to direct");
    fed.run_until_quiet();
    let doc = ShareableDocId::lessons("malmo").unwrap();
    let heads = fed.engines["malmo"]
        .lock_engine()
        .document(&doc)
        .unwrap()
        .get_heads();
    for node in ["hub", "skane", "lund"] {
        for (key, value) in [
            ("m1", "written while direct"),
            ("m2", "written while moving"),
            ("m3", "back to direct"),
        ] {
            assert_eq!(
                fed.lesson(node, "malmo", key).as_deref(),
                Some(value),
                "{node}"
            );
        }
        assert_eq!(
            fed.engines[node]
                .lock_engine()
                .document(&doc)
                .unwrap()
                .get_heads(),
            heads,
            "{node}"
        );
    }
    assert_eq!(
        get(&fed, "malmo", "national/method", "step2").as_deref(),
        Some("Then act")
    );
    no_refusals(&fed);
}

#[test]
fn a_city_restored_from_an_older_backup_gets_its_own_changes_back_through_its_county_hub() {
    let mut fed = skane_and_vasterbotten();
    link_all(&mut fed);
    fed.add_lesson("malmo", "m1", "in the backup");
    fed.run_until_quiet();
    let doc = ShareableDocId::lessons("malmo").unwrap();
    let backup = fed.engines["malmo"]
        .lock_engine()
        .document(&doc)
        .unwrap()
        .save();
    fed.add_lesson("malmo", "m2", "written after the backup");
    fed.run_until_quiet();
    fed.disconnect(1);
    // Malmö comes back from the backup: a new store, a new run's actor, its lessons without m2.
    let malmo = NodeId::city("malmo").unwrap();
    let mut engine = Engine::new(
        malmo.clone(),
        sfs_sync::run_actor(&malmo, [8; 8]),
        EngineConfig {
            national_hub: Some(NodeId::hub("national").unwrap()),
            ..EngineConfig::default()
        },
    );
    engine.load_document(doc.clone(), Automerge::load(&backup).unwrap(), 0);
    fed.engines.insert("malmo".to_string(), driver(engine));
    assert_eq!(fed.lesson("malmo", "malmo", "m2"), None);
    fed.connect_to("malmo", "skane", 1);
    fed.run_until_quiet();
    assert_eq!(
        fed.lesson("malmo", "malmo", "m2").as_deref(),
        Some("written after the backup")
    );
    fed.add_lesson("malmo", "m3", "after the restore");
    fed.run_until_quiet();
    assert_eq!(
        fed.lesson("umea", "malmo", "m3").as_deref(),
        Some("after the restore")
    );
    no_refusals(&fed);
}

/// How long the engine is held while a hub applies one large message of text changes, in
/// slices of the default size (figures for BENCHMARKS.md; run in release).
#[test]
#[ignore]
fn engine_hold_time_while_a_large_message_is_applied() {
    // SFS_SLICE_OPS sets the slice size, to compare (for example with a slice of everything).
    let slice = std::env::var("SFS_SLICE_OPS")
        .ok()
        .and_then(|ops| ops.parse().ok())
        .unwrap_or(EngineConfig::default().apply_slice_ops);
    let config = EngineConfig {
        apply_slice_ops: slice,
        ..EngineConfig::default()
    };
    let mut fed = federation_with_hub_config(&["helsingborg"], config);
    fed.connect("helsingborg", 1);
    fed.run_until_quiet();
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    let mut changes = Vec::new();
    for i in 0..120 {
        let message = city_message_after(&mut fed, |tx| {
            let text = tx
                .put_object(ROOT, format!("body{i}"), automerge::ObjType::Text)
                .unwrap();
            tx.splice_text(&text, 0, 0, &"lärdom ".repeat(20_000 / 7))
                .unwrap();
        });
        let decoded = automerge::sync::Message::decode(&message).unwrap();
        changes.extend(decoded.changes.iter().map(<[u8]>::to_vec));
    }
    let mut message = whole_document_message(
        fed.engines["helsingborg"]
            .lock_engine()
            .document(&doc)
            .unwrap(),
    );
    message.changes = changes.into();
    let bytes = message.encode();
    let hub = fed.engines.get_mut("hub").unwrap().engine_mut();
    let started = std::time::Instant::now();
    let read = sfs_sync::read_frame(
        Frame::DocSync {
            doc: doc.clone(),
            generation: 0,
            message: bytes.clone(),
        },
        &EngineConfig::default().read_limits(),
    );
    let reading = started.elapsed();
    let mut holds = Vec::new();
    let call = std::time::Instant::now();
    let mut out = hub.receive_read(1, read, 0);
    holds.push(call.elapsed());
    for _ in 0..10_000 {
        if !out.unfinished.contains(&1) {
            break;
        }
        let call = std::time::Instant::now();
        out = hub.continue_receive(1, 0);
        holds.push(call.elapsed());
    }
    let total = started.elapsed();
    let ops = hub.document(&doc).map_or(0, |d| d.stats().num_ops);
    holds.sort();
    println!(
        "one message of {:.2} MiB ({ops} operations): read without the engine in {reading:?}; \
         applied in {} slices, engine held at most {:?} per slice (median {:?}); {total:?} in all",
        bytes.len() as f64 / (1024.0 * 1024.0),
        holds.len(),
        holds.last().unwrap(),
        holds[holds.len() / 2],
    );
    assert_eq!(
        ops,
        120 * (20_000 / 7 * 7) as u64 + 120,
        "every change applied"
    );
}

#[test]
fn a_newer_generation_with_later_changes_is_adopted_slice_by_slice() {
    // Every change a slice of its own at the hub.
    let config = EngineConfig {
        apply_slice_ops: 1,
        ..EngineConfig::default()
    };
    let mut fed = federation_with_hub_config(&["helsingborg", "malmo"], config);
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.add_lesson("helsingborg", "l1", "canary-5c1d2 slipped through");
    fed.add_lesson("helsingborg", "l2", "hotel staff training works");
    fed.run_until_quiet();
    fed.disconnect(1);
    redact(&mut fed, "helsingborg", "l1");
    for i in 3..8 {
        fed.add_lesson(
            "helsingborg",
            &format!("l{i}"),
            "written after the redaction",
        );
    }
    fed.queue.clear();
    // The hub reads the whole new generation and its later changes in one message, then
    // applies them a change at a time.
    fed.connect("helsingborg", 3);
    fed.run_until_quiet();
    assert!(fed.closes.is_empty(), "{:?}", fed.closes);
    assert_redacted_everywhere(
        &fed,
        &["helsingborg", "hub", "malmo"],
        "helsingborg",
        ("l1", "canary-5c1d2"),
        ("l2", "hotel staff training works"),
    );
    for node in ["hub", "malmo"] {
        for i in 3..8 {
            assert_eq!(
                fed.lesson(node, "helsingborg", &format!("l{i}")).as_deref(),
                Some("written after the redaction"),
                "{node} holds l{i}"
            );
        }
    }
}

/// Writes `key` = `value` into `doc` at `node` (which owns it).
fn put_at(fed: &mut Federation, node: &str, doc: &ShareableDocId, key: &str, value: &str) {
    let (_, out) = fed
        .engines
        .get_mut(node)
        .unwrap()
        .engine_mut()
        .edit(doc, 0, |tx| -> Result<(), automerge::AutomergeError> {
            tx.put(ROOT, key, value)?;
            Ok(())
        })
        .unwrap();
    fed.absorb(node, out);
}

fn value_at(fed: &Federation, node: &str, doc: &ShareableDocId, key: &str) -> Option<String> {
    let engine = fed.engines[node].lock_engine();
    let (value, _) = engine.document(doc)?.get(ROOT, key).unwrap()?;
    Some(value.into_string().unwrap())
}

#[test]
fn a_standby_hub_relays_both_ways_takes_national_edits_and_merges_after_a_partition() {
    let hub = NodeId::hub("national").unwrap();
    let standby = NodeId::hub("standby").unwrap();
    let config = EngineConfig {
        national_hub: Some(hub.clone()),
        standby_hubs: vec![standby.clone()],
        ..EngineConfig::default()
    };
    let mut fed = Federation::new(&[]);
    for (name, id) in [
        ("hub", hub.clone()),
        ("standby", standby.clone()),
        ("malmo", NodeId::city("malmo").unwrap()),
        ("lund", NodeId::city("lund").unwrap()),
    ] {
        let actor = sfs_sync::run_actor(&id, [7; 8]);
        fed.engines.insert(
            name.to_string(),
            driver(Engine::new(id, actor, config.clone())),
        );
    }
    // The standby dials the primary; Malmö links to the primary, Lund to the standby.
    fed.connect_to("standby", "hub", 1);
    fed.connect_to("malmo", "hub", 2);
    fed.connect_to("lund", "standby", 3);
    fed.run_until_quiet();
    fed.add_lesson("malmo", "l1", "from Malmö, through both hubs");
    fed.run_until_quiet();
    assert_eq!(
        fed.lesson("lund", "malmo", "l1").as_deref(),
        Some("from Malmö, through both hubs")
    );
    // Either hub edits the handbook; each edit reaches the cities of the other.
    let method = ShareableDocId::parse("national/method").unwrap();
    put_at(
        &mut fed,
        "standby",
        &method,
        "step-1",
        "edited at the standby",
    );
    put_at(&mut fed, "hub", &method, "step-2", "edited at the primary");
    fed.run_until_quiet();
    for node in ["hub", "standby", "malmo", "lund"] {
        assert_eq!(
            value_at(&fed, node, &method, "step-1").as_deref(),
            Some("edited at the standby"),
            "{node}"
        );
        assert_eq!(
            value_at(&fed, node, &method, "step-2").as_deref(),
            Some("edited at the primary"),
            "{node}"
        );
    }
    assert!(fed.closes.is_empty(), "{:?}", fed.closes);

    // The primary's machine is gone: Malmö fails over to the standby and syncing goes on.
    fed.disconnect(1);
    fed.disconnect(2);
    fed.connect_to("malmo", "standby", 4);
    fed.add_lesson("lund", "l2", "from Lund, during the failover");
    fed.run_until_quiet();
    assert_eq!(
        fed.lesson("malmo", "lund", "l2").as_deref(),
        Some("from Lund, during the failover")
    );
    // Meanwhile the primary (cut off, say by a partition) and the standby both take edits.
    put_at(
        &mut fed,
        "hub",
        &method,
        "step-3",
        "at the primary, cut off",
    );
    put_at(
        &mut fed,
        "standby",
        &method,
        "step-4",
        "at the standby, cut off",
    );
    fed.add_lesson("malmo", "l3", "from Malmö, on the standby");
    fed.run_until_quiet();
    assert_eq!(value_at(&fed, "malmo", &method, "step-3"), None);
    // The link between the hubs heals: both hold everything, and so does every city.
    fed.connect_to("standby", "hub", 5);
    fed.run_until_quiet();
    for node in ["hub", "standby", "malmo", "lund"] {
        for (key, value) in [
            ("step-3", "at the primary, cut off"),
            ("step-4", "at the standby, cut off"),
        ] {
            assert_eq!(
                value_at(&fed, node, &method, key).as_deref(),
                Some(value),
                "{node} {key}"
            );
        }
    }
    for node in ["hub", "standby", "lund"] {
        assert_eq!(
            fed.lesson(node, "malmo", "l3").as_deref(),
            Some("from Malmö, on the standby"),
            "{node}"
        );
    }
    assert!(fed.closes.is_empty(), "{:?}", fed.closes);
}

#[test]
fn a_city_refuses_national_edits_by_a_hub_it_was_not_told_of() {
    let hub = NodeId::hub("national").unwrap();
    let standby = NodeId::hub("standby").unwrap();
    let knows_standby = EngineConfig {
        national_hub: Some(hub.clone()),
        standby_hubs: vec![standby.clone()],
        ..EngineConfig::default()
    };
    let knows_primary_only = EngineConfig {
        national_hub: Some(hub.clone()),
        ..EngineConfig::default()
    };
    let mut fed = Federation::new(&[]);
    for (name, id, config) in [
        ("hub", hub.clone(), knows_standby.clone()),
        ("standby", standby.clone(), knows_standby.clone()),
        ("malmo", NodeId::city("malmo").unwrap(), knows_primary_only),
    ] {
        let actor = sfs_sync::run_actor(&id, [7; 8]);
        fed.engines
            .insert(name.to_string(), driver(Engine::new(id, actor, config)));
    }
    fed.connect_to("standby", "hub", 1);
    fed.connect_to("malmo", "hub", 2);
    fed.run_until_quiet();
    let method = ShareableDocId::parse("national/method").unwrap();
    put_at(
        &mut fed,
        "standby",
        &method,
        "step",
        "from a hub Malmö does not know",
    );
    fed.run_until_quiet();
    assert_eq!(value_at(&fed, "malmo", &method, "step"), None);
    assert!(
        fed.closes
            .iter()
            .any(|(node, _, code, message)| node == "malmo"
                && *code == StatusCode::PermissionDenied
                && message.contains("not hub/national's")),
        "{:?}",
        fed.closes
    );
}

fn counts(fed: &Federation) -> BTreeMap<String, sfs_sync::MessageCounts> {
    fed.engines
        .iter()
        .map(|(name, driver)| (name.clone(), driver.lock_engine().message_counts()))
        .collect()
}

#[test]
fn messages_for_peers_in_step_are_made_from_recent_changes_not_by_automerge() {
    let mut fed = Federation::new(&["helsingborg", "malmo", "lund"]);
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.connect("lund", 3);
    for i in 0..10 {
        fed.add_lesson(
            "helsingborg",
            &format!("first{i}"),
            "before the links settle",
        );
    }
    // Malmö's document reaches every node whole before the count starts (a peer that held
    // nothing is sent the document, and the relay's first message is Automerge's).
    fed.add_lesson("malmo", "first", "before the links settle");
    fed.run_until_quiet();
    let before = counts(&fed);
    // One lesson at a time, and bursts of lessons written before anything is delivered, from
    // two cities at once: the hub relays, the writers push, everybody acknowledges.
    for round in 0..20 {
        fed.add_lesson("helsingborg", &format!("h{round}"), "one at a time");
        fed.run_until_quiet();
        for burst in 0..5 {
            fed.add_lesson("malmo", &format!("m{round}-{burst}"), "in a burst");
            fed.add_lesson("helsingborg", &format!("hb{round}-{burst}"), "in a burst");
        }
        fed.run_until_quiet();
    }
    let after = counts(&fed);
    for (node, count) in &after {
        let made = count.from_recent - before[node].from_recent;
        let by_automerge = count.by_automerge - before[node].by_automerge;
        assert!(made > 0, "{node} made no message from recent changes");
        assert_eq!(
            by_automerge, 0,
            "{node} asked Automerge {by_automerge} times"
        );
    }
    for node in ["hub", "helsingborg", "malmo", "lund"] {
        assert_eq!(
            fed.lesson(node, "malmo", "m19-4").as_deref(),
            Some("in a burst")
        );
        assert_eq!(
            fed.lesson(node, "helsingborg", "h19").as_deref(),
            Some("one at a time")
        );
    }
    assert!(fed.closes.is_empty(), "{:?}", fed.closes);
}

#[test]
fn a_peer_back_after_missing_changes_is_served_by_automerge_then_from_recent_changes() {
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.add_lesson("helsingborg", "first", "both in step");
    fed.run_until_quiet();
    fed.disconnect(2);
    let missed = sfs_sync::recent::TRIM_AFTER * 3;
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    for i in 0..missed {
        fed.add_lesson("helsingborg", &format!("l{i}"), "while malmo was away");
        fed.run_until_quiet();
        // Only what a linked peer lacks is kept: helsingborg is in step after each lesson.
        let kept = fed.engines["hub"].lock_engine().recent_changes_kept(&doc);
        assert!(kept <= sfs_sync::recent::TRIM_AFTER + 1, "{kept} kept");
    }
    let before = counts(&fed)["hub"];
    fed.connect("malmo", 2);
    fed.run_until_quiet();
    let after = counts(&fed)["hub"];
    assert!(
        after.by_automerge > before.by_automerge,
        "malmo's catch-up of {missed} lessons reaches past what the hub keeps"
    );
    let last = format!("l{}", missed - 1);
    assert_eq!(
        fed.lesson("malmo", "helsingborg", &last).as_deref(),
        Some("while malmo was away")
    );
    assert_eq!(
        fed.lesson("malmo", "helsingborg", "l0").as_deref(),
        Some("while malmo was away")
    );
    // And once caught up, malmo is served from recent changes again.
    let before = counts(&fed)["hub"];
    fed.add_lesson("helsingborg", "after", "in step again");
    fed.run_until_quiet();
    let after = counts(&fed)["hub"];
    assert!(after.from_recent > before.from_recent);
    assert_eq!(after.by_automerge, before.by_automerge);
    assert_eq!(
        fed.lesson("malmo", "helsingborg", "after").as_deref(),
        Some("in step again")
    );
}

/// Delivers frames until none are left, like [`Federation::run_until_quiet`], and returns the
/// chunk types of every sync message delivered, by receiver and document (0: a whole document,
/// 1: a plain change).
fn run_recording_chunks(fed: &mut Federation) -> Vec<(String, ShareableDocId, Vec<u8>)> {
    let mut seen = Vec::new();
    for _ in 0..100_000 {
        let Some((from, link, frame)) = fed.queue.pop_front() else {
            return seen;
        };
        let Some(to) = fed.other_end(&from, link) else {
            continue;
        };
        if let Frame::DocSync { doc, message, .. } = &frame {
            let message = automerge::sync::Message::decode(message).unwrap();
            let kinds: Vec<u8> = message.changes.iter().map(|chunk| chunk[8]).collect();
            if !kinds.is_empty() {
                seen.push((to.clone(), doc.clone(), kinds));
            }
        }
        let out = fed
            .engines
            .get_mut(&to)
            .unwrap()
            .engine_mut()
            .receive(link, frame, 0);
        fed.absorb(&to, out);
    }
    panic!("federation did not go quiet");
}

#[test]
fn a_node_that_holds_nothing_of_a_document_is_sent_it_whole_and_stores_it_as_a_snapshot() {
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    for i in 0..40 {
        fed.add_lesson("helsingborg", &format!("l{i}"), &"a lesson ".repeat(20));
    }
    fed.connect("helsingborg", 1);
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    let to_hub = run_recording_chunks(&mut fed);
    assert_eq!(to_hub, vec![("hub".to_string(), doc.clone(), vec![0])]);
    // Malmö joins later: the hub sends it the document whole too, and then changes as usual.
    fed.connect("malmo", 2);
    let to_malmo = run_recording_chunks(&mut fed);
    assert_eq!(to_malmo, vec![("malmo".to_string(), doc.clone(), vec![0])]);
    fed.add_lesson("helsingborg", "later", "one more");
    let later = run_recording_chunks(&mut fed);
    assert!(
        later.iter().all(|(_, _, kinds)| kinds == &vec![1]),
        "{later:?}"
    );
    no_refusals(&fed);
    let heads = fed.engines["helsingborg"]
        .lock_engine()
        .document(&doc)
        .unwrap()
        .get_heads();
    for node in ["hub", "malmo"] {
        assert_eq!(
            fed.lesson(node, "helsingborg", "l39").as_deref(),
            Some(&*"a lesson ".repeat(20))
        );
        assert_eq!(
            fed.lesson(node, "helsingborg", "later").as_deref(),
            Some("one more")
        );
        // What is stored loads to the same document: the snapshot received, then the change.
        let (stored, _) = fed.engines[node]
            .storage()
            .durable_doc(&doc)
            .unwrap()
            .unwrap();
        assert_eq!(stored.get_heads(), heads, "{node}");
    }
    // Each node's own later edits to other documents still carry its own actor.
    let counts = counts(&fed);
    assert_eq!(counts["helsingborg"].whole_documents, 1);
    assert_eq!(counts["hub"].whole_documents, 1);
    // Nothing changed: a reconnect costs the handshake only (the states of the links that
    // carried whole documents were kept like any others).
    fed.disconnect(1);
    fed.disconnect(2);
    fed.frames_delivered = 0;
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.run_until_quiet();
    assert_eq!(fed.frames_delivered, 8);
}

#[test]
fn a_peer_of_the_previous_protocol_version_is_sent_changes_only() {
    let mut fed = Federation::new(&["helsingborg"]);
    for i in 0..10 {
        fed.add_lesson("helsingborg", &format!("l{i}"), "a lesson");
    }
    fed.connect("helsingborg", 1);
    // The hub speaks the previous version: Helsingborg gets its Hello rewritten in transit.
    for (from, _, frame) in fed.queue.iter_mut() {
        if from == "hub" {
            if let Frame::Hello { protocol_version } = frame {
                *protocol_version = sfs_sync::OLDEST_PROTOCOL_VERSION;
            }
        }
    }
    let to_hub = run_recording_chunks(&mut fed);
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    assert_eq!(to_hub, vec![("hub".to_string(), doc, vec![1; 10])]);
    assert_eq!(
        fed.lesson("hub", "helsingborg", "l9").as_deref(),
        Some("a lesson")
    );
    no_refusals(&fed);
}

/// Hands the hub a sync message for Helsingborg's lessons from Helsingborg's link (1).
fn hub_receives_from_helsingborg(
    fed: &mut Federation,
    generation: u64,
    message: Vec<u8>,
) -> Output {
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    fed.engines.get_mut("hub").unwrap().engine_mut().receive(
        1,
        Frame::DocSync {
            generation,
            doc,
            message,
        },
        0,
    )
}

/// The output closed exactly one link, with `code` and a message holding `expected`.
fn assert_closed(out: &Output, code: StatusCode, expected: &str) {
    assert_eq!(out.closes.len(), 1, "{expected}");
    assert_eq!(out.closes[0].1.code, code, "{}", out.closes[0].1.message);
    assert!(
        out.closes[0].1.message.contains(expected),
        "{}",
        out.closes[0].1.message
    );
}

/// `doc` saved whole, as the first sync message to a peer that holds nothing of it.
fn saved_document_message(doc: &Automerge) -> Vec<u8> {
    let mut heads = doc.get_heads();
    heads.sort();
    automerge::sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: vec![doc.save()].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V2,
    }
    .encode()
}

fn lessons_by(actor: ActorId, n: usize) -> Automerge {
    let mut doc = Automerge::new().with_actor(actor);
    for i in 0..n {
        doc.transact(|tx| tx.put(ROOT, format!("w{i}"), "written"))
            .unwrap();
    }
    doc
}

#[test]
fn a_whole_document_is_held_to_the_owner_rule_and_the_content_limits() {
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    // Written by Malmö's actor, sent as Helsingborg's lessons.
    let forged = lessons_by(
        sfs_sync::run_actor(&NodeId::city("malmo").unwrap(), [1; 8]),
        3,
    );
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.run_until_quiet();
    let out = hub_receives_from_helsingborg(&mut fed, 0, saved_document_message(&forged));
    assert_closed(&out, StatusCode::PermissionDenied, "which is not");
    assert!(out.persist_docs.is_empty());
    assert_eq!(hub_heads(&fed, &doc), Vec::new());
    let own = sfs_sync::run_actor(&NodeId::city("helsingborg").unwrap(), [1; 8]);
    // More operations than a document may hold: counted from the layout, before loading.
    let config = EngineConfig {
        max_doc_ops: 10,
        ..EngineConfig::default()
    };
    hub_with_config_refuses(
        config,
        saved_document_message(&lessons_by(own.clone(), 11)),
        StatusCode::ResourceExhausted,
        "more than 10 rows",
    );
    // More changes than a document may hold.
    let config = EngineConfig {
        max_doc_changes: 5,
        ..EngineConfig::default()
    };
    hub_with_config_refuses(
        config,
        saved_document_message(&lessons_by(own.clone(), 6)),
        StatusCode::ResourceExhausted,
        "more than 5 rows",
    );
    // A change with more operations than one may hold.
    let mut big = Automerge::new().with_actor(own.clone());
    big.transact(|tx| {
        for i in 0..20 {
            tx.put(ROOT, format!("k{i}"), i as i64)?;
        }
        Ok::<_, automerge::AutomergeError>(())
    })
    .unwrap();
    let config = EngineConfig {
        max_change_ops: 10,
        ..EngineConfig::default()
    };
    hub_with_config_refuses(
        config,
        saved_document_message(&big),
        StatusCode::ResourceExhausted,
        "a change with 20 operations (at most 10 per change)",
    );
    // Bytes that are not the document they claim to be: Automerge's checksum.
    let mut garbled = lessons_by(own, 3).save();
    let last = garbled.len() - 1;
    garbled[last] ^= 0x55;
    let message = automerge::sync::Message {
        heads: Vec::new(),
        need: Vec::new(),
        have: Vec::new(),
        changes: vec![garbled].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V2,
    };
    hub_refuses_and_goes_on(message, "does not load", |_| {});
}

#[test]
fn a_whole_document_of_another_generation_than_its_frame_says_is_refused() {
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    let own = sfs_sync::run_actor(&NodeId::city("helsingborg").unwrap(), [1; 8]);
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.run_until_quiet();
    let out =
        hub_receives_from_helsingborg(&mut fed, 3, saved_document_message(&lessons_by(own, 3)));
    assert_closed(
        &out,
        StatusCode::InvalidArgument,
        "generation 0, sent as generation 3",
    );
    assert_eq!(hub_heads(&fed, &doc), Vec::new());
}

#[test]
fn a_whole_document_reaching_a_node_that_holds_some_of_it_closes_the_link_and_the_next_sends_changes(
) {
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    let mut fed = Federation::new(&["helsingborg", "malmo"]);
    fed.add_lesson("helsingborg", "l0", "first");
    fed.connect("helsingborg", 1);
    fed.connect("malmo", 2);
    fed.run_until_quiet();
    let held = hub_heads(&fed, &doc);
    // Helsingborg writes more; its document arrives whole, as if the hub held nothing.
    fed.add_lesson("helsingborg", "l1", "second");
    let whole = fed.engines["helsingborg"]
        .lock_engine()
        .document(&doc)
        .unwrap()
        .clone();
    fed.queue.clear();
    let out = hub_receives_from_helsingborg(&mut fed, 0, saved_document_message(&whole));
    // Not used (finding what it adds would walk its history under the engine lock), and not
    // a refusal: the link ends, and the next handshake says what the hub holds.
    assert_closed(&out, StatusCode::Aborted, "holds some of it already");
    assert!(!out
        .events
        .iter()
        .any(|e| matches!(e, LogEvent::Refused { .. })));
    assert!(out.persist_docs.is_empty());
    fed.absorb("hub", out);
    assert_eq!(hub_heads(&fed, &doc), held);
    fed.disconnect(1);
    fed.connect("helsingborg", 1);
    fed.run_until_quiet();
    assert_eq!(hub_heads(&fed, &doc), whole.get_heads());
    assert_eq!(
        fed.lesson("malmo", "helsingborg", "l1").as_deref(),
        Some("second")
    );
    assert_eq!(
        fed.engines["hub"].storage().durable_heads(&doc),
        Some(whole.get_heads())
    );
}

#[test]
fn a_document_beyond_what_a_whole_document_may_be_is_sent_as_changes() {
    for (config, why) in [
        (
            EngineConfig {
                max_message_bytes: 300,
                ..EngineConfig::default()
            },
            "its saved form is larger than a message may be",
        ),
        (
            EngineConfig {
                max_doc_changes: 5,
                ..EngineConfig::default()
            },
            "it holds more changes than a whole document may",
        ),
    ] {
        let mut fed = Federation::new(&[]);
        let me = NodeId::city("helsingborg").unwrap();
        let city = Engine::new(me.clone(), sfs_sync::run_actor(&me, [7; 8]), config);
        fed.engines.insert("helsingborg".to_string(), driver(city));
        for i in 0..20 {
            fed.add_lesson("helsingborg", &format!("l{i}"), &"a lesson ".repeat(20));
        }
        fed.connect("helsingborg", 1);
        let to_hub = run_recording_chunks(&mut fed);
        let doc = ShareableDocId::lessons("helsingborg").unwrap();
        assert_eq!(to_hub, vec![("hub".to_string(), doc, vec![1; 20])], "{why}");
        assert_eq!(
            fed.lesson("hub", "helsingborg", "l19").as_deref(),
            Some(&*"a lesson ".repeat(20)),
            "{why}"
        );
        no_refusals(&fed);
    }
}

#[test]
fn lessons_written_while_the_whole_document_is_on_its_way_follow_as_changes() {
    let mut fed = Federation::new(&["helsingborg"]);
    fed.add_lesson("helsingborg", "l0", "first");
    fed.connect("helsingborg", 1);
    // Deliver frames until the whole document is on its way to the hub, not delivered yet.
    for _ in 0..100 {
        let whole_queued = fed.queue.iter().any(|(from, _, frame)| {
            from == "helsingborg"
                && matches!(frame, Frame::DocSync { message, .. }
                    if automerge::sync::Message::decode(message)
                        .unwrap()
                        .changes
                        .iter()
                        .any(|chunk| chunk[8] == 0))
        });
        if whole_queued {
            break;
        }
        let (from, link, frame) = fed.queue.pop_front().expect("the handshake goes on");
        let to = fed.other_end(&from, link).unwrap();
        let out = fed
            .engines
            .get_mut(&to)
            .unwrap()
            .engine_mut()
            .receive(link, frame, 0);
        fed.absorb(&to, out);
    }
    for i in 1..=5 {
        fed.add_lesson("helsingborg", &format!("l{i}"), "written meanwhile");
    }
    let to_hub = run_recording_chunks(&mut fed);
    let doc = ShareableDocId::lessons("helsingborg").unwrap();
    assert_eq!(to_hub[0], ("hub".to_string(), doc.clone(), vec![0]));
    assert!(
        to_hub[1..]
            .iter()
            .all(|(_, _, kinds)| kinds.iter().all(|k| *k == 1)),
        "{to_hub:?}"
    );
    assert!(fed.closes.is_empty(), "{:?}", fed.closes);
    no_refusals(&fed);
    assert_eq!(
        fed.lesson("hub", "helsingborg", "l5").as_deref(),
        Some("written meanwhile")
    );
}
