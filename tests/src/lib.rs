//! Shared fixtures of the integration tests: servers on 127.0.0.1 port 0, a raw WebSocket
//! peer that speaks frames byte for byte, and small waiting helpers.
//!
//! # Layout
//!
//! - [`start`] / [`start_demo`]: a served [`TestServer`].
//! - [`Raw`]: a raw peer over tokio-tungstenite, for exact frames and close reasons;
//!   [`upgrade`]: the raw HTTP upgrade under it, with any headers, to see refusals' statuses.
//! - [`client`] / [`connect_as`] / [`demo_client`]: a `wse_client::Client` of a test server.
//! - [`within`]: every wait in the tests is bounded; [`next_event`] and [`wait_status`] wait
//!   for an event or a client status within it, [`pick`] picks the usual events.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hmac::{KeyInit, Mac};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use wse_client::{CallError, ConnectError, Reconnect, Status};
use wse_examples::{Auth, demo_server};
use wse_server::{Server, Serving};

/// How long any single wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A short wait for "nothing more arrives".
pub const QUIET: Duration = Duration::from_millis(200);

/// A reconnect policy quick enough that a wrong reconnect shows up within a test.
pub const FAST: Reconnect = Reconnect {
    initial: Duration::from_millis(50),
    max: Duration::from_millis(200),
    jitter: Duration::from_millis(20),
};

/// Fails the test if `future` takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A stream of events a test waits on: a client's (`broadcast::Receiver`) or a server's
/// (`wse_server::Events`).
pub trait EventStream<E> {
    /// The next event; lagging or a closed stream fails the test.
    fn next(&mut self) -> impl Future<Output = E> + Send;
}

impl<E: Clone + Send> EventStream<E> for broadcast::Receiver<E> {
    async fn next(&mut self) -> E {
        self.recv().await.expect("event stream open, not lagging")
    }
}

impl EventStream<wse_server::Event> for wse_server::Events {
    async fn next(&mut self) -> wse_server::Event {
        self.recv().await.expect("event stream open, not lagging")
    }
}

/// The next event on `events` that `pick` maps to `Some`, skipping the others; fails the test
/// if none comes within [`PATIENCE`] or the stream closes or lags.
pub async fn next_event<E, T>(
    events: &mut impl EventStream<E>,
    what: &str,
    mut pick: impl FnMut(&E) -> Option<T>,
) -> T {
    within(what, async {
        loop {
            let event = events.next().await;
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
}

/// Picks for [`next_event`]: the fields of one kind of client or server event.
pub mod pick {
    use serde_json::Value;
    use wse_client::ClientEvent;
    use wse_server::{Event, Rejection};

    /// A client's `Closed`: its code and reason.
    pub fn closed(event: &ClientEvent) -> Option<(u16, String)> {
        match event {
            ClientEvent::Closed { code, reason } => Some((*code, reason.clone())),
            _ => None,
        }
    }

    /// A client's `Ready`: the welcome.
    pub fn ready(event: &ClientEvent) -> Option<Value> {
        match event {
            ClientEvent::Ready { welcome } => Some(welcome.clone()),
            _ => None,
        }
    }

    /// A client's `Ignored`: the message type.
    pub fn ignored(event: &ClientEvent) -> Option<String> {
        match event {
            ClientEvent::Ignored { kind } => Some(kind.clone()),
            _ => None,
        }
    }

    /// A server's `Disconnected`: the user, the close code and the reason.
    pub fn disconnected(event: &Event) -> Option<(String, u16, String)> {
        match event {
            Event::Disconnected {
                connection,
                code,
                reason,
            } => Some((connection.user_id().to_owned(), *code, reason.clone())),
            _ => None,
        }
    }

    /// A server's `Rejected`: the reason.
    pub fn rejected(event: &Event) -> Option<Rejection> {
        match event {
            Event::Rejected { reason, .. } => Some(reason.clone()),
            _ => None,
        }
    }
}

/// A server serving on 127.0.0.1 port 0.
#[derive(Debug)]
pub struct TestServer {
    pub server: Server,
    pub serving: Serving,
}

impl TestServer {
    pub fn addr(&self) -> SocketAddr {
        self.serving.local_addr()
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr())
    }

    pub async fn shutdown(self) {
        self.serving.shutdown().await;
    }
}

/// Serves `server` on 127.0.0.1 port 0.
pub async fn start(server: Server) -> TestServer {
    let serving = server.bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    TestServer { server, serving }
}

/// The demo application (the README's contract) on port 0.
pub async fn start_demo(auth: Auth) -> TestServer {
    start(demo_server(auth)).await
}

/// The hi payload the demo accepts for `user`.
pub fn login(user: &str) -> (Value, Value) {
    (
        Value::from("secret"),
        serde_json::json!({ "user_id": user }),
    )
}

/// A client of `server` speaking JSON.
pub fn client(server: &TestServer) -> wse_client::Builder {
    wse_client::Client::builder(server.url())
}

/// Connects `client` to the demo as `user`: the welcome, or why not.
pub async fn try_connect_as(
    client: &wse_client::Client,
    user: &str,
) -> Result<Value, ConnectError> {
    let (identity, meta) = login(user);
    within("connect", client.connect(identity, meta)).await
}

/// Connects `client` to the demo as `user` and returns the welcome.
pub async fn connect_as(client: &wse_client::Client, user: &str) -> Value {
    try_connect_as(client, user)
        .await
        .expect("demo accepts the login")
}

/// A connected client of the demo, as `user`.
pub async fn demo_client(server: &TestServer, user: &str) -> wse_client::Client {
    let client = client(server).build();
    connect_as(&client, user).await;
    client
}

/// Waits for the status of `client` to satisfy `check` and returns that status.
pub async fn wait_status(
    client: &wse_client::Client,
    what: &str,
    check: impl FnMut(&Status) -> bool,
) -> Status {
    let mut changes = client.status_changes();
    *within(what, changes.wait_for(check))
        .await
        .expect("status channel open")
}

/// Calls the demo's `add {a: 1, b: 2}` through `client`.
pub async fn add(client: &wse_client::Client) -> Result<i64, CallError> {
    within(
        "add",
        client.call("add", &serde_json::json!({"a": 1, "b": 2})),
    )
    .await
}

/// The solution of the standard HMAC quest, computed here independently of wse-core.
pub fn hmac_solution(secret: &str, quest: &Value) -> String {
    let timestamp = quest["timestamp"].as_u64().expect("numeric timestamp");
    let nonce = quest["nonce"].as_str().expect("string nonce");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}{nonce}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The codec a raw peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// `wse-default-json`, text messages.
    Json,
    /// `wse-msgpack`, binary messages.
    MsgPack,
}

impl Codec {
    pub const BOTH: [Codec; 2] = [Codec::Json, Codec::MsgPack];

    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "wse-default-json",
            Self::MsgPack => "wse-msgpack",
        }
    }

    /// The message carrying `frame` (a JSON value, typically a 3-array), encoded with this
    /// codec independently of wse-core: serde_json text, or rmp-serde with maps by name.
    pub fn message(self, frame: &Value) -> Message {
        match self {
            Self::Json => Message::Text(frame.to_string().into()),
            Self::MsgPack => Message::Binary(rmp_serde::to_vec_named(frame).unwrap().into()),
        }
    }

    /// Decodes a data message into a JSON value; panics on a message of the wrong kind.
    pub fn decode(self, message: &Message) -> Value {
        match (self, message) {
            (Self::Json, Message::Text(text)) => serde_json::from_str(text).unwrap(),
            (Self::MsgPack, Message::Binary(data)) => rmp_serde::from_slice(data).unwrap(),
            (codec, other) => panic!("{codec:?} peer got {other:?}"),
        }
    }
}

