//! Opening a connection: the WebSocket (over TLS for `wss://` with the `rustls` feature),
//! then `~wse:hi`, the challenge if the server sends one, and the welcome.

use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use wse_core::frame::{self, Hi};
use wse_core::outbox::Close;
use wse_core::transport::{Incoming, Link, message_data};
use wse_core::{CloseReason, close_code};

use crate::client::{Client, ConnectError};

/// The socket of a client connection.
pub(crate) type Socket = MaybeTlsStream<TcpStream>;

/// Opens the WebSocket to `url`, offering the client's codec, and wraps it in a [`Link`].
pub(crate) async fn open(client: &Client, url: &str) -> Result<Link<Socket>, ConnectError> {
    let inner = &client.0;
    let config = &inner.config;
    let mut request = url
        .into_client_request()
        .map_err(|e| ConnectError::Transport(e.to_string()))?;
    let name = HeaderValue::from_str(inner.protocol.name())
        .map_err(|e| ConnectError::Transport(e.to_string()))?;
    request.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, name);
    let websocket = WebSocketConfig::default()
        .read_buffer_size(8 << 10)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size));
    #[cfg(feature = "rustls")]
    let opened = {
        let connector = inner.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        tokio_tungstenite::connect_async_tls_with_config(request, Some(websocket), true, connector)
            .await
    };
    #[cfg(not(feature = "rustls"))]
    let opened = tokio_tungstenite::connect_async_with_config(request, Some(websocket), true).await;
    let (ws, _) = opened.map_err(|error| match error {
        WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(
            SubProtocolError::NoSubProtocol,
        )) => ConnectError::NoCommonProtocol {
            offered: vec![inner.protocol.name().to_owned()],
        },
        other => ConnectError::Transport(other.to_string()),
    })?;
    Ok(Link::new(
        ws,
        inner.protocol.message_kind(),
        config.outbound_queue,
        config.close_timeout,
    ))
}

/// hi → [challenge → solution] → welcome; returns the welcome payload. Other frames before the
/// welcome are ignored, as the JS client does.
pub(crate) async fn greet(
    client: &Client,
    link: &mut Link<Socket>,
    hi: &Hi,
    deadline: Instant,
) -> Result<Value, ConnectError> {
    let protocol = &client.0.protocol;
    let hi = protocol
        .encode(frame::HI, hi, None)
        .map_err(|e| ConnectError::Transport(e.to_string()))?;
    if link.write([hi.into()]).await.is_err() {
        return Err(ConnectError::Transport("cannot send hi".into()));
    }
    loop {
        let message = match link.next(deadline).await {
            Incoming::Data(message) => message,
            other => return Err(interrupted(link, other)),
        };
        let Some((_, data)) = message_data(&message) else {
            continue;
        };
        let Ok(frame) = protocol.unpack(data) else {
            continue;
        };
        match frame.kind.as_ref() {
            frame::WELCOME => {
                return protocol
                    .decode::<Value>(frame.payload)
                    .map_err(|e| ConnectError::Transport(format!("malformed welcome: {e}")));
            }
            frame::CHALLENGE => {
                let quest: Value = protocol
                    .decode(frame.payload)
                    .map_err(|e| ConnectError::Transport(format!("malformed quest: {e}")))?;
                let solution = match &client.0.solver {
                    None => Err("the server sent a challenge and no solver is set".to_owned()),
                    Some(solver) => link
                        .while_validating(solver(quest), deadline)
                        .await
                        .map_err(|other| interrupted(link, other))?,
                };
                let answer = solution.and_then(|solution| {
                    protocol
                        .encode(frame::CHALLENGE, &solution, None)
                        .map_err(|e| e.to_string())
                });
                match answer {
                    Ok(answer) => {
                        if link.write([answer.into()]).await.is_err() {
                            return Err(ConnectError::Transport(
                                "cannot answer the challenge".into(),
                            ));
                        }
                    }
                    Err(error) => {
                        link.closer()
                            .request(Close::new(close_code::NORMAL, CloseReason::ByClient));
                        return Err(ConnectError::Challenge(error));
                    }
                }
            }
            _ => {}
        }
    }
}

/// The failure of a handshake that something other than a frame ended.
fn interrupted(link: &Link<Socket>, incoming: Incoming) -> ConnectError {
    match incoming {
        Incoming::TimedOut => {
            link.closer()
                .request(Close::new(close_code::NORMAL, CloseReason::ByClient));
            ConnectError::Timeout
        }
        Incoming::Closing => ConnectError::ClientClosed,
        Incoming::Failed(error) => ConnectError::Transport(error.to_string()),
        Incoming::Data(_) | Incoming::Closed => match link.received_close() {
            Some(close) if close.reason == CloseReason::NotAuthorized.as_str() => {
                ConnectError::NotAuthorized
            }
            Some(close) => ConnectError::Closed {
                code: close.code,
                reason: close.reason.clone(),
            },
            None => ConnectError::Transport("connection closed".into()),
        },
    }
}
