//! [`LocalDelivery`]: this node's index of users, connections and rooms, and the default
//! [`Delivery`].
//!
//! One lock guards every map, so that a membership change is one step: a room join racing a
//! disconnect never leaves a closed connection in the room, an empty room is gone, and a user
//! with no device left is gone with its rooms and its presence. Its critical sections only
//! touch the maps and queue frames (presence changes, which must reach each subscriber in the
//! order of their versions): connections are closed and user code runs after it is released.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde_json::Value;
use wse_core::outbox::{Close, Outbox, TrySendError};
use wse_core::{CallError, CloseReason, ErrorCode, ErrorObject, Protocol};

use super::{
    Admission, Delivery, DeliveryError, Except, Joined, Overflow, Packed, Released, Target,
    UserLimit,
};
use crate::connection::{Connection, ConnectionId, NodeId};
use crate::presence::{PRESENCE_MESSAGE, Presence, Profile, ProfileUpdate};

/// This node's users, connections and rooms: delivery to the connections of this node. A
/// cheap handle; clones share the index.
#[derive(Clone)]
pub struct LocalDelivery {
    /// The node this index is of.
    node: NodeId,
    index: Arc<RwLock<Index>>,
    /// The server's codecs, for the presence changes queued under the index's lock.
    codecs: Arc<Codecs>,
}

#[derive(Default)]
struct Index {
    /// Every listed connection, with the rooms it is in.
    connections: HashMap<ConnectionId, Listed>,
    /// Every online user: its connections, its rooms and its presence.
    users: HashMap<Arc<str>, Online>,
    /// Each room's connections, whichever way they joined; a room with none is not here.
    rooms: HashMap<Arc<str>, Members>,
    /// The connections subscribed to presence changes: apart from the rooms, which a client
    /// or the application may name as it likes.
    subscribers: Members,
    /// The last presence version given out: every change takes the next, so that versions
    /// of one user grow even across its going offline and coming back.
    version: u64,
    /// A backplane announces presence changes instead ([`LocalDelivery::hand_over_presence`]).
    presence_elsewhere: bool,
}

/// One online user.
struct Online {
    /// Its connections, oldest first.
    devices: Vec<ConnectionId>,
    version: u64,
    /// What most users do without, boxed so that they pay one pointer for it: every online
    /// user has an entry in a map, whose every slot is as large as its largest.
    more: Option<Box<More>>,
}

#[derive(Default)]
struct More {
    /// The rooms the user joined as a whole: each of its devices is in them, and each
    /// device that connects later joins them.
    rooms: Vec<Arc<str>>,
    profile: Profile,
}

impl Online {
    fn new(profile: Option<Profile>) -> Self {
        Self {
            devices: Vec::new(),
            version: 0,
            more: profile.map(|profile| {
                Box::new(More {
                    rooms: Vec::new(),
                    profile,
                })
            }),
        }
    }

    fn profile(&self) -> &Profile {
        static DEFAULT: OnceLock<Profile> = OnceLock::new();
        match &self.more {
            Some(more) => &more.profile,
            None => DEFAULT.get_or_init(Profile::default),
        }
    }

    fn rooms(&self) -> &[Arc<str>] {
        self.more.as_ref().map_or(&[], |more| &more.rooms)
    }

    fn more(&mut self) -> &mut More {
        self.more.get_or_insert_with(Box::default)
    }

    fn seen(&self, user: &Arc<str>) -> Presence {
        Presence::seen(user, self.devices.len(), self.profile(), self.version)
    }

    fn visible(&self) -> bool {
        self.profile().shows_online(self.devices.len())
    }
}

/// A room's connections, each with what a send needs of it.
type Members = HashMap<ConnectionId, Reach>;

struct Listed {
    reach: Reach,
    rooms: Vec<Membership>,
}

/// A connection, with its outbound queue and its codec's name at hand: a send to thousands of
/// connections touches as little of each as it can. The index keeps one for each connection
/// and each room one for each member, so a send to a room finds its members without a look-up
/// in the index.
#[derive(Clone)]
struct Reach {
    connection: Connection,
    outbox: Outbox,
    codec: Arc<str>,
}

/// How a connection is in a room: by its own join, through its user's, or both. It is in the
/// room's set once either way, so a send to the room reaches it once.
struct Membership {
    room: Arc<str>,
    own: bool,
    through_user: bool,
}

