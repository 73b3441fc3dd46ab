//! Receiving a sync message: Automerge's `receive_sync_message`, without its walk over the
//! document's whole history.
//!
//! On every message it receives, Automerge 0.12 forgets the changes it sent that the peer now
//! holds (they are ancestors of the peer's heads) by walking back from those heads through
//! every ancestor — the whole change graph, with a set of visited nodes, even when nothing was
//! sent. At 10,000 lessons that walk was a quarter of a hub's CPU during propagation, and it
//! runs on every node, for every message, under the engine lock.
//!
//! [`receive_sync_message`] makes the same change to the document and the same update of the
//! sync state, and finds the sent changes the peer now holds only when something was sent:
//! mostly by walking back from the peer's heads through the document's recent changes and the
//! message's own ([`RecentChanges::covered_by`]: every descendant of a recent change is among
//! them, so the walk is exact); otherwise by asking Automerge which changes the peer's heads
//! do *not* cover (answered from its per-actor sequence clocks: a change is an ancestor of a
//! set of heads exactly when its sequence number is within the heads' clock for its actor), at
//! a cost that grows with what the peer lacks, not with the history. Debug builds check every
//! call against Automerge's own function.

use std::collections::{BTreeSet, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use automerge::sync::{self, Capability, MessageFlags};
use automerge::{Automerge, AutomergeError, ChangeHash, ReadDoc};

use crate::recent::RecentChanges;

/// The document's recent changes, and the changes of the message being received: with them,
/// what a peer now holds of the changes sent to it is mostly found without asking Automerge.
pub struct Known<'a> {
    pub recent: &'a RecentChanges,
    /// The message's changes, parsed: exactly its chunks, in order (they are applied in place
    /// of the chunks, which are not parsed again).
    pub arriving: &'a [automerge::Change],
}

/// Applies `message` to `doc` and `state` as Automerge's `receive_sync_message` does. `Err`
/// if Automerge panicked (the document may then be half-changed). Debug builds compare the
/// state with Automerge's afterwards, outside the catch, so a difference fails the test.
pub fn receive_sync_message(
    doc: &mut Automerge,
    state: &mut sync::State,
    message: sync::Message,
    known: Option<Known<'_>>,
) -> std::thread::Result<Result<(), AutomergeError>> {
    #[cfg(debug_assertions)]
    let probe = (state.clone(), message.clone());
    let received = catch_unwind(AssertUnwindSafe(|| receive(doc, state, message, known)));
    #[cfg(debug_assertions)]
    if matches!(received, Ok(Ok(()))) {
        check_against_automerge(doc, probe.0, probe.1, state);
    }
    received
}

fn receive(
    doc: &mut Automerge,
    state: &mut sync::State,
    message: sync::Message,
    known: Option<Known<'_>>,
) -> Result<(), AutomergeError> {
    let sync::Message {
        heads,
        need,
        have,
        changes,
        flags,
        ..
    } = message;
    state.in_flight = false;
    let heads_before = doc.get_heads();
    // The message's changes as the screen parsed (and checked) them: Automerge's
    // `load_incremental` would parse and verify every one again.
    let parsed = known.as_ref().map(|k| k.arriving);
    // The recent changes decide only if they end where the document stands and no change is
    // held back (one could be released by this message's changes, unseen by the window).
    let known = known
        .filter(|k| k.recent.matches(doc, &heads_before) && doc.get_missing_deps(&[]).is_empty());
    if let Some(flags) = flags {
        // Only a peer that speaks the second message version sends flags at all.
        let mut capabilities = vec![Capability::MessageV2];
        if flags.contains(MessageFlags::SUPPORTS_SYNC_RESET) {
            capabilities.push(Capability::SyncReset);
        }
        state.their_capabilities = Some(capabilities);
        if flags.contains(MessageFlags::SYNC_RESET) {
            state.sent_hashes.clear();
        }
        state.peer_read_only = flags.contains(MessageFlags::READ_ONLY);
    }
    let carried_changes = !changes.is_empty();
    if carried_changes && !state.read_only {
        match parsed {
            Some(parsed) => doc.apply_changes(parsed.iter().cloned())?,
            None => {
                let bytes: Vec<u8> = changes.iter().flatten().copied().collect();
                doc.load_incremental(&bytes)?;
            }
        }
        state.shared_heads =
            advanced_shared_heads(&heads_before, &doc.get_heads(), &state.shared_heads);
    }
    // The peer's heads this node holds, now that the message's changes are applied.
    let held: Vec<ChangeHash> = heads.iter().copied().filter(|h| holds(doc, h)).collect();
    let known = known.filter(|_| doc.get_missing_deps(&[]).is_empty());
    forget_what_they_hold(doc, &held, &mut state.sent_hashes, known);
    if !carried_changes && heads == heads_before {
        state.last_sent_heads.clone_from(&heads);
    }
    if held.len() == heads.len() {
        state.shared_heads.clone_from(&heads);
        if heads.is_empty() {
            // The peer holds nothing (it lost its data, or never had any): start over.
            state.last_sent_heads = Vec::new();
            state.sent_hashes.clear();
        }
    } else {
        let mut shared: Vec<ChangeHash> = state.shared_heads.iter().chain(&held).copied().collect();
        shared.sort();
        shared.dedup();
        state.shared_heads = shared;
    }
    state.their_have = Some(have);
    state.their_heads = Some(heads);
    state.their_need = Some(need);
    Ok(())
}

