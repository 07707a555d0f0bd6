//! A connection end to end, driven by the fuzzer: the demo server (`demo_server`, plain or
//! behind the HMAC challenge, chosen per input) serves one in-memory stream with
//! `Server::serve_io`; a tokio-tungstenite client offers a codec and sends a fuzzer-chosen
//! sequence of WebSocket messages: well-formed `~wse:hi` frames, challenge answers (the right
//! one, computed from the quest the server sent, or a wrong one), calls of every demo procedure,
//! one-way messages, answers to the server's calls, arbitrary frames, arbitrary bytes as text
//! or binary messages, raw WebSocket frames (fragments, reserved opcodes and bits), pings and
//! close frames.
//!
//! No paused clock: every input gets a fresh current-thread runtime; between messages the
//! client yields a bounded number of times so the server's tasks run, then takes only what is
//! already there. Every wait on the socket is bounded, so one input takes milliseconds.
//!
//! Invariants (any panic is a finding, including one that the library would catch):
//! - every data message the server sends is a frame of the negotiated codec (right message
//!   kind, unpacks); nothing but a close when no codec was negotiated;
//! - before `~wse:welcome` the server sends at most one `~wse:challenge`, and only behind the
//!   challenge; nothing else;
//! - `~wse:welcome` comes at most once, and only after the client sent a `~wse:hi` the demo
//!   accepts (identity `"secret"`, a non-empty string `meta.user_id`) and, behind the
//!   challenge, the correct solution of the quest; it names that user (`cid`) and says
//!   `"cra": true` exactly behind the challenge;
//! - `serve_io` ends soon after the client goes away, and leaves no user or connection behind.

#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use futures_util::{FutureExt, SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::DuplexStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use wse_core::{HmacQuest, Json, MessageKind, MsgPack, Protocol, frame};
use wse_examples::{Auth, HMAC_SECRET, IDENTITY, demo_server};

/// How long the client waits for one write or for the upgrade; never reached in practice.
const IO_BOUND: Duration = Duration::from_millis(250);
/// How long `serve_io` may take to end once the client is gone before it counts as a hang.
const END_BOUND: Duration = Duration::from_secs(2);
/// Scheduler turns the client gives the server after each message.
const SETTLE_TURNS: usize = 24;

#[derive(Arbitrary, Debug)]
struct Script {
    hmac: bool,
    offer: Offer,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Offer {
    Json,
    MsgPack,
    JsonThenMsgPack,
    MsgPackThenJson,
    UnknownThenJson,
    Unknown,
    Nothing,
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// `["~wse:hi", {"identity": …, "meta": {"user_id": …, …}}, stamp]`.
    Hi {
        identity: Identity,
        user_id: UserId,
        extra_meta: Option<(String, J)>,
        stamp: Option<String>,
    },
    /// `["~wse:challenge", answer, null]`.
    Answer(Answer),
    /// A call of a demo procedure (or an unknown one), biased towards the shapes they take.
    Call {
        procedure: Procedure,
        stamp: String,
    },
    /// A one-way message.
    Message {
        kind: MessageType,
        payload: J,
    },
    /// An answer to the last call the server made on this connection (`ask_me`), or to a
    /// stamp of our own.
    Reply {
        ok: bool,
        payload: J,
        stamp: Option<String>,
    },
    /// Any frame, with a kind of our choice.
    Frame {
        kind: String,
        payload: J,
        stamp: Option<String>,
    },
    /// A frame of the codec the connection did not negotiate.
    OtherCodec {
        kind: FrameKind,
        payload: J,
        stamp: Option<String>,
    },
    /// Arbitrary bytes as a text message (a raw text frame when they are not UTF-8) or as a
    /// binary message.
    Raw {
        binary: bool,
        bytes: Vec<u8>,
    },
    /// One raw WebSocket frame: any opcode, fin and reserved bits.
    WsFrame {
        opcode: u8,
        fin: bool,
        rsv: u8,
        payload: Vec<u8>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close {
        code: u16,
        reason: String,
    },
    /// More turns for the server.
    Settle,
}

#[derive(Arbitrary, Debug)]
enum Identity {
    Secret,
    Text(String),
    Any(J),
    Missing,
}

#[derive(Arbitrary, Debug)]
enum UserId {
    Named(String),
    Fixed,
    Empty,
    Any(J),
    Missing,
}

#[derive(Arbitrary, Debug)]
enum Answer {
    /// The solution of the last quest the server sent, with the demo's secret.
    Right,
    /// The solution of the last quest with another secret.
    WrongSecret(Vec<u8>),
    /// The solution, changed in one character.
    Flipped(u8),
    Any(J),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Procedure {
    Add { a: Num, b: Num },
    Delay { ms: u8, value: J },
    Fail(J),
    FailCustom(J),
    SendToUser { user: Who, kind: String, payload: J },
    Broadcast { kind: String, payload: J },
    AskMe,
    DropMe { reason: String },
    Reserved(FrameKind),
    Named { name: String, payload: J },
}

#[derive(Arbitrary, Debug)]
enum Num {
    Int(i64),
    UInt(u64),
    Float(f64),
    Any(J),
}

#[derive(Arbitrary, Debug)]
enum Who {
    Myself,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum MessageType {
    Echo,
    Hey,
    Reserved(FrameKind),
    Named(String),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FrameKind {
    Hi,
    Challenge,
    Welcome,
    Call,
    Response,
    ResponseErr,
    Unknown,
}

impl FrameKind {
    fn name(self) -> &'static str {
        match self {
            Self::Hi => frame::HI,
            Self::Challenge => frame::CHALLENGE,
            Self::Welcome => frame::WELCOME,
            Self::Call => frame::CALL,
            Self::Response => frame::RESPONSE,
            Self::ResponseErr => frame::RESPONSE_ERR,
            Self::Unknown => "~wse:unknown",
        }
    }
}

/// A JSON value (also a MessagePack one), of whatever depth the input allows.
#[derive(Arbitrary, Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => json!(b),
            Self::Int(i) => json!(i),
            Self::UInt(u) => json!(u),
            // NaN and the infinities become null, as serde_json writes them.
            Self::Float(f) => json!(f),
            Self::Str(s) => json!(s),
            Self::Arr(items) => Value::Array(items.iter().map(J::value).collect()),
            Self::Obj(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value()))
                    .collect(),
            ),
        }
    }
}

