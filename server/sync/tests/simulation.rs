//! A deterministic fault simulator for the federation: the real sync engine of one hub and
//! several cities (and, on some seeds, county hubs between them), driven with simulated time, a
//! simulated network and simulated disks.
//!
//! # The model
//!
//! - **Nodes.** One hub (`national`) and 2–6 cities, each an [`Engine`] with the actor id the
//!   real node uses. On about 40 % of the seeds ([`THREE_LEVEL_SHARE`]) the federation has
//!   three levels: 1–2 county hubs (`skane`, `vasterbotten`) dial the national hub, and each
//!   city dials a county hub or, as a city whose county has not joined, the national hub
//!   directly. Every engine knows the national hub's identity ([`EngineConfig::national_hub`]).
//!   The topology is drawn from a second generator of the seed, so two-level seeds run as they
//!   did before county hubs existed. On about 30 % of the seeds ([`STANDBY_SHARE`], drawn from
//!   a third generator, so the other seeds run exactly as before) there is also a **standby
//!   national hub** (`hub/standby`): it dials the national hub, exchanges every document with
//!   it and edits the national documents too; every engine names it in
//!   [`EngineConfig::standby_hubs`]. County hubs, cities of the national hub and some cities
//!   under a county hub name it as their second upstream (a few cities dial it first, with the
//!   national hub second), and fail over as `federation::upstream::Failover` does: the first
//!   upstream unreachable (down or cut off) → the second at once; the second unreachable →
//!   the first after the backoff; on the second for [`FAILBACK_MS`] with the first reachable
//!   again → the link to the second is closed and the first dialled. Each node has a simulated durable [`Disk`]: per shareable document the
//!   chunks persisted so far (an incremental chunk is appended, a snapshot replaces them all),
//!   per peer and document the last persisted sync state, and — on cities — local documents
//!   that hold a canary and are never given to the engine.
//! - **The driver** is the node's own ([`sfs_sync::driver::Driver`]) over an in-memory
//!   store ([`MemoryStorage`], which drops what was not synced when its node crashes) and a
//!   transport that records what the driver releases; the simulator puts the released frames
//!   on its network. An edit is *acknowledged* when the driver returns it as durable. Cities
//!   and county hubs dial their hub with the real [`Backoff`]; every node ticks once per
//!   simulated second.
//! - **The network.** Time is a `u64` of milliseconds. Each link has a [`ConnId`] that is never
//!   reused; a frame in flight carries its delivery time. Within a link and direction, frames
//!   arrive in order (like the real HTTP/2 stream) unless a fault says otherwise. When one end
//!   closes a link, the other end's transport notices after the frames in flight.
//! - **Faults**, chosen by a seeded RNG during the chaos phase: frame loss, duplication,
//!   reordering and long delays; link cuts (each end notices at its own time, or only through
//!   the peer timeout); partitions (a city or county hub cut off from its hub for a while);
//!   crashes of the national hub, a county hub or a city, between events or in the middle of
//!   writing a batch, followed by a restart whose engine is rebuilt from what was synced alone;
//!   on three-level seeds, a city moving between hubs (from its county hub to the national hub
//!   or back, or to the other county hub: its link is cut and it dials its new hub once it
//!   notices). On standby seeds the standby crashes and is partitioned like a county hub (its
//!   partition is one between the two hubs), and a city or county hub is often cut off from
//!   its first upstream only, so that it fails over. About a third of the seeds are
//!   *transport-faithful*: frames within a link are delivered in order and exactly once, and the
//!   only faults are cuts, crashes, partitions and delays.
//! - **Workload.** Owners edit their own documents (cities `shared/lessons/<city>` and on some
//!   seeds `shared/progress/<city>`, the hub (and the standby) `national/method` and on some
//!   seeds `national/directory`, county hubs `county/<id>/guidance` and on some seeds
//!   `county/<id>/meetings`), sometimes at an older version ([`Engine::edit_at`]) so that the
//!   document branches; every edit writes a key of its own. Nodes also try to edit documents
//!   they do not own, and cities edit their local documents.
//!
//! # What is checked
//!
//! - During the run: the engine never refuses an honest peer and never closes a link with
//!   `PermissionDenied`; every edit of a document a node does not own is refused with
//!   `NotOwner`; no frame names a local document or carries a local canary; after each
//!   restart, every document reloads at the heads of its last persisted chunk and holds every
//!   acknowledged edit of its owner.
//! - After the heal (faults stop, every link is cut at both ends and dialled afresh, frames
//!   delivered until quiet; transport-faithful seeds are first also required to converge
//!   without cutting the links that are still up): every replica of every document has its
//!   owner's heads and every acknowledged edit; every change in every document was made by the
//!   document's owner, for national documents by either hub (an edit at an older version carries Automerge's *isolated* actor
//!   derived from the owner's, see [`made_by`]); no canary is in any engine's document.
//! - Messages per change: in a clean phase, each edit followed by running until quiet costs at
//!   most `2 · (links + 1) + 2` `DocSync` frames, where `links` is the number of links of the
//!   tree (cities + county hubs + the standby's link; on two-level seeds without a standby,
//!   the number of cities as before). A change
//!   crosses every link once — each hub relays it at once to every other link, never back — and
//!   each crossing is answered by one acknowledgement, so a second hop adds the two messages of
//!   the county hub's link to the national hub, not a second round of the whole federation;
//!   the rest is the slack the two-level bound always had. After every node restarts from its
//!   disk, a reconnect costs no `DocSync` frame at all.
//!
//! # Running it
//!
//! `cargo test -p sfs-sync --test simulation -- --nocapture` runs [`DEFAULT_SEEDS`] seeds and
//! prints a summary. `SFS_SIM_SEEDS=5000` runs more; `SFS_SIM_SEED=17` replays one seed, and
//! `SFS_SIM_TRACE=1` prints every event of the run; `SFS_SIM_STANDBY=0` leaves the standby
//! out of every seed. A failure names its seed and how to replay it.
//! Seeds are spread over the available cores; each seed runs on one thread from its seed alone.
//!
//! Storage also fails now and then (on seeds that are not transport-faithful): a failpoint
//! makes a put or a sync fail; the driver then does what it does in the real node (nothing of
//! the failed batch leaves, the engine forgets what is not durable and closes every link), and
//! the node crashes and restarts from what was synced, as a node whose disk failed is
//! restarted. Nodes also crash in the middle of writing a batch. `SFS_SIM_WRITE_FAILURES=0`
//! turns the failpoints off.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, AutomergeError, ChangeHash, ReadDoc, ROOT};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sfs_sync::backoff::Backoff;
use sfs_sync::{
    read_frame, ConnId, DocId, Driver, DriverEditError, EditError, Engine, EngineConfig,
    EngineError, Frame, LogEvent, MemoryStorage, NodeId, Output, RecordingTransport, Released,
    Scope, ShareableDocId, SnapshotInProgress, StatusCode, Storage,
};

/// Seeds of the normal run.
const DEFAULT_SEEDS: u64 = 300;
/// A run stops starting new seeds after this many failed.
const MAX_FAILURES: usize = 10;
/// Cities are taken from the front of this list.
const CITY_NAMES: [&str; 6] = ["malmo", "lund", "helsingborg", "uppsala", "umea", "kiruna"];
/// County hubs are taken from the front of this list.
const COUNTY_NAMES: [&str; 2] = ["skane", "vasterbotten"];
/// The node index of the national hub; cities are `1..=cities`, county hubs follow them.
const HUB: usize = 0;
/// Share of the seeds that simulate three levels (city → county hub → national hub).
const THREE_LEVEL_SHARE: f64 = 0.4;
/// Share of the seeds with a standby national hub (`standby`, linked to the national hub).
const STANDBY_SHARE: f64 = 0.3;
/// While on the standby, a node tries its first upstream again this often (on ticks).
const FAILBACK_MS: u64 = 5_000;
/// Every node's engine ticks this often, as the real node does.
const TICK_MS: u64 = 1_000;
/// Events one seed may process in all; more means a livelock.
const EVENT_LIMIT: u64 = 500_000;
/// Bounds the slices of one received message (a simulated message holds a few changes).
const MAX_SLICES_PER_MESSAGE: u32 = 100_000;
/// Events a run-until-quiet may take before the federation counts as not quiet.
const QUIET_LIMIT: u64 = 50_000;
/// Simulated time a transport-faithful seed gets to settle with its links left up.
const SETTLE_MS: u64 = 150_000;
/// Edits made one at a time in the clean phase, to count messages per change.
const CLEAN_EDITS: usize = 3;
/// Marks every value of a local document; it must never appear outside its city.
const CANARY: &str = "local-canary";
/// Local documents each city keeps next to the engine.
const LOCAL_KINDS: [&str; 2] = ["network", "signals"];

