//! The [`Server`] handle: procedures and handlers, events, sends to connections, users, rooms
//! and everyone, and what is known of users, connections and rooms, all through the delivery
//! seam. Its settings are in `builder.rs`; binding and shutdown in `serving.rs`.

use std::any::{Any, TypeId};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OnceCell, watch};
use wse_core::outbox::Close;
use wse_core::{
    CallError, CloseReason, Protocol, RegisterError, Registry, RpcError, SendError, close_code,
};

use crate::auth::{Challenge, Identify};
use crate::builder::{Builder, Config, OnDisconnect, StateMap};
use crate::connection::{Connection, ConnectionId, NodeId};
use crate::delivery::{
    Delivery, DeliveryError, Except, Joined, LocalDelivery, Packed, Released, Target,
};
use crate::events::{Event, EventHub, Events, ServerError};
use crate::limits::Gate;
use crate::metrics::Metrics;
use crate::presence::{Presence, Profile, ProfileUpdate};
use crate::serving::Tasks;
use crate::upgrade::Gatekeeper;

/// A WSE server: procedures, message handlers, users and their connections. A cheap handle:
/// clone it into handlers and tasks.
///
/// Build one with [`Server::builder`], register procedures and handlers, then
/// [`Server::bind`].
#[derive(Clone)]
pub struct Server(Arc<Shared>);

pub(crate) struct Shared {
    pub(crate) config: Config,
    /// The codecs offered, in preference order; a connection speaks one of them.
    pub(crate) codecs: Vec<Arc<dyn Protocol>>,
    /// Their names, made once: every packed message and every connection shares them, so
    /// that a connection finds its frame by pointer.
    pub(crate) codec_names: Vec<Arc<str>>,
    pub(crate) identify: Identify,
    pub(crate) challenge: Option<Arc<dyn Challenge>>,
    pub(crate) registry: Arc<Registry<Connection>>,
    pub(crate) gate: Arc<Gate>,
    /// The trusted proxies, the Origin allow-list and the upgrade filter.
    pub(crate) gatekeeper: Gatekeeper,
    /// This node's users, connections and rooms, for what only this node can answer (a
    /// connection's handle, a listener's shutdown).
    pub(crate) local: LocalDelivery,
    /// The seam every send, membership change and query goes through.
    pub(crate) delivery: Box<dyn Delivery>,
    /// The delivery engine's start, done once before the first connection is served.
    started: OnceCell<()>,
    /// The application's state, by type ([`Builder::state`]).
    state: StateMap,
    /// What the server counts.
    pub(crate) metrics: Metrics,
    /// Runs after each accepted connection ended ([`Builder::on_disconnect`]).
    pub(crate) on_disconnect: Option<OnDisconnect>,
    events: Arc<EventHub>,
    node: NodeId,
    next_id: AtomicU64,
    /// Set by [`Server::shutdown`]: a connection accepted after it closes itself.
    pub(crate) stopping: AtomicBool,
    /// Tells every listener to stop, on [`Server::shutdown`].
    pub(crate) stop: watch::Sender<bool>,
    /// Every connection task, listener's or not.
    pub(crate) tasks: Arc<Tasks>,
}

