//! What both ends do with the WebSocket itself: turn frames into messages and back, close
//! codes for broken input, the heartbeat, and the writer task (the client's only writer of
//! its socket).
//!
//! No sockets are opened here: the writer is generic over any `Sink` of tungstenite messages.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::outbox::{Close, Drain, Next};
use crate::protocol::MessageKind;

/// Close code and reason for a message over the size limit.
pub const MESSAGE_TOO_BIG: (u16, &str) = (1009, "wse.message-too-big");
/// Close code and reason for a text message that is not UTF-8.
pub const INVALID_UTF8: (u16, &str) = (1007, "wse.invalid-utf8");
/// Close code and reason for broken WebSocket framing (fragments or control frames out of
/// order, reserved bits, …).
pub const BROKEN_FRAMING: (u16, &str) = (1002, "wse.protocol-error");

/// The close frame to answer a read error with: the WebSocket close code of RFC 6455 for
/// what went wrong, or `None` when the socket is simply gone.
pub fn close_for_read_error(error: &WsError) -> Option<Close> {
    let (code, reason) = match error {
        WsError::Capacity(_) => MESSAGE_TOO_BIG,
        WsError::Utf8(_) => INVALID_UTF8,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return None,
        WsError::Protocol(_) => BROKEN_FRAMING,
        _ => return None,
    };
    Some(Close::new(code, reason))
}

/// Close code and reason for a peer that went silent past the heartbeat timeout. 1011, so
/// that a `wse` client with reconnect enabled, alive after all, comes back.
pub const HEARTBEAT_TIMEOUT: (u16, &str) = (1011, "wse.heartbeat-timeout");

/// Liveness of the peer: ping it when it has been quiet for `interval`, give it up when
/// nothing at all (data, ping, pong) came from it for `timeout`.
///
/// Pings are WebSocket control frames: browsers and every WebSocket library answer them on
/// their own, so a `wse` peer needs nothing to take part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// How long the peer may be quiet before it is pinged; also how often the check runs.
    pub interval: Duration,
    /// How long the peer may be silent before the connection is closed with
    /// [`HEARTBEAT_TIMEOUT`].
    pub timeout: Duration,
}

impl Default for Heartbeat {
    /// Pings after 25 s of quiet (under the usual 30–60 s idle timeouts of proxies), gives up
    /// after 60 s of silence.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(25),
            timeout: Duration::from_secs(60),
        }
    }
}

impl Heartbeat {
    /// Checks the settings, for the builders that take a heartbeat.
    ///
    /// # Panics
    /// If the interval is zero or longer than the timeout.
    pub fn checked(self) -> Self {
        assert!(
            !self.interval.is_zero() && self.interval <= self.timeout,
            "the heartbeat interval must be positive and within the timeout"
        );
        self
    }
}

/// What the heartbeat asks for at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pulse {
    /// The peer was heard recently: nothing to do.
    Alive,
    /// The peer has been quiet: ping it.
    Ping,
    /// The peer has been silent too long: close.
    Dead,
}

/// The heartbeat of one connection, owned by its read loop.
#[derive(Debug)]
pub struct Liveness {
    heartbeat: Heartbeat,
    /// When the peer was last known to be alive, to the precision of a tick.
    last_heard: Instant,
    /// Whether anything came since the last tick: a flag, so that hearing costs no clock
    /// read per message.
    heard_since_tick: bool,
    ticker: tokio::time::Interval,
}

impl Liveness {
    /// Starts watching a peer heard from just now.
    pub fn new(heartbeat: Heartbeat) -> Self {
        let mut ticker =
            tokio::time::interval_at(Instant::now() + heartbeat.interval, heartbeat.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            heartbeat,
            last_heard: Instant::now(),
            heard_since_tick: false,
            ticker,
        }
    }

    /// Something came from the peer.
    pub fn heard(&mut self) {
        self.heard_since_tick = true;
    }

    /// Waits for the next check and says what to do. Cancel-safe.
    pub async fn tick(&mut self) -> Pulse {
        let now = self.ticker.tick().await;
        if std::mem::take(&mut self.heard_since_tick) {
            self.last_heard = now;
        }
        let quiet = now.saturating_duration_since(self.last_heard);
        if quiet >= self.heartbeat.timeout {
            Pulse::Dead
        } else if quiet >= self.heartbeat.interval {
            Pulse::Ping
        } else {
            Pulse::Alive
        }
    }
}

/// Waits for the next heartbeat check, or forever without a heartbeat.
pub async fn pulse(liveness: &mut Option<Liveness>) -> Pulse {
    match liveness {
        Some(liveness) => liveness.tick().await,
        None => std::future::pending().await,
    }
}

/// The data of a text or binary message; `None` for control messages.
pub fn message_data(message: &Message) -> Option<(MessageKind, &[u8])> {
    match message {
        Message::Text(text) => Some((MessageKind::Text, text.as_bytes())),
        Message::Binary(data) => Some((MessageKind::Binary, data)),
        _ => None,
    }
}

/// A message of `kind` carrying an encoded frame. A text frame that is not UTF-8 (a broken
/// custom codec) is refused rather than sent.
pub fn to_message(kind: MessageKind, frame: Bytes) -> Option<Message> {
    match kind {
        MessageKind::Text => Utf8Bytes::try_from(frame).ok().map(Message::Text),
        MessageKind::Binary => Some(Message::Binary(frame)),
    }
}

/// The close frame as tungstenite sends it.
pub fn close_frame(close: &Close) -> CloseFrame {
    CloseFrame {
        code: close.code.into(),
        reason: Utf8Bytes::from(close.reason.as_str()),
    }
}

/// The writer task: drains the bounded outbound queue into the socket, feeding every frame it
/// can take at once and flushing once per batch; sends a ping when `ping` is notified; sends
/// the close frame when the queue's closer asks for one (after the frames already queued).
/// Returns when the socket is closed or fails, or when every sender of the queue is gone. The
/// client's writer; the server's connection loop reads and writes itself.
pub async fn write_loop<S>(
    mut sink: S,
    mut frames: Drain,
    ping: Arc<Notify>,
    kind: MessageKind,
) -> Result<(), S::Error>
where
    S: Sink<Message> + Unpin,
{
    // Armed once and again after each ping: a fresh `Notified` per loop would join and leave
    // the notifier's waiter list (a lock) for every batch of frames.
    let mut pinged = std::pin::pin!(ping.notified());
    let requested = loop {
        // Both arms are cancel-safe: `next` loses nothing when the other arm wins, and a
        // `Notify` keeps its permit for the next round. Writes happen in the arm bodies, never
        // in a race.
        tokio::select! {
            biased;
            next = frames.next() => match next {
                Next::Frames(batch) => {
                    for frame in batch {
                        if let Some(message) = to_message(kind, frame) {
                            sink.feed(message).await?;
                        }
                    }
                    sink.flush().await?;
                }
                Next::Close(requested) => break Some(requested),
                Next::Gone => break None,
            },
            () = &mut pinged => {
                pinged.set(ping.notified());
                sink.send(Message::Ping(Bytes::new())).await?;
            }
        }
    };
    // The frames already queued go out before the close frame.
    for frame in frames.try_batch().into_iter().flatten() {
        if let Some(message) = to_message(kind, frame) {
            sink.feed(message).await?;
        }
    }
    match requested {
        Some(requested) => {
            sink.send(Message::Close(Some(close_frame(&requested))))
                .await
        }
        None => sink.flush().await,
    }
}