impl Membership {
    /// The flag of one way of membership: the connection's own join, or its user's.
    fn way(&mut self, own: bool) -> &mut bool {
        if own {
            &mut self.own
        } else {
            &mut self.through_user
        }
    }
}

/// What queuing a frame for one connection did.
enum Queued {
    Yes,
    /// Closed, or it speaks none of the message's codecs.
    No,
    /// Its queue is full: a slow consumer, to close once the index is released.
    Full,
}

impl Reach {
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

/// What a change of the index leaves to do once the lock is released: connections to close.
#[derive(Default)]
struct Aftermath {
    /// Presence subscribers whose queue was full.
    slow: Vec<Connection>,
}

impl Aftermath {
    fn finish(self) {
        for connection in self.slow {
            connection.slow_consumer();
        }
    }
}

impl Index {
    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Takes `id` out of its rooms, its user's devices and the index; its user's presence is
    /// left for [`Index::settle`].
    fn unlist(&mut self, id: ConnectionId) -> Option<Connection> {
        let listed = self.connections.remove(&id)?;
        self.subscribers.remove(&id);
        for membership in &listed.rooms {
            remove_member(&mut self.rooms, &membership.room, id);
        }
        if let Some(online) = self.users.get_mut(listed.reach.connection.user_id()) {
            online.devices.retain(|device| *device != id);
        }
        Some(listed.reach.connection)
    }

    /// Gives `user_id`'s presence a new version after its devices or profile changed (it was
    /// visible before when `was_visible`), tells the subscribers when the change is visible,
    /// and takes a user with no device left out. Returns whether the user is offline now.
    fn settle(
        &mut self,
        user_id: &str,
        was_visible: bool,
        codecs: &Codecs,
        after: &mut Aftermath,
    ) -> bool {
        let version = self.next_version();
        let Some(online) = self.users.get_mut(user_id) else {
            return true;
        };
        online.version = version;
        let gone = online.devices.is_empty();
        let Some((user, online)) = self.users.get_key_value(user_id) else {
            return true;
        };
        let seen = online.seen(user);
        if gone {
            self.users.remove(user_id);
        }
        if was_visible || seen.online {
            self.announce(&seen, codecs, after);
        }
        gone
    }

    /// Queues a presence change for every subscriber, under the lock that made it, so that
    /// each subscriber gets one user's changes in the order of their versions.
    fn announce(&self, seen: &Presence, codecs: &Codecs, after: &mut Aftermath) {
        if !self.presence_elsewhere {
            self.tell_subscribers(seen, codecs, after);
        }
    }

    /// Queues a presence change for every subscriber of this node.
    fn tell_subscribers(&self, seen: &Presence, codecs: &Codecs, after: &mut Aftermath) {
        if self.subscribers.is_empty() {
            return;
        }
        let packed = match Packed::encode_named(
            codecs.iter().map(|(n, c)| (n, c)),
            PRESENCE_MESSAGE,
            seen,
        ) {
            Ok(packed) => packed,
            Err(error) => {
                tracing::error!(%error, "a presence change does not encode");
                return;
            }
        };
        for reach in self.subscribers.values() {
            if let Queued::Full = reach.queue(&packed) {
                after.slow.push(reach.connection.clone());
            }
        }
    }

    /// Puts connection `id` in `room`, by its own join (`own`) or its user's; returns whether
    /// that way of membership is new.
    fn add_member(&mut self, id: ConnectionId, room: &Arc<str>, own: bool) -> bool {
        let Some(listed) = self.connections.get_mut(&id) else {
            return false;
        };
        let membership = match listed.rooms.iter_mut().find(|m| m.room == *room) {
            Some(membership) => membership,
            None => {
                listed.rooms.push(Membership {
                    room: Arc::clone(room),
                    own: false,
                    through_user: false,
                });
                self.rooms
                    .entry(Arc::clone(room))
                    .or_default()
                    .insert(id, listed.reach.clone());
                listed.rooms.last_mut().expect("just pushed")
            }
        };
        let way = membership.way(own);
        !std::mem::replace(way, true)
    }

