//! A document's most recent changes, kept beside it so that the sync message for a peer that is
//! nearly in step is made from them instead of by Automerge.
//!
//! Automerge 0.12 makes a sync message by computing, from its whole change graph, which changes
//! the peer lacks (vector clocks over the history) and then rebuilding each of those changes
//! from its columnar op set. For a peer that lacks only the last changes — every peer of a node
//! that relays or writes as it goes — this module reaches the same message from the last
//! [`MAX_CHANGES`] changes alone (their hashes and dependencies; the bytes of the newest
//! [`MAX_BYTES`] of them too), kept as they were made or applied: the missing changes are found
//! by walking dependencies back to the peer's heads, and their bytes are mostly at hand.
//!
//! The result is Automerge's own message, exactly: the same heads, needs, Bloom filter and
//! flags, the same changes (in a causal order, not always Automerge's), and the same update of
//! the sync state (debug builds check every message against Automerge's). When the walk leaves
//! the kept changes, the peer's state asks for something rarer (a reset, a whole document), or
//! the document changed in a way this module did not see, [`generate`] declines and the engine
//! asks Automerge.
//!
//! Why the walk is exact: the kept changes are a contiguous suffix of a causal order in which
//! the document applied its changes (checked by count and heads before each use), so no change
//! outside them descends from one inside; whether a kept change is an ancestor of the peer's
//! heads is therefore decided by the kept changes alone.

use std::collections::{HashMap, HashSet, VecDeque};

use automerge::sync::{self, BloomFilter, Have};
use automerge::{Automerge, Change, ChangeHash, ReadDoc};

/// At most this many changes are kept per document (hash and dependencies: about 150 bytes
/// each). The engine drops the changes every peer has acknowledged once more than
/// [`TRIM_AFTER`] are kept, so a document all peers are in step with keeps almost none; the
/// bound matters while a peer lags (a hub on a loaded machine acknowledges a writer's burst
/// seconds late).
pub const MAX_CHANGES: usize = 4096;
/// Past this many kept changes the engine drops those every peer has.
pub const TRIM_AFTER: usize = 64;
/// The bytes of at most this many bytes of the newest changes are kept per document (a hub
/// holds hundreds of documents); older ones are rebuilt by Automerge when a peer lacks them.
pub const MAX_BYTES: usize = 64 * 1024;

struct Kept {
    hash: ChangeHash,
    deps: Vec<ChangeHash>,
    /// `None` once the change is older than the newest [`MAX_BYTES`].
    bytes: Option<Vec<u8>>,
}

/// The last changes a document applied, in the order it applied them.
pub struct RecentChanges {
    /// How many changes the document held before the oldest one kept.
    start: u64,
    kept: VecDeque<Kept>,
    /// The position (counted from the document's first change) of each kept change.
    positions: HashMap<ChangeHash, u64>,
    /// Bytes held, and the position of the oldest change whose bytes may still be held.
    bytes: usize,
    bytes_from: u64,
    /// The document's heads after the last change kept.
    heads: Vec<ChangeHash>,
}

impl RecentChanges {
    /// An empty window over a document as it stands now.
    pub fn new(doc: &Automerge) -> RecentChanges {
        let start = doc.stats().num_changes;
        RecentChanges {
            start,
            kept: VecDeque::new(),
            positions: HashMap::new(),
            bytes: 0,
            bytes_from: start,
            heads: doc.get_heads(),
        }
    }

    /// Empties the window, starting again after what `doc` holds now.
    pub fn reset(&mut self, doc: &Automerge) {
        *self = RecentChanges::new(doc);
    }

