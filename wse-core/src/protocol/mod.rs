//! The codec seam: how a frame becomes a WebSocket message and back.
//!
//! A [`Protocol`] is named (the name is what client and server agree on in the
//! `Sec-WebSocket-Protocol` header), says whether it travels as text or binary messages, and
//! packs and unpacks frames. It is object-safe, so a server can offer several codecs and pick
//! one per connection; payloads stay typed through [`erased_serde`], so a handler's argument
//! is decoded straight from the message bytes.

use std::any::Any;
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::frame::RawFrame;

mod json;
#[cfg(feature = "msgpack")]
mod msgpack;

pub use json::Json;
#[cfg(feature = "msgpack")]
pub use msgpack::MsgPack;

/// How deeply a payload's arrays and maps may nest; deeper frames are refused by both codecs,
/// so that no recursive decoder can overflow the stack.
pub const MAX_DEPTH: usize = 100;

/// How a codec's messages travel on the WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Text messages (the payload must be UTF-8).
    Text,
    /// Binary messages.
    Binary,
}

/// A frame could not be encoded: the payload's `Serialize` implementation failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode frame: {0}")]
pub struct PackError(pub String);

/// A message is not a valid frame. Fatal for the connection it came from: it is closed with
/// `wse.protocol-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnpackError {
    /// The bytes are not valid in this codec at all (`wse.server.msg-processing-error`).
    #[error("undecodable message: {0}")]
    Undecodable(String),
    /// Decodable, but not a frame: not an array of 1 to 3 elements, a type that is not a
    /// non-empty string, a stamp that is neither a string nor null
    /// (`wse.server.protocol-violation`).
    #[error("not a frame: {0}")]
    NotAFrame(&'static str),
    /// A text message on a binary codec or the other way round.
    #[error("{got:?} message on a codec that speaks {expected:?}")]
    WrongMessageKind {
        /// What the codec speaks.
        expected: MessageKind,
        /// What arrived.
        got: MessageKind,
    },
}

/// A payload could not be decoded into the type its handler asked for. Not fatal: the call
/// fails with `wse.server.rp.invalid-payload`, a message is reported and skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payload does not fit the expected type: {0}")]
pub struct PayloadError(pub String);

/// The callback a codec hands its payload deserializer to. See [`Protocol::deserialize_payload`].
pub type PayloadVisitor<'v> = dyn for<'de> FnMut(&mut dyn erased_serde::Deserializer<'de>) -> Result<(), erased_serde::Error>
    + 'v;

/// A wire codec for WSE frames.
///
/// Implement it to speak a third dialect; [`Json`] is the reference. The server and the client
/// take any `Protocol`, so a custom codec plugs into both unchanged.
///
/// ```
/// use wse_core::{Json, MessageKind, PackError, PayloadError, PayloadVisitor, Protocol, RawFrame, UnpackError};
///
/// /// JSON with a one-byte version prefix, negotiated as `json-v1`.
/// #[derive(Debug)]
/// struct PrefixedJson;
///
/// impl Protocol for PrefixedJson {
///     fn name(&self) -> &str { "json-v1" }
///     fn message_kind(&self) -> MessageKind { MessageKind::Text }
///     fn pack(&self, kind: &str, payload: &dyn erased_serde::Serialize, stamp: Option<&str>)
///         -> Result<Vec<u8>, PackError> {
///         let mut out = b"1".to_vec();
///         out.extend(Json.pack(kind, payload, stamp)?);
///         Ok(out)
///     }
///     fn unpack<'a>(&self, data: &'a [u8]) -> Result<RawFrame<'a>, UnpackError> {
///         match data.split_first() {
///             Some((b'1', rest)) => Json.unpack(rest),
///             _ => Err(UnpackError::NotAFrame("missing version prefix")),
///         }
///     }
///     fn deserialize_payload(&self, raw: &[u8], visit: &mut PayloadVisitor<'_>)
///         -> Result<(), PayloadError> {
///         Json.deserialize_payload(raw, visit)
///     }
/// }
///
/// let codec: &dyn Protocol = &PrefixedJson;
/// let bytes = codec.encode("add", &(1, 2), Some("s1")).unwrap();
/// assert_eq!(bytes, br#"1["add",[1,2],"s1"]"#);
/// let frame = codec.unpack(&bytes).unwrap();
/// assert_eq!(codec.decode::<(i32, i32)>(frame.payload).unwrap(), (1, 2));
/// ```
pub trait Protocol: Any + fmt::Debug + Send + Sync + 'static {
    /// The name negotiated in `Sec-WebSocket-Protocol`.
    fn name(&self) -> &str;

    /// Whether this codec's messages are text or binary.
    fn message_kind(&self) -> MessageKind;

    /// Encodes the frame `[kind, payload, stamp]`; a missing stamp is written as null.
    ///
    /// # Errors
    /// [`PackError`] when the payload cannot be serialized in this codec.
    fn pack(
        &self,
        kind: &str,
        payload: &dyn erased_serde::Serialize,
        stamp: Option<&str>,
    ) -> Result<Vec<u8>, PackError>;

    /// Decodes one message into a frame whose payload is still encoded.
    ///
    /// Must accept arrays of one to three elements (missing elements are null), must never
    /// panic, whatever the bytes.
    ///
    /// # Errors
    /// [`UnpackError`] when the message is not a frame.
    fn unpack<'a>(&self, data: &'a [u8]) -> Result<RawFrame<'a>, UnpackError>;

    /// Runs `visit` on a deserializer over `raw`, a payload that [`Protocol::unpack`] returned.
    ///
    /// Use `<dyn Protocol>::decode` rather than calling this directly.
    ///
    /// # Errors
    /// [`PayloadError`] when `visit` fails or `raw` has trailing bytes.
    fn deserialize_payload(
        &self,
        raw: &[u8],
        visit: &mut PayloadVisitor<'_>,
    ) -> Result<(), PayloadError>;
}

