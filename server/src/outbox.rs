//! A bounded outbox for one federation link: frames wait here until the transport sends them.
//!
//! The queue is bounded in frames and in bytes, so a peer that stops reading cannot make the
//! node's memory grow: once a push would go over the bound, the sender is told and closes the
//! link. A frame larger than the byte bound is still accepted when the queue is empty (a large
//! document must be able to cross), so the bound is one frame or `max_bytes`, whichever is
//! larger. Aborting a queue drops what is waiting at once and ends the stream with one last
//! item (the closing status).

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
    items: VecDeque<(T, usize)>,
    bytes: usize,
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
        let over = q.items.len() + 1 > q.max_frames
            || (!q.items.is_empty() && q.bytes + bytes > q.max_bytes);
        if over {
            return Err(PushError::Full {
                frames: q.items.len(),
                bytes: q.bytes,
                max_frames: q.max_frames,
                max_bytes: q.max_bytes,
            });
        }
        q.bytes += bytes;
        q.items.push_back((item, bytes));
        q.wake();
        Ok(())
    }

    /// Ends the stream after what is queued, with `last` as its final item.
    pub fn close(&self, last: Option<T>) {
        let mut q = lock(&self.queue);
        if let Some(last) = last {
            if !q.closed {
                q.items.push_back((last, 0));
            }
        }
        q.closed = true;
        q.wake();
    }

    /// Drops everything queued and ends the stream at once, with `last` as its final item.
    pub fn abort(&self, last: Option<T>) {
        let mut q = lock(&self.queue);
        q.items.clear();
        q.bytes = 0;
        q.last = last;
        q.closed = true;
        q.wake();
    }

    /// Frames and bytes waiting.
    pub fn queued(&self) -> (usize, usize) {
        let q = lock(&self.queue);
        (q.items.len(), q.bytes)
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
            q.items.clear();
            q.bytes = 0;
            return Poll::Ready(Some(last));
        }
        if let Some((item, bytes)) = q.items.pop_front() {
            q.bytes -= bytes;
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
        q.items.clear();
        q.bytes = 0;
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
