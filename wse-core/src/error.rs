//! Error codes, the wire error object, the errors of calls and procedures, close reasons.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The error codes of the WSE protocol (`PROTOCOL.md`), as sent on the wire.
///
/// Applications add their own codes (any string); [`ErrorObject::code`] holds either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `wse.client.rp.timeout`: no response within the call timeout.
    RpTimeout,
    /// `wse.client.rp.disconnect`: the connection closed while the call was pending.
    RpDisconnect,
    /// `wse.client.not-ready`: call or send before the connection is ready.
    NotReady,
    /// `wse.client.already-connected`: connect while connected.
    AlreadyConnected,
    /// `wse.client.ws-error`: transport error on the client.
    WsError,
    /// `wse.client.invalid-cra-handler`: the challenge solver failed.
    InvalidCraHandler,
    /// `wse.not-authorized`: authentication refused.
    NotAuthorized,
    /// `wse.server.rp.failed`: the procedure failed unexpectedly.
    RpFailed,
    /// `wse.server.rp.not-registered`: no such procedure.
    RpNotRegistered,
    /// `wse.server.rp.already-registered`: a procedure name registered twice.
    RpAlreadyRegistered,
    /// `wse.server.rp.invalid-payload` (**extension**): the call's payload does not fit the
    /// procedure's argument type.
    RpInvalidPayload,
    /// `wse.server.rp.too-many-calls` (**extension**): the connection already has the maximum
    /// number of calls running; the call was not started.
    RpTooManyCalls,
    /// `wse.client.rp.too-many-pending` (**extension**): this side already waits for the
    /// maximum number of answers on the connection; the call was not sent.
    RpTooManyPending,
    /// `wse.server.rate-limited` (**extension**): the connection sends faster than its rate
    /// limit; the frame was not processed.
    RateLimited,
    /// `wse.server.protocol-violation`: a frame breaks the protocol.
    ProtocolViolation,
    /// `wse.server.msg-processing-error`: a frame could not be decoded.
    MsgProcessingError,
    /// `wse.server.connection-error`: transport error on the server.
    ConnectionError,
    /// `wse.server.client.connection-missing`: no such connection.
    ConnectionMissing,
    /// `wse.server.room.forbidden` (**extension**): the server does not let this connection
    /// join (or leave) that room.
    RoomForbidden,
    /// `wse.server.room.limit` (**extension**): the connection is already in as many rooms as
    /// the server allows one connection.
    RoomLimit,
}

impl ErrorCode {
    /// Every code, for look-ups.
    pub const ALL: [ErrorCode; 20] = [
        Self::RpTimeout,
        Self::RpDisconnect,
        Self::NotReady,
        Self::AlreadyConnected,
        Self::WsError,
        Self::InvalidCraHandler,
        Self::NotAuthorized,
        Self::RpFailed,
        Self::RpNotRegistered,
        Self::RpAlreadyRegistered,
        Self::RpInvalidPayload,
        Self::RpTooManyCalls,
        Self::RpTooManyPending,
        Self::RateLimited,
        Self::ProtocolViolation,
        Self::MsgProcessingError,
        Self::ConnectionError,
        Self::ConnectionMissing,
        Self::RoomForbidden,
        Self::RoomLimit,
    ];

