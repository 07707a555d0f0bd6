//! The loads: the same client code drives a WSE server and the raw baselines, and every
//! reply is checked.
//!
//! The connections are made by tokio-tungstenite and [`open`] (the upgrade, then the wse
//! handshake). The RPC callers, the fan-out receivers and the senders and receivers of sends
//! to a user ([`relay`]) then speak frames by hand on the socket (`lean`), so that the
//! generator's own CPU per call stays as low as the raw echo allows; the handshake and memory
//! loads, which measure the connections themselves, stay on tokio-tungstenite.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::{JoinSet, LocalSet};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wse_core::{ErrorObject, HmacQuest, Json, MessageKind, MsgPack, Protocol, frame};

use crate::cpu;
use crate::error::{ErrorKind, LoadError};
use crate::lean::{self, Conn};

/// What every function of a load returns on failure.
pub(crate) type Failure = LoadError;

/// A tokio-tungstenite client connection, as [`open`] makes it.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The read buffer of every connection tokio-tungstenite reads: what the baselines of
/// `wse-bench` were measured with.
pub const READ_BUFFER: usize = 8 << 10;

/// How long opening one connection may take, upgrade and handshake, unless its [`Login`] says
/// otherwise: past it the server is taken as stalled.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a call of an RPC load may wait for its answer, unless its [`Call`] says otherwise.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The codec a load speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `wse-default-json`.
    Json,
    /// `wse-msgpack`.
    Msgpack,
}

impl Codec {
    fn protocol(self) -> &'static dyn Protocol {
        match self {
            Self::Json => &Json,
            Self::Msgpack => &MsgPack,
        }
    }

    fn message(self, frame: Vec<u8>) -> Message {
        match self.protocol().message_kind() {
            MessageKind::Text => Message::Text(
                String::from_utf8(frame)
                    .unwrap_or_else(|_| unreachable!("the JSON codec writes UTF-8"))
                    .into(),
            ),
            MessageKind::Binary => Message::Binary(Bytes::from(frame)),
        }
    }

    /// The opcode of this codec's messages, for the lean client.
    fn opcode(self) -> u8 {
        match self.protocol().message_kind() {
            MessageKind::Text => lean::TEXT,
            MessageKind::Binary => lean::BINARY,
        }
    }
}

/// Who is dialled and how a connection gets ready.
#[derive(Debug, Clone)]
pub struct Dial {
    /// `ws://host:port/path` (the lean client speaks plain TCP: no `wss://`).
    pub url: String,
    /// The codec offered (for the raw baselines, only the framing of the bytes).
    pub codec: Codec,
    /// How a connection becomes ready.
    pub hello: Hello,
}

/// How a connection becomes ready.
#[derive(Debug, Clone, PartialEq)]
pub enum Hello {
    /// At once: a raw WebSocket server (the baselines of `wse-bench`).
    None,
    /// `~wse:hi` (with what [`Login`] says) → [`~wse:challenge` → answer] → `~wse:welcome`.
    Wse(Login),
}

impl Hello {
    /// Whether connections speak WSE (rather than raw frames).
    fn is_wse(&self) -> bool {
        matches!(self, Self::Wse(_))
    }
}

/// What each connection of a load says hi with: an identity and a meta in which two
/// placeholders are replaced, in every string wherever they occur:
///
/// - `{user}`: the user the load means the connection to be: `load3` (a caller of the RPC
///   load), `idle7` (a fan-out receiver), `control` (who triggers a fan-out), `cycler` (every
///   connection of the handshake load), `devices-of-one-user` (each device of a send to one
///   user), and so on;
/// - `{conn}`: a number that no other connection opened by this process has, for servers that
///   allow few connections per user.
///
/// ```
/// use serde_json::json;
/// use wse_load::Login;
///
/// // The wse-rs demo: identity "secret", the user in meta.user_id, one user per connection.
/// let demo = Login::new(json!("secret"), json!({"user_id": "bench-{conn}"}));
/// // The wse-bench application: any string identity is accepted as that user.
/// let bench = Login::named();
/// # let _ = (demo, bench);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Login {
    identity: Value,
    meta: Value,
    /// The secret that answers the standard HMAC challenge, if the server sends one.
    secret: Option<Arc<[u8]>>,
    /// How long a connection may take from connect to welcome.
    handshake_timeout: Duration,
}

/// The number `{conn}` stands for in the next connection's hi.
static NEXT_CONNECTION: AtomicUsize = AtomicUsize::new(0);

impl Login {
    /// Says hi with `identity` and `meta`, their placeholders replaced.
    pub fn new(identity: Value, meta: Value) -> Self {
        Self {
            identity,
            meta,
            secret: None,
            handshake_timeout: OPEN_TIMEOUT,
        }
    }

    /// The identity is the user's name (`"{user}"`), the meta `{}`: what the `wse-bench`
    /// application accepts.
    pub fn named() -> Self {
        Self::new(
            Value::String("{user}".into()),
            Value::Object(Default::default()),
        )
    }

    /// Answers the standard HMAC challenge with `secret` (the same for every connection).
    /// Default: no answer (a challenge fails the connection).
    #[must_use]
    pub fn hmac_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.secret = Some(Arc::from(secret.into()));
        self
    }

    /// How long connect → welcome may take for each connection, the upgrade and a challenge
    /// included; past it the server is taken as stalled and the load fails with
    /// [`ErrorKind::Timeout`]. Default: 30 s.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The payload of the `~wse:hi` of a connection meant to be `user`.
    fn hi(&self, user: &str) -> Value {
        let n = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed).to_string();
        let fill = |text: &str| Value::String(text.replace("{user}", user).replace("{conn}", &n));
        serde_json::json!({
            "identity": fill_strings(&self.identity, &fill),
            "meta": fill_strings(&self.meta, &fill),
        })
    }
}