/// The shared heads after changes were applied: the document's new heads that were not heads
/// before, and the shared heads that are still heads; sorted, each once.
fn advanced_shared_heads(
    before: &[ChangeHash],
    after: &[ChangeHash],
    shared_before: &[ChangeHash],
) -> Vec<ChangeHash> {
    let mut shared: Vec<ChangeHash> = after
        .iter()
        .filter(|h| !before.contains(h))
        .chain(shared_before.iter().filter(|h| after.contains(h)))
        .copied()
        .collect();
    shared.sort();
    shared.dedup();
    shared
}

/// Drops from `sent` the changes that `held` (the peer's heads this node holds) include or
/// descend from.
fn forget_what_they_hold(
    doc: &Automerge,
    held: &[ChangeHash],
    sent: &mut BTreeSet<ChangeHash>,
    known: Option<Known<'_>>,
) {
    if sent.is_empty() {
        return;
    }
    if held.is_empty() {
        // No heads this node holds: none of its changes is among their ancestors.
        return;
    }
    if let Some(covered) = known.and_then(|k| k.recent.covered_by(held, k.arriving, sent)) {
        sent.retain(|hash| !covered.contains(hash));
        return;
    }
    let not_covered: HashSet<ChangeHash> = doc
        .get_changes_meta(held)
        .into_iter()
        .map(|meta| meta.hash)
        .collect();
    // A change the heads do not cover stays; so does one this node does not hold (it cannot
    // be an ancestor of heads in this document).
    sent.retain(|hash| not_covered.contains(hash) || !holds(doc, hash));
}

fn holds(doc: &Automerge, hash: &ChangeHash) -> bool {
    doc.get_change_meta_by_hash(hash).is_some()
}

