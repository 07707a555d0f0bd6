//! The JSON codec of `wse` 4.x, `wse-default-json`.

use std::borrow::Cow;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    MAX_DEPTH, MessageKind, PackError, PayloadError, PayloadVisitor, Protocol, UnpackError,
};
use crate::frame::RawFrame;

/// The JSON codec of `wse` 4.x: `wse-default-json`, text messages, byte-compatible with the
/// JavaScript library (`JSON.stringify([type, payload, stamp])`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json;

impl Json {
    /// The negotiated name.
    pub const NAME: &'static str = "wse-default-json";

    pub(super) fn write<T: Serialize + ?Sized>(
        kind: &str,
        payload: &T,
        stamp: Option<&str>,
    ) -> Result<Vec<u8>, PackError> {
        let mut out = Vec::with_capacity(64);
        serde_json::to_writer(&mut out, &(kind, payload, stamp))
            .map_err(|e| PackError(e.to_string()))?;
        Ok(out)
    }

    pub(super) fn read<T: DeserializeOwned>(raw: &[u8]) -> Result<T, PayloadError> {
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
}
