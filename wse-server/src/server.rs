//! The server handle, its builder (every limit with its default) and serving: bind, accept,
//! graceful shutdown.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use wse_core::transport::Heartbeat;
use wse_core::{
    CloseReason, Json, Protocol, RegisterError, Registry, RpcError, SendError, SessionConfig,
    close_code,
};

use crate::auth::{Challenge, Decision, Handshake, Identify};
use crate::connection::{Connection, ConnectionId};
use crate::delivery::{Delivery, LocalDelivery, Packed};
use crate::events::{Event, EventHub, Events};
use crate::limits::{Admission, AuthFailureLimit, RateLimit};
use crate::task;
use crate::users::Users;

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
    pub(crate) identify: Identify,
    pub(crate) challenge: Option<Arc<dyn Challenge>>,
    pub(crate) registry: Arc<Registry<Connection>>,
    pub(crate) users: Arc<Users>,
    pub(crate) admission: Arc<Admission>,
    delivery: Box<dyn Delivery>,
    events: Arc<EventHub>,
    next_id: AtomicU64,
}

impl Shared {
    pub(crate) fn next_connection_id(&self) -> ConnectionId {
        ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }
}

/// The settings of a server; see [`Builder`] for each default.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) conn_per_user: usize,
    pub(crate) session: SessionConfig,
    pub(crate) outbound_queue: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) heartbeat: Option<Heartbeat>,
    max_connections: usize,
    max_connections_per_address: usize,
    auth_failure_limit: AuthFailureLimit,
}

impl Config {
    pub(crate) fn websocket(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
            // A write buffer only grows past its target while the socket refuses writes.
            .max_write_buffer_size(self.max_message_size.saturating_mul(2).max(256 << 10))
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (users, connections) = self.0.users.counts();
        f.debug_struct("Server")
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

/// Builds a [`Server`]. Every setting has a safe default.
#[must_use]
pub struct Builder {
    identify: Identify,
    challenge: Option<Arc<dyn Challenge>>,
    codecs: Vec<Arc<dyn Protocol>>,
    config: Config,
    events_capacity: usize,
    delivery: Option<WrapDelivery>,
}

type WrapDelivery = Box<dyn FnOnce(LocalDelivery) -> Box<dyn Delivery>>;

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field(
                "protocols",
                &self.codecs.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .field("challenge", &self.challenge.is_some())
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// Speak only `protocol` (replacing the default, [`Json`]). Swapping JSON for MessagePack
    /// is `.protocol(MsgPack)`.
    pub fn protocol(mut self, protocol: impl Protocol) -> Self {
        self.codecs = vec![Arc::new(protocol)];
        self
    }

    /// Offer `protocol` as well; each connection speaks the first codec it offers that the
    /// server speaks.
    ///
    /// # Panics
    /// If a codec with the same name is already offered.
    pub fn add_protocol(mut self, protocol: impl Protocol) -> Self {
        assert!(
            self.codecs.iter().all(|c| c.name() != protocol.name()),
            "codec {:?} offered twice",
            protocol.name()
        );
        self.codecs.push(Arc::new(protocol));
        self
    }

    /// Run a challenge-response step (such as [`HmacChallenge`](crate::HmacChallenge))
    /// between `~wse:hi` and identify. Default: none.
    pub fn challenge(mut self, challenge: impl Challenge) -> Self {
        self.challenge = Some(Arc::new(challenge));
        self
    }

    /// How many connections one user may hold; a new one past the limit closes the user's
    /// OLDEST connection with `wse.clients-concurrency`. Default: 1.
    ///
    /// # Panics
    /// If `limit` is zero.
    pub fn conn_per_user(mut self, limit: usize) -> Self {
        assert!(limit > 0, "conn_per_user must be at least 1");
        self.config.conn_per_user = limit;
        self
    }

    /// How long a server → client call waits for its answer. Default: 20 s.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.session.call_timeout = timeout;
        self
    }

    /// How many client calls may be waiting at once on one connection (a procedure that
    /// finishes without waiting never counts); past it a call is refused with
    /// `wse.server.rp.too-many-calls` and the connection stays. Default: 1024.
    ///
    /// # Panics
    /// If `max` is zero.
    pub fn max_running_calls(mut self, max: usize) -> Self {
        assert!(max > 0, "max_running_calls must be at least 1");
        self.config.session.max_running_calls = max;
        self
    }

    /// How many server → client calls may wait for an answer on one connection; past it
    /// [`Connection::call`] fails with `wse.client.rp.too-many-pending`. Default: 1024.
    ///
    /// # Panics
    /// If `max` is zero.
    pub fn max_pending_calls(mut self, max: usize) -> Self {
        assert!(max > 0, "max_pending_calls must be at least 1");
        self.config.session.max_pending_calls = max;
        self
    }

    /// Each connection's inbound rate limit, or `None` for none. Past it a call is answered
    /// with `wse.server.rate-limited` and a message dropped; a connection refused a whole
    /// burst before it pauses long enough to refill is closed with 1008 `wse.rate-limited`.
    /// Default: 1,000 messages/s with bursts of 2,000.
    ///
    /// # Panics
    /// If the rate or the burst is zero.
    pub fn rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        if let Some(limit) = limit {
            assert!(
                limit.per_second > 0 && limit.burst > 0,
                "a rate limit must admit something"
            );
        }
        self.config.rate_limit = limit;
        self
    }

