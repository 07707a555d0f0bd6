//! [`LocalDelivery`]: this node's index of users, connections and rooms, and the default
//! [`Delivery`].
//!
//! One lock guards every map, so that a membership change is one step: a room join racing a
//! disconnect never leaves a closed connection in the room, and an empty room is gone. Its
//! critical sections only touch the maps: frames are queued, connections closed and user
//! code run after it is released.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use wse_core::CloseReason;
use wse_core::outbox::{Close, Outbox, TrySendError};

use super::{
    Admission, Delivery, DeliveryError, Except, Overflow, Packed, Released, Target, UserLimit,
};
use crate::connection::{Connection, ConnectionId};

/// This node's users, connections and rooms: delivery to the connections of this node. A
/// cheap handle; clones share the index.
#[derive(Clone, Default)]
pub struct LocalDelivery {
    index: Arc<RwLock<Index>>,
}

#[derive(Default)]
struct Index {
    /// Every listed connection, with the rooms it is in.
    connections: HashMap<ConnectionId, Listed>,
    /// Each user's connections, oldest first.
    users: HashMap<Arc<str>, Vec<ConnectionId>>,
    /// Each room's connections; a room with none is not here.
    rooms: HashMap<Arc<str>, HashSet<ConnectionId>>,
}

struct Listed {
    connection: Connection,
    /// Its outbound queue and its codec's name, at hand: a send to thousands of connections
    /// touches as little of each as it can.
    outbox: Outbox,
    codec: Arc<str>,
    rooms: Vec<Arc<str>>,
}

/// What queuing a frame for one connection did.
enum Queued {
    Yes,
    /// Closed, or it speaks none of the message's codecs.
    No,
    /// Its queue is full: a slow consumer, to close once the index is released.
    Full,
}

impl Listed {
    /// Queues this connection's frame of `packed`.
    fn queue(&self, packed: &Packed) -> Queued {
        let Some(frame) = packed.frame_for(&self.codec) else {
            return Queued::No;
        };
        match self.outbox.try_send(frame.clone()) {
            Ok(()) => Queued::Yes,
            Err(TrySendError::Full(_)) => Queued::Full,
            Err(TrySendError::Closed(_)) => Queued::No,
        }
    }
}

impl fmt::Debug for LocalDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let index = self.read();
        f.debug_struct("LocalDelivery")
            .field("users", &index.users.len())
            .field("connections", &index.connections.len())
            .field("rooms", &index.rooms.len())
            .finish()
    }
}

impl Index {
    /// Takes `id` out of every map; the connection when it was listed, and whether its user
    /// has no connection left.
    fn unlist(&mut self, id: ConnectionId) -> Option<(Connection, bool)> {
        let listed = self.connections.remove(&id)?;
        for room in &listed.rooms {
            remove_member(&mut self.rooms, room, id);
        }
        let user_id = listed.connection.user_id();
        let mut left = false;
        if let Some(devices) = self.users.get_mut(user_id) {
            devices.retain(|device| *device != id);
            left = devices.is_empty();
            if left {
                self.users.remove(user_id);
            }
        }
        Some((listed.connection, left))
    }

    /// Calls `each` for every listed connection of `target` that `except` does not skip,
    /// each once; returns how many times `each` said yes.
    fn count_recipients(
        &self,
        target: &Target,
        except: Option<&Except>,
        mut each: impl FnMut(&Listed) -> bool,
    ) -> usize {
        let mut count = 0;
        let mut visit = |id: &ConnectionId, listed: &Listed| {
            let skipped = match except {
                None => false,
                Some(Except::Connection(skip)) => skip == id,
                Some(except) => except.skips(&listed.connection),
            };
            if !skipped && each(listed) {
                count += 1;
            }
        };
        let mut visit_id = |id: &ConnectionId| {
            if let Some(listed) = self.connections.get(id) {
                visit(id, listed);
            }
        };
        match target {
            Target::Connection(id) => visit_id(id),
            Target::User(user_id) => self
                .users
                .get(user_id)
                .into_iter()
                .flatten()
                .for_each(visit_id),
            Target::Room(room) => self
                .rooms
                .get(room)
                .into_iter()
                .flatten()
                .for_each(visit_id),
            Target::All => self
                .connections
                .iter()
                .for_each(|(id, listed)| visit(id, listed)),
        }
        count
    }
}

