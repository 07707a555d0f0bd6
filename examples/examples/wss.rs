//! `wss://`: the server behind a rustls acceptor, the client over TLS.
//!
//! The server accepts TCP, completes TLS with tokio-rustls, and hands the stream to
//! `Server::serve_io`; everything after (upgrade, handshake, calls) is the same as over plain
//! TCP. The certificate here is self-signed and made on the spot; the client trusts exactly it.
//!
//! ```text
//! cargo run -p wse-examples --example wss
//! ```

use serde_json::json;
use tokio::net::TcpListener;
use wse_client::Client;
use wse_examples::{Auth, demo_server, tls};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (server_tls, client_tls) = tls::self_signed("localhost")?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    // Each socket: the TLS handshake (tokio-rustls), then Server::serve_io.
    let serving = tls::serve(demo_server(Auth::Plain), listener, server_tls);

    let client = Client::builder(format!("wss://localhost:{port}"))
        .tls_config(client_tls)
        .build();
    let welcome = client
        .connect(json!("secret"), json!({"user_id": "alice"}))
        .await?;
    let sum: i64 = client.call("add", &json!({"a": 20, "b": 22})).await?;
    println!("over TLS: welcome {welcome}, add = {sum}");
    client.close("wse.by-client").await;
    serving.abort();
    Ok(())
}
