//! What the server tells the application: users joining and leaving, devices connecting and
//! disconnecting, ignored messages and errors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use wse_core::{ErrorCode, PayloadError, ProtocolViolation, Report};

use crate::connection::{Connection, ConnectionId};

/// A server event, from [`Server::events`](crate::Server::events).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A user's first connection was accepted.
    Joined {
        /// The user.
        user_id: Arc<str>,
    },
    /// A user's last connection closed.
    Left {
        /// The user.
        user_id: Arc<str>,
    },
    /// A connection was accepted (after [`Event::Joined`] for a user's first).
    Connected {
        /// The new connection.
        connection: Connection,
    },
    /// An accepted connection closed (before [`Event::Left`] for a user's last).
    Disconnected {
        /// The connection.
        connection: Connection,
        /// The close code: ours when this side closed, the peer's otherwise, 1006 when the
        /// socket ended without a close frame.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// A connection was closed before it was accepted.
    Rejected {
        /// The peer's socket address.
        remote_addr: SocketAddr,
        /// Why.
        reason: Rejection,
    },
    /// A one-way message of a type with no handler.
    Ignored {
        /// Where it came from.
        connection: Connection,
        /// Its type.
        kind: String,
    },
    /// Something went wrong on one connection; the others are untouched.
    Error {
        /// The connection, when the error belongs to one.
        connection_id: Option<ConnectionId>,
        /// What went wrong.
        error: ServerError,
    },
}

/// Why a connection was closed before it was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The upgrade request was not one (answered with 400), or the WebSocket upgrade failed.
    Upgrade(String),
    /// The upgrade request's `Origin` (given here) is not on the allow-list
    /// ([`Builder::allow_origin`](crate::Builder::allow_origin)); answered with 403.
    OriginNotAllowed(String),
    /// The upgrade filter ([`Builder::upgrade_filter`](crate::Builder::upgrade_filter))
    /// denied the request with this HTTP status.
    Denied(u16),
    /// The client offered none of the server's codecs (closed with `wse.protocol-error`).
    NoCommonProtocol {
        /// What the client offered in `Sec-WebSocket-Protocol`, in its order.
        offered: Vec<String>,
        /// What the server speaks, in its order of preference.
        supported: Vec<String>,
    },
    /// The handshake frames broke the protocol (closed with `wse.protocol-error`).
    ProtocolError(String),
    /// Refused by the challenge or by identify (closed with `wse.not-authorized`).
    NotAuthorized,
    /// hi → welcome did not complete within the handshake timeout.
    HandshakeTimeout,
    /// The peer left during the handshake.
    Gone,
    /// The server already holds its maximum number of connections; dropped before the
    /// upgrade (answered with 503 on a mounted route).
    TooManyConnections,
    /// The client's address already holds its maximum number of connections; dropped before
    /// the upgrade (answered with 429 when the address came through a trusted proxy).
    TooManyFromAddress,
    /// The client's address failed to authenticate too often lately; dropped before the
    /// upgrade (answered with 429 when it came through a trusted proxy).
    AuthThrottled,
    /// The user already holds `conn_per_user` connections and the server refuses the newest
    /// (closed with `wse.clients-concurrency`).
    UserLimit,
    /// The delivery engine could not list the connection (closed with 1013, so that the
    /// client comes back later).
    Unavailable(String),
}

/// An error on one connection.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A frame broke the protocol; the connection was closed with `wse.protocol-error`.
    #[error(transparent)]
    ProtocolViolation(#[from] ProtocolViolation),
    /// The transport failed; the connection is gone.
    #[error("transport error: {0}")]
    Transport(String),
    /// A procedure failed unexpectedly; its caller got `wse.server.rp.failed`.
    #[error("procedure {procedure:?} failed: {error}")]
    ProcedureFailed {
        /// The procedure.
        procedure: String,
        /// What went wrong (never sent to the client).
        error: String,
    },
    /// A payload did not fit its handler's type.
    #[error("payload of {kind:?} does not fit: {error}")]
    InvalidPayload {
        /// The message type or procedure.
        kind: String,
        /// Why.
        error: PayloadError,
    },
    /// A message handler panicked.
    #[error("handler of {kind:?} panicked")]
    HandlerPanicked {
        /// The message type.
        kind: String,
    },
    /// A response matched no pending call and was dropped.
    #[error("response with unknown stamp {stamp:?} dropped")]
    UnmatchedResponse {
        /// Its stamp.
        stamp: String,
    },
    /// A call was refused: too many calls running on the connection.
    #[error("call of {procedure:?} refused: too many calls running")]
    TooManyCalls {
        /// The procedure.
        procedure: String,
    },
    /// A reply could not be queued.
    #[error("reply to call {stamp:?} dropped")]
    ReplyDropped {
        /// The call's stamp.
        stamp: String,
    },
    /// The connection's outbound queue was full: it was closed with 1013
    /// `wse.slow-consumer`.
    #[error("slow consumer: outbound queue full")]
    SlowConsumer,
    /// The connection sent past its rate limit: a call was answered with
    /// `wse.server.rate-limited`, a message dropped; one that keeps on is closed with 1008.
    #[error("rate limited: {kind:?} not processed")]
    RateLimited {
        /// The message type or procedure.
        kind: String,
    },
    /// The connection closed while a procedure was running for it: the procedure's future
    /// was dropped and the call never answered.
    #[error("call of {procedure:?} cancelled: the connection closed")]
    CallCancelled {
        /// The procedure.
        procedure: String,
    },
    /// The delivery engine failed to do something for this connection (take it out of its
    /// user after it closed, say).
    #[error(transparent)]
    Delivery(#[from] crate::DeliveryError),
    /// Anything the engine reports that has no variant of its own yet.
    #[error("{0}")]
    Other(String),
}

impl ServerError {
    /// The protocol code this error is reported under.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::ProtocolViolation(violation) => violation.code(),
            Self::Transport(_)
            | Self::SlowConsumer
            | Self::ReplyDropped { .. }
            | Self::Delivery(_)
            | Self::Other(_) => ErrorCode::ConnectionError,
            Self::ProcedureFailed { .. } | Self::HandlerPanicked { .. } => ErrorCode::RpFailed,
            Self::InvalidPayload { .. } => ErrorCode::RpInvalidPayload,
            Self::UnmatchedResponse { .. } => ErrorCode::ProtocolViolation,
            Self::TooManyCalls { .. } => ErrorCode::RpTooManyCalls,
            Self::CallCancelled { .. } => ErrorCode::RpDisconnect,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
        }
    }
}