impl Shared {
    pub(crate) fn next_connection_id(&self) -> ConnectionId {
        ConnectionId::new(self.node, self.next_id.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (users, connections) = self.0.local.counts_now();
        f.debug_struct("Server")
            .field("node", &self.0.node)
            .field(
                "protocols",
                &self.0.codecs.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .field("users", &users)
            .field("connections", &connections)
            .field("registry", &self.0.registry)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A builder whose identify step is `identify`: it sees the handshake (identity, meta,
    /// connection id, remote address, challenge) and decides to accept or refuse.
    pub fn builder<F, Fut>(identify: F) -> Builder
    where
        F: Fn(crate::Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = crate::Decision> + Send + 'static,
    {
        Builder::new(identify)
    }

    /// # Panics
    /// If two built-in procedures share a name, or one has an empty or reserved name.
    pub(crate) fn new(builder: Builder) -> Self {
        let codec_names: Vec<Arc<str>> =
            builder.codecs.iter().map(|c| Arc::from(c.name())).collect();
        let node = NodeId::random();
        let local = LocalDelivery::new(
            node,
            codec_names
                .iter()
                .cloned()
                .zip(builder.codecs.iter().cloned()),
        );
        let delivery = match builder.delivery {
            Some(wrap) => wrap(local.clone()),
            None => Box::new(local.clone()),
        };
        let config = builder.config;
        let builtins = builder.builtins;
        let server = Server(Arc::new(Shared {
            config,
            codec_names,
            codecs: builder.codecs,
            identify: builder.identify,
            challenge: builder.challenge,
            registry: Arc::new(Registry::new()),
            gate: Arc::new(Gate::new(
                config.max_connections,
                config.max_connections_per_address,
                config.auth_failure_limit,
            )),
            gatekeeper: builder.gatekeeper,
            local,
            delivery,
            started: OnceCell::new(),
            state: builder.state,
            metrics: Metrics::new(),
            on_disconnect: builder.on_disconnect,
            events: Arc::new(EventHub::new(builder.events_capacity)),
            node,
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            stop: watch::Sender::new(false),
            tasks: Arc::default(),
        }));
        if let Err(error) = builtins.install(&server) {
            panic!("the built-in procedures' names collide: {error}");
        }
        server
    }

    /// The delivery seam.
    pub(crate) fn delivery(&self) -> &dyn Delivery {
        &*self.0.delivery
    }

    /// The application state of type `T` given to [`Builder::state`], shared by every
    /// handler.
    pub fn state<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.0.state.get(&TypeId::of::<T>())?.downcast_ref()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.0
    }

    /// This server's node id, drawn when it was built; every [`ConnectionId`] it gives names
    /// it.
    pub fn node_id(&self) -> NodeId {
        self.0.node
    }

    /// Starts the delivery engine (a backplane connects and subscribes) if it has not
    /// started: what [`Server::bind`], [`Server::serve`] and [`Server::serve_io`] do before
    /// serving, and the axum route before its first connection. An application that mounts
    /// the server calls it before it starts serving, to fail early when the engine cannot
    /// start. Once started, later calls return at once.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the engine cannot start; a later call tries again.
    pub async fn start(&self) -> Result<(), DeliveryError> {
        self.0
            .started
            .get_or_try_init(|| self.0.delivery.start())
            .await
            .map(|_| ())
    }

    /// Whether [`Server::shutdown`] was called.
    pub(crate) fn stopping(&self) -> bool {
        self.0.stopping.load(Ordering::SeqCst)
    }

    /// Whether anyone subscribed to the events: when not, there is no event to build.
    pub(crate) fn listening(&self) -> bool {
        self.0.events.listening()
    }

    pub(crate) fn emit(&self, event: Event) {
        match &event {
            Event::Error {
                connection_id,
                error,
            } => {
                if *error == ServerError::SlowConsumer {
                    self.0.metrics.slow_consumer();
                }
                tracing::debug!(connection = ?connection_id, code = %error.code(), %error, "wse connection error");
            }
            Event::Rejected {
                remote_addr,
                reason,
            } => {
                self.0.metrics.rejected(reason);
                tracing::debug!(remote = %remote_addr, ?reason, "wse connection rejected");
            }
            _ => {}
        }
        if self.listening() {
            self.0.events.send(event);
        }
    }

    /// Subscribes to [`Event`]s from now on. A subscriber that falls more than the events
    /// capacity behind loses the oldest.
    ///
    /// ```
    /// use wse_server::{Decision, Event, Server};
    ///
    /// # async fn run() {
    /// let server = Server::builder(|_| async { Decision::refuse() }).build();
    /// let mut events = server.events();
    /// tokio::spawn(async move {
    ///     while let Ok(event) = events.recv().await {
    ///         if let Event::Joined { user_id } = event {
    ///             println!("{user_id} is online");
    ///         }
    ///     }
    /// });
    /// # }
    /// ```
    pub fn events(&self) -> Events {
        self.0.events.subscribe()
    }

    /// Registers the async procedure `name`, callable by every client. The argument is
    /// decoded from the call's payload; the result, or the [`RpcError`], is the answer.
    ///
    /// ```
    /// use serde::Deserialize;
    /// use wse_server::{Connection, Decision, NoArgs, RpcError, Server};
    ///
    /// #[derive(Deserialize)]
    /// struct Transfer { to: String, amount: u64 }
    ///
    /// let server = Server::builder(|_| async { Decision::refuse() }).build();
    /// server.register("transfer", |conn: Connection, t: Transfer| async move {
    ///     if t.amount == 0 {
    ///         // The caller sees this code and these details as sent.
    ///         return Err(RpcError::new("bank.zero-amount").with_details(serde_json::json!({"to": t.to})));
    ///     }
    ///     Ok(format!("{} sent {} to {}", conn.user_id(), t.amount, t.to))
    /// }).unwrap();
    /// // No arguments: null, {} or a missing payload alike.
    /// server.register("time", |_: Connection, NoArgs| async { Ok(42) }).unwrap();
    /// ```
    ///
    /// # Cancellation
    /// When the caller's connection closes, a procedure still running is cancelled: its
    /// future is dropped at the await it waits on, and the call is never answered (an
    /// [`Event::Error`] with [`ServerError::CallCancelled`] says so). Write procedures so
    /// that stopping at any await leaves the application consistent (a transaction rolled
    /// back on drop, say), or spawn work that must finish whoever waits for it. Procedures
    /// that finish without waiting are never cancelled.
    ///
    /// # Errors
    /// [`RegisterError`] if the name is taken, empty or reserved.
    pub fn register<A, R, F, Fut>(
        &self,
        name: impl Into<String>,
        procedure: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(Connection, A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
        R: Serialize + Send + 'static,
    {
        let name = name.into();
        self.0.registry.register(name.as_str(), procedure)?;
        self.0.metrics.procedure_registered(&name);
        Ok(())
    }

    /// Removes the procedure `name`.
    ///
    /// # Errors
    /// [`RegisterError::NotRegistered`] if there is none.
    pub fn unregister(&self, name: &str) -> Result<(), RegisterError> {
        self.0.registry.unregister(name)
    }

    /// Sets the handler of one-way messages of type `kind` (replacing any). Handlers run on
    /// the connection's read loop in arrival order and must not block; spawn for slow work.
    ///
    /// ```
    /// use wse_server::{Connection, Decision, Server};
    ///
    /// let server = Server::builder(|_| async { Decision::refuse() }).build();
    /// server.on("typing", |conn: Connection, room: String| {
    ///     // Everyone in the room but this device.
    ///     let _ = conn.server().to_room(&room).except_connection(conn.id()).send("typing", conn.user_id());
    /// }).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`RegisterError::InvalidName`] if `kind` is empty or reserved.
    pub fn on<T, F>(&self, kind: impl Into<String>, handler: F) -> Result<(), RegisterError>
    where
        F: Fn(Connection, T) + Send + Sync + 'static,
        T: DeserializeOwned + 'static,
    {
        self.0.registry.on(kind, handler)
    }

    /// Removes the handler of `kind`; returns whether there was one.
    pub fn off(&self, kind: &str) -> bool {
        self.0.registry.off(kind)
    }

    /// Encodes a one-way message once per codec, for [`Recipients::send_packed`].
    ///
    /// # Errors
    /// [`SendError::InvalidKind`] if `kind` is empty or reserved, [`SendError::Encode`] if the
    /// payload cannot be encoded.
    pub fn pack<T: Serialize + ?Sized>(
        &self,
        kind: &str,
        payload: &T,
    ) -> Result<Packed, SendError> {
        Packed::encode_named(self.0.codec_names.iter().zip(&self.0.codecs), kind, payload)
    }

    /// The connections of `target`, to send to or disconnect, optionally skipping some.
    pub fn to(&self, target: impl Into<Target>) -> Recipients<'_> {
        Recipients {
            server: self,
            target: target.into(),
            except: None,
        }
    }

    /// Every connection of `user_id`.
    pub fn to_user(&self, user_id: &str) -> Recipients<'_> {
        self.to(Target::user(user_id))
    }

    /// Every connection in `room`.
    pub fn to_room(&self, room: &str) -> Recipients<'_> {
        self.to(Target::room(room))
    }

    /// Every connection of every user.
    pub fn to_all(&self) -> Recipients<'_> {
        self.to(Target::All)
    }

    /// Sends `[kind, payload, null]` to one connection, on whichever node holds it; `Ok(false)`
    /// if it is not open on this node (a backplane ships it to the node that holds it).
    ///
    /// # Errors
    /// [`DeliveryError`]: the message cannot be sent, or the delivery engine failed.
    pub fn send_to<T: Serialize + ?Sized>(
        &self,
        id: ConnectionId,
        kind: &str,
        payload: &T,
    ) -> Result<bool, DeliveryError> {
        Ok(self.to(id).send(kind, payload)? > 0)
    }

    /// Sends `[kind, payload, null]` to every device of `user_id`, encoded once; returns how
    /// many connections of this node took it.
    ///
    /// # Errors
    /// [`DeliveryError`]: the message cannot be sent, or the delivery engine failed.
    pub fn send_to_user<T: Serialize + ?Sized>(
        &self,
        user_id: &str,
        kind: &str,
        payload: &T,
    ) -> Result<usize, DeliveryError> {
        self.to_user(user_id).send(kind, payload)
    }

    /// Sends `[kind, payload, null]` to every connection in `room`, encoded once; returns how
    /// many connections of this node took it.
    ///
    /// # Errors
    /// [`DeliveryError`]: the message cannot be sent, or the delivery engine failed.
    pub fn send_to_room<T: Serialize + ?Sized>(
        &self,
        room: &str,
        kind: &str,
        payload: &T,
    ) -> Result<usize, DeliveryError> {
        self.to_room(room).send(kind, payload)
    }

    /// Sends `[kind, payload, null]` to every connection of every user, encoded once; returns
    /// how many connections of this node took it.
    ///
    /// # Errors
    /// [`DeliveryError`]: the message cannot be sent, or the delivery engine failed.
    pub fn broadcast<T: Serialize + ?Sized>(
        &self,
        kind: &str,
        payload: &T,
    ) -> Result<usize, DeliveryError> {
        self.to_all().send(kind, payload)
    }

    /// Closes one connection with 1000 and `reason`; `Ok(false)` if it is not open on this
    /// node.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    pub fn drop_connection(
        &self,
        id: ConnectionId,
        reason: impl Into<String>,
    ) -> Result<bool, DeliveryError> {
        Ok(self.to(id).disconnect(reason)? > 0)
    }

    /// Closes every connection of `user_id` with 1000 and `reason`; returns how many of this
    /// node.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    pub fn drop_user(
        &self,
        user_id: &str,
        reason: impl Into<String>,
    ) -> Result<usize, DeliveryError> {
        self.to_user(user_id).disconnect(reason)
    }