    /// The code as it travels on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RpTimeout => "wse.client.rp.timeout",
            Self::RpDisconnect => "wse.client.rp.disconnect",
            Self::NotReady => "wse.client.not-ready",
            Self::AlreadyConnected => "wse.client.already-connected",
            Self::WsError => "wse.client.ws-error",
            Self::InvalidCraHandler => "wse.client.invalid-cra-handler",
            Self::NotAuthorized => "wse.not-authorized",
            Self::RpFailed => "wse.server.rp.failed",
            Self::RpNotRegistered => "wse.server.rp.not-registered",
            Self::RpAlreadyRegistered => "wse.server.rp.already-registered",
            Self::RpInvalidPayload => "wse.server.rp.invalid-payload",
            Self::RpTooManyCalls => "wse.server.rp.too-many-calls",
            Self::RpTooManyPending => "wse.client.rp.too-many-pending",
            Self::RateLimited => "wse.server.rate-limited",
            Self::ProtocolViolation => "wse.server.protocol-violation",
            Self::MsgProcessingError => "wse.server.msg-processing-error",
            Self::ConnectionError => "wse.server.connection-error",
            Self::ConnectionMissing => "wse.server.client.connection-missing",
            Self::RoomForbidden => "wse.server.room.forbidden",
            Self::RoomLimit => "wse.server.room.limit",
        }
    }

    /// The protocol code spelled `code`, if it is one.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error object of `~wse:response-err`: `{"code", "message"?, "details"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// A protocol code ([`ErrorCode`]) or an application's own.
    pub code: String,
    /// A human-readable message, never internal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whatever the callee attached; when it is an object, the callee adds `"rpc": <name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl ErrorObject {
    /// An error object with only a code.
    pub fn new(code: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: None,
            details: None,
        }
    }

    /// The protocol code, when `code` is one of the protocol's.
    pub fn protocol_code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }

    /// Adds `"rpc": procedure` to object details, as the JS library does.
    pub(crate) fn tag_procedure(mut self, procedure: &str) -> Self {
        if let Some(Value::Object(details)) = &mut self.details {
            details
                .entry("rpc")
                .or_insert_with(|| Value::String(procedure.to_owned()));
        }
        self
    }
}

impl From<ErrorCode> for ErrorObject {
    fn from(code: ErrorCode) -> Self {
        Self::new(code.as_str())
    }
}

impl fmt::Display for ErrorObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)?;
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

/// How a call from this side failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No response within the call's timeout (`wse.client.rp.timeout`). The connection stays.
    #[error("{}: no response in time", ErrorCode::RpTimeout)]
    Timeout,
    /// The connection closed while the call was pending, or was already closed
    /// (`wse.client.rp.disconnect`).
    #[error("{}: the connection closed", ErrorCode::RpDisconnect)]
    Disconnected,
    /// The client is not connected (`wse.client.not-ready`).
    #[error("{}: not connected", ErrorCode::NotReady)]
    NotReady,
    /// The other side answered with an error; code and details are as it sent them.
    #[error("remote error {0}")]
    Remote(ErrorObject),
    /// This side already waits for `max_pending_calls` answers on the connection
    /// (`wse.client.rp.too-many-pending`): nothing was sent; the connection stays.
    #[error("{code}: too many calls waiting for an answer", code = ErrorCode::RpTooManyPending)]
    TooManyPending,
    /// The procedure name is empty or reserved (`~wse:…`): nothing was sent.
    #[error("{code}: invalid procedure name {0:?}", code = ErrorCode::RpNotRegistered)]
    InvalidName(String),
    /// The arguments could not be encoded: nothing was sent.
    #[error("cannot encode the call: {0}")]
    Encode(String),
    /// The result arrived but does not fit the expected type.
    #[error("{code}: result does not fit the expected type: {0}", code = ErrorCode::MsgProcessingError)]
    Decode(String),
}

impl CallError {
    /// The wire code this error stands for.
    pub fn code(&self) -> &str {
        match self {
            Self::Timeout => ErrorCode::RpTimeout.as_str(),
            Self::Disconnected => ErrorCode::RpDisconnect.as_str(),
            Self::NotReady => ErrorCode::NotReady.as_str(),
            Self::TooManyPending => ErrorCode::RpTooManyPending.as_str(),
            Self::Remote(object) => &object.code,
            Self::InvalidName(_) => ErrorCode::RpNotRegistered.as_str(),
            Self::Encode(_) | Self::Decode(_) => ErrorCode::MsgProcessingError.as_str(),
        }
    }

    /// The callee's error object, when the other side answered with one.
    pub fn remote(&self) -> Option<&ErrorObject> {
        match self {
            Self::Remote(object) => Some(object),
            _ => None,
        }
    }
}

/// How a procedure fails: with an application error that reaches the caller as sent, or
/// unexpectedly.
///
/// Any `std::error::Error` converts into an unexpected failure, so `?` works inside a
/// procedure; the caller then sees only `wse.server.rp.failed`, while the error itself is
/// reported on this side. (That blanket conversion is why `RpcError` is not itself a
/// `std::error::Error`.)
///
/// ```
/// use wse_core::RpcError;
/// use serde_json::json;
///
/// let app = RpcError::new("app.out-of-stock").with_details(json!({"sku": 7}));
/// assert_eq!(app.to_object("buy").details, Some(json!({"sku": 7, "rpc": "buy"})));
///
/// let parse: Result<u8, _> = "x".parse::<u8>();
/// let unexpected = RpcError::from(parse.unwrap_err());
/// assert_eq!(unexpected.to_object("buy").code, "wse.server.rp.failed");
/// ```
pub struct RpcError(RpcErrorKind);

