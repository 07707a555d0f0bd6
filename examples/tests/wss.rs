//! `wss://` end to end: the demo behind a rustls acceptor through `Server::serve_io`, and
//! mounted in an axum application that serves its own TLS; the client over TLS; and a client
//! that does not trust the certificate is refused by TLS itself.

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

/// Logs in as ann over `wss://` at `url`, trusting `tls`, calls `add` and closes.
async fn call_over_tls(url: String, tls: std::sync::Arc<rustls::ClientConfig>) {
    let client = Client::builder(url).tls_config(tls).build();
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
async fn calls_travel_over_tls() {
    let (server_tls, client_tls) = tls::self_signed("localhost").unwrap();
    let port = serve_tls(server_tls).await;
    call_over_tls(format!("wss://localhost:{port}"), client_tls).await;
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

#[tokio::test]
async fn the_axum_route_serves_behind_the_applications_tls() {
    use std::net::SocketAddr;

    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use axum::{Extension, Router};
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;

    let (server_tls, client_tls) = tls::self_signed("localhost").unwrap();
    let server = demo_server(Auth::Plain);
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ws", server.route());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls);
    // The application's own accept loop: TLS, then hyper with upgrades, as with axum-server.
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let app = app.layer(Extension(ConnectInfo::<SocketAddr>(peer)));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .with_upgrades()
                    .await;
            });
        }
    });

    call_over_tls(format!("wss://localhost:{port}/ws"), client_tls).await;
}
