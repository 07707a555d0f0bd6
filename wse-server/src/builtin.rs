//! The built-in procedures an application switches on with its [`Builder`](crate::Builder):
//! rooms a client joins and leaves ([`RoomProcedures`]), presence ([`PresenceProcedures`]),
//! private messages ([`DirectMessages`]) and logout ([`Logout`]). They are ordinary procedures
//! under names the application may choose, so a plain `wse` client calls them like any other.

use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wse_core::{CloseReason, ErrorCode, NoArgs, RegisterError, RpcError};

use crate::auth::BoxFuture;
use crate::connection::Connection;
use crate::delivery::{DeliveryError, Joined, Target};
use crate::presence::Presence;
use crate::server::Server;

/// What a client asks of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RoomAction {
    /// To join it.
    Join,
    /// To leave it.
    Leave,
}

type Authorize = Arc<dyn Fn(Connection, String, RoomAction) -> BoxFuture<bool> + Send + Sync>;

/// The room procedures: `rooms.join {room}` → whether the connection joined it now (false when
/// it had already), `rooms.leave {room}` → whether it had joined it, `rooms.mine {}` → the
/// rooms it is in, sorted.
///
/// Every join and leave is put to the authorization hook first; without one, each is refused
/// with `wse.server.room.forbidden`, as is any room name starting with `~wse:`. A join past
/// the per-connection room limit gets `wse.server.room.limit`.
///
/// ```
/// use serde_json::json;
/// use wse_server::{Decision, RoomProcedures, Server};
///
/// let server = Server::builder(|_| async { Decision::accept("ann", json!({})) })
///     .room_procedures(RoomProcedures::new().authorize(|_conn, room, _action| async move {
///         room.starts_with("public-")
///     }))
///     .build();
/// ```
#[derive(Clone)]
#[must_use]
pub struct RoomProcedures {
    join: String,
    leave: String,
    mine: String,
    max_per_connection: usize,
    max_name_len: usize,
    authorize: Option<Authorize>,
}

impl std::fmt::Debug for RoomProcedures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomProcedures")
            .field("join", &self.join)
            .field("leave", &self.leave)
            .field("mine", &self.mine)
            .field("max_per_connection", &self.max_per_connection)
            .field("max_name_len", &self.max_name_len)
            .field("authorize", &self.authorize.is_some())
            .finish()
    }
}

impl Default for RoomProcedures {
    fn default() -> Self {
        Self {
            join: "rooms.join".into(),
            leave: "rooms.leave".into(),
            mine: "rooms.mine".into(),
            max_per_connection: 100,
            max_name_len: 128,
            authorize: None,
        }
    }
}

impl RoomProcedures {
    /// The room procedures under their default names, refusing every request until
    /// [`RoomProcedures::authorize`] is given, with a limit of 100 rooms per connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides whether `connection` may join or leave `room`: true lets it.
    pub fn authorize<F, Fut>(mut self, authorize: F) -> Self
    where
        F: Fn(Connection, String, RoomAction) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.authorize = Some(Arc::new(move |connection, room, action| {
            Box::pin(authorize(connection, room, action))
        }));
        self
    }

    /// The procedures' names (default `rooms.join`, `rooms.leave`, `rooms.mine`).
    pub fn names(
        mut self,
        join: impl Into<String>,
        leave: impl Into<String>,
        mine: impl Into<String>,
    ) -> Self {
        self.join = join.into();
        self.leave = leave.into();
        self.mine = mine.into();
        self
    }

    /// The longest room name a client may ask for, in bytes; a longer one is
    /// `wse.server.rp.invalid-payload`. Default: 128.
    pub fn max_name_len(mut self, bytes: usize) -> Self {
        self.max_name_len = bytes;
        self
    }

    /// How many rooms one connection may be in when it asks to join another (whichever way
    /// it joined them; the server's own [`Server::join`] is not limited). Default: 100.
    pub fn max_per_connection(mut self, max: usize) -> Self {
        self.max_per_connection = max;
        self
    }
}