/// `value` with every string in it replaced by what `fill` makes of it (object keys stay as
/// they are): the one walker behind the placeholders of a [`Login`] and of a [`Trigger`].
fn fill_strings(value: &Value, fill: &impl Fn(&str) -> Value) -> Value {
    match value {
        Value::String(text) => fill(text),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill_strings(v, fill)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, v)| (key.clone(), fill_strings(v, fill)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Counts what a load has done so far (cycles of the handshake load, messages a fan-out
/// delivered), for a progress bar on another thread. A cheap handle: clones count together.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    /// A count at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// What has been counted so far.
    pub fn done(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Opens a connection to `dial` meant to be the user `user` (see [`Login`]) and makes it
/// ready, within the login's [handshake timeout](Login::handshake_timeout) (30 s by default,
/// and for [`Hello::None`]).
///
/// # Errors
/// [`ErrorKind::Connect`] when it cannot be opened or the handshake breaks,
/// [`ErrorKind::Refused`] when the server refuses it or sends a challenge that cannot be
/// answered, a close before the welcome being judged by
/// [`ErrorKind::of_close_before_welcome`], [`ErrorKind::Timeout`] past the handshake timeout.
///
/// # Cancel safety
/// Dropping the future drops the connection.
pub async fn open(dial: &Dial, user: &str) -> Result<Ws, Failure> {
    let timeout = match &dial.hello {
        Hello::Wse(login) => login.handshake_timeout,
        Hello::None => OPEN_TIMEOUT,
    };
    tokio::time::timeout(timeout, open_now(dial, user))
        .await
        .map_err(|_| LoadError::timeout(format!("no connection ready within {timeout:?}")))?
}

/// [`open`], however long it takes.
async fn open_now(dial: &Dial, user: &str) -> Result<Ws, Failure> {
    let mut request = dial
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| LoadError::connect(e.to_string()))?;
    let name = dial
        .codec
        .protocol()
        .name()
        .parse()
        .map_err(|_| LoadError::connect("bad protocol name"))?;
    request.headers_mut().insert("sec-websocket-protocol", name);
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(|e| LoadError::connect(format!("connect: {e}")))?;
    let Hello::Wse(login) = &dial.hello else {
        return Ok(ws);
    };
    let codec = dial.codec;
    send_frame(&mut ws, codec, frame::HI, &login.hi(user), None)
        .await
        .map_err(|e| LoadError::connect(e.message()))?;
    loop {
        let message = ws
            .next()
            .await
            .ok_or_else(|| LoadError::connect("closed during the handshake"))?
            .map_err(|e| LoadError::connect(e.to_string()))?;
        let data = match message {
            Message::Text(_) | Message::Binary(_) => message.into_data(),
            Message::Close(close) => {
                let (code, reason) = close
                    .map(|close| (u16::from(close.code), close.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                let kind = ErrorKind::of_close_before_welcome(code, &reason);
                let message = if reason.is_empty() {
                    format!("closed before the welcome: {code}")
                } else {
                    format!("closed before the welcome: {code} {reason}")
                };
                return Err(LoadError::new(kind, message));
            }
            _ => continue,
        };
        let frame = codec
            .protocol()
            .unpack(&data)
            .map_err(|e| LoadError::connect(e.to_string()))?;
        match frame.kind.as_ref() {
            frame::WELCOME => return Ok(ws),
            frame::CHALLENGE => {
                let secret = login.secret.as_deref().ok_or_else(|| {
                    LoadError::new(
                        ErrorKind::Refused,
                        "the server sent a challenge and no secret is set",
                    )
                })?;
                // A challenge this side cannot answer keeps it out as a refusal does (and as
                // the `wse` command's client says it: `wse.client.invalid-cra-handler`).
                let quest: HmacQuest = codec.protocol().decode(frame.payload).map_err(|e| {
                    LoadError::new(ErrorKind::Refused, format!("not an HMAC quest: {e}"))
                })?;
                send_frame(&mut ws, codec, frame::CHALLENGE, &quest.solve(secret), None).await?;
            }
            other => {
                return Err(LoadError::connect(format!(
                    "unexpected {other} during the handshake"
                )));
            }
        }
    }
}

/// Sends the frame `[kind, payload, stamp]`.
async fn send_frame<T: serde::Serialize + ?Sized>(
    ws: &mut Ws,
    codec: Codec,
    kind: &str,
    payload: &T,
    stamp: Option<&str>,
) -> Result<(), Failure> {
    let frame = codec
        .protocol()
        .encode(kind, payload, stamp)
        .map_err(|e| e.to_string())?;
    ws.send(codec.message(frame))
        .await
        .map_err(|e| e.to_string().into())
}

/// The next text or binary message, read `during` what.
async fn next_data(ws: &mut Ws, during: &str) -> Result<bytes::Bytes, Failure> {
    loop {
        let message = ws
            .next()
            .await
            .ok_or_else(|| format!("closed during {during}"))?
            .map_err(|e| e.to_string())?;
        if message.is_text() || message.is_binary() {
            return Ok(message.into_data());
        }
    }
}

/// Closes with a close frame and waits for the server's answer, at most 10 s.
///
/// # Errors
/// [`ErrorKind::Timeout`] when the server does not answer the close within 10 s.
///
/// # Cancel safety
/// Dropping the future drops the connection, its close unanswered.
pub async fn close(mut ws: Ws) -> Result<(), LoadError> {
    let closing = async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    };
    tokio::time::timeout(lean::CLOSE_TIMEOUT, closing)
        .await
        .map_err(|_| lean::close_timed_out())
}

/// The failure of a call of `procedure` that was answered with the error object `payload`:
/// the server's code, and its details when it sent any.
fn answered_with_error(protocol: &dyn Protocol, procedure: &str, payload: &[u8]) -> LoadError {
    let said = match protocol.decode::<ErrorObject>(payload) {
        Ok(ErrorObject {
            code,
            details: Some(details),
            ..
        }) => format!("{code} {details}"),
        Ok(ErrorObject { code, .. }) => code,
        Err(error) => format!("an error object that does not decode ({error})"),
    };
    LoadError::new(
        ErrorKind::Answer,
        format!("{procedure} answered with an error: {said}"),
    )
}

/// The outcome of an RPC run.
#[derive(Debug)]
pub struct RpcRun {
    /// Calls answered within the measured window.
    pub calls: u64,
    /// The measured window.
    pub window: Duration,
    /// Latency of each of those calls, in microseconds.
    pub latency: Histogram<u64>,
    /// CPU time the server and the generator used within the measured window.
    pub cpu: cpu::Spent,
}

impl RpcRun {
    /// Adds another round of the same load.
    ///
    /// # Errors
    /// When the latency histograms cannot be added (they have the same bounds, so they can).
    pub fn merge(&mut self, other: Self) -> Result<(), LoadError> {
        self.calls += other.calls;
        self.window += other.window;
        self.cpu.add(other.cpu);
        self.latency
            .add(other.latency)
            .map_err(|e| LoadError::local(e.to_string()))
    }

    /// Calls answered per second of the measured window.
    pub fn rate(&self) -> f64 {
        self.calls as f64 / self.window.as_secs_f64()
    }
}

/// The call an RPC load makes, again and again.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The procedure.
    pub procedure: String,
    /// Its arguments, the same for every call.
    pub args: Value,
    /// The result every call must answer. `None`: the load first makes one call per slot on
    /// its first connection and takes those answers as the ones to expect, so the procedure
    /// must answer every call alike (as `add` does). Either way each reply is checked byte
    /// for byte.
    pub expect: Option<Value>,
    /// How long a call may wait for its answer: the first calls, whose answers are learned,
    /// and the calls still in flight when the measured window ends. The calls in between
    /// have no timer each, which would cost CPU per call: one left unanswered is still in
    /// flight at the end, and fails there. Default: 10 s.
    pub timeout: Duration,
}

impl Call {
    /// `procedure` with `args`, whose answers are learned from the first ones.
    pub fn new(procedure: impl Into<String>, args: Value) -> Self {
        Self {
            procedure: procedure.into(),
            args,
            expect: None,
            timeout: ANSWER_TIMEOUT,
        }
    }

    /// `add {a: 1, b: 2}`, which must answer 3: the call of the `wse-bench` application and
    /// of the wse-rs demo.
    pub fn add() -> Self {
        Self {
            procedure: "add".into(),
            args: serde_json::json!({"a": 1, "b": 2}),
            expect: Some(Value::from(3)),
            timeout: ANSWER_TIMEOUT,
        }
    }
}

/// The shape of an RPC load: `connections` × `in_flight` calls of `call`, closed loop.
#[derive(Debug, Clone, PartialEq)]
pub struct Rpc {
    /// Connections (C).
    pub connections: usize,
    /// Calls in flight per connection (K).
    pub in_flight: usize,
    /// How long the calls run before the measurement starts.
    pub warmup: Duration,
    /// How long they are measured.
    pub duration: Duration,
    /// The call.
    pub call: Call,
}

/// `load.connections` × `load.in_flight` calls of `load.call`, closed loop: each answer is
/// checked and replaced by a new call at once. Measures for `load.duration` after
/// `load.warmup`, and the CPU time used meanwhile by the generator and by `server` (a
/// process id) when given. Bounded: the callers get `load.call.timeout` after the window to
/// collect their last answers.
///
/// The calls go through the lean client: frames built once, replies compared byte for byte
/// in the read buffer, one write per batch of calls.
///
/// # Errors
/// At the first failure: a connection that cannot be made ready ([`open`]), a reply that is
/// not the one expected or an error answer ([`ErrorKind::Answer`]), a first answer or one of
/// the last still missing past `load.call.timeout` ([`ErrorKind::Timeout`]).
///
/// # Cancel safety
/// The load runs on a thread of its own: dropping the future stops waiting for it, not it.
pub async fn rpc(dial: &Dial, load: &Rpc, server: Option<u32>) -> Result<RpcRun, LoadError> {
    let (dial, load) = (dial.clone(), load.clone());
    on_one_thread(move || async move { calls_on_this_thread(&dial, &load, server).await }).await
}

/// Runs the future `load` makes to its end on a current-thread runtime of its own (in a
/// blocking thread of the caller's runtime), inside a [`LocalSet`]: every task of the load
/// runs on that one thread, and may share state through `Rc` and `Cell` rather than atomics.
///
/// The lean clients cost less CPU per call there than on the two worker threads of the
/// main runtime, which wake each other through an eventfd and a futex: against the raw echo,
/// 0.34 µs per call rather than 0.38–0.39 µs, against wse-rs (JSON) 0.45–0.48 µs rather than
/// 0.49–0.57 µs (3-second runs taking turns). One thread also leaves the other core to the
/// server, which needs it more. Fewer tasks did not help: one task driving every caller of
/// an RPC run (`join_all`) cost 0.33–0.34 µs against the echo and 0.46 µs against wse-rs,
/// where a task per connection costs 0.30–0.32 and 0.41–0.43.
async fn on_one_thread<T, Load, Loading>(load: Load) -> Result<T, Failure>
where
    T: Send + 'static,
    Load: FnOnce() -> Loading + Send + 'static,
    Loading: Future<Output = Result<T, Failure>>,
{
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LoadError::local(format!("cannot start the load's runtime: {e}")))?;
        LocalSet::new().block_on(&runtime, load())
    })
    .await
    .map_err(|e| LoadError::local(e.to_string()))?
}

