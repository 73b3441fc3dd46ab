//! Shared code of the fuzz targets: the wire decoder as the transport runs it, a small federation
//! of real engines to attack, and the byte format of a `receive_path` input ([`Script`]).
//!
//! The fixture is deterministic (fixed actors, changes committed at time 0), so the seeds that
//! `write_seeds` records from honest traffic name exactly the heads and digests the fuzz targets
//! rebuild in every process.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Once, OnceLock};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, ChangeHash, ObjType, ReadDoc, ROOT};
use prost::Message as _;
use sfs_proto::v1 as pb;
use sfs_sync::{
    actor_belongs_to, run_actor, summary_digest, ConnId, DocPersist, Driver, Engine,
    EngineConfig, Frame, MemoryStorage, NodeId, Output, Owner, PersistKind, RecordingTransport,
    Released, Role, ShareableDocId, StatusCode, Storage, Summary,
};

pub use sfs_node::federation::sync::MAX_FRAME_BYTES;

/// Decodes one frame as a node does: the size limit of the gRPC stream, the count of a summary's
/// entries, protobuf, then the mapping to an engine frame that refuses ids and hashes that do
/// not parse.
pub fn decode_wire(bytes: &[u8]) -> Result<Frame, String> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(format!("{} bytes is over the frame limit", bytes.len()));
    }
    // The transport's codec counts a summary's entries before prost decodes them.
    sfs_proto::codec::check_frame(bytes).map_err(|status| status.message().to_string())?;
    let frame = pb::Frame::decode(bytes).map_err(|err| err.to_string())?;
    sfs_node::federation::sync::from_pb(frame)
}

/// Encodes an engine frame as a node sends it.
pub fn encode_wire(frame: Frame) -> Vec<u8> {
    sfs_node::federation::sync::to_pb(frame).encode_to_vec()
}

// ---------------------------------------------------------------------------------------------
// Panics inside the engine
// ---------------------------------------------------------------------------------------------

thread_local! {
    static IN_ENGINE: Cell<bool> = const { Cell::new(false) };
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// libFuzzer's panic hook aborts on every panic, even one the engine catches on purpose
/// (decoding and applying a peer's message run under `catch_unwind`). This hook lets a panic
/// inside an engine call unwind to the engine's own handler and records it; any other panic, or
/// every panic when `SFS_FUZZ_STRICT_PANICS` is set, still aborts.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let strict = std::env::var_os("SFS_FUZZ_STRICT_PANICS").is_some();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !strict && IN_ENGINE.with(Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()));
                let text = format!("{}{}", info, at.unwrap_or_default());
                CAUGHT.with(|c| *c.borrow_mut() = Some(text));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs one engine call. Returns its result and the message of a panic the engine caught
/// inside it; a panic that escapes the engine fails the run.
pub fn engine_call<T>(call: impl FnOnce() -> T) -> (T, Option<String>) {
    install_panic_hook();
    IN_ENGINE.with(|f| f.set(true));
    let result = catch_unwind(AssertUnwindSafe(call));
    IN_ENGINE.with(|f| f.set(false));
    let caught = CAUGHT.with(|c| c.borrow_mut().take());
    match result {
        Ok(value) => (value, caught),
        Err(_) => panic!("a panic escaped the engine: {}", caught.unwrap_or_default()),
    }
}

// ---------------------------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------------------------

/// Which engine a script attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The hub, attacked by the city `malmo`, while the city `lund` syncs honestly beside it.
    Hub,
    /// The city `malmo`, attacked by the hub.
    City,
}

/// The link the attacker uses first; a reconnect takes the next id.
pub const ATTACKER_CONN: ConnId = 1;
/// The honest city's link in [`Mode::Hub`].
pub const HONEST_CONN: ConnId = 1000;

pub fn hub_id() -> NodeId {
    NodeId::hub("national").expect("valid name")
}
pub fn malmo_id() -> NodeId {
    NodeId::city("malmo").expect("valid name")
}
pub fn lund_id() -> NodeId {
    NodeId::city("lund").expect("valid name")
}

fn doc(id: &str) -> ShareableDocId {
    ShareableDocId::parse(id).expect("valid id")
}

/// One node's documents (saved bytes) and the sync states it stored for a peer.
#[derive(Clone, Default)]
pub struct NodeState {
    pub docs: Vec<(ShareableDocId, Vec<u8>)>,
    pub states: BTreeMap<String, Vec<(ShareableDocId, Vec<u8>)>>,
}

/// Everything the targets and the seed writer need, built once per process.
pub struct Fixture {
    pub hub: NodeState,
    pub malmo: NodeState,
    pub lund: NodeState,
    /// Every change hash in any fixture document, for summaries to pick from.
    pub known_heads: Vec<ChangeHash>,
    /// Document ids a script picks from by index.
    pub doc_ids: Vec<ShareableDocId>,
    /// The frames malmo sent the hub in an honest reconnect (what a hub-mode script replays).
    pub honest_from_malmo: Vec<Frame>,
    /// The frames the hub sent malmo in the same reconnect (what a city-mode script replays).
    pub honest_from_hub: Vec<Frame>,
    /// Digests of malmo's and the hub's complete lists of documents and heads.
    pub malmo_digest: [u8; 32],
    pub hub_digest: [u8; 32],
    /// The largest operation count of any fixture document.
    pub max_fixture_ops: u64,
    /// Every change of every fixture document, as raw bytes, for scripted messages to carry.
    pub change_chunks: Vec<Vec<u8>>,
    /// Every fixture document as the hub holds it, to write scripted changes on top of.
    pub hub_docs: Vec<(ShareableDocId, Vec<u8>)>,
}

