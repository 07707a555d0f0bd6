//! The client: connect (hi, challenge, welcome), call, send, procedures the server calls,
//! status, close, jump, and the driver task that reconnects.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use wse_core::outbox::{Close, Closer, Outbox, outbox};
use wse_core::transport::{
    HEARTBEAT_TIMEOUT, Heartbeat, Liveness, Pulse, close_for_read_error, message_data, pulse,
    write_loop,
};
use wse_core::{
    CallError, CloseReason, Context, ErrorCode, HmacQuest, Json, Protocol, ProtocolViolation,
    RegisterError, Registry, Report, RpcError, SendError, Session, SessionConfig, close_code,
    frame,
};

use crate::reconnect::Reconnect;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Solver = Arc<dyn Fn(Value) -> BoxFuture<Result<Value, String>> + Send + Sync>;

/// Where the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Never connected, or closed on purpose.
    Idle,
    /// Opening a connection and running the handshake.
    Connecting,
    /// Welcomed: calls and messages flow.
    Ready,
    /// The connection ended and the client will not come back by itself.
    Offline,
    /// The connection ended; the client waits to reconnect.
    Reconnecting,
}

/// Connecting failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// `connect` while connected or connecting (`wse.client.already-connected`).
    #[error("{code}: the client is already connected", code = ErrorCode::AlreadyConnected)]
    AlreadyConnected,
    /// The server refused the identity (`wse.not-authorized`). Never retried.
    #[error("{code}: the server refused the identity", code = ErrorCode::NotAuthorized)]
    NotAuthorized,
    /// The WebSocket could not be opened or failed (`wse.client.ws-error`).
    #[error("{code}: {0}", code = ErrorCode::WsError)]
    Transport(String),
    /// The challenge could not be solved (`wse.client.invalid-cra-handler`).
    #[error("{code}: {0}", code = ErrorCode::InvalidCraHandler)]
    Challenge(String),
    /// No welcome within the handshake timeout.
    #[error("no welcome within the handshake timeout")]
    Timeout,
    /// The server closed the connection before the welcome.
    #[error("closed before the welcome: {code} {reason:?}")]
    Closed {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The client was closed while connecting.
    #[error("the client was closed")]
    ClientClosed,
    /// Not connected, and no earlier identity to reconnect with (`wse.client.not-ready`).
    #[error("{code}: not connected", code = ErrorCode::NotReady)]
    NotReady,
}

impl ConnectError {
    /// The wire code this error stands for, where the protocol has one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::AlreadyConnected => Some(ErrorCode::AlreadyConnected),
            Self::NotAuthorized => Some(ErrorCode::NotAuthorized),
            Self::Transport(_) => Some(ErrorCode::WsError),
            Self::Challenge(_) => Some(ErrorCode::InvalidCraHandler),
            Self::NotReady => Some(ErrorCode::NotReady),
            Self::Timeout | Self::Closed { .. } | Self::ClientClosed => None,
        }
    }
}

/// Something the client tells the application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Welcomed (after every reconnect too).
    Ready {
        /// The server's welcome payload.
        welcome: Value,
    },
    /// A connection ended.
    Closed {
        /// The close code the server sent (or echoed), 1006 when the socket just ended.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// A one-way message of a type with no handler.
    Ignored {
        /// Its type.
        kind: String,
    },
    /// The server sent a frame that breaks the protocol; it was skipped.
    ProtocolViolation(ProtocolViolation),
    /// Anything else the RPC engine noticed (a failed procedure, a stale response, …).
    Report(Report),
}

