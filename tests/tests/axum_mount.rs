//! The endpoint mounted in an axum application, beside its HTTP routes on one port.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wse_examples::{Auth, demo_server};
use wse_server::http::StatusCode;
use wse_server::{Decision, Server, UpgradeDecision};
use wse_tests::{Codec, Raw, connect_as, start, upgrade, within};

/// Serves `app` with axum on 127.0.0.1 port 0, with each peer's address.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    addr
}

/// The demo at `/ws` beside `/health`, served by axum on 127.0.0.1 port 0.
async fn mounted() -> (Server, SocketAddr) {
    let server = demo_server(Auth::Plain);
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ws", server.route());
    (server, serve(app).await)
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

/// A server whose identify accepts the session cookie and answers with what it read of the
/// upgrade request.
fn cookie_server() -> Server {
    Server::builder(|handshake| async move {
        let request = &handshake.request;
        match request.cookie("session") {
            Some(session) => Decision::accept(
                session,
                json!({
                    "path": request.path,
                    "token": request.query_param("token"),
                    "agent": request.header("user-agent"),
                }),
            ),
            None => Decision::refuse(),
        }
    })
    .build()
}

/// Opens `url` with a session cookie, says hi, and returns the welcome (or the close).
async fn hello_with_cookie(url: &str) -> Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};

    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "cookie",
        HeaderValue::from_static("theme=dark; session=ann-7"),
    );
    headers.insert("user-agent", HeaderValue::from_static("wse-test"));
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("wse-default-json"),
    );
    let (mut ws, _) = within("connect", tokio_tungstenite::connect_async(request))
        .await
        .unwrap();
    ws.send(Message::text(r#"["~wse:hi",{"identity":null},null]"#))
        .await
        .unwrap();
    let welcome = within("the welcome", ws.next()).await.unwrap().unwrap();
    serde_json::from_str(welcome.to_text().unwrap()).unwrap()
}

#[tokio::test]
async fn identify_reads_the_upgrade_requests_cookie_query_and_headers() {
    let expected = |path: &str| json!(["~wse:welcome", {"path": path, "token": "t1", "agent": "wse-test"}, null]);
    // Served by bind.
    let server = start(cookie_server()).await;
    let welcome = hello_with_cookie(&format!("ws://{}/anywhere?token=t1", server.addr())).await;
    assert_eq!(welcome, expected("/anywhere"));
    assert_eq!(server.server.devices("ann-7").await.unwrap().len(), 1);

    // Mounted in axum.
    let server = cookie_server();
    let app = Router::new().route("/ws", server.route());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let welcome = hello_with_cookie(&format!("ws://{addr}/ws?token=t1")).await;
    assert_eq!(welcome, expected("/ws"));
}

#[tokio::test]
async fn the_mounted_route_keeps_the_same_gate() {
    let json = ("Sec-WebSocket-Protocol", "wse-default-json");
    let server = Server::builder(|_| async { Decision::accept("ann", Value::Null) })
        .allow_origin("https://app.example")
        .trusted_proxy(std::net::IpAddr::from([127, 0, 0, 1]))
        .max_connections_per_address(1)
        .upgrade_filter(|request| async move {
            if request.header("x-banned").is_some() {
                UpgradeDecision::Deny(StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS)
            } else {
                UpgradeDecision::Admit
            }
        })
        .build();
    let addr = serve(Router::new().route("/ws", server.route())).await;
    let status = |head: &str| head.split_whitespace().nth(1).unwrap_or("").to_owned();

    let (head, _) = upgrade(addr, "/ws", &[json, ("Origin", "https://evil.example")]).await;
    assert_eq!(status(&head), "403", "{head}");
    let (head, _) = upgrade(addr, "/ws", &[json, ("X-Banned", "1")]).await;
    assert_eq!(status(&head), "451", "{head}");

    // Through the trusted proxy, the limit counts the client named in X-Forwarded-For.
    let forwarded = ("X-Forwarded-For", "198.51.100.4");
    let (head, held) = upgrade(addr, "/ws", &[json, forwarded]).await;
    assert_eq!(status(&head), "101", "{head}");
    let mut held = Raw::over(held, Codec::Json, &head).await;
    held.expect_reply(
        &json!(["~wse:hi", {"identity": null}, null]),
        &json!(["~wse:welcome", null, null]),
    )
    .await;
    let connection = server.connections_of("ann").await.unwrap().pop().unwrap();
    assert_eq!(connection.remote_addr(), "198.51.100.4:0".parse().unwrap());
    let (head, _) = upgrade(addr, "/ws", &[json, forwarded]).await;
    assert_eq!(status(&head), "429", "{head}");
    let (head, _) = upgrade(addr, "/ws", &[json, ("X-Forwarded-For", "198.51.100.5")]).await;
    assert_eq!(status(&head), "101", "{head}");
}
