//! Dead peers: the heartbeat pings a quiet peer (browsers and WebSocket libraries answer
//! pings on their own) and closes one that stays silent with 1011 `wse.heartbeat-timeout`,
//! on the server and on the client.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use wse_client::{Client, Heartbeat};
use wse_server::{Connection, Decision, Server};
use wse_tests::{Codec, Raw, TestServer, next_event, pick, start, within};

const FAST: Heartbeat = Heartbeat {
    interval: Duration::from_millis(100),
    timeout: Duration::from_millis(400),
};

async fn server() -> TestServer {
    let server = Server::builder(|handshake| async move {
        Decision::accept(handshake.identity.as_str().unwrap_or("anyone"), Value::Null)
    })
    .conn_per_user(4)
    .heartbeat(Some(FAST))
    .build();
    server
        .register(
            "echo",
            |_: Connection, value: Value| async move { Ok(value) },
        )
        .unwrap();
    start(server).await
}

#[tokio::test]
async fn a_peer_that_answers_nothing_is_closed_and_one_that_reads_stays() {
    let server = server().await;
    let mut events = server.server.events();
    let _silent = Raw::login_identity(server.addr(), Codec::Json, "silent").await;
    let mut alive = Raw::login_identity(server.addr(), Codec::Json, "alive").await;

    // The live peer reads (and so answers the pings) until told to stop.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut pings = 0;
        let mut stopped = std::pin::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return (alive, pings),
                message = alive.ws.next() => match message {
                    Some(Ok(Message::Ping(_))) => pings += 1,
                    other => panic!("expected only pings, got {other:?}"),
                },
            }
        }
    });

    let (user, code, reason) =
        next_event(&mut events, "the silent peer closed", pick::disconnected).await;
    assert_eq!(
        (user.as_str(), code, reason.as_str()),
        ("silent", 1011, "wse.heartbeat-timeout")
    );
    // Several timeouts more for the live one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.send(()).unwrap();
    let (mut alive, pings) = within("the reader", reader).await.unwrap();
    assert!(pings >= 2, "pinged {pings} times");
    alive
        .expect_reply(&json!(["echo", 1, "a"]), &json!(["~wse:response", 1, "a"]))
        .await;
    assert_eq!(server.server.counts().await.unwrap(), (1, 1));
}

/// A server for one client: it welcomes the client's hi, then neither reads nor writes (nor
/// answers pings) for `hold`, then drops the socket.
async fn welcome_then_ignore(hold: Duration) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        // The error type is tungstenite's; this callback never returns it.
        #[allow(clippy::result_large_err)]
        let select = |_: &Request, mut response: Response| {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                "wse-default-json".parse().unwrap(),
            );
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, select)
            .await
            .unwrap();
        let _hi = ws.next().await;
        ws.send(Message::Text(r#"["~wse:welcome",null,null]"#.into()))
            .await
            .unwrap();
        tokio::time::sleep(hold).await;
        drop(ws);
    });
    addr
}

#[tokio::test]
async fn a_client_gives_up_a_silent_server() {
    // A server that welcomes, then neither reads nor answers pings, then goes away.
    let addr = welcome_then_ignore(Duration::from_secs(1)).await;

    let client = Client::builder(format!("ws://{addr}"))
        .heartbeat(Some(FAST))
        .build();
    let mut events = client.events();
    within("connect", client.connect(json!("ann"), json!({})))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let (code, reason) = next_event(&mut events, "closed", pick::closed).await;
    assert_eq!((code, reason.as_str()), (1011, "wse.heartbeat-timeout"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_client_closes_in_bounded_time_when_the_server_stops_reading() {
    // A server that welcomes, then holds the socket without ever reading from it.
    let addr = welcome_then_ignore(Duration::from_secs(60)).await;

    let client = Client::builder(format!("ws://{addr}"))
        .heartbeat(None)
        .build();
    within("connect", client.connect(json!("ann"), json!({})))
        .await
        .unwrap();
    // More than the socket buffers hold: the client's writer is stuck in a write.
    let big = "x".repeat(1 << 20);
    for _ in 0..32 {
        let _ = client.send("big", &big);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The close frame cannot get through; the close still ends within the close timeout.
    tokio::time::timeout(Duration::from_secs(8), client.close("bye"))
        .await
        .expect("close waited for a writer the server never drains");
    assert_eq!(client.status(), wse_client::Status::Idle);
}