/// Builds a [`Client`].
#[must_use]
pub struct Builder {
    url: String,
    protocol: Arc<dyn Protocol>,
    solver: Option<Solver>,
    config: Config,
    #[cfg(feature = "rustls")]
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("url", &self.url)
            .field("protocol", &self.protocol.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Config {
    session: SessionConfig,
    handshake_timeout: Duration,
    close_timeout: Duration,
    outbound_queue: usize,
    max_message_size: usize,
    reconnect: Option<Reconnect>,
    heartbeat: Option<Heartbeat>,
}

impl Builder {
    /// Speak `protocol` (default [`Json`]); the server must offer it.
    pub fn protocol(mut self, protocol: impl Protocol) -> Self {
        self.protocol = Arc::new(protocol);
        self
    }

    /// How long a call waits for its answer unless the call says otherwise. Default: 20 s.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.session.call_timeout = timeout;
        self
    }

    /// How many calls of this client may wait for an answer at once; past it a call fails
    /// with `wse.client.rp.too-many-pending`. Default: 1024.
    ///
    /// # Panics
    /// If `max` is zero.
    pub fn max_pending_calls(mut self, max: usize) -> Self {
        assert!(max > 0, "max_pending_calls must be at least 1");
        self.config.session.max_pending_calls = max;
        self
    }

    /// How many of the server's calls to this client's procedures may be waiting at once (one
    /// that finishes without waiting never counts); past it a call is refused with
    /// `wse.server.rp.too-many-calls`. Default: 1024.
    ///
    /// # Panics
    /// If `max` is zero.
    pub fn max_running_calls(mut self, max: usize) -> Self {
        assert!(max > 0, "max_running_calls must be at least 1");
        self.config.session.max_running_calls = max;
        self
    }

    /// How long connect → welcome may take (including the challenge). Default: 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// How many frames may wait to be written; a full queue fails `send` with
    /// [`SendError::Full`] and makes calls wait. Default: 1024.
    ///
    /// # Panics
    /// If `frames` is zero.
    pub fn outbound_queue(mut self, frames: usize) -> Self {
        assert!(frames > 0, "the outbound queue needs room for one frame");
        self.config.outbound_queue = frames;
        self
    }

    /// The largest message the server may send. Default: 16 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// Reconnect automatically after the close codes of the protocol, with `policy`'s backoff.
    /// Default: off (a jump, close code 4000, reconnects anyway).
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.config.reconnect = Some(policy);
        self
    }

    /// Ping a server that has been quiet, and close (1011 `wse.heartbeat-timeout`, which
    /// reconnects when enabled) one silent past the timeout, or `None` for no heartbeat.
    /// Default: ping after 25 s of quiet, give up after 60 s of silence.
    ///
    /// # Panics
    /// If the interval is zero or longer than the timeout.
    pub fn heartbeat(mut self, heartbeat: Option<Heartbeat>) -> Self {
        self.config.heartbeat = heartbeat.map(Heartbeat::checked);
        self
    }

    /// Answer the server's challenge with `solver(quest)`. An `Err` closes the connection and
    /// fails the connect with [`ConnectError::Challenge`].
    pub fn challenge<F, Fut>(mut self, solver: F) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, String>> + Send + 'static,
    {
        self.solver = Some(Arc::new(move |quest| Box::pin(solver(quest))));
        self
    }

    /// Use `config` for `wss://` URLs (e.g. to trust a private certificate authority).
    /// Default: the webpki roots.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Answer the standard HMAC challenge with `secret`.
    pub fn hmac_secret(self, secret: impl Into<Vec<u8>>) -> Self {
        let secret: Arc<[u8]> = Arc::from(secret.into());
        self.challenge(move |quest| {
            let secret = Arc::clone(&secret);
            async move {
                let quest: HmacQuest =
                    serde_json::from_value(quest).map_err(|e| format!("not an HMAC quest: {e}"))?;
                Ok(Value::String(quest.solve(&secret)))
            }
        })
    }

    /// The client (not connected yet).
    pub fn build(self) -> Client {
        Client(Arc::new(Inner {
            #[cfg(feature = "rustls")]
            tls: self.tls,
            protocol: self.protocol,
            registry: Arc::new(Registry::new()),
            solver: self.solver,
            config: self.config,
            state: Mutex::new(State {
                url: self.url,
                login: None,
                session: None,
                close: None,
                driving: false,
                intent: Intent::Stay,
                waiters: Vec::new(),
            }),
            status: watch::Sender::new(Status::Idle),
            events: broadcast::Sender::new(256),
            wake: Notify::new(),
        }))
    }
}

/// A WSE client. A cheap handle: clone it into tasks and handlers.
///
/// Procedures and message handlers registered on it survive reconnects.
#[derive(Clone)]
pub struct Client(Arc<Inner>);

