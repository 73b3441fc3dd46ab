//! The physical limit: Automerge's own sync protocol run in memory, no network and no disk,
//! on the same workload as the product (lessons written by the node's own `lessons::create`,
//! one commit per lesson). Every scenario reports its figure as a ratio to these.

use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ReadDoc, ROOT};

/// The workload's lesson number `i`: a 40-character title, a body of about 500 characters,
/// three tags. Numbers are spelled in letters so the privacy guard never sees digits.
pub fn lesson(i: usize) -> (String, String, Vec<String>) {
    let word = spell(i);
    let mut title = format!("Lesson {word} on working across agencies");
    title.truncate(40);
    while title.chars().count() < 40 {
        title.push('.');
    }
    let body = format!("What the network learnt in case {word}. ")
        + &"Social services, police and the shelter met within a day and agreed who follows up. "
            .repeat(6);
    let tags = vec![
        "cooperation".into(),
        "outreach".into(),
        format!("t{}", i % 7),
    ];
    (title, body, tags)
}

/// `i` written with the letters a to z.
fn spell(mut i: usize) -> String {
    let mut word = String::new();
    loop {
        word.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            return word;
        }
    }
}

/// Adds lesson `i` to `doc` in one commit, exactly as the node does.
pub fn add_lesson(doc: &mut Automerge, i: usize) {
    let (title, body, tags) = lesson(i);
    let mut tx = doc.transaction();
    let new = sfs_node::domain::lessons::NewLesson {
        title: &title,
        body: &body,
        tags: &tags,
        method_step: "",
    };
    sfs_node::domain::lessons::create(&mut tx, &format!("l{i}"), &new, 0).expect("a valid lesson");
    tx.commit();
}

/// A document of `n` lessons written by `actor`, one commit each.
pub fn document(n: usize, actor: &str) -> Automerge {
    document_by(n, ActorId::from(actor.as_bytes()))
}

/// A document of `n` lessons written by `actor`, one commit each.
pub fn document_by(n: usize, actor: ActorId) -> Automerge {
    let mut doc = Automerge::new().with_actor(actor);
    for i in 0..n {
        add_lesson(&mut doc, i);
    }
    doc
}

/// Runs the sync protocol between two documents until neither has anything to say; returns
/// the messages and bytes exchanged.
pub fn sync_until_quiet(
    a: &mut Automerge,
    b: &mut Automerge,
    sa: &mut sync::State,
    sb: &mut sync::State,
) -> (usize, usize) {
    let (mut messages, mut bytes) = (0, 0);
    for _ in 0..10_000 {
        let mut quiet = true;
        if let Some(m) = a.generate_sync_message(sa) {
            let encoded = m.encode();
            messages += 1;
            bytes += encoded.len();
            b.receive_sync_message(sb, sync::Message::decode(&encoded).unwrap())
                .unwrap();
            quiet = false;
        }
        if let Some(m) = b.generate_sync_message(sb) {
            let encoded = m.encode();
            messages += 1;
            bytes += encoded.len();
            a.receive_sync_message(sa, sync::Message::decode(&encoded).unwrap())
                .unwrap();
            quiet = false;
        }
        if quiet {
            return (messages, bytes);
        }
    }
    panic!("raw sync did not go quiet");
}

/// A city, a hub and another city holding the same document of `base` lessons, in step.
pub struct TwoHops {
    pub city_a: Automerge,
    pub hub: Automerge,
    pub city_b: Automerge,
    a_to_hub: sync::State,
    hub_to_a: sync::State,
    hub_to_b: sync::State,
    b_to_hub: sync::State,
    next: usize,
}

impl TwoHops {
    pub fn new(base: usize) -> TwoHops {
        let mut hops = TwoHops {
            city_a: document(base, "city-a"),
            hub: Automerge::new().with_actor(ActorId::from(&b"hub"[..])),
            city_b: Automerge::new().with_actor(ActorId::from(&b"city-b"[..])),
            a_to_hub: sync::State::new(),
            hub_to_a: sync::State::new(),
            hub_to_b: sync::State::new(),
            b_to_hub: sync::State::new(),
            next: base,
        };
        hops.settle();
        hops
    }

    fn settle(&mut self) {
        sync_until_quiet(
            &mut self.city_a,
            &mut self.hub,
            &mut self.a_to_hub,
            &mut self.hub_to_a,
        );
        sync_until_quiet(
            &mut self.hub,
            &mut self.city_b,
            &mut self.hub_to_b,
            &mut self.b_to_hub,
        );
    }

