//! The WSE client: connect with an identity, call the server's procedures, exchange
//! messages, serve procedures the server calls, solve challenges, reconnect.
//! Wire-compatible with servers of the JavaScript library `wse` 4.x.
//!
//! ```
//! use serde_json::json;
//! use wse_client::{Client, Reconnect};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder("ws://127.0.0.1:4200")
//!     .reconnect(Reconnect::default())
//!     .build();
//! client.on("echo", |_, text: String| println!("server says {text}"))?;
//! client.register("client_sum", |_, (a, b): (i64, i64)| async move { Ok(a + b) })?;
//!
//! let welcome = client.connect(json!("secret"), json!({"user_id": "alice"})).await?;
//! let sum: i64 = client.call("add", &json!({"a": 1, "b": 2})).await?;
//! client.close("wse.by-client").await;
//! # let _ = (welcome, sum);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`Client`]: connect, call, send, register procedures the server calls (and observe its
//!   calls of others, [`Client::on_unregistered_call`]), handle messages by type (and the
//!   rest with one fallback, [`Client::on_any`]), status, close, jump; built by a [`Builder`]
//!   with every setting and its default.
//! - What it tells the application: [`Status`], [`ClientEvent`], [`ConnectError`].
//! - [`Reconnect`]: the backoff policy and which close codes retry.
//!
//! The RPC engine and the socket driver are `wse-core`'s, which the server runs too.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `msgpack` | yes | [`MsgPack`], the `wse-msgpack` codec |
//! | `rustls` | no | `wss://` URLs over rustls (ring); `Builder::tls_config` for your own roots |

#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod client;
mod driver;
mod handshake;
mod reconnect;

pub use builder::Builder;
pub use client::{Client, ClientEvent, ConnectError, Status};
pub use reconnect::Reconnect;

#[cfg(feature = "msgpack")]
pub use wse_core::MsgPack;
pub use wse_core::transport::Heartbeat;
pub use wse_core::{
    CallError, CloseReason, ErrorCode, ErrorObject, Json, NoArgs, Protocol, RegisterError,
    RpcError, SendError,
};