    /// Ends connection `id`'s membership of `room` by its own join (`own`) or its user's; it
    /// leaves the room when no way is left. Returns whether that way of membership was there.
    fn remove_way(&mut self, id: ConnectionId, room: &str, own: bool) -> bool {
        let Some(listed) = self.connections.get_mut(&id) else {
            return false;
        };
        let Some(at) = listed.rooms.iter().position(|m| &*m.room == room) else {
            return false;
        };
        let membership = &mut listed.rooms[at];
        let way = membership.way(own);
        if !std::mem::replace(way, false) {
            return false;
        }
        if !membership.own && !membership.through_user {
            listed.rooms.swap_remove(at);
            remove_member(&mut self.rooms, room, id);
        }
        true
    }

    /// Calls `each` for every listed connection of `target` that `except` does not skip,
    /// each once; returns how many times `each` said yes.
    fn count_recipients(
        &self,
        target: &Target,
        except: Option<&Except>,
        mut each: impl FnMut(&Reach) -> bool,
    ) -> usize {
        let mut count = 0;
        let mut visit = |id: &ConnectionId, reach: &Reach| {
            let skipped = match except {
                None => false,
                Some(Except::Connection(skip)) => skip == id,
                Some(except) => except.skips(&reach.connection),
            };
            if !skipped && each(reach) {
                count += 1;
            }
        };
        let mut visit_id = |id: &ConnectionId| {
            if let Some(listed) = self.connections.get(id) {
                visit(id, &listed.reach);
            }
        };
        match target {
            Target::Connection(id) => visit_id(id),
            Target::User(user_id) => self
                .users
                .get(user_id)
                .into_iter()
                .flat_map(|online| &online.devices)
                .for_each(visit_id),
            Target::Room(room) => self
                .rooms
                .get(room)
                .into_iter()
                .flatten()
                .for_each(|(id, reach)| visit(id, reach)),
            Target::All => self
                .connections
                .iter()
                .for_each(|(id, listed)| visit(id, &listed.reach)),
        }
        count
    }
}

/// Takes `id` out of `room`'s members; a room left empty is gone.
fn remove_member(rooms: &mut HashMap<Arc<str>, Members>, room: &str, id: ConnectionId) {
    if let Some(members) = rooms.get_mut(room) {
        members.remove(&id);
        if members.is_empty() {
            rooms.remove(room);
        }
    }
}

/// The codecs presence changes are encoded with, each under its name.
type Codecs = [(Arc<str>, Arc<dyn Protocol>)];

impl LocalDelivery {
    /// An empty index of `node`, whose presence changes are encoded with `codecs`.
    pub(crate) fn new(
        node: NodeId,
        codecs: impl IntoIterator<Item = (Arc<str>, Arc<dyn Protocol>)>,
    ) -> Self {
        Self {
            node,
            index: Arc::default(),
            codecs: codecs.into_iter().collect(),
        }
    }

    /// The node whose connections this index holds: the server's
    /// [`node_id`](crate::Server::node_id), which a backplane names this node by.
    pub fn node(&self) -> NodeId {
        self.node
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
            .map(|listed| listed.reach.connection.clone())
    }

    /// Every connection open on this node.
    pub fn connections(&self) -> Vec<Connection> {
        self.targeted(&Target::All, None)
    }

    /// The connections of this node that a send to `target` except `except` reaches.
    pub fn targeted(&self, target: &Target, except: Option<&Except>) -> Vec<Connection> {
        let mut recipients = Vec::new();
        self.read().count_recipients(target, except, |reach| {
            recipients.push(reach.connection.clone());
            true
        });
        recipients
    }

