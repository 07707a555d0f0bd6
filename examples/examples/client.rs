//! A client: connect, call, listen, answer the server's calls.
//!
//! Runs on its own (the demo server on port 0 in the same process):
//!
//! ```text
//! cargo run -p wse-examples --example client
//! ```

use serde_json::{Value, json};
use wse_client::{CallError, Client, RpcError};
use wse_examples::{Auth, demo_server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serving = demo_server(Auth::Plain).bind("127.0.0.1:0").await?;
    let url = format!("ws://{}", serving.local_addr());

    let client = Client::builder(&url).build();
    // Messages from the server, by type.
    client.on("echo", |_, payload: Value| println!("echo: {payload}"))?;
    // A procedure the server may call on this device.
    client.register("client_sum", |_, args: Value| async move {
        let sum = args["a"].as_i64().unwrap_or(0) + args["b"].as_i64().unwrap_or(0);
        Ok::<_, RpcError>(sum)
    })?;

    let welcome = client
        .connect(json!("secret"), json!({"user_id": "alice"}))
        .await?;
    println!("welcome: {welcome}");

    let sum: i64 = client.call("add", &json!({"a": 1, "b": 2})).await?;
    println!("add: {sum}");

    match client.call::<Value, _>("fail_custom", &()).await {
        Err(CallError::Remote(error)) => {
            println!("fail_custom: {} {:?}", error.code, error.details)
        }
        other => println!("fail_custom: unexpected {other:?}"),
    }

    // The server calls our `client_sum` and returns its answer.
    let asked: i64 = client.call("ask_me", &()).await?;
    println!("ask_me: {asked}");

    client.send("echo", &json!({"hello": "world"}))?;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    client.close("wse.by-client").await;
    serving.shutdown().await;
    Ok(())
}
