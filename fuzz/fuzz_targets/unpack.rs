//! Arbitrary bytes into both codecs' `unpack`, and every payload that unpacks into `decode`.
//!
//! Invariants (any panic is a finding):
//! - `unpack` and `decode` never panic, whatever the bytes;
//! - a frame that unpacks has a non-empty kind, a stamp that is absent or non-empty, and a
//!   payload that is a slice of the input (or the codec's encoding of null);
//! - a frame that unpacks re-encodes with `encode` and unpacks again to the same kind, stamp
//!   and (when the payload decodes into a `serde_json::Value`) the same payload value;
//! - JSON only, against serde_json as the reference: `unpack` accepts exactly the texts that
//!   parse as an array of one to three elements with a non-empty string first, a string or
//!   null third, and a payload nested at most `MAX_DEPTH` deep.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wse_core::{Json, MAX_DEPTH, MsgPack, Protocol, RawFrame, UnpackError};

fuzz_target!(|data: &[u8]| {
    let json: &dyn Protocol = &Json;
    let msgpack: &dyn Protocol = &MsgPack;
    for codec in [json, msgpack] {
        if let Ok(frame) = codec.unpack(data) {
            check_frame(codec, data, &frame);
        }
    }
    json_agrees_with_serde_json(data);
});

fn check_frame(codec: &dyn Protocol, data: &[u8], frame: &RawFrame<'_>) {
    let name = codec.name();
    assert!(!frame.kind.is_empty(), "{name}: empty kind");
    assert!(
        frame.stamp().is_none_or(|s| !s.is_empty()),
        "{name}: empty stamp kept"
    );
    let inside = data.as_ptr_range();
    let payload = frame.payload.as_ptr_range();
    let borrowed = inside.start <= payload.start && payload.end <= inside.end;
    let null: &[u8] = if name == Json::NAME { b"null" } else { &[0xc0] };
    assert!(
        borrowed || frame.payload == null,
        "{name}: payload neither borrowed from the message nor null"
    );

    let value = codec.decode::<Value>(frame.payload);
    // The payload is re-encoded as it decoded; a payload that does not fit a Value (MessagePack
    // binary, extensions, non-string keys) is re-encoded as null: kind and stamp must survive.
    let reencoded = codec
        .encode(
            &frame.kind,
            value.as_ref().unwrap_or(&Value::Null),
            frame.stamp(),
        )
        .unwrap_or_else(|e| panic!("{name}: a frame that unpacked does not re-encode: {e}"));
    let again = codec.unpack(&reencoded).unwrap_or_else(|e| {
        panic!("{name}: a re-encoded frame does not unpack: {e}; {reencoded:?}")
    });
    assert_eq!(again.kind, frame.kind, "{name}: kind changed");
    assert_eq!(again.stamp(), frame.stamp(), "{name}: stamp changed");
    if let Ok(value) = value {
        let round = codec
            .decode::<Value>(again.payload)
            .unwrap_or_else(|e| panic!("{name}: re-encoded payload does not decode: {e}"));
        assert_eq!(round, value, "{name}: payload changed");
    }
}

/// Whether `value` is a frame as PROTOCOL.md defines it, with the nesting limit.
fn is_frame(value: &Value) -> bool {
    let Value::Array(items) = value else {
        return false;
    };
    let kind_ok = matches!(items.first(), Some(Value::String(kind)) if !kind.is_empty());
    let stamp_ok = matches!(items.get(2), None | Some(Value::Null | Value::String(_)));
    let depth_ok = items
        .get(1)
        .is_none_or(|payload| depth(payload) <= MAX_DEPTH);
    (1..=3).contains(&items.len()) && kind_ok && stamp_ok && depth_ok
}

/// Nesting depth of arrays and objects (a scalar is 0), as `unpack` counts it.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn json_agrees_with_serde_json(data: &[u8]) {
    let ours = Json.unpack(data);
    let valid_json = serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok();
    // serde_json's recursion limit (128) is above MAX_DEPTH (100). A Value may fail where the
    // syntax is fine (a number out of f64 range, a lone surrogate escape): then only the
    // syntax is compared.
    let reference = serde_json::from_slice::<Value>(data).ok();
    match (&ours, &reference) {
        (Ok(frame), _) if !valid_json => panic!("Json accepted invalid JSON: {frame:?}"),
        (Ok(frame), Some(value)) => {
            assert!(is_frame(value), "Json accepted a non-frame: {value}");
            let Value::Array(items) = value else {
                unreachable!()
            };
            assert_eq!(Some(frame.kind.as_ref()), items[0].as_str(), "Json kind");
            let stamp = items
                .get(2)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            assert_eq!(frame.stamp(), stamp, "Json stamp");
            let payload: Value = serde_json::from_slice(frame.payload).expect("Json payload");
            assert_eq!(
                &payload,
                items.get(1).unwrap_or(&Value::Null),
                "Json payload"
            );
        }
        (Ok(_), None) => {}
        (Err(UnpackError::NotAFrame(reason)), _) => {
            assert!(
                valid_json,
                "Json called invalid JSON valid but not a frame: {reason}"
            );
            if let Some(value) = &reference {
                assert!(!is_frame(value), "Json refused a frame ({reason}): {value}");
            }
        }
        (Err(error), Some(value)) => {
            // Undecodable although serde_json reads it: only the nesting limit may do that.
            let too_deep = matches!(value, Value::Array(items)
                if items.get(1).is_some_and(|p| depth(p) > MAX_DEPTH));
            assert!(
                too_deep && !is_frame(value),
                "Json refused valid JSON as undecodable ({error}): {value}"
            );
        }
        (Err(_), None) => {}
    }
}