/// A raw WebSocket peer: sends and receives exact frames, sees close codes and reasons.
#[derive(Debug)]
pub struct Raw {
    pub ws: WebSocketStream<TcpStream>,
    pub codec: Codec,
    /// The subprotocol the server selected.
    pub selected: Option<String>,
}

/// What a raw peer saw next.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A data frame, decoded.
    Frame(Value),
    /// A close frame: code and reason.
    Close(u16, String),
    /// The socket ended without a close frame.
    End,
}

/// Asks `addr` for a WebSocket upgrade at `path` with `headers` besides the usual ones, and
/// returns the response head and the socket, of which nothing after the head was read. The
/// upgrade is done by hand, so the peer accepts any answer, even one a browser would refuse
/// (no subprotocol selected): the tests must see what the server does next.
pub async fn upgrade(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, TcpStream) {
    let mut tcp = within("tcp connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .expect("write upgrade");
    // Read the response head byte by byte: nothing after it may be consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match within("upgrade response", tcp.read_u8()).await {
            Ok(byte) => head.push(byte),
            Err(_) => break,
        }
    }
    (String::from_utf8(head).expect("ascii head"), tcp)
}

impl Raw {
    /// Opens a socket to `addr` offering `offer` as subprotocols (none if empty), through
    /// [`upgrade`].
    pub async fn open(addr: SocketAddr, codec: Codec, offer: &[&str]) -> Self {
        let offered = offer.join(", ");
        let headers: &[(&str, &str)] = if offer.is_empty() {
            &[]
        } else {
            &[("Sec-WebSocket-Protocol", &offered)]
        };
        let (head, tcp) = upgrade(addr, "/", headers).await;
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        Self::over(tcp, codec, &head).await
    }