struct Inner {
    /// The TLS configuration of `wss://` connections, when set.
    #[cfg(feature = "rustls")]
    tls: Option<Arc<rustls::ClientConfig>>,
    protocol: Arc<dyn Protocol>,
    registry: Arc<Registry<Client>>,
    solver: Option<Solver>,
    config: Config,
    state: Mutex<State>,
    status: watch::Sender<Status>,
    /// Bounded: a subscriber that lags loses the oldest events.
    events: broadcast::Sender<ClientEvent>,
    /// Wakes a driver waiting to reconnect when the client is closed or jumps.
    wake: Notify,
}

/// Asks the live connection to close: its writer sends the close frame, and its reader stops
/// at once rather than when the writer is done (a server that stopped reading could hold the
/// writer, and the closing handshake is bounded by the close timeout only after the reader).
#[derive(Clone)]
struct CloseHandle {
    closer: Closer,
    asked: Arc<Notify>,
}

impl CloseHandle {
    fn request(&self, close: Close) {
        if self.closer.request(close) {
            // A permit if the reader is not waiting yet: it is not lost.
            self.asked.notify_one();
        }
    }

    fn requested(&self) -> Option<Close> {
        self.closer.requested()
    }
}

struct State {
    url: String,
    /// Identity and meta of the last connect, sent again on every reconnect.
    login: Option<(Value, Value)>,
    /// The engine of the live connection, while ready.
    session: Option<Session<Client>>,
    /// Closes the live socket, from upgrade to end.
    close: Option<CloseHandle>,
    /// Whether a driver task runs (from connect until it gives up).
    driving: bool,
    intent: Intent,
    /// Callers of connect and jump waiting for the next welcome.
    waiters: Vec<oneshot::Sender<Result<Value, ConnectError>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Stay,
    Close,
    Jump,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.state().url)
            .field("protocol", &self.0.protocol.name())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Context for Client {
    fn report(&self, report: Report) {
        let event = match report {
            Report::Ignored { kind } => ClientEvent::Ignored { kind },
            other => ClientEvent::Report(other),
        };
        self.emit(event);
    }
}

impl Client {
    /// A builder for a client of the server at `url` (`ws://host:port/path`).
    pub fn builder(url: impl Into<String>) -> Builder {
        Builder {
            url: url.into(),
            protocol: Arc::new(Json),
            solver: None,
            #[cfg(feature = "rustls")]
            tls: None,
            config: Config {
                session: SessionConfig::default(),
                handshake_timeout: Duration::from_secs(10),
                close_timeout: Duration::from_secs(5),
                outbound_queue: 1024,
                max_message_size: 16 << 20,
                reconnect: None,
                heartbeat: Some(Heartbeat::default()),
            },
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Only plain field updates run under this lock: a poisoned lock still holds valid state.
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, event: ClientEvent) {
        let _ = self.0.events.send(event);
    }

    fn set_status(&self, status: Status) {
        self.0.status.send_replace(status);
    }

    /// The current status.
    pub fn status(&self) -> Status {
        *self.0.status.borrow()
    }

    /// A receiver that sees every status change from now on.
    pub fn status_changes(&self) -> watch::Receiver<Status> {
        self.0.status.subscribe()
    }

    /// Subscribes to [`ClientEvent`]s from now on.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.0.events.subscribe()
    }

    /// The URL the client connects to.
    pub fn url(&self) -> String {
        self.state().url.clone()
    }

    /// The name of the codec the client speaks.
    pub fn protocol(&self) -> &str {
        self.0.protocol.name()
    }

    /// Connects, says hi with `identity` and `meta`, solves the challenge if one comes, and
    /// returns the server's welcome payload.
    ///
    /// With reconnect enabled, transport failures are retried until a welcome (or a refusal)
    /// arrives; bound the wait with `tokio::time::timeout` if needed.
    ///
    /// # Errors
    /// [`ConnectError`]: already connected, refused, transport failure, challenge, timeout.
    ///
    /// # Cancel safety
    /// Dropping the future does not stop the connection attempt; call [`Client::close`].
    pub async fn connect(&self, identity: Value, meta: Value) -> Result<Value, ConnectError> {
        let welcome = {
            let mut state = self.state();
            if state.driving {
                return Err(ConnectError::AlreadyConnected);
            }
            state.driving = true;
            state.intent = Intent::Stay;
            state.login = Some((identity, meta));
            let (tx, rx) = oneshot::channel();
            state.waiters.push(tx);
            rx
        };
        tokio::spawn(drive(self.clone()));
        welcome.await.unwrap_or(Err(ConnectError::ClientClosed))
    }