/// Automerge's own `receive_sync_message` on the state as it was, with the message's changes
/// already in `doc` (so it only updates the state): everything but what depends on whether the
/// changes were new must match.
#[cfg(debug_assertions)]
fn check_against_automerge(
    doc: &mut Automerge,
    mut theirs: sync::State,
    mut message: sync::Message,
    ours: &sync::State,
) {
    use automerge::sync::SyncDoc;
    let carried_changes = !message.changes.is_empty();
    message.changes = sync::ChunkList::empty();
    let heads_before = doc.get_heads();
    let received = catch_unwind(AssertUnwindSafe(|| {
        doc.receive_sync_message(&mut theirs, message)
    }));
    assert_eq!(
        doc.get_heads(),
        heads_before,
        "a message without changes changed the document"
    );
    if !matches!(received, Ok(Ok(()))) {
        return;
    }
    if carried_changes {
        // Automerge advanced the shared heads over the changes it applied, and kept the last
        // heads it sent; given no changes, it did neither.
        theirs.shared_heads.clone_from(&ours.shared_heads);
        theirs.last_sent_heads.clone_from(&ours.last_sent_heads);
    }
    assert_eq!(
        ours, &theirs,
        "a sync state after a received message differs from Automerge's"
    );
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

    fn write(doc: &mut Automerge, key: &str) {
        let mut tx = doc.transaction();
        tx.put(ROOT, key, key).unwrap();
        tx.commit();
    }

    /// Two documents exchange messages until neither has anything to say; `b` receives with
    /// this module, `a` with Automerge. Returns how many messages `b` received.
    fn sync_until_quiet(
        a: &mut Automerge,
        sa: &mut sync::State,
        b: &mut Automerge,
        sb: &mut sync::State,
    ) -> usize {
        let mut received = 0;
        for _ in 0..20 {
            let to_b = a.generate_sync_message(sa);
            let to_a = b.generate_sync_message(sb);
            if to_b.is_none() && to_a.is_none() {
                return received;
            }
            if let Some(m) = to_b {
                // Automerge's own function on copies: the same document and state after.
                let (mut b_by_automerge, mut sb_by_automerge) = (b.clone(), sb.clone());
                b_by_automerge
                    .receive_sync_message(&mut sb_by_automerge, m.clone())
                    .unwrap();
                receive_sync_message(b, sb, m, None).unwrap().unwrap();
                assert_eq!(sb, &sb_by_automerge);
                assert_eq!(b.get_heads(), b_by_automerge.get_heads());
                received += 1;
            }
            if let Some(m) = to_a {
                a.receive_sync_message(sa, m).unwrap();
            }
        }
        panic!("the two documents did not stop talking");
    }

    #[test]
    fn a_conversation_ends_in_step_and_every_state_matches_automerges() {
        let (mut a, mut b) = (doc(1), doc(2));
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        for round in 0..30 {
            write(&mut a, &format!("a{round}"));
            if round % 3 == 0 {
                write(&mut b, &format!("b{round}"));
            }
            assert!(sync_until_quiet(&mut a, &mut sa, &mut b, &mut sb) > 0);
            assert_eq!(a.get_heads(), b.get_heads());
        }
        // What `b` sent, `a` holds: nothing is left in `b`'s sent changes once in step.
        assert!(sb.sent_hashes.is_empty(), "{:?}", sb.sent_hashes);
    }

    #[test]
    fn sent_changes_the_peer_does_not_hold_yet_are_remembered() {
        let (mut a, mut b) = (doc(1), doc(2));
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        write(&mut b, "first");
        sync_until_quiet(&mut a, &mut sa, &mut b, &mut sb);
        // `b` writes and sends; before `a` answers, `a` writes something of its own.
        write(&mut b, "second");
        let to_a = b
            .generate_sync_message(&mut sb)
            .expect("b has a change to send");
        let sent = b.get_heads()[0];
        assert!(sb.sent_hashes.contains(&sent));
        write(&mut a, "concurrent");
        let from_a = a
            .generate_sync_message(&mut sa)
            .expect("a has a change to send");
        // `a`'s message crossed `b`'s: its heads do not cover what `b` sent.
        receive_sync_message(&mut b, &mut sb, from_a, None)
            .unwrap()
            .unwrap();
        assert!(sb.sent_hashes.contains(&sent));
        a.receive_sync_message(&mut sa, to_a).unwrap();
        sync_until_quiet(&mut a, &mut sa, &mut b, &mut sb);
        assert!(!sb.sent_hashes.contains(&sent));
        assert_eq!(a.get_heads(), b.get_heads());
    }

    #[test]
    fn a_peer_that_says_it_holds_nothing_is_sent_everything_again() {
        let (mut a, mut b) = (doc(1), doc(2));
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        write(&mut b, "one");
        sync_until_quiet(&mut a, &mut sa, &mut b, &mut sb);
        // `a` loses everything and starts again.
        let (mut a, mut sa) = (doc(1), sync::State::new());
        sync_until_quiet(&mut a, &mut sa, &mut b, &mut sb);
        assert_eq!(a.get_heads(), b.get_heads());
    }

    #[test]
    fn what_a_peer_holds_of_the_sent_changes_is_found_from_the_recent_changes() {
        let (mut a, mut b) = (doc(1), doc(2));
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        let mut recent = RecentChanges::new(&b);
        write(&mut b, "first");
        recent.applied(&b, [&b.get_last_local_change().unwrap()]);
        sync_until_quiet(&mut a, &mut sa, &mut b, &mut sb);
        for round in 0..5 {
            write(&mut b, &format!("b{round}"));
            let change = b.get_last_local_change().unwrap();
            recent.applied(&b, [&change]);
            let to_a = b
                .generate_sync_message(&mut sb)
                .expect("b has a change to send");
            a.receive_sync_message(&mut sa, to_a).unwrap();
            // `a` writes on top of what it got and sends that change with its heads.
            write(&mut a, &format!("a{round}"));
            let to_b = a
                .generate_sync_message(&mut sa)
                .expect("a has a change to send");
            let arriving: Vec<automerge::Change> = to_b
                .changes
                .iter()
                .map(|bytes| automerge::Change::try_from(bytes).unwrap())
                .collect();
            assert!(sb.sent_hashes.contains(&change.hash()));
            // Decided by the walk alone (the sent change is in the window) …
            let covered = recent
                .covered_by(&to_b.heads, &arriving, &sb.sent_hashes)
                .expect("the sent change is kept");
            assert!(covered.contains(&change.hash()));
            // … and received that way (debug builds compare the state with Automerge's).
            let before = b.stats().num_changes;
            let known = Known {
                recent: &recent,
                arriving: &arriving,
            };
            receive_sync_message(&mut b, &mut sb, to_b, Some(known))
                .unwrap()
                .unwrap();
            assert!(!sb.sent_hashes.contains(&change.hash()));
            let applied: Vec<automerge::Change> = b
                .get_changes(&[])
                .into_iter()
                .skip(before as usize)
                .collect();
            recent.applied(&b, applied.iter());
        }
        // A sent change older than the window is left to Automerge's clocks.
        let old = RecentChanges::new(&b);
        let sent = BTreeSet::from([b.get_changes(&[])[0].hash()]);
        assert!(old.covered_by(&b.get_heads(), &[], &sent).is_none());
    }
}
