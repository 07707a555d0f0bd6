//! Load generators for any server that speaks the WSE protocol: calls per second and their
//! latency, handshakes per second, fan-out, sends to a user. Every reply is checked. They are
//! the one home of the loads that `wse-bench` measures wse-rs with and that `wse bench` runs
//! against any server.
//!
//! ```
//! use std::time::Duration;
//! use serde_json::json;
//! use wse_load::{Call, Codec, Dial, Hello, Login, Rpc};
//!
//! # async fn run() -> Result<(), wse_load::LoadError> {
//! let dial = Dial {
//!     url: "ws://127.0.0.1:4200".into(),
//!     codec: Codec::Json,
//!     hello: Hello::Wse(Login::new(json!("secret"), json!({"user_id": "bench-{conn}"}))),
//! };
//! let load = Rpc {
//!     connections: 4,
//!     in_flight: 8,
//!     warmup: Duration::from_millis(200),
//!     duration: Duration::from_secs(2),
//!     call: Call::add(),
//! };
//! let run = wse_load::rpc(&dial, &load, None).await?;
//! println!("{:.0} calls/s", run.rate());
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - `load`: the loads, [`rpc`], [`handshakes`], [`fanout`], [`relay`] and [`hold`], and
//!   what they are given: a [`Dial`] (where, which [`Codec`], which [`Hello`] with which
//!   [`Login`]) and a shape ([`Rpc`] with its [`Call`], [`Fanout`] with its [`Audience`] and
//!   [`Trigger`], [`Relay`]). Connections are made by tokio-tungstenite ([`open`]).
//! - `lean`: WebSocket frames by hand on the raw socket, which the RPC callers, the fan-out
//!   receivers and the sends to a user speak once their connection is ready: calls built
//!   once as wire bytes (masked with a zero key), replies parsed and compared in place,
//!   nothing allocated per message; so that the generator takes as little as it can of the
//!   cores it shares with the server.
//! - `cpu`: CPU time of a server and of the generator itself, from `/proc` ([`Spent`]).
//! - `error`: [`LoadError`] and its [`ErrorKind`].
//!
//! The heavy loads run on a thread of their own with a current-thread runtime (see `rpc`),
//! so a caller's runtime may be of either flavour, but must allow blocking tasks.

mod cpu;
mod error;
mod lean;
mod load;

pub use cpu::Spent;
pub use error::{ErrorKind, LoadError};
pub use load::{
    Audience, Call, Codec, Dial, Fanout, Hello, Login, Progress, READ_BUFFER, Relay, RelayRun, Rpc,
    RpcRun, Trigger, Ws, close, fanout, handshakes, hold, open, relay, rpc,
};
