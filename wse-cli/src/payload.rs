//! [`Payload`]: any payload the server sends, as JSON, so that nothing it sends is dropped
//! for not fitting `serde_json::Value`.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Any payload, as JSON. What `serde_json::Value` holds comes as it is; what it cannot hold,
/// which MessagePack can send, is turned into JSON rather than refused (the message would be
/// skipped, never printed):
///
/// - binary data (`bin`): an array of its bytes as numbers;
/// - an extension type: `[type, [bytes…]]`;
/// - a map key that is not a string: its JSON text (`1`, `[1,2]`);
/// - a float that is not finite: the string `"NaN"`, `"inf"` or `"-inf"`;
/// - an integer beyond 64 bits: its decimal digits as a string.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Payload(pub(crate) Value);

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyVisitor).map(Self)
    }
}

/// A map key: a string as it is, anything else as its JSON text.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self(match Payload::deserialize(deserializer)?.0 {
            Value::String(text) => text,
            other => other.to_string(),
        }))
    }
}

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_i128<E>(self, value: i128) -> Result<Value, E> {
        Ok(i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from))
    }

    fn visit_u128<E>(self, value: u128) -> Result<Value, E> {
        Ok(u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or_else(|| Value::String(value.to_string()), Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_bytes<E>(self, value: &[u8]) -> Result<Value, E> {
        Ok(Value::Array(
            value.iter().map(|&b| Value::from(b)).collect(),
        ))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Payload::deserialize(deserializer).map(|payload| payload.0)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        // MessagePack's extension types come this way, as a sequence (type, bytes).
        Payload::deserialize(deserializer).map(|payload| payload.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // The size hint is the peer's word: taken only as far as a small bound.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Payload(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some((Key(key), Payload(value))) = map.next_entry()? {
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde_json::json;
    use wse_client::{Json, MsgPack, Protocol};

    use super::*;

    /// `value` in MessagePack, read back as a [`Payload`] by the codec the client speaks.
    fn through_msgpack<T: Serialize>(value: &T) -> Value {
        let protocol: &dyn Protocol = &MsgPack;
        let frame = protocol.encode("m", value, None).unwrap();
        let raw = protocol.unpack(&frame).unwrap();
        protocol.decode::<Payload>(raw.payload).unwrap().0
    }

    #[test]
    fn json_payloads_come_as_they_are() {
        let protocol: &dyn Protocol = &Json;
        let text = br#"{"a": [1, -2, 3.5, "x", null, true], "b": {"c": {}}}"#;
        let payload: Payload = protocol.decode(text).unwrap();
        assert_eq!(
            payload.0,
            json!({"a": [1, -2, 3.5, "x", null, true], "b": {"c": {}}})
        );
        let value: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(through_msgpack(&value), value);
    }

    #[test]
    fn what_json_cannot_hold_is_turned_into_json() {
        #[derive(Serialize)]
        struct Bin(#[serde(with = "serde_bytes_like")] Vec<u8>);
        mod serde_bytes_like {
            pub(super) fn serialize<S: serde::Serializer>(
                bytes: &[u8],
                serializer: S,
            ) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(bytes)
            }
        }
        assert_eq!(through_msgpack(&Bin(vec![0, 7, 255])), json!([0, 7, 255]));
        let keyed: std::collections::BTreeMap<u8, &str> = [(1, "one")].into();
        assert_eq!(through_msgpack(&keyed), json!({"1": "one"}));
        assert_eq!(through_msgpack(&f64::NAN), json!("NaN"));
        assert_eq!(through_msgpack(&f64::NEG_INFINITY), json!("-inf"));
    }
}
