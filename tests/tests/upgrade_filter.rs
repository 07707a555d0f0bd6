//! Before the WebSocket (issue 14): the Origin allow-list, the application's upgrade filter,
//! `X-Forwarded-For` from trusted proxies only (identify reading the request is in
//! axum_mount.rs, for both ways of serving). Spoken with raw HTTP, so that each refusal's
//! status is seen as sent.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use wse_server::http::StatusCode;
use wse_server::{Decision, Rejection, Server, UpgradeDecision, UpgradeRequest};
use wse_tests::{Codec, Raw, TestServer, next_event, pick, start, upgrade, within};

const JSON: (&str, &str) = ("Sec-WebSocket-Protocol", "wse-default-json");

/// A server that accepts every hi as the user named by its identity.
fn builder() -> wse_server::Builder {
    Server::builder(|handshake| async move {
        let user = handshake.identity.as_str().unwrap_or("anon").to_owned();
        Decision::accept(user, Value::Null)
    })
}

/// The status line's code of a response head.
fn status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

/// Asks for an upgrade with `headers`, expects `expected`, and for a refusal that the socket
/// then ends: no WebSocket follows it.
async fn expect_status(server: &TestServer, headers: &[(&str, &str)], expected: u16) {
    let (head, mut tcp) = upgrade(server.addr(), "/", headers).await;
    assert_eq!(status(&head), expected, "{headers:?}: {head}");
    if expected != 101 {
        let mut rest = Vec::new();
        within("the refused socket ends", tcp.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }
}

/// Upgrades with `headers`, says hi as `user` and returns the open peer.
async fn login(server: &TestServer, headers: &[(&str, &str)], user: &str) -> Raw {
    let mut all = vec![JSON];
    all.extend_from_slice(headers);
    let (head, tcp) = upgrade(server.addr(), "/", &all).await;
    assert_eq!(status(&head), 101, "{head}");
    let mut raw = Raw::over(tcp, Codec::Json, &head).await;
    raw.expect_reply(
        &json!(["~wse:hi", {"identity": user}, null]),
        &json!(["~wse:welcome", null, null]),
    )
    .await;
    raw
}

#[tokio::test]
async fn an_origin_not_listed_gets_403_and_no_websocket() {
    let server = start(
        builder()
            .allow_origin("https://app.example")
            .allow_origin("http://localhost:8080/")
            .build(),
    )
    .await;
    let mut events = server.server.events();

    expect_status(&server, &[JSON, ("Origin", "https://evil.example")], 403).await;
    let reason = next_event(&mut events, "the rejection", pick::rejected).await;
    assert_eq!(
        reason,
        Rejection::OriginNotAllowed("https://evil.example".into())
    );
    // Same host, other scheme or port: another origin.
    expect_status(&server, &[JSON, ("Origin", "http://app.example")], 403).await;
    expect_status(&server, &[JSON, ("Origin", "http://localhost:8081")], 403).await;

    // Listed ones, compared without case or trailing slash.
    expect_status(&server, &[JSON, ("Origin", "HTTPS://App.Example")], 101).await;
    expect_status(&server, &[JSON, ("Origin", "http://localhost:8080")], 101).await;
    // No Origin at all: not a browser, admitted; our own client sends none.
    login(&server, &[], "ann").await;
    let client = wse_client::Client::builder(server.url()).build();
    within("connect", client.connect(json!("bob"), json!({})))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_filter_sees_the_request_and_denies_with_its_status() {
    let seen: Arc<Mutex<Vec<Arc<UpgradeRequest>>>> = Arc::default();
    let record = Arc::clone(&seen);
    let server = start(
        builder()
            .upgrade_filter(move |request| {
                record.lock().unwrap().push(Arc::clone(&request));
                async move {
                    if request.cookie("session").is_none() {
                        UpgradeDecision::Deny(StatusCode::UNAUTHORIZED)
                    } else if request.header("x-banned").is_some() {
                        UpgradeDecision::deny()
                    } else {
                        UpgradeDecision::Admit
                    }
                }
            })
            .build(),
    )
    .await;
    let mut events = server.server.events();

    expect_status(&server, &[JSON], 401).await;
    let reason = next_event(&mut events, "the rejection", pick::rejected).await;
    assert_eq!(reason, Rejection::Denied(401));
    expect_status(
        &server,
        &[JSON, ("Cookie", "session=1"), ("X-Banned", "y")],
        403,
    )
    .await;
    let mut raw = login(&server, &[("Cookie", "theme=dark; session=abc")], "ann").await;
    raw.send(&json!(["hello", null, null])).await;

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let admitted = &seen[2];
    assert_eq!(admitted.method, "GET");
    assert_eq!(admitted.path, "/");
    assert_eq!(admitted.cookie("session"), Some("abc"));
    assert_eq!(
        admitted.header("sec-websocket-protocol"),
        Some("wse-default-json")
    );
    assert_eq!(admitted.peer_addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(admitted.client_addr, admitted.peer_addr);
    // Nothing of a denied request reached the connections.
    assert_eq!(server.server.connections_of("ann").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_filter_that_does_not_answer_in_time_gets_503() {
    let server = start(
        builder()
            .handshake_timeout(Duration::from_millis(300))
            .upgrade_filter(|_| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                UpgradeDecision::Admit
            })
            .build(),
    )
    .await;
    let mut events = server.server.events();
    expect_status(&server, &[JSON], 503).await;
    let reason = next_event(&mut events, "the rejection", pick::rejected).await;
    assert_eq!(reason, Rejection::HandshakeTimeout);
}

/// The address identify and the connection see for a socket whose upgrade carried `headers`.
async fn seen_address(server: &TestServer, headers: &[(&str, &str)], user: &str) -> SocketAddr {
    let raw = login(server, headers, user).await;
    let connection = server
        .server
        .connections_of(user)
        .await
        .unwrap()
        .pop()
        .unwrap();
    drop(raw);
    connection.remote_addr()
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    let client_a: IpAddr = "203.0.113.7".parse().unwrap();
    let client_b: IpAddr = "203.0.113.8".parse().unwrap();
    let forwarded_a = ("X-Forwarded-For", "203.0.113.7");

    // Behind a trusted proxy (loopback here), each client has its own address and its own
    // per-address limit.
    let trusting = start(
        builder()
            .trusted_proxy(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .max_connections_per_address(1)
            .build(),
    )
    .await;
    let mut events = trusting.server.events();
    let first = login(&trusting, &[forwarded_a], "ann").await;
    let seen = trusting
        .server
        .connections_of("ann")
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(seen.remote_addr(), SocketAddr::new(client_a, 0));
    expect_status(&trusting, &[JSON, forwarded_a], 429).await;
    let reason = next_event(&mut events, "the rejection", pick::rejected).await;
    assert_eq!(reason, Rejection::TooManyFromAddress);
    // The nearest untrusted hop counts, whatever a client wrote to its left.
    let spoofed = ("X-Forwarded-For", "203.0.113.7, 203.0.113.8");
    assert_eq!(
        seen_address(&trusting, &[spoofed], "bob").await,
        SocketAddr::new(client_b, 0)
    );
    drop(first);

    // Without trust, the header is anybody's claim: the socket's peer counts.
    let wary = start(builder().max_connections_per_address(1).build()).await;
    let held = login(&wary, &[forwarded_a], "cat").await;
    let seen = wary
        .server
        .connections_of("cat")
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(seen.remote_addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    // Another claimed address does not buy another slot: the peer is over its limit, and a
    // socket from an untrusted peer is dropped before its request is read.
    let (head, _tcp) = upgrade(
        wary.addr(),
        "/",
        &[JSON, ("X-Forwarded-For", "198.51.100.1")],
    )
    .await;
    assert!(head.is_empty(), "{head}");
    drop(held);
}