    /// Ping a connection that has been quiet, and close one silent past the timeout with
    /// 1011 `wse.heartbeat-timeout` (a dead peer leaves no other trace), or `None` for no
    /// heartbeat. Default: ping after 25 s of quiet, close after 60 s of silence.
    ///
    /// # Panics
    /// If the interval is zero or longer than the timeout.
    pub fn heartbeat(mut self, heartbeat: Option<Heartbeat>) -> Self {
        self.config.heartbeat = heartbeat.map(Heartbeat::checked);
        self
    }

    /// How many connections the server holds at once (from TCP accept on); past it new
    /// sockets are dropped before the upgrade. Default: 100,000.
    ///
    /// # Panics
    /// If `max` is zero.
    pub fn max_connections(mut self, max: usize) -> Self {
        assert!(max > 0, "max_connections must be at least 1");
        self.config.max_connections = max;
        self
    }

    /// How many connections one remote address may hold at once; past it its new sockets are
    /// dropped before the upgrade. Default: 10,000 (behind a proxy every connection comes from
    /// the proxy's address: raise it there).
    ///
    /// # Panics
    /// If `max` is zero.
    pub fn max_connections_per_address(mut self, max: usize) -> Self {
        assert!(max > 0, "max_connections_per_address must be at least 1");
        self.config.max_connections_per_address = max;
        self
    }

    /// How many failed authentications (refusals by the challenge or identify) an address
    /// may have within a window; past it its new sockets are dropped before the upgrade until
    /// the window has passed. Default: 100 per minute.
    ///
    /// # Panics
    /// If `max_failures` is zero.
    pub fn auth_failure_limit(mut self, limit: AuthFailureLimit) -> Self {
        assert!(
            limit.max_failures > 0,
            "at least one failure must be allowed"
        );
        self.config.auth_failure_limit = limit;
        self
    }

    /// How many frames may wait to be written to one connection. A connection whose queue is
    /// full when a message is sent to it has stopped reading: it is closed with 1013
    /// `wse.slow-consumer`, and never slows anyone else. Default: 1024.
    ///
    /// # Panics
    /// If `frames` is zero.
    pub fn outbound_queue(mut self, frames: usize) -> Self {
        assert!(frames > 0, "the outbound queue needs room for one frame");
        self.config.outbound_queue = frames;
        self
    }

    /// How long a socket may take from TCP accept to `~wse:welcome` (upgrade, hi, challenge,
    /// identify); then it is closed. Default: 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// How long to wait for the peer's answer to a close frame before dropping the socket,
    /// and how long one write may wait for the peer to take our bytes before the connection
    /// is closed as a slow consumer (1013 `wse.slow-consumer`). Default: 5 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }

    /// The largest message (and frame) a peer may send; a larger one closes the connection
    /// with 1009. Default: 1 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// The read buffer each connection starts with, which is also the most read from the
    /// socket at once. It grows to hold a larger message when one comes. Default: 512 bytes:
    /// an idle connection should cost little (tungstenite's own default of 128 KiB costs that
    /// much per connection), and 512 bytes hold a dozen pipelined calls. A large message is
    /// read in as many pieces (a MiB in 2,048 reads): raise it for peers that mostly send
    /// large messages.
    ///
    /// # Panics
    /// If `bytes` is zero.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        assert!(bytes > 0, "the read buffer needs room for a byte");
        self.config.read_buffer_size = bytes;
        self
    }

    /// How many events [`Server::events`] buffers for a subscriber that lags. Default: 1024.
    ///
    /// # Panics
    /// If `capacity` is zero.
    pub fn events_capacity(mut self, capacity: usize) -> Self {
        assert!(capacity > 0, "the event buffer needs room for one event");
        self.events_capacity = capacity;
        self
    }

    /// Route sends to users and to everyone through `wrap(local)`, e.g. a cluster backplane
    /// that also reaches other nodes. Default: [`LocalDelivery`], this node only.
    pub fn delivery<D: Delivery>(
        mut self,
        wrap: impl FnOnce(LocalDelivery) -> D + 'static,
    ) -> Self {
        self.delivery = Some(Box::new(move |local| Box::new(wrap(local))));
        self
    }

    /// The server.
    pub fn build(self) -> Server {
        let users = Arc::new(Users::default());
        let local = LocalDelivery::new(Arc::clone(&users));
        let delivery = match self.delivery {
            Some(wrap) => wrap(local),
            None => Box::new(local),
        };
        Server(Arc::new(Shared {
            config: self.config,
            codecs: self.codecs,
            identify: self.identify,
            challenge: self.challenge,
            registry: Arc::new(Registry::new()),
            users,
            admission: Arc::new(Admission::new(
                self.config.max_connections,
                self.config.max_connections_per_address,
                self.config.auth_failure_limit,
            )),
            delivery,
            events: Arc::new(EventHub::new(self.events_capacity)),
            next_id: AtomicU64::new(1),
        }))
    }
}

