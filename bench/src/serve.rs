//! The servers under test, each run in a process of its own (`wse-bench serve …`) so that
//! its memory is its own: the wse-rs bench application (alone, or a node of a cluster over
//! Redis), and the raw tokio-tungstenite baselines (echo, and a broadcast server for fan-out).

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{FutureExt, SinkExt, StreamExt};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use wse_redis::RedisConfig;
use wse_server::{Builder, Connection, Decision, HmacChallenge, MsgPack, RoomProcedures, Server};

/// The read buffer of every baseline connection: what the anchors were measured with, as
/// the load's own connections.
const BASELINE_READ_BUFFER: usize = wse_load::READ_BUFFER;

/// The HMAC secret of every identity on the challenge variant.
pub(crate) const SECRET: &[u8] = b"bench-secret";

/// What a `serve` process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Target {
    /// The wse-rs bench application.
    Wse,
    /// The same behind the built-in HMAC challenge.
    WseHmac,
    /// The wse-rs bench application counting into a Prometheus recorder.
    WseMetrics,
    /// The same, also timing every call (`call_latency`).
    WseMetricsLatency,
    /// Raw tokio-tungstenite: upgrade, then echo every message.
    Echo,
    /// Raw tokio-tungstenite: every message received goes to every connection.
    Fanout,
}

/// The cluster a wse-rs server under test joins (`serve --redis URL --redis-prefix P`): the
/// servers started with the same Redis and prefix are nodes of one cluster.
#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    /// `redis://host:port/`.
    pub(crate) redis: String,
    /// The prefix of the cluster's keys and channels.
    pub(crate) prefix: String,
}

/// Serves `target` on `addr` (a node of `cluster` when given: wse-rs targets only), printing
/// `listening ADDR` once it accepts connections; runs until killed.
///
/// # Errors
/// When `addr` cannot be bound, a cluster is given for a raw baseline, or the cluster's
/// Redis cannot be reached.
pub(crate) async fn run(
    target: Target,
    addr: SocketAddr,
    cluster: Option<Cluster>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let listening = || println!("listening {addr}");
    match target {
        Target::Wse | Target::WseHmac | Target::WseMetrics | Target::WseMetricsLatency => {
            let metrics = matches!(target, Target::WseMetrics | Target::WseMetricsLatency);
            // Installed before the server is built: it takes its handles then.
            let _scraper = metrics
                .then(|| PrometheusBuilder::new().install_recorder())
                .transpose()
                .map_err(std::io::Error::other)?;
            let mut builder = builder(target == Target::WseHmac);
            if target == Target::WseMetricsLatency {
                builder = builder.call_latency(true);
            }
            if let Some(cluster) = cluster {
                let config = RedisConfig::new(cluster.redis).prefix(cluster.prefix);
                builder = builder.delivery(move |local| config.delivery(local));
            }
            // Serving starts the delivery engine first: a node is in its cluster (connected
            // to Redis, subscribed, registered) before it says it listens.
            let serving = application(builder).serve(listener).await?;
            listening();
            std::future::pending::<()>().await;
            drop(serving);
        }
        Target::Echo | Target::Fanout if cluster.is_some() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "--redis applies to the wse-rs targets only",
            ));
        }
        Target::Echo => {
            listening();
            accept(listener, echo).await;
        }
        Target::Fanout => {
            listening();
            let (hub, _) = broadcast::channel::<Message>(1024);
            accept(listener, move |ws| fanout(ws, hub.clone())).await;
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Deserialize)]
struct ToUser {
    user: String,
    #[serde(rename = "type")]
    kind: String,
    payload: Value,
}

#[derive(Deserialize)]
struct RoomSend {
    room: String,
    #[serde(rename = "type")]
    kind: String,
    payload: Value,
}

#[derive(Deserialize)]
struct Broadcast {
    #[serde(rename = "type")]
    kind: String,
    payload: Value,
}