impl Event {
    /// The event for a report of the RPC engine about `connection`.
    pub(crate) fn from_report(connection: &Connection, report: Report<'_>) -> Self {
        let error = match report {
            Report::Ignored { kind } => {
                return Self::Ignored {
                    connection: connection.clone(),
                    kind: kind.into_owned(),
                };
            }
            Report::UnmatchedResponse { stamp } => ServerError::UnmatchedResponse {
                stamp: stamp.into_owned(),
            },
            Report::ProcedureFailed { procedure, error } => ServerError::ProcedureFailed {
                procedure: procedure.into_owned(),
                error,
            },
            Report::InvalidPayload { kind, error } => ServerError::InvalidPayload {
                kind: kind.into_owned(),
                error,
            },
            Report::HandlerPanicked { kind } => ServerError::HandlerPanicked {
                kind: kind.into_owned(),
            },
            Report::TooManyCalls { procedure } => ServerError::TooManyCalls {
                procedure: procedure.into_owned(),
            },
            Report::ReplyDropped { stamp } => ServerError::ReplyDropped {
                stamp: stamp.into_owned(),
            },
            Report::Throttled { kind } => ServerError::RateLimited {
                kind: kind.into_owned(),
            },
            Report::CallCancelled { procedure } => ServerError::CallCancelled {
                procedure: procedure.into_owned(),
            },
            other => ServerError::Other(format!("{other:?}")),
        };
        Self::Error {
            connection_id: Some(connection.id()),
            error,
        }
    }
}

/// Where the server's events go: a bounded broadcast, and how many subscriptions are held, so
/// that with none the server builds no event at all (most of them a peer can cause with
/// every frame it sends).
#[derive(Debug)]
pub(crate) struct EventHub {
    /// Bounded: a subscriber that lags loses the oldest events, never slows the server.
    sender: broadcast::Sender<Event>,
    /// [`Events`] held now.
    subscribers: AtomicUsize,
}

impl EventHub {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            sender: broadcast::Sender::new(capacity),
            subscribers: AtomicUsize::new(0),
        }
    }

    /// Whether anyone holds a subscription: one atomic load, no lock.
    pub(crate) fn listening(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    /// Sends `event` to every subscription.
    pub(crate) fn send(&self, event: Event) {
        // No subscriber is fine: events are for whoever listens.
        let _ = self.sender.send(event);
    }

    pub(crate) fn subscribe(self: &Arc<Self>) -> Events {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Events {
            receiver: self.sender.subscribe(),
            hub: Arc::clone(self),
        }
    }
}

/// A subscription to a server's [`Event`]s, from [`Server::events`](crate::Server::events).
///
/// While no subscription is held, the server builds no events (it still logs errors through
/// `tracing`). A subscriber that falls more than the events capacity behind loses the oldest
/// ([`RecvError::Lagged`]).
#[derive(Debug)]
pub struct Events {
    receiver: broadcast::Receiver<Event>,
    hub: Arc<EventHub>,
}

impl Events {
    /// The next event.
    ///
    /// # Errors
    /// [`RecvError::Lagged`] with the number of events lost when this subscriber fell behind
    /// (the next call returns the oldest event still held); [`RecvError::Closed`] once the
    /// server is gone.
    ///
    /// # Cancel safety
    /// Cancel-safe: an event is taken only when the call returns it.
    pub async fn recv(&mut self) -> Result<Event, RecvError> {
        self.receiver.recv().await
    }

    /// The next event if one is waiting.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when none is waiting, and as [`Events::recv`].
    pub fn try_recv(&mut self) -> Result<Event, TryRecvError> {
        self.receiver.try_recv()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hub_listens_while_a_subscription_is_held() {
        let hub = Arc::new(EventHub::new(4));
        assert!(!hub.listening());
        let mut first = hub.subscribe();
        let second = hub.subscribe();
        assert!(hub.listening());
        drop(second);
        assert!(hub.listening());
        hub.send(Event::Left {
            user_id: Arc::from("ann"),
        });
        assert!(matches!(first.recv().await, Ok(Event::Left { .. })));
        drop(first);
        assert!(!hub.listening());
    }
}