#[test]
fn the_federation_converges_under_faults() {
    let seeds: Vec<u64> = match (env_u64("SFS_SIM_SEED"), env_u64("SFS_SIM_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, Some(count)) => (0..count).collect(),
        (None, None) => (0..DEFAULT_SEEDS).collect(),
    };
    let options = Options {
        write_failures: std::env::var("SFS_SIM_WRITE_FAILURES").map_or(true, |v| v != "0"),
        standby: std::env::var("SFS_SIM_STANDBY").map_or(true, |v| v != "0"),
    };
    let mut replay_prefix = String::new();
    if !options.write_failures {
        replay_prefix.push_str("SFS_SIM_WRITE_FAILURES=0 ");
    }
    if !options.standby {
        replay_prefix.push_str("SFS_SIM_STANDBY=0 ");
    }
    let mut outcomes = run_seeds(&seeds, options);
    outcomes.sort_by_key(|(seed, _)| *seed);
    let mut totals = Counters::default();
    let mut faithful_seeds = 0;
    let mut failures = Vec::new();
    for (seed, outcome) in &outcomes {
        match outcome {
            Ok((counters, faithful)) => {
                totals.add(counters);
                faithful_seeds += usize::from(*faithful);
            }
            Err(message) => failures.push(format!(
                "seed {seed} failed: {message} (replay: {replay_prefix}SFS_SIM_SEED={seed} cargo test -p sfs-sync --test simulation -- --nocapture)"
            )),
        }
    }
    let three_level_seeds = totals.three_level_seeds;
    let standby_seeds = totals.standby_seeds;
    println!(
        "simulation: {} seeds run, {} passed ({faithful_seeds} transport-faithful); \
         {} acknowledged edits, {} unacknowledged, {} refused foreign edits; \
         {three_level_seeds} three-level; {standby_seeds} with a standby hub ({} failovers, {} failbacks); \
         {} messages applied in slices ({} later slices); {} whole documents delivered; \
         {} crashes ({} mid-output), {} failed writes, {} link cuts, {} partitions, {} city moves; \
         {} frames sent ({:?}), {} lost, {} duplicated, {} reordered, \
         {} for links already closed; {} links closed by an engine; at most {} DocSync frames per change ({} frames in all)",
        outcomes.len(),
        outcomes.len() - failures.len(),
        totals.edits_acknowledged,
        totals.edits_unacknowledged,
        totals.foreign_edits_refused,
        totals.failovers,
        totals.failbacks,
        totals.sliced_messages,
        totals.later_slices,
        totals.whole_documents,
        totals.crashes,
        totals.mid_output_crashes,
        totals.write_failures,
        totals.link_cuts,
        totals.partitions,
        totals.city_moves,
        totals.frames_sent,
        totals.frames_by_kind,
        totals.frames_lost,
        totals.frames_duplicated,
        totals.frames_reordered,
        totals.frames_for_closed_links,
        totals.engine_closes,
        totals.max_doc_sync_per_change,
        totals.max_frames_per_change,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if outcomes.len() >= 20 {
        assert!(
            totals.whole_documents > 0,
            "no seed sent a whole document to a node that held nothing"
        );
    }
}

/// The outcome of one seed: its counters and whether it was transport-faithful, or the message
/// of the invariant it broke.
type Outcome = Result<(Counters, bool), String>;

/// Runs the seeds on every available core. Seeds are independent and each runs on one thread
/// from its seed alone, so the parallelism changes nothing about any run. Stops handing out
/// seeds after [`MAX_FAILURES`] failures.
fn run_seeds(seeds: &[u64], options: Options) -> Vec<(u64, Outcome)> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, seeds.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut outcomes = Vec::new();
                    while failed.load(Ordering::Relaxed) < MAX_FAILURES {
                        let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        let outcome = catch_unwind(AssertUnwindSafe(|| run_seed(seed, options)))
                            .map_err(|panic| panic_message(&*panic));
                        if outcome.is_err() {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        outcomes.push((seed, outcome));
                    }
                    outcomes
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("every seed's panic is caught"))
            .collect()
    })
}

/// Switches that change what the simulation models, from the environment.
#[derive(Debug, Clone, Copy)]
struct Options {
    /// Document writes fail now and then during the chaos phase, handled as the real node
    /// does (on by default; `SFS_SIM_WRITE_FAILURES=0` turns it off).
    write_failures: bool,
    /// A share of the seeds has a standby national hub ([`STANDBY_SHARE`]; on by default;
    /// `SFS_SIM_STANDBY=0` runs every seed without, exactly as before standby hubs existed).
    standby: bool,
}

/// Runs one seed from start to the last check; panics on the first broken invariant.
fn run_seed(seed: u64, options: Options) -> (Counters, bool) {
    let mut sim = Sim::new(seed, options);
    sim.setup();
    sim.chaos();
    if sim.scenario.transport_faithful {
        sim.settle_with_links_left_up();
        sim.check_convergence("after settling without cutting live links");
    }
    sim.heal();
    sim.check_convergence("after the heal");
    sim.check_owner_only();
    sim.check_no_canary_in_engines();
    sim.clean_edits();
    sim.check_convergence("after the clean edits");
    sim.restart_everything_and_reconnect();
    sim.check_convergence("after every node restarted");
    (sim.counters, sim.scenario.transport_faithful)
}

/// What one seed simulates: the size of the federation and how hostile the network is.
#[derive(Debug)]
struct Scenario {
    cities: usize,
    /// County hubs (0 on two-level seeds, 1 or 2 on three-level ones).
    counties: usize,
    /// Per city (in order), the county hub it dials first (an index into the county hubs), or
    /// `None` for the national hub.
    county_of: Vec<Option<usize>>,
    /// County hubs own `county/<id>/meetings` besides `county/<id>/guidance`.
    counties_own_meetings: bool,
    /// A standby national hub (`hub/standby`): it dials the national hub, and every engine is
    /// configured with it ([`EngineConfig::standby_hubs`]).
    standby: bool,
    /// On standby seeds, per city (in order): `Some(true)` if it names the standby as its
    /// second upstream, `Some(false)` if it dials the standby first (and the national hub as
    /// its second); `None` if it has no second upstream. County hubs always name the standby.
    city_standby: Vec<Option<bool>>,
    /// Frames within a link arrive in order and exactly once.
    transport_faithful: bool,
    loss: f64,
    duplicate: f64,
    reorder: f64,
    long_delay: f64,
    /// Chance that a document write fails (only with [`Options::write_failures`]).
    write_failure: f64,
    chaos_actions: usize,
    /// Cities own `shared/progress/<city>` besides their lessons.
    cities_own_progress: bool,
    /// The hub owns `national/directory` besides `national/method`.
    hub_owns_directory: bool,
    compact_after_chunks: usize,
    /// Local edits wait for `push_pending`, as in the real node; several may be pushed at once.
    defer_local_pushes: bool,
    /// Received messages of more operations than this are applied in slices, one driver call
    /// (stored and released, with a possible crash or failed write) per slice.
    apply_slice_ops: u64,
}

impl Scenario {
    /// Draws the scenario of `seed` from `rng`. The topology (county hubs and which city dials
    /// which hub) comes from a second generator of the same seed, so that a two-level seed runs
    /// exactly as it did before county hubs existed.
    fn draw(seed: u64, rng: &mut ChaCha8Rng, options: Options) -> Scenario {
        let mut topology = ChaCha8Rng::seed_from_u64(seed ^ 0x636f_756e_7479_0000);
        let cities = rng.gen_range(2..=CITY_NAMES.len());
        let counties = if topology.gen_bool(THREE_LEVEL_SHARE) {
            topology.gen_range(1..=COUNTY_NAMES.len())
        } else {
            0
        };
        let mut county_of: Vec<Option<usize>> = (0..cities)
            .map(|_| {
                (counties > 0 && topology.gen_bool(0.7)).then(|| topology.gen_range(0..counties))
            })
            .collect();
        if counties > 0 && county_of.iter().all(Option::is_none) {
            county_of[0] = Some(0);
        }
        let counties_own_meetings = topology.gen_bool(0.5);
        // Like the topology, from a generator of its own, so seeds keep their other draws.
        let mut slicing = ChaCha8Rng::seed_from_u64(seed ^ 0x736c_6963_6500_0000);
        let apply_slice_ops = if slicing.gen_bool(0.4) {
            slicing.gen_range(1..=4)
        } else {
            EngineConfig::default().apply_slice_ops
        };
        // The standby too, so that seeds without one run exactly as before it existed.
        let mut standby_draws = ChaCha8Rng::seed_from_u64(seed ^ 0x7374_616e_6462_7900);
        let standby = options.standby && standby_draws.gen_bool(STANDBY_SHARE);
        let city_standby = (0..cities)
            .map(|index| {
                if !standby {
                    return None;
                }
                let direct = county_of[index].is_none();
                match standby_draws.gen_range(0..10) {
                    // A city of the national hub may dial the standby first.
                    0..=1 if direct => Some(false),
                    // A city under a county hub may also name the standby (when its county
                    // hub is unreachable, it reaches the standby directly).
                    0..=5 => Some(true),
                    _ if direct => Some(true),
                    _ => None,
                }
            })
            .collect();
        let transport_faithful = rng.gen_bool(0.35);
        let intensity: f64 = rng.gen_range(0.0..1.0);
        let in_link = if transport_faithful { 0.0 } else { intensity };
        Scenario {
            cities,
            counties,
            county_of,
            counties_own_meetings,
            standby,
            city_standby,
            transport_faithful,
            loss: 0.08 * in_link,
            duplicate: 0.05 * in_link,
            reorder: 0.08 * in_link,
            long_delay: 0.03 * intensity,
            // A failed write drops frames from a live link, so not on transport-faithful seeds.
            write_failure: if options.write_failures && !transport_faithful {
                0.05
            } else {
                0.0
            },
            chaos_actions: rng.gen_range(20..=45),
            cities_own_progress: rng.gen_bool(0.3),
            hub_owns_directory: rng.gen_bool(0.5),
            compact_after_chunks: *[2, 3, 8, 64].choose(rng).expect("not empty"),
            defer_local_pushes: rng.gen_bool(0.5),
            apply_slice_ops,
        }
    }
}