    /// Leaves for the server at `url`: closes the connection with 4000 `jump` and connects
    /// there with the same identity and meta; returns the new welcome.
    ///
    /// # Errors
    /// As [`Client::connect`]; [`ConnectError::NotReady`] if the client never connected.
    ///
    /// # Cancel safety
    /// As [`Client::connect`].
    pub async fn jump(&self, url: impl Into<String>) -> Result<Value, ConnectError> {
        let (welcome, close, login) = {
            let mut state = self.state();
            state.url = url.into();
            let (tx, rx) = oneshot::channel();
            if state.driving {
                state.intent = Intent::Jump;
                state.waiters.push(tx);
            }
            (rx, state.close.clone(), state.login.clone())
        };
        match close {
            Some(close) => {
                close.request(Close::new(close_code::JUMP, "jump"));
                self.0.wake.notify_one();
                welcome.await.unwrap_or(Err(ConnectError::ClientClosed))
            }
            None if self.state().driving => {
                // Between connections: the driver picks up the new URL on its next attempt.
                self.0.wake.notify_one();
                welcome.await.unwrap_or(Err(ConnectError::ClientClosed))
            }
            None => match login {
                Some((identity, meta)) => self.connect(identity, meta).await,
                None => Err(ConnectError::NotReady),
            },
        }
    }

    /// Closes the connection with 1000 and `reason` (e.g. [`CloseReason::ByClient`]), stops
    /// reconnecting, and waits until the socket is closed.
    ///
    /// # Cancel safety
    /// The close is requested at once; dropping the future only stops the waiting.
    pub async fn close(&self, reason: impl Into<String>) {
        let close = {
            let mut state = self.state();
            if !state.driving {
                return;
            }
            state.intent = Intent::Close;
            state.close.clone()
        };
        if let Some(close) = close {
            close.request(Close::new(close_code::NORMAL, reason));
        }
        self.0.wake.notify_one();
        let mut status = self.status_changes();
        let _ = status
            .wait_for(|status| matches!(status, Status::Idle | Status::Offline))
            .await;
    }

    fn session(&self) -> Option<Session<Client>> {
        self.state().session.clone()
    }

