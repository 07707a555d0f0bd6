//! The handshake, frame by frame, for both codecs: hi → welcome, refusal, codec negotiation,
//! frames before hi, and the HMAC challenge (right, wrong, replayed, expired).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use serde_json::{Value, json};
use wse_examples::Auth;
use wse_server::{Decision, HmacChallenge, Server};
use wse_tests::{Codec, Raw, Seen, TestServer, hmac_solution, start, start_demo};

/// Sends each of `firsts` as the first frame of a fresh connection, on both codecs, and
/// expects the server to close that connection with `reason`.
async fn expect_each_first_frame_closes(server: &TestServer, firsts: &[Value], reason: &str) {
    for codec in Codec::BOTH {
        for first in firsts {
            let mut raw = Raw::connect(server.addr(), codec).await;
            raw.send(first).await;
            raw.expect_close(1000, reason).await;
        }
    }
}

/// Opens a socket to the HMAC demo, says hi as ann with the identity `"secret"` and returns
/// the socket with the frame that came back (the challenge).
async fn challenged(server: &TestServer, codec: Codec) -> (Raw, Value) {
    let mut raw = Raw::connect(server.addr(), codec).await;
    raw.send(&json!(["~wse:hi", {"identity": "secret", "meta": {"user_id": "ann"}}, null]))
        .await;
    let quest = raw.frame().await;
    (raw, quest)
}

#[tokio::test]
async fn hi_gets_the_welcome_with_cid_and_meta() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut raw = Raw::connect(server.addr(), codec).await;
        raw.send(&json!(["~wse:hi", {"identity": "secret", "meta": {"user_id": "ann", "device": "phone"}}, null]))
            .await;
        assert_eq!(
            raw.frame().await,
            json!(["~wse:welcome", {"cid": "ann", "meta": {"user_id": "ann", "device": "phone"}}, null]),
            "{codec:?}"
        );
    }
}

#[tokio::test]
async fn the_json_welcome_is_byte_for_byte_what_wse_sends() {
    let server = start_demo(Auth::Plain).await;
    let mut raw = Raw::connect(server.addr(), Codec::Json).await;
    raw.send_text(r#"["~wse:hi",{"identity":"secret","meta":{"user_id":"ann"}}]"#)
        .await;
    assert_eq!(
        raw.message().await.into_text().unwrap().as_str(),
        r#"["~wse:welcome",{"cid":"ann","meta":{"user_id":"ann"}},null]"#
    );
}

#[tokio::test]
async fn a_refused_identity_is_closed_with_not_authorized() {
    let server = start_demo(Auth::Plain).await;
    let his = [
        json!(["~wse:hi", {"identity": "wrong", "meta": {"user_id": "ann"}}, null]),
        json!(["~wse:hi", {"identity": "secret", "meta": {}}, null]),
        json!(["~wse:hi", {"identity": "secret", "meta": {"user_id": ""}}, null]),
        json!(["~wse:hi", {"identity": "secret"}, null]),
    ];
    expect_each_first_frame_closes(&server, &his, "wse.not-authorized").await;
}

#[tokio::test]
async fn a_frame_other_than_hi_from_a_stranger_is_a_protocol_error() {
    let server = start_demo(Auth::Plain).await;
    let firsts = [
        json!(["add", {"a": 1, "b": 2}, "s1"]),
        json!(["echo", 1, null]),
        json!(["~wse:welcome", null, null]),
    ];
    expect_each_first_frame_closes(&server, &firsts, "wse.protocol-error").await;
}

#[tokio::test]
async fn a_hi_payload_that_is_not_an_object_is_a_protocol_error() {
    let server = start_demo(Auth::Plain).await;
    // PROTOCOL.md defines the payload as an object: not the array `[identity, meta]`, which a
    // derived struct decoder would take for one, nor any other value.
    let his = [
        json!(["~wse:hi", ["secret", {"user_id": "ann"}], null]),
        json!(["~wse:hi", "secret", null]),
        json!(["~wse:hi", 7, null]),
    ];
    expect_each_first_frame_closes(&server, &his, "wse.protocol-error").await;
    // The same object is accepted.
    let mut raw = Raw::connect(server.addr(), Codec::Json).await;
    raw.send(&json!(["~wse:hi", {"identity": "secret", "meta": {"user_id": "ann"}}, null]))
        .await;
    assert_eq!(raw.frame().await[0], "~wse:welcome");
}

#[tokio::test]
async fn a_connection_without_the_servers_codec_is_closed_with_protocol_error() {
    let server = start_demo(Auth::Plain).await;
    for offer in [&[][..], &["wse-other"][..]] {
        let mut raw = Raw::open(server.addr(), Codec::Json, offer).await;
        assert_eq!(raw.selected, None);
        raw.expect_close(1000, "wse.protocol-error").await;
    }
}

#[tokio::test]
async fn the_server_picks_the_first_offered_codec_it_speaks() {
    let server = start_demo(Auth::Plain).await;
    let raw = Raw::open(
        server.addr(),
        Codec::MsgPack,
        &["wse-other", "wse-msgpack", "wse-default-json"],
    )
    .await;
    assert_eq!(raw.selected.as_deref(), Some("wse-msgpack"));
}

#[tokio::test]
async fn frames_sent_while_identify_runs_are_ignored() {
    let server = start(
        Server::builder(|_| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Decision::accept("slow", json!("hello"))
        })
        .add_protocol(wse_server::MsgPack)
        .build(),
    )
    .await;
    server
        .server
        .register("ping", |_, _: ()| async { Ok("pong") })
        .unwrap();
    for codec in Codec::BOTH {
        let mut raw = Raw::connect(server.addr(), codec).await;
        raw.send(&json!(["~wse:hi", {"identity": 1}, null])).await;
        raw.send(&json!(["ping", null, "early"])).await;
        assert_eq!(raw.frame().await, json!(["~wse:welcome", "hello", null]));
        raw.send(&json!(["ping", null, "late"])).await;
        assert_eq!(raw.frame().await, json!(["~wse:response", "pong", "late"]));
    }
}