/// A document written by `node` alone, one change per entry of `edits`, committed at time 0.
pub fn build_doc(node: &NodeId, edits: &[&str]) -> Automerge {
    let mut doc = Automerge::new().with_actor(run_actor(node, [1; 8]));
    for (i, text) in edits.iter().enumerate() {
        let mut tx = doc.transaction();
        if i == 0 {
            let body = tx.put_object(ROOT, "body", ObjType::Text).expect("put");
            tx.splice_text(&body, 0, 0, text).expect("splice");
            let list = tx.put_object(ROOT, "tags", ObjType::List).expect("put");
            tx.insert(&list, 0, "first").expect("insert");
        } else {
            let (_, body) = tx.get(ROOT, "body").expect("get").expect("body exists");
            let len = tx.length(&body);
            tx.splice_text(&body, len, 0, text).expect("splice");
            tx.put(ROOT, format!("edit{i}"), i as i64).expect("put");
        }
        tx.commit_with(CommitOptions::default().with_time(0));
    }
    doc
}

/// The engine's content limits, scaled down so that an input of a few kilobytes can reach them
/// (`check_documents` holds every accepted change to them).
pub fn fuzz_config() -> EngineConfig {
    EngineConfig {
        max_change_ops: 2_000,
        max_text_insert_chars: 500,
        max_doc_ops: 20_000,
        // Messages of a few changes are applied in slices (`Engine::receive` applies every
        // slice), so the sliced path is fuzzed too.
        apply_slice_ops: 500,
        ..EngineConfig::default()
    }
}

/// A node's one driver ([`sfs_sync::driver::Driver`]) over an in-memory store, releasing to a
/// transport that records what it is handed.
pub type FuzzDriver = Driver<Arc<MemoryStorage>, RecordingTransport>;

/// The node id the fixture names `name` (`hub`, `malmo`, `lund`).
fn node_id_of(name: &str) -> NodeId {
    match name {
        "hub" => hub_id(),
        city => NodeId::city(city).expect("a fixture city"),
    }
}

/// A node whose store holds `state` (its documents and sync states), opened by its driver.
fn engine_for(me: NodeId, state: &NodeState) -> FuzzDriver {
    let storage = Arc::new(MemoryStorage::new());
    for (id, bytes) in &state.docs {
        let doc = Automerge::load(bytes).expect("fixture documents load");
        storage
            .put_doc(&DocPersist {
                doc: id.clone(),
                kind: PersistKind::Snapshot,
                bytes: bytes.clone(),
                heads: doc.get_heads(),
            })
            .expect("the in-memory store takes writes");
    }
    for (peer, states) in &state.states {
        for (doc, bytes) in states {
            storage
                .put_sync_state(&node_id_of(peer), doc, bytes)
                .expect("the in-memory store takes writes");
        }
    }
    storage.sync().expect("the in-memory store syncs");
    let actor = run_actor(&me, [2; 8]);
    Driver::open(
        Engine::new(me, actor, fuzz_config()),
        storage,
        RecordingTransport::new(),
    )
    .expect("the fixture store opens")
}

/// Nodes wired in memory, each through its driver; frames are delivered in order until none
/// are left.
pub struct Wire {
    pub engines: BTreeMap<String, FuzzDriver>,
    /// conn -> (one end, other end)
    links: BTreeMap<ConnId, (String, String)>,
    queue: VecDeque<(String, ConnId, Frame)>,
    /// Every frame sent, by sender and link.
    pub sent: Vec<(String, ConnId, Frame)>,
    pub closes: Vec<(String, ConnId, StatusCode, String)>,
}

impl Wire {
    pub fn new(nodes: Vec<(&str, FuzzDriver)>) -> Wire {
        Wire {
            engines: nodes
                .into_iter()
                .map(|(name, e)| (name.to_string(), e))
                .collect(),
            links: BTreeMap::new(),
            queue: VecDeque::new(),
            sent: Vec::new(),
            closes: Vec::new(),
        }
    }

    fn states(&self, node: &str, peer: &str) -> Vec<(ShareableDocId, Vec<u8>)> {
        self.engines[node]
            .storage()
            .sync_states_for(&node_id_of(peer))
            .expect("the in-memory store reads")
    }

    pub fn connect(&mut self, a: &str, b: &str, conn: ConnId) {
        self.links.insert(conn, (a.to_string(), b.to_string()));
        for (me, peer) in [(a, b), (b, a)] {
            let peer_id = self.engines[peer].lock_engine().me().clone();
            let stored = self.states(me, peer);
            let engine = self.engines.get_mut(me).expect("engine").engine_mut();
            let out = engine.connect(conn, peer_id, stored, 0);
            self.absorb(me, out);
        }
    }

