//! The WSE wire protocol: frames, codecs, error codes, the standard HMAC challenge, and the
//! symmetric RPC engine that both `wse-server` and `wse-client` run on every connection.
//!
//! This crate opens no sockets. It is what a WSE peer needs to speak the protocol of the
//! JavaScript library `wse` 4.x byte for byte (see `PROTOCOL.md` in the repository).
//!
//! ```
//! use wse_core::{Json, Protocol, frame};
//!
//! let json: &dyn Protocol = &Json;
//! let bytes = json.encode("add", &serde_json::json!({"a": 1, "b": 2}), Some("k1")).unwrap();
//! assert_eq!(bytes, br#"["add",{"a":1,"b":2},"k1"]"#);
//!
//! let frame = json.unpack(br#"["~wse:response",3,"k1"]"#).unwrap();
//! assert_eq!(frame.kind, frame::RESPONSE);
//! assert_eq!(json.decode::<i64>(frame.payload).unwrap(), 3);
//! ```
//!
//! # Layout
//!
//! - The frame: [`frame`] (`[type, payload, stamp]` as [`RawFrame`], the reserved type names,
//!   [`Hi`], the payload of `~wse:hi`).
//! - Codecs: the [`Protocol`] trait, [`Json`] and [`MsgPack`], [`MessageKind`], and their
//!   errors [`PackError`], [`UnpackError`], [`PayloadError`].
//! - Errors: [`ErrorCode`] (the wire codes), [`ErrorObject`], [`CallError`], [`RpcError`],
//!   [`CloseReason`] and [`close_code`].
//! - The RPC engine of one connection: [`Session`] with its [`SessionConfig`], reporting to
//!   a [`Context`]; procedures and handlers by name in a [`Registry`]; [`NoArgs`].
//! - The standard HMAC challenge: [`HmacQuest`].
//! - [`outbox`]: a connection's bounded outbound queue, free while empty, and the close asked
//!   of it.
//! - `transport` (feature `transport`): `Link`, the socket driver both ends run, the
//!   heartbeat, frames to messages and the close codes.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `msgpack` | yes | the [`MsgPack`] codec (`wse-msgpack`) |
//! | `transport` | no | `transport`: the socket driver shared by server and client |

#![cfg_attr(docsrs, feature(doc_cfg))]

mod cra;
mod error;
pub mod frame;
pub mod outbox;
mod protocol;
mod registry;
mod session;
#[cfg(feature = "transport")]
pub mod transport;

pub use cra::{HmacQuest, now_millis};
pub use error::{CallError, CloseReason, ErrorCode, ErrorObject, RpcError, close_code};
pub use frame::{Hi, RawFrame};
#[cfg(feature = "msgpack")]
pub use protocol::MsgPack;
pub use protocol::{
    Json, MAX_DEPTH, MessageKind, PackError, PayloadError, PayloadVisitor, Protocol, UnpackError,
};
pub use registry::{NoArgs, RegisterError, Registry};
pub use session::{
    CallOutcome, Context, ProtocolViolation, Report, SendError, Session, SessionConfig, SessionHold,
};

/// Re-exported so a custom [`Protocol`] can name the erased serde traits without a dependency
/// of its own.
pub use erased_serde;
