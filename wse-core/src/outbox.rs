//! A connection's outbound queue: bounded, and holding no memory while empty; and the close
//! its writer is asked to end with.
//!
//! Everyone who sends to a connection holds an [`Outbox`]; its writer holds the [`Drain`] and
//! takes every queued frame at once. Unlike a channel that allocates its first block of slots
//! up front, the queue allocates when frames come and gives the memory back once they are
//! written, so the thousands of idle connections of a server cost nothing here.
//!
//! A close is asked for through a [`Closer`], apart from the frames so that a full queue
//! cannot delay it, and it wakes the writer the same way frames do: the writer waits on one
//! thing, not two (every connection has one of these, so it is kept small).

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

/// A close frame to send: code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The close code (1000 for every WSE reason).
    pub code: u16,
    /// The reason, e.g. `wse.by-server`.
    pub reason: String,
}

impl Close {
    /// A close frame with `code` and `reason`.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.code, self.reason)
    }
}

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
            close: None,
            waiting_for_room: 0,
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
    /// Wakes the writer: frames were queued, a close was asked for, or the last sender left.
    filled: Notify,
    /// Wakes senders waiting for room: the writer took the queue, or left.
    emptied: Notify,
}

struct State {
    frames: VecDeque<Bytes>,
    senders: usize,
    /// The writer is gone.
    drained: bool,
    /// The close the writer is asked to end with; the first request wins.
    close: Option<Close>,
    /// Senders waiting for room: only then does taking frames wake anyone.
    waiting_for_room: usize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Only queue operations run under this lock: a poisoned lock still holds a valid queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close_requested(&self) -> Option<Close> {
        self.state().close.clone()
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
        self.push(frame, false)
    }

    /// Queues `frame` if there is room; when there is none and `wait` is set, counts the
    /// caller among those waiting for room (see [`Drain::next`]).
    fn push(&self, frame: Bytes, wait: bool) -> Result<(), TrySendError> {
        let was_empty = {
            let mut state = self.0.state();
            if state.drained {
                return Err(TrySendError::Closed(frame));
            }
            if state.frames.len() >= self.0.capacity {
                state.waiting_for_room += usize::from(wait);
                return Err(TrySendError::Full(frame));
            }
            let was_empty = state.frames.is_empty();
            state.frames.push_back(frame);
            was_empty
        };
        // Only the first frame of a batch wakes the writer: it takes the rest with it.
        if was_empty {
            self.0.filled.notify_one();
        }
        Ok(())
    }

    /// A handle that asks the writer to close, without counting as a sender.
    pub fn closer(&self) -> Closer {
        Closer(Arc::clone(&self.0))
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
            match self.push(frame, true) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(_)) => return Err(Closed),
                Err(TrySendError::Full(back)) => frame = back,
            }
            // Counted as waiting until this wait ends, however it ends.
            let _waiting = Waiting(&self.0);
            emptied.await;
        }
    }
}

/// One sender waiting for room, counted until it stops waiting.
struct Waiting<'a>(&'a Shared);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.waiting_for_room = state.waiting_for_room.saturating_sub(1);
    }
}

/// Asks a connection's writer to close its socket. The first request wins. Holding one does
/// not keep the queue open: it is not a sender.
#[derive(Clone)]
pub struct Closer(Arc<Shared>);

impl fmt::Debug for Closer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Closer")
            .field("requested", &self.requested())
            .finish()
    }
}

impl Closer {
    /// Asks for `close`; returns false when a close was already asked for.
    pub fn request(&self, close: Close) -> bool {
        {
            let mut state = self.0.state();
            if state.close.is_some() {
                return false;
            }
            state.close = Some(close);
        }
        self.0.filled.notify_one();
        true
    }

    /// The close asked for so far, if any.
    pub fn requested(&self) -> Option<Close> {
        self.0.close_requested()
    }