impl Num {
    fn value(&self) -> Value {
        match self {
            Self::Int(i) => json!(i),
            Self::UInt(u) => json!(u),
            Self::Float(f) => json!(f),
            Self::Any(j) => j.value(),
        }
    }
}

/// The user id a well-formed hi names when the input does not choose one.
const FIXED_USER: &str = "fuzz";

fn codec_named(name: &str) -> Option<&'static dyn Protocol> {
    match name {
        Json::NAME => Some(&Json),
        MsgPack::NAME => Some(&MsgPack),
        _ => None,
    }
}

fn data_message(kind: MessageKind, bytes: Vec<u8>) -> Message {
    match kind {
        MessageKind::Binary => Message::Binary(bytes.into()),
        MessageKind::Text => match String::from_utf8(bytes) {
            Ok(text) => Message::Text(text.into()),
            Err(e) => Message::Frame(Frame::message(
                e.into_bytes(),
                OpCode::Data(Data::Text),
                true,
            )),
        },
    }
}

/// The payload of `~wse:hi`, as the server declares it.
#[derive(Deserialize)]
struct Hi {
    #[serde(default)]
    identity: Value,
    #[serde(default)]
    meta: Value,
}

/// `WSE_FUZZ_TRACE=1` prints each script and what the client sends and receives (for
/// reproducing and minimising, not for fuzzing).
fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("WSE_FUZZ_TRACE").is_some())
}

/// What the client has seen and sent so far.
struct Peer {
    ws: WebSocketStream<DuplexStream>,
    hmac: bool,
    /// The negotiated codec; `None` when the server selected none.
    codec: Option<&'static dyn Protocol>,
    /// The user id of the hi, when it is one the demo accepts.
    good_hi: Option<String>,
    /// Complete data messages sent so far.
    sent_data: usize,
    /// A fragmented data message being sent.
    fragments: Option<(MessageKind, Vec<u8>)>,
    /// Whether the right solution of a quest was sent.
    solved: bool,
    quest: Option<HmacQuest>,
    challenged: bool,
    welcomed: bool,
    /// The stamp of the last call the server made on us.
    server_call: Option<String>,
    /// The server closed, or the socket failed: nothing more to send.
    over: bool,
}

impl Peer {
    /// Gives the server's tasks turns, then takes every message already there.
    async fn settle(&mut self) {
        for _ in 0..SETTLE_TURNS {
            tokio::task::yield_now().await;
        }
        self.drain();
    }

    fn drain(&mut self) {
        while !self.over {
            match self.ws.next().now_or_never() {
                None => return,
                Some(Some(Ok(message))) => self.observe(message),
                Some(Some(Err(_)) | None) => self.over = true,
            }
        }
    }