impl Server {
    /// A builder whose identify step is `identify`: it sees the handshake (identity, meta,
    /// connection id, remote address, challenge) and decides to accept or refuse.
    pub fn builder<F, Fut>(identify: F) -> Builder
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Decision> + Send + 'static,
    {
        Builder {
            identify: Arc::new(move |handshake| Box::pin(identify(handshake))),
            challenge: None,
            codecs: vec![Arc::new(Json)],
            config: Config {
                conn_per_user: 1,
                session: SessionConfig::default(),
                outbound_queue: 1024,
                handshake_timeout: Duration::from_secs(10),
                close_timeout: Duration::from_secs(5),
                max_message_size: 1 << 20,
                read_buffer_size: 512,
                heartbeat: Some(Heartbeat::default()),
                rate_limit: Some(RateLimit {
                    per_second: 1_000,
                    burst: 2_000,
                }),
                max_connections: 100_000,
                max_connections_per_address: 10_000,
                auth_failure_limit: AuthFailureLimit {
                    max_failures: 100,
                    window: Duration::from_secs(60),
                },
            },
            events_capacity: 1024,
            delivery: None,
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.0
    }

    /// Whether anyone subscribed to the events: when not, there is no event to build.
    pub(crate) fn listening(&self) -> bool {
        self.0.events.listening()
    }

    pub(crate) fn emit(&self, event: Event) {
        if let Event::Error {
            connection_id,
            error,
        } = &event
        {
            tracing::debug!(connection = ?connection_id, code = %error.code(), %error, "wse connection error");
        }
        if self.listening() {
            self.0.events.send(event);
        }
    }

    /// Subscribes to [`Event`]s from now on. A subscriber that falls more than the events
    /// capacity behind loses the oldest.
    pub fn events(&self) -> Events {
        self.0.events.subscribe()
    }

    /// Registers the async procedure `name`, callable by every client. The argument is
    /// decoded from the call's payload; the result, or the [`RpcError`], is the answer.
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
        self.0.registry.register(name, procedure)
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

    /// Encodes a one-way message once per codec, for the delivery methods below.
    ///
    /// # Errors
    /// [`SendError::InvalidKind`] if `kind` is empty or reserved, [`SendError::Encode`] if the
    /// payload cannot be encoded.
    pub fn pack<T: Serialize + ?Sized>(
        &self,
        kind: &str,
        payload: &T,
    ) -> Result<Packed, SendError> {
        Packed::encode(&self.0.codecs, kind, payload)
    }

    /// Sends `[kind, payload, null]` to one connection; `Ok(false)` if it is not open here.
    ///
    /// # Errors
    /// [`SendError::InvalidKind`] if `kind` is empty or reserved, [`SendError::Encode`] if the
    /// payload cannot be encoded.
    pub fn send_to<T: Serialize + ?Sized>(
        &self,
        id: ConnectionId,
        kind: &str,
        payload: &T,
    ) -> Result<bool, SendError> {
        Ok(self
            .0
            .delivery
            .to_connection(id, &self.pack(kind, payload)?))
    }

    /// Sends `[kind, payload, null]` to every device of `user_id`, encoded once; returns how
    /// many connections took it.
    ///
    /// # Errors
    /// [`SendError::InvalidKind`] if `kind` is empty or reserved, [`SendError::Encode`] if the
    /// payload cannot be encoded.
    pub fn send_to_user<T: Serialize + ?Sized>(
        &self,
        user_id: &str,
        kind: &str,
        payload: &T,
    ) -> Result<usize, SendError> {
        Ok(self.0.delivery.to_user(user_id, &self.pack(kind, payload)?))
    }

    /// Sends `[kind, payload, null]` to every connection of every user, encoded once; returns
    /// how many connections took it.
    ///
    /// # Errors
    /// [`SendError::InvalidKind`] if `kind` is empty or reserved, [`SendError::Encode`] if the
    /// payload cannot be encoded.
    pub fn broadcast<T: Serialize + ?Sized>(
        &self,
        kind: &str,
        payload: &T,
    ) -> Result<usize, SendError> {
        Ok(self.0.delivery.to_all(&self.pack(kind, payload)?))
    }

    /// Closes one connection with 1000 and `reason`; false if it is not open here.
    pub fn drop_connection(&self, id: ConnectionId, reason: impl Into<String>) -> bool {
        self.0.users.connection(id).is_some_and(|c| c.close(reason))
    }

    /// Closes every connection of `user_id` with 1000 and `reason`; returns how many.
    pub fn drop_user(&self, user_id: &str, reason: impl Into<String>) -> usize {
        let reason = reason.into();
        self.0
            .users
            .connections_of(user_id)
            .iter()
            .filter(|c| c.close(reason.clone()))
            .count()
    }

    /// The users with at least one open connection here.
    pub fn users(&self) -> Vec<Arc<str>> {
        self.0.users.user_ids()
    }

    /// The open connections of `user_id`, oldest first.
    pub fn connections_of(&self, user_id: &str) -> Vec<Connection> {
        self.0.users.connections_of(user_id)
    }

    /// The open connection `id`.
    pub fn connection(&self, id: ConnectionId) -> Option<Connection> {
        self.0.users.connection(id)
    }

    /// How many (users, connections) are open here.
    pub fn counts(&self) -> (usize, usize) {
        self.0.users.counts()
    }

    /// Binds `addr` and serves on it.
    ///
    /// # Errors
    /// The I/O error of binding.
    ///
    /// # Cancel safety
    /// Cancel-safe: until it returns, nothing is served.
    pub async fn bind(&self, addr: impl ToSocketAddrs) -> io::Result<Serving> {
        self.serve(TcpListener::bind(addr).await?)
    }

    /// Serves one stream that is already accepted (a TLS stream from your acceptor, a Unix
    /// socket, an in-memory duplex) until the connection ends: WebSocket upgrade, handshake,
    /// and everything after, exactly as for a socket from [`Server::bind`]. `remote_addr` is
    /// what identify and [`Connection::remote_addr`] see.
    ///
    /// # Cancel safety
    /// Dropping the future drops the connection abruptly (no close frame).
    pub async fn serve_io<S>(&self, io: S, remote_addr: std::net::SocketAddr)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // No listener's shutdown reaches this connection.
        task::run(self.clone(), io, remote_addr, None).await;
    }