    /// `changes` were just applied to `doc`, in this order, and nothing else since the last
    /// call. If that does not add up (the count, or an order that is not causal), the window
    /// starts again after what `doc` holds.
    pub fn applied<'a>(&mut self, doc: &Automerge, changes: impl IntoIterator<Item = &'a Change>) {
        let changes: Vec<&Change> = changes.into_iter().collect();
        let total = doc.stats().num_changes;
        if !self.matches_before(doc, changes.len() as u64, total) || !causal_order(&changes) {
            self.reset(doc);
            return;
        }
        // Of a long run of changes only the last ones can stay.
        let skip = changes.len().saturating_sub(MAX_CHANGES);
        if skip > 0 {
            self.kept.clear();
            self.positions.clear();
            self.bytes = 0;
            self.start = total - (changes.len() - skip) as u64;
            self.bytes_from = self.start;
        }
        for change in &changes[skip..] {
            let position = self.start + self.kept.len() as u64;
            self.positions.insert(change.hash(), position);
            self.bytes += change.raw_bytes().len();
            self.kept.push_back(Kept {
                hash: change.hash(),
                deps: change.deps().to_vec(),
                bytes: Some(change.raw_bytes().to_vec()),
            });
        }
        while self.kept.len() > MAX_CHANGES {
            let oldest = self
                .kept
                .pop_front()
                .expect("over the limit means not empty");
            self.positions.remove(&oldest.hash);
            self.bytes -= oldest.bytes.map_or(0, |b| b.len());
            self.start += 1;
        }
        self.bytes_from = self.bytes_from.max(self.start);
        while self.bytes > MAX_BYTES {
            let index = (self.bytes_from - self.start) as usize;
            let dropped = self.kept[index].bytes.take();
            self.bytes -= dropped.map_or(0, |b| b.len());
            self.bytes_from += 1;
        }
        self.heads = doc.get_heads();
    }

    /// Whether the window ended where `doc` stood before `added` more changes were applied.
    fn matches_before(&self, doc: &Automerge, added: u64, total: u64) -> bool {
        let end = self.start + self.kept.len() as u64;
        if end + added != total {
            return false;
        }
        // The heads before the new changes cannot be read back any more; what the window
        // ended on must still be in the document (a document replaced by one without them
        // fails here, or on the count).
        self.heads.iter().all(|h| self.positions.contains_key(h))
            || doc.get_missing_deps(&self.heads).is_empty()
    }

    /// Whether the window ends where `doc` stands: same number of changes, same heads.
    pub(crate) fn matches(&self, doc: &Automerge, heads: &[ChangeHash]) -> bool {
        self.start + self.kept.len() as u64 == doc.stats().num_changes && self.heads == heads
    }

    /// The positions, oldest first, of the changes that are not ancestors of (or among)
    /// `boundary`: what Automerge calls the changes since `boundary`. `None` if that reaches
    /// past the window.
    fn since(&self, boundary: &[ChangeHash]) -> Option<Vec<u64>> {
        let stop: HashSet<&ChangeHash> = boundary.iter().collect();
        let mut since: HashSet<u64> = HashSet::new();
        let mut stack: Vec<&ChangeHash> = self.heads.iter().collect();
        while let Some(hash) = stack.pop() {
            if stop.contains(hash) {
                continue;
            }
            let position = *self.positions.get(hash)?;
            if since.insert(position) {
                stack.extend(&self.at(position).deps);
            }
        }
        // A change reached on a path that avoids the boundary may still be an ancestor of it
        // (on another path). Only changes applied before the newest kept boundary change can
        // be; when there are any, take out the kept ancestors of the boundary (exact for kept
        // changes: no change outside the window descends from one inside).
        let newest_boundary = boundary
            .iter()
            .filter_map(|h| self.positions.get(h).copied())
            .max();
        if let Some(newest) = newest_boundary {
            if since.iter().any(|p| *p < newest) {
                let mut below: HashSet<u64> = HashSet::new();
                let mut stack: Vec<u64> = boundary
                    .iter()
                    .filter_map(|h| self.positions.get(h).copied())
                    .collect();
                while let Some(position) = stack.pop() {
                    if below.insert(position) {
                        let deps = &self.at(position).deps;
                        stack.extend(deps.iter().filter_map(|d| self.positions.get(d).copied()));
                    }
                }
                since.retain(|p| !below.contains(p));
            }
        }
        let mut since: Vec<u64> = since.into_iter().collect();
        since.sort_unstable();
        Some(since)
    }

    /// Of `sent`, the changes that `heads` are or descend from, decided from the kept changes
    /// and `arriving` (changes applied after the last kept one):
    /// `None` if a sent change is among neither. The caller makes sure that nothing but
    /// `arriving` was applied since the window ended (no change held back was released), so
    /// every descendant of a sent change is among them and the walk is exact.
    pub(crate) fn covered_by(
        &self,
        heads: &[ChangeHash],
        arriving: &[Change],
        sent: &std::collections::BTreeSet<ChangeHash>,
    ) -> Option<HashSet<ChangeHash>> {
        let arriving: HashMap<ChangeHash, &[ChangeHash]> =
            arriving.iter().map(|c| (c.hash(), c.deps())).collect();
        if sent
            .iter()
            .any(|h| !self.positions.contains_key(h) && !arriving.contains_key(h))
        {
            return None;
        }
        let mut reached: HashSet<ChangeHash> = HashSet::new();
        let mut stack: Vec<ChangeHash> = heads.to_vec();
        while let Some(hash) = stack.pop() {
            let deps: &[ChangeHash] = match (arriving.get(&hash), self.positions.get(&hash)) {
                (Some(deps), _) => deps,
                (None, Some(position)) => &self.at(*position).deps,
                // Older than the window: no sent change lies below it.
                (None, None) => continue,
            };
            if reached.insert(hash) {
                stack.extend(deps.iter().copied());
            }
        }
        Some(
            sent.iter()
                .filter(|h| reached.contains(*h))
                .copied()
                .collect(),
        )
    }

    /// How many changes are kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether no change is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// The position of a kept change.
    pub fn position(&self, hash: &ChangeHash) -> Option<u64> {
        self.positions.get(hash).copied()
    }

    /// Drops the kept changes before position `keep_from` (all of them for `u64::MAX`): no
    /// peer's heads or last sync lie before it.
    pub fn trim_before(&mut self, keep_from: u64) {
        while self.start < keep_from {
            let Some(oldest) = self.kept.pop_front() else {
                break;
            };
            self.positions.remove(&oldest.hash);
            self.bytes -= oldest.bytes.map_or(0, |b| b.len());
            self.start += 1;
        }
        self.bytes_from = self.bytes_from.max(self.start);
    }

    fn at(&self, position: u64) -> &Kept {
        &self.kept[(position - self.start) as usize]
    }

    /// The bytes of a kept change: held, or rebuilt by Automerge.
    fn bytes_of(&self, doc: &Automerge, position: u64) -> Option<Vec<u8>> {
        let kept = self.at(position);
        match &kept.bytes {
            Some(bytes) => Some(bytes.clone()),
            None => Some(doc.get_change_by_hash(&kept.hash)?.raw_bytes().to_vec()),
        }
    }
}

