//! A bounded outbox for one federation link: frames wait here until the transport sends them.
//!
//! The queue is bounded in frames and in bytes, so a peer that stops reading cannot make the
//! node's memory grow: once a push would go over the bound, the sender is told and closes the
//! link. A frame larger than the byte bound is still accepted when the queue is empty (a large
//! document must be able to cross), so the bound is one frame or `max_bytes`, whichever is
//! larger. Frames pushed as *exempt* (a link's handshake and the catch-up sent right after it,
//! whose size is what the peer lacks, not what it fails to read) are queued beside the bound and
//! do not count toward it, so a new peer can catch up with any amount of data, while a peer that
//! stops reading afterwards still hits the bound. Aborting a queue drops what is waiting at once
//! and ends the stream with one last item (the closing status).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio_stream::Stream;

/// Why a push was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error(
        "the peer does not read: its outbox holds {frames} frames and {bytes} bytes \
         (limits.outbox_frames_per_link {max_frames}, limits.outbox_bytes_per_link {max_bytes})"
    )]
    Full {
        frames: usize,
        bytes: usize,
        max_frames: usize,
        max_bytes: usize,
    },
    #[error("the link is closed")]
    Closed,
}

struct Queue<T> {
    /// Each item with its bytes and whether it is exempt from the bound.
    items: VecDeque<(T, usize, bool)>,
    /// Bytes and frames queued that count toward the bound.
    bytes: usize,
    frames: usize,
    /// Bytes queued exempt from the bound.
    exempt_bytes: usize,
    max_frames: usize,
    max_bytes: usize,
    /// No more pushes; the stream ends once `items` (and `last`) are out.
    closed: bool,
    /// Sent before anything still queued, then the stream ends.
    last: Option<T>,
    receiver_gone: bool,
    waker: Option<Waker>,
}

/// The sending half, held by the link.
pub struct OutboxSender<T> {
    queue: Arc<Mutex<Queue<T>>>,
}

/// The receiving half: a stream for the transport.
pub struct OutboxStream<T> {
    queue: Arc<Mutex<Queue<T>>>,
}

/// A new outbox holding at most `max_frames` frames and `max_bytes` bytes.
pub fn outbox<T>(max_frames: usize, max_bytes: usize) -> (OutboxSender<T>, OutboxStream<T>) {
    let queue = Arc::new(Mutex::new(Queue {
        items: VecDeque::new(),
        bytes: 0,
        frames: 0,
        exempt_bytes: 0,
        max_frames: max_frames.max(1),
        max_bytes,
        closed: false,
        last: None,
        receiver_gone: false,
        waker: None,
    }));
    (
        OutboxSender {
            queue: queue.clone(),
        },
        OutboxStream { queue },
    )
}