/// Tallies of one seed, summed over all seeds for the summary line.
#[derive(Debug, Default)]
struct Counters {
    edits_acknowledged: u64,
    edits_unacknowledged: u64,
    foreign_edits_refused: u64,
    crashes: u64,
    mid_output_crashes: u64,
    write_failures: u64,
    link_cuts: u64,
    partitions: u64,
    city_moves: u64,
    three_level_seeds: u64,
    standby_seeds: u64,
    /// Moves of a city or county hub to its second upstream, and back to its first.
    failovers: u64,
    failbacks: u64,
    /// Received messages applied in more than one slice, and the slices after the first.
    sliced_messages: u64,
    later_slices: u64,
    /// Sync messages delivered that carried a whole document.
    whole_documents: u64,
    frames_sent: u64,
    doc_sync_frames: u64,
    frames_lost: u64,
    frames_duplicated: u64,
    frames_reordered: u64,
    frames_for_closed_links: u64,
    frames_by_kind: BTreeMap<&'static str, u64>,
    engine_closes: u64,
    events: u64,
    max_doc_sync_per_change: u64,
    max_frames_per_change: u64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.edits_acknowledged += other.edits_acknowledged;
        self.edits_unacknowledged += other.edits_unacknowledged;
        self.foreign_edits_refused += other.foreign_edits_refused;
        self.crashes += other.crashes;
        self.mid_output_crashes += other.mid_output_crashes;
        self.write_failures += other.write_failures;
        self.link_cuts += other.link_cuts;
        self.partitions += other.partitions;
        self.city_moves += other.city_moves;
        self.three_level_seeds += other.three_level_seeds;
        self.standby_seeds += other.standby_seeds;
        self.failovers += other.failovers;
        self.failbacks += other.failbacks;
        self.sliced_messages += other.sliced_messages;
        self.whole_documents += other.whole_documents;
        self.later_slices += other.later_slices;
        self.frames_sent += other.frames_sent;
        self.doc_sync_frames += other.doc_sync_frames;
        self.frames_lost += other.frames_lost;
        self.frames_duplicated += other.frames_duplicated;
        self.frames_reordered += other.frames_reordered;
        self.frames_for_closed_links += other.frames_for_closed_links;
        for (kind, count) in &other.frames_by_kind {
            *self.frames_by_kind.entry(kind).or_default() += count;
        }
        self.engine_closes += other.engine_closes;
        self.events += other.events;
        self.max_doc_sync_per_change = self
            .max_doc_sync_per_change
            .max(other.max_doc_sync_per_change);
        self.max_frames_per_change = self.max_frames_per_change.max(other.max_frames_per_change);
    }
}

/// A node's durable storage: what survives a crash. Shareable documents and sync states are
/// in the [`MemoryStorage`] the node's driver writes (a crash drops what was not synced);
/// local documents (cities only) are saved Automerge bytes beside it, never given to the
/// engine.
#[derive(Default)]
struct Disk {
    storage: Arc<MemoryStorage>,
    local_docs: BTreeMap<DocId, Vec<u8>>,
}

/// The one driver ([`sfs_sync::driver`]) over the in-memory store and a transport that
/// records what it is handed, for the simulator to put on its network.
type SimDriver = Driver<Arc<MemoryStorage>, RecordingTransport>;

/// One simulated node: its identity, its engine while it runs, and its disk.
struct Node {
    id: NodeId,
    actor: ActorId,
    /// `None` while the node is down.
    driver: Option<SimDriver>,
    disk: Disk,
    owned: Vec<ShareableDocId>,
    /// Every acknowledged edit: document → key → value.
    acknowledged: BTreeMap<ShareableDocId, BTreeMap<String, String>>,
    /// Heads right after each acknowledged edit, to edit at an older version.
    acknowledged_versions: BTreeMap<ShareableDocId, Vec<Vec<ChangeHash>>>,
    /// The hub this node dials first (a county hub, the national hub or the standby); `None`
    /// for the national hub.
    upstream: Option<usize>,
    /// Its second upstream, which it fails over to while the first is unreachable (the
    /// standby, or the national hub for a city that dials the standby first).
    second: Option<usize>,
    /// Whether it is on its second upstream now, and since when.
    on_second_since: Option<u64>,
    /// Cities and county hubs: the reconnect delays.
    backoff: Backoff,
    dial_pending: bool,
    /// Cities and county hubs: their link upstream is unreachable until this time.
    partitioned_until: u64,
    /// On standby seeds: the partition cuts the node off from this hub only (its other
    /// upstream stays reachable); `None`: from every hub.
    partitioned_from: Option<usize>,
    /// A failpoint is armed in the node's storage: when it fires, the node crashes.
    crash_armed: bool,
    /// A snapshot copied but not yet saved and stored: finished at a later tick, so that
    /// writes and frames fall between its copy and its store.
    snapshot_in_progress: Option<SnapshotInProgress>,
}

impl Node {
    fn new(id: NodeId, owned: Vec<ShareableDocId>, upstream: Option<usize>) -> Node {
        let actor = sfs_sync::run_actor(&id, [7; 8]);
        Node {
            id,
            actor,
            upstream,
            second: None,
            on_second_since: None,
            driver: None,
            disk: Disk::default(),
            owned,
            acknowledged: BTreeMap::new(),
            acknowledged_versions: BTreeMap::new(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            dial_pending: false,
            partitioned_until: 0,
            partitioned_from: None,
            crash_armed: false,
            snapshot_in_progress: None,
        }
    }

    fn driver(&self) -> &SimDriver {
        self.driver
            .as_ref()
            .unwrap_or_else(|| panic!("{} is down", self.id))
    }

    fn engine(&self) -> sfs_sync::EngineCall<'_> {
        self.driver().lock_engine()
    }

    fn open_conns(&self) -> BTreeSet<ConnId> {
        self.driver
            .as_ref()
            .map(|driver| driver.read(|engine| engine.links().map(|(conn, _, _)| conn).collect()))
            .unwrap_or_default()
    }

    /// Builds a fresh engine and driver from the disk alone, as a restarted node does (what
    /// was not synced is gone), and checks that nothing persisted or acknowledged was lost.
    fn boot(&self, config: &EngineConfig) -> SimDriver {
        let storage = &self.disk.storage;
        storage.restart();
        for doc in storage.durable_docs() {
            let (loaded, _) = storage
                .durable_doc(&doc)
                .unwrap_or_else(|err| {
                    panic!("{}: the stored parts of {doc} do not load: {err}", self.id)
                })
                .expect("a durable document");
            assert_eq!(
                sorted(loaded.get_heads()),
                sorted(storage.durable_heads(&doc).unwrap_or_default()),
                "durability: {} reloaded {doc} at other heads than its last persisted chunk",
                self.id
            );
        }
        let engine = Engine::new(self.id.clone(), self.actor.clone(), config.clone());
        let driver = Driver::open(engine, storage.clone(), RecordingTransport::new())
            .unwrap_or_else(|err| panic!("{}: the store does not open: {err}", self.id));
        driver.read(|engine| {
            for (doc, edits) in &self.acknowledged {
                let reloaded = engine.document(doc).unwrap_or_else(|| {
                    panic!(
                        "durability: {} acknowledged edits of {doc} but has no document after a restart",
                        self.id
                    )
                });
                for (key, value) in edits {
                    assert_eq!(
                        read_string(reloaded, key).as_deref(),
                        Some(value.as_str()),
                        "durability: {} lost its acknowledged edit {key} of {doc} in a restart",
                        self.id
                    );
                }
            }
        });
        driver
    }
}

