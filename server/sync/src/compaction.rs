//! One compaction policy for every stored document, shared and local alike: when a document's
//! new bytes are stored as an incremental chunk beside what is stored, and when as a whole
//! snapshot that replaces the chunks.
//!
//! A chunk is cheap to write (only the new changes) but every chunk is read back at start-up;
//! a snapshot costs the whole document once and resets the count. The policy keeps both
//! bounded: at most `after_chunks` chunks beside a snapshot, and their bytes at most half the
//! snapshot's (or `min_bytes` while the document is small). After a failed write the next one
//! is a snapshot, so nothing is ever stored on top of a chunk that is missing.
//!
//! A snapshot that falls due on a write is not made inside that write: the write stores its
//! chunk, and the driver makes the snapshot after releasing it (of what is durable by then,
//! outside the engine lock), so no acknowledgement or frame waits for a whole document to be
//! saved. Chunks go on meanwhile, up to twice the bounds; past that a write stores the snapshot
//! itself.

/// The limits of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Store a snapshot once this many chunks would be beside the last one.
    pub after_chunks: usize,
    /// Chunks may reach this many bytes (or half the last snapshot, if more) before a
    /// snapshot replaces them.
    pub min_bytes: usize,
}

impl Default for CompactionPolicy {
    fn default() -> CompactionPolicy {
        CompactionPolicy {
            after_chunks: 1024,
            min_bytes: 64 * 1024,
        }
    }
}

/// What the policy remembers of one document's stored form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compaction {
    chunks: usize,
    chunk_bytes: usize,
    snapshot_bytes: usize,
    needs_snapshot: bool,
    /// A snapshot is being made after the write path ([`Compaction::start_compacting`]).
    compacting: bool,
}

impl Compaction {
    /// A document loaded from storage with `chunks` chunks beside its snapshot.
    pub fn loaded(chunks: usize, needs_snapshot: bool) -> Compaction {
        Compaction {
            chunks,
            chunk_bytes: 0,
            snapshot_bytes: 0,
            needs_snapshot,
            compacting: false,
        }
    }

    /// Whether the next write must be a whole snapshot whatever its size.
    pub fn needs_snapshot(&self) -> bool {
        self.needs_snapshot
    }

    /// Whether a chunk of `len` bytes may be stored beside what is stored (otherwise a
    /// snapshot replaces everything).
    pub fn takes_chunk(&self, policy: &CompactionPolicy, len: usize) -> bool {
        self.within(policy, len, 1)
    }

    /// Whether a chunk of `len` bytes may still be stored while a snapshot is made after the
    /// write path: up to twice what [`Compaction::takes_chunk`] allows, after which the write
    /// itself stores the snapshot (a driver that never compacts still keeps the bound).
    pub fn takes_chunk_while_compacting(&self, policy: &CompactionPolicy, len: usize) -> bool {
        self.within(policy, len, 2)
    }

    /// Whether one more chunk of `len` bytes stays within `factor` times the policy's bounds.
    fn within(&self, policy: &CompactionPolicy, len: usize, factor: usize) -> bool {
        !self.needs_snapshot
            && self.chunks + 1 < factor * policy.after_chunks
            && self.chunk_bytes + len <= factor * policy.min_bytes.max(self.snapshot_bytes / 2)
    }

    /// Whether a snapshot is being made after the write path.
    pub fn is_compacting(&self) -> bool {
        self.compacting
    }

    /// A snapshot is due and will be made after the write path; until it is stored, writes
    /// store chunks.
    pub fn start_compacting(&mut self) {
        self.compacting = true;
    }

    /// A chunk of `len` bytes was handed to storage.
    pub fn stored_chunk(&mut self, len: usize) {
        self.chunks += 1;
        self.chunk_bytes += len;
    }

    /// A snapshot of `len` bytes was handed to storage.
    pub fn stored_snapshot(&mut self, len: usize) {
        self.chunks = 0;
        self.chunk_bytes = 0;
        self.snapshot_bytes = len;
        self.needs_snapshot = false;
        self.compacting = false;
    }

    /// A write failed (or what is stored is unknown): the next write is a snapshot.
    pub fn require_snapshot(&mut self) {
        self.needs_snapshot = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_until_the_count_or_the_bytes_call_for_a_snapshot() {
        let policy = CompactionPolicy {
            after_chunks: 4,
            min_bytes: 100,
        };
        let mut state = Compaction::default();
        assert!(state.takes_chunk(&policy, 40));
        state.stored_chunk(40);
        assert!(state.takes_chunk(&policy, 40));
        state.stored_chunk(40);
        assert!(!state.takes_chunk(&policy, 40), "120 bytes of chunks > 100");
        state.stored_snapshot(1000);
        for _ in 0..3 {
            assert!(state.takes_chunk(&policy, 10));
            state.stored_chunk(10);
        }
        assert!(
            !state.takes_chunk(&policy, 10),
            "a fourth chunk reaches the count"
        );
        assert!(
            !Compaction::default().takes_chunk(&policy, 101),
            "one chunk over the bytes is a snapshot"
        );
    }

    #[test]
    fn while_a_snapshot_is_made_chunks_go_on_up_to_twice_the_bound() {
        let policy = CompactionPolicy {
            after_chunks: 100,
            min_bytes: 100,
        };
        let mut state = Compaction::default();
        state.stored_chunk(90);
        assert!(!state.takes_chunk(&policy, 20));
        state.start_compacting();
        assert!(state.is_compacting());
        assert!(state.takes_chunk_while_compacting(&policy, 20));
        state.stored_chunk(20);
        assert!(
            !state.takes_chunk_while_compacting(&policy, 100),
            "210 > 200 bytes"
        );
        state.stored_snapshot(1000);
        assert!(!state.is_compacting());
        assert!(state.takes_chunk(&policy, 20));
    }

    #[test]
    fn after_a_failed_write_the_next_is_a_snapshot() {
        let policy = CompactionPolicy::default();
        let mut state = Compaction::default();
        state.require_snapshot();
        assert!(state.needs_snapshot());
        assert!(!state.takes_chunk(&policy, 1));
        state.stored_snapshot(10);
        assert!(state.takes_chunk(&policy, 1));
    }
}
