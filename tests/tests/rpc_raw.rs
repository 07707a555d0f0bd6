//! RPC and messages after the handshake, frame by frame, for both codecs: calls and their
//! responses and errors, pipelining, out-of-order answers, one-way messages, server → client
//! calls, unmatched responses, protocol violations and closing on request.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wse_examples::Auth;
use wse_tests::{Codec, QUIET, Raw, Seen, TestServer, start_demo};

/// A logged-in raw peer of `server`, as a user of its own per codec (the demo allows two
/// connections per user).
async fn peer(server: &TestServer, codec: Codec, user: &str) -> Raw {
    Raw::login(server.addr(), codec, &format!("{user}-{codec:?}")).await
}

/// Checks `frame` is a 3-element `~wse:response-err` with `stamp` and returns its error
/// object, which may only hold `code`, `message` and `details`.
fn response_err<'a>(frame: &'a Value, stamp: &str) -> &'a serde_json::Map<String, Value> {
    let elements = frame.as_array().expect("an array frame");
    assert_eq!(elements.len(), 3, "{frame}");
    assert_eq!(elements[0], "~wse:response-err", "{frame}");
    assert_eq!(elements[2], stamp, "{frame}");
    let object = elements[1].as_object().expect("an error object");
    for key in object.keys() {
        assert!(
            ["code", "message", "details"].contains(&key.as_str()),
            "unexpected key {key:?} in {frame}"
        );
    }
    assert!(object["code"].is_string(), "{frame}");
    object
}

#[tokio::test]
async fn add_is_answered_with_the_result_and_the_calls_stamp() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        raw.expect_reply(
            &json!(["add", {"a": 1, "b": 2}, "s1"]),
            &json!(["~wse:response", 3, "s1"]),
        )
        .await;
        raw.expect_reply(
            &json!(["add", {"a": 1.5, "b": 2}, "s2"]),
            &json!(["~wse:response", 3.5, "s2"]),
        )
        .await;
    }
}

#[tokio::test]
async fn an_application_error_keeps_its_code_and_details_tagged_with_the_procedure() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        raw.send(&json!(["fail_custom", null, "c1"])).await;
        let frame = raw.frame().await;
        let error = response_err(&frame, "c1");
        assert_eq!(error["code"], "app.custom-failure", "{codec:?}: {frame}");
        assert_eq!(
            error["details"],
            json!({"reason": "custom", "rpc": "fail_custom"}),
            "{codec:?}: {frame}"
        );
        raw.expect_add_works("after").await;
    }
}

#[tokio::test]
async fn an_unexpected_failure_is_rp_failed_and_carries_nothing_internal() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        raw.send(&json!(["fail", {"any": "thing"}, "f1"])).await;
        let frame = raw.frame().await;
        let error = response_err(&frame, "f1");
        assert_eq!(error["code"], "wse.server.rp.failed", "{codec:?}: {frame}");
        let serialized = frame.to_string();
        for internal in ["on purpose", "demo", "fails"] {
            assert!(
                !serialized.contains(internal),
                "{codec:?}: {internal:?} leaked in {serialized}"
            );
        }
        if let Some(details) = error.get("details") {
            assert_eq!(details, &json!({"rpc": "fail"}), "{codec:?}: {frame}");
        }
        raw.expect_add_works("after").await;
    }
}

#[tokio::test]
async fn an_unknown_procedure_is_exactly_not_registered() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        raw.expect_reply(
            &json!(["no_such_procedure", {"a": 1}, "u1"]),
            &json!(["~wse:response-err", {"code": "wse.server.rp.not-registered"}, "u1"]),
        )
        .await;
        raw.expect_add_works("after").await;
    }
}

#[tokio::test]
async fn a_payload_of_the_wrong_shape_is_invalid_payload_and_the_connection_stays() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        for (n, payload) in [
            json!({"a": "one", "b": 2}),
            json!({"a": 1}),
            json!("add me"),
            json!(null),
            json!([1, 2, 3]),
        ]
        .into_iter()
        .enumerate()
        {
            let stamp = format!("bad{n}");
            raw.send(&json!(["add", payload, stamp])).await;
            let frame = raw.frame().await;
            let error = response_err(&frame, &stamp);
            assert_eq!(
                error["code"], "wse.server.rp.invalid-payload",
                "{codec:?}: {payload} → {frame}"
            );
            raw.expect_add_works(&format!("ok{n}")).await;
        }
    }
}