    /// Puts connection `id` in `room` by its own join; `Ok(false)` when it had joined it
    /// already or is not open.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// With the default delivery, it is done before the first poll returns; a backplane's
    /// round trip may or may not complete once the future is dropped.
    pub async fn join(&self, id: ConnectionId, room: &str) -> Result<bool, DeliveryError> {
        let joined = self.0.delivery.join(id, room, None).await?;
        Ok(joined == Joined::Now)
    }

    /// Ends connection `id`'s own membership of `room`; `Ok(false)` when it had not joined
    /// it. It stays in the room while its user is in it as a whole. A room left empty is
    /// gone.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// As [`Server::join`].
    pub async fn leave(&self, id: ConnectionId, room: &str) -> Result<bool, DeliveryError> {
        self.0.delivery.leave(id, room).await
    }

    /// Ends every own membership of connection `id`; returns how many.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// As [`Server::join`].
    pub async fn leave_all(&self, id: ConnectionId) -> Result<usize, DeliveryError> {
        self.0.delivery.leave_all(id).await
    }

    /// Puts `user_id` in `room` as a whole: all its devices, and each device it connects
    /// while it stays online (a user that goes offline leaves its rooms). `Ok(false)` when
    /// it is not online or is in the room already. A send to the room reaches each device
    /// once, even one that joined by itself too.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// As [`Server::join`].
    pub async fn join_user(&self, user_id: &str, room: &str) -> Result<bool, DeliveryError> {
        self.0.delivery.join_user(user_id, room).await
    }