    fn observe(&mut self, message: Message) {
        if tracing() {
            eprintln!("<- {message:?}");
        }
        let (kind, data) = match &message {
            Message::Text(text) => (MessageKind::Text, text.as_bytes()),
            Message::Binary(data) => (MessageKind::Binary, &data[..]),
            Message::Close(_) => {
                self.over = true;
                return;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return,
        };
        let Some(codec) = self.codec else {
            panic!("server sent data on a connection with no codec: {message:?}");
        };
        assert_eq!(
            kind,
            codec.message_kind(),
            "server sent a {kind:?} message on {}",
            codec.name()
        );
        let frame = match codec.unpack(data) {
            Ok(frame) => frame,
            Err(e) => panic!("server sent a message that is not a frame: {e}"),
        };
        match frame.kind.as_ref() {
            frame::WELCOME => {
                assert!(!self.welcomed, "a second welcome");
                let Some(user) = &self.good_hi else {
                    panic!("welcome without an acceptable hi");
                };
                assert!(
                    !self.hmac || self.solved,
                    "welcome behind the challenge without the right solution"
                );
                let welcome: Value = codec.decode(frame.payload).expect("welcome payload");
                assert_eq!(welcome["cid"], json!(user), "welcome names another user");
                assert_eq!(
                    welcome.get("cra") == Some(&json!(true)),
                    self.hmac,
                    "cra flag"
                );
                self.welcomed = true;
            }
            frame::CHALLENGE => {
                assert!(self.hmac, "a challenge from a server without one");
                assert!(!self.challenged, "a second challenge");
                assert!(!self.welcomed, "a challenge after the welcome");
                self.challenged = true;
                let quest: Value = codec.decode(frame.payload).expect("quest payload");
                let quest = serde_json::from_value(quest).expect("quest shape");
                self.quest = Some(quest);
            }
            other => {
                assert!(self.welcomed, "{other:?} before the welcome");
                assert!(
                    !frame::is_reserved(other)
                        || other == frame::RESPONSE
                        || other == frame::RESPONSE_ERR,
                    "server sent reserved type {other:?}"
                );
                if let (false, Some(stamp)) = (frame::is_reserved(other), frame.stamp()) {
                    self.server_call = Some(stamp.to_owned());
                }
            }
        }
    }

    /// Notes the first complete data message the client sent, which the server takes as its
    /// hi, when the demo would accept it, however it was built (raw bytes and fragments may
    /// make one too).
    fn note_sent(&mut self, message: &Message) {
        let complete = match message {
            Message::Text(text) => Some((MessageKind::Text, text.as_bytes().to_vec())),
            Message::Binary(data) => Some((MessageKind::Binary, data.to_vec())),
            Message::Frame(f) => {
                let (header, payload) = (f.header(), f.payload());
                if header.rsv1 || header.rsv2 || header.rsv3 {
                    None
                } else {
                    match header.opcode {
                        OpCode::Data(data @ (Data::Text | Data::Binary)) => {
                            let kind = if data == Data::Text {
                                MessageKind::Text
                            } else {
                                MessageKind::Binary
                            };
                            if header.is_final {
                                Some((kind, payload.to_vec()))
                            } else {
                                self.fragments = Some((kind, payload.to_vec()));
                                None
                            }
                        }
                        OpCode::Data(Data::Continue) => {
                            if let Some((_, buffer)) = &mut self.fragments {
                                buffer.extend_from_slice(payload);
                            }
                            if header.is_final {
                                self.fragments.take()
                            } else {
                                None
                            }
                        }
                        _ => None,
                    }
                }
            }
            _ => None,
        };
        let Some((kind, data)) = complete else { return };
        self.sent_data += 1;
        if self.sent_data > 1 {
            return;
        }
        let Some(codec) = self.codec else { return };
        if kind != codec.message_kind() {
            return;
        }
        let Ok(frame) = codec.unpack(&data) else {
            return;
        };
        if frame.kind != frame::HI {
            return;
        }
        // Read as the server reads it (a struct, which serde also reads from an array), then
        // judged as the demo's identify judges it.
        let Ok(hi) = codec.decode::<Hi>(frame.payload) else {
            return;
        };
        let user = hi.meta.get("user_id").and_then(Value::as_str);
        if let (Some(IDENTITY), Some(user)) = (hi.identity.as_str(), user)
            && !user.is_empty()
        {
            self.good_hi = Some(user.to_owned());
        }
    }

    async fn send(&mut self, message: Message) {
        if self.over {
            return;
        }
        if tracing() {
            eprintln!("-> {message:?}");
        }
        self.note_sent(&message);
        match tokio::time::timeout(IO_BOUND, self.ws.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => self.over = true,
        }
    }

    /// `[kind, payload, stamp]` in the negotiated codec (JSON when there is none).
    fn frame(&self, kind: &str, payload: &Value, stamp: Option<&str>) -> Message {
        let codec = self.codec.unwrap_or(&Json);
        let bytes = codec.encode(kind, payload, stamp).expect("encodable frame");
        data_message(codec.message_kind(), bytes)
    }

    fn other_frame(&self, kind: &str, payload: &Value, stamp: Option<&str>) -> Message {
        let codec: &dyn Protocol = match self.codec.map(|c| c.message_kind()) {
            Some(MessageKind::Text) => &MsgPack,
            _ => &Json,
        };
        let bytes = codec.encode(kind, payload, stamp).expect("encodable frame");
        data_message(codec.message_kind(), bytes)
    }

    fn answer(&self, answer: &Answer) -> Value {
        let solve = |secret: &[u8]| {
            self.quest
                .as_ref()
                .map_or_else(String::new, |quest| quest.solve(secret))
        };
        match answer {
            Answer::Right => json!(solve(HMAC_SECRET.as_bytes())),
            Answer::WrongSecret(secret) => json!(solve(secret)),
            Answer::Flipped(at) => {
                let mut right = solve(HMAC_SECRET.as_bytes()).into_bytes();
                if !right.is_empty() {
                    let at = usize::from(*at) % right.len();
                    right[at] = if right[at] == b'0' { b'1' } else { b'0' };
                }
                json!(String::from_utf8_lossy(&right))
            }
            Answer::Any(j) => j.value(),
            Answer::Text(text) => json!(text),
        }
    }

    async fn step(&mut self, step: &Step) {
        let message = match step {
            Step::Hi {
                identity,
                user_id,
                extra_meta,
                stamp,
            } => {
                let mut meta = serde_json::Map::new();
                if let Some((key, value)) = extra_meta {
                    meta.insert(key.clone(), value.value());
                }
                match user_id {
                    UserId::Named(name) => drop(meta.insert("user_id".into(), json!(name))),
                    UserId::Fixed => drop(meta.insert("user_id".into(), json!(FIXED_USER))),
                    UserId::Empty => drop(meta.insert("user_id".into(), json!(""))),
                    UserId::Any(j) => drop(meta.insert("user_id".into(), j.value())),
                    UserId::Missing => {}
                }
                let mut hi = json!({ "meta": meta });
                match identity {
                    Identity::Secret => hi["identity"] = json!(IDENTITY),
                    Identity::Text(text) => hi["identity"] = json!(text),
                    Identity::Any(j) => hi["identity"] = j.value(),
                    Identity::Missing => {}
                }
                self.frame(frame::HI, &hi, stamp.as_deref())
            }
            Step::Answer(answer) => {
                let value = self.answer(answer);
                if matches!(answer, Answer::Right) && self.quest.is_some() {
                    self.solved = true;
                }
                self.frame(frame::CHALLENGE, &value, None)
            }
            Step::Call { procedure, stamp } => {
                let (name, payload) = match procedure {
                    Procedure::Add { a, b } => ("add", json!({"a": a.value(), "b": b.value()})),
                    Procedure::Delay { ms, value } => {
                        ("delay", json!({"ms": ms, "value": value.value()}))
                    }
                    Procedure::Fail(j) => ("fail", j.value()),
                    Procedure::FailCustom(j) => ("fail_custom", j.value()),
                    Procedure::SendToUser {
                        user,
                        kind,
                        payload,
                    } => {
                        let user = match user {
                            Who::Myself => self.good_hi.clone().unwrap_or_default(),
                            Who::Other(name) => name.clone(),
                        };
                        (
                            "send_to_user",
                            json!({"user": user, "type": kind, "payload": payload.value()}),
                        )
                    }
                    Procedure::Broadcast { kind, payload } => (
                        "broadcast",
                        json!({"type": kind, "payload": payload.value()}),
                    ),
                    Procedure::AskMe => ("ask_me", Value::Null),
                    Procedure::DropMe { reason } => ("drop_me", json!({ "reason": reason })),
                    Procedure::Reserved(kind) => (kind.name(), Value::Null),
                    Procedure::Named { name, payload } => {
                        let name = if name.is_empty() { "x" } else { name };
                        return self
                            .send(self.frame(name, &payload.value(), Some(stamp)))
                            .await;
                    }
                };
                self.frame(name, &payload, Some(stamp))
            }
            Step::Message { kind, payload } => {
                let kind = match kind {
                    MessageType::Echo => "echo",
                    MessageType::Hey => "hey",
                    MessageType::Reserved(kind) => kind.name(),
                    MessageType::Named(name) if name.is_empty() => "x",
                    MessageType::Named(name) => name,
                };
                self.frame(kind, &payload.value(), None)
            }
            Step::Reply { ok, payload, stamp } => {
                let kind = if *ok {
                    frame::RESPONSE
                } else {
                    frame::RESPONSE_ERR
                };
                let stamp = stamp.clone().or_else(|| self.server_call.clone());
                self.frame(kind, &payload.value(), stamp.as_deref())
            }
            Step::Frame {
                kind,
                payload,
                stamp,
            } => {
                let kind = if kind.is_empty() { "x" } else { kind };
                self.frame(kind, &payload.value(), stamp.as_deref())
            }
            Step::OtherCodec {
                kind,
                payload,
                stamp,
            } => self.other_frame(kind.name(), &payload.value(), stamp.as_deref()),
            Step::Raw { binary, bytes } => {
                let kind = if *binary {
                    MessageKind::Binary
                } else {
                    MessageKind::Text
                };
                data_message(kind, bytes.clone())
            }
            Step::WsFrame {
                opcode,
                fin,
                rsv,
                payload,
            } => {
                let header = FrameHeader {
                    is_final: *fin,
                    rsv1: rsv & 1 != 0,
                    rsv2: rsv & 2 != 0,
                    rsv3: rsv & 4 != 0,
                    opcode: OpCode::from(opcode & 0x0f),
                    mask: None,
                };
                Message::Frame(Frame::from_payload(header, payload.clone().into()))
            }
            Step::Ping(data) => Message::Ping(data.clone().into()),
            Step::Pong(data) => Message::Pong(data.clone().into()),
            Step::Close { code, reason } => Message::Close(Some(CloseFrame {
                code: CloseCode::from(*code),
                reason: reason.as_str().into(),
            })),
            Step::Settle => return self.settle().await,
        };
        self.send(message).await;
    }
}

fn offer(offer: Offer) -> Option<&'static str> {
    match offer {
        Offer::Json => Some(Json::NAME),
        Offer::MsgPack => Some(MsgPack::NAME),
        Offer::JsonThenMsgPack => Some("wse-default-json, wse-msgpack"),
        Offer::MsgPackThenJson => Some("wse-msgpack,wse-default-json"),
        Offer::UnknownThenJson => Some("wse-unknown, wse-default-json"),
        Offer::Unknown => Some("wse-unknown"),
        Offer::Nothing => None,
    }
}