#[tokio::test]
async fn a_thousand_pipelined_calls_are_each_answered_once_with_their_own_stamp() {
    const CALLS: i64 = 1000;
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        for i in 0..CALLS {
            raw.send(&json!(["add", {"a": i, "b": i}, format!("p{i}")]))
                .await;
        }
        let mut answers: HashMap<String, Value> = HashMap::new();
        for _ in 0..CALLS {
            let frame = raw.frame().await;
            assert_eq!(frame[0], "~wse:response", "{codec:?}: {frame}");
            assert_eq!(frame.as_array().unwrap().len(), 3, "{codec:?}: {frame}");
            let stamp = frame[2].as_str().expect("a stamp").to_owned();
            let previous = answers.insert(stamp.clone(), frame[1].clone());
            assert!(previous.is_none(), "{codec:?}: {stamp} answered twice");
        }
        for i in 0..CALLS {
            assert_eq!(
                answers.get(&format!("p{i}")),
                Some(&json!(2 * i)),
                "{codec:?}: call p{i}"
            );
        }
        raw.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn a_short_call_overtakes_a_long_one_on_the_same_connection() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        raw.send(&json!(["delay", {"ms": 1500, "value": "slow"}, "long"]))
            .await;
        raw.expect_reply(
            &json!(["delay", {"ms": 0, "value": {"fast": true}}, "short"]),
            &json!(["~wse:response", {"fast": true}, "short"]),
        )
        .await;
        assert_eq!(
            raw.frame().await,
            json!(["~wse:response", "slow", "long"]),
            "{codec:?}"
        );
    }
}

#[tokio::test]
async fn echo_comes_back_as_a_message_without_stamp() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        let payload = json!({"text": "héllo", "list": [1, "two", null, true], "nested": {"k": -3}});
        raw.expect_reply(
            &json!(["echo", payload, null]),
            &json!(["echo", payload, null]),
        )
        .await;
        // An empty stamp is no stamp: still a message.
        raw.expect_reply(
            &json!(["echo", "empty stamp", ""]),
            &json!(["echo", "empty stamp", null]),
        )
        .await;
    }
}

#[tokio::test]
async fn a_short_frame_without_stamp_is_a_message() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        // Sent through the codec as a 2-array and a 1-array, not padded with nulls.
        raw.expect_reply(&json!(["echo", 7]), &json!(["echo", 7, null]))
            .await;
        raw.expect_reply(&json!(["echo"]), &json!(["echo", null, null]))
            .await;
    }
    // The exact JSON text a JS peer could send.
    let mut raw = peer(&server, Codec::Json, "bob").await;
    raw.send_text(r#"["echo",7]"#).await;
    assert_eq!(
        raw.message().await.into_text().unwrap().as_str(),
        r#"["echo",7,null]"#
    );
}

#[tokio::test]
async fn hey_sends_only_and_both_once_each() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        raw.send(&json!(["hey", {"n": 1}, null])).await;
        let mut seen = vec![raw.frame().await, raw.frame().await];
        seen.sort_by_key(|frame| frame[0].as_str().unwrap_or_default().to_owned());
        assert_eq!(
            seen,
            vec![
                json!(["both", {"n": 1}, null]),
                json!(["only", {"n": 1}, null])
            ],
            "{codec:?}"
        );
        raw.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn a_message_without_handler_gets_no_reply_and_the_connection_stays() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        raw.send(&json!(["nobody_listens", {"x": 1}, null])).await;
        raw.send(&json!(["nobody_listens_either"])).await;
        // A procedure's name without a stamp is a message, not a call: no handler, no reply.
        raw.send(&json!(["add", {"a": 1, "b": 2}, null])).await;
        raw.send(&json!(["add", {"a": 1, "b": 2}, ""])).await;
        // Frames are handled in order: a reply to the messages would come before this one.
        raw.expect_add_works("after").await;
        raw.expect_silence(QUIET).await;
    }
}

/// Calls `ask_me` with `stamp`, checks the server's inner call and returns its stamp.
async fn ask_me(raw: &mut Raw, stamp: &str) -> String {
    raw.send(&json!(["ask_me", null, stamp])).await;
    let call = raw.frame().await;
    let elements = call.as_array().expect("an array frame");
    assert_eq!(elements.len(), 3, "{call}");
    assert_eq!(elements[0], "client_sum", "{call}");
    assert_eq!(elements[1], json!({"a": 20, "b": 22}), "{call}");
    let inner = elements[2].as_str().expect("the server's call has a stamp");
    assert!(!inner.is_empty(), "{call}");
    inner.to_owned()
}

