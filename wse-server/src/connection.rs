//! The [`Connection`] handle the application holds: one device of one user, and its id.
//!
//! The task behind it (upgrade, handshake, serving, closing) is in `task.rs` and
//! `handshake.rs`; the socket itself is driven by `wse_core::transport::Link`.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use wse_core::outbox::{Close, Closer};
use wse_core::transport::SLOW_CONSUMER;
use wse_core::{CallError, CallOutcome, Context, Report, SendError, Session, close_code};

use crate::auth::ConnectionData;
use crate::events::{Event, ServerError};
use crate::presence::Profile;
use crate::server::Server;
use crate::serving::Listener;

/// The id of a server node: drawn at random when the [`Server`] is built, so that every
/// process start is a node of its own. It travels as its text (16 hex digits), which a
/// JavaScript peer reads without losing digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u64);

impl NodeId {
    /// A fresh random node id.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The node id with this number (one received from another node, say).
    pub fn from_u64(id: u64) -> Self {
        Self(id)
    }

    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The id of a connection: its node and a counter of that node, so that it stays unique
/// across the nodes of a cluster. It carries no other meaning; ids of one node grow in the
/// order their connections were accepted. It travels as its text, `c<counter>@<node>`.
///
/// ```
/// use wse_server::{ConnectionId, NodeId};
///
/// let id = ConnectionId::new(NodeId::from_u64(0xab), 7);
/// assert_eq!(id.to_string(), "c7@00000000000000ab");
/// assert_eq!("c7@00000000000000ab".parse::<ConnectionId>(), Ok(id));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    node: NodeId,
    local: u64,
}

impl ConnectionId {
    /// The id of the `local`-th connection of `node`.
    pub fn new(node: NodeId, local: u64) -> Self {
        Self { node, local }
    }

    /// The node that holds the connection.
    pub fn node(self) -> NodeId {
        self.node
    }

    /// The connection's number on its node.
    pub fn local(self) -> u64 {
        self.local
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}@{}", self.local, self.node)
    }
}

/// Text that is not a [`NodeId`] or a [`ConnectionId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a {0} id")]
pub struct ParseIdError(&'static str);

impl FromStr for NodeId {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 16 {
            return Err(ParseIdError("node"));
        }
        u64::from_str_radix(text, 16)
            .map(Self)
            .map_err(|_| ParseIdError("node"))
    }
}

impl FromStr for ConnectionId {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (local, node) = text
            .strip_prefix('c')
            .and_then(|rest| rest.split_once('@'))
            .ok_or(ParseIdError("connection"))?;
        Ok(Self {
            node: node.parse().map_err(|_| ParseIdError("connection"))?,
            local: local.parse().map_err(|_| ParseIdError("connection"))?,
        })
    }
}

