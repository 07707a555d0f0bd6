//! The [`Client`] handle: connect, call, send, register procedures the server calls,
//! status, events, close and jump. The connection it drives lives in `driver.rs`.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{Notify, broadcast, oneshot, watch};
use wse_core::outbox::{Close, Closer};
use wse_core::{
    CallError, Context, ErrorCode, Protocol, ProtocolViolation, RegisterError, Registry, Report,
    RpcError, SendError, Session, close_code,
};

use crate::builder::{Builder, Config, Solver};
use crate::driver::drive;

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
    /// The server speaks none of the codecs this client offers: it answered the upgrade
    /// without choosing one (`wse.client.ws-error`).
    #[error(
        "{code}: the server speaks none of the codecs this client offers ({offered}); it chose none",
        code = ErrorCode::WsError,
        offered = offered.join(", ")
    )]
    NoCommonProtocol {
        /// What this client offered in `Sec-WebSocket-Protocol`.
        offered: Vec<String>,
    },
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
    /// Whether the server refused the connection (rather than the connect failing on the
    /// way): [`ConnectError::NotAuthorized`], or a close before the welcome that refuses by
    /// the protocol's rule ([`CloseReason::refuses`](wse_core::CloseReason::refuses): code
    /// 1000 with an application's own reason). The client retries after neither.
    ///
    /// ```
    /// use wse_client::ConnectError;
    ///
    /// assert!(ConnectError::NotAuthorized.is_refusal());
    /// let banned = ConnectError::Closed { code: 1000, reason: "app.banned".into() };
    /// assert!(banned.is_refusal());
    /// let restart = ConnectError::Closed { code: 1012, reason: String::new() };
    /// assert!(!restart.is_refusal());
    /// assert!(!ConnectError::Timeout.is_refusal());
    /// ```
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::NotAuthorized => true,
            Self::Closed { code, reason } => wse_core::CloseReason::refuses(*code, reason),
            _ => false,
        }
    }

    /// The wire code this error stands for, where the protocol has one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::AlreadyConnected => Some(ErrorCode::AlreadyConnected),
            Self::NotAuthorized => Some(ErrorCode::NotAuthorized),
            Self::Transport(_) | Self::NoCommonProtocol { .. } => Some(ErrorCode::WsError),
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
    /// A one-way message of a type with no handler, when no fallback ([`Client::on_any`])
    /// is set either.
    Ignored {
        /// Its type.
        kind: String,
    },
    /// The server sent a frame that breaks the protocol; it was skipped.
    ProtocolViolation(ProtocolViolation),
    /// Anything else the RPC engine noticed (a failed procedure, a stale response, …).
    Report(Report<'static>),
}

/// A WSE client. A cheap handle: clone it into tasks and handlers.
///
/// Procedures and message handlers registered on it survive reconnects.
#[derive(Clone)]
pub struct Client(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    /// The TLS configuration of `wss://` connections, when set.
    #[cfg(feature = "rustls")]
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) protocol: Arc<dyn Protocol>,
    pub(crate) registry: Arc<Registry<Client>>,
    pub(crate) solver: Option<Solver>,
    pub(crate) config: Config,
    state: Mutex<State>,
    status: watch::Sender<Status>,
    /// Bounded: a subscriber that lags loses the oldest events.
    events: broadcast::Sender<ClientEvent>,
    /// Wakes a driver waiting to reconnect when the client is closed or jumps.
    pub(crate) wake: Notify,
}

pub(crate) struct State {
    pub(crate) url: String,
    /// Identity and meta of the last connect, sent again on every reconnect.
    pub(crate) login: Option<(Value, Value)>,
    /// The engine of the live connection, while ready.
    pub(crate) session: Option<Session<Client>>,
    /// Closes the live socket, from upgrade to end; the close wakes the connection's loop,
    /// and cuts short a write the server does not take.
    pub(crate) close: Option<Closer>,
    /// Whether a driver task runs (from connect until it gives up).
    pub(crate) driving: bool,
    pub(crate) intent: Intent,
    /// Callers of connect and jump waiting for the next welcome.
    waiters: Vec<oneshot::Sender<Result<Value, ConnectError>>>,
}

/// What the application asked of the live connection, which the driver acts on when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intent {
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
    fn report(&self, report: Report<'_>) {
        let event = match report {
            Report::Ignored { kind } => ClientEvent::Ignored {
                kind: kind.into_owned(),
            },
            other => ClientEvent::Report(other.into_owned()),
        };
        self.emit(event);
    }
}

impl Client {
    /// A builder for a client of the server at `url` (`ws://host:port/path`).
    pub fn builder(url: impl Into<String>) -> Builder {
        Builder::new(url.into())
    }

