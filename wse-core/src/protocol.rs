//! The codec seam: how a frame becomes a WebSocket message and back.
//!
//! A [`Protocol`] is named (the name is what client and server agree on in the
//! `Sec-WebSocket-Protocol` header), says whether it travels as text or binary messages, and
//! packs and unpacks frames. It is object-safe, so a server can offer several codecs and pick
//! one per connection; payloads stay typed through [`erased_serde`], so a handler's argument
//! is decoded straight from the message bytes.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::frame::RawFrame;

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

/// The JSON codec of `wse` 4.x: `wse-default-json`, text messages, byte-compatible with the
/// JavaScript library (`JSON.stringify([type, payload, stamp])`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json;

impl Json {
    /// The negotiated name.
    pub const NAME: &'static str = "wse-default-json";

    fn write<T: Serialize + ?Sized>(
        kind: &str,
        payload: &T,
        stamp: Option<&str>,
    ) -> Result<Vec<u8>, PackError> {
        let mut out = Vec::with_capacity(64);
        serde_json::to_writer(&mut out, &(kind, payload, stamp))
            .map_err(|e| PackError(e.to_string()))?;
        Ok(out)
    }

    fn read<T: DeserializeOwned>(raw: &[u8]) -> Result<T, PayloadError> {
        serde_json::from_slice(raw).map_err(|e| PayloadError(e.to_string()))
    }
}

impl Protocol for Json {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn message_kind(&self) -> MessageKind {
        MessageKind::Text
    }

    fn pack(
        &self,
        kind: &str,
        payload: &dyn erased_serde::Serialize,
        stamp: Option<&str>,
    ) -> Result<Vec<u8>, PackError> {
        Self::write(kind, payload, stamp)
    }

    fn unpack<'a>(&self, data: &'a [u8]) -> Result<RawFrame<'a>, UnpackError> {
        let wire: json_wire::WireFrame<'a> =
            serde_json::from_slice(data).map_err(|e| match e.classify() {
                // A data error may come before serde_json has seen the whole text: only valid
                // JSON is "not a frame"; this second parse runs on the error path alone.
                serde_json::error::Category::Data
                    if serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok() =>
                {
                    UnpackError::NotAFrame(json_wire::shape_error(&e))
                }
                _ => UnpackError::Undecodable(e.to_string()),
            })?;
        let payload = wire
            .payload
            .map_or(&b"null"[..], |raw| raw.get().as_bytes());
        if json_wire::depth(payload) > MAX_DEPTH {
            return Err(UnpackError::Undecodable("payload nested too deeply".into()));
        }
        Ok(RawFrame {
            kind: wire.kind,
            payload,
            stamp: wire.stamp.filter(|s| !s.is_empty()),
        })
    }

    fn deserialize_payload(
        &self,
        raw: &[u8],
        visit: &mut PayloadVisitor<'_>,
    ) -> Result<(), PayloadError> {
        let mut de = serde_json::Deserializer::from_slice(raw);
        visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de))
            .map_err(|e| PayloadError(e.to_string()))?;
        de.end().map_err(|e| PayloadError(e.to_string()))
    }
}

/// Deserialization of the JSON frame array with a borrowed raw payload.
mod json_wire {
    use super::*;
    use serde::de::{self, SeqAccess, Visitor};
    use serde_json::value::RawValue;