/// Both ids travel as their text.
macro_rules! serde_as_text {
    ($id:ty) => {
        impl serde::Serialize for $id {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $id {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_text!(NodeId);
serde_as_text!(ConnectionId);

/// An accepted connection: one device of one user. A cheap handle.
#[derive(Clone)]
pub struct Connection(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) id: ConnectionId,
    pub(crate) user_id: Arc<str>,
    /// What identify attached ([`Decision::with_data`](crate::Decision::with_data)).
    pub(crate) data: Option<ConnectionData>,
    /// The profile identify gave, taken if this connection brings its user online; `None`
    /// for the default, which most connections have (it costs them nothing then).
    pub(crate) profile: Option<Box<Profile>>,
    pub(crate) identity: Value,
    pub(crate) meta: Value,
    pub(crate) remote_addr: SocketAddr,
    /// The name of its codec, shared with the server's list, by which a packed message's
    /// frame for it is found.
    pub(crate) codec: Arc<str>,
    pub(crate) session: Session<Connection>,
    /// Asks the connection's task to close the socket; apart from the frames, so a full
    /// queue cannot delay it.
    pub(crate) close: Closer,
    pub(crate) server: Server,
    /// The listener that accepted it (none for [`Server::serve_io`]).
    pub(crate) listener: Option<Arc<Listener>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.0.id)
            .field("user_id", &self.0.user_id)
            .field("remote_addr", &self.0.remote_addr)
            .field("protocol", &self.protocol())
            .finish_non_exhaustive()
    }
}

impl Context for Connection {
    fn times_calls(&self) -> bool {
        self.0.server.shared().config.call_latency
    }

    fn call_ended(&self, procedure: &str, outcome: CallOutcome, elapsed: Duration) {
        self.0
            .server
            .shared()
            .metrics
            .call_ended(procedure, outcome, elapsed);
    }

    fn report(&self, report: Report<'_>) {
        let server = &self.0.server;
        if server.listening() {
            server.emit(Event::from_report(self, report));
        } else {
            // Nobody listens: nothing is built, only what logs would show.
            tracing::debug!(connection = %self.0.id, ?report, "wse report");
        }
    }
}

impl Connection {
    /// This connection's id.
    pub fn id(&self) -> ConnectionId {
        self.0.id
    }

    /// The user this connection belongs to (the id identify accepted it as).
    pub fn user_id(&self) -> &str {
        &self.0.user_id
    }

    pub(crate) fn user_arc(&self) -> &Arc<str> {
        &self.0.user_id
    }

    /// The identity the client presented in `~wse:hi`.
    pub fn identity(&self) -> &Value {
        &self.0.identity
    }

    /// The meta the client sent in `~wse:hi` (`{}` when absent).
    pub fn meta(&self) -> &Value {
        &self.0.meta
    }

    /// The data identify attached with [`Decision::with_data`](crate::Decision::with_data),
    /// if it is a `T`.
    pub fn data<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.0.data.as_deref()?.downcast_ref()
    }

    /// The application state of type `T` given to
    /// [`Builder::state`](crate::Builder::state), shared by every handler.
    pub fn state<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.0.server.state()
    }

    /// The profile identify gave this connection ([`Decision::with_profile`](crate::Decision::with_profile)),
    /// which its user starts with when it is its first device; its user's current profile is
    /// [`Server::profile`].
    pub fn profile(&self) -> Option<Profile> {
        self.0.profile.as_deref().cloned()
    }

    /// The peer's socket address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.0.remote_addr
    }

    /// The name of the codec this connection speaks.
    pub fn protocol(&self) -> &str {
        self.0.session.protocol().name()
    }

    /// The server this connection belongs to.
    pub fn server(&self) -> &Server {
        &self.0.server
    }

    /// The RPC engine of this connection.
    pub(crate) fn session(&self) -> &Session<Connection> {
        &self.0.session
    }

    /// The name of this connection's codec, as the server shares it.
    pub(crate) fn codec(&self) -> &Arc<str> {
        &self.0.codec
    }

    pub(crate) fn listener(&self) -> Option<&Arc<Listener>> {
        self.0.listener.as_ref()
    }

    /// Whether the connection is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.0.close.requested().is_some() || self.0.session.is_closed()
    }

    /// Completes when the connection has ended (at once if it has): its calls to this device
    /// have failed, the procedures it was running have been cancelled (their futures
    /// dropped), and the delivery engine has taken it out of its user, its rooms and
    /// presence.
    ///
    /// ```
    /// use wse_server::{Connection, Decision, Server};
    ///
    /// let server = Server::builder(|_| async { Decision::refuse() }).build();
    /// server.on("watch", |conn: Connection, ticker: String| {
    ///     let conn = conn.clone();
    ///     tokio::spawn(async move {
    ///         // Work that lives as long as the device does.
    ///         conn.closed().await;
    ///         println!("{} stopped watching {ticker}", conn.user_id());
    ///     });
    /// }).unwrap();
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static + use<> {
        self.0.session.closed()
    }

    /// Closes the connection with code 1000 and `reason` once the answer of the procedure
    /// being served is queued, so the caller gets its answer before the close (what the
    /// built-in logout does). Outside a procedure, the same as [`Connection::close`]. Returns
    /// false if it was already closing.
    pub fn close_after_answer(&self, reason: impl Into<String>) -> bool {
        self.0.session.close_after_answer(Close::new(
            close_code::NORMAL,
            fit_close_reason(reason.into()),
        ))
    }

    /// Sends the one-way message `[kind, payload, null]` to this device.
    ///
    /// Never waits. A full outbound queue means the peer stopped reading: the connection is
    /// closed with 1013 [`SLOW_CONSUMER`] and [`SendError::Full`] returned.
    ///
    /// # Errors
    /// [`SendError`]: the connection is closed or full, the type is reserved, or the payload
    /// cannot be encoded.
    pub fn send<T: Serialize + ?Sized>(&self, kind: &str, payload: &T) -> Result<(), SendError> {
        let sent = self.0.session.send(kind, payload);
        if sent == Err(SendError::Full) {
            self.slow_consumer();
        }
        sent
    }

    pub(crate) fn slow_consumer(&self) {
        if self.close_with(SLOW_CONSUMER.0, SLOW_CONSUMER.1) {
            self.0.server.emit(Event::Error {
                connection_id: Some(self.id()),
                error: ServerError::SlowConsumer,
            });
        }
    }

    /// Calls the procedure `procedure` that this device registered, with the server's call
    /// timeout.
    ///
    /// ```
    /// use serde_json::json;
    /// use wse_server::{Connection, Decision, NoArgs, RpcError, Server};
    ///
    /// let server = Server::builder(|_| async { Decision::refuse() }).build();
    /// server.register("confirm", |conn: Connection, NoArgs| async move {
    ///     // Ask the very device that called; its refusal reaches our caller as it sent it.
    ///     let ok: bool = conn.call("ask_user", &json!({"question": "sure?"}))
    ///         .await
    ///         .map_err(RpcError::forward)?;
    ///     Ok(ok)
    /// }).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`CallError`]: `Timeout`, `Disconnected` the moment this connection closes, or the
    /// client's own error as it sent it.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the call; a late answer is dropped.
    pub fn call<R, A>(
        &self,
        procedure: &str,
        args: &A,
    ) -> impl Future<Output = Result<R, CallError>> + Send + 'static + use<R, A>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        self.0.session.call(procedure, args)
    }

    /// Like [`Connection::call`], waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Connection::call`].
    ///
    /// # Cancel safety
    /// As [`Connection::call`].
    pub fn call_with_timeout<R, A>(
        &self,
        procedure: &str,
        args: &A,
        timeout: Duration,
    ) -> impl Future<Output = Result<R, CallError>> + Send + 'static + use<R, A>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        self.0.session.call_with_timeout(procedure, args, timeout)
    }

    /// Closes the connection with code 1000 and `reason` (e.g. [`CloseReason::ByServer`](crate::CloseReason::ByServer) or an
    /// application's own reason), after the frames already queued. Returns false if it was
    /// already closing.
    pub fn close(&self, reason: impl Into<String>) -> bool {
        self.close_with(close_code::NORMAL, reason)
    }

    /// Closes the connection with `code` and `reason` (cut to the 123 bytes a close frame
    /// holds). Returns false if it was already closing.
    pub fn close_with(&self, code: u16, reason: impl Into<String>) -> bool {
        self.0
            .close
            .request(Close::new(code, fit_close_reason(reason.into())))
    }
}

/// A close frame's reason holds at most 123 bytes; cut at a character boundary.
fn fit_close_reason(mut reason: String) -> String {
    const MAX: usize = 123;
    if reason.len() > MAX {
        let cut = (0..=MAX)
            .rev()
            .find(|&i| reason.is_char_boundary(i))
            .unwrap_or(0);
        reason.truncate(cut);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_are_cut_to_what_a_close_frame_holds() {
        assert_eq!(fit_close_reason("bye".into()), "bye");
        let long = "é".repeat(100);
        let cut = fit_close_reason(long);
        assert!(cut.len() <= 123);
        assert_eq!(cut.chars().count(), 61);
    }
}
