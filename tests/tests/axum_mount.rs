//! The endpoint mounted in an axum application, beside its HTTP routes on one port.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wse_examples::{Auth, demo_server};
use wse_server::Server;
use wse_tests::{connect_as, within};

/// The demo at `/ws` beside `/health`, served by axum on 127.0.0.1 port 0.
async fn mounted() -> (Server, SocketAddr) {
    let server = demo_server(Auth::Plain);
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ws", server.route());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    (server, addr)
}

/// Sends a bare HTTP/1.1 request and returns the whole response as text.
async fn http(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within("the HTTP response", tcp.read_to_end(&mut response))
        .await
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn the_endpoint_and_http_routes_share_one_port() {
    let (server, addr) = mounted().await;
    let client = wse_client::Client::builder(format!("ws://{addr}/ws")).build();
    let welcome = connect_as(&client, "ann").await;
    assert_eq!(welcome["cid"], "ann");

    // HTTP and WebSocket at once, on the same port.
    let health = http(
        addr,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok"), "{health}");
    let sum: i64 = within("add", client.call("add", &json!({"a": 40, "b": 2})))
        .await
        .unwrap();
    assert_eq!(sum, 42);

    // The per-address limits see the peer's address.
    let connection = server.connections_of("ann").await.unwrap().pop().unwrap();
    assert_eq!(connection.remote_addr().ip(), addr.ip());

    // A plain GET of the endpoint is no upgrade.
    let plain = http(
        addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");

    // The server's shutdown closes the mounted connections too.
    let mut statuses = client.status_changes();
    server.shutdown().await;
    within(
        "offline",
        statuses.wait_for(|status| *status != wse_client::Status::Ready),
    )
    .await
    .unwrap();
}
