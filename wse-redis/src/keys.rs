//! Every Redis key and channel name of a cluster, under its prefix. The layout is documented
//! in the crate's docs; the scripts build the same names from the prefix (scripts.rs).

use wse_server::{ConnectionId, NodeId};

/// The names of one cluster's keys and channels.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix, as the scripts take it.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Sorted set: each live node, scored by the time (ms) past which it counts as dead.
    pub(crate) fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Hash: the connections a node holds, each with its user id.
    pub(crate) fn node(&self, node: NodeId) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// Sorted set: a user's connections, scored by the order they were admitted in.
    pub(crate) fn user(&self, user_id: &str) -> String {
        format!("{}:user:{user_id}", self.prefix)
    }

    /// Hash: the connections in a room by their own join, each with its user id.
    pub(crate) fn room(&self, room: &str) -> String {
        format!("{}:room:{room}", self.prefix)
    }

    /// Set: the rooms a connection joined by its own join.
    pub(crate) fn joined(&self, connection: ConnectionId) -> String {
        format!("{}:joined:{connection}", self.prefix)
    }

    /// Set: the users in a room as a whole.
    pub(crate) fn room_users(&self, room: &str) -> String {
        format!("{}:room-users:{room}", self.prefix)
    }

    /// Set: the rooms a user joined as a whole.
    pub(crate) fn user_rooms(&self, user_id: &str) -> String {
        format!("{}:user-rooms:{user_id}", self.prefix)
    }

    /// Hash: an online user's profile (`alias`, `available`, `public`), its presence's
    /// `version`, and whether others saw it online last (`shown`).
    pub(crate) fn profile(&self, user_id: &str) -> String {
        format!("{}:profile:{user_id}", self.prefix)
    }

    /// Set: the users with at least one connection.
    pub(crate) fn users(&self) -> String {
        format!("{}:users", self.prefix)
    }

    /// Counter: the admission order.
    pub(crate) fn sequence(&self) -> String {
        format!("{}:seq", self.prefix)
    }

    /// Channel: what every node hears.
    pub(crate) fn to_all(&self) -> String {
        format!("{}:to:all", self.prefix)
    }

    /// Channel: what one node hears.
    pub(crate) fn to_node(&self, node: NodeId) -> String {
        format!("{}:to:{node}", self.prefix)
    }
}