/// Whether every change comes after those of `changes` it depends on.
fn causal_order(changes: &[&Change]) -> bool {
    let all: HashSet<ChangeHash> = changes.iter().map(|c| c.hash()).collect();
    let mut seen: HashSet<ChangeHash> = HashSet::new();
    for change in changes {
        if change
            .deps()
            .iter()
            .any(|d| all.contains(d) && !seen.contains(d))
        {
            return false;
        }
        seen.insert(change.hash());
    }
    true
}

/// Automerge's `generate_sync_message` for `doc` and `state`, made from `recent`: `Some` with
/// Automerge's answer (a message, or none to send) and `state` updated as Automerge would;
/// `None`, with `state` untouched, when it cannot be made from the kept changes alone.
pub fn generate(
    doc: &Automerge,
    recent: &RecentChanges,
    state: &mut sync::State,
) -> Option<Option<sync::Message>> {
    let our_heads = doc.get_heads();
    if !recent.matches(doc, &our_heads) || state.needs_reset {
        return None;
    }
    let supports_v2 = state
        .their_capabilities
        .as_ref()
        .is_some_and(|c| c.contains(&sync::Capability::MessageV2));
    if supports_v2 {
        // Automerge may send a whole document then; the engine never lets it.
        return None;
    }
    // Changes Automerge holds back until their dependencies arrive would change what it asks
    // for; with none held back, what it lacks of a list of heads is what it does not know.
    if !doc.get_missing_deps(&[]).is_empty() {
        return None;
    }
    // What this node needs to reach the peer's heads (Automerge then still sends its `have`:
    // the needs are among the peer's heads).
    let our_need = if state.read_only {
        Vec::new()
    } else {
        doc.get_missing_deps(state.their_heads.as_deref().unwrap_or_default())
    };
    let since_shared = recent.since(&state.shared_heads)?;
    let our_have = Have {
        last_sync: state.shared_heads.clone(),
        bloom: BloomFilter::from_hashes(since_shared.iter().map(|p| recent.at(*p).hash)),
    };
    if let Some(first) = state.their_have.as_ref().and_then(|have| have.first()) {
        if !doc.get_missing_deps(&first.last_sync).is_empty() {
            // Automerge answers with a reset message.
            return None;
        }
    }
    let to_send: Vec<u64> = match (&state.their_have, &state.their_need) {
        _ if state.peer_read_only => Vec::new(),
        (Some(their_have), Some(their_need)) => changes_to_send(
            doc,
            recent,
            their_have,
            their_need,
            (&state.shared_heads, &since_shared),
        )?
        .into_iter()
        .filter(|p| !state.sent_hashes.contains(&recent.at(*p).hash))
        .collect(),
        _ => Vec::new(),
    };
    let heads_unchanged = state.last_sent_heads == our_heads;
    let heads_equal = state.their_heads.as_ref() == Some(&our_heads);
    if heads_unchanged && state.have_responded {
        if (heads_equal || state.read_only) && to_send.is_empty() {
            return Some(None);
        }
        if state.in_flight {
            return Some(None);
        }
    }
    let changes: Vec<Vec<u8>> = to_send
        .iter()
        .map(|p| recent.bytes_of(doc, *p))
        .collect::<Option<_>>()?;
    state.have_responded = true;
    state.last_sent_heads.clone_from(&our_heads);
    state
        .sent_hashes
        .extend(to_send.iter().map(|p| recent.at(*p).hash));
    let mut flags = sync::MessageFlags::new();
    flags.set(sync::MessageFlags::SUPPORTS_SYNC_RESET);
    if state.read_only {
        flags.set(sync::MessageFlags::READ_ONLY);
    }
    state.in_flight = true;
    Some(Some(sync::Message {
        heads: our_heads,
        need: our_need,
        have: vec![our_have],
        changes: changes.into(),
        flags: Some(flags),
        version: sync::MessageVersion::V1,
    }))
}