/// [`rpc`], on a current-thread runtime and its [`LocalSet`] (see [`on_one_thread`]).
async fn calls_on_this_thread(
    dial: &Dial,
    load: &Rpc,
    server: Option<u32>,
) -> Result<RpcRun, Failure> {
    let Rpc {
        connections,
        in_flight,
        warmup,
        duration,
        ref call,
    } = *load;
    let answer_timeout = call.timeout;
    let mut first = open(dial, "load0").await?;
    let slots = match Slots::new(dial, call, in_flight)? {
        Some(slots) => slots,
        None => Slots::learn(dial, call, in_flight, &mut first).await?,
    };
    let run = Rc::new(Run {
        slots,
        measuring: Cell::new(false),
        stopping: Cell::new(false),
        latency: RefCell::new(
            Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
        ),
    });
    let mut tasks = Vec::with_capacity(connections);
    let mut first = Some(first);
    for c in 0..connections.max(1) {
        let ws = match first.take() {
            Some(ws) => ws,
            None => open(dial, &format!("load{c}")).await?,
        };
        let conn = Conn::from_ws(ws, RPC_READ_BUFFER)?;
        let run = Rc::clone(&run);
        tasks.push(tokio::task::spawn_local(
            async move { caller(conn, &run).await },
        ));
    }
    tokio::time::sleep(warmup).await;
    let cpu_before = cpu::Sample::now(server)?;
    run.measuring.set(true);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    run.measuring.set(false);
    let window = started.elapsed();
    let cpu = cpu::Sample::now(server)?.since(cpu_before);
    run.stopping.set(true);

    // A call never answered would leave its connection waiting forever: bounded here, since
    // the callers' reads carry no timer of their own (one per read would cost CPU per batch).
    // The call's timeout bounds the answers alone: each close after them has its own bound.
    let finished = tokio::time::timeout(answer_timeout, futures_util::future::join_all(tasks))
        .await
        .map_err(|_| {
            LoadError::timeout(format!(
                "calls still unanswered {answer_timeout:?} after the run: replies were lost"
            ))
        })?;
    let mut calls = 0;
    let mut answered = Vec::with_capacity(finished.len());
    for task in finished {
        let (done, conn) = task.map_err(|e| e.to_string())??;
        calls += done;
        answered.push(conn);
    }
    let closed = futures_util::future::join_all(answered.into_iter().map(Conn::close)).await;
    closed.into_iter().collect::<Result<(), _>>()?;
    let latency = run.latency.borrow().clone();
    Ok(RpcRun {
        calls,
        window,
        latency,
        cpu,
    })
}

/// What the callers of an RPC run share, on their one thread.
#[derive(Debug)]
struct Run {
    /// The calls and their replies.
    slots: Slots,
    /// Whether replies now count: the measured window, after the warm-up.
    measuring: Cell<bool>,
    /// Whether the run is over: answered calls are no longer replaced.
    stopping: Cell<bool>,
    /// The latency of each call answered in the measured window, in microseconds. One
    /// histogram for every connection: one per connection (50 × 140 KB of counters) made each
    /// record a cache miss, 5 % of the generator's CPU.
    latency: RefCell<Histogram<u64>>,
}

/// The read buffer of an RPC connection: far more than the replies in flight (at K = 16,
/// about 500 bytes), so that a read takes all that has arrived.
const RPC_READ_BUFFER: usize = 64 << 10;

/// The calls of an RPC connection and the reply each must get, built once per run.
///
/// Slot `i` has one call in flight, stamped `i` in decimal: the calls are byte for byte those
/// of the tokio-tungstenite generator this one replaced.
#[derive(Debug)]
struct Slots {
    /// Each slot's call, as a complete client frame.
    calls: Vec<Vec<u8>>,
    /// Each slot's reply: the response `3` for wse, the call itself for the echo.
    replies: Expected,
}

impl Slots {
    /// The `in_flight` calls of `call` in the codec of `dial`, each as its frame (unmasked).
    fn frames(dial: &Dial, call: &Call, in_flight: usize) -> Result<Vec<Vec<u8>>, Failure> {
        let protocol = dial.codec.protocol();
        (0..in_flight.max(1))
            .map(|slot| {
                protocol
                    .encode(&call.procedure, &call.args, Some(&slot.to_string()))
                    .map_err(|e| LoadError::local(e.to_string()))
            })
            .collect()
    }

    /// The calls and their replies, built from what is known: the echo's replies are the
    /// calls themselves, a wse server's the response of `call.expect`. `None` when the
    /// replies must be learned ([`Slots::learn`]).
    fn new(dial: &Dial, call: &Call, in_flight: usize) -> Result<Option<Self>, Failure> {
        let protocol = dial.codec.protocol();
        let frames = Self::frames(dial, call, in_flight)?;
        let replies = match (&dial.hello, &call.expect) {
            (Hello::None, _) => frames.clone(),
            (Hello::Wse(_), Some(result)) => (0..frames.len())
                .map(|slot| {
                    protocol
                        .encode(frame::RESPONSE, result, Some(&slot.to_string()))
                        .map_err(|e| LoadError::local(e.to_string()))
                })
                .collect::<Result<_, _>>()?,
            (Hello::Wse(_), None) => return Ok(None),
        };
        Ok(Some(Self::with_replies(dial, &frames, replies)?))
    }

    /// The calls and the replies a wse server gives them: one call per slot on `ws`, whose
    /// answers are the replies every later call of the slot must get byte for byte. Messages
    /// on the way are skipped.
    async fn learn(
        dial: &Dial,
        call: &Call,
        in_flight: usize,
        ws: &mut Ws,
    ) -> Result<Self, Failure> {
        let frames = Self::frames(dial, call, in_flight)?;
        for frame in &frames {
            ws.feed(dial.codec.message(frame.clone()))
                .await
                .map_err(|e| e.to_string())?;
        }
        ws.flush().await.map_err(|e| e.to_string())?;
        let protocol = dial.codec.protocol();
        let mut replies: HashMap<usize, Vec<u8>> = HashMap::with_capacity(frames.len());
        let learning = async {
            while replies.len() < frames.len() {
                let data = next_data(ws, "the first calls").await?;
                let reply = protocol.unpack(&data).map_err(|e| e.to_string())?;
                let Some(slot) = reply.stamp().and_then(|stamp| stamp.parse::<usize>().ok()) else {
                    continue;
                };
                match reply.kind.as_ref() {
                    frame::RESPONSE
                        if slot < frames.len() && replies.insert(slot, data.to_vec()).is_some() =>
                    {
                        return Err(format!("a second reply for slot {slot}").into());
                    }
                    frame::RESPONSE_ERR => {
                        return Err(answered_with_error(
                            protocol,
                            &call.procedure,
                            reply.payload,
                        ));
                    }
                    _ => {}
                }
            }
            Ok::<_, Failure>(())
        };
        tokio::time::timeout(call.timeout, learning)
            .await
            .map_err(|_| {
                LoadError::timeout(format!(
                    "no answer to {} within {:?}",
                    call.procedure, call.timeout
                ))
            })??;
        let replies = (0..frames.len())
            .map(|slot| replies.remove(&slot).ok_or("a slot without its reply"))
            .collect::<Result<_, _>>()?;
        Self::with_replies(dial, &frames, replies)
    }

    fn with_replies(
        dial: &Dial,
        frames: &[Vec<u8>],
        replies: Vec<Vec<u8>>,
    ) -> Result<Self, Failure> {
        Ok(Self {
            calls: frames
                .iter()
                .map(|frame| lean::masked_frame(dial.codec.opcode(), frame))
                .collect(),
            replies: Expected::new(dial.codec, replies)?,
        })
    }
}

/// The message each slot expects, compared byte for byte, built once per run.
///
/// Slot `i`'s message carries `i` in decimal as its last string (a reply's stamp, or a sent
/// message's payload). That string is the last element of a frame in both codecs, and ends at
/// the same distance from the frame's end in every message, so a message's slot is read from
/// the digits there, and the message then checked whole against that slot's.
#[derive(Debug)]
struct Expected {
    /// Each slot's message, the message payload byte for byte.
    messages: Vec<Vec<u8>>,
    /// The opcode they come as (text for JSON, binary for MessagePack).
    opcode: u8,
    /// How many bytes of a message follow its slot's digits (`"]` in a JSON reply, none in
    /// MessagePack).
    after_digits: usize,
    /// The most digits a slot's number has.
    widest: usize,
}

impl Expected {
    /// The messages of `codec` each slot expects, slot `i`'s at `messages[i]`.
    fn new(codec: Codec, messages: Vec<Vec<u8>>) -> Result<Self, Failure> {
        let mut after_digits = None;
        for (slot, message) in messages.iter().enumerate() {
            let digits = slot.to_string();
            // The slot's string is the frame's last element in both codecs: its last
            // occurrence.
            let at = message
                .windows(digits.len())
                .rposition(|window| window == digits.as_bytes())
                .ok_or("a message without its slot's number")?;
            let after = message.len() - at - digits.len();
            if *after_digits.get_or_insert(after) != after {
                return Err("the messages' slot numbers end at different places".into());
            }
        }
        let expected = Self {
            opcode: codec.opcode(),
            after_digits: after_digits.ok_or("no slot")?,
            widest: messages.len().saturating_sub(1).to_string().len(),
            messages,
        };
        // The digits are found by their place alone: make sure every right message is.
        for (slot, message) in expected.messages.iter().enumerate() {
            if expected.slot_of(expected.opcode, message) != Ok(slot) {
                return Err(
                    format!("the number of slot {slot} is not where it is looked for").into(),
                );
            }
        }
        Ok(expected)
    }

    /// The slot `message` is for, once it is checked byte for byte.
    fn slot_of(&self, opcode: u8, message: &[u8]) -> Result<usize, Failure> {
        let slot = message
            .len()
            .checked_sub(self.after_digits)
            .and_then(|end| {
                let before_end = message.get(..end)?;
                let digits = before_end
                    .iter()
                    .rev()
                    .take(self.widest)
                    .take_while(|byte| byte.is_ascii_digit())
                    .count();
                before_end[end - digits..]
                    .iter()
                    .try_fold(0usize, |slot, &digit| {
                        slot.checked_mul(10)?.checked_add(usize::from(digit - b'0'))
                    })
                    .filter(|_| digits > 0)
            })
            .filter(|&slot| {
                opcode == self.opcode && self.messages.get(slot).is_some_and(|m| m == message)
            });
        slot.ok_or_else(|| {
            LoadError::from(format!(
                "wrong message (opcode {opcode:#x}): {:?}",
                String::from_utf8_lossy(message)
            ))
        })
    }
}