    pub fn disconnect(&mut self, conn: ConnId) {
        if let Some((a, b)) = self.links.remove(&conn) {
            for node in [a, b] {
                let out = self
                    .engines
                    .get_mut(&node)
                    .expect("engine")
                    .engine_mut()
                    .disconnect(conn);
                self.absorb(&node, out);
            }
        }
        self.queue.retain(|(_, c, _)| *c != conn);
    }

    /// Hands an output of `from`'s engine to its driver, and queues what the driver released.
    pub fn absorb(&mut self, from: &str, out: Output) {
        let driver = &self.engines[from];
        driver
            .perform(move |_| out)
            .expect("the in-memory store takes writes");
        for released in driver.transport().take() {
            match released {
                Released::Frame(conn, frame) => {
                    self.sent.push((from.to_string(), conn, frame.clone()));
                    self.queue.push_back((from.to_string(), conn, frame));
                }
                Released::Close(conn, reason) => {
                    self.closes
                        .push((from.to_string(), conn, reason.code, reason.message))
                }
                Released::Changed(_) | Released::End(_) | Released::Event(_) => {}
            }
        }
    }

    /// Delivers frames until none are left (bounded: a livelock fails the run).
    pub fn run_until_quiet(&mut self) {
        for _ in 0..10_000 {
            let Some((from, conn, frame)) = self.queue.pop_front() else {
                return;
            };
            let Some((a, b)) = self.links.get(&conn) else {
                continue;
            };
            let to = if *a == from { b.clone() } else { a.clone() };
            let out = self
                .engines
                .get_mut(&to)
                .expect("engine")
                .engine_mut()
                .receive(conn, frame, 0);
            self.absorb(&to, out);
        }
        panic!("the honest federation did not go quiet");
    }

    fn node_state(&self, name: &str) -> NodeState {
        let docs = self.engines[name]
            .lock_engine()
            .documents()
            .map(|(id, doc)| (id.clone(), doc.save()))
            .collect();
        let states = ["hub", "malmo", "lund"]
            .into_iter()
            .filter(|peer| *peer != name)
            .map(|peer| (peer.to_string(), self.states(name, peer)))
            .filter(|(_, states)| !states.is_empty())
            .collect();
        NodeState { docs, states }
    }
}

/// The name the fixture uses for a node: `hub`, or the city's name.
pub fn name_of(node: &NodeId) -> String {
    match node.role() {
        Role::Hub => "hub".to_string(),
        _ => node.name().to_string(),
    }
}

fn complete_digest(engine: &Engine) -> [u8; 32] {
    let heads: Vec<(ShareableDocId, Vec<ChangeHash>)> = engine
        .documents()
        .map(|(id, doc)| (id.clone(), doc.get_heads()))
        .collect();
    summary_digest(heads.iter().map(|(id, h)| (id, h.as_slice())))
}