    /// Ends `user_id`'s membership of `room` as a whole; devices that joined by themselves
    /// stay. `Ok(false)` when it was not in it.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// As [`Server::join`].
    pub async fn leave_user(&self, user_id: &str, room: &str) -> Result<bool, DeliveryError> {
        self.0.delivery.leave_user(user_id, room).await
    }

    /// The rooms `user_id` joined as a whole.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only asks.
    pub async fn user_rooms(&self, user_id: &str) -> Result<Vec<Arc<str>>, DeliveryError> {
        self.0.delivery.user_rooms(user_id).await
    }

    /// The users with at least one connection in `room`, sorted.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only asks.
    pub async fn room_users(&self, room: &str) -> Result<Vec<Arc<str>>, DeliveryError> {
        self.0.delivery.room_users(room).await
    }

    /// What others see of `user_id`: online, device count, alias and version (offline when
    /// it is unavailable), or `None` when it is not online.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only asks.
    pub async fn presence(&self, user_id: &str) -> Result<Option<Presence>, DeliveryError> {
        self.0.delivery.presence(user_id).await
    }

    /// The available online users, sorted by id.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only asks.
    pub async fn online(&self) -> Result<Vec<Presence>, DeliveryError> {
        self.0.delivery.online().await
    }

    /// `user_id`'s profile, when it is online.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only asks.
    pub async fn profile(&self, user_id: &str) -> Result<Option<Profile>, DeliveryError> {
        self.0.delivery.profile(user_id).await
    }