/// One connection's closed loop: each slot has one call in flight; every reply read is
/// checked, timed, and answered by the slot's next call, all of a read's calls in one write.
/// Returns the calls answered in the measured window, and the connection, open: its close is
/// not bounded by the wait for the last answers.
async fn caller(mut conn: Conn, run: &Run) -> Result<(u64, Conn), Failure> {
    let slots = &run.slots;
    let in_flight = slots.calls.len();
    let mut latency = Latencies::new(&run.latency);
    let mut done = 0u64;
    // The bytes of the next write, and the slots whose calls it carries.
    let mut out = slots.calls.concat();
    let mut resent = Vec::with_capacity(in_flight);
    // Whether each slot waits for its reply (a second reply is a failure), and since when.
    let mut waiting = vec![true; in_flight];
    let mut sent_at = vec![Instant::now(); in_flight];
    conn.write_all(&out).await?;
    let mut outstanding = in_flight;
    while outstanding > 0 {
        conn.fill().await?;
        // One clock read and one look at the flags per read, not per reply: the replies of a
        // read arrived together.
        latency.received(Instant::now());
        let (measuring, stopping) = (run.measuring.get(), run.stopping.get());
        out.clear();
        while let Some((opcode, reply)) = conn.next_message(&mut out)? {
            let slot = slots.replies.slot_of(opcode, reply)?;
            if !std::mem::replace(&mut waiting[slot], false) {
                return Err(format!("a second reply for slot {slot}").into());
            }
            if measuring {
                latency.record(sent_at[slot]);
                done += 1;
            }
            if stopping {
                outstanding -= 1;
            } else {
                out.extend_from_slice(&slots.calls[slot]);
                resent.push(slot);
            }
        }
        latency.flush();
        if !out.is_empty() {
            let sent = Instant::now();
            for slot in resent.drain(..) {
                (waiting[slot], sent_at[slot]) = (true, sent);
            }
            conn.write_all(&out).await?;
        }
    }
    Ok((done, conn))
}

/// The latencies of a connection's calls, recorded a group at a time: the replies of one read
/// that were sent in one write share one latency, which goes into the histogram once with
/// their count.
#[derive(Debug)]
struct Latencies<'run> {
    /// Where they go, in microseconds: the run's histogram.
    histogram: &'run RefCell<Histogram<u64>>,
    /// When the replies being recorded were read.
    received: Instant,
    /// When the group's calls were sent, and how many replies it holds; not yet recorded.
    group: Option<(Instant, u64)>,
}

impl<'run> Latencies<'run> {
    /// Nothing recorded yet, into `histogram`.
    fn new(histogram: &'run RefCell<Histogram<u64>>) -> Self {
        Self {
            histogram,
            received: Instant::now(),
            group: None,
        }
    }

    /// The following replies were read at `received`; [`Latencies::flush`] must have
    /// recorded those of the previous read.
    fn received(&mut self, received: Instant) {
        self.received = received;
    }

    /// One reply to a call sent at `sent`.
    fn record(&mut self, sent: Instant) {
        match &mut self.group {
            Some((group_sent, count)) if *group_sent == sent => *count += 1,
            _ => {
                self.flush();
                self.group = Some((sent, 1));
            }
        }
    }

    /// Records the group being counted, once a read's replies are done.
    fn flush(&mut self) {
        if let Some((sent, count)) = self.group.take() {
            let micros = self.received.duration_since(sent).as_micros();
            let micros = u64::try_from(micros).unwrap_or(u64::MAX).max(1);
            self.histogram
                .borrow_mut()
                .saturating_record_n(micros, count);
        }
    }
}

/// Sends to one user, within one node or from one node of a cluster to another: who sends,
/// who receives, and whose CPU time is measured.
#[derive(Debug, Clone)]
pub struct Relay {
    /// The sender's server.
    pub sender: Dial,
    /// The receiver's server: the sender's (within one node), or another node of its cluster.
    /// Every dial of a relay speaks one codec.
    pub receiver: Dial,
    /// In a cluster, a node other than the sender's, which tells when the sender's node has
    /// published what it was sent: a node publishes in order, so a send from the sender's
    /// node to a device on this one arrives after everything published before it (the
    /// barrier).
    pub barrier: Option<Dial>,
    /// The processes whose CPU time is measured: every server (also a node that only hears
    /// the sends), and the cluster's Redis.
    pub servers: Vec<u32>,
}

/// The outcome of a relay run.
#[derive(Debug)]
pub struct RelayRun {
    /// Sends measured.
    pub messages: u64,
    /// From the first measured send until the receiver had them all.
    pub delivered: Duration,
    /// From the first measured send until the sender's node had also published them all to
    /// the cluster (the barrier passed, see [`Relay::barrier`]); `None` outside a cluster.
    pub published: Option<Duration>,
    /// The latency of each measured send, from the write of its call to the read of its
    /// delivery, in microseconds.
    pub latency: Histogram<u64>,
    /// CPU time used from the first measured send until they were all delivered and
    /// published.
    pub cpu: cpu::Spent,
}

impl RelayRun {
    /// Adds another round of the same load.
    ///
    /// # Errors
    /// When the latency histograms cannot be added (they have the same bounds, so they can).
    pub fn merge(&mut self, other: Self) -> Result<(), LoadError> {
        self.messages += other.messages;
        self.delivered += other.delivered;
        self.published = self.published.zip(other.published).map(|(a, b)| a + b);
        self.cpu.add(other.cpu);
        self.latency
            .add(other.latency)
            .map_err(|e| LoadError::local(e.to_string()))
    }
}

/// The type of the messages sent to the user.
const TICK: &str = "tick";

/// The receiving users of each relay run are new: a receiver of the last run that is still
/// closing on one node never takes a message of the next.
static NEXT_RECEIVER: AtomicUsize = AtomicUsize::new(0);

/// The read buffer of a relay connection: far more than the messages in flight.
const RELAY_READ_BUFFER: usize = 64 << 10;

/// How long a relay run may take, warm-up included, before the messages it misses count as
/// lost.
const RELAY_TIMEOUT: Duration = Duration::from_secs(60);

/// `messages` sends to one user, `in_flight` at a time, after `warmup` sends that are not
/// measured. Each is a call of `send_to_user {user, type: "tick", payload: "<slot>"}` stamped
/// `<slot>` on the sender's connection, which the user's one device, the receiver, gets as
/// `["tick", "<slot>", null]`; the call answers how many devices of the user its node holds
/// (1 within one node, 0 across nodes). A slot is sent again once its delivery and its reply
/// are both in, each checked byte for byte.
///
/// The latency of a send is from the write of its call to the read of its delivery: with one
/// in flight, the time a message takes to reach its user. In a cluster, the barrier (see
/// [`Relay::barrier`]) is passed after the warm-up (nothing of it is still to publish when the measurement starts)
/// and after the measured sends.
///
/// # Errors
/// At the first failure: a connection that cannot be made ready, a reply or delivery that is
/// not the one expected, messages lost (60 s for the whole run).
///
/// # Cancel safety
/// The load runs on a thread of its own: dropping the future stops waiting for it, not it.
pub async fn relay(
    relay: &Relay,
    in_flight: usize,
    warmup: usize,
    messages: usize,
) -> Result<RelayRun, LoadError> {
    let relay = relay.clone();
    on_one_thread(
        move || async move { relay_on_this_thread(&relay, in_flight, warmup, messages).await },
    )
    .await
}

/// [`relay`], on a current-thread runtime and its [`LocalSet`] (see [`on_one_thread`]).
async fn relay_on_this_thread(
    relay: &Relay,
    in_flight: usize,
    warmup: usize,
    messages: usize,
) -> Result<RelayRun, Failure> {
    let codec = relay.sender.codec;
    if relay.receiver.codec != codec || relay.barrier.as_ref().is_some_and(|b| b.codec != codec) {
        return Err("every connection of a relay speaks one codec".into());
    }
    let deadline = Instant::now() + RELAY_TIMEOUT;
    let user = format!("receiver{}", NEXT_RECEIVER.fetch_add(1, Ordering::Relaxed));
    let here = usize::from(relay.sender.url == relay.receiver.url);
    let mut barrier = match &relay.barrier {
        Some(far) => Some(Barrier::open(&relay.sender, far, &format!("{user}-barrier")).await?),
        None => None,
    };
    let mut sends = Sends::open(relay, &user, here, in_flight).await?;
    sends.run(warmup, false, deadline).await?;
    if let Some(barrier) = &mut barrier {
        barrier.pass(deadline).await?;
    }
    let (began, before) = (Instant::now(), cpu::Sample::of(&relay.servers)?);
    let delivered = sends.run(messages, true, deadline).await?;
    if let Some(barrier) = &mut barrier {
        barrier.pass(deadline).await?;
    }
    let (published, after) = (Instant::now(), cpu::Sample::of(&relay.servers)?);
    let latency = sends.latency.clone();
    sends.close().await?;
    if let Some(barrier) = barrier {
        barrier.close().await?;
    }
    Ok(RelayRun {
        messages: messages as u64,
        delivered: delivered.duration_since(began),
        published: relay
            .barrier
            .as_ref()
            .map(|_| published.duration_since(began)),
        latency,
        cpu: after.since(before),
    })
}