#[tokio::test]
async fn the_hmac_challenge_accepts_the_right_answer() {
    let server = start_demo(Auth::Hmac).await;
    for codec in Codec::BOTH {
        let (mut raw, quest) = challenged(&server, codec).await;
        assert_eq!(quest[0], "~wse:challenge");
        assert_eq!(quest[2], json!(null));
        let nonce = quest[1]["nonce"].as_str().unwrap();
        assert_eq!(nonce.len(), 32);
        assert!(
            nonce
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now_ms.abs_diff(quest[1]["timestamp"].as_u64().unwrap()) < 60_000);
        raw.expect_reply(
            &json!(["~wse:challenge", hmac_solution("s3cret", &quest[1]), null]),
            &json!(["~wse:welcome", {"cid": "ann", "cra": true, "meta": {"user_id": "ann"}}, null]),
        )
        .await;
    }
}

#[tokio::test]
async fn the_hmac_challenge_refuses_wrong_answers_and_unknown_identities() {
    let server = start_demo(Auth::Hmac).await;
    for codec in Codec::BOTH {
        // Wrong secret.
        let (mut raw, quest) = challenged(&server, codec).await;
        raw.send(&json!([
            "~wse:challenge",
            hmac_solution("guess", &quest[1]),
            null
        ]))
        .await;
        raw.expect_close(1000, "wse.not-authorized").await;

        // Not even a string.
        let (mut raw, _quest) = challenged(&server, codec).await;
        raw.send(&json!(["~wse:challenge", {"answer": 1}, null]))
            .await;
        raw.expect_close(1000, "wse.not-authorized").await;

        // An identity without a secret is refused before any challenge.
        let mut raw = Raw::connect(server.addr(), codec).await;
        raw.send(&json!(["~wse:hi", {"identity": "nobody", "meta": {"user_id": "ann"}}, null]))
            .await;
        raw.expect_close(1000, "wse.not-authorized").await;

        // Anything but the answer while challenged breaks the protocol.
        let (mut raw, _quest) = challenged(&server, codec).await;
        raw.send(&json!(["add", {"a": 1, "b": 1}, "s"])).await;
        raw.expect_close(1000, "wse.protocol-error").await;
    }
}

#[tokio::test]
async fn a_replayed_answer_is_refused() {
    let server = start_demo(Auth::Hmac).await;
    let (mut first, quest) = challenged(&server, Codec::Json).await;
    let answer = hmac_solution("s3cret", &quest[1]);
    first.send(&json!(["~wse:challenge", answer, null])).await;
    assert_eq!(first.frame().await[0], "~wse:welcome");

    // The same answer on a new connection (a new quest) is worthless.
    let (mut replay, second_quest) = challenged(&server, Codec::Json).await;
    assert_ne!(second_quest[1]["nonce"], quest[1]["nonce"]);
    replay.send(&json!(["~wse:challenge", answer, null])).await;
    replay.expect_close(1000, "wse.not-authorized").await;
}

#[tokio::test]
async fn an_expired_quest_is_refused() {
    let server = start(
        Server::builder(|handshake| async move { Decision::accept("ann", handshake.identity) })
            .challenge(
                HmacChallenge::new(|_| async { Some(b"k".to_vec()) })
                    .validity(Duration::from_millis(100)),
            )
            .build(),
    )
    .await;
    let mut raw = Raw::connect(server.addr(), Codec::Json).await;
    raw.send(&json!(["~wse:hi", {"identity": "ann"}, null]))
        .await;
    let quest = raw.frame().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    raw.send(&json!([
        "~wse:challenge",
        hmac_solution("k", &quest[1]),
        null
    ]))
    .await;
    raw.expect_close(1000, "wse.not-authorized").await;

    // Answered in time, the same server accepts.
    let mut raw = Raw::connect(server.addr(), Codec::Json).await;
    raw.send(&json!(["~wse:hi", {"identity": "ann"}, null]))
        .await;
    let quest = raw.frame().await;
    raw.expect_reply(
        &json!(["~wse:challenge", hmac_solution("k", &quest[1]), null]),
        &json!(["~wse:welcome", "ann", null]),
    )
    .await;
}

#[tokio::test]
async fn a_socket_that_never_says_hi_is_closed_after_the_handshake_timeout() {
    let server = start(
        Server::builder(|_| async { Decision::refuse() })
            .handshake_timeout(Duration::from_millis(200))
            .build(),
    )
    .await;
    let mut raw = Raw::connect(server.addr(), Codec::Json).await;
    assert!(matches!(raw.next().await, Seen::Close(1000, _) | Seen::End));
}
