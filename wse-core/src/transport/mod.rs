//! The WebSocket under a WSE connection, the same at both ends: frames to messages and back,
//! the close codes of broken input, the heartbeat, and [`Link`], the driver of one socket.
//!
//! No sockets are opened here: the server hands [`Link`] the stream it accepted, the client the
//! one it connected.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::outbox::Close;
use crate::protocol::MessageKind;

mod heartbeat;
mod link;

pub use heartbeat::{HEARTBEAT_TIMEOUT, Heartbeat, Liveness, Pulse, pulse};
pub use link::{CloseFrames, Dispatch, Ended, Incoming, Link, WriteFailed};

/// The close reason for a peer that stopped taking our frames: its outbound queue overflowed,
/// or a write waited past the write timeout (**extension**; close code 1013, so that a client
/// with reconnect enabled comes back and resynchronises).
pub const SLOW_CONSUMER: (u16, &str) = (1013, "wse.slow-consumer");

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

/// The instant `timeout` from now, or a far one (about thirty years ahead) when adding it
/// would overflow: a timeout set to `Duration::MAX` means "no timeout", never a panic. The
/// deadlines of the handshake, the close and the writes are made here, on both ends.
pub fn deadline(timeout: Duration) -> Instant {
    /// Far enough to be never, near enough to add to any clock.
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + FAR)
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

/// The close the peer sent, as [`Close`]: 1005 (no status) when its frame had no code.
pub fn close_of(frame: Option<CloseFrame>) -> Close {
    frame.map_or_else(
        || Close::new(1005, ""),
        |frame| Close::new(frame.code.into(), frame.reason.as_str()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_saturates_rather_than_overflowing_the_clock() {
        let now = Instant::now();
        let soon = deadline(Duration::from_secs(5));
        assert!(soon >= now + Duration::from_secs(5));
        assert!(soon <= Instant::now() + Duration::from_secs(5));
        let never = deadline(Duration::MAX);
        assert!(never > now + Duration::from_secs(20 * 365 * 24 * 60 * 60));
    }
}