    /// One new lesson at A until B has applied it (A → hub → B); the acknowledgements that
    /// follow are exchanged outside the timing.
    pub fn propagate_one(&mut self) -> Duration {
        let started = Instant::now();
        add_lesson(&mut self.city_a, self.next);
        self.next += 1;
        let m = self
            .city_a
            .generate_sync_message(&mut self.a_to_hub)
            .unwrap();
        let m = sync::Message::decode(&m.encode()).unwrap();
        self.hub
            .receive_sync_message(&mut self.hub_to_a, m)
            .unwrap();
        let m = self.hub.generate_sync_message(&mut self.hub_to_b).unwrap();
        let m = sync::Message::decode(&m.encode()).unwrap();
        self.city_b
            .receive_sync_message(&mut self.b_to_hub, m)
            .unwrap();
        let took = started.elapsed();
        assert_eq!(self.city_b.get_heads(), self.city_a.get_heads());
        self.settle();
        took
    }
}

/// Time to sync a document of `n` lessons to an empty replica (one hop), and its saved size.
pub fn to_empty_replica(doc: &Automerge) -> Duration {
    let mut source = doc.clone();
    let mut replica = Automerge::new();
    let started = Instant::now();
    sync_until_quiet(
        &mut source,
        &mut replica,
        &mut sync::State::new(),
        &mut sync::State::new(),
    );
    let took = started.elapsed();
    assert_eq!(replica.get_heads(), doc.get_heads());
    took
}

/// Time to write `n` lessons one commit each and sync them over two hops to an empty replica.
pub fn written_and_synced(n: usize) -> Duration {
    let started = Instant::now();
    let mut a = document(n, "city-a");
    let mut hub = Automerge::new();
    let mut b = Automerge::new();
    sync_until_quiet(
        &mut a,
        &mut hub,
        &mut sync::State::new(),
        &mut sync::State::new(),
    );
    sync_until_quiet(
        &mut hub,
        &mut b,
        &mut sync::State::new(),
        &mut sync::State::new(),
    );
    started.elapsed()
}

/// One change to `base` (the hub's copy) until `replicas` replicas in step have applied it.
pub fn fan_out(base: &Automerge, replicas: usize) -> Duration {
    let mut hub = base.fork().with_actor(ActorId::from(&b"hub"[..]));
    let mut cities: Vec<(Automerge, sync::State, sync::State)> = (0..replicas)
        .map(|_| (Automerge::new(), sync::State::new(), sync::State::new()))
        .collect();
    for (city, hub_state, city_state) in &mut cities {
        sync_until_quiet(&mut hub, city, hub_state, city_state);
    }
    let started = Instant::now();
    {
        let mut tx = hub.transaction();
        let release = tx
            .put_object(ROOT, "bench-release", automerge::ObjType::Map)
            .unwrap();
        tx.put(&release, "version_label", "2026.1").unwrap();
        tx.put(&release, "notes", "The release every city must get")
            .unwrap();
        tx.put(&release, "create_time_ms", 0).unwrap();
        tx.commit();
    }
    for (city, hub_state, city_state) in &mut cities {
        let m = hub.generate_sync_message(hub_state).unwrap();
        let m = sync::Message::decode(&m.encode()).unwrap();
        city.receive_sync_message(city_state, m).unwrap();
    }
    let took = started.elapsed();
    assert!(cities
        .iter()
        .all(|(c, _, _)| c.get_heads() == hub.get_heads()));
    took
}

/// Messages and bytes to resync `docs` unchanged documents between two peers from stored
/// (encoded) sync states, as a reconnect does with plain Automerge.
pub fn reconnect_unchanged(docs: usize) -> (usize, usize) {
    let (mut messages, mut bytes) = (0, 0);
    for i in 0..docs {
        let mut a = Automerge::new().with_actor(ActorId::from(format!("c{i}").as_bytes()));
        add_lesson(&mut a, i);
        let mut b = Automerge::new();
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        sync_until_quiet(&mut a, &mut b, &mut sa, &mut sb);
        let mut sa = sync::State::decode(&sa.encode()).unwrap();
        let mut sb = sync::State::decode(&sb.encode()).unwrap();
        let (m, b2) = sync_until_quiet(&mut a, &mut b, &mut sa, &mut sb);
        messages += m;
        bytes += b2;
    }
    (messages, bytes)
}

