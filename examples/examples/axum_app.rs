//! An axum application with the wse-rs endpoint beside its HTTP routes, on one port:
//! `GET /health`, a JSON route `GET /api/online` (who is online, from the wse-rs server),
//! static files from `examples/assets` (its page calls `add` over the endpoint), and the demo
//! application's endpoint at `/ws`. Ctrl-C closes the WebSocket connections, then lets axum
//! finish its HTTP requests.
//!
//! ```text
//! cargo run -p wse-examples --example axum_app -- 3000
//! curl http://127.0.0.1:3000/health
//! curl http://127.0.0.1:3000/api/online
//! open http://127.0.0.1:3000/
//! ```

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use tower_http::services::ServeDir;
use wse_examples::{Auth, demo_server};
use wse_server::{Presence, Server};

/// Who is online: the same list the demo's `presence.online` answers over WebSocket.
async fn online(State(server): State<Server>) -> Result<Json<Vec<Presence>>, StatusCode> {
    let online = server
        .online()
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(Json(online))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::args().nth(1) {
        Some(port) => port.parse()?,
        None => 3000,
    };
    let server = demo_server(Auth::Plain);
    let assets = concat!(env!("CARGO_MANIFEST_DIR"), "/assets");
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/api/online", get(online))
        .route("/ws", server.route())
        .fallback_service(ServeDir::new(assets))
        .with_state(server.clone());

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!(
        "http://{addr}/ (page), http://{addr}/health, http://{addr}/api/online, ws://{addr}/ws"
    );
    // With the peer's address, which the per-address limits count.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = tokio::signal::ctrl_c().await;
        // Upgraded sockets are no longer hyper's: the wse-rs server closes them itself.
        server.shutdown().await;
    })
    .await?;
    Ok(())
}