/// The frames of one send to a user, from one slot.
#[derive(Debug)]
struct SendFrames {
    /// The call, as a complete client frame.
    call: Vec<u8>,
    /// Its reply.
    reply: Vec<u8>,
    /// The message the user's device gets.
    delivery: Vec<u8>,
}

impl SendFrames {
    /// The frames of a send to `user` from slot `slot`, when the sender's node holds `here`
    /// of the user's devices (what the call answers).
    fn new(codec: Codec, user: &str, here: usize, slot: usize) -> Result<Self, Failure> {
        let protocol = codec.protocol();
        let number = slot.to_string();
        let args = serde_json::json!({"user": user, "type": TICK, "payload": number});
        let call = protocol
            .encode("send_to_user", &args, Some(&number))
            .map_err(|e| e.to_string())?;
        let reply = protocol
            .encode(frame::RESPONSE, &here, Some(&number))
            .map_err(|e| e.to_string())?;
        let delivery = protocol
            .encode(TICK, &number, None)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            call: lean::masked_frame(codec.opcode(), &call),
            reply,
            delivery,
        })
    }
}

/// The sender and the receiver of a relay, and the state of each slot.
#[derive(Debug)]
struct Sends {
    sender: Conn,
    receiver: Conn,
    /// Each slot's call, as a complete client frame.
    calls: Vec<Vec<u8>>,
    /// Each slot's reply on the sender's connection.
    replies: Expected,
    /// Each slot's message to the receiver.
    deliveries: Expected,
    /// Whether each slot waits for its delivery.
    delivering: Vec<bool>,
    /// Whether each slot waits for its reply.
    replying: Vec<bool>,
    /// When each slot's call was written.
    sent_at: Vec<Instant>,
    /// The latency of each send recorded, in microseconds.
    latency: Histogram<u64>,
}

impl Sends {
    /// Connects the receiver (as `user`) and then the sender, with `in_flight` slots.
    async fn open(
        relay: &Relay,
        user: &str,
        here: usize,
        in_flight: usize,
    ) -> Result<Self, Failure> {
        let codec = relay.sender.codec;
        let in_flight = in_flight.max(1);
        let (mut calls, mut replies, mut deliveries) = (Vec::new(), Vec::new(), Vec::new());
        for slot in 0..in_flight {
            let frames = SendFrames::new(codec, user, here, slot)?;
            calls.push(frames.call);
            replies.push(frames.reply);
            deliveries.push(frames.delivery);
        }
        // The receiver first: the sender's first call must find it.
        let receiver = Conn::from_ws(open(&relay.receiver, user).await?, RELAY_READ_BUFFER)?;
        let sender = Conn::from_ws(open(&relay.sender, "sender").await?, RELAY_READ_BUFFER)?;
        Ok(Self {
            sender,
            receiver,
            calls,
            replies: Expected::new(codec, replies)?,
            deliveries: Expected::new(codec, deliveries)?,
            delivering: vec![false; in_flight],
            replying: vec![false; in_flight],
            sent_at: vec![Instant::now(); in_flight],
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
        })
    }

    /// Makes `count` sends, every slot in flight, until each is delivered and answered;
    /// records their latencies when `record`. Returns when the last delivery was read.
    async fn run(
        &mut self,
        count: usize,
        record: bool,
        deadline: Instant,
    ) -> Result<Instant, Failure> {
        let (mut sent, mut delivered, mut replied) = (0, 0, 0);
        let mut last_delivery = Instant::now();
        // Slots whose send is done, to send again; the sender's next write (with its pongs),
        // and the receiver's pongs.
        let mut free: Vec<usize> = (0..self.calls.len()).collect();
        let (mut out, mut pongs) = (Vec::new(), Vec::new());
        loop {
            let now = Instant::now();
            for slot in free.drain(..) {
                if sent == count {
                    break;
                }
                out.extend_from_slice(&self.calls[slot]);
                self.delivering[slot] = true;
                self.replying[slot] = true;
                self.sent_at[slot] = now;
                sent += 1;
            }
            if !out.is_empty() {
                self.sender.write_all(&out).await?;
                out.clear();
            }
            if delivered == count && replied == count {
                return Ok(last_delivery);
            }
            tokio::select! {
                read = self.receiver.fill() => {
                    read?;
                    last_delivery = Instant::now();
                    while let Some((opcode, message)) = self.receiver.next_message(&mut pongs)? {
                        let slot = self.deliveries.slot_of(opcode, message)?;
                        if !std::mem::replace(&mut self.delivering[slot], false) {
                            return Err(format!("a second delivery for slot {slot}").into());
                        }
                        delivered += 1;
                        if record {
                            let micros = last_delivery.duration_since(self.sent_at[slot]);
                            let micros = u64::try_from(micros.as_micros()).unwrap_or(u64::MAX);
                            self.latency.saturating_record(micros.max(1));
                        }
                        if !self.replying[slot] {
                            free.push(slot);
                        }
                    }
                    if !pongs.is_empty() {
                        self.receiver.write_all(&pongs).await?;
                        pongs.clear();
                    }
                }
                read = self.sender.fill() => {
                    read?;
                    while let Some((opcode, reply)) = self.sender.next_message(&mut out)? {
                        let slot = self.replies.slot_of(opcode, reply)?;
                        if !std::mem::replace(&mut self.replying[slot], false) {
                            return Err(format!("a second reply for slot {slot}").into());
                        }
                        replied += 1;
                        if !self.delivering[slot] {
                            free.push(slot);
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(format!(
                        "{delivered} of {count} sends to a user delivered and {replied} \
                         answered within {RELAY_TIMEOUT:?}: messages were lost"
                    ).into());
                }
            }
        }
    }

    /// Closes both connections.
    async fn close(self) -> Result<(), Failure> {
        let (receiver, sender) = tokio::join!(self.receiver.close(), self.sender.close());
        receiver.and(sender)
    }
}

/// When a node of a cluster has published what it was sent: a device on another node, and a
/// connection to the sender's node that sends to it. A node publishes in order, on one
/// connection to Redis, and the other node hears it in that order: once every earlier send
/// was answered (so queued for publishing), a send to that device arrives after all of them.
#[derive(Debug)]
struct Barrier {
    /// On the sender's node.
    near: Conn,
    /// A device of its own user, on another node.
    far: Conn,
    /// The send, as a complete client frame.
    call: Vec<u8>,
    /// Its reply (the sender's node holds none of the user's devices).
    reply: Expected,
    /// Its delivery.
    delivery: Expected,
}

impl Barrier {
    /// A device of `user` on `far`, and a connection to `near` that sends to it.
    async fn open(near: &Dial, far: &Dial, user: &str) -> Result<Self, Failure> {
        let SendFrames {
            call,
            reply,
            delivery,
        } = SendFrames::new(near.codec, user, 0, 0)?;
        let far_conn = Conn::from_ws(open(far, user).await?, RELAY_READ_BUFFER)?;
        let near_conn = Conn::from_ws(open(near, "barrier").await?, RELAY_READ_BUFFER)?;
        Ok(Self {
            near: near_conn,
            far: far_conn,
            call,
            reply: Expected::new(near.codec, vec![reply])?,
            delivery: Expected::new(near.codec, vec![delivery])?,
        })
    }

    /// Sends once and waits for the reply and the delivery.
    async fn pass(&mut self, deadline: Instant) -> Result<(), Failure> {
        self.near.write_all(&self.call).await?;
        let passed = async {
            one_message(&mut self.near, &self.reply).await?;
            one_message(&mut self.far, &self.delivery).await
        };
        tokio::time::timeout_at(deadline, passed)
            .await
            .map_err(|_| "the barrier did not pass: messages were lost".to_owned())?
    }

    /// Closes both connections.
    async fn close(self) -> Result<(), Failure> {
        let (near, far) = tokio::join!(self.near.close(), self.far.close());
        near.and(far)
    }
}

/// Reads the next message of `conn` and checks that it is `expected`'s one slot's.
async fn one_message(conn: &mut Conn, expected: &Expected) -> Result<(), Failure> {
    let mut pongs = Vec::new();
    loop {
        if let Some((opcode, message)) = conn.next_message(&mut pongs)? {
            expected.slot_of(opcode, message)?;
            break;
        }
        if !pongs.is_empty() {
            conn.write_all(&pongs).await?;
            pongs.clear();
        }
        conn.fill().await?;
    }
    if !pongs.is_empty() {
        conn.write_all(&pongs).await?;
    }
    Ok(())
}

/// Completes `cycles` connect → ready → close cycles, `concurrency` at a time; returns the
/// time taken. Each cycle done is counted into `progress` when given.
///
/// # Errors
/// At the first cycle that fails (see [`open`]; the baseline's echo and each close are
/// bounded too, 10 s each): the other cycles stop there.
///
/// # Cancel safety
/// The cycles run in tasks of their own, which dropping the future aborts (their connections
/// are dropped).
pub async fn handshakes(
    dial: &Dial,
    cycles: usize,
    concurrency: usize,
    progress: Option<&Progress>,
) -> Result<Duration, LoadError> {
    let next = Arc::new(AtomicUsize::new(0));
    // Set at the first failure, so that no worker starts another cycle; the workers are
    // aborted as well (the set is dropped), but one between two cycles sees this first.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (dial, next, stop) = (dial.clone(), Arc::clone(&next), Arc::clone(&stop));
        let progress = progress.cloned();
        workers.spawn(async move {
            while !stop.load(Ordering::Relaxed) && next.fetch_add(1, Ordering::Relaxed) < cycles {
                if let Err(error) = cycle(&dial).await {
                    stop.store(true, Ordering::Relaxed);
                    return Err(error);
                }
                if let Some(progress) = &progress {
                    progress.add(1);
                }
            }
            Ok::<_, Failure>(())
        });
    }
    while let Some(worker) = workers.join_next().await {
        let done = worker
            .map_err(|e| LoadError::local(e.to_string()))
            .and_then(|done| done);
        if let Err(error) = done {
            stop.store(true, Ordering::Relaxed);
            return Err(error);
        }
    }
    Ok(started.elapsed())
}

/// One cycle of the handshake load: connect, get ready, close.
async fn cycle(dial: &Dial) -> Result<(), Failure> {
    let mut ws = open(dial, "cycler").await?;
    if !dial.hello.is_wse() {
        // The baseline's "handshake": one frame each way.
        ws.send(dial.codec.message(b"[\"hi\",null,null]".to_vec()))
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(ANSWER_TIMEOUT, ws.next())
            .await
            .map_err(|_| {
                LoadError::timeout(format!("no echo of the hi within {ANSWER_TIMEOUT:?}"))
            })?
            .ok_or("closed")?
            .map_err(|e| e.to_string())?;
    }
    close(ws).await
}

/// Opens `count` ready connections, `concurrency` at a time, and holds them.
///
/// # Errors
/// At the first connection that fails (see [`open`]).
///
/// # Cancel safety
/// Dropping the future drops the connections opened so far.
pub async fn hold(dial: &Dial, count: usize, concurrency: usize) -> Result<Vec<Ws>, LoadError> {
    open_many(count, concurrency, |i| async move {
        open(dial, &format!("idle{i}")).await
    })
    .await
}

/// Runs `open(i)` for each `i` below `count`, `concurrency` at a time, and collects the
/// connections.
async fn open_many<T, Opening>(
    count: usize,
    concurrency: usize,
    open: impl FnMut(usize) -> Opening,
) -> Result<Vec<T>, Failure>
where
    Opening: Future<Output = Result<T, Failure>>,
{
    let mut held = Vec::with_capacity(count);
    let mut opening = futures_util::stream::iter(0..count)
        .map(open)
        .buffer_unordered(concurrency);
    while let Some(conn) = opening.next().await {
        held.push(conn?);
    }
    Ok(held)
}

/// Who a fan-out reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every connection, each its own user: `broadcast`.
    Everyone,
    /// Every device of one user: `send_to_user`.
    OneUser,
    /// The members of one room, among `bystanders` more connections that are in no room:
    /// `room_send`.
    Room {
        /// Connections held besides the receivers, each its own user, in no room.
        bystanders: usize,
    },
}

