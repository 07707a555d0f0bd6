//! [`Link`]: the driver of one WebSocket, run by the server's connection task and by the
//! client alike.
//!
//! ```text
//!            ┌──────────── one task ─────────────┐
//! socket ──► │ read a batch ─► Dispatch::message │ ─► replies, sends ─► Outbox
//!            │ write what the Outbox holds       │ ◄──────────────────────┘
//! socket ◄── │   (feed each frame, flush once)   │
//!            │ heartbeat: ping, or give up       │
//!            └───────────────────────────────────┘
//! ```
//!
//! One task reads and writes the socket, unsplit, as the raw tokio-tungstenite echo does:
//! replies queued while a batch of calls is read go out in one flush right after, with no
//! hand-off to a writer task, and the connection needs no second task and no shared split
//! halves (measured: half the memory of an idle connection, and less CPU per call, than a
//! reader task beside a writer task). Everyone else (spawned procedures, sends to the user,
//! broadcasts) only queues into the [`Outbox`]. A write is bounded by the write timeout and
//! cut short by a close request, so a peer that stops reading cannot hold the loop; and while
//! a write of the serve loop waits for the peer, the loop goes on reading, so that two ends
//! writing to each other at once never wait for each other.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::heartbeat::{HEARTBEAT_TIMEOUT, Heartbeat, Liveness, Pulse, pulse};
use super::{SLOW_CONSUMER, close_for_read_error, close_frame, close_of, message_data};
use crate::outbox::{Close, Closer, Drain, Outbox, Outgoing, outbox};
use crate::protocol::MessageKind;

/// How many messages are read in a row, at most, before what is queued is written: reads come
/// first, but a peer that never pauses still gets its answers every so often.
const READS_PER_WRITE: u32 = 64;

/// One WebSocket and the bounded queue of frames waiting to be written to it.
#[derive(Debug)]
pub struct Link<S> {
    /// Not split into halves: one task owns both, and a split costs a lock per poll and a
    /// shared allocation per connection.
    ws: WebSocketStream<S>,
    /// Where everyone else queues frames for this socket.
    outbox: Outbox,
    /// The same queue as the loop takes it, with the close asked of it.
    drain: Drain,
    /// Whether frames travel as text or binary messages (the codec's kind).
    kind: MessageKind,
    /// How long a write may wait for the peer to take its next frame.
    write_timeout: Duration,
    /// The close frame the peer sent, once it sent one.
    received: Option<Close>,
}

/// What the socket produced next while the connection is not yet served (the handshake).
#[derive(Debug)]
pub enum Incoming {
    /// A text or binary message.
    Data(Message),
    /// The peer closed (see [`Link::received_close`]) or the socket ended.
    Closed,
    /// The socket failed.
    Failed(WsError),
    /// A close was asked of this link.
    Closing,
    /// The deadline passed.
    TimedOut,
}

/// A write did not complete: the socket failed, the peer did not take the bytes within the
/// write timeout, or a close was asked for while the write waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteFailed;

/// Why [`Link::serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The peer closed, the socket failed or ended, a close was asked for, or the
    /// dispatcher ended the connection: the closing handshake is worth waiting for.
    Closed,
    /// The peer went silent (the heartbeat gave it up, or a ping could not be written): it
    /// will not answer a close frame either.
    Silent,
    /// A write waited past the write timeout: the peer stopped reading. The link asked to
    /// close with 1013 [`SLOW_CONSUMER`]; no closing handshake is waited for.
    Stuck,
}

impl Ended {
    /// How long the closing handshake may take after this ending: the close timeout, or
    /// nothing for a peer that stopped answering.
    pub fn patience(self, close_timeout: Duration) -> Duration {
        match self {
            Self::Closed => close_timeout,
            Self::Silent | Self::Stuck => Duration::ZERO,
        }
    }
}

/// The close frames of a connection's end: the one this side sent and the one the peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrames {
    /// The close this side asked for, if it asked.
    pub sent: Option<Close>,
    /// The close the peer sent, if it sent one.
    pub received: Option<Close>,
}

