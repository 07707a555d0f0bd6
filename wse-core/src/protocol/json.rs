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
        // Frames as peers send them (ASCII names and stamps without escapes) are scanned in
        // one pass; anything else, errors included, takes serde_json's path below, which
        // says precisely what is wrong.
        if let Some(frame) = scan::frame(data) {
            return Ok(frame);
        }
        json_wire::unpack(data)
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

/// One pass over a well-formed frame: the type and stamp as borrowed strings, the payload
/// validated (as JSON, and within [`MAX_DEPTH`]) and borrowed as it is.
///
/// It answers only for frames it is sure of: a string with an escape or a non-ASCII byte, a
/// payload nested too deeply, anything malformed, is left to serde_json (`None`), so that
/// every error and every unusual frame reads exactly as before.
mod scan {
    use super::*;

    pub(super) fn frame(data: &[u8]) -> Option<RawFrame<'_>> {
        let mut s = Scanner { data, pos: 0 };
        s.skip_whitespace();
        s.expect(b'[')?;
        s.skip_whitespace();
        let kind = s.plain_string()?;
        if kind.is_empty() {
            return None;
        }
        s.skip_whitespace();
        let (mut payload, mut stamp) = (&b"null"[..], None);
        if s.eat(b',') {
            s.skip_whitespace();
            let start = s.pos;
            s.value(0)?;
            payload = &data[start..s.pos];
            s.skip_whitespace();
            if s.eat(b',') {
                s.skip_whitespace();
                stamp = if s.literal(b"null") {
                    None
                } else {
                    Some(s.plain_string()?).filter(|stamp| !stamp.is_empty())
                };
                s.skip_whitespace();
            }
        }
        s.expect(b']')?;
        s.skip_whitespace();
        (s.pos == data.len()).then(|| RawFrame {
            kind: Cow::Borrowed(kind),
            payload,
            stamp: stamp.map(Cow::Borrowed),
        })
    }

    struct Scanner<'a> {
        data: &'a [u8],
        pos: usize,
    }

    impl<'a> Scanner<'a> {
        fn peek(&self) -> Option<u8> {
            self.data.get(self.pos).copied()
        }

        fn eat(&mut self, byte: u8) -> bool {
            let found = self.peek() == Some(byte);
            self.pos += usize::from(found);
            found
        }

        fn expect(&mut self, byte: u8) -> Option<()> {
            self.eat(byte).then_some(())
        }

        fn literal(&mut self, word: &[u8]) -> bool {
            let found = self.data[self.pos..].starts_with(word);
            if found {
                self.pos += word.len();
            }
            found
        }

        fn skip_whitespace(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.pos += 1;
            }
        }

        /// A string of printable ASCII without escapes, as a borrowed `str`.
        fn plain_string(&mut self) -> Option<&'a str> {
            self.expect(b'"')?;
            let start = self.pos;
            loop {
                match self.peek()? {
                    b'"' => break,
                    0x20..=0x7e if self.data[self.pos] != b'\\' => self.pos += 1,
                    _ => return None,
                }
            }
            let text = std::str::from_utf8(&self.data[start..self.pos]).ok()?;
            self.pos += 1;
            Some(text)
        }

        /// Skips one JSON value inside `enclosing` arrays and objects, checking it.
        fn value(&mut self, enclosing: usize) -> Option<()> {
            match self.peek()? {
                b'"' => self.string(),
                b'{' => self.container(enclosing, b'}', true),
                b'[' => self.container(enclosing, b']', false),
                b't' => self.literal(b"true").then_some(()),
                b'f' => self.literal(b"false").then_some(()),
                b'n' => self.literal(b"null").then_some(()),
                b'-' | b'0'..=b'9' => self.number(),
                _ => None,
            }
        }

        fn container(&mut self, enclosing: usize, close: u8, object: bool) -> Option<()> {
            if enclosing >= MAX_DEPTH {
                return None;
            }
            self.pos += 1;
            self.skip_whitespace();
            if self.eat(close) {
                return Some(());
            }
            loop {
                if object {
                    self.string()?;
                    self.skip_whitespace();
                    self.expect(b':')?;
                    self.skip_whitespace();
                }
                self.value(enclosing + 1)?;
                self.skip_whitespace();
                if self.eat(close) {
                    return Some(());
                }
                self.expect(b',')?;
                self.skip_whitespace();
            }
        }

        /// A string with escapes allowed; non-ASCII is left to serde_json.
        fn string(&mut self) -> Option<()> {
            self.expect(b'"')?;
            loop {
                match self.peek()? {
                    b'"' => {
                        self.pos += 1;
                        return Some(());
                    }
                    b'\\' => {
                        self.pos += 1;
                        match self.peek()? {
                            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                                self.pos += 1;
                            }
                            b'u' => {
                                let hex = self.data.get(self.pos + 1..self.pos + 5)?;
                                if !hex.iter().all(u8::is_ascii_hexdigit) {
                                    return None;
                                }
                                self.pos += 5;
                            }
                            _ => return None,
                        }
                    }
                    0x20..=0x7e => self.pos += 1,
                    _ => return None,
                }
            }
        }

        fn digits(&mut self) -> usize {
            let start = self.pos;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
            self.pos - start
        }

        fn number(&mut self) -> Option<()> {
            self.eat(b'-');
            match self.peek()? {
                b'0' => self.pos += 1,
                b'1'..=b'9' => {
                    self.digits();
                }
                _ => return None,
            }
            if self.eat(b'.') && self.digits() == 0 {
                return None;
            }
            if self.eat(b'e') || self.eat(b'E') {
                if !self.eat(b'+') {
                    self.eat(b'-');
                }
                if self.digits() == 0 {
                    return None;
                }
            }
            Some(())
        }
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

    /// Unpacks with serde_json: every frame, every error said precisely.
    pub(super) fn unpack(data: &[u8]) -> Result<RawFrame<'_>, UnpackError> {
        let wire: WireFrame<'_> = serde_json::from_slice(data).map_err(|e| match e.classify() {
            // A data error may come before serde_json has seen the whole text: only valid
            // JSON is "not a frame"; this second parse runs on the error path alone.
            serde_json::error::Category::Data
                if serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok() =>
            {
                UnpackError::NotAFrame(shape_error(&e))
            }
            _ => UnpackError::Undecodable(e.to_string()),
        })?;
        let payload = wire
            .payload
            .map_or(&b"null"[..], |raw| raw.get().as_bytes());
        if depth(payload) > MAX_DEPTH {
            return Err(UnpackError::Undecodable("payload nested too deeply".into()));
        }
        Ok(RawFrame {
            kind: wire.kind,
            payload,
            stamp: wire.stamp.filter(|s| !s.is_empty()),
        })
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

