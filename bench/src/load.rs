//! The load generator: raw WebSocket clients that speak frames directly, so that wse-rs and
//! the raw echo baseline are driven by the very same code, and every reply is checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wse_core::{HmacQuest, Json, MessageKind, MsgPack, Protocol, frame};

use crate::cpu;
use crate::serve::{BASELINE_READ_BUFFER, SECRET};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The codec the load speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub(crate) enum Codec {
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
}

/// Who is dialled and how a connection gets ready.
#[derive(Debug, Clone)]
pub(crate) struct Dial {
    /// `ws://host:port`.
    pub(crate) url: String,
    /// The codec offered (for the baselines, only the framing of the bytes).
    pub(crate) codec: Codec,
    /// How a connection becomes ready.
    pub(crate) hello: Hello,
}

/// How a connection becomes ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hello {
    /// At once (the raw baselines).
    None,
    /// `~wse:hi` → `~wse:welcome`.
    Wse,
    /// `~wse:hi` → quest → HMAC answer → `~wse:welcome`.
    WseHmac,
}

/// A failure of the load: the run stops and reports it.
pub(crate) type Failure = String;

/// Opens a connection and makes it ready.
pub(crate) async fn open(dial: &Dial, identity: &str) -> Result<Ws, Failure> {
    let mut request = dial
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let name = dial
        .codec
        .protocol()
        .name()
        .parse()
        .map_err(|_| "bad protocol name")?;
    request.headers_mut().insert("sec-websocket-protocol", name);
    let config = WebSocketConfig::default().read_buffer_size(BASELINE_READ_BUFFER);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if dial.hello == Hello::None {
        return Ok(ws);
    }
    let codec = dial.codec;
    let hi = codec
        .protocol()
        .encode(
            frame::HI,
            &serde_json::json!({"identity": identity, "meta": {}}),
            None,
        )
        .map_err(|e| e.to_string())?;
    ws.send(codec.message(hi))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let message = ws
            .next()
            .await
            .ok_or("closed during the handshake")?
            .map_err(|e| e.to_string())?;
        let data = message.into_data();
        let frame = codec.protocol().unpack(&data).map_err(|e| e.to_string())?;
        match frame.kind.as_ref() {
            frame::WELCOME => return Ok(ws),
            frame::CHALLENGE if dial.hello == Hello::WseHmac => {
                let quest: HmacQuest = codec
                    .protocol()
                    .decode(frame.payload)
                    .map_err(|e| e.to_string())?;
                let answer = codec
                    .protocol()
                    .encode(frame::CHALLENGE, &quest.solve(SECRET), None)
                    .map_err(|e| e.to_string())?;
                ws.send(codec.message(answer))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            other => return Err(format!("unexpected {other} during the handshake")),
        }
    }
}

/// Closes with a close frame and waits for the answer.
pub(crate) async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
    while let Some(Ok(_)) = ws.next().await {}
}

/// The outcome of an RPC run.
#[derive(Debug)]
pub(crate) struct RpcRun {
    /// Calls answered within the measured window.
    pub(crate) calls: u64,
    /// The measured window.
    pub(crate) window: Duration,
    /// Latency of each of those calls, in microseconds.
    pub(crate) latency: Histogram<u64>,
    /// CPU time the server and the generator used within the measured window.
    pub(crate) cpu: cpu::Spent,
}

impl RpcRun {
    /// Adds another round of the same load.
    pub(crate) fn merge(&mut self, other: Self) -> Result<(), Failure> {
        self.calls += other.calls;
        self.window += other.window;
        self.cpu.add(other.cpu);
        self.latency.add(other.latency).map_err(|e| e.to_string())
    }
}

/// `connections` × `in_flight` calls of `add {a: 1, b: 2}`, closed loop: each answer is
/// checked and replaced by a new call at once. Measures for `duration` after `warmup`, and
/// the CPU time used meanwhile by the generator and by `server` (a process id) when given.
pub(crate) async fn rpc(
    dial: &Dial,
    server: Option<u32>,
    connections: usize,
    in_flight: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<RpcRun, Failure> {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(connections);
    for c in 0..connections {
        let ws = open(dial, &format!("load{c}")).await?;
        let (dial, measuring, stop) = (dial.clone(), Arc::clone(&measuring), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            caller(ws, &dial, in_flight, &measuring, &stop).await
        }));
    }
    tokio::time::sleep(warmup).await;
    let cpu_before = cpu::Sample::now(server)?;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let window = started.elapsed();
    let cpu = cpu::Sample::now(server)?.since(cpu_before);
    stop.store(true, Ordering::Relaxed);

    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut calls = 0;
    for task in tasks {
        let (done, histogram) = task.await.map_err(|e| e.to_string())??;
        calls += done;
        latency.add(histogram).map_err(|e| e.to_string())?;
    }
    Ok(RpcRun {
        calls,
        window,
        latency,
        cpu,
    })
}