    /// Lists `connection` under its user within `limit`; see [`Delivery::admit`]. A user's
    /// first connection brings the profile identify gave it ([`Decision::with_profile`](crate::Decision::with_profile)).
    pub fn admit_now(&self, connection: &Connection, limit: UserLimit) -> Admission {
        let mut after = Aftermath::default();
        let (joined, evicted) = {
            let mut index = self.write();
            let user_id = connection.user_arc();
            if limit.overflow == Overflow::RefuseNewest {
                // A device already closing (its peer gone, say) does not hold a place.
                let open = index
                    .users
                    .get(user_id)
                    .into_iter()
                    .flat_map(|online| &online.devices)
                    .filter(|id| {
                        index
                            .connections
                            .get(id)
                            .is_some_and(|listed| !listed.reach.connection.is_closed())
                    })
                    .count();
                if open >= limit.max {
                    return Admission::Refused;
                }
            }
            let id = connection.id();
            index.connections.insert(
                id,
                Listed {
                    reach: Reach {
                        connection: connection.clone(),
                        outbox: connection.session().outbox().clone(),
                        codec: Arc::clone(connection.codec()),
                    },
                    rooms: Vec::new(),
                },
            );
            let online = index
                .users
                .entry(Arc::clone(user_id))
                .or_insert_with(|| Online::new(connection.profile()));
            let joined = online.devices.is_empty();
            let was_visible = online.visible();
            online.devices.push(id);
            let excess = online.devices.len().saturating_sub(limit.max.max(1));
            let evicted: Vec<ConnectionId> = online.devices.drain(..excess).collect();
            let user_rooms = online.rooms().to_vec();
            for room in &user_rooms {
                index.add_member(id, room, false);
            }
            let evicted: Vec<Connection> = evicted
                .into_iter()
                .filter_map(|old| index.unlist(old))
                .collect();
            // One change for the user, whatever was evicted to make room.
            index.settle(user_id, was_visible, &self.codecs, &mut after);
            (joined, evicted)
        };
        after.finish();
        // Closed once the lock is released: closing only asks the connection's task.
        for old in &evicted {
            old.close(CloseReason::ClientsConcurrency);
        }
        Admission::Admitted {
            joined,
            evicted: evicted.iter().map(Connection::id).collect(),
        }
    }

    /// Takes the connection `id` out of its user, its rooms and every index, as one its user's
    /// newer connection evicted, and closes it with 1000 `wse.clients-concurrency`: for a
    /// backplane whose cluster-wide limit chose it. False when it is not listed here.
    pub fn evict_now(&self, id: ConnectionId) -> bool {
        let mut after = Aftermath::default();
        let evicted = {
            let mut index = self.write();
            let Some(listed) = index.connections.get(&id) else {
                return false;
            };
            let user_id = Arc::clone(listed.reach.connection.user_arc());
            let was_visible = index.users.get(&user_id).is_some_and(Online::visible);
            let Some(connection) = index.unlist(id) else {
                return false;
            };
            index.settle(&user_id, was_visible, &self.codecs, &mut after);
            connection
        };
        after.finish();
        evicted.close(CloseReason::ClientsConcurrency);
        true
    }

    /// Calls `procedure` on the connection `id` of this node; see [`Delivery::call`].
    ///
    /// # Errors
    /// As [`Delivery::call`]; `wse.server.client.connection-missing` when `id` is not open
    /// here.
    pub async fn call_here(
        &self,
        id: ConnectionId,
        procedure: &str,
        args: &Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let Some(connection) = self.connection(id) else {
            return Err(CallError::Remote(ErrorObject::new(
                ErrorCode::ConnectionMissing.as_str(),
            )));
        };
        connection.call_with_timeout(procedure, args, timeout).await
    }

    /// Takes `connection` out; see [`Delivery::release`].
    pub fn release_now(&self, connection: &Connection) -> Released {
        let mut after = Aftermath::default();
        let released = {
            let mut index = self.write();
            let was_visible = index
                .users
                .get(connection.user_id())
                .is_some_and(Online::visible);
            match index.unlist(connection.id()) {
                Some(_) => {
                    let left =
                        index.settle(connection.user_id(), was_visible, &self.codecs, &mut after);
                    Released { listed: true, left }
                }
                None => Released {
                    listed: false,
                    left: false,
                },
            }
        };
        after.finish();
        released
    }

    /// Puts `connection` in `room`, unless it is already in `limit` rooms; see
    /// [`Delivery::join`].
    pub fn join_now(&self, connection: ConnectionId, room: &str, limit: Option<usize>) -> Joined {
        let mut index = self.write();
        let Some(listed) = index.connections.get(&connection) else {
            return Joined::NotOpen;
        };
        if let Some(membership) = listed.rooms.iter().find(|m| &*m.room == room) {
            if membership.own {
                return Joined::Already;
            }
        } else if let Some(limit) = limit {
            if listed.rooms.len() >= limit {
                return Joined::AtLimit;
            }
        }
        index.add_member(connection, &Arc::from(room), true);
        Joined::Now
    }

    /// Ends `connection`'s own membership of `room`; see [`Delivery::leave`].
    pub fn leave_now(&self, connection: ConnectionId, room: &str) -> bool {
        self.write().remove_way(connection, room, true)
    }