/// Builds the fixture: three nodes sync once (so each has sync states to reconnect with), then
/// each gains a change the others lack, and malmo reconnects to the hub. The frames of that
/// reconnect are the honest traffic the seeds replay.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    let (hub, malmo, lund) = (hub_id(), malmo_id(), lund_id());
    let malmo_lessons = doc("shared/lessons/malmo");
    let malmo_progress = doc("shared/progress/malmo");
    let lund_lessons = doc("shared/lessons/lund");
    let method = doc("national/method");

    let v1 = [
        (
            malmo_lessons.clone(),
            build_doc(&malmo, &["Hotel staff training"]),
        ),
        (malmo_progress.clone(), build_doc(&malmo, &["started"])),
        (lund_lessons.clone(), build_doc(&lund, &["Night buses"])),
        (method.clone(), build_doc(&hub, &["Step one"])),
    ];
    let saved: Vec<(ShareableDocId, Vec<u8>)> =
        v1.iter().map(|(id, d)| (id.clone(), d.save())).collect();
    let first = NodeState {
        docs: saved.clone(),
        states: BTreeMap::new(),
    };
    let mut wire = Wire::new(vec![
        ("hub", engine_for(hub.clone(), &first)),
        ("malmo", engine_for(malmo.clone(), &first)),
        ("lund", engine_for(lund.clone(), &first)),
    ]);
    wire.connect("malmo", "hub", 1);
    wire.connect("lund", "hub", 2);
    wire.run_until_quiet();
    wire.disconnect(1);
    wire.disconnect(2);

    // Each owner gains a change; the hub already has lund's and its own.
    let v2 = |id: &ShareableDocId, node: &NodeId, edits: &[&str]| {
        (id.clone(), build_doc(node, edits).save())
    };
    let malmo_v2 = v2(&malmo_lessons, &malmo, &["Hotel staff training", " works"]);
    let lund_v2 = v2(&lund_lessons, &lund, &["Night buses", " at 23:00"]);
    let method_v2 = v2(&method, &hub, &["Step one", ", step two"]);
    let with = |base: &NodeState, newer: &[&(ShareableDocId, Vec<u8>)]| {
        let mut state = base.clone();
        for (id, bytes) in newer {
            for entry in state.docs.iter_mut() {
                if &entry.0 == id {
                    entry.1 = bytes.clone();
                }
            }
        }
        state
    };
    let hub_state = with(&wire.node_state("hub"), &[&lund_v2, &method_v2]);
    let malmo_state = with(&wire.node_state("malmo"), &[&malmo_v2]);
    let lund_state = with(&wire.node_state("lund"), &[&lund_v2, &method_v2]);

    // The honest reconnect.
    let mut wire = Wire::new(vec![
        ("hub", engine_for(hub.clone(), &hub_state)),
        ("malmo", engine_for(malmo.clone(), &malmo_state)),
    ]);
    let malmo_digest = complete_digest(&wire.engines["malmo"].lock_engine());
    let hub_digest = complete_digest(&wire.engines["hub"].lock_engine());
    wire.connect("malmo", "hub", ATTACKER_CONN);
    wire.run_until_quiet();
    assert!(wire.closes.is_empty(), "honest traffic closed a link");
    let sent_by = |node: &str| {
        wire.sent
            .iter()
            .filter(|(from, _, _)| from == node)
            .map(|(_, _, f)| f.clone())
            .collect::<Vec<_>>()
    };

    let mut known_heads = Vec::new();
    let mut max_fixture_ops = 0;
    let mut change_chunks = Vec::new();
    for (_, bytes) in saved.iter().chain([&malmo_v2, &lund_v2, &method_v2]) {
        let doc = Automerge::load(bytes).expect("loads");
        max_fixture_ops = max_fixture_ops.max(doc.stats().num_ops);
        for change in doc.get_changes(&[]) {
            known_heads.push(change.hash());
            if !change_chunks.contains(&change.raw_bytes().to_vec()) {
                change_chunks.push(change.raw_bytes().to_vec());
            }
        }
    }
    known_heads.sort();
    known_heads.dedup();

    let doc_ids = [
        "shared/lessons/malmo",
        "shared/progress/malmo",
        "shared/lessons/lund",
        "national/method",
        "shared/stats/malmo",
        "national/directory",
        "shared/lessons/ystad",
        "national/stats",
    ]
    .into_iter()
    .map(doc)
    .collect();

    let hub_docs = hub_state.docs.clone();
    Fixture {
        hub: hub_state,
        malmo: malmo_state,
        lund: lund_state,
        known_heads,
        doc_ids,
        honest_from_malmo: sent_by("malmo"),
        honest_from_hub: sent_by("hub"),
        malmo_digest,
        hub_digest,
        max_fixture_ops,
        change_chunks,
        hub_docs,
    }
}

// ---------------------------------------------------------------------------------------------
// The script format
// ---------------------------------------------------------------------------------------------

/// One step of an attack.
#[derive(Debug, Clone)]
pub enum Step {
    /// A frame as an engine value.
    Frame(Frame),
    /// A frame as bytes on the wire, decoded as the transport does.
    Wire(Vec<u8>),
    /// A frame the transport could not decode (it names an id that is not shareable).
    Refused(String),
    /// Time passes on the attacked node (keepalives, timeouts).
    Tick(u32),
    /// The attacker's link drops and the attacker connects again.
    Reconnect,
}

/// A `receive_path` input: which engine is attacked and the steps of the attack.
///
/// Bytes: a mode byte (even: the hub, odd: a city), then steps, each a tag byte and its payload.
/// Lengths are little endian; a document is one byte (an index into the fixture's ids, or with
/// the high bit set a length and that many bytes of id text); a head is one byte (an index into
/// the fixture's change hashes, or with the high bit set 32 raw bytes); a summary digest is one
/// byte (0: the digest of the listed documents, 1: the attacker's honest complete digest, else
/// 32 raw bytes). Input that runs out ends the script.
#[derive(Debug, Clone)]
pub struct Script {
    pub mode: Mode,
    pub steps: Vec<Step>,
}

const TAG_HELLO: u8 = 0;
const TAG_SUMMARY: u8 = 1;
const TAG_SUMMARY_REQUEST: u8 = 2;
const TAG_DOC_SYNC: u8 = 3;
const TAG_KEEPALIVE: u8 = 4;
const TAG_GOODBYE: u8 = 5;
const TAG_WIRE: u8 = 6;
const TAG_TICK: u8 = 7;
const TAG_RECONNECT: u8 = 8;
/// A sync message built from parts: flags, heads, needs, haves and fixture changes, in any
/// order and with repeats (what a hand-written client may send).
const TAG_MESSAGE: u8 = 9;
/// A change of the document's owner on top of the hub's copy that inserts `n` characters into
/// one text, in a sync message.
const TAG_TEXT: u8 = 10;
const TAGS: u8 = 11;