impl dyn Protocol {
    /// Encodes the frame `[kind, payload, stamp]`.
    ///
    /// # Errors
    /// [`PackError`] when the payload cannot be serialized in this codec.
    pub fn encode<T: Serialize + ?Sized>(
        &self,
        kind: &str,
        payload: &T,
        stamp: Option<&str>,
    ) -> Result<Vec<u8>, PackError> {
        // The built-in codecs serialize the concrete type directly; only other codecs pay for
        // the type erasure that keeps this trait object-safe.
        let codec: &dyn Any = self;
        if codec.is::<Json>() {
            return Json::write(kind, payload, stamp);
        }
        #[cfg(feature = "msgpack")]
        if codec.is::<MsgPack>() {
            return MsgPack::write(kind, payload, stamp);
        }
        self.pack(kind, &payload, stamp)
    }

    /// Decodes a payload that [`Protocol::unpack`] returned into `T`.
    ///
    /// # Errors
    /// [`PayloadError`] when the payload does not fit `T`.
    pub fn decode<T: DeserializeOwned>(&self, raw: &[u8]) -> Result<T, PayloadError> {
        let codec: &dyn Any = self;
        if codec.is::<Json>() {
            return Json::read(raw);
        }
        #[cfg(feature = "msgpack")]
        if codec.is::<MsgPack>() {
            return MsgPack::read(raw);
        }
        let mut slot = None;
        self.deserialize_payload(raw, &mut |de| {
            slot = Some(erased_serde::deserialize::<T>(de)?);
            Ok(())
        })?;
        slot.ok_or_else(|| PayloadError("codec produced no value".into()))
    }
}

/// Property tests: both codecs round-trip any frame, and no bytes make `unpack` panic.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn payload() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinities", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,24}".prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                prop::collection::btree_map(".{0,8}", inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn codecs() -> Vec<&'static dyn Protocol> {
        #[cfg(feature = "msgpack")]
        return vec![&Json, &MsgPack];
        #[cfg(not(feature = "msgpack"))]
        return vec![&Json];
    }

    proptest! {
        #[test]
        fn any_frame_round_trips(
            kind in ".{1,32}",
            payload in payload(),
            stamp in proptest::option::of(".{1,16}"),
        ) {
            for codec in codecs() {
                let bytes = codec.encode(&kind, &payload, stamp.as_deref()).unwrap();
                let frame = codec.unpack(&bytes).unwrap();
                prop_assert_eq!(frame.kind.as_ref(), kind.as_str());
                prop_assert_eq!(frame.stamp(), stamp.as_deref());
                prop_assert_eq!(codec.decode::<Value>(frame.payload).unwrap(), payload.clone());
            }
        }

        #[test]
        fn no_bytes_make_unpack_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            for codec in codecs() {
                if let Ok(frame) = codec.unpack(&bytes) {
                    prop_assert!(!frame.kind.is_empty());
                    let _ = codec.decode::<Value>(frame.payload);
                }
            }
        }

        #[test]
        fn a_damaged_frame_never_panics(
            payload in payload(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            for codec in codecs() {
                let mut bytes = codec.encode("kind", &payload, Some("stamp")).unwrap();
                let at = flip.index(bytes.len());
                bytes[at] = byte;
                bytes.truncate(cut.index(bytes.len() + 1));
                if let Ok(frame) = codec.unpack(&bytes) {
                    let _ = codec.decode::<Value>(frame.payload);
                }
            }
        }
    }
}