#[tokio::test]
async fn the_server_calls_the_client_and_relays_its_answer() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        let inner = ask_me(&mut raw, "S1").await;
        assert_ne!(inner, "S1", "the server's stamp is its own");
        raw.expect_reply(
            &json!(["~wse:response", 42, inner]),
            &json!(["~wse:response", 42, "S1"]),
        )
        .await;
    }
}

#[tokio::test]
async fn the_clients_error_reaches_the_caller_of_ask_me() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        let inner = ask_me(&mut raw, "S2").await;
        raw.send(&json!(["~wse:response-err", {"code": "app.nope", "details": {"x": 1}}, inner]))
            .await;
        let frame = raw.frame().await;
        let error = response_err(&frame, "S2");
        assert_eq!(error["code"], "app.nope", "{codec:?}: {frame}");
        assert_eq!(error["details"]["x"], 1, "{codec:?}: {frame}");

        // A client without `client_sum` answers not-registered; the caller sees that code.
        let inner = ask_me(&mut raw, "S3").await;
        raw.send(&json!(["~wse:response-err", {"code": "wse.server.rp.not-registered"}, inner]))
            .await;
        let frame = raw.frame().await;
        let error = response_err(&frame, "S3");
        assert_eq!(
            error["code"], "wse.server.rp.not-registered",
            "{codec:?}: {frame}"
        );
        raw.expect_add_works("after").await;
    }
}

#[tokio::test]
async fn the_server_calls_each_ask_me_with_a_fresh_stamp() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        let first = ask_me(&mut raw, "A").await;
        let second = ask_me(&mut raw, "B").await;
        assert_ne!(first, second, "{codec:?}");
        // Answered in reverse order, each reaches its own caller.
        raw.expect_reply(
            &json!(["~wse:response", "second", second]),
            &json!(["~wse:response", "second", "B"]),
        )
        .await;
        raw.expect_reply(
            &json!(["~wse:response", "first", first]),
            &json!(["~wse:response", "first", "A"]),
        )
        .await;
    }
}

#[tokio::test]
async fn a_response_with_an_unknown_stamp_is_dropped_without_reply() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        raw.send(&json!(["~wse:response", 1, "nobody"])).await;
        raw.send(&json!(["~wse:response-err", {"code": "app.x"}, "nobody-either"]))
            .await;
        // Answered once already: a second answer to the same call is unmatched too.
        let inner = ask_me(&mut raw, "S").await;
        raw.send(&json!(["~wse:response", 42, inner])).await;
        assert_eq!(raw.frame().await, json!(["~wse:response", 42, "S"]));
        raw.send(&json!(["~wse:response", 43, inner])).await;
        raw.expect_add_works("after").await;
        raw.expect_silence(QUIET).await;
    }
}

/// Frames that break the protocol, as messages of `codec`.
fn violations(codec: Codec) -> Vec<(String, Message)> {
    let shapes = [
        json!({}),
        json!([]),
        json!([1, 2, null]),
        json!(["", 1, null]),
        json!(["a", 1, {"x": 1}]),
        json!(["a", 1, 7]),
        json!(["a", 1, null, 4]),
        json!(["~wse:hi", {"identity": "secret", "meta": {"user_id": "ann"}}, null]),
        json!(["~wse:welcome", null, null]),
    ];
    let mut all: Vec<(String, Message)> = shapes
        .iter()
        .map(|shape| (shape.to_string(), codec.message(shape)))
        .collect();
    match codec {
        Codec::Json => {
            all.push(("text `not json`".into(), Message::Text("not json".into())));
            all.push((
                "text `[\"a\",1,null`".into(),
                Message::Text(r#"["a",1,null"#.into()),
            ));
            all.push((
                "binary on JSON".into(),
                Message::Binary(br#"["echo",1,null]"#.to_vec().into()),
            ));
        }
        Codec::MsgPack => {
            all.push((
                "text on MessagePack".into(),
                Message::Text(r#"["echo",1,null]"#.into()),
            ));
            all.push((
                "a map".into(),
                Message::Binary(
                    rmp_serde::to_vec_named(&json!({"type": "echo"}))
                        .unwrap()
                        .into(),
                ),
            ));
            all.push(("bytes 0xc1".into(), Message::Binary(vec![0xc1].into())));
            let mut trailing = rmp_serde::to_vec(&("echo", 1, ())).unwrap();
            trailing.push(0x01);
            all.push(("trailing bytes".into(), Message::Binary(trailing.into())));
        }
    }
    all
}

#[tokio::test]
async fn a_protocol_violation_closes_that_connection_only() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut bystander = peer(&server, codec, "bystander").await;
        for (n, (what, message)) in violations(codec).into_iter().enumerate() {
            let mut raw = Raw::login(server.addr(), codec, &format!("victim{n}-{codec:?}")).await;
            raw.expect_add_works("before").await;
            raw.send_message(message).await;
            assert_eq!(
                raw.next().await,
                Seen::Close(1000, "wse.protocol-error".into()),
                "{codec:?}: {what}"
            );
            bystander
                .send(&json!(["add", {"a": n, "b": 1}, format!("b{n}")]))
                .await;
            assert_eq!(
                bystander.frame().await,
                json!(["~wse:response", n + 1, format!("b{n}")]),
                "{codec:?}: bystander after {what}"
            );
        }
    }
}

#[tokio::test]
async fn drop_me_closes_with_the_given_reason() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        raw.send(&json!(["drop_me", {"reason": "bye"}, "d1"])).await;
        // The close is requested inside the procedure: its response may or may not get out
        // before the close frame, nothing else may.
        let mut next = raw.next().await;
        if let Seen::Frame(frame) = &next {
            assert_eq!(frame, &json!(["~wse:response", null, "d1"]), "{codec:?}");
            next = raw.next().await;
        }
        assert_eq!(next, Seen::Close(1000, "bye".into()), "{codec:?}");
    }
}

