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

/// The payload of `~wse:hi`: `{"identity": I, "meta": M}`, the first frame a client sends.
///
/// `identity` is whatever the application authenticates with; `meta` is data passed forward
/// and not used to authenticate. Only an object (a map) is a hi payload: an array such as
/// `[identity, meta]`, which a derived `Deserialize` would take for the same struct, is
/// refused, as are other values. A missing `identity` is null; a missing or null `meta` is `{}`;
/// other keys are ignored.
///
/// ```
/// use serde_json::json;
/// use wse_core::{Json, Protocol, frame::Hi};
///
/// let json: &dyn Protocol = &Json;
/// let hi: Hi = json.decode(br#"{"identity": "token"}"#).unwrap();
/// assert_eq!((hi.identity, hi.meta), (json!("token"), json!({})));
/// assert!(json.decode::<Hi>(br#"["token", {}]"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hi {
    /// What the client authenticates with (a token, a user name, a ticket).
    pub identity: serde_json::Value,
    /// Data passed forward, not used to authenticate (`{}` when absent).
    pub meta: serde_json::Value,
}

impl Hi {
    /// A hi with `identity` and `meta` (null `meta` becomes `{}`).
    pub fn new(identity: serde_json::Value, meta: serde_json::Value) -> Self {
        Self {
            identity,
            meta: object_or_empty(meta),
        }
    }
}

fn object_or_empty(meta: serde_json::Value) -> serde_json::Value {
    if meta.is_null() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        meta
    }
}

impl<'de> serde::Deserialize<'de> for Hi {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HiVisitor)
    }
}

struct HiVisitor;

impl<'de> serde::de::Visitor<'de> for HiVisitor {
    type Value = Hi;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(r#"a hi object {"identity": …, "meta": …}"#)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Hi, A::Error> {
        let (mut identity, mut meta) = (None, None);
        while let Some(key) = map.next_key::<HiKey>()? {
            match key {
                HiKey::Identity if identity.is_none() => identity = Some(map.next_value()?),
                HiKey::Meta if meta.is_none() => meta = Some(map.next_value()?),
                HiKey::Identity | HiKey::Meta => {
                    return Err(serde::de::Error::custom("duplicate key in ~wse:hi"));
                }
                HiKey::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Hi::new(
            identity.unwrap_or_default(),
            meta.unwrap_or_default(),
        ))
    }
}

/// A key of the hi object: the two it has, or any other, of any type (a MessagePack map may
/// have integer keys), which is skipped.
enum HiKey {
    Identity,
    Meta,
    Other,
}

impl<'de> serde::Deserialize<'de> for HiKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(HiKeyVisitor)
    }
}

struct HiKeyVisitor;

impl<'de> serde::de::Visitor<'de> for HiKeyVisitor {
    type Value = HiKey;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<HiKey, E> {
        self.visit_bytes(key.as_bytes())
    }

    fn visit_bytes<E: serde::de::Error>(self, key: &[u8]) -> Result<HiKey, E> {
        Ok(match key {
            b"identity" => HiKey::Identity,
            b"meta" => HiKey::Meta,
            _ => HiKey::Other,
        })
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<HiKey, E> {
        Ok(HiKey::Other)
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<HiKey, E> {
        Ok(HiKey::Other)
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<HiKey, E> {
        Ok(HiKey::Other)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<HiKey, E> {
        Ok(HiKey::Other)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<HiKey, E> {
        Ok(HiKey::Other)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<HiKey, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(HiKey::Other)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<HiKey, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(HiKey::Other)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Hi;
    use crate::{Json, Protocol};

    #[test]
    fn a_hi_is_an_object_whatever_else_it_holds() {
        let json: &dyn Protocol = &Json;
        let hi: Hi = json
            .decode(br#"{"meta": null, "x": [1, {"y": 2}], "identity": {"t": 1}}"#)
            .unwrap();
        assert_eq!(hi, Hi::new(json!({"t": 1}), json!({})));
        for refused in [
            &br#"["t", {}]"#[..],
            br#""t""#,
            b"null",
            br#"{"identity": 1, "identity": 2}"#,
        ] {
            assert!(json.decode::<Hi>(refused).is_err(), "{refused:?}");
        }
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn a_messagepack_hi_may_have_keys_of_any_type() {
        let msgpack: &dyn Protocol = &crate::MsgPack;
        // {1: "x", "identity": "t"}: an integer key is skipped like any other.
        let bytes = [
            0x82, 0x01, 0xa1, b'x', 0xa8, b'i', b'd', b'e', b'n', b't', b'i', b't', b'y', 0xa1,
            b't',
        ];
        let hi: Hi = msgpack.decode(&bytes).unwrap();
        assert_eq!(hi, Hi::new(json!("t"), json!({})));
        // An array is not a hi.
        assert!(msgpack.decode::<Hi>(&[0x92, 0xa1, b't', 0x80]).is_err());
    }
}