/// The presence procedures: `presence.subscribe {}` subscribes the connection to `presence`
/// messages and returns the online list they apply to (no change falls between the two),
/// `presence.unsubscribe {}` ends it (whether it was subscribed), `presence.online {}` returns
/// the online list: every available online user as `{"user", "online", "devices", "alias",
/// "version"}`, sorted by user.
///
/// A change is queued for every subscriber in the same step that makes it, under the index's
/// lock, so that each subscriber gets one user's changes in the order of their versions: a
/// change costs one encoding per codec and one queue push per subscriber. A subscriber whose
/// queue is full is closed as a slow consumer (1013 `wse.slow-consumer`), like any receiver
/// that stops reading; one that reconnects subscribes again and gets a fresh snapshot.
#[derive(Debug, Clone)]
#[must_use]
pub struct PresenceProcedures {
    subscribe: String,
    unsubscribe: String,
    online: String,
}

impl Default for PresenceProcedures {
    fn default() -> Self {
        Self {
            subscribe: "presence.subscribe".into(),
            unsubscribe: "presence.unsubscribe".into(),
            online: "presence.online".into(),
        }
    }
}

impl PresenceProcedures {
    /// The presence procedures under their default names.
    pub fn new() -> Self {
        Self::default()
    }

    /// The procedures' names (default `presence.subscribe`, `presence.unsubscribe`,
    /// `presence.online`).
    pub fn names(
        mut self,
        subscribe: impl Into<String>,
        unsubscribe: impl Into<String>,
        online: impl Into<String>,
    ) -> Self {
        self.subscribe = subscribe.into();
        self.unsubscribe = unsubscribe.into();
        self.online = online.into();
        self
    }
}

/// A private message a client asked to send, as the filter sees it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct DirectMessage {
    /// The receiving user.
    pub to: String,
    /// What to deliver.
    #[serde(default)]
    pub payload: Value,
}

type Filter =
    Arc<dyn Fn(Connection, DirectMessage) -> BoxFuture<Result<(), RpcError>> + Send + Sync>;

/// The private-message procedure `dm.send {to, payload}`: delivers `["dm", {"from": <sender
/// user>, "payload": ...}, null]` to every device of `to` and returns true, or returns false
/// when `to` is offline or either side is unavailable. A filter may refuse a message first
/// with its own error.
///
/// Delivered means handed to the delivery engine for a receiver that presence shows online;
/// like every send, it is at most once: a device whose queue is full is closed as a slow
/// consumer rather than waited for.
///
/// ```
/// use serde_json::json;
/// use wse_server::{Decision, DirectMessages, RpcError, Server};
///
/// let server = Server::builder(|_| async { Decision::accept("ann", json!({})) })
///     .direct_messages(DirectMessages::new().filter(|_sender, message| async move {
///         if message.payload == "spam" {
///             return Err(RpcError::new("app.dm-refused"));
///         }
///         Ok(())
///     }))
///     .build();
/// ```
#[derive(Clone)]
#[must_use]
pub struct DirectMessages {
    name: String,
    copy_to_sender: bool,
    filter: Option<Filter>,
}

impl std::fmt::Debug for DirectMessages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectMessages")
            .field("name", &self.name)
            .field("copy_to_sender", &self.copy_to_sender)
            .field("filter", &self.filter.is_some())
            .finish()
    }
}

impl Default for DirectMessages {
    fn default() -> Self {
        Self {
            name: "dm.send".into(),
            copy_to_sender: false,
            filter: None,
        }
    }
}

/// The message type private messages are delivered under.
pub const DM_MESSAGE: &str = "dm";

impl DirectMessages {
    /// Private messages under the default name, every message let through, no copy to the
    /// sender's other devices.
    pub fn new() -> Self {
        Self::default()
    }

    /// The procedure's name (default `dm.send`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Whether the sender's other devices get a copy (default: no).
    pub fn copy_to_sender(mut self, copy: bool) -> Self {
        self.copy_to_sender = copy;
        self
    }