    /// Goes on as a WebSocket over `tcp`, whose upgrade was answered with `head`.
    pub async fn over(tcp: TcpStream, codec: Codec, head: &str) -> Self {
        let selected = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-protocol")
                .then(|| value.trim().to_owned())
        });
        let ws = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
        Self {
            ws,
            codec,
            selected,
        }
    }

    /// Opens a socket offering `codec`.
    pub async fn connect(addr: SocketAddr, codec: Codec) -> Self {
        let raw = Self::open(addr, codec, &[codec.name()]).await;
        assert_eq!(raw.selected.as_deref(), Some(codec.name()));
        raw
    }

    /// Opens a socket, says hi as `user` to the demo and checks the welcome.
    pub async fn login(addr: SocketAddr, codec: Codec, user: &str) -> Self {
        let mut raw = Self::connect(addr, codec).await;
        let (identity, meta) = login(user);
        raw.send(&serde_json::json!(["~wse:hi", {"identity": identity, "meta": meta}, null]))
            .await;
        let welcome = raw.frame().await;
        assert_eq!(welcome[0], "~wse:welcome", "{welcome}");
        assert_eq!(welcome[1]["cid"], user);
        raw
    }

    /// Opens a socket offering `codec`, says hi with `user` as the bare identity (no meta) and
    /// checks the welcome carries no payload: for test servers that accept any such identity.
    pub async fn login_identity(addr: SocketAddr, codec: Codec, user: &str) -> Self {
        let mut raw = Self::connect(addr, codec).await;
        raw.expect_reply(
            &serde_json::json!(["~wse:hi", {"identity": user}, null]),
            &serde_json::json!(["~wse:welcome", null, null]),
        )
        .await;
        raw
    }

    /// Sends `frame` encoded with the peer's codec.
    pub async fn send(&mut self, frame: &Value) {
        let message = self.codec.message(frame);
        self.ws.send(message).await.expect("send");
    }

    /// Sends `frame` and expects `reply` as the next data frame.
    pub async fn expect_reply(&mut self, frame: &Value, reply: &Value) {
        self.send(frame).await;
        assert_eq!(
            &self.frame().await,
            reply,
            "{:?}: reply to {frame}",
            self.codec
        );
    }

    /// Calls `procedure` with `args` under `stamp`; its answer must be the next frame.
    pub async fn call(&mut self, procedure: &str, args: Value, stamp: &str) -> Value {
        self.send(&serde_json::json!([procedure, args, stamp]))
            .await;
        let answer = self.frame().await;
        assert_eq!(answer[2], stamp, "{:?} {procedure}: {answer}", self.codec);
        answer
    }

    /// The result of a call that must succeed (its answer the next frame).
    pub async fn ok(&mut self, procedure: &str, args: Value, stamp: &str) -> Value {
        let answer = self.call(procedure, args, stamp).await;
        assert_eq!(
            answer[0], "~wse:response",
            "{:?} {procedure}: {answer}",
            self.codec
        );
        answer[1].clone()
    }

    /// The error code of a call that must fail (its answer the next frame).
    pub async fn refused(&mut self, procedure: &str, args: Value, stamp: &str) -> String {
        let answer = self.call(procedure, args, stamp).await;
        assert_eq!(
            answer[0], "~wse:response-err",
            "{:?} {procedure}: {answer}",
            self.codec
        );
        answer[1]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("an error code in {answer}"))
            .to_owned()
    }

    /// Calls the demo's `add {a: 40, b: 2}` with `stamp` and expects the exact response.
    pub async fn expect_add_works(&mut self, stamp: &str) {
        self.expect_reply(
            &serde_json::json!(["add", {"a": 40, "b": 2}, stamp]),
            &serde_json::json!(["~wse:response", 42, stamp]),
        )
        .await;
    }

    /// Sends a message exactly as given.
    pub async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Sends a text message exactly as given.
    pub async fn send_text(&mut self, text: &str) {
        self.send_message(Message::Text(Utf8Bytes::from(text)))
            .await;
    }

    /// The next data frame, close, or end (pings and pongs skipped).
    pub async fn next(&mut self) -> Seen {
        loop {
            match within("a frame", self.ws.next()).await {
                Some(Ok(Message::Close(frame))) => {
                    // Reading once more sends our answer to the close frame, as a browser
                    // does at once; the server then need not wait for its close timeout.
                    let _ = tokio::time::timeout(Duration::from_millis(100), self.ws.next()).await;
                    return frame.map_or(Seen::Close(1005, String::new()), |f| {
                        Seen::Close(f.code.into(), f.reason.to_string())
                    });
                }
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    return Seen::Frame(self.codec.decode(&message));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Seen::End,
            }
        }
    }

    /// The next message exactly as it came, undecoded, whatever its kind.
    pub async fn message(&mut self) -> Message {
        within("a message", self.ws.next())
            .await
            .expect("socket open")
            .expect("a message")
    }

    /// The next data frame; panics on anything else.
    pub async fn frame(&mut self) -> Value {
        match self.next().await {
            Seen::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Expects the server to close with `code` and `reason` (data frames before it fail).
    pub async fn expect_close(&mut self, code: u16, reason: &str) {
        assert_eq!(self.next().await, Seen::Close(code, reason.to_owned()));
    }

    /// Expects nothing to arrive for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Ok(message) = tokio::time::timeout(quiet, self.ws.next()).await {
            panic!("expected silence, got {message:?}");
        }
    }

    /// Closes from this side with `code` and `reason`.
    pub async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from(reason),
        };
        let _ = self.ws.close(Some(frame)).await;
    }
}
