//! Hostile and broken input: each gets the documented close, never a panic, and the other
//! connections go on. Oversized messages (1009), invalid UTF-8 (1007), broken framing (1002),
//! deep nesting, a challenge answer nobody asked for, a client that leaves mid-call.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use wse_examples::Auth;
use wse_server::{Connection, Decision, Event, MsgPack, Server, ServerError};
use wse_tests::{Codec, Raw, TestServer, next_event, pick, start, start_demo, within};

/// A server accepting any non-empty string identity as that user, with a small message limit.
async fn small_server(max_message_size: usize) -> TestServer {
    let server = Server::builder(|handshake| async move {
        match handshake.identity.as_str() {
            Some(user) if !user.is_empty() => Decision::accept(user, Value::Null),
            _ => Decision::refuse(),
        }
    })
    .add_protocol(MsgPack)
    .conn_per_user(8)
    .max_message_size(max_message_size)
    .build();
    server
        .register(
            "echo",
            |_: Connection, value: Value| async move { Ok(value) },
        )
        .unwrap();
    server
        .register("slow", |_: Connection, _: Value| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok("done")
        })
        .unwrap();
    start(server).await
}

async fn login(server: &TestServer, codec: Codec, user: &str) -> Raw {
    Raw::login_identity(server.addr(), codec, user).await
}

/// A bystander's call still works.
async fn still_served(raw: &mut Raw, stamp: &str) {
    raw.send(&json!(["echo", stamp, stamp])).await;
    assert_eq!(raw.frame().await, json!(["~wse:response", stamp, stamp]));
}

#[tokio::test]
async fn an_oversized_message_is_closed_with_1009_and_reported() {
    let server = small_server(1024).await;
    let mut events = server.server.events();
    for codec in Codec::BOTH {
        let mut bystander = login(&server, codec, "calm").await;
        let mut big = login(&server, codec, "big").await;
        // Just under the limit passes.
        big.send(&json!(["echo", "x".repeat(900), "ok"])).await;
        assert_eq!(big.frame().await[2], "ok");
        big.send(&json!(["echo", "x".repeat(4096), "big"])).await;
        big.expect_close(1009, "wse.message-too-big").await;
        still_served(&mut bystander, "after-big").await;
    }
    let reported = next_event(&mut events, "error event", |event| match event {
        Event::Error {
            error: ServerError::Transport(text),
            ..
        } => Some(text.clone()),
        _ => None,
    })
    .await;
    assert!(reported.to_lowercase().contains("too"), "{reported}");
}

