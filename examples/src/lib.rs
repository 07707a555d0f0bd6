//! The wse-rs demo application: the contract the README, the examples and the tests rely on.
//!
//! ```
//! # async fn run() -> std::io::Result<()> {
//! let server = wse_examples::demo_server(wse_examples::Auth::Plain);
//! let serving = server.bind("127.0.0.1:0").await?;
//! serving.shutdown().await;
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
//! ```
//!
//! # Layout
//!
//! - this file: [`demo_server`], the demo application (identify, procedures, messages), and
//!   [`demo_server_with`], the same with the operator's limits.
//! - `src/bin/demo.rs`: the `demo` binary, `cargo run -p wse-examples -- --port 4200`: the
//!   demo in an axum application on each of its two ports, with `/health` and `/metrics`;
//!   with `--redis URL`, each port a node of a cluster over Redis that other demo processes
//!   join.
//! - [`page`]: the demo page at `/` (`web/`), with the browser client (`clients/js`).
//! - [`tls`]: a self-signed certificate and the rustls configurations that use it.
//! - `examples/`: a client, several devices of one user, a custom codec, `wss://`.
//!
//! # The contract
//!
//! - identify: identity `"secret"` with a non-empty string `meta.user_id` is accepted as that
//!   user, welcome `{"cid": <user id>, "meta": <meta>}` (plus `"cra": true` behind the HMAC
//!   challenge, where identity `"secret"` has the secret `"s3cret"`); anything else is
//!   refused. `conn_per_user` = 2. JSON, and MessagePack when the client offers it.
//! - procedures: `add {a,b}`, `delay {ms, value}`, `fail`, `fail_custom`,
//!   `send_to_user {user, type, payload}`, `broadcast {type, payload}`, `ask_me` (calls the
//!   caller's `client_sum {"a": 20, "b": 22}`), `ask_user {user, a, b}` (calls
//!   `client_sum {a, b}` on the oldest device of `user`, wherever in the cluster it is
//!   connected, and answers with its answer; `app.user-offline` when the user has no device;
//!   the device's own error, or the call's failure, as it is), `drop_me {reason}`.
//! - messages: `echo` (the payload back as `echo`), `hey` (`only` to that device, `both` to
//!   every device of its user).
//! - rooms: the built-in `rooms.join {room}`, `rooms.leave {room}` (whether it was a
//!   member), `rooms.mine {}` (sorted), for rooms named `public-…` only (anything else is
//!   `wse.server.room.forbidden`); `join_user_room {room}` (the caller's user, all its devices
//!   and later ones, joins; true; at most 100 such rooms per user, `wse.server.room.limit`
//!   past them; room names up to 128 bytes); `room_send {room, type, payload, except}` with `except`
//!   `"none"`, `"connection"` or `"user"` (`[type, payload, null]` to each connection of the
//!   room once, less those; true); `room_members {room}` (the sorted user ids in it).
//! - presence: the built-in `presence.subscribe {}`, `presence.unsubscribe {}`,
//!   `presence.online {}`; `set_profile {alias?, available?}` (true). The alias defaults to
//!   the user id; everyone starts available.
//! - private messages: the built-in `dm.send {to, payload}`, no copy to the sender's other
//!   devices; a payload that is the string `"spam"` is refused with `app.dm-refused`.
//! - `whoami {}` → `{"user": <id>, "meta": <meta given at hi>}`, from the connection's data.
//! - the built-in `logout {all}`: closes this device, or all of its user's, with 1000
//!   `wse.logout`.

use std::time::Duration;

pub mod page;
pub mod tls;

use serde::Deserialize;
use serde_json::{Value, json};
use wse_server::{
    Builder, Connection, Decision, DeliveryError, DirectMessages, ErrorCode, Handshake,
    HmacChallenge, Json, Logout, MsgPack, NoArgs, PresenceProcedures, ProfileUpdate,
    RoomProcedures, RpcError, Server,
};

/// The identity the demo accepts.
pub const IDENTITY: &str = "secret";
/// The HMAC secret of [`IDENTITY`] on the challenge port.
pub const HMAC_SECRET: &str = "s3cret";

/// The prefix of the rooms clients may join and leave themselves.
pub const PUBLIC_ROOMS: &str = "public-";

/// The longest room name the demo takes, in bytes.
const MAX_ROOM_NAME: usize = 128;

/// How many rooms a user of the demo may join as a whole.
const MAX_USER_ROOMS: usize = 100;

/// Who a demo connection is, parsed once at identify: what `whoami` answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoUser {
    /// The user id.
    pub user: String,
    /// The meta given at hi.
    pub meta: Value,
}

