//! The endpoint inside an axum application (cargo feature `axum`): hyper does the HTTP
//! upgrade on the application's listener, and the connection then runs the same handshake and
//! task as one accepted by [`Server::bind`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::auth::UpgradeRequest;
use crate::events::Event;
use crate::handshake::{Upgraded, accept_upgraded, negotiate, offered, upgraded_within};
use crate::server::Server;
use crate::task::serve_connection;

impl Server {
    /// The endpoint as an axum route, to mount at a path of an application's `Router`,
    /// beside its HTTP routes, on its listener, behind its TLS:
    ///
    /// ```no_run
    /// use std::net::SocketAddr;
    /// use axum::{Router, routing::get};
    /// use serde_json::json;
    /// use wse_server::{Decision, Server};
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let server = Server::builder(|_| async { Decision::accept("ann", json!({})) }).build();
    /// let app = Router::new()
    ///     .route("/health", get(|| async { "ok" }))
    ///     .route("/ws", server.route());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// // With the peer's address, so that the per-address limits count it.
    /// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
    /// # }
    /// ```
    ///
    /// The limits of the builder hold as for [`Server::bind`]; an application that does not
    /// serve with `into_make_service_with_connect_info::<SocketAddr>()` has every connection
    /// counted under one address (`0.0.0.0`). A request that is not a WebSocket upgrade gets
    /// 400; one past the connection limits gets 503. [`Server::shutdown`] closes these
    /// connections too.
    pub fn route<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        let server = self.clone();
        get(move |request: Request| {
            let server = server.clone();
            async move { server.upgrade(request) }
        })
    }

    /// Answers an upgrade request with 101 and serves the connection once hyper hands over
    /// the upgraded stream.
    fn upgrade(&self, mut request: Request) -> Response {
        let Some(key) = upgrade_key(request.headers()) else {
            return status(StatusCode::BAD_REQUEST);
        };
        let remote_addr = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |info| info.0);
        let shared = self.shared();
        let ticket = match shared.gate.enter(remote_addr.ip()) {
            Ok(ticket) => ticket,
            Err(reason) => {
                self.emit(Event::Rejected {
                    remote_addr,
                    reason,
                });
                return status(StatusCode::SERVICE_UNAVAILABLE);
            }
        };
        let chosen = negotiate(&shared.codecs, request.headers())
            .ok_or_else(|| offered(request.headers()).map(str::to_owned).collect());
        let mut response = status(StatusCode::SWITCHING_PROTOCOLS);
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
            headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Ok(index) = &chosen
            && let Ok(name) = HeaderValue::from_str(shared.codecs[*index].name())
        {
            headers.insert(SEC_WEBSOCKET_PROTOCOL, name);
        }

        let asked = Arc::new(UpgradeRequest::new(
            request.uri().path(),
            request.uri().query().map(str::to_owned),
            request.headers().clone(),
        ));
        let on_upgrade = hyper::upgrade::on(&mut request);
        let deadline = Instant::now() + shared.config.handshake_timeout;
        let config = shared.config.websocket();
        let id = shared.next_connection_id();
        let server = self.clone();
        let establishing = async move {
            let upgraded = upgraded_within(&server, remote_addr, deadline, on_upgrade).await?;
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            let upgraded = Upgraded {
                ticket,
                chosen,
                deadline,
                request: asked,
            };
            accept_upgraded(server, ws, upgraded, remote_addr, None, id).await
        };
        tokio::spawn(serve_connection(self, id, remote_addr, establishing));
        response
    }
}

/// The `Sec-WebSocket-Key` of a well-formed WebSocket upgrade request (RFC 6455 §4.2.1).
fn upgrade_key(headers: &HeaderMap) -> Option<&HeaderValue> {
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    };
    let version = headers.get(SEC_WEBSOCKET_VERSION)?;
    (has_token(CONNECTION, "upgrade") && has_token(UPGRADE, "websocket") && version == "13")
        .then(|| headers.get(SEC_WEBSOCKET_KEY))
        .flatten()
}

fn status(code: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_upgrade_has_a_key() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        headers.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert!(upgrade_key(&headers).is_some());
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(upgrade_key(&headers).is_none());
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        headers.remove(UPGRADE);
        assert!(upgrade_key(&headers).is_none());
    }
}
