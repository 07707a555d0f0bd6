//! The server's limits: inbound rate, connections in total and per address, failed
//! authentications per address, pending server → client calls. Each with its documented
//! outcome; the connection (or the server) goes on serving the others.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wse_core::CallError;
use wse_server::{AuthFailureLimit, Builder, Connection, Decision, RateLimit, Server};
use wse_tests::{Codec, Raw, TestServer, start, within};

fn builder() -> Builder {
    Server::builder(|handshake| async move {
        match handshake.identity.as_str() {
            Some(user) if user.starts_with("user") => Decision::accept(user, Value::Null),
            _ => Decision::refuse(),
        }
    })
}

async fn serve(builder: Builder) -> TestServer {
    let server = builder.build();
    server
        .register(
            "echo",
            |_: Connection, value: Value| async move { Ok(value) },
        )
        .unwrap();
    start(server).await
}

async fn login(server: &TestServer, user: &str) -> Raw {
    Raw::login_identity(server.addr(), Codec::Json, user).await
}

/// Whether the server drops a fresh socket before answering its upgrade request.
async fn dropped_before_upgrade(server: &TestServer) -> bool {
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: wse-default-json\r\n\r\n",
        server.addr()
    );
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut answer = [0u8; 12];
    match within("upgrade answer", tcp.read(&mut answer)).await {
        Ok(0) | Err(_) => true,
        Ok(_) => false,
    }
}

#[tokio::test]
async fn over_the_rate_limit_calls_are_refused_then_a_flooder_is_closed() {
    let server = serve(builder().conn_per_user(4).rate_limit(Some(RateLimit {
        per_second: 1,
        burst: 5,
    })))
    .await;
    let mut calm = login(&server, "user-calm").await;
    let mut flood = login(&server, "user-flood").await;

    for i in 0..5 {
        flood.send(&json!(["echo", i, format!("ok{i}")])).await;
        assert_eq!(
            flood.frame().await,
            json!(["~wse:response", i, format!("ok{i}")])
        );
    }
    flood.send(&json!(["echo", 5, "over"])).await;
    assert_eq!(flood.frame().await, flood_refusal("over"));
    // Messages over the limit are dropped, not answered; a whole burst refused in a row closes.
    for _ in 0..3 {
        flood.send(&json!(["note", 1, null])).await;
    }
    flood.send(&json!(["echo", 6, "last"])).await;
    assert_eq!(flood.frame().await, flood_refusal("last"));
    flood.expect_close(1008, "wse.rate-limited").await;

    calm.send(&json!(["echo", "fine", "c"])).await;
    assert_eq!(calm.frame().await, json!(["~wse:response", "fine", "c"]));
}

fn flood_refusal(stamp: &str) -> Value {
    json!(["~wse:response-err", {"code": "wse.server.rate-limited"}, stamp])
}

#[tokio::test]
async fn the_rate_limit_can_be_turned_off() {
    let server = serve(builder().rate_limit(None)).await;
    let mut raw = login(&server, "user-fast").await;
    for i in 0..3000 {
        raw.send(&json!(["echo", i, format!("s{i}")])).await;
    }
    for _ in 0..3000 {
        assert_eq!(raw.frame().await[0], "~wse:response");
    }
}

#[tokio::test]
async fn connections_past_the_total_are_dropped_before_the_upgrade() {
    let server = serve(builder().conn_per_user(8).max_connections(2)).await;
    let mut first = login(&server, "user-a").await;
    let _second = login(&server, "user-b").await;
    assert!(dropped_before_upgrade(&server).await);
    first.close(1000, "wse.by-client").await;
    assert!(matches!(
        first.next().await,
        wse_tests::Seen::Close(..) | wse_tests::Seen::End
    ));
    // The place is free again once the first connection has ended.
    within("a free place", async {
        while server.server.counts().await.unwrap().1 > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut third = login(&server, "user-c").await;
    third.send(&json!(["echo", 1, "t"])).await;
    assert_eq!(third.frame().await, json!(["~wse:response", 1, "t"]));
}

#[tokio::test]
async fn connections_past_the_per_address_limit_are_dropped_before_the_upgrade() {
    let server = serve(builder().conn_per_user(8).max_connections_per_address(2)).await;
    let _a = login(&server, "user-a").await;
    let _b = login(&server, "user-b").await;
    assert!(dropped_before_upgrade(&server).await);
}

#[tokio::test]
async fn an_address_that_keeps_failing_authentication_is_throttled() {
    let limit = AuthFailureLimit {
        max_failures: 2,
        window: Duration::from_secs(60),
    };
    let server = serve(builder().auth_failure_limit(limit)).await;
    for _ in 0..2 {
        let mut raw = Raw::connect(server.addr(), Codec::Json).await;
        raw.send(&json!(["~wse:hi", {"identity": "intruder"}, null]))
            .await;
        raw.expect_close(1000, "wse.not-authorized").await;
    }
    // Now even a good identity from this address is dropped until the window has passed.
    assert!(dropped_before_upgrade(&server).await);
}

#[tokio::test]
async fn server_calls_past_max_pending_fail_and_the_connection_stays() {
    let server = serve(
        builder()
            .max_pending_calls(1)
            .call_timeout(Duration::from_secs(5)),
    )
    .await;
    let mut raw = login(&server, "user-quiet").await;
    let connection = server.server.connections_of("user-quiet").await.unwrap()[0].clone();
    let first = tokio::spawn(connection.call::<Value, _>("client_proc", &1));
    let asked = raw.frame().await;
    assert_eq!(asked[0], "client_proc");
    let second = connection.call::<Value, _>("client_proc", &2).await;
    assert_eq!(second, Err(CallError::TooManyPending));
    raw.send(&json!(["~wse:response", "answer", asked[2]]))
        .await;
    assert_eq!(
        within("first call", first).await.unwrap(),
        Ok(json!("answer"))
    );
    raw.send(&json!(["echo", 1, "e"])).await;
    assert_eq!(raw.frame().await, json!(["~wse:response", 1, "e"]));
}

#[tokio::test]
async fn a_socket_that_never_upgrades_is_closed_after_the_handshake_timeout() {
    let server = serve(builder().handshake_timeout(Duration::from_millis(200))).await;
    for request in [&b""[..], b"GET / HTTP/1.1\r\nHost: x\r\n"] {
        let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut buffer = [0u8; 64];
        let read = within("the server hangs up", tcp.read(&mut buffer)).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}
