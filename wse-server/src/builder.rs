//! [`Builder`]: every setting of a [`Server`], each with its documented default.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use wse_core::outbox::Close;
use wse_core::transport::Heartbeat;
use wse_core::{Json, Protocol, SessionConfig};

use crate::auth::{BoxFuture, Challenge, Decision, Handshake, Identify};
use crate::builtin::{Builtins, DirectMessages, Logout, PresenceProcedures, RoomProcedures};
use crate::connection::Connection;
use crate::delivery::{Delivery, LocalDelivery, Overflow, UserLimit};
use crate::limits::{AuthFailureLimit, RateLimit};
use crate::server::Server;
use crate::upgrade::{Gatekeeper, UpgradeDecision, UpgradeRequest, normalise_origin};

/// The settings of a server; see [`Builder`] for each default.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) conn_per_user: UserLimit,
    pub(crate) session: SessionConfig,
    pub(crate) outbound_queue: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) heartbeat: Option<Heartbeat>,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_address: usize,
    pub(crate) auth_failure_limit: AuthFailureLimit,
    pub(crate) call_latency: bool,
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

/// Builds a [`Server`]. Every setting has a safe default.
#[must_use]
pub struct Builder {
    pub(crate) identify: Identify,
    pub(crate) challenge: Option<Arc<dyn Challenge>>,
    pub(crate) codecs: Vec<Arc<dyn Protocol>>,
    pub(crate) config: Config,
    pub(crate) events_capacity: usize,
    pub(crate) delivery: Option<WrapDelivery>,
    pub(crate) state: StateMap,
    pub(crate) on_disconnect: Option<OnDisconnect>,
    pub(crate) builtins: Builtins,
    pub(crate) gatekeeper: Gatekeeper,
}

/// The application's state, by type.
pub(crate) type StateMap = HashMap<TypeId, Arc<dyn Any + Send + Sync>>;

/// The hook run after a connection ended.
pub(crate) type OnDisconnect = Arc<dyn Fn(Connection, Close) -> BoxFuture<()> + Send + Sync>;