impl CloseFrames {
    /// The close that ended the connection from this side's point of view: ours if we asked,
    /// else the peer's, else 1006 (the socket ended without a close frame).
    pub fn ours_first(&self) -> Close {
        self.sent
            .clone()
            .or_else(|| self.received.clone())
            .unwrap_or_else(abnormal)
    }

    /// The close as the peer sent it (or echoed ours), else ours, else 1006: what a `wse`
    /// client judges reconnecting by.
    pub fn theirs_first(&self) -> Close {
        self.received
            .clone()
            .or_else(|| self.sent.clone())
            .unwrap_or_else(abnormal)
    }
}

/// What ended a write of the serve loop early.
enum Interrupted {
    /// The write failed, timed out, or a close was asked for meanwhile.
    WriteFailed,
    /// What was read meanwhile ended the connection.
    Ended(Ended),
}

/// What a write that has to wait is bounded by: the write timeout without progress, and a
/// close asked for from then on.
struct Waiting<'a> {
    timer: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    /// `None` when a close was asked for before the write had to wait.
    closing: Option<Pin<Box<dyn Future<Output = Close> + Send + 'a>>>,
}

impl<'a> Waiting<'a> {
    fn new(drain: &'a Drain, timeout: Duration) -> Self {
        let already_closing = drain.close_requested().is_some();
        Self {
            timer: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            closing: (!already_closing).then(|| Box::pin(drain.closing()) as Pin<Box<_>>),
        }
    }

    /// Whether the wait is over: the timeout passed since the peer last took a frame
    /// (`progressed` says it just did), or a close was asked for.
    fn over(&mut self, progressed: bool, cx: &mut std::task::Context<'_>) -> bool {
        if progressed {
            // A large batch to a peer that reads steadily is slow, not stuck.
            let deadline = super::deadline(self.timeout);
            self.timer.as_mut().reset(deadline);
        }
        let closing = self
            .closing
            .as_mut()
            .is_some_and(|closing| closing.as_mut().poll(cx).is_ready());
        closing || self.timer.as_mut().poll(cx).is_ready()
    }
}

/// Hands what the serve loop read to `dispatch`: `Continue(true)` after a data message,
/// `Continue(false)` after a control frame, `Break` when the connection ends (the peer's close
/// frame, the socket's end or failure, or `dispatch`'s word).
fn on_read(
    read: Option<Result<Message, WsError>>,
    received: &mut Option<Close>,
    drain: &Drain,
    dispatch: &mut impl Dispatch,
    liveness: &mut Option<Liveness>,
) -> ControlFlow<Ended, bool> {
    let message = match read {
        Some(Ok(message)) => message,
        Some(Err(error)) => {
            if let Some(close) = close_for_read_error(&error) {
                drain.closer().request(close);
            }
            dispatch.read_failed(&error);
            return ControlFlow::Break(Ended::Closed);
        }
        None => return ControlFlow::Break(Ended::Closed),
    };
    if let Some(liveness) = liveness.as_mut() {
        liveness.heard();
    }
    if let Some((kind, data)) = message_data(&message) {
        if dispatch.message(kind, data).is_break() {
            return ControlFlow::Break(Ended::Closed);
        }
        return ControlFlow::Continue(true);
    }
    if let Message::Close(frame) = message {
        *received = Some(close_of(frame));
        return ControlFlow::Break(Ended::Closed);
    }
    ControlFlow::Continue(false)
}

/// Frames on their way into the socket: what the socket has not taken yet.
struct Pending<I> {
    frames: I,
    /// The message the socket had no room for at the last try.
    unsent: Option<Message>,
    /// Whether the socket took a frame since [`Pending::progressed`] was last asked.
    took: bool,
}

impl<I: Iterator<Item = Bytes>> Pending<I> {
    fn new(frames: impl IntoIterator<IntoIter = I>) -> Self {
        Self {
            frames: frames.into_iter(),
            unsent: None,
            took: false,
        }
    }

    /// Whether the socket took a frame since the last time this was asked.
    fn progressed(&mut self) -> bool {
        std::mem::take(&mut self.took)
    }