    /// Sees each message with its sender before it is delivered; an error refuses it and is
    /// the caller's answer.
    pub fn filter<F, Fut>(mut self, filter: F) -> Self
    where
        F: Fn(Connection, DirectMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        self.filter = Some(Arc::new(move |sender, message| {
            Box::pin(filter(sender, message))
        }));
        self
    }
}

type OnLogout = Arc<dyn Fn(Connection, bool) -> BoxFuture<()> + Send + Sync>;

/// The logout procedure `logout {all}`: runs the on-logout hook, answers true, then closes
/// this device, or every device of its user when `all` is true, with 1000 `wse.logout` (after
/// which clients do not reconnect).
#[derive(Clone)]
#[must_use]
pub struct Logout {
    name: String,
    on_logout: Option<OnLogout>,
}

impl std::fmt::Debug for Logout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logout")
            .field("name", &self.name)
            .field("on_logout", &self.on_logout.is_some())
            .finish()
    }
}

impl Default for Logout {
    fn default() -> Self {
        Self {
            name: "logout".into(),
            on_logout: None,
        }
    }
}

impl Logout {
    /// Logout under the default name, with no hook.
    pub fn new() -> Self {
        Self::default()
    }

    /// The procedure's name (default `logout`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Runs before the devices close (to end the session in the application's store, say);
    /// it gets the connection that asked and whether all devices go.
    pub fn on_logout<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Connection, bool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_logout = Some(Arc::new(move |connection, all| {
            Box::pin(hook(connection, all))
        }));
        self
    }
}

/// The built-in procedures a builder switched on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Builtins {
    pub(crate) rooms: Option<RoomProcedures>,
    pub(crate) presence: Option<PresenceProcedures>,
    pub(crate) direct_messages: Option<DirectMessages>,
    pub(crate) logout: Option<Logout>,
}

#[derive(Deserialize)]
struct RoomArgs {
    room: String,
}

#[derive(Deserialize)]
struct LogoutArgs {
    #[serde(default)]
    all: bool,
}

#[derive(Serialize)]
struct Delivered<'a> {
    from: &'a str,
    payload: &'a Value,
}

/// A delivery engine that failed: the caller gets `wse.server.rp.failed`, the log the reason.
fn unavailable(error: DeliveryError) -> RpcError {
    RpcError::unexpected(error)
}

fn forbidden() -> RpcError {
    RpcError::code(ErrorCode::RoomForbidden)
}

impl Builtins {
    /// Registers the procedures switched on.
    pub(crate) fn install(self, server: &Server) -> Result<(), RegisterError> {
        if let Some(rooms) = self.rooms {
            install_rooms(server, rooms)?;
        }
        if let Some(presence) = self.presence {
            install_presence(server, presence)?;
        }
        if let Some(dm) = self.direct_messages {
            install_direct_messages(server, dm)?;
        }
        if let Some(logout) = self.logout {
            install_logout(server, logout)?;
        }
        Ok(())
    }
}

/// Whether the hook lets `connection` do `action` to `room`; reserved names never, names
/// past `max_name_len` never.
async fn authorized(
    rooms: &RoomProcedures,
    connection: &Connection,
    room: &str,
    action: RoomAction,
) -> Result<(), RpcError> {
    if room.len() > rooms.max_name_len {
        return Err(
            RpcError::code(ErrorCode::RpInvalidPayload).with_message(format!(
                "a room name is at most {} bytes",
                rooms.max_name_len
            )),
        );
    }
    if room.is_empty() || wse_core::frame::is_reserved(room) {
        return Err(forbidden());
    }
    let authorize = rooms.authorize.as_ref();
    match authorize {
        Some(authorize) if authorize(connection.clone(), room.to_owned(), action).await => Ok(()),
        _ => Err(forbidden()),
    }
}