/// Lessons committed per second into one document growing from `base` lessons, for `n` commits.
pub fn commit_rate(base: usize, n: usize) -> f64 {
    let mut doc = document(base, "city-a");
    let started = Instant::now();
    for i in base..base + n {
        add_lesson(&mut doc, i);
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// A chain of replicas of the same document of `base` lessons, in step: a city, the hubs
/// between, another city (`hops` links).
pub struct Chain {
    replicas: Vec<Automerge>,
    /// Per link `i` (replica `i` to `i + 1`): the state at `i` towards `i + 1`, and at `i + 1`
    /// towards `i`.
    states: Vec<(sync::State, sync::State)>,
    next: usize,
}

impl Chain {
    pub fn new(base: usize, hops: usize) -> Chain {
        let mut replicas = vec![document(base, "city-a")];
        for i in 0..hops {
            replicas.push(Automerge::new().with_actor(ActorId::from(format!("hop{i}").as_bytes())));
        }
        let mut chain = Chain {
            replicas,
            states: (0..hops)
                .map(|_| (sync::State::new(), sync::State::new()))
                .collect(),
            next: base,
        };
        chain.settle();
        chain
    }

    fn settle(&mut self) {
        for i in 0..self.states.len() {
            let (left, right) = self.replicas.split_at_mut(i + 1);
            let (out, back) = &mut self.states[i];
            sync_until_quiet(&mut left[i], &mut right[0], out, back);
        }
    }

    /// One new lesson at the first replica until the last has applied it, each replica
    /// passing it on as it arrives; the acknowledgements that follow are outside the timing.
    pub fn propagate_one(&mut self) -> Duration {
        let started = Instant::now();
        add_lesson(&mut self.replicas[0], self.next);
        self.next += 1;
        for i in 0..self.states.len() {
            let (left, right) = self.replicas.split_at_mut(i + 1);
            let (out, back) = &mut self.states[i];
            let m = left[i].generate_sync_message(out).unwrap();
            let m = sync::Message::decode(&m.encode()).unwrap();
            right[0].receive_sync_message(back, m).unwrap();
        }
        let took = started.elapsed();
        assert_eq!(
            self.replicas.last().unwrap().get_heads(),
            self.replicas[0].get_heads()
        );
        self.settle();
        took
    }
}

/// What Automerge itself costs per lesson in a document of `base` lessons (medians of
/// `rounds`): the commit at the writer, the apply at a replica, taking the new change back
/// from the writer's document, and generating the sync message for a replica in step.
pub struct Costs {
    pub commit: Duration,
    pub apply: Duration,
    pub change_by_hash: Duration,
    pub generate: Duration,
    /// The apply at a replica when eight such changes come in one call, per change.
    pub apply_eight: Duration,
}

impl Costs {
    /// The most lessons a second this machine's cores could take if every lesson cost only
    /// its commit and `applies` applies, the changes arriving eight to a call (the cheapest way
    /// Automerge applies): no network, no disk, no API. The best any build could do here.
    pub fn lessons_per_second_here(&self, applies: u32) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores as f64 / (self.commit + self.apply_eight * applies).as_secs_f64()
    }
}

/// Measures [`Costs`] on a document of `base` lessons.
pub fn costs(base: usize, rounds: usize) -> Costs {
    let mut writer = document(base, "city-a");
    let mut replica = Automerge::new().with_actor(ActorId::from(&b"hub"[..]));
    let (mut to_replica, mut to_writer) = (sync::State::new(), sync::State::new());
    sync_until_quiet(&mut writer, &mut replica, &mut to_replica, &mut to_writer);
    let (mut commit, mut apply, mut by_hash, mut generate) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        let started = Instant::now();
        add_lesson(&mut writer, base + i);
        commit.push(started.elapsed());
        let head = writer.get_heads()[0];
        let started = Instant::now();
        let change = writer.get_change_by_hash(&head).expect("the new change");
        by_hash.push(started.elapsed());
        let started = Instant::now();
        let message = writer
            .generate_sync_message(&mut to_replica)
            .expect("a message with the new change");
        generate.push(started.elapsed());
        drop(message);
        let started = Instant::now();
        replica.apply_changes([change]).expect("applies");
        apply.push(started.elapsed());
        sync_until_quiet(&mut writer, &mut replica, &mut to_replica, &mut to_writer);
    }
    let mut apply_eight = Vec::new();
    for round in 0..rounds.div_ceil(8) {
        let heads = writer.get_heads();
        for i in 0..8 {
            add_lesson(&mut writer, base + rounds + round * 8 + i);
        }
        let changes = writer.get_changes(&heads);
        let started = Instant::now();
        replica.apply_changes(changes).expect("applies");
        apply_eight.push(started.elapsed() / 8);
        sync_until_quiet(&mut writer, &mut replica, &mut to_replica, &mut to_writer);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    Costs {
        commit: median(commit),
        apply: median(apply),
        change_by_hash: median(by_hash),
        generate: median(generate),
        apply_eight: median(apply_eight),
    }
}
