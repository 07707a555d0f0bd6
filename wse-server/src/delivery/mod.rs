//! The delivery seam ([`Delivery`]), what it speaks ([`Target`], [`Except`], [`Packed`], the
//! membership outcomes), and its in-memory default in `local.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use wse_core::outbox::Close;
use wse_core::{CallError, Protocol, SendError, frame};

use crate::connection::{Connection, ConnectionId};
use crate::presence::{Presence, Profile, ProfileUpdate};

mod local;

pub use local::LocalDelivery;

/// Who a send, or a disconnect, is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// One connection (one device), on whichever node holds it.
    Connection(ConnectionId),
    /// Every connection of a user.
    User(Arc<str>),
    /// Every connection in a room.
    Room(Arc<str>),
    /// Every connection of every user.
    All,
}

impl Target {
    /// Every connection of `user_id`.
    pub fn user(user_id: impl Into<Arc<str>>) -> Self {
        Self::User(user_id.into())
    }

    /// Every connection in `room`.
    pub fn room(room: impl Into<Arc<str>>) -> Self {
        Self::Room(room.into())
    }
}

impl From<ConnectionId> for Target {
    fn from(id: ConnectionId) -> Self {
        Self::Connection(id)
    }
}

/// Who a send to a [`Target`] skips.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Except {
    /// One connection: typically the sender's own, so that it does not hear its own message.
    Connection(ConnectionId),
    /// Every connection of a user: typically all of the sender's devices.
    User(Arc<str>),
}

impl Except {
    /// Whether `connection` is skipped.
    pub fn skips(&self, connection: &Connection) -> bool {
        match self {
            Self::Connection(id) => connection.id() == *id,
            Self::User(user_id) => connection.user_id() == &**user_id,
        }
    }
}

/// What happens when a user already holds `conn_per_user` connections and another one is
/// accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Overflow {
    /// The user's oldest connection is closed with 1000 `wse.clients-concurrency` and the new
    /// one stays: what `wse` does, and the default.
    #[default]
    CloseOldest,
    /// The new connection is refused with 1000 `wse.clients-concurrency`; the user's
    /// connections stay.
    RefuseNewest,
}

/// How many connections a user may hold, and what a connection past that does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserLimit {
    /// The most connections one user holds at once (at least 1).
    pub max: usize,
    /// What a connection past `max` does.
    pub overflow: Overflow,
}

/// The outcome of [`Delivery::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// The connection is listed under its user.
    Admitted {
        /// It is its user's first connection: the user joined.
        joined: bool,
        /// The user's connections closed with `wse.clients-concurrency` to make room, oldest
        /// first; no longer listed.
        evicted: Vec<ConnectionId>,
    },
    /// The user holds its limit and the policy is [`Overflow::RefuseNewest`]: nothing changed.
    Refused,
}

/// The outcome of [`Delivery::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Released {
    /// The connection was listed (it was not evicted before it ended).
    pub listed: bool,
    /// It was its user's last connection: the user left.
    pub left: bool,
}

impl Released {
    /// The outcome of a release, as another engine than [`LocalDelivery`] found it.
    pub const fn new(listed: bool, left: bool) -> Self {
        Self { listed, left }
    }
}

/// The outcome of [`Delivery::join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Joined {
    /// The connection is in the room by its own join now.
    Now,
    /// It had joined the room already.
    Already,
    /// It is already in as many rooms as the limit allows: nothing changed.
    AtLimit,
    /// It is not open: nothing changed.
    NotOpen,
}

/// A delivery operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The message cannot be sent at all: an empty or reserved type, or a payload that does not
    /// encode. Nothing was sent.
    #[error(transparent)]
    Message(#[from] SendError),
    /// The delivery engine (a backplane) cannot do it now; what it did on this node, if
    /// anything, stands. Not fatal: later operations may succeed.
    #[error("delivery unavailable: {0}")]
    Unavailable(String),
}