    pub(super) struct WireFrame<'a> {
        pub(super) kind: Cow<'a, str>,
        pub(super) payload: Option<&'a RawValue>,
        pub(super) stamp: Option<Cow<'a, str>>,
    }

    // serde_json's data errors carry our messages; map them back to static reasons.
    const NOT_ARRAY: &str = "frame is not an array";
    const EMPTY: &str = "frame has no type";
    const TOO_LONG: &str = "frame has more than three elements";
    const BAD_TYPE: &str = "frame type is not a non-empty string";
    const BAD_STAMP: &str = "frame stamp is neither a string nor null";

    /// The deepest nesting of arrays and objects in `json`, which is valid JSON.
    pub(super) fn depth(json: &[u8]) -> usize {
        let (mut depth, mut deepest) = (0usize, 0usize);
        let (mut in_string, mut escaped) = (false, false);
        for &byte in json {
            if in_string {
                match byte {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        deepest
    }

    pub(super) fn shape_error(e: &serde_json::Error) -> &'static str {
        let text = e.to_string();
        [EMPTY, TOO_LONG, BAD_TYPE, BAD_STAMP]
            .into_iter()
            .find(|reason| text.starts_with(reason))
            .unwrap_or(NOT_ARRAY)
    }

    impl<'de: 'a, 'a> Deserialize<'de> for WireFrame<'a> {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_seq(FrameVisitor)
        }
    }

    struct FrameVisitor;

    impl<'de> Visitor<'de> for FrameVisitor {
        type Value = WireFrame<'de>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(NOT_ARRAY)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let kind = match seq.next_element::<Text<'de>>() {
                Ok(Some(Text(Some(kind)))) if !kind.is_empty() => kind,
                Ok(None) => return Err(de::Error::custom(EMPTY)),
                _ => return Err(de::Error::custom(BAD_TYPE)),
            };
            let payload = seq.next_element::<&'de RawValue>()?;
            let stamp = match seq.next_element::<Text<'de>>() {
                Ok(stamp) => stamp.and_then(|t| t.0),
                Err(_) => return Err(de::Error::custom(BAD_STAMP)),
            };
            if seq.next_element::<de::IgnoredAny>()?.is_some() {
                return Err(de::Error::custom(TOO_LONG));
            }
            Ok(WireFrame {
                kind,
                payload,
                stamp,
            })
        }
    }

    /// A string (borrowed when it has no escapes) or null.
    struct Text<'a>(Option<Cow<'a, str>>);

    impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(TextVisitor)
        }
    }

    struct TextVisitor;

    impl<'de> Visitor<'de> for TextVisitor {
        type Value = Text<'de>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Text(Some(Cow::Borrowed(v))))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Text(Some(Cow::Owned(v.to_owned()))))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Text(Some(Cow::Owned(v))))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Text(None))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Text(None))
        }
    }
}

/// The MessagePack codec: `wse-msgpack`, binary messages (an extension of this project).
///
/// Structs travel as maps with field names, so a MessagePack peer in another language sees the
/// same shapes as a JSON one.
#[cfg(feature = "msgpack")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgPack;

#[cfg(feature = "msgpack")]
impl MsgPack {
    /// The negotiated name.
    pub const NAME: &'static str = "wse-msgpack";

    fn write<T: Serialize + ?Sized>(
        kind: &str,
        payload: &T,
        stamp: Option<&str>,
    ) -> Result<Vec<u8>, PackError> {
        let mut out = Vec::with_capacity(64);
        let mut ser = rmp_serde::Serializer::new(&mut out).with_struct_map();
        (kind, payload, stamp)
            .serialize(&mut ser)
            .map_err(|e| PackError(e.to_string()))?;
        Ok(out)
    }

    fn read<T: DeserializeOwned>(raw: &[u8]) -> Result<T, PayloadError> {
        let mut de = rmp_serde::Deserializer::new(raw);
        let value = T::deserialize(&mut de).map_err(|e| PayloadError(e.to_string()))?;
        if de.get_ref().is_empty() {
            Ok(value)
        } else {
            Err(PayloadError("trailing bytes after the payload".into()))
        }
    }
}

#[cfg(feature = "msgpack")]
impl Protocol for MsgPack {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn message_kind(&self) -> MessageKind {
        MessageKind::Binary
    }

    fn pack(
        &self,
        kind: &str,
        payload: &dyn erased_serde::Serialize,
        stamp: Option<&str>,
    ) -> Result<Vec<u8>, PackError> {
        Self::write(kind, payload, stamp)
    }

    fn unpack<'a>(&self, data: &'a [u8]) -> Result<RawFrame<'a>, UnpackError> {
        msgpack_wire::unpack(data)
    }

    fn deserialize_payload(
        &self,
        raw: &[u8],
        visit: &mut PayloadVisitor<'_>,
    ) -> Result<(), PayloadError> {
        let mut de = rmp_serde::Deserializer::new(raw);
        visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de))
            .map_err(|e| PayloadError(e.to_string()))?;
        if de.get_ref().is_empty() {
            Ok(())
        } else {
            Err(PayloadError("trailing bytes after the payload".into()))
        }
    }
}

