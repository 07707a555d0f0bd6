//! One user on two devices, another user on one: send to a device, to every device of a
//! user, to everyone.
//!
//! ```text
//! cargo run -p wse-examples --example multi_device
//! ```

use std::time::Duration;

use serde_json::{Value, json};
use wse_client::Client;
use wse_examples::{Auth, demo_server};

async fn device(
    url: &str,
    user: &str,
    name: &'static str,
) -> Result<Client, Box<dyn std::error::Error>> {
    let client = Client::builder(url).build();
    for kind in ["news", "only", "both"] {
        client.on(kind, move |_, payload: Value| {
            println!("{name} got {kind}: {payload}")
        })?;
    }
    client
        .connect(json!("secret"), json!({"user_id": user, "device": name}))
        .await?;
    Ok(client)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = demo_server(Auth::Plain);
    let serving = server.bind("127.0.0.1:0").await?;
    let url = format!("ws://{}", serving.local_addr());

    let phone = device(&url, "alice", "alice's phone").await?;
    let laptop = device(&url, "alice", "alice's laptop").await?;
    let bob = device(&url, "bob", "bob's phone").await?;

    for connection in server.connections_of("alice").await? {
        println!(
            "alice is on {} ({})",
            connection.id(),
            connection.meta()["device"]
        );
    }

    // `hey`: `only` to the sending device, `both` to every device of its user.
    phone.send("hey", &"from the phone")?;
    // To every device of alice, encoded once.
    server.send_to_user("alice", "news", &"for alice only")?;
    // To everyone.
    server.broadcast("news", &"for everyone")?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    for client in [phone, laptop, bob] {
        client.close("wse.by-client").await;
    }
    serving.shutdown().await;
    Ok(())
}