/// The delivery seam: every send to a connection, a user, a room or everyone, every change of
/// membership (a connection admitted under `conn_per_user` and released, a room joined and
/// left by a connection or a whole user), presence and profiles, and every question about who
/// is where goes through it.
///
/// The server encodes a message once per codec it offers ([`Packed`], keyed by codec name)
/// and hands it to its `Delivery` with a [`Target`] and an optional [`Except`]. The default,
/// [`LocalDelivery`], is this node's index of users, connections and rooms, with no
/// dependency.
///
/// ```text
/// Server::send_to_user ─► pack once per codec ─► Delivery::send(User, except, packed)
///                                                   ├─► LocalDelivery: snapshot, try_send each
///                                                   └─► (a backplane) ─► other nodes
/// ```
///
/// # Plugging in another engine
///
/// This trait is where a cluster backplane plugs in (Redis, or NATS by a user), through
/// [`Builder::delivery`](crate::Builder::delivery): hold the [`LocalDelivery`] it hands you,
/// call it for what happens on this node, and ship targets, packed frames and membership
/// changes to the other nodes, where a user's other devices live. A [`ConnectionId`] names
/// its node, so a send or a disconnect for one connection can be routed to the node that
/// holds it.
///
/// What concerns one connection through its own handle goes to its socket directly and not
/// through the seam: [`Connection::send`] and [`Connection::close`], and the answers to its
/// calls. Everything addressed by id, user, room or to everyone goes through it.
///
/// Sends and disconnects never wait: they queue frames (a backplane queues its publish in a
/// bounded buffer) and report the connections of this node that took them. Membership and
/// queries are async, for the round trip a backplane needs; a backplane that fails returns
/// [`DeliveryError::Unavailable`] rather than blocking, panicking or waiting forever.
#[async_trait::async_trait]
pub trait Delivery: Send + Sync + 'static {
    /// Starts the engine (connect, subscribe) before the first connection is served. Default:
    /// nothing to start.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when it cannot start; serving then fails to start.
    async fn start(&self) -> Result<(), DeliveryError> {
        Ok(())
    }

    /// Says goodbye (unsubscribe, tell the other nodes) after the server's connections have
    /// closed, on [`Server::shutdown`](crate::Server::shutdown). Default: nothing to do.
    async fn close(&self) {}

    /// Queues `packed` for every connection of `target` that `except` does not skip, each at
    /// most once. Returns how many connections of this node took it.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the engine cannot ship it to other nodes.
    fn send(
        &self,
        target: &Target,
        except: Option<&Except>,
        packed: &Packed,
    ) -> Result<usize, DeliveryError>;

    /// Closes every connection of `target` that `except` does not skip with `close`. Returns
    /// how many connections of this node it closed.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the engine cannot reach other nodes.
    fn disconnect(
        &self,
        target: &Target,
        except: Option<&Except>,
        close: &Close,
    ) -> Result<usize, DeliveryError>;

    /// Calls `procedure` with `args` on the device `connection`, on whichever node holds it,
    /// waiting at most `timeout`, and returns its answer: what
    /// [`Server::call`](crate::Server::call) goes through. Arguments and answers travel as
    /// JSON values, which the device's codec encodes.
    ///
    /// # Errors
    /// As [`Connection::call`]; [`CallError::Disconnected`] when the device closes, is gone,
    /// or its node dies or cannot be reached; `wse.server.client.connection-missing` when no
    /// node holds it.
    async fn call(
        &self,
        connection: ConnectionId,
        procedure: &str,
        args: &Value,
        timeout: Duration,
    ) -> Result<Value, CallError>;

    /// Lists an accepted `connection` under its user within `limit`, closing the user's
    /// oldest connections with 1000 `wse.clients-concurrency` or refusing this one, as the
    /// limit's policy says. Atomic: two connections of one user admitted at once never both
    /// stay past the limit.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`]; the server then refuses the connection with 1013.
    async fn admit(
        &self,
        connection: &Connection,
        limit: UserLimit,
    ) -> Result<Admission, DeliveryError>;

    /// Takes a connection that ended out of its user, its rooms and every index.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`]; the server reports it, and the engine must clean up by
    /// itself (a backplane notices a node that stopped renewing its connections).
    async fn release(&self, connection: &Connection) -> Result<Released, DeliveryError>;

    /// Puts `connection` in `room` by its own join, unless it is already in `limit` rooms
    /// (whichever way it joined them).
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn join(
        &self,
        connection: ConnectionId,
        room: &str,
        limit: Option<usize>,
    ) -> Result<Joined, DeliveryError>;

    /// Ends `connection`'s own membership of `room`; false when it had not joined it. It stays
    /// in the room while its user is in it. An empty room is gone.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn leave(&self, connection: ConnectionId, room: &str) -> Result<bool, DeliveryError>;

    /// Ends every own membership of `connection`; returns how many.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn leave_all(&self, connection: ConnectionId) -> Result<usize, DeliveryError>;

    /// Puts `user_id` in `room` as a whole: every device it has and every device it connects
    /// while it stays online; false when it is not online or in the room already.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn join_user(&self, user_id: &str, room: &str) -> Result<bool, DeliveryError>;

    /// Ends `user_id`'s membership of `room` (its devices' own joins stay); false when it was
    /// not in it.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn leave_user(&self, user_id: &str, room: &str) -> Result<bool, DeliveryError>;

    /// The open connections of `user_id`, oldest first.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn devices(&self, user_id: &str) -> Result<Vec<ConnectionId>, DeliveryError>;

    /// The users with at least one open connection.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn users(&self) -> Result<Vec<Arc<str>>, DeliveryError>;

    /// The connections in `room`.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn members(&self, room: &str) -> Result<Vec<ConnectionId>, DeliveryError>;

    /// The users with at least one connection in `room`, sorted.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn room_users(&self, room: &str) -> Result<Vec<Arc<str>>, DeliveryError>;

    /// The rooms `connection` is in, by its own join or its user's.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn rooms_of(&self, connection: ConnectionId) -> Result<Vec<Arc<str>>, DeliveryError>;

    /// The rooms `user_id` joined as a whole.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn user_rooms(&self, user_id: &str) -> Result<Vec<Arc<str>>, DeliveryError>;

    /// How many (users, connections) are open.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn counts(&self) -> Result<(usize, usize), DeliveryError>;

    /// What others see of `user_id` (offline when it is not available), or `None` when it is
    /// not online.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn presence(&self, user_id: &str) -> Result<Option<Presence>, DeliveryError>;

    /// `user_id`'s profile, when it is online.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn profile(&self, user_id: &str) -> Result<Option<Profile>, DeliveryError>;

    /// The online users that are available, sorted by id.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn online(&self) -> Result<Vec<Presence>, DeliveryError>;

    /// Applies `update` to `user_id`'s profile; a change that others see gets a new version
    /// and reaches the presence subscribers. `None` when the user is not online.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn update_profile(
        &self,
        user_id: &str,
        update: &ProfileUpdate,
    ) -> Result<Option<Presence>, DeliveryError>;

    /// Subscribes `connection` to presence changes (`presence` messages) and returns the
    /// online list they apply to, in one step: no change falls between the two. `None` when
    /// the connection is not open.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn subscribe_presence(
        &self,
        connection: ConnectionId,
    ) -> Result<Option<Vec<Presence>>, DeliveryError>;

    /// Ends `connection`'s presence subscription; false when it had none.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`].
    async fn unsubscribe_presence(&self, connection: ConnectionId) -> Result<bool, DeliveryError>;
}