/// Something that happens at a simulated time.
#[derive(Debug)]
enum Event {
    /// A frame reaches one end of a link.
    Deliver {
        conn: ConnId,
        to: usize,
        frame: Frame,
    },
    /// The transport of `node` learns that link `conn` is gone.
    NoticeClose { conn: ConnId, node: usize },
    /// A city or county hub tries to open a link to its upstream hub.
    Dial { node: usize },
    /// A crashed node comes back.
    Restart { node: usize },
    /// Every running engine ticks.
    Tick,
}

/// A link between a city or county hub (`lower`, which dialled) and its upstream hub
/// (`upper`), for as long as the simulation runs.
struct Link {
    lower: usize,
    upper: usize,
    /// Per direction (to the upper end, to the lower end): the latest delivery time handed out,
    /// so that frames stay in order.
    last_arrival: [u64; 2],
}

impl Link {
    fn other_end(&self, node: usize) -> usize {
        if node == self.upper {
            self.lower
        } else {
            self.upper
        }
    }

    fn direction(&self, to: usize) -> usize {
        usize::from(to != self.upper)
    }
}

/// The whole simulated federation.
struct Sim {
    rng: ChaCha8Rng,
    /// Draws that only standby seeds make (failovers, partitions from one hub), so that the
    /// other seeds draw from `rng` exactly as before.
    standby_rng: ChaCha8Rng,
    scenario: Scenario,
    config: EngineConfig,
    now: u64,
    nodes: Vec<Node>,
    links: BTreeMap<ConnId, Link>,
    next_conn: ConnId,
    queue: BTreeMap<(u64, u64), Event>,
    next_seq: u64,
    /// Faults are injected only while this is on.
    faults: bool,
    edit_count: u64,
    counters: Counters,
    trace: bool,
}