/// A hand-written reader for the outer frame: it only finds where each element starts and
/// ends (validating lengths and nesting depth), so the payload stays borrowed and undecoded.
#[cfg(feature = "msgpack")]
mod msgpack_wire {
    use super::*;

    const NIL: &[u8] = &[0xc0];

    pub(super) fn unpack(data: &[u8]) -> Result<RawFrame<'_>, UnpackError> {
        let mut r = Reader { data, pos: 0 };
        let len = match r.byte()? {
            b @ 0x90..=0x9f => usize::from(b & 0x0f),
            0xdc => r.len(2)?,
            0xdd => r.len(4)?,
            _ => return Err(UnpackError::NotAFrame("frame is not an array")),
        };
        match len {
            0 => return Err(UnpackError::NotAFrame("frame has no type")),
            4.. => return Err(UnpackError::NotAFrame("frame has more than three elements")),
            _ => {}
        }
        let kind = match r.text()? {
            Some(kind) if !kind.is_empty() => kind,
            _ => {
                return Err(UnpackError::NotAFrame(
                    "frame type is not a non-empty string",
                ));
            }
        };
        let payload = if len >= 2 {
            let start = r.pos;
            r.skip_value(0)?;
            &data[start..r.pos]
        } else {
            NIL
        };
        let stamp = if len >= 3 {
            r.text()
                .map_err(|_| UnpackError::NotAFrame("frame stamp is neither a string nor null"))?
        } else {
            None
        };
        if r.pos != data.len() {
            return Err(UnpackError::Undecodable(
                "trailing bytes after the frame".into(),
            ));
        }
        Ok(RawFrame {
            kind: Cow::Borrowed(kind),
            payload,
            stamp: stamp.filter(|s| !s.is_empty()).map(Cow::Borrowed),
        })
    }

    struct Reader<'a> {
        data: &'a [u8],
        pos: usize,
    }

    fn truncated() -> UnpackError {
        UnpackError::Undecodable("truncated MessagePack value".into())
    }

    impl<'a> Reader<'a> {
        fn byte(&mut self) -> Result<u8, UnpackError> {
            let b = *self.data.get(self.pos).ok_or_else(truncated)?;
            self.pos += 1;
            Ok(b)
        }

        fn take(&mut self, n: usize) -> Result<&'a [u8], UnpackError> {
            let end = self.pos.checked_add(n).ok_or_else(truncated)?;
            let bytes = self.data.get(self.pos..end).ok_or_else(truncated)?;
            self.pos = end;
            Ok(bytes)
        }

        /// A big-endian length of `width` bytes.
        fn len(&mut self, width: usize) -> Result<usize, UnpackError> {
            let bytes = self.take(width)?;
            let n = bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
            usize::try_from(n).map_err(|_| truncated())
        }

        /// A string or nil.
        fn text(&mut self) -> Result<Option<&'a str>, UnpackError> {
            let len = match self.byte()? {
                0xc0 => return Ok(None),
                b @ 0xa0..=0xbf => usize::from(b & 0x1f),
                0xd9 => self.len(1)?,
                0xda => self.len(2)?,
                0xdb => self.len(4)?,
                _ => return Err(UnpackError::NotAFrame("expected a string")),
            };
            let bytes = self.take(len)?;
            std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| UnpackError::Undecodable("string is not UTF-8".into()))
        }

        /// Skips one value that `enclosing` arrays and maps contain.
        fn skip_value(&mut self, enclosing: usize) -> Result<(), UnpackError> {
            let marker = self.byte()?;
            let container = matches!(marker, 0x80..=0x9f | 0xdc..=0xdf);
            if container && enclosing >= MAX_DEPTH {
                return Err(UnpackError::Undecodable("payload nested too deeply".into()));
            }
            let (items, bytes) = match marker {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
                0x80..=0x8f => (2 * usize::from(marker & 0x0f), 0),
                0x90..=0x9f => (usize::from(marker & 0x0f), 0),
                0xa0..=0xbf => (0, usize::from(marker & 0x1f)),
                0xc1 => return Err(UnpackError::Undecodable("reserved byte 0xc1".into())),
                0xc4 | 0xd9 => (0, self.len(1)?),
                0xc5 | 0xda => (0, self.len(2)?),
                0xc6 | 0xdb => (0, self.len(4)?),
                0xc7 => (0, self.len(1)? + 1),
                0xc8 => (0, self.len(2)? + 1),
                0xc9 => (0, self.len(4)?.saturating_add(1)),
                0xca | 0xce | 0xd2 => (0, 4),
                0xcb | 0xcf | 0xd3 => (0, 8),
                0xcc | 0xd0 => (0, 1),
                0xcd | 0xd1 => (0, 2),
                0xd4 => (0, 2),
                0xd5 => (0, 3),
                0xd6 => (0, 5),
                0xd7 => (0, 9),
                0xd8 => (0, 17),
                0xdc => (self.len(2)?, 0),
                0xdd => (self.len(4)?, 0),
                0xde => (self.len(2)?.saturating_mul(2), 0),
                0xdf => (self.len(4)?.saturating_mul(2), 0),
            };
            self.take(bytes)?;
            // Every item needs at least one byte: a huge count with little data fails here,
            // before any loop runs.
            if items > self.data.len() - self.pos {
                return Err(truncated());
            }
            for _ in 0..items {
                self.skip_value(enclosing + 1)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json() -> &'static dyn Protocol {
        &Json
    }

    #[test]
    fn json_packs_like_the_js_library() {
        let p = json();
        assert_eq!(p.encode("tick", &7, None).unwrap(), br#"["tick",7,null]"#);
        assert_eq!(
            p.encode("~wse:response", &json!({"a": 1}), Some("Ab3"))
                .unwrap(),
            br#"["~wse:response",{"a":1},"Ab3"]"#
        );
        assert_eq!(p.encode("x", &(), None).unwrap(), br#"["x",null,null]"#);
    }

    #[test]
    fn json_unpack_borrows_and_keeps_payload_raw() {
        let data = br#"["add", {"a": 1, "b": 2}, "s1"]"#;
        let f = json().unpack(data).unwrap();
        assert!(matches!(f.kind, Cow::Borrowed("add")));
        assert_eq!(f.payload, br#"{"a": 1, "b": 2}"#);
        assert_eq!(f.stamp(), Some("s1"));
    }

    #[test]
    fn json_short_arrays_and_empty_stamps_mean_null() {
        let f = json().unpack(br#"["tick"]"#).unwrap();
        assert_eq!((f.payload, f.stamp()), (&b"null"[..], None));
        let f = json().unpack(br#"["tick", 1, ""]"#).unwrap();
        assert_eq!(f.stamp(), None);
        let f = json().unpack(br#"["a\"b", 1, null]"#).unwrap();
        assert_eq!(f.kind, "a\"b");
    }

    #[test]
    fn json_rejects_what_is_not_a_frame() {
        let not_a_frame = |data: &[u8]| match json().unpack(data) {
            Err(UnpackError::NotAFrame(reason)) => reason,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(data)),
        };
        assert_eq!(not_a_frame(b"{}"), "frame is not an array");
        assert_eq!(not_a_frame(b"7"), "frame is not an array");
        assert_eq!(not_a_frame(b"[]"), "frame has no type");
        assert_eq!(
            not_a_frame(b"[1, 2, null]"),
            "frame type is not a non-empty string"
        );
        assert_eq!(
            not_a_frame(b"[\"\", 2, null]"),
            "frame type is not a non-empty string"
        );
        assert_eq!(
            not_a_frame(b"[null]"),
            "frame type is not a non-empty string"
        );
        assert_eq!(
            not_a_frame(br#"["a", 2, {"x": 1}]"#),
            "frame stamp is neither a string nor null"
        );
        assert_eq!(
            not_a_frame(br#"["a", 2, null, 4]"#),
            "frame has more than three elements"
        );
        for undecodable in [&b"[\"a\", "[..], b"{not json", b"[1, nope]", b""] {
            assert!(
                matches!(json().unpack(undecodable), Err(UnpackError::Undecodable(_))),
                "{undecodable:?}"
            );
        }
    }

    #[test]
    fn json_decode_is_typed_and_strict() {
        let p = json();
        assert_eq!(p.decode::<(u8, u8)>(b"[1,2]").unwrap(), (1, 2));
        assert!(p.decode::<u8>(b"\"x\"").is_err());
        assert!(p.decode::<Option<u8>>(b"null").unwrap().is_none());
    }

    #[cfg(feature = "msgpack")]
    mod msgpack {
        use super::*;

        fn mp() -> &'static dyn Protocol {
            &MsgPack
        }

        #[test]
        fn round_trips_typed_payloads() {
            #[derive(Debug, PartialEq, Serialize, Deserialize)]
            struct Add {
                a: i64,
                b: i64,
            }
            let bytes = mp().encode("add", &Add { a: 1, b: -2 }, Some("s")).unwrap();
            let f = mp().unpack(&bytes).unwrap();
            assert_eq!((f.kind.as_ref(), f.stamp()), ("add", Some("s")));
            assert_eq!(mp().decode::<Add>(f.payload).unwrap(), Add { a: 1, b: -2 });
            // Structs are maps, readable as a generic object.
            assert_eq!(
                mp().decode::<serde_json::Value>(f.payload).unwrap(),
                json!({"a": 1, "b": -2})
            );
        }

        #[test]
        fn short_frames_and_nil_stamps() {
            let f = mp().unpack(&[0x91, 0xa1, b'x']).unwrap();
            assert_eq!(
                (f.kind.as_ref(), f.payload, f.stamp()),
                ("x", NIL_BYTES, None)
            );
            let bytes = mp().encode("x", &(), None).unwrap();
            assert_eq!(bytes, [0x93, 0xa1, b'x', 0xc0, 0xc0]);
        }
        const NIL_BYTES: &[u8] = &[0xc0];

        #[test]
        fn rejects_broken_frames() {
            for bad in [
                &[][..],
                &[0x90],
                &[0x94, 0xa1, b'x', 0xc0, 0xc0, 0xc0],
                &[0x93, 0x01, 0xc0, 0xc0],
                &[0x93, 0xa1, b'x', 0xc0, 0x01],
                &[0x93, 0xa1, b'x', 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0],
                &[0x92, 0xa1, b'x', 0xc1],
                &[0x91, 0xa1, 0xff],
                &[0x91, 0xa1, b'x', 0x00],
                &[0xa1, b'x'],
            ] {
                assert!(mp().unpack(bad).is_err(), "{bad:x?}");
            }
        }

        #[test]
        fn nesting_is_limited_like_json() {
            for (depth, ok) in [(MAX_DEPTH, true), (MAX_DEPTH + 1, false)] {
                let mut frame = vec![0x92, 0xa1, b'x'];
                frame.extend(std::iter::repeat_n(0x91, depth - 1));
                frame.push(0x90);
                assert_eq!(mp().unpack(&frame).is_ok(), ok, "msgpack depth {depth}");
                let json = format!("[\"x\", {}{}]", "[".repeat(depth), "]".repeat(depth));
                assert_eq!(json_depth_ok(&json), ok, "json depth {depth}");
            }
        }

        fn json_depth_ok(text: &str) -> bool {
            Json.unpack(text.as_bytes()).is_ok()
        }

        #[test]
        fn refuses_deep_nesting() {
            let mut deep = vec![0x92, 0xa1, b'x'];
            deep.extend(std::iter::repeat_n(0x91, 200));
            deep.push(0xc0);
            assert!(mp().unpack(&deep).is_err());
            let mut ok = vec![0x92, 0xa1, b'x'];
            ok.extend(std::iter::repeat_n(0x91, 100));
            ok.push(0xc0);
            assert!(mp().unpack(&ok).is_ok());
        }
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
