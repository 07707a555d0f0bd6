//! The MessagePack codec, `wse-msgpack` (an extension of this project).

use std::borrow::Cow;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    MAX_DEPTH, MessageKind, PackError, PayloadError, PayloadVisitor, Protocol, UnpackError,
};
use crate::frame::RawFrame;

/// The MessagePack codec: `wse-msgpack`, binary messages (an extension of this project).
///
/// Structs travel as maps with field names, so a MessagePack peer in another language sees the
/// same shapes as a JSON one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgPack;

impl MsgPack {
    /// The negotiated name.
    pub const NAME: &'static str = "wse-msgpack";

    pub(super) fn write<T: Serialize + ?Sized>(
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

    pub(super) fn read<T: DeserializeOwned>(raw: &[u8]) -> Result<T, PayloadError> {
        let mut de = rmp_serde::Deserializer::new(raw);
        let value = T::deserialize(&mut de).map_err(|e| PayloadError(e.to_string()))?;
        if de.get_ref().is_empty() {
            Ok(value)
        } else {
            Err(PayloadError("trailing bytes after the payload".into()))
        }
    }
}

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
    use crate::Json;
    use serde::Deserialize;
    use serde_json::json;

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