#[tokio::test]
async fn an_oversized_hi_is_closed_with_1009_before_any_welcome() {
    let server = small_server(1024).await;
    let mut raw = Raw::connect(server.addr(), Codec::Json).await;
    raw.send(&json!(["~wse:hi", {"identity": "x".repeat(4096)}, null]))
        .await;
    raw.expect_close(1009, "wse.message-too-big").await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_message_is_closed_with_1007() {
    let server = small_server(1 << 20).await;
    let mut bystander = login(&server, Codec::Json, "calm").await;
    let mut raw = login(&server, Codec::Json, "bad").await;
    let frame = Frame::message(
        vec![b'[', b'"', 0xff, 0xfe, b'"', b']'],
        OpCode::Data(Data::Text),
        true,
    );
    raw.send_message(Message::Frame(frame)).await;
    raw.expect_close(1007, "wse.invalid-utf8").await;
    still_served(&mut bystander, "after-utf8").await;
}

#[tokio::test]
async fn fragments_and_control_frames_out_of_order_are_closed_with_1002() {
    let server = small_server(1 << 20).await;
    let mut bystander = login(&server, Codec::Json, "calm").await;

    // A continuation with nothing to continue.
    let mut raw = login(&server, Codec::Json, "bad").await;
    let orphan = Frame::message(b"[\"echo\"]".to_vec(), OpCode::Data(Data::Continue), true);
    raw.send_message(Message::Frame(orphan)).await;
    raw.expect_close(1002, "wse.protocol-error").await;

    // A new message while another is still fragmented.
    let mut raw = login(&server, Codec::Json, "bad").await;
    let first = Frame::message(b"[\"ec".to_vec(), OpCode::Data(Data::Text), false);
    let second = Frame::message(b"[\"echo\"]".to_vec(), OpCode::Data(Data::Text), true);
    raw.send_message(Message::Frame(first)).await;
    raw.send_message(Message::Frame(second)).await;
    raw.expect_close(1002, "wse.protocol-error").await;

    // A fragmented control frame.
    let mut raw = login(&server, Codec::Json, "bad").await;
    let mut ping = Frame::ping(b"p".to_vec());
    ping.header_mut().is_final = false;
    raw.send_message(Message::Frame(ping)).await;
    raw.expect_close(1002, "wse.protocol-error").await;

    // A fragmented message in order is fine, with a ping in between.
    let mut raw = login(&server, Codec::Json, "fine").await;
    let head = Frame::message(b"[\"echo\", \"fr".to_vec(), OpCode::Data(Data::Text), false);
    let tail = Frame::message(
        b"ag\", \"f1\"]".to_vec(),
        OpCode::Data(Data::Continue),
        true,
    );
    raw.send_message(Message::Frame(head)).await;
    raw.send_message(Message::Ping(b"between".to_vec().into()))
        .await;
    raw.send_message(Message::Frame(tail)).await;
    assert_eq!(raw.frame().await, json!(["~wse:response", "frag", "f1"]));

    still_served(&mut bystander, "after-framing").await;
}

#[tokio::test]
async fn deeply_nested_payloads_are_refused_without_overflowing_the_stack() {
    let server = small_server(1 << 20).await;
    let mut bystander = login(&server, Codec::Json, "calm").await;
    for depth in [200usize, 100_000] {
        let mut raw = login(&server, Codec::Json, "deep").await;
        let nested = format!(
            "[\"echo\", {}{}, \"d\"]",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        raw.send_text(&nested).await;
        raw.expect_close(1000, "wse.protocol-error").await;

        let mut raw = login(&server, Codec::MsgPack, "deep").await;
        let mut bytes = vec![0x93, 0xa4, b'e', b'c', b'h', b'o'];
        bytes.extend(std::iter::repeat_n(0x91u8, depth));
        bytes.push(0xc0);
        bytes.extend([0xa1, b'd']);
        raw.send_message(Message::Binary(bytes.into())).await;
        raw.expect_close(1000, "wse.protocol-error").await;
    }
    // Moderate nesting is a payload like any other.
    let mut raw = login(&server, Codec::Json, "nested").await;
    let nested: Value =
        serde_json::from_str(&format!("{}1{}", "[".repeat(50), "]".repeat(50))).unwrap();
    raw.send(&json!(["echo", nested, "n"])).await;
    assert_eq!(raw.frame().await, json!(["~wse:response", nested, "n"]));
    still_served(&mut bystander, "after-deep").await;
}

#[tokio::test]
async fn a_challenge_answer_nobody_asked_for_is_a_protocol_error() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        // Before hi.
        let mut raw = Raw::connect(server.addr(), codec).await;
        raw.send(&json!(["~wse:challenge", "answer", null])).await;
        raw.expect_close(1000, "wse.protocol-error").await;
        // After the welcome.
        let mut raw = Raw::login(server.addr(), codec, "ann").await;
        raw.send(&json!(["~wse:challenge", "answer", null])).await;
        raw.expect_close(1000, "wse.protocol-error").await;
    }
}

