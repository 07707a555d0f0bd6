//! One connection: the task that owns its socket (upgrade, handshake, read loop, close) and
//! the [`Connection`] handle the application holds.
//!
//! ```text
//! socket ─► upgrade (pick a codec) ─► ~wse:hi ─► [challenge] ─► identify ─► ~wse:welcome
//!                                                                  │
//!      one loop: read a batch ─► Session::dispatch ◄───────────────┘
//!                write the outbox (replies, sends) ─► feed… ─► flush once
//! ```
//!
//! One task per connection reads and writes: a batch of calls is read, their replies are
//! queued in the connection's outbox, and the loop writes them in one flush, with no hand-off
//! to another task. Everyone else (spawned procedures, sends to the user, broadcasts) only
//! queues into the outbox. Writes are bounded by a timeout, so a peer that stops reading
//! cannot hold the loop.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use wse_core::outbox::{Close, Closer, Drain, Next as Queued, Outbox, outbox};
use wse_core::transport::{
    HEARTBEAT_TIMEOUT, Liveness, Pulse, close_for_read_error, close_frame, message_data, pulse,
    to_message,
};
use wse_core::{
    CallError, CloseReason, Context, ErrorCode, MessageKind, Protocol, Report, SendError, Session,
    close_code, frame,
};

use crate::auth::{Answered, Decision, Handshake};
use crate::delivery::Packed;
use crate::events::{Event, Rejection, ServerError};
use crate::limits::{RATE_LIMITED, Ticket, TokenBucket, Verdict};
use crate::server::{Listener, Server, Shared};

/// The id of a connection, unique on this server node; it carries no meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub(crate) u64);

impl ConnectionId {
    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// The close reason for a consumer whose outbound queue overflowed (**extension**; close
/// code 1013, so clients with reconnect enabled come back and resynchronise).
pub const SLOW_CONSUMER: &str = "wse.slow-consumer";

/// An accepted connection: one device of one user. A cheap handle.
#[derive(Clone)]
pub struct Connection(Arc<Inner>);

struct Inner {
    id: ConnectionId,
    user_id: Arc<str>,
    identity: Value,
    meta: Value,
    remote_addr: SocketAddr,
    /// Index of this connection's codec in the server's codec list.
    codec_index: usize,
    session: Session<Connection>,
    /// Asks the connection's task to close the socket; apart from the frames, so a full
    /// queue cannot delay it.
    close: Closer,
    server: Server,
    /// The listener that accepted it (none for [`Server::serve_io`]).
    listener: Option<Arc<Listener>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.0.id)
            .field("user_id", &self.0.user_id)
            .field("remote_addr", &self.0.remote_addr)
            .field("protocol", &self.protocol())
            .finish_non_exhaustive()
    }
}

impl Context for Connection {
    fn report(&self, report: Report) {
        self.0.server.emit(Event::from_report(self, report));
    }
}

impl Connection {
    /// This connection's id.
    pub fn id(&self) -> ConnectionId {
        self.0.id
    }

    /// The user this connection belongs to (the id identify accepted it as).
    pub fn user_id(&self) -> &str {
        &self.0.user_id
    }

    pub(crate) fn user_arc(&self) -> &Arc<str> {
        &self.0.user_id
    }

    /// The identity the client presented in `~wse:hi`.
    pub fn identity(&self) -> &Value {
        &self.0.identity
    }

    /// The meta the client sent in `~wse:hi` (`{}` when absent).
    pub fn meta(&self) -> &Value {
        &self.0.meta
    }