/// The call that makes the server send one message to every receiver of a fan-out.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// The procedure.
    pub procedure: String,
    /// Its arguments; a string that is exactly `{round}`, anywhere in them, is replaced by
    /// the round's number.
    pub args: Value,
}

impl Trigger {
    /// `broadcast {type: "tick", payload: <round>}`: the call of the `wse-bench`
    /// application and of the wse-rs demo that reaches every connection.
    pub fn broadcast() -> Self {
        Self {
            procedure: "broadcast".into(),
            args: serde_json::json!({"type": TICK, "payload": ROUND}),
        }
    }

    /// The arguments of round `round`.
    fn args(&self, round: usize) -> Value {
        fill_strings(&self.args, &|text| {
            if text == ROUND {
                Value::from(round)
            } else {
                Value::String(text.to_owned())
            }
        })
    }

    /// Whether the messages carry the round's number as their whole payload: the trigger's
    /// `payload` argument is exactly `{round}`, as in the demo's `broadcast`, `send_to_user`
    /// and `room_send`. Only then is each receiver's every round checked; a `{round}`
    /// elsewhere in the arguments says nothing of what the messages carry, so their rounds
    /// are only counted.
    fn numbers_rounds(&self) -> bool {
        self.args.get("payload").and_then(Value::as_str) == Some(ROUND)
    }
}

/// The placeholder of a [`Trigger`]'s round.
const ROUND: &str = "{round}";

/// The shape of a fan-out load.
#[derive(Debug, Clone, PartialEq)]
pub struct Fanout {
    /// Connections that receive every round.
    pub receivers: usize,
    /// Messages each receiver must get: one trigger each.
    pub rounds: usize,
    /// Who the receivers are.
    pub audience: Audience,
    /// The call that triggers a round. `None`: the `wse-bench` application's for the
    /// audience (`broadcast`, `send_to_user` or `room_send`), [`Trigger::broadcast`] for
    /// [`Audience::Everyone`]. A trigger given here is used whatever the audience.
    pub trigger: Option<Trigger>,
}

/// The user whose devices receive in [`Audience::OneUser`].
const DEVICES_OF: &str = "devices-of-one-user";

/// The room whose members receive in [`Audience::Room`].
const ROOM: &str = "bench-room";