/// One connection's closed loop. Stamps are slot numbers: each slot has one call in flight.
async fn caller(
    mut ws: Ws,
    dial: &Dial,
    in_flight: usize,
    measuring: &AtomicBool,
    stop: &AtomicBool,
) -> Result<(u64, Histogram<u64>), Failure> {
    let codec = dial.codec;
    let protocol = codec.protocol();
    let args = serde_json::json!({"a": 1, "b": 2});
    let calls: Vec<Message> = (0..in_flight)
        .map(|slot| {
            let frame = protocol.encode("add", &args, Some(&slot.to_string()));
            frame
                .map(|frame| codec.message(frame))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let expected = protocol.encode("x", &3, None).map_err(|e| e.to_string())?;
    let expected_result = protocol
        .unpack(&expected)
        .map_err(|e| e.to_string())?
        .payload
        .to_vec();
    let mut sent_at = vec![Instant::now(); in_flight];
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut done = 0u64;

    for (slot, call) in calls.iter().enumerate() {
        sent_at[slot] = Instant::now();
        ws.feed(call.clone()).await.map_err(|e| e.to_string())?;
    }
    ws.flush().await.map_err(|e| e.to_string())?;
    let mut outstanding = in_flight;
    while outstanding > 0 {
        let mut next = Some(ws.next().await);
        while let Some(message) = next.take() {
            let message = message
                .ok_or("closed under load")?
                .map_err(|e| e.to_string())?;
            let data = message.into_data();
            let slot = check_reply(protocol, &data, dial.hello, &calls, &expected_result)?;
            let (Some(sent), Some(call)) = (sent_at.get_mut(slot), calls.get(slot)) else {
                return Err(format!("reply for unknown slot {slot}"));
            };
            if measuring.load(Ordering::Relaxed) {
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                latency.saturating_record(micros.max(1));
                done += 1;
            }
            if stop.load(Ordering::Relaxed) {
                outstanding -= 1;
            } else {
                *sent = Instant::now();
                ws.feed(call.clone()).await.map_err(|e| e.to_string())?;
            }
            next = ws.next().now_or_never();
        }
        ws.flush().await.map_err(|e| e.to_string())?;
    }
    close(ws).await;
    Ok((done, latency))
}

/// Checks one reply and returns its slot.
fn check_reply(
    protocol: &dyn Protocol,
    data: &[u8],
    hello: Hello,
    calls: &[Message],
    expected_result: &[u8],
) -> Result<usize, Failure> {
    let frame = protocol
        .unpack(data)
        .map_err(|e| format!("bad reply: {e}"))?;
    let slot: usize = frame
        .stamp()
        .and_then(|stamp| stamp.parse().ok())
        .ok_or_else(|| format!("reply without a slot stamp: {:?}", frame.stamp()))?;
    let good = match hello {
        // The echo must return the very call.
        Hello::None => calls
            .get(slot)
            .is_some_and(|call| call.clone().into_data().as_ref() == data),
        Hello::Wse | Hello::WseHmac => {
            frame.kind == frame::RESPONSE && frame.payload == expected_result
        }
    };
    if good {
        Ok(slot)
    } else {
        Err(format!("wrong reply: {:?}", String::from_utf8_lossy(data)))
    }
}

/// Completes `cycles` connect → ready → close cycles, `concurrency` at a time; returns the
/// time taken.
pub(crate) async fn handshakes(
    dial: &Dial,
    cycles: usize,
    concurrency: usize,
) -> Result<Duration, Failure> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (dial, next) = (dial.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < cycles {
                    let mut ws = open(&dial, "cycler").await?;
                    if dial.hello == Hello::None {
                        // The baseline's "handshake": one frame each way.
                        ws.send(dial.codec.message(b"[\"hi\",null,null]".to_vec()))
                            .await
                            .map_err(|e| e.to_string())?;
                        ws.next()
                            .await
                            .ok_or("closed")?
                            .map_err(|e| e.to_string())?;
                    }
                    close(ws).await;
                }
                Ok::<_, Failure>(())
            })
        })
        .collect();
    for worker in workers {
        worker.await.map_err(|e| e.to_string())??;
    }
    Ok(started.elapsed())
}