    /// Calls the server's procedure `procedure` with `args`, with the client's call timeout.
    ///
    /// # Errors
    /// [`CallError`]: `NotReady` when not connected, `Timeout`, `Disconnected` at once when
    /// the connection drops, or the server's error with its code and details.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the call; a late answer is dropped.
    pub fn call<R, A>(
        &self,
        procedure: &str,
        args: &A,
    ) -> impl Future<Output = Result<R, CallError>> + Send + 'static + use<R, A>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        let call = self.session().map(|session| session.call(procedure, args));
        async move {
            match call {
                Some(call) => call.await,
                None => Err(CallError::NotReady),
            }
        }
    }

    /// Like [`Client::call`], waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Client::call`].
    ///
    /// # Cancel safety
    /// As [`Client::call`].
    pub fn call_with_timeout<R, A>(
        &self,
        procedure: &str,
        args: &A,
        timeout: Duration,
    ) -> impl Future<Output = Result<R, CallError>> + Send + 'static + use<R, A>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        let call = self
            .session()
            .map(|session| session.call_with_timeout(procedure, args, timeout));
        async move {
            match call {
                Some(call) => call.await,
                None => Err(CallError::NotReady),
            }
        }
    }

    /// Sends the one-way message `[kind, payload, null]` to the server. Never waits.
    ///
    /// # Errors
    /// [`SendError::Closed`] when not connected (`wse.client.not-ready`), `Full`, an invalid
    /// type, or an encoding failure.
    pub fn send<T: Serialize + ?Sized>(&self, kind: &str, payload: &T) -> Result<(), SendError> {
        match self.session() {
            Some(session) => session.send(kind, payload),
            None => Err(SendError::Closed),
        }
    }

    /// Registers the async procedure `name`, which the server may call on this client.
    ///
    /// # Errors
    /// [`RegisterError`] if the name is taken, empty or reserved.
    pub fn register<A, R, F, Fut>(
        &self,
        name: impl Into<String>,
        procedure: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn(Client, A) -> Fut + Send + Sync + 'static,
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

    /// Sets the handler of the server's one-way messages of type `kind` (replacing any).
    /// Handlers run on the read loop in arrival order and must not block.
    ///
    /// # Errors
    /// [`RegisterError::InvalidName`] if `kind` is empty or reserved.
    pub fn on<T, F>(&self, kind: impl Into<String>, handler: F) -> Result<(), RegisterError>
    where
        F: Fn(Client, T) + Send + Sync + 'static,
        T: DeserializeOwned + 'static,
    {
        self.0.registry.on(kind, handler)
    }

    /// Removes the handler of `kind`; returns whether there was one.
    pub fn off(&self, kind: &str) -> bool {
        self.0.registry.off(kind)
    }

    fn settle_waiters(&self, result: &Result<Value, ConnectError>) {
        let waiters = std::mem::take(&mut self.state().waiters);
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

/// How one connection ended.
struct Ended {
    close: Close,
    /// Set when the connection ended before the welcome.
    failure: Option<ConnectError>,
}

/// The driver: connects, serves the connection, and reconnects as the policy says, until it
/// gives up or the client is closed.
async fn drive(client: Client) {
    let mut attempt = 0u32;
    loop {
        let (url, login) = {
            let state = client.state();
            (state.url.clone(), state.login.clone())
        };
        let (identity, meta) = login.unwrap_or_default();
        client.set_status(Status::Connecting);
        let ended = run_once(&client, &url, identity, meta).await;
        let code = ended.close.code;
        client.emit(ClientEvent::Closed {
            code,
            reason: ended.close.reason.clone(),
        });
        if ended.failure.is_none() {
            attempt = 0;
        }

        let intent = std::mem::replace(&mut client.state().intent, Intent::Stay);
        let refused = ended.failure == Some(ConnectError::NotAuthorized);
        let retry = match intent {
            Intent::Close => None,
            Intent::Jump => Some(Duration::ZERO),
            Intent::Stay if refused => None,
            Intent::Stay if code == close_code::JUMP => Some(Duration::ZERO),
            Intent::Stay => client
                .0
                .config
                .reconnect
                .filter(|_| Reconnect::retries_after(code))
                .map(|policy| policy.delay(attempt)),
        };
        let Some(delay) = retry else {
            let failure = match intent {
                Intent::Close => ConnectError::ClientClosed,
                _ => ended.failure.unwrap_or(ConnectError::Closed {
                    code,
                    reason: ended.close.reason,
                }),
            };
            client.settle_waiters(&Err(failure));
            client.state().driving = false;
            client.set_status(if intent == Intent::Close {
                Status::Idle
            } else {
                Status::Offline
            });
            return;
        };
        client.set_status(Status::Reconnecting);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = client.0.wake.notified() => {}
        }
        if client.state().intent == Intent::Close {
            client.settle_waiters(&Err(ConnectError::ClientClosed));
            client.state().driving = false;
            client.set_status(Status::Idle);
            return;
        }
        attempt = attempt.saturating_add(1);
    }
}

/// One connection: open, handshake, serve until it ends.
async fn run_once(client: &Client, url: &str, identity: Value, meta: Value) -> Ended {
    let inner = &client.0;
    let config = &inner.config;
    let deadline = Instant::now() + config.handshake_timeout;
    let failed = |failure: ConnectError| Ended {
        close: Close::new(1006, ""),
        failure: Some(failure),
    };

    let mut request = match url.into_client_request() {
        Ok(request) => request,
        Err(error) => return failed(ConnectError::Transport(error.to_string())),
    };
    match HeaderValue::from_str(inner.protocol.name()) {
        Ok(name) => request.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, name),
        Err(error) => return failed(ConnectError::Transport(error.to_string())),
    };
    let websocket = WebSocketConfig::default()
        .read_buffer_size(8 << 10)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size));
    let opened = tokio::time::timeout_at(deadline, open(inner, request, websocket)).await;
    let ws = match opened {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(error)) => return failed(ConnectError::Transport(error.to_string())),
        Err(_) => return failed(ConnectError::Timeout),
    };

    let (sink, mut stream) = ws.split();
    let (outbound, queue) = outbox(config.outbound_queue);
    let close = CloseHandle {
        closer: outbound.closer(),
        asked: Arc::new(Notify::new()),
    };
    let ping = Arc::new(Notify::new());
    let mut writer = tokio::spawn({
        let kind = inner.protocol.message_kind();
        let ping = Arc::clone(&ping);
        async move {
            let _ = write_loop(sink, queue, ping, kind).await;
        }
    });
    {
        let mut state = client.state();
        if state.intent == Intent::Close {
            close.request(Close::new(close_code::NORMAL, CloseReason::ByClient));
        }
        state.close = Some(close.clone());
    }

    let mut peer_close = None;
    let welcome = handshake(
        client,
        &mut stream,
        &outbound,
        &close,
        &mut peer_close,
        json!({"identity": identity, "meta": meta}),
        deadline,
    )
    .await;

    let mut silent = false;
    let failure = match welcome {
        Ok(welcome) => {
            let session = Session::new(
                Arc::clone(&inner.protocol),
                outbound,
                Arc::clone(&inner.registry),
                config.session,
            );
            client.state().session = Some(session.clone());
            client.set_status(Status::Ready);
            client.settle_waiters(&Ok(welcome.clone()));
            client.emit(ClientEvent::Ready { welcome });
            let link = Link {
                close: &close,
                ping: &ping,
                writer: &mut writer,
            };
            silent = serve(client, &session, &mut stream, link, &mut peer_close).await;
            session.close();
            client.state().session = None;
            None
        }
        Err(failure) => {
            drop(outbound);
            Some(failure)
        }
    };

    // Read to the end: this sends tungstenite's echo of the server's close frame and receives
    // the server's answer to ours. Bounded, so a silent server cannot hold the client.
    // A server that stopped answering will not answer our close frame either.
    let patience = if silent {
        Duration::ZERO
    } else {
        config.close_timeout
    };
    let until = Instant::now() + patience;
    // The deadline is checked before each read: `timeout_at` returns a ready message even past
    // its deadline, and a server that keeps sending would keep this loop going.
    while Instant::now() < until {
        let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, stream.next()).await else {
            break;
        };
        if let Message::Close(frame) = message {
            peer_close.get_or_insert(received_close(frame));
        }
    }
    // A close we asked for may still be on its way out: let the writer send it. (A finished
    // writer may have been awaited already, and must not be again.)
    if close.requested().is_some() && !writer.is_finished() {
        let _ = tokio::time::timeout_at(until, &mut writer).await;
    }
    writer.abort();
    client.state().close = None;
    // As the JS client, judge by the code the server sent (or echoed).
    let close = peer_close
        .or_else(|| close.requested())
        .unwrap_or_else(|| Close::new(1006, ""));
    let failure = failure.map(|failure| match failure {
        ConnectError::Transport(_) if close.reason == CloseReason::NotAuthorized.as_str() => {
            ConnectError::NotAuthorized
        }
        other => other,
    });
    Ended { close, failure }
}