    /// The peer's socket address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.0.remote_addr
    }

    /// The name of the codec this connection speaks.
    pub fn protocol(&self) -> &str {
        self.0.session.protocol().name()
    }

    /// The server this connection belongs to.
    pub fn server(&self) -> &Server {
        &self.0.server
    }

    pub(crate) fn listener(&self) -> Option<&Arc<Listener>> {
        self.0.listener.as_ref()
    }

    /// Whether the connection is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.0.close.requested().is_some() || self.0.session.is_closed()
    }

    /// Sends the one-way message `[kind, payload, null]` to this device.
    ///
    /// Never waits. A full outbound queue means the peer stopped reading: the connection is
    /// closed with 1013 [`SLOW_CONSUMER`] and [`SendError::Full`] returned.
    ///
    /// # Errors
    /// [`SendError`]: the connection is closed or full, the type is reserved, or the payload
    /// cannot be encoded.
    pub fn send<T: Serialize + ?Sized>(&self, kind: &str, payload: &T) -> Result<(), SendError> {
        let sent = self.0.session.send(kind, payload);
        if sent == Err(SendError::Full) {
            self.slow_consumer();
        }
        sent
    }

    pub(crate) fn send_packed(&self, packed: &Packed) -> bool {
        let Some(frame) = packed.frame(self.0.codec_index) else {
            return false;
        };
        match self.0.session.send_encoded(frame.clone()) {
            Ok(()) => true,
            Err(SendError::Full) => {
                self.slow_consumer();
                false
            }
            Err(_) => false,
        }
    }

    pub(crate) fn slow_consumer(&self) {
        if self.close_with(1013, SLOW_CONSUMER) {
            self.0.server.emit(Event::Error {
                connection_id: Some(self.id()),
                error: ServerError::SlowConsumer,
            });
        }
    }

    /// Calls the procedure `procedure` that this device registered, with the server's call
    /// timeout.
    ///
    /// # Errors
    /// [`CallError`]: `Timeout`, `Disconnected` the moment this connection closes, or the
    /// client's own error as it sent it.
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
        self.0.session.call(procedure, args)
    }

    /// Like [`Connection::call`], waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Connection::call`].
    ///
    /// # Cancel safety
    /// As [`Connection::call`].
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
        self.0.session.call_with_timeout(procedure, args, timeout)
    }

    /// Closes the connection with code 1000 and `reason` (e.g. [`CloseReason::ByServer`] or an
    /// application's own reason), after the frames already queued. Returns false if it was
    /// already closing.
    pub fn close(&self, reason: impl Into<String>) -> bool {
        self.close_with(close_code::NORMAL, reason)
    }

    /// Closes the connection with `code` and `reason` (cut to the 123 bytes a close frame
    /// holds). Returns false if it was already closing.
    pub fn close_with(&self, code: u16, reason: impl Into<String>) -> bool {
        self.0
            .close
            .request(Close::new(code, fit_close_reason(reason.into())))
    }
}

/// A close frame's reason holds at most 123 bytes; cut at a character boundary.
fn fit_close_reason(mut reason: String) -> String {
    const MAX: usize = 123;
    if reason.len() > MAX {
        let cut = (0..=MAX)
            .rev()
            .find(|&i| reason.is_char_boundary(i))
            .unwrap_or(0);
        reason.truncate(cut);
    }
    reason
}

/// The socket of one connection, read and written by its one task.
///
/// One task both reads and writes, as the raw echo does: replies queued while a batch of
/// calls is read go out in one write right after, with no hand-off to another task. A write
/// is bounded by the write timeout, so a peer that stops reading cannot stall the loop.
struct Link<S> {
    /// Not split into halves: one task owns both, and a split costs a lock per poll and a
    /// shared allocation per connection.
    ws: WebSocketStream<S>,
    /// Where everyone else queues frames for this connection.
    outbound: Outbox,
    /// The same queue, as the loop takes it, with the close asked for.
    queued: Drain,
    kind: MessageKind,
    write_timeout: Duration,
    /// The close frame the peer sent, if it sent one.
    peer_close: Option<Close>,
}

/// A write did not complete: the socket failed, or the peer did not take the bytes within
/// the write timeout.
struct WriteFailed;