    /// Serves on `listener` in a background task.
    ///
    /// # Errors
    /// The I/O error of reading the listener's address.
    pub fn serve(&self, listener: TcpListener) -> io::Result<Serving> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(self.clone(), listener, stopped));
        Ok(Serving {
            local_addr,
            stop,
            task,
        })
    }
}

/// A server serving on one listener.
///
/// Dropping it leaves the server running; [`Serving::shutdown`] stops it.
#[derive(Debug)]
pub struct Serving {
    local_addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Serving {
    /// The address it listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection with 1012 `wse.by-server` (clients with
    /// reconnect enabled come back), and waits until every connection task has ended (each
    /// bounded by the close timeout).
    ///
    /// # Cancel safety
    /// The stop is requested at once; dropping the future only stops the waiting.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Resolves when the listener is told to stop; never if its [`Serving`] is dropped (which
/// leaves it running).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A listener's stop flag, held by the connections it accepted.
#[derive(Debug, Default)]
pub(crate) struct Listener {
    stopping: AtomicBool,
}

impl Listener {
    /// Whether the listener is shutting down.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

async fn accept_loop(server: Server, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    // Each connection task holds a clone of `done`; when the last is dropped, they are all over.
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let this = Arc::new(Listener::default());
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote_addr)) => {
                    // Replies are small and latency matters more than packet count; the
                    // writer batches what is queued.
                    let _ = tcp.set_nodelay(true);
                    let done = done.clone();
                    let serving =
                        task::run(server.clone(), tcp, remote_addr, Some(Arc::clone(&this)));
                    // `map`, not an `async` block around it, which would hold the connection's
                    // future twice.
                    tokio::spawn(serving.map(move |()| drop(done)));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    // The flag first, then the list: a connection listed after this look sees the flag (the
    // registry's lock orders the two), and closes itself.
    this.stopping.store(true, Ordering::SeqCst);
    for connection in server.shared().users.all() {
        if connection
            .listener()
            .is_some_and(|of| Arc::ptr_eq(of, &this))
        {
            connection.close_with(close_code::SERVICE_RESTART, CloseReason::ByServer);
        }
    }
    drop(done);
    let _ = all_done.recv().await;
}