/// Opens the WebSocket, over TLS for `wss://` when the `rustls` feature is on.
async fn open(
    inner: &Inner,
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    websocket: WebSocketConfig,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    #[cfg(feature = "rustls")]
    {
        let connector = inner.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        tokio_tungstenite::connect_async_tls_with_config(request, Some(websocket), true, connector)
            .await
    }
    #[cfg(not(feature = "rustls"))]
    {
        let _ = inner;
        tokio_tungstenite::connect_async_with_config(request, Some(websocket), true).await
    }
}

type Stream = futures_util::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
>;

fn received_close(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> Close {
    frame.map_or_else(
        || Close::new(1005, ""),
        |frame| Close::new(frame.code.into(), frame.reason.as_str()),
    )
}

/// hi → [challenge → solution] → welcome. Other frames before the welcome are ignored, as
/// the JS client does.
async fn handshake(
    client: &Client,
    stream: &mut Stream,
    outbound: &Outbox,
    close: &CloseHandle,
    peer_close: &mut Option<Close>,
    hello: Value,
    deadline: Instant,
) -> Result<Value, ConnectError> {
    let protocol = &client.0.protocol;
    let hi = protocol
        .encode(frame::HI, &hello, None)
        .map_err(|e| ConnectError::Transport(e.to_string()))?;
    outbound
        .try_send(hi.into())
        .map_err(|_| ConnectError::Transport("cannot queue hi".into()))?;
    loop {
        let message = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                close.request(Close::new(close_code::NORMAL, CloseReason::ByClient));
                return Err(ConnectError::Timeout);
            }
            Ok(None) => return Err(ConnectError::Transport("connection closed".into())),
            Ok(Some(Err(error))) => return Err(ConnectError::Transport(error.to_string())),
            Ok(Some(Ok(message))) => message,
        };
        if let Message::Close(frame) = message {
            let received = received_close(frame);
            let failure = if received.reason == CloseReason::NotAuthorized.as_str() {
                ConnectError::NotAuthorized
            } else {
                ConnectError::Closed {
                    code: received.code,
                    reason: received.reason.clone(),
                }
            };
            *peer_close = Some(received);
            return Err(failure);
        }
        let Some((_, data)) = message_data(&message) else {
            continue;
        };
        let Ok(frame) = protocol.unpack(data) else {
            continue;
        };
        match frame.kind.as_ref() {
            frame::WELCOME => {
                return protocol
                    .decode::<Value>(frame.payload)
                    .map_err(|e| ConnectError::Transport(format!("malformed welcome: {e}")));
            }
            frame::CHALLENGE => {
                let quest: Value = protocol
                    .decode(frame.payload)
                    .map_err(|e| ConnectError::Transport(format!("malformed quest: {e}")))?;
                let solution = match &client.0.solver {
                    None => Err("the server sent a challenge and no solver is set".to_owned()),
                    Some(solver) => solver(quest).await,
                };
                let answer = solution.and_then(|solution| {
                    protocol
                        .encode(frame::CHALLENGE, &solution, None)
                        .map_err(|e| e.to_string())
                });
                match answer {
                    Ok(answer) => {
                        let _ = outbound.try_send(answer.into());
                    }
                    Err(error) => {
                        close.request(Close::new(close_code::NORMAL, CloseReason::ByClient));
                        return Err(ConnectError::Challenge(error));
                    }
                }
            }
            _ => {}
        }
    }
}