enum RpcErrorKind {
    Object(ErrorObject),
    Unexpected(Box<dyn std::error::Error + Send + Sync>),
    Panicked,
}

impl RpcError {
    /// An application error with `code`; the caller sees the code as sent.
    pub fn new(code: impl Into<String>) -> Self {
        Self(RpcErrorKind::Object(ErrorObject::new(code)))
    }

    /// An application error from a complete error object.
    pub fn from_object(object: ErrorObject) -> Self {
        Self(RpcErrorKind::Object(object))
    }

    /// A protocol error code.
    pub fn code(code: ErrorCode) -> Self {
        Self::new(code.as_str())
    }

    /// An unexpected failure: reported on this side; the caller sees only
    /// `wse.server.rp.failed`.
    pub fn unexpected(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(RpcErrorKind::Unexpected(error.into()))
    }

    pub(crate) fn panicked() -> Self {
        Self(RpcErrorKind::Panicked)
    }

    /// Passes on how a call to the other side failed, as this procedure's own error: the
    /// peer's error object (code, message, details) as the peer sent it, or the code of the
    /// call's failure on this side (`wse.client.rp.timeout`, `wse.client.rp.disconnect`, ...).
    /// `?` on a [`CallError`] would make it an unexpected failure instead.
    ///
    /// ```
    /// use wse_core::{CallError, ErrorObject, RpcError};
    ///
    /// let refused = CallError::Remote(ErrorObject::new("app.declined"));
    /// assert_eq!(RpcError::forward(refused).to_object("ask").code, "app.declined");
    /// assert_eq!(RpcError::forward(CallError::Timeout).to_object("ask").code, "wse.client.rp.timeout");
    /// ```
    pub fn forward(error: CallError) -> Self {
        match error {
            CallError::Remote(object) => Self::from_object(object),
            // This side's own failure: its code only, as for any error sent to a peer.
            other => Self::new(other.code()),
        }
    }

    /// Sets the message the caller sees (application errors only).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        if let RpcErrorKind::Object(object) = &mut self.0 {
            object.message = Some(message.into());
        }
        self
    }

    /// Sets the details the caller sees (application errors only).
    pub fn with_details(mut self, details: impl Into<Value>) -> Self {
        if let RpcErrorKind::Object(object) = &mut self.0 {
            object.details = Some(details.into());
        }
        self
    }

    /// Whether this is an unexpected failure (an error converted with `?`, or a panic).
    pub fn is_unexpected(&self) -> bool {
        !matches!(self.0, RpcErrorKind::Object(_))
    }

    /// The error object sent to the caller of `procedure`. Unexpected failures carry no
    /// internal detail: only the code, a fixed message and the procedure name.
    pub fn to_object(&self, procedure: &str) -> ErrorObject {
        match &self.0 {
            RpcErrorKind::Object(object) => object.clone().tag_procedure(procedure),
            RpcErrorKind::Unexpected(_) | RpcErrorKind::Panicked => ErrorObject {
                code: ErrorCode::RpFailed.as_str().to_owned(),
                message: Some("procedure failed".to_owned()),
                details: Some(serde_json::json!({ "rpc": procedure })),
            },
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for RpcError {
    fn from(error: E) -> Self {
        Self::unexpected(error)
    }
}

impl fmt::Debug for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            RpcErrorKind::Object(object) => f.debug_tuple("RpcError").field(object).finish(),
            RpcErrorKind::Unexpected(error) => f.debug_tuple("Unexpected").field(error).finish(),
            RpcErrorKind::Panicked => f.write_str("Panicked"),
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            RpcErrorKind::Object(object) => object.fmt(f),
            RpcErrorKind::Unexpected(error) => write!(f, "unexpected failure: {error}"),
            RpcErrorKind::Panicked => f.write_str("the procedure panicked"),
        }
    }
}