/// Encodes a sync message by hand, keeping lists as given (Automerge's own encoder asserts
/// sorted lists); `flags` adds the version-2 flags section with these bits.
pub fn raw_sync_message(
    heads: &[ChangeHash],
    need: &[ChangeHash],
    haves: &[Vec<ChangeHash>],
    changes: &[Vec<u8>],
    flags: Option<u8>,
) -> Vec<u8> {
    fn leb(out: &mut Vec<u8>, mut value: u64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let hashes = |out: &mut Vec<u8>, list: &[ChangeHash]| {
        leb(out, list.len() as u64);
        for h in list {
            out.extend_from_slice(&h.0);
        }
    };
    let mut out = vec![0x42];
    hashes(&mut out, heads);
    hashes(&mut out, need);
    leb(&mut out, haves.len() as u64);
    for last_sync in haves {
        hashes(&mut out, last_sync);
        out.push(0); // an empty Bloom filter
    }
    leb(&mut out, changes.len() as u64);
    for change in changes {
        leb(&mut out, change.len() as u64);
        out.extend_from_slice(change);
    }
    if let Some(bits) = flags {
        out.extend_from_slice(&[2, 2, 0x80 | (bits & 0x7f)]);
    }
    out
}

/// A change by `doc`'s owner on top of the hub's copy of it (or an empty document) inserting
/// `chars` characters into a new text, as a sync message carrying that change alone.
pub fn text_change_message(fx: &Fixture, doc: &ShareableDocId, chars: usize) -> Vec<u8> {
    let owner = match doc.owner() {
        Owner::City(city) => NodeId::city(&city).expect("valid city"),
        _ => hub_id(),
    };
    let mut base = fx
        .hub_docs
        .iter()
        .find(|(id, _)| id == doc)
        .map(|(_, bytes)| Automerge::load(bytes).expect("fixture documents load"))
        .unwrap_or_default()
        .with_actor(run_actor(&owner, [3; 8]));
    let mut tx = base.transaction();
    let text = tx.put_object(ROOT, "long", ObjType::Text).expect("put");
    tx.splice_text(&text, 0, 0, &"x".repeat(chars))
        .expect("splice");
    tx.commit_with(CommitOptions::default().with_time(0));
    let change = base
        .get_last_local_change()
        .expect("a change")
        .raw_bytes()
        .to_vec();
    raw_sync_message(&base.get_heads(), &[], &[], &[change], None)
}

/// Reads a script's input bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn bytes16(&mut self) -> Option<Vec<u8>> {
        let len = self.u16()? as usize;
        self.take(len).map(<[u8]>::to_vec)
    }
    /// A document id; `Err` when the text is not a shareable id (the transport refuses it).
    fn doc(&mut self, fx: &Fixture) -> Option<Result<ShareableDocId, String>> {
        let tag = self.u8()?;
        if tag & 0x80 == 0 {
            return Some(Ok(fx.doc_ids[tag as usize % fx.doc_ids.len()].clone()));
        }
        let len = self.u8()? as usize;
        let text = String::from_utf8_lossy(self.take(len)?).into_owned();
        Some(ShareableDocId::parse(&text).map_err(|e| e.to_string()))
    }
    fn head(&mut self, fx: &Fixture) -> Option<ChangeHash> {
        let tag = self.u8()?;
        if tag & 0x80 == 0 {
            return Some(fx.known_heads[tag as usize % fx.known_heads.len()]);
        }
        ChangeHash::try_from(self.take(32)?).ok()
    }
}

impl Script {
    /// Reads a script; never fails, a short input is a short script.
    pub fn parse(bytes: &[u8], fx: &Fixture) -> Script {
        let mut r = Reader { bytes };
        let mode = match r.u8() {
            Some(b) if b % 2 == 1 => Mode::City,
            _ => Mode::Hub,
        };
        let mut steps = Vec::new();
        while let Some(step) = Self::step(&mut r, fx, mode) {
            steps.push(step);
        }
        Script { mode, steps }
    }