impl Sim {
    fn new(seed: u64, options: Options) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let scenario = Scenario::draw(seed, &mut rng, options);
        let national = NodeId::hub("national").expect("valid name");
        let standby_id = NodeId::hub("standby").expect("valid name");
        let config = EngineConfig {
            // Cities under a county hub check the national hub's changes two hops away.
            national_hub: Some(national.clone()),
            // Every node takes national edits made at the standby.
            standby_hubs: if scenario.standby {
                vec![standby_id.clone()]
            } else {
                Vec::new()
            },
            compact_after_chunks: scenario.compact_after_chunks,
            // Small documents: let the byte rule take snapshots too.
            compact_min_bytes: 512,
            defer_local_pushes: scenario.defer_local_pushes,
            apply_slice_ops: scenario.apply_slice_ops,
            ..EngineConfig::default()
        };
        let mut hub_docs = vec![shareable("national/method")];
        if scenario.hub_owns_directory {
            hub_docs.push(shareable("national/directory"));
        }
        let mut nodes = vec![Node::new(national, hub_docs.clone(), None)];
        // The standby's index, after the cities and county hubs.
        let standby = scenario.cities + scenario.counties + 1;
        for (index, name) in CITY_NAMES[..scenario.cities].iter().enumerate() {
            let mut city_docs = vec![shareable(&format!("shared/lessons/{name}"))];
            if scenario.cities_own_progress {
                city_docs.push(shareable(&format!("shared/progress/{name}")));
            }
            let upstream = match scenario.county_of[index] {
                Some(county) => scenario.cities + 1 + county,
                None => HUB,
            };
            let mut city = Node::new(
                NodeId::city(name).expect("valid name"),
                city_docs,
                Some(upstream),
            );
            match scenario.city_standby[index] {
                Some(true) => city.second = Some(standby),
                Some(false) => {
                    city.upstream = Some(standby);
                    city.second = Some(HUB);
                }
                None => {}
            }
            nodes.push(city);
        }
        for name in &COUNTY_NAMES[..scenario.counties] {
            let mut county_docs = vec![shareable(&format!("county/{name}/guidance"))];
            if scenario.counties_own_meetings {
                county_docs.push(shareable(&format!("county/{name}/meetings")));
            }
            let mut county = Node::new(
                NodeId::county(name).expect("valid name"),
                county_docs,
                Some(HUB),
            );
            county.second = scenario.standby.then_some(standby);
            nodes.push(county);
        }
        if scenario.standby {
            // The standby dials the national hub and may edit the national documents too.
            nodes.push(Node::new(standby_id, hub_docs, Some(HUB)));
        }
        for node in &mut nodes {
            node.driver = Some(node.boot(&config));
        }
        let trace = std::env::var_os("SFS_SIM_TRACE").is_some();
        if trace {
            eprintln!("seed {seed}: {scenario:?}");
        }
        let counters = Counters {
            three_level_seeds: u64::from(scenario.counties > 0),
            standby_seeds: u64::from(scenario.standby),
            ..Counters::default()
        };
        Sim {
            rng,
            standby_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6661_696c_6f76_6572),
            scenario,
            config,
            now: 0,
            nodes,
            links: BTreeMap::new(),
            next_conn: 1,
            queue: BTreeMap::new(),
            next_seq: 0,
            faults: false,
            edit_count: 0,
            counters,
            trace,
        }
    }

    fn cities(&self) -> std::ops::RangeInclusive<usize> {
        1..=self.scenario.cities
    }

    fn counties(&self) -> std::ops::RangeInclusive<usize> {
        self.scenario.cities + 1..=self.scenario.cities + self.scenario.counties
    }

    /// The nodes that dial a hub: cities, county hubs and the standby.
    fn lower_nodes(&self) -> std::ops::RangeInclusive<usize> {
        1..=self.scenario.cities + self.scenario.counties + usize::from(self.scenario.standby)
    }

    /// The standby national hub, on standby seeds.
    fn standby(&self) -> Option<usize> {
        self.scenario
            .standby
            .then_some(self.scenario.cities + self.scenario.counties + 1)
    }

    /// Links every node to its upstream hub: the standby first, county hubs, then cities.
    fn connect_all(&mut self) {
        let standby = self.standby();
        for node in standby
            .into_iter()
            .chain(self.counties())
            .chain(self.cities())
        {
            self.connect(node);
        }
    }

    fn name(&self, node: usize) -> String {
        self.nodes[node].id.to_string()
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>9} ms] {}", self.now, what());
        }
    }

    // ----- phases -------------------------------------------------------------------------

    /// Every city links to the hub and every owner writes its documents once, on a clean
    /// network, so that every document exists everywhere before the faults start.
    fn setup(&mut self) {
        self.connect_all();
        for node in 0..self.nodes.len() {
            for doc in self.nodes[node].owned.clone() {
                assert!(
                    self.edit(node, &doc, None),
                    "an edit without faults is acknowledged"
                );
            }
        }
        self.run_until_quiet("the setup");
        self.check_convergence("after the setup");
    }

    /// Random edits and faults at random times, with every node ticking.
    fn chaos(&mut self) {
        self.faults = true;
        self.schedule(TICK_MS, Event::Tick);
        for _ in 0..self.scenario.chaos_actions {
            let gap = self.rng.gen_range(0..1_500);
            self.run_until(self.now + gap);
            self.random_action();
            self.ensure_dials();
        }
        self.push_everything_pending();
        self.stop_faults();
    }

    /// Pushes the edits every running node has not pushed yet.
    fn push_everything_pending(&mut self) {
        for node in 0..self.nodes.len() {
            self.call(node, |engine, now| engine.push_pending(now));
        }
    }

    /// Transport-faithful seeds only: with faults stopped, links that are still up must bring
    /// everyone in step by themselves once stale links have timed out and cities redialled.
    fn settle_with_links_left_up(&mut self) {
        self.schedule(TICK_MS, Event::Tick);
        self.run_until(self.now + SETTLE_MS);
        self.queue.retain(|_, event| !matches!(event, Event::Tick));
        self.run_until_quiet("settling without cutting live links");
    }

    /// Cuts every link at both ends, drops everything in flight, dials every city afresh and
    /// delivers frames in order until nothing is left to say.
    fn heal(&mut self) {
        self.queue.retain(|_, event| !matches!(event, Event::Tick));
        for node in 0..self.nodes.len() {
            for conn in self.nodes[node].open_conns() {
                self.call(node, |engine, _| engine.disconnect(conn));
            }
        }
        self.queue.clear();
        for node in &mut self.nodes {
            node.dial_pending = false;
        }
        self.now += 1_000;
        self.connect_all();
        self.run_until_quiet("the heal");
    }

    /// One edit at a time on a quiet federation; each may cost only a few messages: one
    /// message and one acknowledgement per link of the tree, plus a little (see the module
    /// documentation).
    fn clean_edits(&mut self) {
        // The standby's link to the national hub is a link of the tree too.
        let links = (self.scenario.cities + self.scenario.counties) as u64
            + u64::from(self.scenario.standby);
        let bound = 2 * (links + 1) + 2;
        for _ in 0..CLEAN_EDITS {
            let node = self.rng.gen_range(0..self.nodes.len());
            let doc = self.nodes[node]
                .owned
                .choose(&mut self.rng)
                .expect("every node owns documents")
                .clone();
            let doc_sync_before = self.counters.doc_sync_frames;
            let frames_before = self.counters.frames_sent;
            assert!(self.edit(node, &doc, None), "a clean edit is acknowledged");
            self.run_until_quiet("a clean edit");
            let doc_sync = self.counters.doc_sync_frames - doc_sync_before;
            let frames = self.counters.frames_sent - frames_before;
            assert!(
                doc_sync <= bound,
                "one edit of {doc} by {} cost {doc_sync} DocSync frames; the bound is {bound}",
                self.name(node)
            );
            self.counters.max_doc_sync_per_change =
                self.counters.max_doc_sync_per_change.max(doc_sync);
            self.counters.max_frames_per_change = self.counters.max_frames_per_change.max(frames);
        }
    }

    /// Stops every node cleanly, restarts each from its disk alone (checking that it reloads
    /// exactly what it held), and reconnects: with nothing changed, no `DocSync` is needed.
    fn restart_everything_and_reconnect(&mut self) {
        let mut held = Vec::new();
        for node in 0..self.nodes.len() {
            let docs: BTreeMap<ShareableDocId, Vec<ChangeHash>> = self.nodes[node]
                .engine()
                .documents()
                .map(|(id, doc)| (id.clone(), sorted(doc.get_heads())))
                .filter(|(_, heads)| !heads.is_empty())
                .collect();
            held.push(docs);
            for conn in self.nodes[node].open_conns() {
                self.call(node, |engine, _| engine.disconnect(conn));
            }
        }
        self.queue.clear();
        for (node, held) in held.into_iter().enumerate() {
            // A clean stop: what was put is flushed before the process ends.
            self.nodes[node]
                .disk
                .storage
                .sync()
                .expect("a clean stop flushes the store");
            self.nodes[node].driver = None;
            self.nodes[node].snapshot_in_progress = None;
            self.nodes[node].snapshot_in_progress = None;
            self.restart(node);
            let reloaded: BTreeMap<ShareableDocId, Vec<ChangeHash>> = self.nodes[node]
                .engine()
                .documents()
                .map(|(id, doc)| (id.clone(), sorted(doc.get_heads())))
                .collect();
            assert_eq!(
                reloaded,
                held,
                "{} reloaded other documents than it held",
                self.name(node)
            );
        }
        self.queue.clear();
        self.now += 1_000;
        let doc_sync_before = self.counters.doc_sync_frames;
        self.connect_all();
        self.run_until_quiet("the reconnect after restarting every node");
        let doc_sync = self.counters.doc_sync_frames - doc_sync_before;
        assert_eq!(
            doc_sync, 0,
            "a reconnect with nothing changed cost {doc_sync} DocSync frames"
        );
    }

    fn stop_faults(&mut self) {
        self.faults = false;
        self.queue.retain(|_, event| !matches!(event, Event::Tick));
        for node in 0..self.nodes.len() {
            self.nodes[node].partitioned_until = 0;
            self.nodes[node].partitioned_from = None;
            self.nodes[node].crash_armed = false;
            self.nodes[node].disk.storage.disarm();
            if self.nodes[node].driver.is_none() {
                self.restart(node);
            }
        }
        self.ensure_dials();
    }

    // ----- the event loop -----------------------------------------------------------------

    fn schedule(&mut self, at: u64, event: Event) {
        self.queue.insert((at, self.next_seq), event);
        self.next_seq += 1;
    }

    /// Processes every event due up to `until`, then sets the clock there.
    fn run_until(&mut self, until: u64) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > until {
                break;
            }
            let ((at, _), event) = entry.remove_entry();
            self.now = self.now.max(at);
            self.handle(event);
        }
        self.now = self.now.max(until);
    }

    /// Processes events until none is left; ticks must be off.
    fn run_until_quiet(&mut self, label: &str) {
        for _ in 0..QUIET_LIMIT {
            let Some(((at, _), event)) = self.queue.pop_first() else {
                return;
            };
            assert!(!matches!(event, Event::Tick), "ticks are off in {label}");
            self.now = self.now.max(at);
            self.handle(event);
        }
        panic!(
            "{label}: the federation is not quiet after {QUIET_LIMIT} events ({} still queued)",
            self.queue.len()
        );
    }

    fn handle(&mut self, event: Event) {
        self.counters.events += 1;
        assert!(
            self.counters.events <= EVENT_LIMIT,
            "more than {EVENT_LIMIT} events: a livelock"
        );
        match event {
            Event::Deliver { conn, to, frame } => self.deliver(conn, to, frame),
            Event::NoticeClose { conn, node } => {
                self.log(|| format!("{} notices link {conn} is gone", self.name(node)));
                self.call(node, |engine, _| engine.disconnect(conn));
            }
            Event::Dial { node } => self.dial(node),
            Event::Restart { node } => {
                if self.nodes[node].driver.is_none() {
                    self.restart(node);
                }
            }
            Event::Tick => {
                for node in 0..self.nodes.len() {
                    self.call(node, |engine, now| engine.tick(now));
                    self.compact(node);
                }
                self.fail_back();
                self.schedule(self.now + TICK_MS, Event::Tick);
            }
        }
        self.ensure_dials();
    }

    fn deliver(&mut self, conn: ConnId, to: usize, frame: Frame) {
        if self.nodes[to].driver.is_none() {
            return;
        }
        if self.faults && !self.scenario.transport_faithful && self.link_cut_off(conn) {
            self.counters.frames_lost += 1;
            return;
        }
        self.log(|| format!("{} receives {} on {conn}", self.name(to), frame.kind()));
        if !self.nodes[to].open_conns().contains(&conn) {
            // A frame that arrives after its link closed at this end must change nothing.
            self.counters.frames_for_closed_links += 1;
            let kind = frame.kind();
            let now = self.now;
            let driver = self.nodes[to].driver();
            let acted = driver
                .call(|engine| {
                    let out = engine.receive(conn, frame, now);
                    let acted = !(out.persist_docs.is_empty()
                        && out.persist_sync_states.is_empty()
                        && out.sends.is_empty()
                        && out.closes.is_empty());
                    (acted, out)
                })
                .unwrap_or(true);
            assert!(
                !acted && driver.transport().take().is_empty(),
                "{} acted on a {kind} frame for link {conn}, which it has closed",
                self.nodes[to].id
            );
            return;
        }
        // As the node's driver does: read without the engine, then one call per slice, each
        // stored and released before the next (and each a chance to crash or fail a write).
        if let Frame::DocSync { message, .. } = &frame {
            let whole = automerge::sync::Message::decode(message).is_ok_and(|message| {
                message.changes.len() == 1
                    && message.changes.iter().all(|chunk| chunk.get(8) == Some(&0))
            });
            self.counters.whole_documents += u64::from(whole);
        }
        let read = read_frame(frame, &EngineConfig::default().read_limits());
        let mut unfinished = self.call(to, |engine, now| engine.receive_read(conn, read, now));
        if unfinished.contains(&conn) {
            self.counters.sliced_messages += 1;
        }
        let mut slices_left = MAX_SLICES_PER_MESSAGE;
        while unfinished.contains(&conn) {
            assert!(
                slices_left > 0,
                "a message was still unfinished after {MAX_SLICES_PER_MESSAGE} slices"
            );
            slices_left -= 1;
            self.counters.later_slices += 1;
            unfinished = self.call(to, |engine, now| engine.continue_receive(conn, now));
        }
    }

    /// Runs one engine call on a running node through its driver, puts what the driver
    /// released on the network, and lets the other end of every link the call closed notice it.
    /// Returns the links whose received message is applied only in part.
    fn call(&mut self, node: usize, f: impl FnOnce(&mut Engine, u64) -> Output) -> Vec<ConnId> {
        let now = self.now;
        let before = self.nodes[node].open_conns();
        if self.nodes[node].driver.is_none() {
            return Vec::new();
        }
        self.arm_write_failure(node);
        // A storage failure is handled by the driver (the engine forgets what is not stored
        // and closes every link); the node then crashes below, as a real one is restarted.
        let mut unfinished = Vec::new();
        let _ = self.nodes[node].driver().perform(|engine| {
            let out = f(engine, now);
            unfinished.clone_from(&out.unfinished);
            out
        });
        if !self.release(node) {
            return Vec::new();
        }
        let after = self.nodes[node].open_conns();
        for conn in before.difference(&after) {
            self.end_closed(node, *conn);
        }
        unfinished
    }

    /// Stores the snapshots that fell due at `node` (as a node's background task does), with
    /// the same chance of a write failure as any other write. Half the time a snapshot's copy
    /// is taken at one tick and saved and stored at the next, with whatever the network
    /// delivers in between written meanwhile (as the node's writes go on while it saves).
    fn compact(&mut self, node: usize) {
        if self.nodes[node].driver.is_none() {
            return;
        }
        let before = self.nodes[node].open_conns();
        self.arm_write_failure(node);
        let in_progress = self.nodes[node].snapshot_in_progress.take();
        let split = self.rng.gen_bool(0.5);
        let driver = self.nodes[node].driver();
        let mut keep = None;
        let _ = match in_progress {
            Some(snapshot) => driver.finish_compaction(snapshot),
            None if split => {
                keep = driver.begin_compaction();
                Ok(())
            }
            None => driver.compact_pending(),
        };
        self.nodes[node].snapshot_in_progress = keep;
        if !self.release(node) {
            return;
        }
        let after = self.nodes[node].open_conns();
        for conn in before.difference(&after) {
            self.end_closed(node, *conn);
        }
    }

    /// Now and then (on seeds with write failures) the node's next write or sync fails.
    fn arm_write_failure(&mut self, node: usize) {
        if self.faults
            && !self.nodes[node].crash_armed
            && self.rng.gen_bool(self.scenario.write_failure)
        {
            let storage = &self.nodes[node].disk.storage;
            if self.rng.gen_bool(0.5) {
                storage.fail_put_after(self.rng.gen_range(0..3));
            } else {
                storage.fail_sync_after(0);
            }
        }
    }

    /// Puts on the network what the node's driver released (only what was durable), checks
    /// it, and crashes the node if its storage failed meanwhile. Returns false if it crashed.
    fn release(&mut self, node: usize) -> bool {
        let released = self.nodes[node].driver().transport().take();
        for item in released {
            match item {
                Released::Frame(conn, frame) => self.transmit(node, conn, frame),
                Released::Close(conn, reason) => {
                    self.counters.engine_closes += 1;
                    self.log(|| format!("{} closes {conn}: {reason:?}", self.name(node)));
                    assert!(
                        reason.code != StatusCode::PermissionDenied,
                        "{} closed link {conn} to an honest peer: {}",
                        self.name(node),
                        reason.message
                    );
                }
                Released::Event(LogEvent::Refused { peer, doc, reason }) => panic!(
                    "{} refused honest peer {peer} on {doc:?}: {reason}",
                    self.name(node)
                ),
                Released::Event(_) | Released::Changed(_) | Released::End(_) => {}
            }
        }
        if self.nodes[node].disk.storage.has_failed() {
            if std::mem::take(&mut self.nodes[node].crash_armed) {
                self.counters.mid_output_crashes += 1;
                self.crash(node, "in the middle of writing");
            } else {
                self.counters.write_failures += 1;
                self.crash(node, "after its storage failed");
            }
            return false;
        }
        true
    }

    /// Puts a frame on the wire: checks it, then schedules its delivery, subject to faults.
    fn transmit(&mut self, from: usize, conn: ConnId, frame: Frame) {
        self.check_frame_leaks_nothing(from, &frame);
        self.counters.frames_sent += 1;
        *self
            .counters
            .frames_by_kind
            .entry(frame.kind())
            .or_default() += 1;
        if matches!(frame, Frame::DocSync { .. }) {
            self.counters.doc_sync_frames += 1;
        }
        let link = &self.links[&conn];
        let to = link.other_end(from);
        let last_arrival = link.last_arrival[link.direction(to)];
        let in_link_faults = self.faults && !self.scenario.transport_faithful;
        let cut_off = self.link_cut_off(conn);
        if in_link_faults && (cut_off || self.rng.gen_bool(self.scenario.loss)) {
            self.counters.frames_lost += 1;
            return;
        }
        let mut at = self.now + self.rng.gen_range(1..=40);
        if self.faults && self.rng.gen_bool(self.scenario.long_delay) {
            at += self.rng.gen_range(500..=20_000);
        }
        if self.faults && self.scenario.transport_faithful && cut_off {
            // The transport retransmits until the partition is over.
            let city = self.links[&conn].lower;
            at = at.max(self.nodes[city].partitioned_until + self.rng.gen_range(1..=40));
        }
        if in_link_faults && self.rng.gen_bool(self.scenario.reorder) {
            self.counters.frames_reordered += 1;
        } else {
            at = at.max(last_arrival);
        }
        if in_link_faults && self.rng.gen_bool(self.scenario.duplicate) {
            self.counters.frames_duplicated += 1;
            let again = at + self.rng.gen_range(0..=200);
            let copy = frame.clone();
            self.schedule(
                again,
                Event::Deliver {
                    conn,
                    to,
                    frame: copy,
                },
            );
        }
        let link = self.links.get_mut(&conn).expect("link exists");
        let slot = &mut link.last_arrival[link.direction(to)];
        *slot = (*slot).max(at);
        self.schedule(at, Event::Deliver { conn, to, frame });
    }

    /// `node`'s end of `conn` closed; the other end's transport notices after the frames in
    /// flight to it.
    fn end_closed(&mut self, node: usize, conn: ConnId) {
        let link = &self.links[&conn];
        let other = link.other_end(node);
        let after = link.last_arrival[link.direction(other)].max(self.reachable_over(conn));
        let at = after + self.rng.gen_range(1..=100);
        self.schedule(at, Event::NoticeClose { conn, node: other });
    }

    // ----- links, crashes and restarts -----------------------------------------------------

    /// Whether `lower` (a city, county hub or the standby) is cut off from the hub `upper`.
    fn cut_off(&self, lower: usize, upper: usize) -> bool {
        let node = &self.nodes[lower];
        self.now < node.partitioned_until && node.partitioned_from.is_none_or(|hub| hub == upper)
    }

    /// Whether the two ends of `conn` are cut off from each other.
    fn link_cut_off(&self, conn: ConnId) -> bool {
        let link = &self.links[&conn];
        self.cut_off(link.lower, link.upper)
    }

    /// The earliest time news can cross between the ends of `conn`: now, or when the
    /// partition between them ends.
    fn reachable_over(&self, conn: ConnId) -> u64 {
        let link = &self.links[&conn];
        if self.cut_off(link.lower, link.upper) {
            self.nodes[link.lower].partitioned_until
        } else {
            self.now
        }
    }

    /// Every running city and county hub without a link schedules a dial after its backoff
    /// delay.
    fn ensure_dials(&mut self) {
        for lower in self.lower_nodes() {
            let node = &self.nodes[lower];
            if node.driver.is_none() || node.dial_pending || self.has_upstream_link(lower) {
                continue;
            }
            let unit: f64 = self.rng.gen_range(0.0..1.0);
            let delay = self.nodes[lower].backoff.next_delay(unit).as_millis() as u64;
            self.nodes[lower].dial_pending = true;
            self.schedule(self.now + delay.max(1), Event::Dial { node: lower });
        }
    }

    fn dial(&mut self, node: usize) {
        self.nodes[node].dial_pending = false;
        if self.nodes[node].driver.is_none() || self.has_upstream_link(node) {
            return;
        }
        let upper = self.upstream(node);
        if self.nodes[upper].driver.is_none() || self.cut_off(node, upper) {
            self.log(|| format!("{} fails to reach {}", self.name(node), self.name(upper)));
            // With a second upstream, as `federation::upstream::Failover`: the first upstream
            // unreachable → the second at once; the second unreachable → the first after the
            // backoff.
            let has_second = self.nodes[node].second.is_some();
            if has_second && self.nodes[node].on_second_since.take().is_none() {
                self.nodes[node].on_second_since = Some(self.now);
                self.log(|| format!("{} fails over to its second upstream", self.name(node)));
                self.dial(node);
                if self.has_upstream_link(node) {
                    self.counters.failovers += 1;
                }
            }
            return;
        }
        self.connect(node);
    }

    /// On ticks: a node on its second upstream for [`FAILBACK_MS`] whose first upstream
    /// answers again closes its link to the second and dials the first (the real node tries
    /// with a TLS connection every `federation.failback_ms`).
    fn fail_back(&mut self) {
        for node in self.lower_nodes() {
            let Some(since) = self.nodes[node].on_second_since else {
                continue;
            };
            let first = self.nodes[node].upstream.expect("a lower node dials a hub");
            if self.nodes[node].driver.is_none()
                || self.now < since + FAILBACK_MS
                || self.nodes[first].driver.is_none()
                || self.cut_off(node, first)
            {
                continue;
            }
            self.log(|| format!("{} moves back to {}", self.name(node), self.name(first)));
            self.counters.failbacks += 1;
            self.nodes[node].on_second_since = None;
            let second = self.nodes[node].second.expect("on its second upstream");
            let open: Vec<ConnId> = self.nodes[node]
                .open_conns()
                .into_iter()
                .filter(|conn| self.links[conn].lower == node && self.links[conn].upper == second)
                .collect();
            for conn in open {
                self.call(node, |engine, _| engine.disconnect(conn));
            }
        }
    }

    /// Whether `node` has a link open (at its end) that it dialled: a county hub's links from
    /// its cities do not count.
    fn has_upstream_link(&self, node: usize) -> bool {
        self.nodes[node]
            .open_conns()
            .iter()
            .any(|conn| self.links[conn].lower == node)
    }

    /// The hub `node` dials now: its first upstream, or its second while failed over.
    fn upstream(&self, node: usize) -> usize {
        let node_state = &self.nodes[node];
        match (node_state.on_second_since, node_state.second) {
            (Some(_), Some(second)) => second,
            _ => node_state
                .upstream
                .unwrap_or_else(|| panic!("{} dials no one", self.name(node))),
        }
    }

    /// Opens a new link between `lower` (a city or county hub) and its upstream hub: both
    /// engines learn of it at once.
    fn connect(&mut self, lower: usize) {
        let upper = self.upstream(lower);
        let conn = self.next_conn;
        self.next_conn += 1;
        self.links.insert(
            conn,
            Link {
                lower,
                upper,
                last_arrival: [self.now; 2],
            },
        );
        self.log(|| {
            format!(
                "{} links to {} on {conn}",
                self.name(lower),
                self.name(upper)
            )
        });
        let lower_id = self.nodes[lower].id.clone();
        let upper_id = self.nodes[upper].id.clone();
        let upper_states = self.nodes[upper]
            .disk
            .storage
            .sync_states_for(&lower_id)
            .expect("the in-memory store reads");
        let lower_states = self.nodes[lower]
            .disk
            .storage
            .sync_states_for(&upper_id)
            .expect("the in-memory store reads");
        self.call(upper, |engine, now| {
            engine.connect(conn, lower_id, upper_states, now)
        });
        if self.nodes[upper].driver.is_none() {
            return;
        }
        self.call(lower, |engine, now| {
            engine.connect(conn, upper_id, lower_states, now)
        });
        self.nodes[lower].backoff.reset();
    }

    /// The node's process dies: its engine and everything in memory are gone, its disk stays.
    fn crash(&mut self, node: usize, how: &str) {
        let conns = self.nodes[node].open_conns();
        self.log(|| format!("{} crashes {how}", self.name(node)));
        self.nodes[node].driver = None;
        self.nodes[node].crash_armed = false;
        self.nodes[node].dial_pending = false;
        self.counters.crashes += 1;
        for conn in conns {
            // The peer hears of it promptly (a reset), or only through its peer timeout.
            if self.rng.gen_bool(0.7) {
                let link = &self.links[&conn];
                let other = link.other_end(node);
                let at = self.reachable_over(conn) + self.rng.gen_range(1..=2_000);
                self.schedule(at, Event::NoticeClose { conn, node: other });
            }
        }
        let downtime = self.rng.gen_range(100..=45_000);
        self.schedule(self.now + downtime, Event::Restart { node });
    }

    fn restart(&mut self, node: usize) {
        self.log(|| format!("{} restarts from its disk", self.name(node)));
        let driver = self.nodes[node].boot(&self.config);
        let node = &mut self.nodes[node];
        node.driver = Some(driver);
        node.dial_pending = false;
        node.backoff.reset();
        // A restarted node dials its first upstream first.
        node.on_second_since = None;
    }

    // ----- actions ------------------------------------------------------------------------

    fn random_action(&mut self) {
        match self.rng.gen_range(0..100) {
            0..=44 => self.random_edit(),
            45..=49 => self.foreign_edit(),
            50..=53 => self.local_edit(),
            54..=63 => self.cut_random_link(),
            64..=69 => {
                let node = self.random_node_for_crash();
                if self.nodes[node].driver.is_some() {
                    self.crash(node, "between events");
                }
            }
            70..=74 => {
                // The node dies in the middle of its next writes: a failpoint in its storage.
                let node = self.random_node_for_crash();
                if self.nodes[node].driver.is_some() && !self.nodes[node].crash_armed {
                    self.nodes[node].crash_armed = true;
                    self.nodes[node]
                        .disk
                        .storage
                        .fail_put_after(self.rng.gen_range(0..8));
                }
            }
            75..=81 => {
                let city = self.rng.gen_range(self.lower_nodes());
                let length = self.rng.gen_range(1_000..=90_000);
                self.nodes[city].partitioned_until = self.now + length;
                // On standby seeds, a node with a second upstream is often cut off from its
                // first only, so that it fails over (the standby's own partition is the one
                // between the two hubs).
                let from_first =
                    self.nodes[city].second.is_some() && self.standby_rng.gen_bool(0.6);
                self.nodes[city].partitioned_from = if from_first {
                    self.nodes[city].upstream
                } else {
                    None
                };
                self.counters.partitions += 1;
                self.log(|| format!("{} is cut off for {length} ms", self.name(city)));
            }
            82..=87 => {
                let idle = self.rng.gen_range(5_000..=70_000);
                self.run_until(self.now + idle);
            }
            88..=91 if self.scenario.counties > 0 => self.move_random_city(),
            _ => self.random_edit(),
        }
    }

    /// The national hub crashes less often than a city or county hub: there is one of it and
    /// several of them.
    fn random_node_for_crash(&mut self) -> usize {
        if self.rng.gen_bool(0.25) {
            HUB
        } else {
            self.rng.gen_range(self.lower_nodes())
        }
    }

    /// A city moves between hubs (three-level seeds): from its county hub to the national hub,
    /// from the national hub to a county hub, or from one county hub to the other. Its link is
    /// cut (each end notices at its own time, or only through the peer timeout) and it dials
    /// its new hub once it has noticed.
    fn move_random_city(&mut self) {
        let city = self.rng.gen_range(self.cities());
        let current = self.nodes[city].upstream.expect("a city dials a hub");
        let targets: Vec<usize> = std::iter::once(HUB)
            .chain(self.counties())
            .filter(|hub| *hub != current)
            .collect();
        let target = *targets.choose(&mut self.rng).expect("another hub");
        self.counters.city_moves += 1;
        self.log(|| {
            format!(
                "{} moves from {} to {}",
                self.name(city),
                self.name(current),
                self.name(target)
            )
        });
        self.nodes[city].upstream = Some(target);
        // A city that names a second upstream names the standby (or, when it moves to the
        // standby's place, keeps the national hub): never its new first upstream.
        if let (Some(standby), Some(second)) = (self.standby(), self.nodes[city].second) {
            if second == target || second != standby {
                self.nodes[city].second = Some(standby);
            }
        }
        self.nodes[city].on_second_since = None;
        for conn in self.nodes[city].open_conns() {
            self.cut_link(conn);
        }
        // Until it notices, the city stays on its old hub; then it dials the new one.
    }

    fn random_edit(&mut self) {
        let node = self.rng.gen_range(0..self.nodes.len());
        if self.nodes[node].driver.is_none() {
            return;
        }
        let doc = self.nodes[node]
            .owned
            .choose(&mut self.rng)
            .expect("every node owns documents")
            .clone();
        let older = self.nodes[node]
            .acknowledged_versions
            .get(&doc)
            .and_then(|versions| versions.choose(&mut self.rng))
            .cloned();
        let at = older.filter(|_| self.rng.gen_bool(0.25));
        self.edit(node, &doc, at);
    }

    /// An owner edits its document (at an older version if `at` is given). Returns whether the
    /// edit was acknowledged, that is, its whole output was performed.
    fn edit(&mut self, node: usize, doc: &ShareableDocId, at: Option<Vec<ChangeHash>>) -> bool {
        self.edit_count += 1;
        let key = format!("{}-{}", self.nodes[node].id.name(), self.edit_count);
        let mut value = format!("edit {} of {doc}", self.edit_count);
        if self.rng.gen_bool(0.05) {
            value = value.repeat(30);
        }
        let now = self.now;
        self.arm_write_failure(node);
        let driver = self.nodes[node].driver();
        let result = driver.edit(
            doc,
            at.as_deref(),
            now,
            |tx| -> Result<(), AutomergeError> {
                tx.put(ROOT, &key, value.as_str())?;
                tx.put(ROOT, "latest", key.as_str())?;
                Ok(())
            },
            |_, _| Ok(()),
        );
        match result {
            Ok(()) => {}
            Err(DriverEditError::Storage(failure)) => {
                self.log(|| {
                    format!(
                        "{} could not store its edit of {doc}: {failure}",
                        self.name(node)
                    )
                });
                self.counters.edits_unacknowledged += 1;
                self.release(node);
                return false;
            }
            Err(DriverEditError::Edit(err)) => {
                panic!("{} could not edit its own {doc}: {err:?}", self.name(node))
            }
        }
        let heads = sorted(driver.read(|engine| {
            engine
                .document(doc)
                .expect("an acknowledged edit's document")
                .get_heads()
        }));
        self.log(|| format!("{} edits {doc}: {key}", self.name(node)));
        self.counters.edits_acknowledged += 1;
        let owner = &mut self.nodes[node];
        owner
            .acknowledged
            .entry(doc.clone())
            .or_default()
            .insert(key, value);
        owner
            .acknowledged_versions
            .entry(doc.clone())
            .or_default()
            .push(heads);
        // What the driver released (the edit's push) goes on the network; the node may crash
        // right after, with the edit acknowledged.
        self.release(node);
        true
    }

    /// A node tries to change a document it does not own; the engine must refuse.
    fn foreign_edit(&mut self) {
        let node = self.rng.gen_range(0..self.nodes.len());
        if self.nodes[node].driver.is_none() {
            return;
        }
        let foreign: Vec<ShareableDocId> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != node)
            .flat_map(|(_, other)| other.owned.clone())
            // The national hub and its standby both own the national documents.
            .filter(|doc| !doc.is_owned_by(&self.nodes[node].id))
            .collect();
        let doc = foreign.choose(&mut self.rng).expect("others own documents");
        let now = self.now;
        let driver = self.nodes[node].driver();
        let heads_before = driver.read(|engine| engine.document(doc).map(|d| d.get_heads()));
        let result = driver.edit(
            doc,
            None,
            now,
            |tx| -> Result<(), AutomergeError> {
                tx.put(ROOT, "forged", "by someone who does not own this")
            },
            |_, _| Ok(()),
        );
        match result {
            Err(DriverEditError::Edit(EditError::Engine(EngineError::NotOwner { .. }))) => {}
            Err(other) => panic!(
                "{} editing {doc}: expected NotOwner, got {other:?}",
                self.name(node)
            ),
            Ok(()) => panic!(
                "{} was allowed to edit {doc}, which it does not own",
                self.name(node)
            ),
        }
        let heads_after = driver.read(|engine| engine.document(doc).map(|d| d.get_heads()));
        assert_eq!(
            heads_before, heads_after,
            "a refused edit changed {doc} at {}",
            self.nodes[node].id
        );
        self.counters.foreign_edits_refused += 1;
    }

    /// A city writes a canary into one of its local documents, beside the engine.
    fn local_edit(&mut self) {
        let city = self.rng.gen_range(self.cities());
        let kind = LOCAL_KINDS.choose(&mut self.rng).expect("not empty");
        let id = DocId::local(kind).expect("a local kind");
        assert_eq!(id.scope(), Scope::Local);
        self.edit_count += 1;
        let name = self.nodes[city].id.name().to_string();
        let disk = &mut self.nodes[city].disk;
        let mut doc = match disk.local_docs.get(&id) {
            Some(bytes) => Automerge::load(bytes).expect("local document loads"),
            None => Automerge::new(),
        };
        let key = format!("entry-{}", self.edit_count);
        doc.transact(|tx| tx.put(ROOT, &key, format!("{CANARY} {name} {}", self.edit_count)))
            .expect("local edit");
        disk.local_docs.insert(id, doc.save());
    }

    /// Both ends of a random link lose it; each notices at its own time, or only when its
    /// peer timeout fires.
    fn cut_random_link(&mut self) {
        let open: Vec<(ConnId, usize)> = (0..self.nodes.len())
            .flat_map(|node| {
                self.nodes[node]
                    .open_conns()
                    .into_iter()
                    .map(move |conn| (conn, node))
            })
            .collect();
        let Some(&(conn, _)) = open.choose(&mut self.rng) else {
            return;
        };
        self.cut_link(conn);
    }

    /// Both ends of `conn` lose it; each notices at its own time, or only when its peer
    /// timeout fires.
    fn cut_link(&mut self, conn: ConnId) {
        self.counters.link_cuts += 1;
        self.log(|| format!("link {conn} is cut"));
        let (upper, lower) = (self.links[&conn].upper, self.links[&conn].lower);
        for node in [upper, lower] {
            match self.rng.gen_range(0..10) {
                0..=3 => {
                    self.call(node, |engine, _| engine.disconnect(conn));
                }
                4..=8 => {
                    let at = self.now + self.rng.gen_range(1..=30_000);
                    self.schedule(at, Event::NoticeClose { conn, node });
                }
                _ => {} // only the peer timeout will tell
            }
        }
    }

    // ----- invariants ---------------------------------------------------------------------

    fn owner_of(&self, doc: &ShareableDocId) -> usize {
        self.nodes
            .iter()
            .position(|node| doc.is_owned_by(&node.id))
            .unwrap_or_else(|| panic!("{doc} has no owner in the federation"))
    }

    /// Every replica of every document has its owner's heads and every acknowledged edit.
    fn check_convergence(&self, label: &str) {
        let mut docs = BTreeSet::new();
        for node in &self.nodes {
            for (id, doc) in node.engine().documents() {
                if !doc.get_heads().is_empty() {
                    docs.insert(id.clone());
                }
            }
        }
        for doc in &docs {
            let owner = self.owner_of(doc);
            let owner_heads = self.nodes[owner]
                .engine()
                .document(doc)
                .map(|d| sorted(d.get_heads()))
                .unwrap_or_default();
            assert!(
                !owner_heads.is_empty(),
                "{label}: {doc} has changes somewhere but not at its owner {}",
                self.name(owner)
            );
            for node in &self.nodes {
                let heads = node
                    .engine()
                    .document(doc)
                    .map(|d| sorted(d.get_heads()))
                    .unwrap_or_default();
                assert_eq!(
                    heads,
                    owner_heads,
                    "{label}: {} has {doc} at other heads than its owner {}",
                    node.id,
                    self.name(owner)
                );
            }
        }
        for owner in &self.nodes {
            for (doc, edits) in &owner.acknowledged {
                for node in &self.nodes {
                    let engine = node.engine();
                    let replica = engine
                        .document(doc)
                        .unwrap_or_else(|| panic!("{label}: {} lacks {doc}", node.id));
                    for (key, value) in edits {
                        assert_eq!(
                            read_string(replica, key).as_deref(),
                            Some(value.as_str()),
                            "{label}: {} lacks the acknowledged edit {key} of {doc}",
                            node.id
                        );
                    }
                }
            }
        }
    }

    /// Every change in every document, on every node, was made by the document's owner.
    fn check_owner_only(&self) {
        for node in &self.nodes {
            for (id, doc) in node.engine().documents() {
                // The national documents have two owners on standby seeds: both hubs.
                let owner_actors: Vec<&ActorId> = self
                    .nodes
                    .iter()
                    .filter(|owner| id.is_owned_by(&owner.id))
                    .map(|owner| &owner.actor)
                    .collect();
                // The metadata of every change: the actor is the one the change carries.
                for change in doc.get_changes_meta(&[]) {
                    assert!(
                        owner_actors
                            .iter()
                            .any(|owner| made_by(&change.actor, owner)),
                        "{} holds a change to {id} by {:?}, not by its owners {owner_actors:?}",
                        node.id,
                        change.actor
                    );
                }
            }
        }
    }

    /// No frame names a local document or carries anything from one.
    fn check_frame_leaks_nothing(&self, from: usize, frame: &Frame) {
        let leaked = match frame {
            Frame::DocSync { doc, message, .. } => {
                doc.doc_id().scope() == Scope::Local
                    || LOCAL_KINDS
                        .iter()
                        .any(|kind| doc.as_str() == format!("local/{kind}"))
                    || contains(message, CANARY.as_bytes())
            }
            other => {
                let text = format!("{other:?}");
                text.contains("local/") || text.contains(CANARY)
            }
        };
        assert!(
            !leaked,
            "{} sent a frame that carries local data: {}",
            self.name(from),
            frame.kind()
        );
    }

    /// No engine holds anything of a local document.
    fn check_no_canary_in_engines(&self) {
        for node in &self.nodes {
            for (id, doc) in node.engine().documents() {
                for key in doc.keys(ROOT) {
                    let value = read_string(doc, &key).unwrap_or_default();
                    assert!(
                        !key.contains(CANARY) && !value.contains(CANARY),
                        "{} holds local data in {id}",
                        node.id
                    );
                }
            }
        }
    }
}