/// Takes `id` out of `room`'s members; a room left empty is gone.
fn remove_member(
    rooms: &mut HashMap<Arc<str>, HashSet<ConnectionId>>,
    room: &str,
    id: ConnectionId,
) {
    if let Some(members) = rooms.get_mut(room) {
        members.remove(&id);
        if members.is_empty() {
            rooms.remove(room);
        }
    }
}

impl LocalDelivery {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        // Only map operations run under this lock: a poisoned lock still holds valid maps.
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection `id`, if it is open on this node.
    pub fn connection(&self, id: ConnectionId) -> Option<Connection> {
        self.read()
            .connections
            .get(&id)
            .map(|listed| listed.connection.clone())
    }

    /// Every connection open on this node.
    pub fn connections(&self) -> Vec<Connection> {
        self.targeted(&Target::All, None)
    }

    /// The connections of this node that a send to `target` except `except` reaches.
    pub fn targeted(&self, target: &Target, except: Option<&Except>) -> Vec<Connection> {
        let mut recipients = Vec::new();
        self.read().count_recipients(target, except, |listed| {
            recipients.push(listed.connection.clone());
            true
        });
        recipients
    }

    /// Lists `connection` under its user within `limit`; see [`Delivery::admit`].
    pub fn admit_now(&self, connection: &Connection, limit: UserLimit) -> Admission {
        let (joined, evicted) = {
            let mut index = self.write();
            if limit.overflow == Overflow::RefuseNewest {
                // A device already closing (its peer gone, say) does not hold a place.
                let open = index
                    .users
                    .get(connection.user_id())
                    .into_iter()
                    .flatten()
                    .filter(|id| {
                        index
                            .connections
                            .get(id)
                            .is_some_and(|listed| !listed.connection.is_closed())
                    })
                    .count();
                if open >= limit.max {
                    return Admission::Refused;
                }
            }
            index.connections.insert(
                connection.id(),
                Listed {
                    connection: connection.clone(),
                    outbox: connection.session().outbox().clone(),
                    codec: Arc::clone(connection.codec()),
                    rooms: Vec::new(),
                },
            );
            let devices = index
                .users
                .entry(Arc::clone(connection.user_arc()))
                .or_default();
            let joined = devices.is_empty();
            devices.push(connection.id());
            let excess = devices.len().saturating_sub(limit.max.max(1));
            let evicted: Vec<ConnectionId> = devices.drain(..excess).collect();
            let evicted: Vec<Connection> = evicted
                .into_iter()
                .filter_map(|old| index.unlist(old).map(|(connection, _)| connection))
                .collect();
            (joined, evicted)
        };
        // Closed once the lock is released: closing only asks the connection's task.
        for old in &evicted {
            old.close(CloseReason::ClientsConcurrency);
        }
        Admission::Admitted {
            joined,
            evicted: evicted.iter().map(Connection::id).collect(),
        }
    }

    /// Takes `connection` out; see [`Delivery::release`].
    pub fn release_now(&self, connection: &Connection) -> Released {
        match self.write().unlist(connection.id()) {
            Some((_, left)) => Released { listed: true, left },
            None => Released {
                listed: false,
                left: false,
            },
        }
    }

    /// Puts `connection` in `room`; see [`Delivery::join`].
    pub fn join_now(&self, connection: ConnectionId, room: &str) -> bool {
        let mut index = self.write();
        let Index {
            connections, rooms, ..
        } = &mut *index;
        let Some(listed) = connections.get_mut(&connection) else {
            return false;
        };
        if listed.rooms.iter().any(|r| &**r == room) {
            return false;
        }
        let room: Arc<str> = Arc::from(room);
        listed.rooms.push(Arc::clone(&room));
        rooms.entry(room).or_default().insert(connection);
        true
    }

    /// Takes `connection` out of `room`; see [`Delivery::leave`].
    pub fn leave_now(&self, connection: ConnectionId, room: &str) -> bool {
        let mut index = self.write();
        let Index {
            connections, rooms, ..
        } = &mut *index;
        let Some(listed) = connections.get_mut(&connection) else {
            return false;
        };
        let Some(at) = listed.rooms.iter().position(|r| &**r == room) else {
            return false;
        };
        listed.rooms.swap_remove(at);
        remove_member(rooms, room, connection);
        true
    }