/// What the socket produced next.
enum Next {
    Data(Message),
    Closed,
    TimedOut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Link<S> {
    /// The socket with a queue of `capacity` frames.
    fn new(
        ws: WebSocketStream<S>,
        kind: MessageKind,
        capacity: usize,
        write_timeout: Duration,
    ) -> Self {
        let (outbound, queued) = outbox(capacity);
        Self {
            ws,
            outbound,
            queued,
            kind,
            write_timeout,
            peer_close: None,
        }
    }

    /// Writes `frames` and flushes once, within the write timeout. A close asked for while the
    /// write waits for the peer (its queue overflowed, say) ends the wait at once.
    async fn write(&mut self, frames: impl IntoIterator<Item = Bytes>) -> Result<(), WriteFailed> {
        // Only a close asked for from now on cuts the write short.
        let already_closing = self.queued.close_requested().is_some();
        let (sink, kind, queued) = (&mut self.ws, self.kind, &self.queued);
        let written = async {
            for frame in frames {
                if let Some(message) = to_message(kind, frame) {
                    sink.feed(message).await?;
                }
            }
            sink.flush().await
        };
        tokio::select! {
            biased;
            written = tokio::time::timeout(self.write_timeout, written) => match written {
                Ok(Ok(())) => Ok(()),
                _ => Err(WriteFailed),
            },
            _ = queued.closing(), if !already_closing => Err(WriteFailed),
        }
    }

    /// Writes whatever is queued.
    async fn write_queued(&mut self) -> Result<(), WriteFailed> {
        match self.queued.try_batch() {
            Some(batch) => self.write(batch).await,
            None => Ok(()),
        }
    }

    /// Sends a control frame (a ping, a close), within the write timeout.
    async fn send_control(&mut self, message: Message) -> Result<(), WriteFailed> {
        match tokio::time::timeout(self.write_timeout, self.ws.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(WriteFailed),
        }
    }

    /// The next text or binary message before `deadline`; pings and pongs are answered by
    /// tungstenite and skipped. Cancel-safe: nothing but control frames is consumed.
    async fn next(&mut self, deadline: Instant) -> Next {
        loop {
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Next::TimedOut,
                Ok(None) => return Next::Closed,
                Ok(Some(Err(error))) => {
                    if let Some(close) = close_for_read_error(&error) {
                        self.queued.closer().request(close);
                    }
                    return Next::Closed;
                }
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(_) | Message::Binary(_) => return Next::Data(message),
                Message::Close(frame) => {
                    self.peer_close = Some(peer_close(frame));
                    return Next::Closed;
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Runs `work` while the server validates; frames that arrive meanwhile are ignored, as the
    /// protocol says.
    async fn while_validating<T>(
        &mut self,
        work: impl Future<Output = T>,
        deadline: Instant,
    ) -> Result<T, Rejection> {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return Ok(done),
                next = self.next(deadline) => match next {
                    Next::Data(_) => {}
                    Next::Closed => return Err(Rejection::Gone),
                    Next::TimedOut => return Err(Rejection::HandshakeTimeout),
                },
            }
        }
    }

    fn queue(&self, frame: Vec<u8>) -> bool {
        self.outbound.try_send(Bytes::from(frame)).is_ok()
    }

    /// Sends what is queued and our close frame, if we asked for one, then reads until the
    /// socket ends (this sends tungstenite's echo of the peer's close frame, and receives the
    /// peer's answer to ours); all within `timeout`. Returns the close that ended the
    /// connection: ours if we asked, else the peer's, else 1006.
    async fn finish(&mut self, timeout: Duration) -> Close {
        let deadline = Instant::now() + timeout;
        if let Some(close) = self.queued.close_requested() {
            let goodbye = async {
                let _ = self.write_queued().await;
                let _ = self
                    .send_control(Message::Close(Some(close_frame(&close))))
                    .await;
            };
            let _ = tokio::time::timeout_at(deadline, goodbye).await;
        }
        // The deadline is checked before each read: `timeout_at` returns a ready message even
        // past its deadline, and a peer that keeps sending would keep this loop going.
        while Instant::now() < deadline {
            let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, self.ws.next()).await
            else {
                break;
            };
            if let Message::Close(frame) = message {
                self.peer_close.get_or_insert(peer_close(frame));
            }
        }
        self.queued
            .close_requested()
            .or(self.peer_close.take())
            .unwrap_or_else(|| Close::new(1006, ""))
    }
}

fn peer_close(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> Close {
    frame.map_or_else(
        || Close::new(1005, ""),
        |frame| Close::new(frame.code.into(), frame.reason.as_str()),
    )
}

/// The first codec the client offers that the server speaks.
fn negotiate(codecs: &[Arc<dyn Protocol>], request: &Request) -> Option<usize> {
    request
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .find_map(|offered| codecs.iter().position(|codec| codec.name() == offered))
}

/// Serves one accepted stream (TCP, TLS, in memory) to its end. `listener` is the listener
/// that accepted it, whose shutdown closes it.
pub(crate) fn run<S>(
    server: Server,
    io: S,
    remote_addr: SocketAddr,
    listener: Option<Arc<Listener>>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Boxed, and made here rather than in the task's future: the upgrade and the handshake
    // are large and over at the welcome, and the task, which lives as long as the
    // connection, keeps only what an open connection needs.
    let establishing = Box::pin(establish(server, io, remote_addr, listener));
    async move {
        // A statement of its own: the finished handshake's box is freed at its end.
        let Some(mut open) = establishing.await else {
            return;
        };
        open.serve().await;
    }
}

/// An accepted connection and its socket, from the welcome to the end.
struct Open<S> {
    connection: Connection,
    link: Link<S>,
    /// This connection's place within the server's limits, held to the end.
    _ticket: Ticket,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Open<S> {
    // By reference: moved into the future, the connection's state would take its room twice.
    async fn serve(&mut self) {
        let (connection, link) = (&self.connection, &mut self.link);
        let ended = read_loop(connection, link).await;

        // Calls waiting on this device fail now, and sends to its user skip it, rather than
        // after the closing handshake.
        connection.0.session.close();
        let server = connection.server();
        let left = server.shared().users.remove(connection);
        // A peer that stopped answering will not answer our close frame either.
        let patience = match ended {
            Ended::Silent => Duration::ZERO,
            Ended::Otherwise => server.shared().config.close_timeout,
        };
        // Boxed: the closing handshake is brief, and large.
        let close = Box::pin(link.finish(patience)).await;
        server.emit(Event::Disconnected {
            connection: connection.clone(),
            code: close.code,
            reason: close.reason,
        });
        if left == Some(true) {
            server.emit(Event::Left {
                user_id: Arc::clone(connection.user_arc()),
            });
        }
    }
}

/// Upgrades, runs the handshake, welcomes and lists the connection: the connection, open;
/// `None` when it was refused (and is closed by now).
async fn establish<S>(
    server: Server,
    io: S,
    remote_addr: SocketAddr,
    listener: Option<Arc<Listener>>,
) -> Option<Open<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let server = &server;
    let shared = server.shared();
    let ticket = match shared.admission.admit(remote_addr.ip()) {
        Ok(ticket) => ticket,
        Err(reason) => {
            server.emit(Event::Rejected {
                remote_addr,
                reason,
            });
            return None;
        }
    };
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let mut chosen = None;
    // The error type is tungstenite's handshake response; this callback never returns it.
    #[allow(clippy::result_large_err)]
    let pick = |request: &Request, mut response: Response| {
        chosen = negotiate(&shared.codecs, request);
        if let Some(index) = chosen {
            if let Ok(name) = HeaderValue::from_str(shared.codecs[index].name()) {
                response.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, name);
            }
        }
        Ok(response)
    };
    let upgrade =
        tokio_tungstenite::accept_hdr_async_with_config(io, pick, Some(shared.config.websocket()));
    let ws = match tokio::time::timeout_at(deadline, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            server.emit(Event::Rejected {
                remote_addr,
                reason: Rejection::Upgrade(error.to_string()),
            });
            return None;
        }
        Err(_) => {
            server.emit(Event::Rejected {
                remote_addr,
                reason: Rejection::HandshakeTimeout,
            });
            return None;
        }
    };