/// The changes a peer asks for or lacks by its `have`s (Automerge's rule: the changes it
/// names that this node holds, then every change since their last sync that no Bloom filter of
/// theirs holds, and everything that depends on one of those, oldest first); `None` if that
/// reaches past the window. `known` is a boundary whose changes since are already walked (the
/// shared heads: most often the peer's last sync too).
fn changes_to_send(
    doc: &Automerge,
    recent: &RecentChanges,
    their_have: &[Have],
    their_need: &[ChangeHash],
    known: (&[ChangeHash], &[u64]),
) -> Option<Vec<u64>> {
    let mut need: Vec<u64> = Vec::new();
    for hash in their_need {
        match recent.positions.get(hash) {
            Some(position) => need.push(*position),
            None if doc.get_missing_deps(&[*hash]).is_empty() => return None,
            None => {}
        }
    }
    if their_have.is_empty() {
        return Some(need);
    }
    let mut last_sync: Vec<ChangeHash> = Vec::new();
    for have in their_have {
        for hash in &have.last_sync {
            if !last_sync.contains(hash) {
                last_sync.push(*hash);
            }
        }
    }
    let same_as_known =
        last_sync.len() == known.0.len() && last_sync.iter().all(|hash| known.0.contains(hash));
    let since = if same_as_known {
        known.1.to_vec()
    } else {
        recent.since(&last_sync)?
    };
    let in_since: HashSet<u64> = since.iter().copied().collect();
    let mut dependents: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut send: HashSet<u64> = HashSet::new();
    for &position in &since {
        let kept = recent.at(position);
        for dep in &kept.deps {
            if let Some(&dep_position) = recent.positions.get(dep) {
                if in_since.contains(&dep_position) {
                    dependents.entry(dep_position).or_default().push(position);
                }
            }
        }
        if their_have
            .iter()
            .all(|have| !have.bloom.contains_hash(&kept.hash))
        {
            send.insert(position);
        }
    }
    let mut stack: Vec<u64> = send.iter().copied().collect();
    while let Some(position) = stack.pop() {
        for dependent in dependents.get(&position).into_iter().flatten() {
            if send.insert(*dependent) {
                stack.push(*dependent);
            }
        }
    }
    need.retain(|p| !send.contains(p));
    need.extend(since.into_iter().filter(|p| send.contains(p)));
    Some(need)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::sync::SyncDoc;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ROOT};

    fn doc(actor: u8) -> Automerge {
        Automerge::new().with_actor(ActorId::from(vec![actor; 16]))
    }

    /// Commits one change putting `value` at `key` and tells `recent` about it.
    fn commit(doc: &mut Automerge, recent: &mut RecentChanges, key: &str, value: &str) {
        let mut tx = doc.transaction();
        tx.put(ROOT, key, value).unwrap();
        let (hash, _) = tx.commit();
        let change = doc.get_change_by_hash(&hash.unwrap()).unwrap();
        recent.applied(doc, [&change]);
    }

    /// Receives a message as the engine does: the peer is never offered whole documents.
    fn receive(doc: &mut Automerge, state: &mut sync::State, message: sync::Message) {
        doc.receive_sync_message(state, message).unwrap();
        if let Some(capabilities) = state.their_capabilities.as_mut() {
            capabilities.retain(|c| *c != sync::Capability::MessageV2);
        }
    }

    /// Runs Automerge's protocol between `a` and `b` until neither has anything to send.
    fn sync_fully(
        a: &mut Automerge,
        sa: &mut sync::State,
        b: &mut Automerge,
        sb: &mut sync::State,
    ) {
        for _ in 0..20 {
            let to_b = a.generate_sync_message(sa);
            let to_a = b.generate_sync_message(sb);
            if to_b.is_none() && to_a.is_none() {
                return;
            }
            if let Some(m) = to_b {
                receive(b, sb, m);
            }
            if let Some(m) = to_a {
                receive(a, sa, m);
            }
        }
        panic!("did not converge");
    }

    fn hashes(message: &sync::Message) -> Vec<ChangeHash> {
        let mut hashes: Vec<ChangeHash> = message
            .changes
            .iter()
            .map(|bytes| Change::try_from(bytes).unwrap().hash())
            .collect();
        hashes.sort();
        hashes
    }

    /// `generate` gives Automerge's message and state for `doc` and `state`.
    fn same_as_automerge(
        doc: &Automerge,
        recent: &RecentChanges,
        state: &sync::State,
    ) -> sync::Message {
        let mut ours = state.clone();
        let mine = generate(doc, recent, &mut ours).expect("made from recent changes");
        let mut theirs = state.clone();
        let automerge = doc.generate_sync_message(&mut theirs);
        let (mine, automerge) = (mine.unwrap(), automerge.unwrap());
        assert_eq!(mine.heads, automerge.heads);
        assert_eq!(mine.need, automerge.need);
        assert_eq!(mine.have, automerge.have);
        assert_eq!(mine.flags, automerge.flags);
        assert_eq!(hashes(&mine), hashes(&automerge));
        assert_eq!(ours, theirs);
        mine
    }

    #[test]
    fn a_peer_behind_by_more_than_the_kept_bytes_gets_automerges_message() {
        let (mut a, mut b) = (doc(1), doc(2));
        let mut recent = RecentChanges::new(&a);
        commit(&mut a, &mut recent, "first", "in step");
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        sync_fully(&mut a, &mut sa, &mut b, &mut sb);
        // 150 changes of 1 KB: more than the bytes kept, fewer than the changes kept.
        for i in 0..150 {
            commit(&mut a, &mut recent, &format!("k{i}"), &"x".repeat(1024));
        }
        assert!(recent.kept.iter().any(|k| k.bytes.is_none()));
        let message = same_as_automerge(&a, &recent, &sa);
        assert_eq!(message.changes.len(), 150);
        receive(&mut b, &mut sb, message);
        assert_eq!(b.get_heads(), a.get_heads());
    }

    #[test]
    fn concurrent_changes_from_both_sides_give_automerges_message() {
        let (mut a, mut b) = (doc(1), doc(2));
        let mut recent = RecentChanges::new(&a);
        commit(&mut a, &mut recent, "base", "shared");
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        sync_fully(&mut a, &mut sa, &mut b, &mut sb);
        // Both sides write; b's message reaches a, which keeps the changes it applied.
        for i in 0..5 {
            commit(&mut a, &mut recent, &format!("a{i}"), "from a");
            let mut tx = b.transaction();
            tx.put(ROOT, format!("b{i}"), "from b").unwrap();
            tx.commit();
        }
        let to_a = b.generate_sync_message(&mut sb).unwrap();
        let received: Vec<Change> = to_a
            .changes
            .iter()
            .map(|bytes| Change::try_from(bytes).unwrap())
            .collect();
        receive(&mut a, &mut sa, to_a);
        recent.applied(&a, &received);
        assert_eq!(recent.kept.len(), 11);
        let message = same_as_automerge(&a, &recent, &sa);
        receive(&mut b, &mut sb, message);
        sync_fully(&mut a, &mut sa, &mut b, &mut sb);
        assert_eq!(sorted(b.get_heads()), sorted(a.get_heads()));
    }

    #[test]
    fn a_change_the_window_did_not_see_makes_it_decline_and_start_again() {
        let (mut a, mut b) = (doc(1), doc(2));
        let mut recent = RecentChanges::new(&a);
        commit(&mut a, &mut recent, "first", "seen");
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        sync_fully(&mut a, &mut sa, &mut b, &mut sb);
        let mut tx = a.transaction();
        tx.put(ROOT, "unseen", "not told").unwrap();
        tx.commit();
        assert!(generate(&a, &recent, &mut sa.clone()).is_none());
        // The next change told does not add up either: the window starts again after it.
        commit(&mut a, &mut recent, "second", "seen");
        assert!(recent.kept.is_empty());
        assert!(generate(&a, &recent, &mut sa.clone()).is_none());
        // Once the peer is in step again, the next change is made from the window.
        sync_fully(&mut a, &mut sa, &mut b, &mut sb);
        commit(&mut a, &mut recent, "third", "seen");
        same_as_automerge(&a, &recent, &sa);
    }

    #[test]
    fn a_peer_further_behind_than_the_window_is_declined() {
        let (mut a, mut b) = (doc(1), doc(2));
        let mut recent = RecentChanges::new(&a);
        commit(&mut a, &mut recent, "first", "in step");
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        sync_fully(&mut a, &mut sa, &mut b, &mut sb);
        for i in 0..MAX_CHANGES + 1 {
            commit(&mut a, &mut recent, &format!("k{i}"), "v");
        }
        assert_eq!(recent.kept.len(), MAX_CHANGES);
        assert!(generate(&a, &recent, &mut sa.clone()).is_none());
    }

    fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
        heads.sort();
        heads
    }
}
