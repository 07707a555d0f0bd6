//! The WSE server: authenticated, RPC-first WebSocket service whose users are people, each on
//! several devices at once. Wire-compatible with the JavaScript library `wse` 4.x.
//!
//! ```
//! use serde::Deserialize;
//! use serde_json::json;
//! use wse_server::{Connection, Decision, Server};
//!
//! #[derive(Deserialize)]
//! struct Add { a: i64, b: i64 }
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = Server::builder(|handshake| async move {
//!     match handshake.identity.as_str() {
//!         Some(token) if token.starts_with("user-") => Decision::accept(token, json!({"hello": token})),
//!         _ => Decision::refuse(),
//!     }
//! })
//! .conn_per_user(3)
//! .build();
//!
//! server.register("add", |_: Connection, args: Add| async move { Ok(args.a + args.b) }).unwrap();
//! server.on("ping", |conn: Connection, _: ()| { let _ = conn.send("pong", &()); }).unwrap();
//!
//! let serving = server.bind("127.0.0.1:0").await?;
//! println!("listening on {}", serving.local_addr());
//! serving.shutdown().await;
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
//! ```
//!
//! # Layout
//!
//! - `server`: [`Server`] (the handle), its [`Builder`] with every limit, [`Serving`].
//! - `connection`: the [`Connection`] handle and its [`ConnectionId`].
//! - `handshake`: admission, upgrade and codec negotiation, `~wse:hi`, the challenge,
//!   identify, the welcome.
//! - `task`: the connection task, from the handshake through serving to the closing
//!   handshake; the socket itself is driven by `wse_core::transport::Link`, as on the client.
//! - `auth`: [`Handshake`], [`Decision`], the [`Challenge`] hook and [`HmacChallenge`].
//! - `users`: user id → connections, with the `conn_per_user` eviction.
//! - `delivery`: the seam for sends to a connection, a user or everyone ([`Delivery`]).
//! - `events`: [`Event`], [`Rejection`], [`ServerError`].
//! - `limits`: connections in total and per address, failed authentications per address,
//!   each connection's inbound [`RateLimit`].
//!
//! The RPC engine itself (routing, pending calls, procedures) is `wse_core::Session`, which the
//! client runs too.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `msgpack` | yes | [`MsgPack`], the `wse-msgpack` codec |

mod auth;
mod connection;
mod delivery;
mod events;
mod handshake;
mod limits;
mod server;
mod task;
mod users;

pub use auth::{Answered, Challenge, Decision, Handshake, HmacChallenge};
pub use connection::{Connection, ConnectionId};
pub use delivery::{Delivery, LocalDelivery, Packed};
pub use events::{Event, Events, Rejection, ServerError};
pub use limits::{AuthFailureLimit, RATE_LIMITED, RateLimit};
pub use server::{Builder, Server, Serving};

#[cfg(feature = "msgpack")]
pub use wse_core::MsgPack;
pub use wse_core::outbox::Close;
pub use wse_core::transport::{Heartbeat, SLOW_CONSUMER};
pub use wse_core::{
    CallError, CloseReason, ErrorCode, ErrorObject, Json, Protocol, RegisterError, RpcError,
    SendError,
};
