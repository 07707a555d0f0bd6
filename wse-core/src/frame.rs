//! The frame `[type, payload, stamp]` as it comes off the wire, and the reserved type names.

use std::borrow::Cow;

/// The first frame a client sends: `["~wse:hi", {"identity": I, "meta": M}, null]`.
pub const HI: &str = "~wse:hi";
/// The server's quest (server → client) and the client's solution (client → server).
pub const CHALLENGE: &str = "~wse:challenge";
/// Authentication accepted; the payload is the server's welcome data.
pub const WELCOME: &str = "~wse:welcome";
/// Reserved by the protocol; never sent by `wse` 4.x.
pub const CALL: &str = "~wse:call";
/// RPC success: the payload is the result, the stamp the call's.
pub const RESPONSE: &str = "~wse:response";
/// RPC failure: the payload is an [`ErrorObject`](crate::ErrorObject), the stamp the call's.
pub const RESPONSE_ERR: &str = "~wse:response-err";
/// Every type starting with this prefix belongs to the protocol, never to an application.
pub const RESERVED_PREFIX: &str = "~wse:";

/// Whether `kind` is a type reserved for the protocol (`~wse:…`).
pub fn is_reserved(kind: &str) -> bool {
    kind.starts_with(RESERVED_PREFIX)
}

/// One decoded frame that still borrows the message it came from.
///
/// The payload stays encoded (`payload` is the raw bytes of the payload element in the
/// connection's codec), so a handler decodes its typed argument straight from the wire with
/// `<dyn Protocol>::decode` and no intermediate value tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The frame's type: an internal type, a procedure name or a message type. Never empty.
    pub kind: Cow<'a, str>,
    /// The payload element, still encoded. A missing payload is the codec's encoding of null.
    pub payload: &'a [u8],
    /// The stamp, present only when it was a non-empty string.
    pub stamp: Option<Cow<'a, str>>,
}

impl RawFrame<'_> {
    /// The stamp as a string slice, if the frame has one.
    pub fn stamp(&self) -> Option<&str> {
        self.stamp.as_deref()
    }
}
