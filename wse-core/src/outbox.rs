//! A connection's outbound queue: bounded, and holding no memory while empty.
//!
//! Everyone who sends to a connection holds an [`Outbox`]; its writer holds the [`Drain`] and
//! takes every queued frame at once. Unlike a channel that allocates its first block of slots
//! up front, the queue allocates when frames come and gives the memory back once they are
//! written, so the thousands of idle connections of a server cost nothing here.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

/// Why a frame was not queued; the frame is handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrySendError {
    /// The queue holds its capacity: the writer is behind (the peer is not reading).
    Full(Bytes),
    /// The writer is gone: the connection is over.
    Closed(Bytes),
}

/// The writer is gone: the connection is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Creates a queue of at most `capacity` frames.
///
/// # Panics
/// If `capacity` is zero.
pub fn outbox(capacity: usize) -> (Outbox, Drain) {
    assert!(capacity > 0, "an outbox needs room for one frame");
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            frames: VecDeque::new(),
            senders: 1,
            drained: false,
        }),
        capacity,
        filled: Notify::new(),
        emptied: Notify::new(),
    });
    (Outbox(Arc::clone(&shared)), Drain(shared))
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
    /// Wakes the writer: frames were queued, or the last sender left.
    filled: Notify,
    /// Wakes senders waiting for room: the writer took the queue, or left.
    emptied: Notify,
}

struct State {
    frames: VecDeque<Bytes>,
    senders: usize,
    /// The writer is gone.
    drained: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Only queue operations run under this lock: a poisoned lock still holds a valid queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending side of a connection's queue; cheap to clone.
pub struct Outbox(Arc<Shared>);

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &self.0.state().frames.len())
            .field("capacity", &self.0.capacity)
            .finish()
    }
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.0.state().senders += 1;
        Self(Arc::clone(&self.0))
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let last = {
            let mut state = self.0.state();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.0.filled.notify_one();
        }
    }
}

impl Outbox {
    /// Queues `frame` without waiting.
    ///
    /// # Errors
    /// [`TrySendError::Full`] or [`TrySendError::Closed`], with the frame.
    pub fn try_send(&self, frame: Bytes) -> Result<(), TrySendError> {
        {
            let mut state = self.0.state();
            if state.drained {
                return Err(TrySendError::Closed(frame));
            }
            if state.frames.len() >= self.0.capacity {
                return Err(TrySendError::Full(frame));
            }
            state.frames.push_back(frame);
        }
        self.0.filled.notify_one();
        Ok(())
    }

    /// Queues `frame`, waiting for room.
    ///
    /// # Errors
    /// [`Closed`] when the writer is gone.
    ///
    /// # Cancel safety
    /// Dropping the future drops the frame, unqueued.
    pub async fn send(&self, mut frame: Bytes) -> Result<(), Closed> {
        loop {
            // Registered before trying, so room made in between is not missed.
            let emptied = self.0.emptied.notified();
            let mut emptied = std::pin::pin!(emptied);
            emptied.as_mut().enable();
            match self.try_send(frame) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(_)) => return Err(Closed),
                Err(TrySendError::Full(back)) => frame = back,
            }
            emptied.await;
        }
    }
}

/// The writer's side of a connection's queue.
pub struct Drain(Arc<Shared>);

impl fmt::Debug for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain").finish_non_exhaustive()
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.drained = true;
        // The queued frames will never be written: free them now.
        state.frames = VecDeque::new();
        drop(state);
        self.0.emptied.notify_waiters();
    }
}

impl Drain {
    /// Takes every queued frame, waiting for one if none is queued; `None` once every sender
    /// is gone and nothing is left.
    ///
    /// # Cancel safety
    /// Cancel-safe: frames are taken only when the call returns them.
    pub async fn next_batch(&mut self) -> Option<VecDeque<Bytes>> {
        loop {
            if let Some(batch) = self.try_batch() {
                return Some(batch);
            }
            if self.0.state().senders == 0 {
                return None;
            }
            self.0.filled.notified().await;
        }
    }

    /// Takes every queued frame without waiting; `None` if none is queued.
    pub fn try_batch(&mut self) -> Option<VecDeque<Bytes>> {
        let batch = {
            let mut state = self.0.state();
            if state.frames.is_empty() {
                return None;
            }
            // Taking the deque leaves an empty one that holds no memory.
            std::mem::take(&mut state.frames)
        };
        self.0.emptied.notify_waiters();
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_come_out_in_order_in_batches() {
        let (outbox, mut drain) = outbox(4);
        for n in 0..3u8 {
            outbox.try_send(Bytes::from(vec![n])).unwrap();
        }
        let batch: Vec<_> = drain.next_batch().await.unwrap().into_iter().collect();
        assert_eq!(
            batch,
            [
                Bytes::from(vec![0]),
                Bytes::from(vec![1]),
                Bytes::from(vec![2])
            ]
        );
        assert!(drain.try_batch().is_none());
    }

    #[tokio::test]
    async fn a_full_queue_hands_the_frame_back_and_send_waits_for_room() {
        let (outbox, mut drain) = outbox(1);
        outbox.try_send(Bytes::from_static(b"a")).unwrap();
        assert_eq!(
            outbox.try_send(Bytes::from_static(b"b")),
            Err(TrySendError::Full(Bytes::from_static(b"b")))
        );
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.send(Bytes::from_static(b"c")).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(drain.next_batch().await.unwrap().len(), 1);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(
            drain.next_batch().await.unwrap()[0],
            Bytes::from_static(b"c")
        );
    }

    #[tokio::test]
    async fn the_drain_ends_when_the_senders_are_gone_and_senders_fail_when_it_is() {
        let (outbox, mut drain) = outbox(2);
        let second = outbox.clone();
        second.try_send(Bytes::from_static(b"last")).unwrap();
        drop(outbox);
        drop(second);
        assert_eq!(drain.next_batch().await.unwrap().len(), 1);
        assert!(drain.next_batch().await.is_none());

        let (outbox, drain) = outbox_pair();
        drop(drain);
        assert_eq!(outbox.send(Bytes::new()).await, Err(Closed));
    }

    fn outbox_pair() -> (Outbox, Drain) {
        outbox(1)
    }
}