async fn run(script: Script) {
    if tracing() {
        eprintln!("{script:#?}");
    }
    let server = demo_server(if script.hmac { Auth::Hmac } else { Auth::Plain });
    let (client_side, server_side) = tokio::io::duplex(64 << 10);
    let remote: std::net::SocketAddr = ([127, 0, 0, 1], 9).into();
    let serving = tokio::spawn({
        let server = server.clone();
        async move { server.serve_io(server_side, remote).await }
    });

    let mut request = "ws://in-memory/"
        .into_client_request()
        .expect("static request");
    if let Some(offer) = offer(script.offer) {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", offer.parse().expect("header"));
    }
    let upgrade = tokio::time::timeout(
        IO_BOUND,
        tokio_tungstenite::client_async(request, client_side),
    )
    .await;
    if let Ok(Ok((ws, response))) = upgrade {
        let codec = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(codec_named);
        let mut peer = Peer {
            ws,
            hmac: script.hmac,
            codec,
            good_hi: None,
            sent_data: 0,
            fragments: None,
            solved: false,
            quest: None,
            challenged: false,
            welcomed: false,
            server_call: None,
            over: false,
        };
        peer.settle().await;
        for step in &script.steps {
            if peer.over {
                break;
            }
            peer.step(step).await;
            peer.settle().await;
        }
        // The client goes away without a closing handshake.
    }

    match tokio::time::timeout(END_BOUND, serving).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("serve_io failed: {e}"),
        Err(_) => panic!("serve_io still running {END_BOUND:?} after the client left"),
    }
    assert_eq!(server.counts().await.unwrap(), (0, 0), "users or connections left behind");
}

fuzz_target!(|script: Script| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(run(script));
});