    let codec = chosen.map(|index| (index, Arc::clone(&shared.codecs[index])));
    let kind = codec
        .as_ref()
        .map_or(MessageKind::Text, |(_, c)| c.message_kind());
    let mut link = Link::new(
        ws,
        kind,
        shared.config.outbound_queue,
        shared.config.close_timeout,
    );

    let id = shared.next_connection_id();
    let outcome = match &codec {
        None => Err(Rejection::NoCommonProtocol),
        Some((_, codec)) => handshake(shared, &mut link, codec, id, remote_addr, deadline).await,
    };
    let (index, codec, handshake, user_id, welcome) = match (codec, outcome) {
        (Some((index, codec)), Ok((handshake, user_id, welcome))) => {
            (index, codec, handshake, user_id, welcome)
        }
        (_, outcome) => {
            let reason = outcome.err().unwrap_or(Rejection::Gone);
            reject(server, link, remote_addr, reason).await;
            return None;
        }
    };

    let session = Session::new(
        codec.clone(),
        link.outbound.clone(),
        Arc::clone(&shared.registry),
        shared.config.session,
    );
    let connection = Connection(Arc::new(Inner {
        id,
        user_id: Arc::from(user_id),
        identity: handshake.identity,
        meta: handshake.meta,
        remote_addr,
        codec_index: index,
        session,
        close: link.queued.closer(),
        server: server.clone(),
        listener,
    }));
    // Welcome goes first: whatever is sent to the user once the connection is listed queues
    // behind it.
    let welcomed = codec
        .encode(frame::WELCOME, &welcome, None)
        .is_ok_and(|frame| link.queue(frame));
    if !welcomed {
        let reason = Rejection::ProtocolError("welcome payload cannot be encoded".into());
        reject(server, link, remote_addr, reason).await;
        return None;
    }
    let added = shared.users.add(&connection, shared.config.conn_per_user);
    for old in &added.evicted {
        old.close(CloseReason::ClientsConcurrency);
    }
    if added.joined {
        server.emit(Event::Joined {
            user_id: Arc::clone(connection.user_arc()),
        });
    }
    server.emit(Event::Connected {
        connection: connection.clone(),
    });
    // The listener may have stopped while this connection was being accepted: its shutdown
    // found every connection listed before this one, and this one sees the flag.
    if connection
        .listener()
        .is_some_and(|listener| listener.stopping())
    {
        connection.close_with(close_code::SERVICE_RESTART, CloseReason::ByServer);
    }
    Some(Open {
        connection,
        link,
        _ticket: ticket,
    })
}