    fn step(r: &mut Reader<'_>, fx: &Fixture, mode: Mode) -> Option<Step> {
        let bad_id = Step::Refused;
        Some(match r.u8()? % TAGS {
            TAG_HELLO => Step::Frame(Frame::Hello {
                protocol_version: r.u32()?,
            }),
            TAG_SUMMARY => {
                let only_changed = r.u8()? & 1 == 1;
                let count = r.u8()? as usize;
                let mut docs = Vec::new();
                for _ in 0..count {
                    let id = match r.doc(fx)? {
                        Ok(id) => id,
                        Err(err) => return Some(bad_id(err)),
                    };
                    let heads = (0..r.u8()?)
                        .map(|_| r.head(fx))
                        .collect::<Option<Vec<_>>>()?;
                    docs.push((id, heads));
                }
                let digest = match r.u8()? {
                    0 => summary_digest(docs.iter().map(|(id, h)| (id, h.as_slice()))),
                    1 => match mode {
                        Mode::Hub => fx.malmo_digest,
                        Mode::City => fx.hub_digest,
                    },
                    _ => r.take(32)?.try_into().expect("32 bytes"),
                };
                Step::Frame(Frame::Summary(Summary {
                    docs,
                    only_changed,
                    digest,
                    generations: Vec::new(),
                }))
            }
            TAG_SUMMARY_REQUEST => Step::Frame(Frame::SummaryRequest),
            TAG_DOC_SYNC => {
                let doc = r.doc(fx)?;
                let message = r.bytes16()?;
                match doc {
                    Ok(doc) => Step::Frame(Frame::DocSync {
                        doc,
                        generation: 0,
                        message,
                    }),
                    Err(err) => bad_id(err),
                }
            }
            TAG_KEEPALIVE => Step::Frame(Frame::Keepalive),
            TAG_GOODBYE => {
                let code = r.u8()? as i32;
                let len = r.u8()? as usize;
                let message = String::from_utf8_lossy(r.take(len)?).into_owned();
                Step::Frame(Frame::Goodbye { code, message })
            }
            TAG_WIRE => Step::Wire(r.bytes16()?),
            TAG_TICK => Step::Tick(r.u32()?),
            TAG_MESSAGE => {
                let doc = r.doc(fx)?;
                let flags = r.u8()?;
                let list = |r: &mut Reader<'_>, max: u8| -> Option<Vec<ChangeHash>> {
                    let n = r.u8()? % (max + 1);
                    (0..n).map(|_| r.head(fx)).collect()
                };
                let heads = list(r, 8)?;
                let need = list(r, 8)?;
                let haves = (0..r.u8()? % 4)
                    .map(|_| list(r, 4))
                    .collect::<Option<Vec<_>>>()?;
                let changes = (0..r.u8()? % 5)
                    .map(|_| {
                        let i = r.u8()? as usize;
                        Some(fx.change_chunks[i % fx.change_chunks.len()].clone())
                    })
                    .collect::<Option<Vec<_>>>()?;
                let flags = (flags & 1 == 1).then_some(flags >> 1);
                let message = raw_sync_message(&heads, &need, &haves, &changes, flags);
                match doc {
                    Ok(doc) => Step::Frame(Frame::DocSync {
                        doc,
                        generation: 0,
                        message,
                    }),
                    Err(err) => bad_id(err),
                }
            }
            TAG_TEXT => {
                let doc = r.doc(fx)?;
                let chars = r.u16()? as usize;
                match doc {
                    Ok(doc) => Step::Frame(Frame::DocSync {
                        generation: 0,
                        message: text_change_message(fx, &doc, chars),
                        doc,
                    }),
                    Err(err) => bad_id(err),
                }
            }
            _ => Step::Reconnect,
        })
    }

    /// Writes a script in the format [`Script::parse`] reads (for seeds).
    pub fn encode(&self, fx: &Fixture) -> Vec<u8> {
        let mut out = vec![match self.mode {
            Mode::Hub => 0,
            Mode::City => 1,
        }];
        let doc = |out: &mut Vec<u8>, id: &ShareableDocId| match fx
            .doc_ids
            .iter()
            .position(|d| d == id)
        {
            Some(i) => out.push(i as u8),
            None => {
                out.push(0x80);
                out.push(id.as_str().len() as u8);
                out.extend_from_slice(id.as_str().as_bytes());
            }
        };
        let bytes16 = |out: &mut Vec<u8>, bytes: &[u8]| {
            let len = u16::try_from(bytes.len()).expect("seed payloads fit in 64 KiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(bytes);
        };
        for step in &self.steps {
            match step {
                Step::Frame(Frame::Hello { protocol_version }) => {
                    out.push(TAG_HELLO);
                    out.extend_from_slice(&protocol_version.to_le_bytes());
                }
                Step::Frame(Frame::Summary(summary)) => {
                    out.push(TAG_SUMMARY);
                    out.push(summary.only_changed as u8);
                    out.push(summary.docs.len() as u8);
                    for (id, heads) in &summary.docs {
                        doc(&mut out, id);
                        out.push(heads.len() as u8);
                        for head in heads {
                            match fx.known_heads.iter().position(|h| h == head) {
                                Some(i) if i < 0x80 => out.push(i as u8),
                                _ => {
                                    out.push(0x80);
                                    out.extend_from_slice(&head.0);
                                }
                            }
                        }
                    }
                    out.push(2);
                    out.extend_from_slice(&summary.digest);
                }
                Step::Frame(Frame::SummaryRequest) => out.push(TAG_SUMMARY_REQUEST),
                Step::Frame(Frame::DocSync { doc: id, message, .. }) => {
                    out.push(TAG_DOC_SYNC);
                    doc(&mut out, id);
                    bytes16(&mut out, message);
                }
                Step::Frame(Frame::Keepalive) => out.push(TAG_KEEPALIVE),
                Step::Frame(Frame::Goodbye { code, message }) => {
                    out.push(TAG_GOODBYE);
                    out.push(*code as u8);
                    out.push(message.len().min(255) as u8);
                    out.extend_from_slice(&message.as_bytes()[..message.len().min(255)]);
                }
                Step::Wire(bytes) => {
                    out.push(TAG_WIRE);
                    bytes16(&mut out, bytes);
                }
                Step::Refused(_) => {
                    out.push(TAG_WIRE);
                    bytes16(&mut out, &[]);
                }
                Step::Tick(ms) => {
                    out.push(TAG_TICK);
                    out.extend_from_slice(&ms.to_le_bytes());
                }
                Step::Reconnect => out.push(TAG_RECONNECT),
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The attack and its invariants
// ---------------------------------------------------------------------------------------------

/// Operations a document may gain per byte the attacker sent, beyond the fixture's. Deflate
/// alone stays near 1000; more means a few bytes made the engine hold unbounded state.
pub const MAX_OPS_PER_BYTE: u64 = 4096;

/// Runs a script against a fresh fixture and checks the invariants after every step; a
/// violation panics (and libFuzzer reports it).
pub fn run_script(script: &Script) {
    let fx = fixture();
    let (me, attacker) = match script.mode {
        Mode::Hub => ("hub", malmo_id()),
        Mode::City => ("malmo", hub_id()),
    };
    let mut wire = match script.mode {
        Mode::Hub => Wire::new(vec![
            ("hub", engine_for(hub_id(), &fx.hub)),
            ("lund", engine_for(lund_id(), &fx.lund)),
        ]),
        Mode::City => Wire::new(vec![("malmo", engine_for(malmo_id(), &fx.malmo))]),
    };
    if script.mode == Mode::Hub {
        wire.connect("lund", "hub", HONEST_CONN);
        wire.run_until_quiet();
        assert!(
            wire.closes.is_empty(),
            "the honest link closed: {:?}",
            wire.closes
        );
    }
    let before: BTreeMap<ShareableDocId, Vec<ChangeHash>> = wire.engines[me].lock_engine()
        .documents()
        .map(|(id, d)| (id.clone(), sorted(d.get_heads())))
        .collect();
    let attacker_name = name_of(&attacker);
    let stored = |wire: &Wire| wire.states(me, &attacker_name);

    // `SFS_FUZZ_TRACE=1 receive_path <input>` prints what each step did.
    let trace = std::env::var_os("SFS_FUZZ_TRACE").is_some();
    let mut conn = ATTACKER_CONN;
    let mut open = true;
    let mut now: u64 = 0;
    let mut sent_bytes: u64 = 0;
    let states = stored(&wire);
    let out =
        wire.engines.get_mut(me).expect("engine").engine_mut()
            .connect(conn, attacker.clone(), states, now);
    check_output(&wire, me, conn, &out, None);
    wire.absorb(me, out);

    for step in &script.steps {
        let known_before = wire.engines[me].lock_engine().links().any(|l| l.0 == conn);
        let engine = wire.engines.get_mut(me).expect("engine").engine_mut();
        let (out, caught) = match step {
            Step::Frame(frame) => {
                sent_bytes += frame_len(frame);
                let frame = frame.clone();
                engine_call(|| engine.receive(conn, frame, now))
            }
            Step::Wire(bytes) => {
                sent_bytes += bytes.len() as u64;
                match decode_wire(bytes) {
                    Ok(frame) => engine_call(|| engine.receive(conn, frame, now)),
                    Err(err) => (
                        engine.close_link(conn, StatusCode::InvalidArgument, err),
                        None,
                    ),
                }
            }
            Step::Tick(ms) => {
                now += u64::from(*ms);
                if script.mode == Mode::Hub {
                    // The honest city is alive throughout; only the attacker may time out.
                    let out = engine.receive(HONEST_CONN, Frame::Keepalive, now);
                    assert!(out.sends.is_empty() && out.closes.is_empty());
                }
                engine_call(|| engine.tick(now))
            }
            Step::Refused(reason) => (
                engine.close_link(conn, StatusCode::InvalidArgument, reason.clone()),
                None,
            ),
            Step::Reconnect => {
                let out = engine.disconnect(conn);
                wire.absorb(me, out);
                conn += 1;
                open = true;
                let states = stored(&wire);
                let engine = wire.engines.get_mut(me).expect("engine").engine_mut();
                engine_call(|| engine.connect(conn, attacker.clone(), states, now))
            }
        };
        // Every link the engine forgets is handed to the driver to end (closed by the engine,
        // or ended by the peer's Goodbye): a link the transport keeps while the engine forgot
        // it never closes.
        let known_after = wire.engines[me].lock_engine().links().any(|l| l.0 == conn);
        if known_before && !known_after && !matches!(step, Step::Reconnect) {
            assert!(
                out.closes.iter().any(|(c, _)| *c == conn) || out.ended.contains(&conn),
                "the engine forgot the link without telling the driver to end it: {out:?}"
            );
        }
        if !open {
            // A closed link is gone: nothing the attacker sends on it reaches the engine.
            let quiet = out.sends.is_empty()
                && out.closes.is_empty()
                && out.persist_docs.is_empty()
                && out.changed_docs.is_empty();
            if !matches!(step, Step::Tick(_)) {
                assert!(quiet, "frames on a closed link had an effect: {out:?}");
            }
        }
        if trace {
            eprintln!(
                "{step:.60?} -> sends {:?}, closes {:?}, changed {:?}, caught {caught:?}",
                out.sends
                    .iter()
                    .map(|(c, f)| (c, f.kind()))
                    .collect::<Vec<_>>(),
                out.closes,
                out.changed_docs,
            );
        }
        check_output(&wire, me, conn, &out, caught.as_deref());
        if out.closes.iter().any(|(c, _)| *c == conn)
            || wire.engines[me].lock_engine().links().all(|l| l.0 != conn)
        {
            open = false;
        }
        wire.absorb(me, out);
        // The honest city gets what the hub relays and must accept all of it.
        if script.mode == Mode::Hub {
            wire.queue
                .retain(|(from, c, _)| !(from == me && *c == conn));
            let closes_before = wire.closes.len();
            wire.run_until_quiet();
            let new: Vec<_> = wire.closes[closes_before..].to_vec();
            assert!(new.is_empty(), "the honest link was closed: {new:?}");
        } else {
            wire.queue.clear();
        }
        check_documents(
            &wire.engines[me].lock_engine(),
            &attacker,
            script.mode,
            &before,
            sent_bytes,
            fx,
        );
    }
}

fn frame_len(frame: &Frame) -> u64 {
    (match frame {
        Frame::Summary(s) => 32 + s.docs.iter().map(|(_, h)| 8 + 32 * h.len()).sum::<usize>(),
        Frame::DocSync { message, .. } => 8 + message.len(),
        Frame::Goodbye { message, .. } => 4 + message.len(),
        _ => 4,
    }) as u64
}

/// What one engine call may do: close only the attacker's link, with a reason from the
/// protocol; persist only what it reports as changed; after a caught panic, close the link.
fn check_output(wire: &Wire, me: &str, conn: ConnId, out: &Output, caught: Option<&str>) {
    for (c, reason) in &out.closes {
        assert_eq!(
            *c, conn,
            "a link other than the attacker's was closed: {reason:?}"
        );
        assert!(
            matches!(
                reason.code,
                StatusCode::InvalidArgument
                    | StatusCode::PermissionDenied
                    | StatusCode::ResourceExhausted
                    | StatusCode::FailedPrecondition
                    | StatusCode::DeadlineExceeded
            ),
            "unexpected close reason {reason:?}"
        );
    }
    for (c, frame) in &out.sends {
        if *c != conn {
            assert!(
                matches!(frame, Frame::DocSync { .. } | Frame::Keepalive),
                "the engine sent {frame:?} on a link other than the attacker's"
            );
        }
    }
    for persist in &out.persist_docs {
        assert!(
            out.changed_docs.contains(&persist.doc),
            "{} persisted without a change",
            persist.doc
        );
    }
    if let Some(panic) = caught {
        assert!(
            out.closes.iter().any(|(c, _)| *c == conn),
            "the engine caught a panic ({panic}) but kept the link open"
        );
        // What a caught panic left behind must still be a sound document.
        for (id, doc) in wire.engines[me].lock_engine().documents() {
            let saved = doc.save();
            let loaded = Automerge::load(&saved)
                .unwrap_or_else(|err| panic!("{id} no longer loads after a caught panic: {err}"));
            assert_eq!(sorted(loaded.get_heads()), sorted(doc.get_heads()));
        }
    }
}

/// Owner writes, authors, and bounded size, checked on every document of the attacked engine.
fn check_documents(
    engine: &Engine,
    attacker: &NodeId,
    mode: Mode,
    before: &BTreeMap<ShareableDocId, Vec<ChangeHash>>,
    sent_bytes: u64,
    fx: &Fixture,
) {
    for (id, doc) in engine.documents() {
        let heads = sorted(doc.get_heads());
        let unchanged =
            before.get(id) == Some(&heads) || (heads.is_empty() && !before.contains_key(id));
        if unchanged {
            continue;
        }
        if mode == Mode::Hub {
            assert!(
                id.is_owned_by(attacker),
                "{id}, which {attacker} does not own, changed at the hub"
            );
        }
        let owner = match id.owner() {
            Owner::City(city) => NodeId::city(&city).expect("valid city"),
            _ => hub_id(),
        };
        for change in doc.get_changes(&[]) {
            assert!(
                actor_belongs_to(change.actor_id().to_bytes(), &owner),
                "{id} holds a change by {}, not by its owner {owner}",
                change.actor_id()
            );
        }
        // The content limits hold for everything accepted from a peer (counted here without
        // the engine's code): operations per change and per document, characters inserted
        // into one text or list by one change.
        let limits = fuzz_config();
        for change in doc.get_changes(&[]) {
            assert!(
                change.len() as u64 <= limits.max_change_ops,
                "{id} holds a change of {} operations",
                change.len()
            );
            let mut inserted: BTreeMap<String, u64> = BTreeMap::new();
            for op in change.decode().operations.iter().filter(|op| op.insert) {
                let chars = match &op.action {
                    automerge::legacy::OpType::Put(automerge::ScalarValue::Str(text)) => {
                        text.chars().count() as u64
                    }
                    _ => 1,
                };
                *inserted.entry(format!("{:?}", op.obj)).or_default() += chars;
            }
            assert!(
                inserted
                    .values()
                    .all(|n| *n <= limits.max_text_insert_chars),
                "{id} holds a change inserting {:?} elements into one text or list",
                inserted.values().max()
            );
        }
        let ops = doc.stats().num_ops;
        assert!(ops <= limits.max_doc_ops, "{id} holds {ops} operations");
        let budget = fx.max_fixture_ops + MAX_OPS_PER_BYTE * sent_bytes.max(1);
        assert!(
            ops <= budget,
            "{id} holds {ops} operations after {sent_bytes} bytes from the peer"
        );
    }
    if mode == Mode::Hub {
        for id in engine.documents().map(|(id, _)| id) {
            assert!(
                before.contains_key(id) || id.is_owned_by(attacker),
                "the hub took up {id} from {attacker}, which does not own it"
            );
        }
    }
}

fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort();
    heads
}