#[tokio::test]
async fn calls_and_messages_interleave_on_one_connection() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = peer(&server, codec, "ann").await;
        raw.send(&json!(["delay", {"ms": 300, "value": "late"}, "d"]))
            .await;
        raw.expect_reply(
            &json!(["echo", "meanwhile", null]),
            &json!(["echo", "meanwhile", null]),
        )
        .await;
        assert_eq!(
            raw.frame().await,
            json!(["~wse:response", "late", "d"]),
            "{codec:?}"
        );
        let mut stamps = HashSet::new();
        for i in 0..3 {
            raw.send(&json!(["add", {"a": i, "b": 0}, format!("i{i}")]))
                .await;
            raw.send(&json!(["echo", i, null])).await;
        }
        let mut echoes = Vec::new();
        for _ in 0..6 {
            let frame = raw.frame().await;
            if frame[0] == "echo" {
                echoes.push(frame);
            } else {
                assert_eq!(frame[0], "~wse:response", "{codec:?}: {frame}");
                let stamp = frame[2].as_str().unwrap().to_owned();
                let i: i64 = stamp[1..].parse().unwrap();
                assert_eq!(frame[1], json!(i), "{codec:?}: {frame}");
                assert!(stamps.insert(stamp), "{codec:?}: {frame} twice");
            }
        }
        // Messages are handled in arrival order.
        assert_eq!(
            echoes,
            vec![
                json!(["echo", 0, null]),
                json!(["echo", 1, null]),
                json!(["echo", 2, null])
            ],
            "{codec:?}"
        );
        assert_eq!(stamps.len(), 3, "{codec:?}");
    }
}

#[tokio::test]
async fn no_args_takes_null_an_empty_object_and_a_missing_payload_alike() {
    let server = wse_server::Server::builder(|handshake| async move {
        wse_server::Decision::accept(
            handshake.identity.as_str().unwrap_or("x"),
            serde_json::Value::Null,
        )
    })
    .add_protocol(wse_server::MsgPack)
    .build();
    server
        .register(
            "ping",
            |_: wse_server::Connection, wse_server::NoArgs| async { Ok("pong") },
        )
        .unwrap();
    server
        .on(
            "tick",
            |conn: wse_server::Connection, wse_server::NoArgs| {
                let _ = conn.send("tock", &());
            },
        )
        .unwrap();
    let server = wse_tests::start(server).await;
    for codec in Codec::BOTH {
        let mut raw = Raw::login_identity(server.addr(), codec, "ann").await;
        for (payload, stamp) in [(json!(null), "n"), (json!({}), "e")] {
            raw.expect_reply(
                &json!(["ping", payload, stamp]),
                &json!(["~wse:response", "pong", stamp]),
            )
            .await;
        }
        raw.send(&json!(["ping", {"a": 1}, "a"])).await;
        let frame = raw.frame().await;
        let error = response_err(&frame, "a");
        assert_eq!(error["code"], "wse.server.rp.invalid-payload", "{codec:?}");
        raw.send(&json!(["ping", 7, "7"])).await;
        let frame = raw.frame().await;
        assert_eq!(
            response_err(&frame, "7")["code"],
            "wse.server.rp.invalid-payload"
        );
        // A message without a payload element, and one with `{}`.
        for frame in [json!(["tick"]), json!(["tick", {}, null])] {
            raw.expect_reply(&frame, &json!(["tock", null, null])).await;
        }
    }
}