/// Closes a connection that was not accepted, with the close reason its rejection calls for.
async fn reject<S: AsyncRead + AsyncWrite + Unpin>(
    server: &Server,
    mut link: Link<S>,
    remote_addr: SocketAddr,
    reason: Rejection,
) {
    let close_reason = match reason {
        Rejection::NotAuthorized => {
            server.shared().admission.record_failure(remote_addr.ip());
            Some(CloseReason::NotAuthorized)
        }
        Rejection::NoCommonProtocol | Rejection::ProtocolError(_) | Rejection::HandshakeTimeout => {
            Some(CloseReason::ProtocolError)
        }
        Rejection::Upgrade(_)
        | Rejection::Gone
        | Rejection::TooManyConnections
        | Rejection::TooManyFromAddress
        | Rejection::AuthThrottled => None,
    };
    if let Some(close_reason) = close_reason {
        link.queued
            .closer()
            .request(Close::new(close_code::NORMAL, close_reason));
    }
    // Reported now: the closing handshake may take up to the close timeout.
    server.emit(Event::Rejected {
        remote_addr,
        reason,
    });
    link.finish(server.shared().config.close_timeout).await;
}

/// hi → [challenge] → identify. Returns what identify accepted.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    link: &mut Link<S>,
    codec: &Arc<dyn Protocol>,
    connection_id: crate::ConnectionId,
    remote_addr: SocketAddr,
    deadline: Instant,
) -> Result<(Handshake, String, Value), Rejection> {
    #[derive(serde::Deserialize)]
    struct Hi {
        #[serde(default)]
        identity: Value,
        #[serde(default)]
        meta: Value,
    }

    let hi = expect_frame(link, codec, frame::HI, deadline).await?;
    let hi: Hi = codec
        .decode(&hi)
        .map_err(|e| Rejection::ProtocolError(format!("malformed ~wse:hi: {e}")))?;
    let mut handshake = Handshake {
        identity: hi.identity,
        meta: if hi.meta.is_null() {
            Value::Object(Default::default())
        } else {
            hi.meta
        },
        connection_id,
        remote_addr,
        challenge: None,
    };

    if let Some(challenge) = &shared.challenge {
        let quest = link
            .while_validating(challenge.quest(&handshake), deadline)
            .await?
            .ok_or(Rejection::NotAuthorized)?;
        let sent = codec
            .encode(frame::CHALLENGE, &quest, None)
            .is_ok_and(|frame| link.queue(frame));
        if !sent {
            return Err(Rejection::ProtocolError("quest cannot be encoded".into()));
        }
        if link.write_queued().await.is_err() {
            return Err(Rejection::Gone);
        }
        let response = expect_frame(link, codec, frame::CHALLENGE, deadline).await?;
        let response: Value = codec
            .decode(&response)
            .map_err(|e| Rejection::ProtocolError(format!("malformed challenge response: {e}")))?;
        let verified = link
            .while_validating(challenge.verify(&handshake, &quest, &response), deadline)
            .await?;
        if !verified {
            return Err(Rejection::NotAuthorized);
        }
        handshake.challenge = Some(Answered { quest, response });
    }

    match link
        .while_validating((shared.identify)(handshake.clone()), deadline)
        .await?
    {
        Decision::Accept { user_id, welcome } if !user_id.is_empty() => {
            Ok((handshake, user_id, welcome))
        }
        _ => Err(Rejection::NotAuthorized),
    }
}