fn install_rooms(server: &Server, rooms: RoomProcedures) -> Result<(), RegisterError> {
    let limit = rooms.max_per_connection;
    let (join, leave, mine) = (rooms.join.clone(), rooms.leave.clone(), rooms.mine.clone());
    let rooms = Arc::new(rooms);
    let config = Arc::clone(&rooms);
    server.register(join, move |conn: Connection, args: RoomArgs| {
        let rooms = Arc::clone(&config);
        async move {
            authorized(&rooms, &conn, &args.room, RoomAction::Join).await?;
            let joined = conn
                .server()
                .delivery()
                .join(conn.id(), &args.room, Some(limit))
                .await
                .map_err(unavailable)?;
            match joined {
                Joined::Now => Ok(true),
                Joined::AtLimit => Err(RpcError::code(ErrorCode::RoomLimit)
                    .with_message(format!("a connection is in at most {limit} rooms"))),
                // Already in it, or closing: nothing changed.
                _ => Ok(false),
            }
        }
    })?;
    server.register(leave, move |conn: Connection, args: RoomArgs| {
        let rooms = Arc::clone(&rooms);
        async move {
            authorized(&rooms, &conn, &args.room, RoomAction::Leave).await?;
            conn.server()
                .leave(conn.id(), &args.room)
                .await
                .map_err(unavailable)
        }
    })?;
    server.register(mine, |conn: Connection, NoArgs| async move {
        let mut rooms = conn
            .server()
            .rooms_of(conn.id())
            .await
            .map_err(unavailable)?;
        rooms.sort_unstable();
        Ok(rooms)
    })
}

fn install_presence(server: &Server, presence: PresenceProcedures) -> Result<(), RegisterError> {
    server.register(presence.subscribe, |conn: Connection, NoArgs| async move {
        conn.server()
            .delivery()
            .subscribe_presence(conn.id())
            .await
            .map_err(unavailable)
            .map(Option::unwrap_or_default)
    })?;
    server.register(
        presence.unsubscribe,
        |conn: Connection, NoArgs| async move {
            conn.server()
                .delivery()
                .unsubscribe_presence(conn.id())
                .await
                .map_err(unavailable)
        },
    )?;
    server.register(presence.online, |conn: Connection, NoArgs| async move {
        conn.server().online().await.map_err(unavailable)
    })
}

fn install_direct_messages(server: &Server, dm: DirectMessages) -> Result<(), RegisterError> {
    let (filter, copy) = (dm.filter, dm.copy_to_sender);
    server.register(dm.name, move |conn: Connection, message: DirectMessage| {
        let filter = filter.clone();
        async move {
            if let Some(filter) = &filter {
                filter(conn.clone(), message.clone()).await?;
            }
            let server = conn.server();
            let reachable = |presence: Option<Presence>| presence.is_some_and(|p| p.online);
            let (sender, receiver) = (
                server.presence(conn.user_id()).await.map_err(unavailable)?,
                server.presence(&message.to).await.map_err(unavailable)?,
            );
            if !reachable(sender) || !reachable(receiver) {
                return Ok(false);
            }
            let packed = server
                .pack(
                    DM_MESSAGE,
                    &Delivered {
                        from: conn.user_id(),
                        payload: &message.payload,
                    },
                )
                .map_err(|e| {
                    RpcError::code(ErrorCode::RpInvalidPayload).with_message(e.to_string())
                })?;
            server
                .to(Target::user(message.to.as_str()))
                .send_packed(&packed)
                .map_err(unavailable)?;
            if copy && message.to != conn.user_id() {
                server
                    .to_user(conn.user_id())
                    .except_connection(conn.id())
                    .send_packed(&packed)
                    .map_err(unavailable)?;
            }
            Ok(true)
        }
    })
}

fn install_logout(server: &Server, logout: Logout) -> Result<(), RegisterError> {
    let on_logout = logout.on_logout;
    server.register(logout.name, move |conn: Connection, args: LogoutArgs| {
        let on_logout = on_logout.clone();
        async move {
            if let Some(hook) = &on_logout {
                hook(conn.clone(), args.all).await;
            }
            if args.all {
                conn.server()
                    .to_user(conn.user_id())
                    .except_connection(conn.id())
                    .disconnect(CloseReason::Logout)
                    .map_err(unavailable)?;
            }
            conn.close_after_answer(CloseReason::Logout);
            Ok(true)
        }
    })
}
