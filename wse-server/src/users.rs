//! The user registry: user id → that user's open connections, oldest first, and connection id
//! → connection.
//!
//! Critical sections only touch the maps; callers close evicted connections and emit events
//! after the lock is released.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::connection::{Connection, ConnectionId};

#[derive(Debug, Default)]
pub(crate) struct Users {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    users: HashMap<Arc<str>, Vec<Connection>>,
    connections: HashMap<ConnectionId, Connection>,
}

/// What adding a connection changed.
#[derive(Debug)]
pub(crate) struct Added {
    /// The connection is its user's first: the user joined.
    pub(crate) joined: bool,
    /// Connections of the same user pushed out by the limit, oldest first; no longer listed.
    pub(crate) evicted: Vec<Connection>,
}

impl Users {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // Only map operations run under this lock: a poisoned lock still holds valid maps.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lists `connection` under its user; past `limit` connections the oldest are taken out.
    pub(crate) fn add(&self, connection: &Connection, limit: usize) -> Added {
        let mut inner = self.write();
        let Inner { users, connections } = &mut *inner;
        connections.insert(connection.id(), connection.clone());
        let devices = users.entry(Arc::clone(connection.user_arc())).or_default();
        let joined = devices.is_empty();
        devices.push(connection.clone());
        let excess = devices.len().saturating_sub(limit);
        let evicted: Vec<Connection> = devices.drain(..excess).collect();
        for old in &evicted {
            connections.remove(&old.id());
        }
        Added { joined, evicted }
    }

    /// Takes `connection` out. `None` when it was not listed (already evicted); otherwise
    /// whether it was its user's last connection (the user left).
    pub(crate) fn remove(&self, connection: &Connection) -> Option<bool> {
        let mut inner = self.write();
        inner.connections.remove(&connection.id())?;
        let devices = inner.users.get_mut(connection.user_id())?;
        devices.retain(|c| c.id() != connection.id());
        let left = devices.is_empty();
        if left {
            inner.users.remove(connection.user_id());
        }
        Some(left)
    }

    pub(crate) fn connection(&self, id: ConnectionId) -> Option<Connection> {
        self.read().connections.get(&id).cloned()
    }

    pub(crate) fn connections_of(&self, user_id: &str) -> Vec<Connection> {
        self.read().users.get(user_id).cloned().unwrap_or_default()
    }

    pub(crate) fn all(&self) -> Vec<Connection> {
        self.read().connections.values().cloned().collect()
    }

    pub(crate) fn user_ids(&self) -> Vec<Arc<str>> {
        self.read().users.keys().cloned().collect()
    }

    /// (users, connections) listed now.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let inner = self.read();
        (inner.users.len(), inner.connections.len())
    }
}