    /// Changes `user_id`'s alias or availability; a change others see takes a new version
    /// and reaches the presence subscribers. Returns what others see now, or `None` when the
    /// user is not online.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// As [`Server::join`].
    pub async fn update_profile(
        &self,
        user_id: &str,
        update: &ProfileUpdate,
    ) -> Result<Option<Presence>, DeliveryError> {
        self.0.delivery.update_profile(user_id, update).await
    }

    /// The users with at least one open connection.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only asks.
    pub async fn users(&self) -> Result<Vec<Arc<str>>, DeliveryError> {
        self.0.delivery.users().await
    }

    /// The ids of `user_id`'s open connections (devices), oldest first.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only asks.
    pub async fn devices(&self, user_id: &str) -> Result<Vec<ConnectionId>, DeliveryError> {
        self.0.delivery.devices(user_id).await
    }

    /// The handles of `user_id`'s open connections on this node, oldest first (its devices on
    /// other nodes have ids in [`Server::devices`], and no handle here).
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only asks.
    pub async fn connections_of(&self, user_id: &str) -> Result<Vec<Connection>, DeliveryError> {
        let devices = self.devices(user_id).await?;
        Ok(devices
            .into_iter()
            .filter_map(|id| self.connection(id))
            .collect())
    }

    /// The connections in `room`, whichever way they joined.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only asks.
    pub async fn room_members(&self, room: &str) -> Result<Vec<ConnectionId>, DeliveryError> {
        self.0.delivery.members(room).await
    }

    /// The rooms connection `id` is in, by its own join or its user's.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only asks.
    pub async fn rooms_of(&self, id: ConnectionId) -> Result<Vec<Arc<str>>, DeliveryError> {
        self.0.delivery.rooms_of(id).await
    }

    /// How many (users, connections) are open.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only asks.
    pub async fn counts(&self) -> Result<(usize, usize), DeliveryError> {
        self.0.delivery.counts().await
    }

    /// The handle of connection `id`, if it is open on this node.
    pub fn connection(&self, id: ConnectionId) -> Option<Connection> {
        self.0.local.connection(id)
    }

    /// Calls the procedure `procedure` that the device `id` registered, on whichever node
    /// of the cluster holds it, with the server's call timeout: [`Connection::call`] for a
    /// device known by id.
    ///
    /// ```
    /// use serde_json::json;
    /// use wse_server::{Decision, RpcError, Server};
    ///
    /// let server = Server::builder(|_| async { Decision::refuse() }).build();
    /// # async fn ask(server: Server) -> Result<i64, RpcError> {
    /// // One device of ann, wherever it is connected.
    /// let devices = server.devices("ann").await.map_err(|_| RpcError::new("app.unavailable"))?;
    /// let device = *devices.first().ok_or_else(|| RpcError::new("app.offline"))?;
    /// let sum: i64 = server
    ///     .call(device, "client_sum", &json!({"a": 1, "b": 2}))
    ///     .await
    ///     .map_err(RpcError::forward)?;
    /// # Ok(sum)
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Connection::call`]; [`CallError::Disconnected`] also when the device's node dies
    /// or cannot be reached, `wse.server.client.connection-missing` when no node holds it.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the call; a late answer is dropped.
    pub async fn call<R, A>(
        &self,
        id: ConnectionId,
        procedure: &str,
        args: &A,
    ) -> Result<R, CallError>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        let timeout = self.0.config.session.call_timeout;
        self.call_with_timeout(id, procedure, args, timeout).await
    }

    /// Like [`Server::call`], waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Server::call`].
    ///
    /// # Cancel safety
    /// As [`Server::call`].
    pub async fn call_with_timeout<R, A>(
        &self,
        id: ConnectionId,
        procedure: &str,
        args: &A,
        timeout: Duration,
    ) -> Result<R, CallError>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        let args = serde_json::to_value(args).map_err(|e| CallError::Encode(e.to_string()))?;
        let answer = self.0.delivery.call(id, procedure, &args, timeout).await?;
        serde_json::from_value(answer).map_err(|e| CallError::Decode(e.to_string()))
    }
}