    /// Feeds the socket as much as it takes, then flushes once: ready when everything is
    /// written. Most writes are, at the first poll: then nothing else is armed.
    fn poll_written<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        kind: MessageKind,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), WsError>> {
        loop {
            let next = self.unsent.take().or_else(|| {
                self.frames
                    .by_ref()
                    .find_map(|f| super::to_message(kind, f))
            });
            let Some(message) = next else {
                return Pin::new(&mut *ws).poll_flush(cx);
            };
            match Pin::new(&mut *ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    Pin::new(&mut *ws).start_send(message)?;
                    self.took = true;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    self.unsent = Some(message);
                    return Poll::Pending;
                }
            }
        }
    }
}

fn abnormal() -> Close {
    Close::new(1006, "")
}

/// What a served connection does with what it reads: the server's rate limit and engine, the
/// client's engine.
pub trait Dispatch {
    /// One text or binary message. [`ControlFlow::Break`] ends the connection (ask for the
    /// close frame to send through [`Link::closer`] first).
    fn message(&mut self, kind: MessageKind, data: &[u8]) -> ControlFlow<()>;

    /// The socket failed while reading; the connection ends. Default: nothing to report.
    fn read_failed(&mut self, error: &WsError) {
        let _ = error;
    }

    /// A batch of `frames` queued frames, `bytes` in all, is about to be written: as many as
    /// the queue held. Default: nothing to count.
    fn writing(&mut self, frames: usize, bytes: usize) {
        let _ = (frames, bytes);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Link<S> {
    /// Drives `ws`, whose frames travel as `kind` messages, with a queue of `capacity` frames;
    /// a write may wait `write_timeout` for the peer to take its next frame.
    ///
    /// # Panics
    /// If `capacity` is zero.
    pub fn new(
        ws: WebSocketStream<S>,
        kind: MessageKind,
        capacity: usize,
        write_timeout: Duration,
    ) -> Self {
        let (outbox, drain) = outbox(capacity);
        Self {
            ws,
            outbox,
            drain,
            kind,
            write_timeout,
            received: None,
        }
    }

    /// The queue into which everyone else puts frames for this socket.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// A handle that asks this link to close, from anywhere.
    pub fn closer(&self) -> Closer {
        self.drain.closer()
    }

    /// The close frame the peer sent, if it sent one.
    pub fn received_close(&self) -> Option<&Close> {
        self.received.as_ref()
    }

    /// The next text or binary message before `deadline`; pings and pongs are answered by
    /// tungstenite and skipped. For the handshake, before the connection is served.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing but control frames is consumed.
    pub async fn next(&mut self, deadline: Instant) -> Incoming {
        loop {
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline, self.ws.next()) => read,
                _ = self.drain.closing() => return Incoming::Closing,
            };
            let message = match read {
                Err(_) => return Incoming::TimedOut,
                Ok(None) => return Incoming::Closed,
                Ok(Some(Err(error))) => {
                    self.answer_read_error(&error);
                    return Incoming::Failed(error);
                }
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(_) | Message::Binary(_) => return Incoming::Data(message),
                Message::Close(frame) => {
                    self.received = Some(close_of(frame));
                    return Incoming::Closed;
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Runs `work` (an identify step, a challenge solver) while reading the socket: messages
    /// that arrive meanwhile are ignored, as the protocol says of frames during validation.
    ///
    /// # Errors
    /// What ended the wait instead ([`Incoming::Closed`], [`Incoming::Failed`],
    /// [`Incoming::Closing`] or [`Incoming::TimedOut`]); `work` is dropped.
    ///
    /// # Cancel safety
    /// Cancel-safe as far as the socket goes; `work` is dropped with the future.
    pub async fn while_validating<T>(
        &mut self,
        work: impl Future<Output = T>,
        deadline: Instant,
    ) -> Result<T, Incoming> {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return Ok(done),
                next = self.next(deadline) => match next {
                    Incoming::Data(_) => {}
                    other => return Err(other),
                },
            }
        }
    }

    /// Writes `frames` and flushes once, within the write timeout. A close asked for while the
    /// write waits for the peer (its queue overflowed, say) ends the wait at once.
    ///
    /// # Errors
    /// [`WriteFailed`] when the write did not complete.
    ///
    /// # Cancel safety
    /// Not cancel-safe: frames fed but not flushed are lost with the future.
    pub async fn write(
        &mut self,
        frames: impl IntoIterator<Item = Bytes>,
    ) -> Result<(), WriteFailed> {
        let (ws, drain, kind, timeout) = (&mut self.ws, &self.drain, self.kind, self.write_timeout);
        let mut pending = Pending::new(frames);
        let mut waiting: Option<Waiting<'_>> = None;
        std::future::poll_fn(|cx| match pending.poll_written(ws, kind, cx) {
            Poll::Ready(written) => Poll::Ready(written.map_err(|_| WriteFailed)),
            Poll::Pending => {
                let progressed = pending.progressed();
                let waiting = waiting.get_or_insert_with(|| Waiting::new(drain, timeout));
                if waiting.over(progressed, cx) {
                    Poll::Ready(Err(WriteFailed))
                } else {
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Drops whatever is queued, unwritten (a welcome that must not go out after all, say).
    pub fn discard_queued(&mut self) {
        drop(self.drain.try_batch());
    }

    /// Writes whatever is queued, as [`Link::write`].
    ///
    /// # Errors
    /// [`WriteFailed`] when the write did not complete.
    ///
    /// # Cancel safety
    /// As [`Link::write`].
    pub async fn write_queued(&mut self) -> Result<(), WriteFailed> {
        match self.drain.try_batch() {
            Some(batch) => self.write(batch).await,
            None => Ok(()),
        }
    }

    /// Sends a control frame (a ping, a close), within the write timeout.
    async fn send_control(&mut self, message: Message) -> Result<(), WriteFailed> {
        match tokio::time::timeout(self.write_timeout, self.ws.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(WriteFailed),
        }
    }

    fn answer_read_error(&mut self, error: &WsError) {
        if let Some(close) = close_for_read_error(error) {
            self.drain.closer().request(close);
        }
    }

    /// Serves the connection: reads and hands every message to `dispatch`, writes what is
    /// queued, pings a quiet peer and gives a silent one up, until the peer closes, the socket
    /// fails, a close is asked for, or `dispatch` ends it. The closing handshake is
    /// [`Link::finish`]'s.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a write in progress is lost with the future.
    pub async fn serve(
        &mut self,
        dispatch: &mut impl Dispatch,
        heartbeat: Option<Heartbeat>,
    ) -> Ended {
        // The writes below are boxed: they live only while a write waits, and inline they would
        // add half a KiB to every idle connection's task.
        let mut liveness = heartbeat.map(Liveness::new);
        let mut reads_since_write = 0;
        loop {
            // All arms are cancel-safe: `next` on the stream and on the queue, and the ticker,
            // lose nothing when another arm wins. Writes happen in arm bodies, never in a race.
            tokio::select! {
                biased;
                read = self.ws.next() => {
                    let handled =
                        on_read(read, &mut self.received, &self.drain, dispatch, &mut liveness);
                    match handled {
                        ControlFlow::Break(ended) => return ended,
                        ControlFlow::Continue(false) => {}
                        ControlFlow::Continue(true) => {
                            reads_since_write += 1;
                            if reads_since_write >= READS_PER_WRITE {
                                reads_since_write = 0;
                                if let Some(batch) = self.drain.try_batch() {
                                    let written =
                                        Box::pin(self.write_reading(batch, dispatch, &mut liveness));
                                    if let Err(interrupted) = written.await {
                                        return self.interrupted(interrupted);
                                    }
                                }
                            }
                        }
                    }
                }
                queued = self.drain.next() => match queued {
                    Outgoing::Frames(batch) => {
                        reads_since_write = 0;
                        let written = Box::pin(self.write_reading(batch, dispatch, &mut liveness));
                        if let Err(interrupted) = written.await {
                            return self.interrupted(interrupted);
                        }
                    }
                    // The close frame goes out after what is queued, in `finish`.
                    Outgoing::Close(_) | Outgoing::Gone => return Ended::Closed,
                },
                beat = pulse(&mut liveness) => match beat {
                    Pulse::Alive => {}
                    Pulse::Ping => {
                        let ping = self.send_control(Message::Ping(Bytes::new()));
                        if Box::pin(ping).await.is_err() {
                            return Ended::Silent;
                        }
                    }
                    Pulse::Dead => {
                        self.drain
                            .closer()
                            .request(Close::new(HEARTBEAT_TIMEOUT.0, HEARTBEAT_TIMEOUT.1));
                        return Ended::Silent;
                    }
                },
            }
        }
    }

    /// A write did not complete: unless a close was asked for meanwhile (which cut it short),
    /// the peer stopped reading.
    fn stuck(&self) -> Ended {
        let slow = Close::new(SLOW_CONSUMER.0, SLOW_CONSUMER.1);
        if self.drain.closer().request(slow) {
            Ended::Stuck
        } else {
            Ended::Silent
        }
    }

    /// What ended a write of the serve loop early.
    fn interrupted(&self, interrupted: Interrupted) -> Ended {
        match interrupted {
            Interrupted::WriteFailed => self.stuck(),
            Interrupted::Ended(ended) => ended,
        }
    }

    /// Writes `frames` and flushes once, within the write timeout, and cut short by a close
    /// asked for meanwhile, as [`Link::write`]; but while the peer makes the write wait, it
    /// goes on reading and hands what comes to `dispatch`. A peer that is itself waiting to
    /// write to us can then go on, where two ends that only wrote would wait for each other
    /// until one gave the other up.
    async fn write_reading(
        &mut self,
        frames: VecDeque<Bytes>,
        dispatch: &mut impl Dispatch,
        liveness: &mut Option<Liveness>,
    ) -> Result<(), Interrupted> {
        dispatch.writing(frames.len(), frames.iter().map(Bytes::len).sum());
        let Self {
            ws,
            drain,
            kind,
            write_timeout,
            received,
            ..
        } = self;
        let mut pending = Pending::new(frames);
        let mut waiting: Option<Waiting<'_>> = None;
        std::future::poll_fn(|cx| {
            loop {
                match pending.poll_written(ws, *kind, cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(Interrupted::WriteFailed)),
                    Poll::Pending => {}
                }
                // The peer makes us wait: read what it sends meanwhile.
                if let Poll::Ready(read) = Pin::new(&mut *ws).poll_next(cx) {
                    match on_read(read, received, drain, dispatch, liveness) {
                        ControlFlow::Break(ended) => {
                            return Poll::Ready(Err(Interrupted::Ended(ended)));
                        }
                        ControlFlow::Continue(_) => continue,
                    }
                }
                let progressed = pending.progressed();
                let waiting = waiting.get_or_insert_with(|| Waiting::new(drain, *write_timeout));
                if waiting.over(progressed, cx) {
                    return Poll::Ready(Err(Interrupted::WriteFailed));
                }
                return Poll::Pending;
            }
        })
        .await
    }

    /// The closing handshake, within `patience`: sends what is queued and our close frame, if
    /// we asked for one, then reads until the socket ends (tungstenite answers the peer's
    /// close frame on its own, and the peer's answer to ours arrives here).
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropping it drops the socket without the rest of the handshake.
    pub async fn finish(&mut self, patience: Duration) -> CloseFrames {
        let deadline = super::deadline(patience);
        let sent = self.drain.close_requested();
        if let Some(close) = &sent {
            let goodbye = async {
                let _ = self.write_queued().await;
                let _ = self
                    .send_control(Message::Close(Some(close_frame(close))))
                    .await;
            };
            let _ = tokio::time::timeout_at(deadline, goodbye).await;
        }
        // The deadline is checked before each read: `timeout_at` returns a ready message even
        // past its deadline, and a peer that keeps sending would keep this loop going.
        while Instant::now() < deadline {
            let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, self.ws.next()).await
            else {
                break;
            };
            if let Message::Close(frame) = message {
                self.received.get_or_insert(close_of(frame));
            }
        }
        CloseFrames {
            sent,
            received: self.received.take(),
        }
    }
}
