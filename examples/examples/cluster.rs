//! Two nodes joined over Redis, as two processes behind a load balancer would be: alice's
//! phone is on node A and her laptop on node B; one send to alice from node B reaches both
//! once, and node B calls a procedure of her phone on node A.
//!
//! ```text
//! cargo run -p wse-examples --example cluster                      # Redis on 127.0.0.1:6379
//! REDIS_URL=redis://127.0.0.1:7000/ cargo run -p wse-examples --example cluster
//! ```

use std::time::Duration;

use serde_json::{Value, json};
use wse_client::Client;
use wse_redis::RedisConfig;
use wse_server::{Decision, Server};

/// A node: any string identity is accepted as that user, up to three devices each.
async fn node(redis: &str, prefix: &str) -> Result<(Server, String), Box<dyn std::error::Error>> {
    let cluster = RedisConfig::new(redis).prefix(prefix);
    let server = Server::builder(|handshake| async move {
        match handshake.identity.as_str() {
            Some(user) => Decision::accept(user, Value::Null),
            None => Decision::refuse(),
        }
    })
    .conn_per_user(3)
    .delivery(move |local| cluster.delivery(local))
    .build();
    // Joins the cluster (connects to Redis) before it serves. Dropping the listener's handle
    // leaves it serving; `Server::shutdown` stops it.
    let serving = server.bind("127.0.0.1:0").await?;
    Ok((server, format!("ws://{}", serving.local_addr())))
}

async fn device(
    url: &str,
    user: &str,
    name: &'static str,
) -> Result<Client, Box<dyn std::error::Error>> {
    let client = Client::builder(url).build();
    client.on("news", move |_, news: String| {
        println!("{name} got: {news}")
    })?;
    client.register("battery", move |_, _: Value| async move {
        Ok(json!({"device": name, "level": 87}))
    })?;
    client.connect(json!(user), json!({})).await?;
    Ok(client)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    // The example's own keys and channels on that Redis.
    let prefix = "wse-example";
    let (a, url_a) = node(&redis, prefix)
        .await
        .map_err(|error| format!("cannot join a cluster on {redis} (set REDIS_URL): {error}"))?;
    let (b, url_b) = node(&redis, prefix).await?;

    let phone = device(&url_a, "alice", "alice's phone (node A)").await?;
    let laptop = device(&url_b, "alice", "alice's laptop (node B)").await?;
    let devices: Vec<String> = b
        .devices("alice")
        .await?
        .iter()
        .map(ToString::to_string)
        .collect();
    println!("alice's devices, as node B sees them: {devices:?}");

    // From node B, to every device of alice wherever it is: each gets it once.
    b.send_to_user("alice", "news", &"hello from node B")?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Node B calls her phone, which node A holds.
    let phone_id = b.devices("alice").await?[0];
    let battery: Value = b.call(phone_id, "battery", &json!({})).await?;
    println!("node B asked the phone on node A: {battery}");

    for client in [phone, laptop] {
        client.close("wse.by-client").await;
    }
    // Leaves the cluster: its keys go with it.
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
