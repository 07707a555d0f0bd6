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
//! - this file: [`demo_server`], the demo application (identify, procedures, messages).
//! - `src/bin/demo.rs`: the `demo` binary, `cargo run -p wse-examples -- --port 4200`.
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
//!   caller's `client_sum {"a": 20, "b": 22}`), `drop_me {reason}`.
//! - messages: `echo` (the payload back as `echo`), `hey` (`only` to that device, `both` to
//!   every device of its user).

use std::time::Duration;

pub mod tls;

use serde::Deserialize;
use serde_json::{Value, json};
use wse_server::{
    Connection, Decision, DeliveryError, ErrorCode, Handshake, HmacChallenge, Json, MsgPack,
    RpcError, Server,
};

/// The identity the demo accepts.
pub const IDENTITY: &str = "secret";
/// The HMAC secret of [`IDENTITY`] on the challenge port.
pub const HMAC_SECRET: &str = "s3cret";

/// How the demo authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// identify only.
    Plain,
    /// The built-in HMAC challenge, then identify.
    Hmac,
}

/// The demo application, ready to bind.
pub fn demo_server(auth: Auth) -> Server {
    let mut builder = Server::builder(identify)
        .protocol(Json)
        .add_protocol(MsgPack)
        .conn_per_user(2);
    if auth == Auth::Hmac {
        builder = builder.challenge(HmacChallenge::new(|identity| async move {
            (identity == IDENTITY).then(|| HMAC_SECRET.as_bytes().to_vec())
        }));
    }
    let server = builder.build();
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
            Decision::accept(user_id, welcome)
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
struct ToAll {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Value,
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
        server.register("drop_me", |conn: Connection, args: DropMe| async move {
            conn.close(args.reason);
            Ok(())
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