    pub(crate) fn new(builder: Builder) -> Self {
        Self(Arc::new(Inner {
            #[cfg(feature = "rustls")]
            tls: builder.tls,
            protocol: builder.protocol,
            registry: Arc::new(Registry::new()),
            solver: builder.solver,
            config: builder.config,
            state: Mutex::new(State {
                url: builder.url,
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

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Only plain field updates run under this lock: a poisoned lock still holds valid state.
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn emit(&self, event: ClientEvent) {
        let _ = self.0.events.send(event);
    }

    pub(crate) fn set_status(&self, status: Status) {
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

    /// Closes the connection with 1000 and `reason` (e.g. [`CloseReason::ByClient`](crate::CloseReason::ByClient)), stops
    /// reconnecting, and waits until the socket is closed. A socket still opening (before the
    /// upgrade is answered) is dropped at once.
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
    /// ```
    /// use serde::Deserialize;
    /// use wse_client::{Client, RpcError};
    ///
    /// #[derive(Deserialize)]
    /// struct Question { question: String }
    ///
    /// let client = Client::builder("ws://127.0.0.1:4200").build();
    /// client.register("ask_user", |_: Client, q: Question| async move {
    ///     if q.question.is_empty() {
    ///         // The server sees this code and these details as sent.
    ///         return Err(RpcError::new("app.no-question"));
    ///     }
    ///     Ok(true)
    /// }).unwrap();
    /// ```
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

    /// Sets the fallback handler of the server's one-way messages (replacing any): it gets
    /// every message whose type has no handler of its own ([`Client::on`]), with that type.
    /// Such messages are then no longer reported as [`ClientEvent::Ignored`], which carries
    /// no payload. A type's own handler always comes first.
    ///
    /// The fallback runs as the other handlers do: on the read loop, in arrival order, and
    /// must not block. A payload that does not fit `T` is reported as
    /// [`ClientEvent::Report`] (`InvalidPayload`) and skipped: take [`Value`] to see them all.
    /// Calls from the server are not messages: they go to [`Client::register`]ed procedures
    /// (and, to a procedure not registered, to [`Client::on_unregistered_call`]).
    ///
    /// ```
    /// use serde_json::Value;
    /// use wse_client::Client;
    ///
    /// let client = Client::builder("ws://127.0.0.1:4200").build();
    /// client.on("chat", |_, text: String| println!("chat: {text}"))?;
    /// // Everything else the server sends, e.g. to log it.
    /// client.on_any(|_, kind: &str, payload: Value| println!("{kind}: {payload}"));
    /// # Ok::<_, wse_client::RegisterError>(())
    /// ```
    pub fn on_any<T, F>(&self, handler: F)
    where
        F: Fn(Client, &str, T) + Send + Sync + 'static,
        T: DeserializeOwned + 'static,
    {
        self.0.registry.on_any(handler);
    }

    /// Removes the fallback handler ([`Client::on_any`]); returns whether there was one.
    pub fn off_any(&self) -> bool {
        self.0.registry.off_any()
    }

    /// Sets the observer of the server's calls to procedures this client has not registered
    /// (replacing any): it gets each such call's procedure name and arguments, e.g. to show
    /// or log them. The call is still answered `wse.server.rp.not-registered`, as without an
    /// observer; to answer it, [`Client::register`] the procedure.
    ///
    /// The observer runs as the message handlers do: on the read loop, in arrival order, and
    /// must not block. Arguments that do not fit `T` are reported as [`ClientEvent::Report`]
    /// (`InvalidPayload`): take [`Value`] to see them all.
    ///
    /// ```
    /// use serde_json::Value;
    /// use wse_client::Client;
    ///
    /// let client = Client::builder("ws://127.0.0.1:4200").build();
    /// client.on_unregistered_call(|_, procedure: &str, args: Value| {
    ///     eprintln!("the server called {procedure}({args}), which this client does not serve");
    /// });
    /// ```
    pub fn on_unregistered_call<T, F>(&self, observer: F)
    where
        F: Fn(Client, &str, T) + Send + Sync + 'static,
        T: DeserializeOwned + 'static,
    {
        self.0.registry.on_unregistered_call(observer);
    }

    /// Removes the observer of calls to procedures that are not registered
    /// ([`Client::on_unregistered_call`]); returns whether there was one.
    pub fn off_unregistered_call(&self) -> bool {
        self.0.registry.off_unregistered_call()
    }

    pub(crate) fn settle_waiters(&self, result: &Result<Value, ConnectError>) {
        let waiters = std::mem::take(&mut self.state().waiters);
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}