    /// Queues `packed` for the connections of this node; see [`Delivery::send`].
    pub fn send_now(&self, target: &Target, except: Option<&Except>, packed: &Packed) -> usize {
        // Queued under the read lock rather than from a snapshot of the recipients: a
        // snapshot costs two atomic operations on a line of each receiver, and here that is
        // most of the work. Queuing never waits and runs no user code; an admit or a release
        // waits for one pass at most.
        let mut slow = Vec::new();
        let queued =
            self.read()
                .count_recipients(target, except, |listed| match listed.queue(packed) {
                    Queued::Yes => true,
                    Queued::No => false,
                    Queued::Full => {
                        slow.push(listed.connection.clone());
                        false
                    }
                });
        // Closed (and reported) once the index is released.
        for connection in slow {
            connection.slow_consumer();
        }
        queued
    }

    /// Closes connections of this node; see [`Delivery::disconnect`].
    pub fn disconnect_now(&self, target: &Target, except: Option<&Except>, close: &Close) -> usize {
        self.targeted(target, except)
            .iter()
            .filter(|connection| connection.close_with(close.code, close.reason.clone()))
            .count()
    }

    /// The connections of `user_id` on this node, oldest first.
    pub fn devices_now(&self, user_id: &str) -> Vec<ConnectionId> {
        self.read().users.get(user_id).cloned().unwrap_or_default()
    }

    /// The users with a connection on this node.
    pub fn users_now(&self) -> Vec<Arc<str>> {
        self.read().users.keys().cloned().collect()
    }

    /// The connections of this node in `room`.
    pub fn members_now(&self, room: &str) -> Vec<ConnectionId> {
        self.read()
            .rooms
            .get(room)
            .map(|members| members.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The rooms `connection` is in, if it is on this node.
    pub fn rooms_of_now(&self, connection: ConnectionId) -> Vec<Arc<str>> {
        self.read()
            .connections
            .get(&connection)
            .map(|listed| listed.rooms.clone())
            .unwrap_or_default()
    }

    /// How many (users, connections) are open on this node.
    pub fn counts_now(&self) -> (usize, usize) {
        let index = self.read();
        (index.users.len(), index.connections.len())
    }

    /// How many rooms have a member on this node.
    pub fn room_count(&self) -> usize {
        self.read().rooms.len()
    }
}

#[async_trait::async_trait]
impl Delivery for LocalDelivery {
    fn send(
        &self,
        target: &Target,
        except: Option<&Except>,
        packed: &Packed,
    ) -> Result<usize, DeliveryError> {
        Ok(self.send_now(target, except, packed))
    }

    fn disconnect(
        &self,
        target: &Target,
        except: Option<&Except>,
        close: &Close,
    ) -> Result<usize, DeliveryError> {
        Ok(self.disconnect_now(target, except, close))
    }

    async fn admit(
        &self,
        connection: &Connection,
        limit: UserLimit,
    ) -> Result<Admission, DeliveryError> {
        Ok(self.admit_now(connection, limit))
    }

    async fn release(&self, connection: &Connection) -> Result<Released, DeliveryError> {
        Ok(self.release_now(connection))
    }

    async fn join(&self, connection: ConnectionId, room: &str) -> Result<bool, DeliveryError> {
        Ok(self.join_now(connection, room))
    }

    async fn leave(&self, connection: ConnectionId, room: &str) -> Result<bool, DeliveryError> {
        Ok(self.leave_now(connection, room))
    }

    async fn devices(&self, user_id: &str) -> Result<Vec<ConnectionId>, DeliveryError> {
        Ok(self.devices_now(user_id))
    }

    async fn users(&self) -> Result<Vec<Arc<str>>, DeliveryError> {
        Ok(self.users_now())
    }

    async fn members(&self, room: &str) -> Result<Vec<ConnectionId>, DeliveryError> {
        Ok(self.members_now(room))
    }

    async fn rooms_of(&self, connection: ConnectionId) -> Result<Vec<Arc<str>>, DeliveryError> {
        Ok(self.rooms_of_now(connection))
    }

    async fn counts(&self) -> Result<(usize, usize), DeliveryError> {
        Ok(self.counts_now())
    }
}