/// The one-pass scanner never disagrees with serde_json: whatever it accepts, serde_json
/// reads the same way.
#[cfg(test)]
mod scanner_agrees {
    use super::*;
    use proptest::prelude::*;

    fn agrees(data: &[u8]) -> Result<(), TestCaseError> {
        if let Some(fast) = scan::frame(data) {
            let slow = json_wire::unpack(data);
            prop_assert_eq!(Ok(fast), slow, "on {:?}", String::from_utf8_lossy(data));
        }
        Ok(())
    }

    /// JSON-looking text: frames, values and the characters that make them, shuffled.
    fn jsonish() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just(",".to_owned()),
            Just(":".to_owned()),
            Just(" ".to_owned()),
            Just("\n".to_owned()),
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("fals".to_owned()),
            Just("\"".to_owned()),
            Just("\\".to_owned()),
            Just("\\u00e9".to_owned()),
            Just("é".to_owned()),
            "-?[0-9]{0,3}(\\.[0-9]{0,2})?([eE][+-]?[0-9]{0,2})?",
            "\"[a-z~:. ]{0,6}\"",
        ];
        prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        #[test]
        fn on_frames_of_any_payload(kind in "[a-z~:.-]{0,8}", payload in jsonish(), stamp in "[a-zA-Z0-9]{0,6}") {
            for text in [
                format!("[\"{kind}\",{payload},\"{stamp}\"]"),
                format!(" [ \"{kind}\" , {payload} , null ] "),
                format!("[\"{kind}\",{payload}]"),
                format!("[\"{kind}\"]"),
                format!("[\"{kind}\",{payload},\"{stamp}\",1]"),
            ] {
                agrees(text.as_bytes())?;
            }
        }

        #[test]
        fn on_any_text(text in jsonish()) {
            agrees(text.as_bytes())?;
        }

        #[test]
        fn on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            agrees(&bytes)?;
        }
    }

    #[test]
    fn on_the_frames_peers_send() {
        for text in [
            r#"["add",{"a":1,"b":2},"k1"]"#,
            r#"["tick",7,null]"#,
            r#"["tick"]"#,
            r#"["x",[1,[2,[3]]],""]"#,
            r#"["x",{"s":"a\"b\\u0041\n"},"s"]"#,
            r#"["x",-0.5e-3,"s"]"#,
        ] {
            let fast = scan::frame(text.as_bytes());
            assert!(fast.is_some(), "{text}");
            assert_eq!(Ok(fast.unwrap()), json_wire::unpack(text.as_bytes()));
        }
        let deepest = format!("[\"x\",{}{}]", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let fast = scan::frame(deepest.as_bytes()).expect("as deep as allowed");
        assert_eq!(Ok(fast), json_wire::unpack(deepest.as_bytes()));
        // Left to serde_json: escapes in the type, non-ASCII, nesting past the limit.
        let deep = format!(
            "[\"x\",{}{}]",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        for text in [r#"["a\"b",1,null]"#, r#"["x","é",null]"#, deep.as_str()] {
            assert!(scan::frame(text.as_bytes()).is_none(), "{text}");
        }
    }
}
