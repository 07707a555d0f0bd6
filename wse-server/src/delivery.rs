//! The delivery seam: sending one encoded frame to a connection, to every device of a user, or
//! to everyone.
//!
//! The server encodes a message once per codec it offers ([`Packed`]) and hands it to its
//! [`Delivery`]. The default, [`LocalDelivery`], reaches the connections of this node. A
//! cluster backplane implements the same trait by wrapping a `LocalDelivery` and shipping the
//! already-encoded frames to other nodes, where a user's other devices may live.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use wse_core::{Protocol, SendError, frame};

use crate::connection::{Connection, ConnectionId};
use crate::users::Users;

/// One message encoded in every codec the server offers, indexed like the server's codec list.
#[derive(Debug, Clone)]
pub struct Packed {
    frames: Vec<Bytes>,
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
        if kind.is_empty() || frame::is_reserved(kind) {
            return Err(SendError::InvalidKind(kind.to_owned()));
        }
        let frames = codecs
            .iter()
            .map(|codec| codec.encode(kind, payload, None).map(Bytes::from))
            .collect::<Result<_, _>>()
            .map_err(|e| SendError::Encode(e.0))?;
        Ok(Self { frames })
    }

    /// The frames, one per codec, in the server's codec order.
    pub fn frames(&self) -> &[Bytes] {
        &self.frames
    }

    /// The frame for the codec at `index`.
    pub fn frame(&self, index: usize) -> Option<&Bytes> {
        self.frames.get(index)
    }
}

/// Where sends to connections, users and everyone go.
///
/// Methods are synchronous and must not block: they queue frames (`try_send`) and return how
/// many connections took the frame on this node.
pub trait Delivery: Send + Sync + 'static {
    /// Sends to one connection; `false` if it is unknown or closed.
    fn to_connection(&self, id: ConnectionId, packed: &Packed) -> bool;
    /// Sends to every connection of `user_id`.
    fn to_user(&self, user_id: &str, packed: &Packed) -> usize;
    /// Sends to every connection of every user.
    fn to_all(&self, packed: &Packed) -> usize;
}

/// Delivery to the connections of this node.
#[derive(Clone)]
pub struct LocalDelivery {
    users: Arc<Users>,
}

impl fmt::Debug for LocalDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (users, connections) = self.users.counts();
        f.debug_struct("LocalDelivery")
            .field("users", &users)
            .field("connections", &connections)
            .finish()
    }
}

impl LocalDelivery {
    pub(crate) fn new(users: Arc<Users>) -> Self {
        Self { users }
    }

    fn deliver(connections: &[Connection], packed: &Packed) -> usize {
        connections.iter().filter(|c| c.send_packed(packed)).count()
    }
}

impl Delivery for LocalDelivery {
    fn to_connection(&self, id: ConnectionId, packed: &Packed) -> bool {
        self.users
            .connection(id)
            .is_some_and(|connection| connection.send_packed(packed))
    }

    fn to_user(&self, user_id: &str, packed: &Packed) -> usize {
        Self::deliver(&self.users.connections_of(user_id), packed)
    }

    fn to_all(&self, packed: &Packed) -> usize {
        Self::deliver(&self.users.all(), packed)
    }
}