    /// Whether `other` closes the same connection.
    pub fn same_as(&self, other: &Closer) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// What the writer has to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// Write these frames, in order.
    Frames(VecDeque<Bytes>),
    /// Close with this (frames still queued go out before the close frame).
    Close(Close),
    /// Every sender is gone and nothing is queued: the connection is over.
    Gone,
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
    /// Waits for something to do: a close asked for comes first, then every queued frame at
    /// once; [`Outgoing::Gone`] once every sender is gone and nothing is left.
    ///
    /// # Cancel safety
    /// Cancel-safe: frames are taken only when the call returns them.
    pub async fn next(&mut self) -> Outgoing {
        loop {
            {
                let mut state = self.0.state();
                if let Some(close) = &state.close {
                    return Outgoing::Close(close.clone());
                }
                if !state.frames.is_empty() {
                    let batch = std::mem::take(&mut state.frames);
                    let someone_waits = state.waiting_for_room > 0;
                    drop(state);
                    if someone_waits {
                        self.0.emptied.notify_waiters();
                    }
                    return Outgoing::Frames(batch);
                }
                if state.senders == 0 {
                    return Outgoing::Gone;
                }
            }
            // A wake-up between the look and this wait is kept as the notifier's permit.
            self.0.filled.notified().await;
        }
    }

    /// Waits until a close is asked for (at once if one was): what cuts short a write that
    /// waits for the peer. Frames queued meanwhile wake it too; it looks and waits again, and
    /// [`Drain::next`] still finds them. Only one of the two may wait at a time.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads the request.
    pub async fn closing(&self) -> Close {
        loop {
            if let Some(close) = self.0.close_requested() {
                return close;
            }
            self.0.filled.notified().await;
        }
    }

    /// The close asked for so far, if any.
    pub fn close_requested(&self) -> Option<Close> {
        self.0.close_requested()
    }

    /// A handle that asks this writer to close.
    pub fn closer(&self) -> Closer {
        Closer(Arc::clone(&self.0))
    }

    /// Takes every queued frame without waiting; `None` if none is queued.
    pub fn try_batch(&mut self) -> Option<VecDeque<Bytes>> {
        let (batch, someone_waits) = {
            let mut state = self.0.state();
            if state.frames.is_empty() {
                return None;
            }
            // Taking the deque leaves an empty one that holds no memory.
            (
                std::mem::take(&mut state.frames),
                state.waiting_for_room > 0,
            )
        };
        if someone_waits {
            self.0.emptied.notify_waiters();
        }
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
        let Outgoing::Frames(batch) = drain.next().await else {
            panic!("frames were queued")
        };
        let batch: Vec<_> = batch.into_iter().collect();
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
        assert_eq!(frames(drain.next().await).len(), 1);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(frames(drain.next().await)[0], Bytes::from_static(b"c"));
    }

    #[tokio::test]
    async fn the_drain_ends_when_the_senders_are_gone_and_senders_fail_when_it_is() {
        let (outbox, mut drain) = outbox(2);
        let second = outbox.clone();
        second.try_send(Bytes::from_static(b"last")).unwrap();
        drop(outbox);
        drop(second);
        assert_eq!(frames(drain.next().await).len(), 1);
        assert_eq!(drain.next().await, Outgoing::Gone);

        let (outbox, drain) = outbox_pair();
        drop(drain);
        assert_eq!(outbox.send(Bytes::new()).await, Err(Closed));
    }

    #[tokio::test]
    async fn a_close_wakes_the_writer_comes_first_and_the_first_request_wins() {
        let (outbox, mut drain) = outbox(4);
        let closer = outbox.closer();
        let writer = tokio::spawn(async move {
            let next = drain.next().await;
            (next, drain)
        });
        tokio::task::yield_now().await;
        outbox.try_send(Bytes::from_static(b"queued")).unwrap();
        let (next, mut drain) = writer.await.unwrap();
        assert_eq!(frames(next).len(), 1);

        outbox
            .try_send(Bytes::from_static(b"before the close"))
            .unwrap();
        assert!(closer.request(Close::new(1000, "first")));
        assert!(!closer.request(Close::new(1001, "second")));
        assert_eq!(
            drain.next().await,
            Outgoing::Close(Close::new(1000, "first"))
        );
        assert_eq!(drain.closing().await, Close::new(1000, "first"));
        assert_eq!(drain.try_batch().map(|batch| batch.len()), Some(1));
    }

    #[tokio::test]
    async fn a_closer_is_not_a_sender() {
        let (outbox, mut drain) = outbox(1);
        let closer = outbox.closer();
        drop(outbox);
        assert_eq!(drain.next().await, Outgoing::Gone);
        assert_eq!(closer.requested(), None);
    }

    fn frames(next: Outgoing) -> VecDeque<Bytes> {
        match next {
            Outgoing::Frames(frames) => frames,
            other => panic!("expected frames, got {other:?}"),
        }
    }

    fn outbox_pair() -> (Outbox, Drain) {
        outbox(1)
    }
}