/// The close reasons of the protocol (close code 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// `wse.not-authorized`: identify refused.
    NotAuthorized,
    /// `wse.protocol-error`: protocol violation or undecodable frame.
    ProtocolError,
    /// `wse.clients-concurrency`: the user exceeded `conn_per_user`; the oldest connection goes.
    ClientsConcurrency,
    /// `wse.by-client`: the client closed on purpose.
    ByClient,
    /// `wse.by-server`: the server dropped the connection or user.
    ByServer,
    /// `wse.logout` (**extension**): the user logged out this device or all of them; clients
    /// do not reconnect.
    Logout,
}

impl CloseReason {
    /// The reason string sent in the close frame.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotAuthorized => "wse.not-authorized",
            Self::ProtocolError => "wse.protocol-error",
            Self::ClientsConcurrency => "wse.clients-concurrency",
            Self::ByClient => "wse.by-client",
            Self::ByServer => "wse.by-server",
            Self::Logout => "wse.logout",
        }
    }

    /// The protocol reason spelled `reason`, if it is one.
    pub fn parse(reason: &str) -> Option<Self> {
        [
            Self::NotAuthorized,
            Self::ProtocolError,
            Self::ClientsConcurrency,
            Self::ByClient,
            Self::ByServer,
            Self::Logout,
        ]
        .into_iter()
        .find(|r| r.as_str() == reason)
    }

    /// Whether a close that came before the welcome, with `code` and `reason`, refuses the
    /// connection (rather than breaking it): `wse.not-authorized` with any code, or code 1000
    /// with an application's own reason. An application that turns a connection away says
    /// why and closes with 1000 so that clients do not retry (`PROTOCOL.md`, Closing). Every
    /// other close (an empty reason, the protocol's other reasons, 1011, 1012, 1013, 1006)
    /// says the handshake broke or the server let go, after which a client may well be
    /// welcome on its next try.
    ///
    /// ```
    /// use wse_core::CloseReason;
    ///
    /// assert!(CloseReason::refuses(1000, "wse.not-authorized"));
    /// assert!(CloseReason::refuses(1000, "app.banned"));
    /// assert!(!CloseReason::refuses(1012, "restart"));
    /// assert!(!CloseReason::refuses(1000, "wse.protocol-error"));
    /// ```
    pub fn refuses(code: u16, reason: &str) -> bool {
        match Self::parse(reason) {
            Some(known) => known == Self::NotAuthorized,
            None => code == close_code::NORMAL && !reason.is_empty(),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<CloseReason> for String {
    fn from(reason: CloseReason) -> Self {
        reason.as_str().to_owned()
    }
}

/// Close codes that matter to WSE peers.
pub mod close_code {
    /// Normal closure: every WSE close reason travels with it.
    pub const NORMAL: u16 = 1000;
    /// The server is restarting (a server shutting down closes with it, reason
    /// `wse.by-server`): clients with reconnect enabled come back.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Try again later (RFC 6455): the server cannot take the connection now; a client with
    /// reconnect enabled comes back.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// A client leaving for another server (reason `jump`).
    pub const JUMP: u16 = 4000;
    /// The codes after which a client with reconnect enabled reconnects.
    pub const RECONNECT_ON: [u16; 7] = [
        1005,
        1006,
        1011,
        SERVICE_RESTART,
        TRY_AGAIN_LATER,
        1014,
        JUMP,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("app.x"), None);
    }

    #[test]
    fn error_object_omits_absent_fields() {
        let object = ErrorObject::from(ErrorCode::RpNotRegistered);
        assert_eq!(
            serde_json::to_string(&object).unwrap(),
            r#"{"code":"wse.server.rp.not-registered"}"#
        );
    }

    #[test]
    fn procedure_name_is_added_to_object_details_only() {
        let with_object = RpcError::new("a").with_details(json!({"x": 1}));
        assert_eq!(
            with_object.to_object("p").details,
            Some(json!({"x": 1, "rpc": "p"}))
        );
        let with_number = RpcError::new("a").with_details(3);
        assert_eq!(with_number.to_object("p").details, Some(json!(3)));
    }

    #[test]
    fn unexpected_failures_carry_nothing_internal() {
        let err = RpcError::from(std::io::Error::other("/etc/secret: denied"));
        let object = err.to_object("p");
        assert!(!serde_json::to_string(&object).unwrap().contains("secret"));
        assert_eq!(object.protocol_code(), Some(ErrorCode::RpFailed));
    }
}