/// Joins [`ROOM`] with the built-in `rooms.join`, over the connection before it turns lean;
/// its answer must come within 10 s.
async fn join_room(ws: &mut Ws, codec: Codec) -> Result<(), Failure> {
    const JOIN: &str = "rooms.join";
    let args = serde_json::json!({"room": ROOM});
    send_frame(ws, codec, JOIN, &args, Some("join")).await?;
    let protocol = codec.protocol();
    let joined = async {
        let data = next_data(ws, "the room join").await?;
        let frame = protocol.unpack(&data).map_err(|e| e.to_string())?;
        match frame.kind.as_ref() {
            frame::RESPONSE => Ok(()),
            frame::RESPONSE_ERR => Err(answered_with_error(protocol, JOIN, frame.payload)),
            other => Err(format!("{JOIN} answered {other}").into()),
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, joined)
        .await
        .map_err(|_| LoadError::timeout(format!("no answer to {JOIN} within {ANSWER_TIMEOUT:?}")))?
}

/// How long the rounds of a fan-out may take to reach every receiver.
const FANOUT_TIMEOUT: Duration = Duration::from_secs(60);

/// The read buffer of a fan-out receiver: the largest message it can take (they are about 20
/// bytes); small, since 10,000 receivers each hold one.
const RECEIVER_READ_BUFFER: usize = 4 << 10;

/// Fan-out: `load.receivers` connections wait for messages; `load.rounds` triggers sent back
/// to back on a control connection each make the server send one message to all of them.
/// Returns the time from the first trigger until every receiver has every round, and the CPU
/// time the generator and `server` (a process id) used meanwhile. Each message received is
/// counted into `progress` when given. Bounded: the triggers must be written and the rounds
/// reach everyone within 60 s.
///
/// The receivers are lean clients. When the trigger's `payload` argument is exactly
/// `{round}` (as the default triggers' is), so that each message's payload is its round's
/// number, each receiver checks that it gets every round exactly once; otherwise it counts whole messages (any message counts:
/// the server must send the receivers nothing else meanwhile), and one past the rounds is a
/// failure. The control connection stays on tokio-tungstenite: it sends the `rounds`
/// triggers and reads their answers meanwhile.
///
/// # Errors
/// At the first failure: a connection that cannot be made ready; a trigger answered with an
/// error (the server's code: not registered, rate-limited, …), a receiver that gets a round
/// twice, a round that does not exist or more messages than rounds, or that is closed under
/// load ([`ErrorKind::Answer`]); triggers not written or rounds that do not reach everyone
/// within 60 s ([`ErrorKind::Timeout`]).
///
/// # Cancel safety
/// The load runs on a thread of its own: dropping the future stops waiting for it, not it.
pub async fn fanout(
    dial: &Dial,
    load: &Fanout,
    server: Option<u32>,
    progress: Option<&Progress>,
) -> Result<(Duration, cpu::Spent), LoadError> {
    let (dial, load, progress) = (dial.clone(), load.clone(), progress.cloned());
    on_one_thread(move || async move {
        fanout_on_this_thread(&dial, &load, server, progress.as_ref()).await
    })
    .await
}

/// [`fanout`], on a current-thread runtime and its [`LocalSet`] (see [`on_one_thread`]; for
/// 10,000 receivers it costs the generator as much as the two worker threads of the main
/// runtime or a little less, 37–54 ms of CPU for one broadcast to all against 45–57 ms).
async fn fanout_on_this_thread(
    dial: &Dial,
    load: &Fanout,
    server: Option<u32>,
    progress: Option<&Progress>,
) -> Result<(Duration, cpu::Spent), Failure> {
    let Fanout {
        receivers,
        rounds,
        audience,
        ref trigger,
    } = *load;
    let user = (audience == Audience::OneUser).then_some(DEVICES_OF);
    let in_room = matches!(audience, Audience::Room { .. });
    let held = open_many(receivers, 64, |i| async move {
        let identity = user.map_or_else(|| format!("idle{i}"), str::to_owned);
        let mut ws = open(dial, &identity).await?;
        if in_room {
            join_room(&mut ws, dial.codec).await?;
        }
        Conn::from_ws(ws, RECEIVER_READ_BUFFER)
    })
    .await?;
    let bystanders = match audience {
        Audience::Room { bystanders } => bystanders,
        _ => 0,
    };
    let bystanders = open_many(bystanders, 64, |i| async move {
        open(dial, &format!("bystander{i}")).await
    })
    .await?;
    let trigger = trigger.clone().unwrap_or_else(|| match audience {
        Audience::Everyone => Trigger::broadcast(),
        Audience::OneUser => Trigger {
            procedure: "send_to_user".into(),
            args: serde_json::json!({"user": DEVICES_OF, "type": TICK, "payload": ROUND}),
        },
        Audience::Room { .. } => Trigger {
            procedure: "room_send".into(),
            args: serde_json::json!({"room": ROOM, "type": TICK, "payload": ROUND}),
        },
    });
    // The raw fan-out server sends what it is sent: its messages carry their round.
    let numbered = (!dial.hello.is_wse() || trigger.numbers_rounds()).then_some(dial.codec);
    let delivered = Rc::new(Cell::new(0usize));
    let mut receiving = JoinSet::new();
    for conn in held {
        let (delivered, progress) = (Rc::clone(&delivered), progress.cloned());
        let tally = Tally::new(rounds, numbered);
        receiving
            .spawn_local(async move { receive(conn, tally, &delivered, progress.as_ref()).await });
    }
    let control = open(dial, "control").await?;
    let protocol = dial.codec.protocol();
    let triggers = (0..rounds)
        .map(|round| {
            if dial.hello.is_wse() {
                protocol.encode(
                    &trigger.procedure,
                    &trigger.args(round),
                    Some(&round.to_string()),
                )
            } else {
                // The raw fan-out server sends every message it gets to everyone.
                protocol.encode(TICK, &round, None)
            }
            .map(|frame| dial.codec.message(frame))
            .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let answers = dial.hello.is_wse().then(|| Answers {
        procedure: &trigger.procedure,
        protocol,
        answered: vec![false; rounds],
    });
    let cpu_before = cpu::Sample::now(server)?;
    let started = Instant::now();
    let everyone = async {
        let mut received = Vec::with_capacity(receivers);
        while let Some(done) = receiving.join_next().await {
            received.push(done.map_err(|e| LoadError::local(e.to_string()))??);
        }
        Ok::<_, Failure>(received)
    };
    // The first failure ends the wait, whichever side it comes from: an error answer on the
    // control connection or a receiver that failed, rather than the timeout they would cause.
    let reached = async {
        tokio::select! {
            failed = steer(control, triggers, answers) => Err(failed),
            received = everyone => received,
        }
    };
    let received = tokio::time::timeout_at(started + FANOUT_TIMEOUT, reached)
        .await
        .map_err(|_| {
            LoadError::timeout(format!(
                "{} of {} messages delivered within {FANOUT_TIMEOUT:?}: the rounds never \
                 reached everyone",
                delivered.get(),
                receivers * rounds
            ))
        })??;
    let elapsed = started.elapsed();
    let cpu = cpu::Sample::now(server)?.since(cpu_before);
    let (closed, bystanders_closed) = tokio::join!(
        futures_util::future::join_all(received.into_iter().map(Conn::close_counting)),
        futures_util::future::join_all(bystanders.into_iter().map(close)),
    );
    for extra in closed {
        let extra = extra?;
        if extra > 0 {
            return Err(
                format!("a receiver got {extra} messages more than the {rounds} rounds").into(),
            );
        }
    }
    bystanders_closed.into_iter().collect::<Result<(), _>>()?;
    Ok((elapsed, cpu))
}

/// What the control connection of a fan-out expects back: one answer per round's trigger,
/// stamped with the round, and none of them an error.
struct Answers<'a> {
    /// The trigger's procedure, to name in a failure.
    procedure: &'a str,
    protocol: &'a dyn Protocol,
    /// Whether each round's trigger was answered.
    answered: Vec<bool>,
}

impl Answers<'_> {
    /// Checks one message that came on the control connection: an answer to a trigger, or
    /// a message that is not (the broadcast reaches the control connection too), skipped.
    fn check(&mut self, data: &[u8]) -> Result<(), Failure> {
        let frame = self.protocol.unpack(data).map_err(|e| e.to_string())?;
        let Some(stamp) = frame.stamp() else {
            return Ok(());
        };
        let round = stamp.parse::<usize>().ok();
        match (frame.kind.as_ref(), round) {
            (frame::RESPONSE, Some(round)) if round < self.answered.len() => {
                if std::mem::replace(&mut self.answered[round], true) {
                    return Err(format!("a second answer to the trigger of round {round}").into());
                }
                Ok(())
            }
            (frame::RESPONSE_ERR, _) => Err(answered_with_error(
                self.protocol,
                &format!("{} (round {stamp})", self.procedure),
                frame.payload,
            )),
            (frame::RESPONSE, _) => Err(format!("an answer to no trigger: {stamp:?}").into()),
            // A call of the server's: not this load's business (it goes unanswered).
            _ => Ok(()),
        }
    }
}

/// Writes the triggers on the control connection while reading what comes back, checking
/// each answer when `answers` is given (not for the raw server, which answers nothing). Once
/// every trigger is written and answered it goes on reading (and dropping) what the
/// connection gets, so the server never finds it slow; it returns only when something fails:
/// an error answer, an answer missing when the connection ends, a broken socket.
async fn steer(control: Ws, triggers: Vec<Message>, mut answers: Option<Answers<'_>>) -> Failure {
    let (mut sink, mut stream) = control.split();
    let writing = async {
        for trigger in triggers {
            sink.feed(trigger).await?;
        }
        sink.flush().await
    };
    let reading = async {
        while let Some(message) = stream.next().await {
            let data = match message {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => message.into_data(),
                Ok(Message::Close(close)) => {
                    return LoadError::from(format!(
                        "the server closed the control connection under load: {close:?}"
                    ));
                }
                Ok(_) => continue,
                Err(error) => return LoadError::from(format!("control connection: {error}")),
            };
            if let Some(answers) = &mut answers {
                if let Err(failed) = answers.check(&data) {
                    return failed;
                }
            }
        }
        LoadError::from("the control connection ended under load")
    };
    let mut reading = std::pin::pin!(reading);
    tokio::select! {
        written = writing => {
            if let Err(error) = written {
                return LoadError::from(format!("control connection: write: {error}"));
            }
        }
        failed = &mut reading => return failed,
    }
    reading.await
}

/// The rounds one fan-out receiver has had.
///
/// When the messages say their round (`numbered`: the trigger's arguments carry it, and the
/// server passes it on as the payload), each round must come once: a round again, or one that
/// does not exist, is a failure. A message whose payload is no round number, and every
/// message when the rounds are not numbered, is only counted. Either way more messages than
/// rounds is a failure. Memory stays small however many rounds: one connection's messages
/// come in order, so the rounds below `low` have all come and `later` holds only those that
/// came after a gap.
#[derive(Debug)]
struct Tally {
    /// Rounds in all.
    rounds: usize,
    /// The codec the round is read with, when the messages carry it.
    numbered: Option<Codec>,
    /// Every round below it has come.
    low: usize,
    /// Rounds above `low` that have come.
    later: BTreeSet<usize>,
    /// Messages that carried no round number.
    unnumbered: usize,
}

impl Tally {
    fn new(rounds: usize, numbered: Option<Codec>) -> Self {
        Self {
            rounds,
            numbered,
            low: 0,
            later: BTreeSet::new(),
            unnumbered: 0,
        }
    }

    /// Messages received so far.
    fn received(&self) -> usize {
        self.low + self.later.len() + self.unnumbered
    }

    /// Whether every round has come.
    fn done(&self) -> bool {
        self.received() >= self.rounds
    }

    /// The round `message` says, when the rounds are numbered and it says one: its payload,
    /// as a number.
    fn round_of(&self, message: &[u8]) -> Option<usize> {
        let protocol = self.numbered?.protocol();
        let frame = protocol.unpack(message).ok()?;
        protocol.decode::<usize>(frame.payload).ok()
    }

    /// Counts one message.
    fn add(&mut self, message: &[u8]) -> Result<(), Failure> {
        match self.round_of(message) {
            Some(round) if round >= self.rounds => {
                return Err(
                    format!("a message of round {round}, of {} rounds", self.rounds).into(),
                );
            }
            Some(round) if round == self.low => {
                self.low += 1;
                while self.later.remove(&self.low) {
                    self.low += 1;
                }
            }
            Some(round) => {
                if round < self.low || !self.later.insert(round) {
                    return Err(format!("round {round} received twice").into());
                }
            }
            None => self.unnumbered += 1,
        }
        if self.received() > self.rounds {
            return Err(format!("{} messages for {} rounds", self.received(), self.rounds).into());
        }
        Ok(())
    }
}

/// One fan-out receiver: takes the messages of its rounds into `tally`, adds them to
/// `delivered` (and `progress`), and ends once it has every round. The connection is handed
/// back open: closing handshakes of the first receivers would compete with the delivery to
/// the last, so they close after the measurement.
async fn receive(
    mut conn: Conn,
    mut tally: Tally,
    delivered: &Cell<usize>,
    progress: Option<&Progress>,
) -> Result<Conn, Failure> {
    let mut pongs = Vec::new();
    while !tally.done() {
        conn.fill().await?;
        let before = tally.received();
        while let Some((_, message)) = conn.next_message(&mut pongs)? {
            tally.add(message)?;
        }
        if !pongs.is_empty() {
            conn.write_all(&pongs).await?;
            pongs.clear();
        }
        let new = tally.received() - before;
        delivered.set(delivered.get() + new);
        if let Some(progress) = progress {
            progress.add(new);
        }
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn slots(codec: Codec, hello: Hello) -> Result<Slots, Failure> {
        let dial = Dial {
            url: String::new(),
            codec,
            hello,
        };
        Ok(Slots::new(&dial, &Call::add(), 16)?.ok_or("replies unknown")?)
    }

    fn wse() -> Hello {
        Hello::Wse(Login::named())
    }

    #[test]
    fn a_hi_fills_in_the_user_and_a_number_of_its_own() {
        let login = Login::new(
            json!("secret"),
            json!({"user_id": "bench-{conn}", "role": "{user}", "tags": ["{user}-{conn}", 7]}),
        );
        let (a, b) = (login.hi("load3"), login.hi("load3"));
        assert_eq!(a["identity"], "secret");
        assert_eq!(a["meta"]["role"], "load3");
        let n = a["meta"]["user_id"]
            .as_str()
            .unwrap()
            .trim_start_matches("bench-");
        assert!(n.parse::<usize>().is_ok(), "{a}");
        assert_eq!(a["meta"]["tags"], json!([format!("load3-{n}"), 7]));
        assert_ne!(a["meta"]["user_id"], b["meta"]["user_id"]);
        assert_eq!(
            Login::named().hi("idle7"),
            json!({"identity": "idle7", "meta": {}})
        );
    }

    #[test]
    fn a_trigger_numbers_its_rounds_where_asked() {
        let broadcast = Trigger::broadcast();
        assert_eq!(broadcast.args(4), json!({"type": "tick", "payload": 4}));
        let custom = Trigger {
            procedure: "room_send".into(),
            args: json!({"room": "r", "payload": ["{round}", "x{round}"]}),
        };
        assert_eq!(
            custom.args(2),
            json!({"room": "r", "payload": [2, "x{round}"]})
        );
        assert!(broadcast.numbers_rounds());
        // A round elsewhere than as the whole payload: the messages are only counted.
        assert!(!custom.numbers_rounds());
        let numbered = Trigger {
            procedure: "room_send".into(),
            args: json!({"room": "r", "seq": 1, "payload": "{round}"}),
        };
        assert!(numbered.numbers_rounds());
        let fixed = Trigger {
            procedure: "broadcast".into(),
            args: json!({"type": "tick", "payload": "x{round}"}),
        };
        assert!(!fixed.numbers_rounds());
    }

    fn tick(codec: Codec, payload: &Value) -> Result<Vec<u8>, Failure> {
        Ok(codec
            .protocol()
            .encode(TICK, payload, None)
            .map_err(|e| e.to_string())?)
    }

    #[test]
    fn a_receiver_takes_each_numbered_round_once() -> Result<(), Failure> {
        for codec in [Codec::Json, Codec::Msgpack] {
            let round = |n: usize| tick(codec, &json!(n));
            // Out of order, then in order: done at the third.
            let mut tally = Tally::new(3, Some(codec));
            tally.add(&round(1)?)?;
            assert_eq!((tally.low, tally.received(), tally.done()), (0, 1, false));
            tally.add(&round(0)?)?;
            assert_eq!((tally.low, tally.later.len()), (2, 0));
            tally.add(&round(2)?)?;
            assert!(tally.done());
            // A round again, below the low mark or above it, and a round beyond the last.
            let mut tally = Tally::new(4, Some(codec));
            tally.add(&round(0)?)?;
            assert!(tally.add(&round(0)?).is_err());
            let mut tally = Tally::new(4, Some(codec));
            tally.add(&round(2)?)?;
            assert!(tally.add(&round(2)?).is_err());
            assert!(Tally::new(4, Some(codec)).add(&round(4)?).is_err());
            // A payload that is no round number is counted, and a message too many fails.
            let mut tally = Tally::new(2, Some(codec));
            tally.add(&tick(codec, &json!("other"))?)?;
            tally.add(&round(1)?)?;
            assert!(tally.done());
            assert!(tally.add(&round(0)?).is_err());
        }
        Ok(())
    }

    #[test]
    fn a_receiver_of_unnumbered_rounds_counts_them() -> Result<(), Failure> {
        let mut tally = Tally::new(2, None);
        let same = tick(Codec::Json, &json!(7))?;
        tally.add(&same)?;
        tally.add(&same)?;
        assert!(tally.done());
        let error = tally.add(&same).err().ok_or("a third message accepted")?;
        assert_eq!(error.message(), "3 messages for 2 rounds");
        Ok(())
    }

    #[test]
    fn calls_and_replies_are_built_once() -> Result<(), Failure> {
        let json = slots(Codec::Json, wse())?;
        assert_eq!(json.calls[7][..6], [0x81, 0x80 | 25, 0, 0, 0, 0]);
        assert_eq!(json.calls[7][6..], *br#"["add",{"a":1,"b":2},"7"]"#);
        assert_eq!(json.replies.messages[7], br#"["~wse:response",3,"7"]"#);
        let echo = slots(Codec::Json, Hello::None)?;
        assert_eq!(echo.replies.messages[12], br#"["add",{"a":1,"b":2},"12"]"#);
        let msgpack = slots(Codec::Msgpack, wse())?;
        let twelfth = &msgpack.replies.messages[12];
        assert_eq!(twelfth[twelfth.len() - 3..], [0xa2, b'1', b'2']);
        Ok(())
    }

    #[test]
    fn sends_to_a_user_are_found_by_their_slot_in_reply_and_delivery() -> Result<(), Failure> {
        let json = SendFrames::new(Codec::Json, "receiver7", 1, 12)?;
        assert_eq!(
            json.call[6..],
            *br#"["send_to_user",{"payload":"12","type":"tick","user":"receiver7"},"12"]"#
        );
        assert_eq!(json.reply, br#"["~wse:response",1,"12"]"#);
        assert_eq!(json.delivery, br#"["tick","12",null]"#);
        for codec in [Codec::Json, Codec::Msgpack] {
            for here in [0, 1] {
                let frames = (0..16)
                    .map(|slot| SendFrames::new(codec, "receiver17", here, slot))
                    .collect::<Result<Vec<_>, _>>()?;
                let replies: Vec<_> = frames.iter().map(|f| f.reply.clone()).collect();
                let deliveries: Vec<_> = frames.iter().map(|f| f.delivery.clone()).collect();
                let replies = Expected::new(codec, replies)?;
                let deliveries = Expected::new(codec, deliveries)?;
                for (slot, frames) in frames.iter().enumerate() {
                    assert_eq!(replies.slot_of(codec.opcode(), &frames.reply), Ok(slot));
                    assert_eq!(
                        deliveries.slot_of(codec.opcode(), &frames.delivery),
                        Ok(slot)
                    );
                    assert!(deliveries.slot_of(codec.opcode(), &frames.reply).is_err());
                }
                // A reply of the other node's count is wrong.
                let other = SendFrames::new(codec, "receiver17", 1 - here, 3)?;
                assert!(replies.slot_of(codec.opcode(), &other.reply).is_err());
            }
        }
        Ok(())
    }

    #[test]
    fn a_reply_gives_its_slot_only_when_it_is_right_byte_for_byte() -> Result<(), Failure> {
        for codec in [Codec::Json, Codec::Msgpack] {
            for hello in [Hello::None, wse()] {
                let slots = slots(codec, hello.clone())?.replies;
                for (slot, reply) in slots.messages.iter().enumerate() {
                    assert_eq!(slots.slot_of(codec.opcode(), reply), Ok(slot));
                }
                let mut wrong = slots.messages[9].clone();
                wrong[2] ^= 1;
                assert!(slots.slot_of(codec.opcode(), &wrong).is_err());
                // A right reply for a slot that does not exist.
                let beyond = Slots::new(
                    &Dial {
                        url: String::new(),
                        codec,
                        hello,
                    },
                    &Call::add(),
                    17,
                )?
                .ok_or("replies unknown")?;
                let beyond = &beyond.replies.messages[16];
                assert!(slots.slot_of(codec.opcode(), beyond).is_err());
                let other = if codec.opcode() == lean::TEXT {
                    lean::BINARY
                } else {
                    lean::TEXT
                };
                assert!(slots.slot_of(other, &slots.messages[9]).is_err());
                assert!(slots.slot_of(codec.opcode(), b"").is_err());
            }
        }
        Ok(())
    }
}
