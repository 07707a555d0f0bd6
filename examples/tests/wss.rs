//! `wss://` end to end: the demo behind a rustls acceptor through `Server::serve_io`, the
//! client over TLS; and a client that does not trust the certificate is refused by TLS itself.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;
use wse_client::{Client, ConnectError};
use wse_examples::{Auth, demo_server, tls};

async fn serve_tls(server_tls: std::sync::Arc<rustls::ServerConfig>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tls::serve(demo_server(Auth::Plain), listener, server_tls);
    port
}

#[tokio::test]
async fn calls_travel_over_tls() {
    let (server_tls, client_tls) = tls::self_signed("localhost").unwrap();
    let port = serve_tls(server_tls).await;
    let client = Client::builder(format!("wss://localhost:{port}"))
        .tls_config(client_tls)
        .build();
    let welcome = tokio::time::timeout(
        Duration::from_secs(10),
        client.connect(json!("secret"), json!({"user_id": "ann"})),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(welcome, json!({"cid": "ann", "meta": {"user_id": "ann"}}));
    let sum: i64 = client.call("add", &json!({"a": 1, "b": 2})).await.unwrap();
    assert_eq!(sum, 3);
    client.close("wse.by-client").await;
}

#[tokio::test]
async fn an_untrusted_certificate_fails_the_connect() {
    let (server_tls, _) = tls::self_signed("localhost").unwrap();
    let (_, other_client_tls) = tls::self_signed("localhost").unwrap();
    let port = serve_tls(server_tls).await;
    let client = Client::builder(format!("wss://localhost:{port}"))
        .tls_config(other_client_tls)
        .build();
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        client.connect(json!("secret"), json!({"user_id": "ann"})),
    )
    .await
    .unwrap();
    assert!(
        matches!(refused, Err(ConnectError::Transport(_))),
        "{refused:?}"
    );
}