fn lock<T>(queue: &Mutex<Queue<T>>) -> MutexGuard<'_, Queue<T>> {
    queue.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T> Queue<T> {
    fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
        self.frames = 0;
        self.exempt_bytes = 0;
    }

    fn pop(&mut self) -> Option<T> {
        let (item, bytes, exempt) = self.items.pop_front()?;
        if exempt {
            self.exempt_bytes -= bytes;
        } else {
            self.bytes -= bytes;
            self.frames -= 1;
        }
        Some(item)
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

impl<T> OutboxSender<T> {
    /// Queues `item` of `bytes` bytes, unless the outbox is full or closed.
    pub fn push(&self, item: T, bytes: usize) -> Result<(), PushError> {
        let mut q = lock(&self.queue);
        if q.closed || q.receiver_gone {
            return Err(PushError::Closed);
        }
        let over = q.frames + 1 > q.max_frames || (q.frames > 0 && q.bytes + bytes > q.max_bytes);
        if over {
            return Err(PushError::Full {
                frames: q.frames,
                bytes: q.bytes,
                max_frames: q.max_frames,
                max_bytes: q.max_bytes,
            });
        }
        q.bytes += bytes;
        q.frames += 1;
        q.items.push_back((item, bytes, false));
        q.wake();
        Ok(())
    }

    /// Queues `item` beside the bound (see the module documentation); refused only when the
    /// outbox is closed.
    pub fn push_exempt(&self, item: T, bytes: usize) -> Result<(), PushError> {
        let mut q = lock(&self.queue);
        if q.closed || q.receiver_gone {
            return Err(PushError::Closed);
        }
        q.exempt_bytes += bytes;
        q.items.push_back((item, bytes, true));
        q.wake();
        Ok(())
    }

    /// Ends the stream after what is queued, with `last` as its final item.
    pub fn close(&self, last: Option<T>) {
        let mut q = lock(&self.queue);
        if let Some(last) = last {
            if !q.closed {
                q.items.push_back((last, 0, true));
            }
        }
        q.closed = true;
        q.wake();
    }

    /// Drops everything queued and ends the stream at once, with `last` as its final item.
    pub fn abort(&self, last: Option<T>) {
        let mut q = lock(&self.queue);
        q.clear();
        q.last = last;
        q.closed = true;
        q.wake();
    }

    /// Drops everything queued and ends the stream after `items` (a Goodbye and the closing
    /// status): what the peer failed to read is not kept, but it learns why the link ends.
    pub fn finish(&self, items: Vec<T>) {
        let mut q = lock(&self.queue);
        if q.closed {
            return;
        }
        q.clear();
        q.last = None;
        for item in items {
            q.items.push_back((item, 0, true));
        }
        q.closed = true;
        q.wake();
    }

    /// Frames and bytes waiting (exempt ones included).
    pub fn queued(&self) -> (usize, usize) {
        let q = lock(&self.queue);
        (q.items.len(), q.bytes + q.exempt_bytes)
    }
}

impl<T> Drop for OutboxSender<T> {
    fn drop(&mut self) {
        let mut q = lock(&self.queue);
        q.closed = true;
        q.wake();
    }
}

impl<T> Stream for OutboxStream<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut q = lock(&self.queue);
        if let Some(last) = q.last.take() {
            q.clear();
            return Poll::Ready(Some(last));
        }
        if let Some(item) = q.pop() {
            return Poll::Ready(Some(item));
        }
        if q.closed {
            return Poll::Ready(None);
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> Drop for OutboxStream<T> {
    fn drop(&mut self) {
        let mut q = lock(&self.queue);
        q.receiver_gone = true;
        q.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn an_outbox_is_bounded_in_frames_and_bytes() {
        let (tx, mut rx) = outbox::<u32>(3, 100);
        tx.push(1, 500).unwrap();
        assert!(
            matches!(
                tx.push(2, 1),
                Err(PushError::Full {
                    frames: 1,
                    bytes: 500,
                    ..
                })
            ),
            "a frame larger than the bound passes only alone"
        );
        assert_eq!(rx.next().await, Some(1));
        tx.push(2, 40).unwrap();
        tx.push(3, 40).unwrap();
        let full = tx.push(4, 40).unwrap_err();
        assert!(full.to_string().contains("2 frames and 80 bytes"), "{full}");
        tx.push(4, 20).unwrap();
        assert!(matches!(
            tx.push(5, 0),
            Err(PushError::Full { frames: 3, .. })
        ));
        assert_eq!(tx.queued(), (3, 100));
        assert_eq!(rx.next().await, Some(2));
        tx.close(Some(99));
        assert_eq!(tx.push(6, 1), Err(PushError::Closed));
        let rest: Vec<u32> = rx.collect().await;
        assert_eq!(rest, vec![3, 4, 99]);
    }

    #[tokio::test]
    async fn exempt_frames_pass_beside_the_bound_and_do_not_count_toward_it() {
        let (tx, mut rx) = outbox::<u32>(2, 100);
        for i in 0..10 {
            tx.push_exempt(i, 1_000).unwrap();
        }
        assert_eq!(tx.queued(), (10, 10_000));
        tx.push(10, 60).unwrap();
        tx.push(11, 40).unwrap();
        assert!(
            matches!(
                tx.push(12, 1),
                Err(PushError::Full {
                    frames: 2,
                    bytes: 100,
                    ..
                })
            ),
            "the bound still holds for what follows"
        );
        let mut got = Vec::new();
        for _ in 0..12 {
            got.push(rx.next().await.unwrap());
        }
        assert_eq!(got, (0..12).collect::<Vec<u32>>());
        assert_eq!(tx.queued(), (0, 0));
        tx.push(12, 100).unwrap();
    }

    #[tokio::test]
    async fn aborting_drops_what_waits_and_sends_the_last_item() {
        let (tx, mut rx) = outbox::<u32>(100, 1000);
        for i in 0..10 {
            tx.push(i, 10).unwrap();
        }
        tx.abort(Some(42));
        assert_eq!(tx.queued(), (0, 0));
        assert_eq!(rx.next().await, Some(42));
        assert_eq!(rx.next().await, None);
    }

    #[tokio::test]
    async fn finishing_drops_what_waits_and_sends_the_last_items_in_order() {
        let (tx, rx) = outbox::<u32>(100, 1000);
        for i in 0..10 {
            tx.push(i, 10).unwrap();
        }
        tx.finish(vec![98, 99]);
        tx.finish(vec![1]);
        assert_eq!(tx.push(5, 1), Err(PushError::Closed));
        let rest: Vec<u32> = rx.collect().await;
        assert_eq!(rest, vec![98, 99]);
    }

    #[tokio::test]
    async fn the_stream_wakes_on_a_push_and_ends_when_the_sender_goes() {
        let (tx, mut rx) = outbox::<u32>(10, 1000);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(item) = rx.next().await {
                got.push(item);
            }
            got
        });
        tokio::task::yield_now().await;
        tx.push(7, 1).unwrap();
        tx.push(8, 1).unwrap();
        drop(tx);
        assert_eq!(reader.await.unwrap(), vec![7, 8]);
    }
}