/// How the read loop reaches the writer: the close request, the heartbeat's pings, and the
/// writer task itself, which ends once it has sent a close frame or the socket failed.
struct Link<'a> {
    close: &'a CloseHandle,
    ping: &'a Notify,
    writer: &'a mut tokio::task::JoinHandle<()>,
}

/// Routes the server's frames until the connection ends, a close is requested, or the writer
/// is done; true when the heartbeat gave a silent server up.
async fn serve(
    client: &Client,
    session: &Session<Client>,
    stream: &mut Stream,
    link: Link<'_>,
    peer_close: &mut Option<Close>,
) -> bool {
    let Link {
        close,
        ping,
        writer,
    } = link;
    let mut liveness = client.0.config.heartbeat.map(Liveness::new);
    // Made once, not per message: it resolves at most once, and then the loop ends.
    let mut asked = std::pin::pin!(close.asked.notified());
    loop {
        // Every arm is cancel-safe: the stream, the task, the notifier and the ticker lose
        // nothing.
        tokio::select! {
            biased;
            message = stream.next() => {
                if let (Some(Ok(_)), Some(liveness)) = (&message, liveness.as_mut()) {
                    liveness.heard();
                }
                match message {
                Some(Ok(Message::Close(frame))) => {
                    *peer_close = Some(received_close(frame));
                    return false;
                }
                Some(Ok(message)) => {
                    if let Some((kind, data)) = message_data(&message) {
                        if let Err(violation) = session.dispatch(client, data, kind) {
                            client.emit(ClientEvent::ProtocolViolation(violation));
                        }
                    }
                }
                Some(Err(error)) => {
                    if let Some(answer) = close_for_read_error(&error) {
                        close.request(answer);
                    }
                    return false;
                }
                None => return false,
            }
            }
            // The closing handshake is finished after, bounded by the close timeout.
            () = &mut asked => return false,
            // The socket failed under the writer.
            _ = &mut *writer => return false,
            beat = pulse(&mut liveness) => match beat {
                Pulse::Alive => {}
                Pulse::Ping => ping.notify_one(),
                Pulse::Dead => {
                    close.request(Close::new(HEARTBEAT_TIMEOUT.0, HEARTBEAT_TIMEOUT.1));
                    return true;
                }
            },
        }
    }
}