#[tokio::test]
async fn a_client_that_leaves_mid_call_harms_nobody() {
    let server = small_server(1 << 20).await;
    let mut events = server.server.events();
    let mut bystander = login(&server, Codec::Json, "calm").await;
    for abrupt in [false, true] {
        let mut raw = login(&server, Codec::Json, "leaver").await;
        raw.send(&json!(["slow", null, "s"])).await;
        if abrupt {
            drop(raw);
        } else {
            raw.close(1000, "wse.by-client").await;
        }
        let code = next_event(&mut events, "disconnected", |event| {
            let (user, code, _) = pick::disconnected(event)?;
            (user == "leaver").then_some(code)
        })
        .await;
        assert_eq!(code, if abrupt { 1006 } else { 1000 });
    }
    // The slow calls finish into closed connections; the server goes on.
    tokio::time::sleep(Duration::from_millis(400)).await;
    still_served(&mut bystander, "after-leavers").await;
    assert_eq!(server.server.counts().await.unwrap(), (1, 1));
}

#[tokio::test]
async fn serve_io_runs_the_whole_protocol_over_any_stream() {
    let server = small_server(1 << 20).await;
    let (client_side, server_side) = tokio::io::duplex(64 << 10);
    let remote: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let serving = tokio::spawn({
        let server = server.server.clone();
        async move { server.serve_io(server_side, remote).await }
    });
    let request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        "ws://in-memory/",
    )
    .unwrap();
    let mut request = request;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "wse-default-json".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, client_side)
        .await
        .unwrap();
    let mut exchange = async |frame: Value| -> Value {
        ws.send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
        let reply = within("reply", ws.next()).await.unwrap().unwrap();
        serde_json::from_str(reply.to_text().unwrap()).unwrap()
    };
    assert_eq!(
        exchange(json!(["~wse:hi", {"identity": "mem"}, null])).await,
        json!(["~wse:welcome", null, null])
    );
    assert_eq!(
        exchange(json!(["echo", 5, "m"])).await,
        json!(["~wse:response", 5, "m"])
    );
    assert_eq!(
        server.server.connections_of("mem").await.unwrap()[0].remote_addr(),
        remote
    );
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = within("close answer", ws.next()).await {}
    within("serve_io ends", serving).await.unwrap();
}

/// Found by the `handshake` fuzz target: the delivery API sent any type, so a client could
/// make the demo broadcast `["", …]` or `["~wse:welcome", …]` to everyone.
#[tokio::test]
async fn application_sends_cannot_forge_empty_or_reserved_frame_types() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut caller = Raw::login(server.addr(), codec, "caller").await;
        let mut bystander = Raw::login(server.addr(), codec, "bystander").await;
        for (i, kind) in ["", "~wse:welcome", "~wse:challenge"]
            .into_iter()
            .enumerate()
        {
            let stamp = format!("b{i}");
            caller
                .send(&json!(["broadcast", {"type": kind, "payload": true}, stamp]))
                .await;
            let reply = caller.frame().await;
            assert_eq!(reply[0], "~wse:response-err", "{codec:?} {kind:?}: {reply}");
            assert_eq!(reply[1]["code"], "wse.server.rp.invalid-payload");
            assert_eq!(reply[2], stamp.as_str());
            bystander.expect_silence(Duration::from_millis(200)).await;

            let stamp = format!("u{i}");
            let to_user = json!({"user": "bystander", "type": kind, "payload": 1});
            caller.send(&json!(["send_to_user", to_user, stamp])).await;
            let reply = caller.frame().await;
            assert_eq!(reply[0], "~wse:response-err", "{codec:?} {kind:?}: {reply}");
            bystander.expect_silence(Duration::from_millis(200)).await;
        }
    }
}

#[test]
fn the_server_refuses_to_pack_what_a_frame_cannot_carry() {
    let server = wse_examples::demo_server(Auth::Plain);
    for kind in ["", "~wse:welcome", "~wse:challenge", "~wse:response"] {
        assert_eq!(
            server.pack(kind, &1).unwrap_err(),
            wse_server::SendError::InvalidKind(kind.to_owned())
        );
    }
    assert!(server.pack("news", &1).is_ok());
}