/// How the demo authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// identify only.
    Plain,
    /// The built-in HMAC challenge, then identify.
    Hmac,
}

/// The demo application, ready to bind, with the library's limits (and two devices per user).
pub fn demo_server(auth: Auth) -> Server {
    demo_server_with(auth, std::convert::identity)
}

/// The demo application with settings of the operator's: `configure` gets the demo's builder,
/// everything of the contract already set, and may change what the contract leaves open (the
/// limits, the Origin allow-list, the trusted proxies, `conn_per_user`), as the `demo` binary
/// does with its flags. Procedures and handlers are registered after it, so they stay the
/// contract's.
///
/// ```
/// use wse_examples::{Auth, demo_server_with};
///
/// let _server = demo_server_with(Auth::Plain, |builder| {
///     builder.max_connections(100).allow_origin("https://app.example")
/// });
/// ```
///
/// # Panics
/// If `configure` does, as the [`Builder`] setters do on a value out of their range.
pub fn demo_server_with(auth: Auth, configure: impl FnOnce(Builder) -> Builder) -> Server {
    let mut builder = Server::builder(identify)
        .protocol(Json)
        .add_protocol(MsgPack)
        .conn_per_user(2)
        .room_procedures(
            RoomProcedures::new()
                .authorize(|_, room, _| async move { room.starts_with(PUBLIC_ROOMS) }),
        )
        .presence_procedures(PresenceProcedures::new())
        .direct_messages(DirectMessages::new().filter(|_, message| async move {
            if message.payload == "spam" {
                return Err(RpcError::new("app.dm-refused"));
            }
            Ok(())
        }))
        .logout(Logout::new());
    if auth == Auth::Hmac {
        builder = builder.challenge(HmacChallenge::new(|identity| async move {
            (identity == IDENTITY).then(|| HMAC_SECRET.as_bytes().to_vec())
        }));
    }
    let server = configure(builder).build();
    register(&server);
    server
}

async fn identify(handshake: Handshake) -> Decision {
    let user_id = handshake.meta.get("user_id").and_then(Value::as_str);
    match (handshake.identity.as_str(), user_id) {
        (Some(IDENTITY), Some(user_id)) if !user_id.is_empty() => {
            let mut welcome = json!({"cid": user_id, "meta": handshake.meta});
            if handshake.challenge.is_some() {
                welcome["cra"] = json!(true);
            }
            let data = DemoUser {
                user: user_id.to_owned(),
                meta: handshake.meta.clone(),
            };
            Decision::accept(user_id, welcome).with_data(data)
        }
        _ => Decision::refuse(),
    }
}

#[derive(Deserialize)]
struct Add {
    a: serde_json::Number,
    b: serde_json::Number,
}