    /// Ends every own membership of `connection`; see [`Delivery::leave_all`].
    pub fn leave_all_now(&self, connection: ConnectionId) -> usize {
        let mut index = self.write();
        let Some(listed) = index.connections.get(&connection) else {
            return 0;
        };
        let rooms: Vec<Arc<str>> = listed
            .rooms
            .iter()
            .filter(|m| m.own)
            .map(|m| Arc::clone(&m.room))
            .collect();
        for room in &rooms {
            index.remove_way(connection, room, true);
        }
        rooms.len()
    }

    /// Puts every device of `user_id`, and each that connects while the user stays online, in
    /// `room`; see [`Delivery::join_user`].
    pub fn join_user_now(&self, user_id: &str, room: &str) -> bool {
        let mut index = self.write();
        let Some(online) = index.users.get_mut(user_id) else {
            return false;
        };
        if online.rooms().iter().any(|r| &**r == room) {
            return false;
        }
        let room: Arc<str> = Arc::from(room);
        online.more().rooms.push(Arc::clone(&room));
        let devices = online.devices.clone();
        for device in devices {
            index.add_member(device, &room, false);
        }
        true
    }

    /// Ends `user_id`'s membership of `room`; see [`Delivery::leave_user`].
    pub fn leave_user_now(&self, user_id: &str, room: &str) -> bool {
        let mut index = self.write();
        let Some(online) = index.users.get_mut(user_id) else {
            return false;
        };
        let Some(at) = online.rooms().iter().position(|r| &**r == room) else {
            return false;
        };
        online.more().rooms.swap_remove(at);
        let devices = online.devices.clone();
        for device in devices {
            index.remove_way(device, room, false);
        }
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
                .count_recipients(target, except, |reach| match reach.queue(packed) {
                    Queued::Yes => true,
                    Queued::No => false,
                    Queued::Full => {
                        slow.push(reach.connection.clone());
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
        self.read()
            .users
            .get(user_id)
            .map(|online| online.devices.clone())
            .unwrap_or_default()
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
            .map(|members| members.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The users with a connection of this node in `room`, sorted.
    pub fn room_users_now(&self, room: &str) -> Vec<Arc<str>> {
        let index = self.read();
        let mut users: Vec<Arc<str>> = index
            .rooms
            .get(room)
            .into_iter()
            .flat_map(Members::values)
            .map(|reach| Arc::clone(reach.connection.user_arc()))
            .collect();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// The rooms `connection` is in, whichever way, if it is on this node.
    pub fn rooms_of_now(&self, connection: ConnectionId) -> Vec<Arc<str>> {
        self.read()
            .connections
            .get(&connection)
            .map(|listed| listed.rooms.iter().map(|m| Arc::clone(&m.room)).collect())
            .unwrap_or_default()
    }

    /// The rooms `user_id` joined as a whole.
    pub fn user_rooms_now(&self, user_id: &str) -> Vec<Arc<str>> {
        self.read()
            .users
            .get(user_id)
            .map(|online| online.rooms().to_vec())
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

    /// What others see of `user_id`, if it is online (shown offline when unavailable).
    pub fn presence_now(&self, user_id: &str) -> Option<Presence> {
        let index = self.read();
        let (user, online) = index.users.get_key_value(user_id)?;
        Some(online.seen(user))
    }

    /// `user_id`'s profile, if it is online.
    pub fn profile_now(&self, user_id: &str) -> Option<Profile> {
        self.read()
            .users
            .get(user_id)
            .map(|online| online.profile().clone())
    }

    /// The available online users, sorted by id.
    pub fn online_now(&self) -> Vec<Presence> {
        online_list(&self.read())
    }

    /// Changes `user_id`'s profile; see [`Delivery::update_profile`].
    pub fn update_profile_now(&self, user_id: &str, update: &ProfileUpdate) -> Option<Presence> {
        let mut after = Aftermath::default();
        let seen = {
            let mut index = self.write();
            let online = index.users.get_mut(user_id)?;
            let was_visible = online.visible();
            if online.more().profile.apply(update) {
                index.settle(user_id, was_visible, &self.codecs, &mut after);
            }
            let (user, online) = index.users.get_key_value(user_id)?;
            online.seen(user)
        };
        after.finish();
        Some(seen)
    }

    /// Subscribes `connection` to presence changes and takes the snapshot they apply to, in
    /// one step; see [`Delivery::subscribe_presence`].
    pub fn subscribe_presence_now(&self, connection: ConnectionId) -> Option<Vec<Presence>> {
        let mut index = self.write();
        let reach = index.connections.get(&connection)?.reach.clone();
        index.subscribers.insert(connection, reach);
        Some(online_list(&index))
    }

    /// Ends `connection`'s presence subscription; whether it had one.
    pub fn unsubscribe_presence_now(&self, connection: ConnectionId) -> bool {
        self.write().subscribers.remove(&connection).is_some()
    }

    /// From now on this index announces no presence change of its own: a backplane whose
    /// presence is cluster-wide announces each change, with the cluster's version, through
    /// [`LocalDelivery::announce_presence`].
    pub fn hand_over_presence(&self) {
        self.write().presence_elsewhere = true;
    }

    /// Queues `presence` as a `presence` message for every presence subscriber of this node;
    /// a subscriber whose queue is full is closed as a slow consumer.
    pub fn announce_presence(&self, presence: &Presence) {
        let mut after = Aftermath::default();
        self.read()
            .tell_subscribers(presence, &self.codecs, &mut after);
        after.finish();
    }
}

fn online_list(index: &Index) -> Vec<Presence> {
    let mut online: Vec<Presence> = index
        .users
        .iter()
        .filter(|(_, online)| online.visible())
        .map(|(user, online)| online.seen(user))
        .collect();
    online.sort_unstable_by(|a, b| a.user.cmp(&b.user));
    online
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

    async fn call(
        &self,
        connection: ConnectionId,
        procedure: &str,
        args: &Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        self.call_here(connection, procedure, args, timeout).await
    }

    async fn release(&self, connection: &Connection) -> Result<Released, DeliveryError> {
        Ok(self.release_now(connection))
    }

    async fn join(
        &self,
        connection: ConnectionId,
        room: &str,
        limit: Option<usize>,
    ) -> Result<Joined, DeliveryError> {
        Ok(self.join_now(connection, room, limit))
    }

    async fn leave(&self, connection: ConnectionId, room: &str) -> Result<bool, DeliveryError> {
        Ok(self.leave_now(connection, room))
    }

    async fn leave_all(&self, connection: ConnectionId) -> Result<usize, DeliveryError> {
        Ok(self.leave_all_now(connection))
    }

    async fn join_user(&self, user_id: &str, room: &str) -> Result<bool, DeliveryError> {
        Ok(self.join_user_now(user_id, room))
    }

    async fn leave_user(&self, user_id: &str, room: &str) -> Result<bool, DeliveryError> {
        Ok(self.leave_user_now(user_id, room))
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

    async fn room_users(&self, room: &str) -> Result<Vec<Arc<str>>, DeliveryError> {
        Ok(self.room_users_now(room))
    }

    async fn rooms_of(&self, connection: ConnectionId) -> Result<Vec<Arc<str>>, DeliveryError> {
        Ok(self.rooms_of_now(connection))
    }

    async fn user_rooms(&self, user_id: &str) -> Result<Vec<Arc<str>>, DeliveryError> {
        Ok(self.user_rooms_now(user_id))
    }

    async fn counts(&self) -> Result<(usize, usize), DeliveryError> {
        Ok(self.counts_now())
    }

    async fn presence(&self, user_id: &str) -> Result<Option<Presence>, DeliveryError> {
        Ok(self.presence_now(user_id))
    }

    async fn profile(&self, user_id: &str) -> Result<Option<Profile>, DeliveryError> {
        Ok(self.profile_now(user_id))
    }

    async fn online(&self) -> Result<Vec<Presence>, DeliveryError> {
        Ok(self.online_now())
    }

    async fn update_profile(
        &self,
        user_id: &str,
        update: &ProfileUpdate,
    ) -> Result<Option<Presence>, DeliveryError> {
        Ok(self.update_profile_now(user_id, update))
    }

    async fn subscribe_presence(
        &self,
        connection: ConnectionId,
    ) -> Result<Option<Vec<Presence>>, DeliveryError> {
        Ok(self.subscribe_presence_now(connection))
    }

    async fn unsubscribe_presence(&self, connection: ConnectionId) -> Result<bool, DeliveryError> {
        Ok(self.unsubscribe_presence_now(connection))
    }
}