/// The builder of the application under test: any string identity is accepted as that
/// user, and limits meant for the internet (rate limit, connections per address) are lifted:
/// the load generator is one address sending flat out.
pub(crate) fn builder(hmac: bool) -> Builder {
    let mut builder = Server::builder(|handshake| async move {
        match handshake.identity.as_str() {
            Some(user) if !user.is_empty() => Decision::accept(user, Value::Null),
            _ => Decision::refuse(),
        }
    })
    .add_protocol(MsgPack)
    .conn_per_user(1 << 20)
    .rate_limit(None)
    .max_connections(1 << 20)
    .max_connections_per_address(1 << 20)
    .room_procedures(RoomProcedures::new().authorize(|_, _, _| async { true }));
    if hmac {
        builder = builder.challenge(HmacChallenge::new(|_| async { Some(SECRET.to_vec()) }));
    }
    builder
}

/// The application under test built from `builder`: `add {a, b}`, `broadcast {type,
/// payload}`, `send_to_user {user, type, payload}`, `room_send {room, type, payload}` and the
/// built-in `rooms.join` (any room).
pub(crate) fn application(builder: Builder) -> Server {
    let server = builder.build();
    let registered = [
        server.register("add", |_: Connection, args: Add| async move {
            Ok(args.a + args.b)
        }),
        server.register(
            "broadcast",
            |conn: Connection, args: Broadcast| async move {
                Ok(conn.server().broadcast(&args.kind, &args.payload)?)
            },
        ),
        server.register("room_send", |conn: Connection, args: RoomSend| async move {
            Ok(conn
                .server()
                .send_to_room(&args.room, &args.kind, &args.payload)?)
        }),
        server.register(
            "send_to_user",
            |conn: Connection, args: ToUser| async move {
                Ok(conn
                    .server()
                    .send_to_user(&args.user, &args.kind, &args.payload)?)
            },
        ),
    ];
    for result in registered {
        if let Err(error) = result {
            unreachable!("the bench registers each name once: {error}");
        }
    }
    server
}

async fn accept<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(WebSocketStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let config = WebSocketConfig::default().read_buffer_size(BASELINE_READ_BUFFER);
    let serve = Arc::new(serve);
    while let Ok((tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        let serve = Arc::clone(&serve);
        let upgrade =
            tokio_tungstenite::accept_hdr_async_with_config(tcp, select_first, Some(config));
        tokio::spawn(async move {
            if let Ok(ws) = upgrade.await {
                serve(ws).await;
            }
        });
    }
}

/// Selects the first subprotocol offered, whatever it is (the baselines speak bytes).
#[allow(clippy::result_large_err)] // tungstenite's error type; never returned here
fn select_first(
    request: &Request,
    mut response: Response,
) -> Result<Response, tokio_tungstenite::tungstenite::handshake::server::ErrorResponse> {
    let first = request
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .map(str::trim)
        .and_then(|name| name.parse().ok());
    if let Some(name) = first {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", name);
    }
    Ok(response)
}

/// The transport limit: every message straight back, fed as they come and flushed once no
/// more are ready.
async fn echo(mut ws: WebSocketStream<TcpStream>) {
    while let Some(Ok(message)) = ws.next().await {
        if !(message.is_text() || message.is_binary()) {
            continue;
        }
        if ws.feed(message).await.is_err() {
            return;
        }
        while let Some(Some(Ok(message))) = ws.next().now_or_never() {
            if (message.is_text() || message.is_binary()) && ws.feed(message).await.is_err() {
                return;
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

/// Every message received goes to every connection, through a tokio broadcast channel.
async fn fanout(ws: WebSocketStream<TcpStream>, hub: broadcast::Sender<Message>) {
    let (mut sink, mut stream) = ws.split();
    let mut inbox = hub.subscribe();
    let writer = tokio::spawn(async move {
        while let Ok(message) = inbox.recv().await {
            if sink.feed(message).await.is_err() {
                return;
            }
            while let Ok(message) = inbox.try_recv() {
                if sink.feed(message).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        if message.is_text() || message.is_binary() {
            let _ = hub.send(message);
        }
    }
    writer.abort();
}