/// The connections a send or a disconnect is for: a [`Target`] and, optionally, who it skips.
/// From [`Server::to`] and its shorthands.
///
/// ```
/// use wse_server::{Connection, Decision, Server};
///
/// let server = Server::builder(|_| async { Decision::refuse() }).build();
/// server.register("say", |conn: Connection, text: String| async move {
///     // To the caller's other devices only.
///     let reached = conn.server().to_user(conn.user_id()).except_connection(conn.id()).send("said", &text)?;
///     Ok(reached)
/// }).unwrap();
/// ```
#[derive(Debug)]
#[must_use = "nothing is sent until `send` or `disconnect`"]
pub struct Recipients<'a> {
    server: &'a Server,
    target: Target,
    except: Option<Except>,
}

impl Recipients<'_> {
    /// Skip `except` (replacing an earlier exception).
    pub fn except(mut self, except: Except) -> Self {
        self.except = Some(except);
        self
    }

    /// Skip one connection, typically the sender's.
    pub fn except_connection(self, id: ConnectionId) -> Self {
        self.except(Except::Connection(id))
    }

    /// Skip every connection of `user_id`, typically all of the sender's devices.
    pub fn except_user(self, user_id: &str) -> Self {
        self.except(Except::User(Arc::from(user_id)))
    }

    /// Sends `[kind, payload, null]`, encoded once per codec; returns how many connections of
    /// this node took it. A connection whose queue is full is closed as a slow consumer.
    ///
    /// # Errors
    /// [`DeliveryError::Message`] when `kind` is empty or reserved or the payload does not
    /// encode; [`DeliveryError::Unavailable`] when the delivery engine failed.
    pub fn send<T: Serialize + ?Sized>(
        self,
        kind: &str,
        payload: &T,
    ) -> Result<usize, DeliveryError> {
        let packed = self.server.pack(kind, payload)?;
        self.send_packed(&packed)
    }

    /// Sends a message packed with [`Server::pack`] (or received from another node).
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    pub fn send_packed(self, packed: &Packed) -> Result<usize, DeliveryError> {
        self.server
            .0
            .delivery
            .send(&self.target, self.except.as_ref(), packed)
    }

    /// Closes the connections with 1000 and `reason`; returns how many of this node.
    ///
    /// # Errors
    /// [`DeliveryError::Unavailable`] when the delivery engine failed.
    pub fn disconnect(self, reason: impl Into<String>) -> Result<usize, DeliveryError> {
        let close = Close::new(close_code::NORMAL, reason);
        self.server
            .0
            .delivery
            .disconnect(&self.target, self.except.as_ref(), &close)
    }
}

impl Server {
    /// Takes a connection that ended out of the delivery engine, within the close timeout;
    /// what it released, or `None` when the engine failed (reported as an error event).
    pub(crate) async fn release(&self, connection: &Connection) -> Option<Released> {
        let release = self.0.delivery.release(connection);
        let error = match tokio::time::timeout(self.0.config.close_timeout, release).await {
            Ok(Ok(released)) => {
                if released.listed {
                    self.0.metrics.released(released.left);
                }
                return Some(released);
            }
            Ok(Err(error)) => error,
            Err(_) => DeliveryError::Unavailable("no answer within the close timeout".into()),
        };
        self.emit(Event::Error {
            connection_id: Some(connection.id()),
            error: ServerError::Delivery(error),
        });
        None
    }

    /// Runs the on-disconnect hook for a connection that ended with `close`, once its
    /// cancelled procedures are gone (or the close timeout has passed).
    pub(crate) async fn disconnected(&self, connection: &Connection, close: Close) {
        if let Some(on_disconnect) = &self.0.on_disconnect {
            // Its cancelled procedures are dropped at their next poll, on other tasks.
            let _ = tokio::time::timeout(self.0.config.close_timeout, connection.closed()).await;
            on_disconnect(connection.clone(), close).await;
        }
    }

    /// Closes every connection of this node with 1012 `wse.by-server` (so that clients with
    /// reconnect enabled come back), as a listener's shutdown does for its own.
    pub(crate) fn close_local(&self, accepted_by: impl Fn(&Connection) -> bool) {
        for connection in self.0.local.connections() {
            if accepted_by(&connection) {
                connection.close_with(close_code::SERVICE_RESTART, CloseReason::ByServer);
            }
        }
    }
}
