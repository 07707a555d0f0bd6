//! The WSE server: authenticated, RPC-first WebSocket service whose users are people, each on
//! several devices at once. Wire-compatible with the JavaScript library `wse` 4.x.
//!
//! ```
//! use serde::Deserialize;
//! use serde_json::json;
//! use wse_server::{Connection, Decision, NoArgs, Server};
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
//! server.on("ping", |conn: Connection, _: NoArgs| { let _ = conn.send("pong", &()); }).unwrap();
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
//! - Serving: [`Server`] (the handle), its [`Builder`] with every limit and its default,
//!   [`Serving`] (one listener), [`Server::serve_io`] for streams accepted elsewhere (TLS),
//!   [`Server::shutdown`].
//! - Who may connect: identify sees a [`Handshake`] and returns a [`Decision`]; a
//!   [`Challenge`] (such as [`HmacChallenge`]) may run first.
//! - After the welcome: a [`Connection`] per device, with its [`ConnectionId`] (node and
//!   counter, [`NodeId`]); procedures and handlers registered on the server run with it.
//! - Delivery: [`Delivery`], the seam every send ([`Target`], [`Except`], [`Packed`]),
//!   membership change ([`Admission`], [`Released`], [`UserLimit`], [`Overflow`]) and query
//!   goes through; [`LocalDelivery`] is this node's index and the default; [`Recipients`]
//!   (from [`Server::to`]) addresses them.
//! - What the server tells the application: [`Events`] of [`Event`], [`Rejection`],
//!   [`ServerError`].
//! - Limits: [`RateLimit`], [`AuthFailureLimit`], [`Heartbeat`], and the close codes
//!   [`RATE_LIMITED`] and [`SLOW_CONSUMER`].
//! - Rooms, presence, private messages, logout: [`Server::join_user`] and the other room
//!   methods, [`Presence`], [`Profile`], and the built-in procedures [`RoomProcedures`],
//!   [`PresenceProcedures`], [`DirectMessages`], [`Logout`].
//! - Logs and metrics: a `tracing` span per connection (`wse_connection`) and per call
//!   (`wse_call`); counters and gauges through the `metrics` facade (`wse_connections`,
//!   `wse_handshakes_total`, ...; see the README), whose recorder is installed before the
//!   server is built.
//!
//! The RPC engine itself (routing, pending calls, procedures) and the socket driver are
//! `wse-core`'s, which the client runs too.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `msgpack` | yes | [`MsgPack`], the `wse-msgpack` codec |
//! | `axum` | no | `Server::route`: the endpoint at a path of an axum `Router` |

mod auth;
mod builder;
mod builtin;
mod connection;
mod delivery;
mod events;
mod handshake;
mod limits;
mod metrics;
#[cfg(feature = "axum")]
mod mount;
mod presence;
mod server;
mod serving;
mod task;
mod upgrade;

pub use auth::{Accept, Answered, Challenge, Decision, Handshake, HmacChallenge};
pub use builder::Builder;
pub use builtin::{
    DM_MESSAGE, DirectMessage, DirectMessages, Logout, PresenceProcedures, RoomAction,
    RoomProcedures,
};
pub use connection::{Connection, ConnectionId, NodeId, ParseIdError};
pub use delivery::{
    Admission, Delivery, DeliveryError, Except, Joined, LocalDelivery, Overflow, Packed, Released,
    Target, UserLimit,
};
pub use events::{Event, Events, Rejection, ServerError};
pub use limits::{AuthFailureLimit, RATE_LIMITED, RateLimit};
pub use presence::{PRESENCE_MESSAGE, Presence, Profile, ProfileUpdate};
pub use server::{Recipients, Server};
pub use serving::Serving;
pub use upgrade::{UpgradeDecision, UpgradeRequest};

/// An address or a network, as [`Builder::trusted_proxy`] takes it.
pub use ipnet::IpNet;

/// The `http` crate's types, as [`UpgradeRequest`] carries them.
pub use tokio_tungstenite::tungstenite::http;
#[cfg(feature = "msgpack")]
pub use wse_core::MsgPack;
pub use wse_core::outbox::Close;
pub use wse_core::transport::{Heartbeat, SLOW_CONSUMER};
pub use wse_core::{
    CallError, CloseReason, ErrorCode, ErrorObject, Json, NoArgs, Protocol, RegisterError,
    RpcError, SendError,
};