/// Opens `count` ready connections, `concurrency` at a time, and holds them.
pub(crate) async fn hold(
    dial: &Dial,
    count: usize,
    concurrency: usize,
) -> Result<Vec<Ws>, Failure> {
    hold_as(dial, count, concurrency, None).await
}

/// Like [`hold`]; every connection says hi as `user` when given (one user's devices).
async fn hold_as(
    dial: &Dial,
    count: usize,
    concurrency: usize,
    user: Option<&str>,
) -> Result<Vec<Ws>, Failure> {
    let mut held = Vec::with_capacity(count);
    let mut opening = futures_util::stream::iter(0..count)
        .map(|i| {
            let dial = dial.clone();
            let identity = user.map_or_else(|| format!("idle{i}"), str::to_owned);
            async move { open(&dial, &identity).await }
        })
        .buffer_unordered(concurrency);
    while let Some(ws) = opening.next().await {
        held.push(ws?);
    }
    Ok(held)
}

/// Who a fan-out reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    /// Every connection, each its own user: `broadcast`.
    Everyone,
    /// Every device of one user: `send_to_user`.
    OneUser,
}

/// The user whose devices receive in [`Audience::OneUser`].
const DEVICES_OF: &str = "devices-of-one-user";

/// Fan-out: `receivers` connections wait for messages; `rounds` triggers sent back to back on
/// a control connection each make the server send one message to all of them. Returns the time
/// from the first trigger until every receiver has every round.
pub(crate) async fn fanout(
    dial: &Dial,
    receivers: usize,
    rounds: usize,
    audience: Audience,
) -> Result<Duration, Failure> {
    let user = (audience == Audience::OneUser).then_some(DEVICES_OF);
    let held = hold_as(dial, receivers, 64, user).await?;
    let delivered = Arc::new(AtomicUsize::new(0));
    let everyone = Arc::new(Notify::new());
    let mut tasks = Vec::with_capacity(receivers);
    for mut ws in held {
        let (delivered, everyone) = (Arc::clone(&delivered), Arc::clone(&everyone));
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                match ws.next().await {
                    Some(Ok(_)) => {}
                    _ => return Err("receiver closed".into()),
                }
                if delivered.fetch_add(1, Ordering::AcqRel) + 1 == receivers * rounds {
                    everyone.notify_one();
                }
            }
            // Closed after the measurement: closing handshakes of the first receivers would
            // compete with the delivery to the last.
            Ok::<_, Failure>(ws)
        }));
    }
    let mut control = open(dial, "control").await?;
    let protocol = dial.codec.protocol();
    let triggers = (0..rounds)
        .map(|round| {
            match dial.hello {
                Hello::None => protocol.encode("tick", &round, None),
                Hello::Wse | Hello::WseHmac => match audience {
                    Audience::Everyone => protocol.encode(
                        "broadcast",
                        &serde_json::json!({"type": "tick", "payload": round}),
                        Some(&round.to_string()),
                    ),
                    Audience::OneUser => protocol.encode(
                        "send_to_user",
                        &serde_json::json!({"user": DEVICES_OF, "type": "tick", "payload": round}),
                        Some(&round.to_string()),
                    ),
                },
            }
            .map(|frame| dial.codec.message(frame))
            .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let reached = everyone.notified();
    let started = Instant::now();
    for trigger in triggers {
        control.feed(trigger).await.map_err(|e| e.to_string())?;
    }
    control.flush().await.map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(60), reached)
        .await
        .map_err(|_| "the rounds never reached everyone")?;
    let elapsed = started.elapsed();
    let mut received = Vec::with_capacity(receivers);
    for task in tasks {
        received.push(task.await.map_err(|e| e.to_string())??);
    }
    futures_util::future::join_all(received.into_iter().map(close)).await;
    drop(control);
    Ok(elapsed)
}