/// One message encoded once in every codec the server offers, each frame under its codec's
/// name, so that a node that speaks the same codecs finds its frames in a message packed on
/// another.
#[derive(Debug, Clone)]
pub struct Packed {
    frames: Vec<(Arc<str>, Bytes)>,
}

impl Packed {
    /// Encodes the one-way message `[kind, payload, null]` with each codec.
    ///
    /// # Errors
    /// [`SendError::InvalidKind`] when `kind` is empty or reserved (`~wse:…`): such a frame
    /// would break the protocol for every receiver. [`SendError::Encode`] when the payload
    /// cannot be encoded.
    pub fn encode<T: serde::Serialize + ?Sized>(
        codecs: &[Arc<dyn Protocol>],
        kind: &str,
        payload: &T,
    ) -> Result<Self, SendError> {
        let names: Vec<Arc<str>> = codecs.iter().map(|c| Arc::from(c.name())).collect();
        Self::encode_named(names.iter().zip(codecs), kind, payload)
    }

    /// [`Packed::encode`] with each codec's name made already.
    pub(crate) fn encode_named<'a, T: serde::Serialize + ?Sized>(
        codecs: impl IntoIterator<Item = (&'a Arc<str>, &'a Arc<dyn Protocol>)>,
        kind: &str,
        payload: &T,
    ) -> Result<Self, SendError> {
        if kind.is_empty() || frame::is_reserved(kind) {
            return Err(SendError::InvalidKind(kind.to_owned()));
        }
        let frames = codecs
            .into_iter()
            .map(|(name, codec)| {
                let frame = codec.encode(kind, payload, None)?;
                Ok((Arc::clone(name), Bytes::from(frame)))
            })
            .collect::<Result<_, wse_core::PackError>>()
            .map_err(|e| SendError::Encode(e.0))?;
        Ok(Self { frames })
    }

    /// Frames already encoded, each under its codec's name (as another node packed them).
    pub fn from_frames(frames: impl IntoIterator<Item = (Arc<str>, Bytes)>) -> Self {
        Self {
            frames: frames.into_iter().collect(),
        }
    }

    /// The frames, each with its codec's name.
    pub fn frames(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.frames.iter().map(|(name, frame)| (&**name, frame))
    }

    /// The frame for the codec named `codec`.
    pub fn frame(&self, codec: &str) -> Option<&Bytes> {
        self.frames
            .iter()
            .find(|(name, _)| &**name == codec)
            .map(|(_, frame)| frame)
    }

    /// The frame for the codec named `codec`, found by pointer when this message was packed
    /// with the same names (on this server).
    pub(crate) fn frame_for(&self, codec: &Arc<str>) -> Option<&Bytes> {
        self.frames
            .iter()
            .find(|(name, _)| Arc::ptr_eq(name, codec))
            .or_else(|| self.frames.iter().find(|(name, _)| name == codec))
            .map(|(_, frame)| frame)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connection(id) => write!(f, "connection {id}"),
            Self::User(user_id) => write!(f, "user {user_id:?}"),
            Self::Room(room) => write!(f, "room {room:?}"),
            Self::All => f.write_str("everyone"),
        }
    }
}
