//! A small chat: rooms, presence and private messages, with its server and two people in one
//! main.
//!
//! ```text
//! cargo run -p wse-examples --example chat
//! ```

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use wse_client::Client;
use wse_server::{
    Connection, Decision, DirectMessages, PresenceProcedures, Profile, ProfileUpdate,
    RoomProcedures, RpcError, Server,
};

/// The rooms anyone may join.
const ROOMS: [&str; 2] = ["lobby", "random"];

#[derive(Deserialize)]
struct Say {
    room: String,
    text: String,
}

fn chat_server() -> Result<Server, Box<dyn std::error::Error>> {
    let server = Server::builder(|handshake| async move {
        // A real server checks a token; this one takes the name it is given.
        let Some(name) = handshake.identity.as_str().filter(|n| !n.is_empty()) else {
            return Decision::refuse();
        };
        let alias = handshake.meta["alias"].as_str().unwrap_or(name).to_owned();
        Decision::accept(name, json!({"hello": alias}))
            .with_profile(Profile::new().with_alias(alias))
    })
    .conn_per_user(3)
    .room_procedures(
        RoomProcedures::new().authorize(|_, room, _| async move { ROOMS.contains(&room.as_str()) }),
    )
    .presence_procedures(PresenceProcedures::new())
    .direct_messages(DirectMessages::new().copy_to_sender(true))
    .build();

    // Says something to a room the caller is in, to everyone there but the caller's device.
    server.register("say", |conn: Connection, say: Say| async move {
        let server = conn.server();
        if !server
            .rooms_of(conn.id())
            .await?
            .iter()
            .any(|r| **r == say.room)
        {
            return Err(RpcError::new("chat.not-in-room"));
        }
        let said = json!({"room": say.room, "from": conn.user_id(), "text": say.text});
        Ok(server
            .to_room(&say.room)
            .except_connection(conn.id())
            .send("said", &said)?)
    })?;
    server.register("away", |conn: Connection, away: bool| async move {
        let update = ProfileUpdate {
            available: Some(!away),
            ..ProfileUpdate::default()
        };
        conn.server()
            .update_profile(conn.user_id(), &update)
            .await?;
        Ok(true)
    })?;
    Ok(server)
}

/// Someone in the chat, printing what reaches them and counting it on `seen`.
async fn person(
    url: &str,
    name: &'static str,
    alias: &str,
    seen: mpsc::Sender<()>,
) -> Result<Client, Box<dyn std::error::Error>> {
    let client = Client::builder(url).build();
    for kind in ["said", "dm", "presence"] {
        let seen = seen.clone();
        client.on(kind, move |_, payload: Value| {
            println!("{name} <- {kind}: {payload}");
            let _ = seen.try_send(());
        })?;
    }
    client.connect(json!(name), json!({"alias": alias})).await?;
    let online: Value = client.call("presence.subscribe", &json!({})).await?;
    println!("{name} sees online: {online}");
    Ok(client)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = chat_server()?;
    let serving = server.bind("127.0.0.1:0").await?;
    let url = format!("ws://{}", serving.local_addr());
    let (seen, mut arrivals) = mpsc::channel(64);

    let ann = person(&url, "ann", "Ann", seen.clone()).await?;
    let bob = person(&url, "bob", "Bob", seen).await?;
    for client in [&ann, &bob] {
        let joined: bool = client.call("rooms.join", &json!({"room": "lobby"})).await?;
        assert!(joined);
    }
    let refused = ann
        .call::<bool, _>("rooms.join", &json!({"room": "admins"}))
        .await;
    println!("ann joining admins: {refused:?}");

    ann.call::<usize, _>("say", &json!({"room": "lobby", "text": "hi all"}))
        .await?;
    let delivered: bool = bob
        .call(
            "dm.send",
            &json!({"to": "ann", "payload": "hi Ann, it's Bob"}),
        )
        .await?;
    println!("bob's private message delivered: {delivered}");
    bob.call::<bool, _>("away", &true).await?;
    let delivered: bool = ann
        .call("dm.send", &json!({"to": "bob", "payload": "still there?"}))
        .await?;
    println!("ann's private message to an away bob delivered: {delivered}");

    // ann's and bob's presence arrivals, the room message and the private message.
    for _ in 0..5 {
        if tokio::time::timeout(Duration::from_secs(2), arrivals.recv())
            .await
            .is_err()
        {
            break;
        }
    }
    for client in [ann, bob] {
        client.close("wse.by-client").await;
    }
    serving.shutdown().await;
    Ok(())
}
