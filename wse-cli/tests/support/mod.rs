//! What the `wse` binary's test files share: running it to its end, bounded; and a server of
//! the test's own that speaks the protocol by hand, for what the demo never does (close before
//! the welcome with a given code, refuse a reconnect, send MessagePack's binary data).

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::ffi::OsStr;
use std::future::Future;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use wse_core::{MessageKind, Protocol};

/// How long any single wait may take.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Runs `wse` with `args` to its end (it must end by itself within [`PATIENCE`]).
pub async fn wse<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let running = Command::new(env!("CARGO_BIN_EXE_wse"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("wse ends by itself")
        .expect("wse runs")
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One connection to a [`scripted`] server, past its upgrade: frames by hand in `codec`.
pub struct Raw {
    ws: WebSocketStream<TcpStream>,
    codec: &'static dyn Protocol,
}

/// A frame as it came: type, payload (as JSON) and stamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub kind: String,
    pub payload: Value,
    pub stamp: Option<String>,
}

impl Raw {
    /// The next frame, or `None` when the client closed or the socket ended.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time")?
                .ok()?;
            if !(message.is_text() || message.is_binary()) {
                if message.is_close() {
                    return None;
                }
                continue;
            }
            let data = message.into_data();
            let frame = self.codec.unpack(&data).expect("a frame");
            return Some(Frame {
                kind: frame.kind.to_string(),
                payload: self.codec.decode(frame.payload).expect("a JSON payload"),
                stamp: frame.stamp().map(str::to_owned),
            });
        }
    }

    /// Sends the frame `[kind, payload, stamp]`.
    pub async fn send<T: Serialize + ?Sized>(
        &mut self,
        kind: &str,
        payload: &T,
        stamp: Option<&str>,
    ) {
        let frame = self.codec.encode(kind, payload, stamp).expect("encodes");
        let message = match self.codec.message_kind() {
            MessageKind::Text => Message::text(String::from_utf8(frame).unwrap()),
            MessageKind::Binary => Message::binary(frame),
        };
        // The client may be gone already: what it does then is what the test looks at.
        let _ = self.ws.send(message).await;
    }

    /// Reads the hi and welcomes it.
    pub async fn welcome(&mut self) {
        let hi = self.next().await.expect("a hi");
        assert_eq!(hi.kind, "~wse:hi");
        self.send("~wse:welcome", &serde_json::json!({"raw": true}), None)
            .await;
    }

    /// Reads until a call of `procedure`: its stamp.
    pub async fn call_of(&mut self, procedure: &str) -> String {
        loop {
            let frame = self.next().await.expect("a call");
            if frame.kind == procedure {
                return frame.stamp.expect("a call has a stamp");
            }
        }
    }

    /// Closes with `code` and `reason`, and waits (a little) for the client's answer.
    pub async fn close(mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// A server on a free port that speaks `codec` (choosing its name in the upgrade) and hands
/// each connection, numbered from 0 in the order they come, to `script`.
pub async fn scripted<F, Running>(codec: &'static dyn Protocol, script: F) -> SocketAddr
where
    F: Fn(usize, Raw) -> Running + Send + Sync + 'static,
    Running: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = Arc::new(script);
    let count = AtomicUsize::new(0);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::Relaxed);
            let script = Arc::clone(&script);
            tokio::spawn(async move {
                let name = codec.name();
                // tungstenite's callback shape, its large error response included.
                #[allow(clippy::result_large_err)]
                let choose = |_: &Request, mut response: Response| {
                    response
                        .headers_mut()
                        .insert("sec-websocket-protocol", name.parse().unwrap());
                    Ok(response)
                };
                if let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, choose).await {
                    script(n, Raw { ws, codec }).await;
                }
            });
        }
    });
    addr
}