fn shareable(id: &str) -> ShareableDocId {
    ShareableDocId::parse(id).expect("a shareable document id")
}

fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort();
    heads
}

/// Whether a change with actor `actor` was made by the node whose actor is `owner`: either
/// directly, or by [`Engine::edit_at`], for which Automerge (`transaction_at`) uses an
/// *isolated* actor: four magic bytes, the isolation level in LEB128, then the node's actor.
fn made_by(actor: &ActorId, owner: &ActorId) -> bool {
    const ISOLATED_ACTOR_MAGIC: [u8; 4] = [0x13, 0xb2, 0x23, 0x09];
    let (actor, owner) = (actor.to_bytes(), owner.to_bytes());
    if actor == owner {
        return true;
    }
    let Some(rest) = actor.strip_prefix(&ISOLATED_ACTOR_MAGIC[..]) else {
        return false;
    };
    let level_bytes = rest.iter().take_while(|byte| *byte & 0x80 != 0).count() + 1;
    rest.len() == level_bytes + owner.len() && rest[level_bytes..] == *owner
}

fn read_string(doc: &Automerge, key: &str) -> Option<String> {
    let (value, _) = doc.get(ROOT, key).ok()??;
    value.into_string().ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {text:?}")),
    )
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else {
        "a panic without a message".to_string()
    }
}
