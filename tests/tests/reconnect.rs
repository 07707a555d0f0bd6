//! Reconnect and jump: the client comes back after a server restart (graceful and abrupt),
//! moves to another server on jump, stays away without a policy, and stops when closed.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use wse_client::{CallError, Client, Status};
use wse_examples::{Auth, demo_server};
use wse_server::Event;
use wse_tests::{
    FAST, TestServer, add, client, connect_as, next_event, pick, start_demo, wait_status, within,
};

/// The demo served again on `addr`, retrying briefly while the port is not free yet.
async fn restart_demo(addr: SocketAddr) -> TestServer {
    let server = demo_server(Auth::Plain);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match server.bind(addr).await {
            Ok(serving) => return TestServer { server, serving },
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("cannot bind {addr} again: {error}"),
        }
    }
}

#[tokio::test]
async fn the_client_reconnects_after_a_server_restart() {
    let first = start_demo(Auth::Plain).await;
    let addr = first.addr();
    let client = client(&first).reconnect(FAST).build();
    let mut events = client.events();
    connect_as(&client, "ann").await;
    assert_eq!(add(&client).await, Ok(3));

    within("shutdown", first.shutdown()).await;
    assert_eq!(
        next_event(&mut events, "closed event", pick::closed).await,
        (1012, "wse.by-server".to_owned())
    );
    wait_status(&client, "reconnecting", |s| *s == Status::Reconnecting).await;
    assert_eq!(add(&client).await, Err(CallError::NotReady));

    let second = restart_demo(addr).await;
    wait_status(&client, "ready again", |s| *s == Status::Ready).await;
    let welcome = next_event(&mut events, "ready event", pick::ready).await;
    assert_eq!(welcome, json!({"cid": "ann", "meta": {"user_id": "ann"}}));
    assert_eq!(add(&client).await, Ok(3));
    assert_eq!(second.server.counts().await.unwrap(), (1, 1));
    assert_eq!(client.url(), format!("ws://{addr}"));

    within("close", client.close("wse.by-client")).await;
    assert_eq!(client.status(), Status::Idle);
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A WebSocket server that welcomes every hi and then drops the TCP connection without a
/// close frame, `drops` times; the next connection it welcomes and hands back, open, with
/// the number of connections accepted.
async fn abrupt_server(drops: usize) -> (SocketAddr, tokio::task::JoinHandle<(usize, Socket)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut accepted = 0;
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            accepted += 1;
            // The error type is tungstenite's handshake response; this callback never returns it.
            #[allow(clippy::result_large_err)]
            let pick = |_: &Request, mut response: Response| {
                response.headers_mut().insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_static("wse-default-json"),
                );
                Ok(response)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(tcp, pick)
                .await
                .unwrap();
            let hi = ws.next().await.unwrap().unwrap();
            let hi: Value = serde_json::from_str(hi.to_text().unwrap()).unwrap();
            assert_eq!(hi[0], "~wse:hi");
            let welcome = json!(["~wse:welcome", {"n": accepted}, null]);
            ws.send(Message::Text(welcome.to_string().into()))
                .await
                .unwrap();
            if accepted > drops {
                return (accepted, ws);
            }
            // No close frame: the socket just ends (1006 on the client).
            drop(ws);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn the_client_reconnects_after_the_socket_just_ends() {
    let (addr, server) = abrupt_server(1).await;
    let client = Client::builder(format!("ws://{addr}"))
        .reconnect(FAST)
        .build();
    let mut events = client.events();
    let welcome = connect_as(&client, "ann").await;
    assert_eq!(welcome, json!({"n": 1}));
    let (code, _) = next_event(&mut events, "closed event", pick::closed).await;
    assert_eq!(code, 1006);
    let welcome = next_event(&mut events, "second welcome", pick::ready).await;
    assert_eq!(welcome, json!({"n": 2}));
    let (accepted, _open) = within("server task", server).await.unwrap();
    assert_eq!(accepted, 2);
    wait_status(&client, "ready again", |s| *s == Status::Ready).await;
}

#[tokio::test]
async fn jump_moves_the_client_to_another_server() {
    let a = start_demo(Auth::Plain).await;
    let b = start_demo(Auth::Plain).await;
    b.server
        .register("which", |_, _: Value| async { Ok("B") })
        .unwrap();
    let mut a_events = a.server.events();
    let mut b_events = b.server.events();
    let client = client(&a).build();
    connect_as(&client, "ann").await;
    assert_eq!(client.url(), a.url());
    assert_eq!(a.server.counts().await.unwrap(), (1, 1));

    let welcome = within("jump", client.jump(b.url())).await.unwrap();
    assert_eq!(welcome, json!({"cid": "ann", "meta": {"user_id": "ann"}}));
    assert_eq!(client.status(), Status::Ready);
    assert_eq!(client.url(), b.url());

    assert_eq!(
        next_event(&mut a_events, "disconnected event", pick::disconnected).await,
        ("ann".to_owned(), 4000, "jump".to_owned())
    );
    assert_eq!(a.server.counts().await.unwrap(), (0, 0));
    let user = next_event(&mut b_events, "connected to B", |event| match event {
        Event::Connected { connection } => Some(connection.user_id().to_owned()),
        _ => None,
    })
    .await;
    assert_eq!(user, "ann");
    assert_eq!(b.server.counts().await.unwrap(), (1, 1));

    let which: String = within("which", client.call("which", &json!(null)))
        .await
        .unwrap();
    assert_eq!(which, "B");
    assert_eq!(add(&client).await, Ok(3));
}

#[tokio::test]
async fn without_reconnect_a_shutdown_leaves_the_client_offline() {
    let server = start_demo(Auth::Plain).await;
    let addr = server.addr();
    let client = client(&server).build();
    connect_as(&client, "ann").await;
    let started = Instant::now();
    let pending = tokio::spawn(client.call::<Value, _>("delay", &json!({"ms": 5000, "value": 1})));
    tokio::time::sleep(Duration::from_millis(100)).await;

    within("shutdown", server.shutdown()).await;
    assert_eq!(
        within("pending call", pending).await.unwrap(),
        Err(CallError::Disconnected)
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    wait_status(&client, "offline", |s| *s == Status::Offline).await;

    // A server at the same address does not bring it back.
    let again = restart_demo(addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.status(), Status::Offline);
    assert_eq!(again.server.counts().await.unwrap(), (0, 0));
    assert_eq!(add(&client).await, Err(CallError::NotReady));
}

#[tokio::test]
async fn close_stops_a_client_waiting_to_reconnect() {
    let server = start_demo(Auth::Plain).await;
    let addr = server.addr();
    let client = client(&server).reconnect(FAST).build();
    connect_as(&client, "ann").await;

    within("shutdown", server.shutdown()).await;
    wait_status(&client, "reconnecting", |s| *s == Status::Reconnecting).await;
    // Let it fail a few attempts against the closed port.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.status(), Status::Reconnecting);

    within("close", client.close("wse.by-client")).await;
    assert_eq!(client.status(), Status::Idle);

    let again = restart_demo(addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.status(), Status::Idle);
    assert_eq!(again.server.counts().await.unwrap(), (0, 0));
}
