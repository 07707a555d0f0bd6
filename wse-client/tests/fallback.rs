//! `Client::on_any`: the fallback gets, with their type and payload, the messages no handler
//! of their own takes; a type's own handler comes first; without the fallback they are
//! reported as ignored again. The server is a raw WebSocket peer that speaks the frames by
//! hand, so this needs no wse server.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// The handshake callback's error type is tungstenite's, a whole HTTP response.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use wse_client::{Client, ClientEvent};

const PATIENCE: Duration = Duration::from_secs(10);

/// A peer that welcomes one client, then sends each frame it is given on `frames`.
async fn raw_server() -> (String, mpsc::UnboundedSender<&'static str>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (frames, mut to_send) = mpsc::unbounded_channel::<&'static str>();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let choose = |_: &Request, mut response: Response| {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("wse-default-json"),
            );
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, choose)
            .await
            .unwrap();
        // The hi, then the welcome.
        let hi = ws.next().await.unwrap().unwrap();
        assert!(hi.to_text().unwrap().starts_with(r#"["~wse:hi""#), "{hi:?}");
        ws.send(Message::text(r#"["~wse:welcome", {}, null]"#))
            .await
            .unwrap();
        // Sends what it is given, and reads (which answers the client's close) meanwhile.
        loop {
            tokio::select! {
                frame = to_send.recv() => match frame {
                    Some(frame) => ws.send(Message::text(frame)).await.unwrap(),
                    None => break,
                },
                read = ws.next() => match read {
                    Some(Ok(_)) => {}
                    _ => return,
                },
            }
        }
        while let Some(Ok(_)) = ws.next().await {}
    });
    (url, frames)
}

#[tokio::test]
async fn the_fallback_takes_what_no_handler_takes() {
    let (url, frames) = raw_server().await;
    let client = Client::builder(url).build();
    let (seen, mut seeing) = mpsc::unbounded_channel();
    let own = seen.clone();
    client
        .on("known", move |_, payload: Value| {
            own.send(("own".to_owned(), "known".to_owned(), payload))
                .unwrap();
        })
        .unwrap();
    client.on_any(move |_, kind: &str, payload: Value| {
        seen.send(("any".to_owned(), kind.to_owned(), payload))
            .unwrap();
    });
    let mut events = client.events();
    client.connect(json!("me"), json!({})).await.unwrap();

    frames.send(r#"["known", 1, null]"#).unwrap();
    frames.send(r#"["unknown", {"x": [1, 2]}, null]"#).unwrap();
    // A shorter frame: the payload is null.
    frames.send(r#"["bare"]"#).unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let message = tokio::time::timeout(PATIENCE, seeing.recv())
            .await
            .unwrap()
            .unwrap();
        got.push(message);
    }
    assert_eq!(
        got,
        [
            ("own".into(), "known".into(), json!(1)),
            ("any".into(), "unknown".into(), json!({"x": [1, 2]})),
            ("any".into(), "bare".into(), Value::Null),
        ]
    );

    // Without the fallback, the same message is reported as ignored.
    assert!(client.off_any());
    assert!(!client.off_any());
    frames.send(r#"["unknown", 2, null]"#).unwrap();
    let ignored = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await.unwrap() {
                ClientEvent::Ignored { kind } => break kind,
                _ => continue,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ignored, "unknown");
    assert!(
        seeing.try_recv().is_err(),
        "the removed fallback saw nothing"
    );
    client.close("wse.by-client").await;
}

#[tokio::test]
async fn a_payload_that_does_not_fit_is_reported_and_skipped() {
    let (url, frames) = raw_server().await;
    let client = Client::builder(url).build();
    let (seen, mut seeing) = mpsc::unbounded_channel();
    client.on_any(move |_, kind: &str, number: i64| {
        seen.send((kind.to_owned(), number)).unwrap();
    });
    let mut events = client.events();
    client.connect(json!("me"), json!({})).await.unwrap();
    frames.send(r#"["text", "not a number", null]"#).unwrap();
    frames.send(r#"["number", 7, null]"#).unwrap();
    let got = tokio::time::timeout(PATIENCE, seeing.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ("number".to_owned(), 7));
    let reported = tokio::time::timeout(PATIENCE, async {
        loop {
            if let ClientEvent::Report(report) = events.recv().await.unwrap() {
                break format!("{report:?}");
            }
        }
    })
    .await
    .unwrap();
    assert!(
        reported.contains("InvalidPayload") && reported.contains("text"),
        "{reported}"
    );
    client.close("wse.by-client").await;
}