#[derive(Deserialize)]
struct Delay {
    #[serde(default)]
    ms: u64,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
struct ToUser {
    user: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Value,
}

#[derive(Deserialize)]
struct AskUser {
    user: String,
    a: serde_json::Number,
    b: serde_json::Number,
}

#[derive(Deserialize)]
struct ToAll {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Value,
}

#[derive(Deserialize)]
struct Room {
    room: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Exclude {
    None,
    Connection,
    User,
}

#[derive(Deserialize)]
struct RoomSend {
    room: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Value,
    #[serde(default = "no_exclusion")]
    except: Exclude,
}

fn no_exclusion() -> Exclude {
    Exclude::None
}

#[derive(Deserialize)]
struct DropMe {
    #[serde(default)]
    reason: String,
}

/// Integers stay integers (`1 + 2` is `3`, not `3.0`); anything else adds as floats.
fn add(a: &serde_json::Number, b: &serde_json::Number) -> Value {
    match (a.as_i64(), b.as_i64()) {
        (Some(a), Some(b)) if a.checked_add(b).is_some() => json!(a + b),
        _ => json!(a.as_f64().unwrap_or(f64::NAN) + b.as_f64().unwrap_or(f64::NAN)),
    }
}

/// A send the caller asked for that cannot be made (an empty or reserved type, say) is the
/// caller's mistake: it gets `wse.server.rp.invalid-payload` and the reason. A delivery engine
/// that failed is not: that is `wse.server.rp.failed`.
fn refused(error: DeliveryError) -> RpcError {
    match error {
        DeliveryError::Message(error) => {
            RpcError::code(ErrorCode::RpInvalidPayload).with_message(error.to_string())
        }
        other => RpcError::unexpected(other),
    }
}

fn register(server: &Server) {
    let registered = [
        server.register("add", |_: Connection, args: Add| async move {
            Ok(add(&args.a, &args.b))
        }),
        server.register("delay", |_: Connection, args: Delay| async move {
            tokio::time::sleep(Duration::from_millis(args.ms.min(5000))).await;
            Ok(args.value)
        }),
        server.register("fail", |_: Connection, _: Value| async move {
            Err::<(), _>(RpcError::unexpected("the demo fails on purpose"))
        }),
        server.register("fail_custom", |_: Connection, _: Value| async move {
            Err::<(), _>(
                RpcError::new("app.custom-failure").with_details(json!({"reason": "custom"})),
            )
        }),
        server.register(
            "send_to_user",
            |conn: Connection, args: ToUser| async move {
                conn.server()
                    .send_to_user(&args.user, &args.kind, &args.payload)
                    .map_err(refused)?;
                Ok(true)
            },
        ),
        server.register("broadcast", |conn: Connection, args: ToAll| async move {
            conn.server()
                .broadcast(&args.kind, &args.payload)
                .map_err(refused)?;
            Ok(true)
        }),
        server.register("ask_me", |conn: Connection, _: Value| async move {
            // The client's own error (or the call's failure) reaches the caller as it is.
            conn.call::<Value, _>("client_sum", &json!({"a": 20, "b": 22}))
                .await
                .map_err(RpcError::forward)
        }),
        server.register("ask_user", |conn: Connection, args: AskUser| async move {
            let server = conn.server();
            // Oldest first, on every node of a cluster.
            let devices = server.devices(&args.user).await.map_err(refused)?;
            let device = *devices.first().ok_or_else(|| {
                RpcError::new("app.user-offline")
                    .with_message(format!("{} has no device connected", args.user))
            })?;
            // As `ask_me`: the device's own error (or the call's failure, a device that left
            // meanwhile among them) reaches the caller as it is.
            server
                .call::<Value, _>(device, "client_sum", &json!({"a": args.a, "b": args.b}))
                .await
                .map_err(RpcError::forward)
        }),
        server.register("drop_me", |conn: Connection, args: DropMe| async move {
            conn.close(args.reason);
            Ok(())
        }),
        server.register(
            "join_user_room",
            |conn: Connection, args: Room| async move {
                // What a client may ask of the server's memory stays bounded, as for its own
                // joins.
                if args.room.len() > MAX_ROOM_NAME {
                    return Err(RpcError::code(ErrorCode::RpInvalidPayload)
                        .with_message(format!("a room name is at most {MAX_ROOM_NAME} bytes")));
                }
                let server = conn.server();
                let rooms = server.user_rooms(conn.user_id()).await.map_err(refused)?;
                if rooms.len() >= MAX_USER_ROOMS && !rooms.iter().any(|r| **r == *args.room) {
                    return Err(RpcError::code(ErrorCode::RoomLimit));
                }
                // Already in it is fine: the user is in the room either way.
                server
                    .join_user(conn.user_id(), &args.room)
                    .await
                    .map_err(refused)?;
                Ok(true)
            },
        ),
        server.register("room_send", |conn: Connection, args: RoomSend| async move {
            let recipients = conn.server().to_room(&args.room);
            let recipients = match args.except {
                Exclude::None => recipients,
                Exclude::Connection => recipients.except_connection(conn.id()),
                Exclude::User => recipients.except_user(conn.user_id()),
            };
            recipients
                .send(&args.kind, &args.payload)
                .map_err(refused)?;
            Ok(true)
        }),
        server.register("room_members", |conn: Connection, args: Room| async move {
            conn.server().room_users(&args.room).await.map_err(refused)
        }),
        server.register(
            "set_profile",
            |conn: Connection, update: ProfileUpdate| async move {
                conn.server()
                    .update_profile(conn.user_id(), &update)
                    .await
                    .map_err(refused)?;
                Ok(true)
            },
        ),
        server.register("whoami", |conn: Connection, NoArgs| async move {
            conn.data::<DemoUser>()
                .cloned()
                .ok_or_else(|| RpcError::unexpected("a demo connection always has its user"))
        }),
    ];
    for result in registered {
        if let Err(error) = result {
            unreachable!("the demo registers each name once: {error}");
        }
    }
    let handlers = [
        server.on("echo", |conn: Connection, payload: Value| {
            let _ = conn.send("echo", &payload);
        }),
        server.on("hey", |conn: Connection, payload: Value| {
            let _ = conn.send("only", &payload);
            let _ = conn.server().send_to_user(conn.user_id(), "both", &payload);
        }),
    ];
    for result in handlers {
        if let Err(error) = result {
            unreachable!("the demo's message types are valid: {error}");
        }
    }
}

/// The README's code, compiled as doc tests so it stays true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