/// The next frame, which must be of type `expected`; returns its encoded payload.
async fn expect_frame<S: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Link<S>,
    codec: &Arc<dyn Protocol>,
    expected: &str,
    deadline: Instant,
) -> Result<Vec<u8>, Rejection> {
    let message = match link.next(deadline).await {
        Next::Data(message) => message,
        Next::Closed => return Err(Rejection::Gone),
        Next::TimedOut => return Err(Rejection::HandshakeTimeout),
    };
    let Some((kind, data)) = message_data(&message) else {
        return Err(Rejection::Gone);
    };
    if kind != codec.message_kind() {
        return Err(Rejection::ProtocolError(format!(
            "{kind:?} message on {}",
            codec.name()
        )));
    }
    let frame = codec
        .unpack(data)
        .map_err(|e| Rejection::ProtocolError(e.to_string()))?;
    if frame.kind != expected {
        return Err(Rejection::ProtocolError(format!(
            "expected {expected}, got {:?}",
            frame.kind
        )));
    }
    Ok(frame.payload.to_vec())
}

/// How many messages are read in a row, at most, before what is queued is written.
const READS_PER_WRITE: u32 = 64;

/// Routes one data message through the rate limit and the engine; `Some` when the
/// connection must end.
async fn route(
    connection: &Connection,
    bucket: Option<&mut TokenBucket>,
    data: &[u8],
    kind: MessageKind,
) -> Option<Ended> {
    let session = &connection.0.session;
    // A burst of pipelined calls can outrun the tasks that answer them: give those a few
    // turns before a call is refused for want of room.
    for _ in 0..8 {
        if !session.running_calls_full() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let verdict = bucket.map_or(Verdict::Admit, |bucket| bucket.take(Instant::now()));
    let routed = match verdict {
        Verdict::Admit => session.dispatch(connection, data, kind),
        Verdict::Refuse | Verdict::Abuse => {
            session.refuse(connection, data, kind, ErrorCode::RateLimited)
        }
    };
    if let Err(violation) = routed {
        connection.close(CloseReason::ProtocolError);
        connection.server().emit(Event::Error {
            connection_id: Some(connection.id()),
            error: ServerError::ProtocolViolation(violation),
        });
        return Some(Ended::Otherwise);
    }
    if verdict == Verdict::Abuse {
        connection.close_with(RATE_LIMITED.0, RATE_LIMITED.1);
        return Some(Ended::Otherwise);
    }
    None
}

/// A write did not complete in time: the peer stopped reading. Closed as a slow consumer,
/// without waiting for a closing handshake it would not answer.
fn stuck(connection: &Connection) -> Ended {
    connection.slow_consumer();
    Ended::Silent
}

/// Why the read loop ended.
enum Ended {
    /// The peer stopped answering (the heartbeat gave it up) or stopped taking our bytes (a
    /// write timed out): no closing handshake is waited for.
    Silent,
    /// Anything else: the peer or the server closed, the socket failed.
    Otherwise,
}

/// Reads and routes frames, and writes what is queued, until the peer closes, the socket
/// fails, or a close is requested (a listener's shutdown is one).
async fn read_loop<S: AsyncRead + AsyncWrite + Unpin>(
    connection: &Connection,
    link: &mut Link<S>,
) -> Ended {
    // The writes below are boxed: they live only while a write waits, and inline they would
    // add half a KiB to every idle connection's task.
    let mut liveness = connection
        .server()
        .shared()
        .config
        .heartbeat
        .map(Liveness::new);
    let mut bucket = connection
        .server()
        .shared()
        .config
        .rate_limit
        .map(|limit| TokenBucket::new(limit, Instant::now()));
    let mut reads_since_write = 0;
    loop {
        // All arms are cancel-safe: `next` on the stream and on the outbox and the ticker lose
        // nothing when another arm wins.
        tokio::select! {
            biased;
            message = link.ws.next() => {
                if let (Some(Ok(_)), Some(liveness)) = (&message, liveness.as_mut()) {
                    liveness.heard();
                }
                match message {
                Some(Ok(message)) => match message_data(&message) {
                    Some((kind, data)) => {
                        if let Some(ended) = route(connection, bucket.as_mut(), data, kind).await {
                            return ended;
                        }
                        // Reads come first, but a peer that never pauses still gets its
                        // answers every so often.
                        reads_since_write += 1;
                        if reads_since_write >= READS_PER_WRITE {
                            reads_since_write = 0;
                            if Box::pin(link.write_queued()).await.is_err() {
                                return stuck(connection);
                            }
                        }
                    }
                    None => {
                        if let Message::Close(frame) = message {
                            link.peer_close = Some(peer_close(frame));
                            return Ended::Otherwise;
                        }
                    }
                },
                Some(Err(error)) => {
                    if let Some(close) = close_for_read_error(&error) {
                        connection.close_with(close.code, close.reason);
                    }
                    connection.server().emit(Event::Error {
                        connection_id: Some(connection.id()),
                        error: ServerError::Transport(error.to_string()),
                    });
                    return Ended::Otherwise;
                }
                None => return Ended::Otherwise,
            }
            }
            queued = link.queued.next() => match queued {
                Queued::Frames(batch) => {
                    reads_since_write = 0;
                    if Box::pin(link.write(batch)).await.is_err() {
                        return stuck(connection);
                    }
                }
                // The close frame goes out after what is queued, in `finish`.
                Queued::Close(_) | Queued::Gone => return Ended::Otherwise,
            },
            beat = pulse(&mut liveness) => match beat {
                Pulse::Alive => {}
                Pulse::Ping => {
                    if Box::pin(link.send_control(Message::Ping(Bytes::new()))).await.is_err() {
                        return Ended::Silent;
                    }
                }
                Pulse::Dead => {
                    connection.close_with(HEARTBEAT_TIMEOUT.0, HEARTBEAT_TIMEOUT.1);
                    return Ended::Silent;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wse_core::{Json, MsgPack};

    fn offering(header: Option<&str>) -> Request {
        let mut request = Request::builder().uri("/");
        if let Some(header) = header {
            request = request.header(SEC_WEBSOCKET_PROTOCOL, header);
        }
        request.body(()).unwrap()
    }

    #[test]
    fn negotiation_takes_the_clients_first_offer_the_server_speaks() {
        let codecs: Vec<Arc<dyn Protocol>> = vec![Arc::new(Json), Arc::new(MsgPack)];
        assert_eq!(
            negotiate(&codecs, &offering(Some("wse-msgpack, wse-default-json"))),
            Some(1)
        );
        assert_eq!(
            negotiate(&codecs, &offering(Some("x,wse-default-json"))),
            Some(0)
        );
        assert_eq!(negotiate(&codecs, &offering(Some("x, y"))), None);
        assert_eq!(negotiate(&codecs, &offering(None)), None);
    }

    #[test]
    fn close_reasons_are_cut_to_what_a_close_frame_holds() {
        assert_eq!(fit_close_reason("bye".into()), "bye");
        let long = "é".repeat(100);
        let cut = fit_close_reason(long);
        assert!(cut.len() <= 123);
        assert_eq!(cut.chars().count(), 61);
    }
}