/// Makes the delivery engine from this node's local index.
pub(crate) type WrapDelivery = Box<dyn FnOnce(LocalDelivery) -> Box<dyn Delivery> + Send>;

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
    /// A builder whose identify step is `identify`, every other setting at its default.
    pub(crate) fn new<F, Fut>(identify: F) -> Self
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Decision> + Send + 'static,
    {
        Self {
            identify: Arc::new(move |handshake| Box::pin(identify(handshake))),
            challenge: None,
            codecs: vec![Arc::new(Json)],
            config: Config {
                conn_per_user: UserLimit {
                    max: 1,
                    overflow: Overflow::CloseOldest,
                },
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
                call_latency: false,
            },
            events_capacity: 1024,
            delivery: None,
            state: StateMap::new(),
            on_disconnect: None,
            builtins: Builtins::default(),
            gatekeeper: Gatekeeper::default(),
        }
    }

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
    /// OLDEST connection with `wse.clients-concurrency`, unless
    /// [`Builder::conn_per_user_overflow`] says otherwise. Default: 1.
    ///
    /// # Panics
    /// If `limit` is zero.
    pub fn conn_per_user(mut self, limit: usize) -> Self {
        assert!(limit > 0, "conn_per_user must be at least 1");
        self.config.conn_per_user.max = limit;
        self
    }

    /// What a connection past [`Builder::conn_per_user`] does: close the user's oldest
    /// connection ([`Overflow::CloseOldest`], what `wse` does) or be refused itself with
    /// 1000 `wse.clients-concurrency` ([`Overflow::RefuseNewest`]). Default: close the oldest.
    pub fn conn_per_user_overflow(mut self, overflow: Overflow) -> Self {
        self.config.conn_per_user.overflow = overflow;
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
    /// [`Connection::call`](crate::Connection::call) fails with `wse.client.rp.too-many-pending`. Default: 1024.
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

    /// How many connections one client address may hold at once; past it its new sockets are
    /// dropped before the upgrade (or, for a request through a trusted proxy, answered with
    /// 429). Behind a proxy, declare it with [`Builder::trusted_proxy`] so that the limit
    /// counts each client's own address. Default: 10,000.
    ///
    /// # Panics
    /// If `max` is zero.
    pub fn max_connections_per_address(mut self, max: usize) -> Self {
        assert!(max > 0, "max_connections_per_address must be at least 1");
        self.config.max_connections_per_address = max;
        self
    }

    /// Admit browsers only from `origin` (`https://app.example`), and from every other origin
    /// given the same way: an upgrade request whose `Origin` header names none of them gets
    /// 403 before any WebSocket work. A request without `Origin` (not from a browser, which
    /// always sends it) is admitted. Compared by scheme, host and port, ignoring case and any
    /// path. Default: every origin.
    ///
    /// Browsers do not apply the same-origin policy to WebSockets, and they send cookies with
    /// the upgrade: a server that authenticates by cookie needs this list against cross-site
    /// WebSocket hijacking.
    pub fn allow_origin(mut self, origin: impl AsRef<str>) -> Self {
        let origin = normalise_origin(origin.as_ref());
        if !self.gatekeeper.origins.contains(&origin) {
            self.gatekeeper.origins.push(origin);
        }
        self
    }

    /// Trust `proxy` (an address, or a network such as `10.0.0.0/8`), and every other proxy
    /// given the same way, to say who the client is: for a request from one of them, the
    /// client's address is the nearest address in `X-Forwarded-For`, read from the right,
    /// that is not a trusted proxy. That address is what the per-address limits count and what
    /// [`Connection::remote_addr`](crate::Connection::remote_addr), identify and the upgrade
    /// filter see ([`UpgradeRequest::client_addr`]). The header of anyone else is ignored.
    /// Default: nobody.
    ///
    /// ```
    /// use std::net::{IpAddr, Ipv4Addr};
    /// use wse_server::{Decision, IpNet, Server};
    ///
    /// let private: IpNet = "10.0.0.0/8".parse().unwrap();
    /// let server = Server::builder(|_| async { Decision::refuse() })
    ///     .trusted_proxy(private)
    ///     .trusted_proxy(IpAddr::V4(Ipv4Addr::LOCALHOST))
    ///     .build();
    /// ```
    pub fn trusted_proxy(mut self, proxy: impl Into<IpNet>) -> Self {
        let proxy = proxy.into().trunc();
        if !self.gatekeeper.proxies.contains(&proxy) {
            self.gatekeeper.proxies.push(proxy);
        }
        self
    }

    /// Decide about each upgrade request before any WebSocket work, from its method, path,
    /// query, headers (`Origin`, `Cookie`, `X-Forwarded-For`, ...) and addresses: admit it, or
    /// deny it with an HTTP status (403 with [`UpgradeDecision::deny`]). It runs after the
    /// Origin allow-list and the connection limits, within the handshake timeout (past which
    /// the request gets 503). A denied request costs no WebSocket and no connection task.
    /// Default: admit every request.
    ///
    /// ```
    /// use wse_server::{Decision, Server, UpgradeDecision};
    /// use wse_server::http::StatusCode;
    ///
    /// let server = Server::builder(|_| async { Decision::refuse() })
    ///     .upgrade_filter(|request| async move {
    ///         match request.path.as_str() {
    ///             "/ws" if request.cookie("session").is_some() => UpgradeDecision::Admit,
    ///             "/ws" => UpgradeDecision::Deny(StatusCode::UNAUTHORIZED),
    ///             _ => UpgradeDecision::Deny(StatusCode::NOT_FOUND),
    ///         }
    ///     })
    ///     .build();
    /// ```
    pub fn upgrade_filter<F, Fut>(mut self, filter: F) -> Self
    where
        F: Fn(Arc<UpgradeRequest>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = UpgradeDecision> + Send + 'static,
    {
        self.gatekeeper.filter = Some(Arc::new(move |request| Box::pin(filter(request))));
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
    /// and how long a write may wait for the peer to take its next frame before the
    /// connection is closed as a slow consumer (1013 `wse.slow-consumer`). Default: 5 s.
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

    /// Route every send, membership change and query through `wrap(local)`: a cluster
    /// backplane that acts on this node through `local` and reaches the other nodes too. See
    /// [`Delivery`]. Default: [`LocalDelivery`], this node only.
    pub fn delivery<D: Delivery>(
        mut self,
        wrap: impl FnOnce(LocalDelivery) -> D + Send + 'static,
    ) -> Self {
        self.delivery = Some(Box::new(move |local| Box::new(wrap(local))));
        self
    }

    /// Whether each call's duration is recorded in the `wse_call_seconds` histogram (the
    /// calls are counted by procedure and outcome either way). It reads the clock twice per
    /// call and records into a histogram every core writes: with a Prometheus recorder it
    /// measured at 0.88–0.91× of the rpc benchmark's calls/s (BENCHMARKS.md). Default: off.
    pub fn call_latency(mut self, on: bool) -> Self {
        self.config.call_latency = on;
        self
    }

    /// Shares `state` with every handler, which reads it with
    /// [`Connection::state`] (or [`Server::state`]): the application's database pool or
    /// configuration, without a global. One value per type; a second of the same type
    /// replaces the first.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use serde_json::json;
    /// use wse_server::{Connection, Decision, NoArgs, RpcError, Server};
    ///
    /// #[derive(Default)]
    /// struct Counter(AtomicU64);
    ///
    /// let server = Server::builder(|_| async { Decision::accept("ann", json!({})) })
    ///     .state(Counter::default())
    ///     .build();
    /// server.register("count", |conn: Connection, NoArgs| async move {
    ///     let counter = conn.state::<Counter>().ok_or_else(|| RpcError::unexpected("no counter"))?;
    ///     Ok(counter.0.fetch_add(1, Ordering::Relaxed) + 1)
    /// }).unwrap();
    /// ```
    pub fn state<T: Any + Send + Sync>(mut self, state: T) -> Self {
        self.state.insert(TypeId::of::<T>(), Arc::new(state));
        self
    }

    /// Runs `hook` after each accepted connection ended, with the close it ended with (ours
    /// when this side closed, the peer's otherwise, 1006 when the socket just ended): it is
    /// out of its user, its rooms and presence by then, and its running procedures were
    /// cancelled (or the close timeout passed while one was still being dropped). It runs on the connection's task, which [`Server::shutdown`] waits for.
    pub fn on_disconnect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Connection, Close) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_disconnect = Some(Arc::new(move |connection, close| {
            Box::pin(hook(connection, close))
        }));
        self
    }

    /// Switches on the room procedures (`rooms.join`, `rooms.leave`, `rooms.mine`); see
    /// [`RoomProcedures`]. Default: off.
    pub fn room_procedures(mut self, rooms: RoomProcedures) -> Self {
        self.builtins.rooms = Some(rooms);
        self
    }

    /// Switches on the presence procedures (`presence.subscribe`, `presence.unsubscribe`,
    /// `presence.online`); see [`PresenceProcedures`]. Default: off.
    pub fn presence_procedures(mut self, presence: PresenceProcedures) -> Self {
        self.builtins.presence = Some(presence);
        self
    }

    /// Switches on private messages (`dm.send`); see [`DirectMessages`]. Default: off.
    pub fn direct_messages(mut self, direct_messages: DirectMessages) -> Self {
        self.builtins.direct_messages = Some(direct_messages);
        self
    }

    /// Switches on the logout procedure (`logout`); see [`Logout`]. Default: off.
    pub fn logout(mut self, logout: Logout) -> Self {
        self.builtins.logout = Some(logout);
        self
    }

    /// The server.
    ///
    /// # Panics
    /// If two built-in procedures were given one name, or an empty or reserved one.
    pub fn build(self) -> Server {
        Server::new(self)
    }
}
