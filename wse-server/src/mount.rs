//! The endpoint inside an axum application (cargo feature `axum`): hyper does the HTTP
//! upgrade on the application's listener, and the connection then runs the same handshake and
//! task as one accepted by [`Server::bind`].

use std::net::{Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::events::{Event, Rejection};
use crate::handshake::{accept_upgraded, upgraded_within};
use crate::server::Server;
use crate::task::serve_connection;
use crate::upgrade::{Head, answer};

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
    /// The limits of the builder hold as for [`Server::bind`], and so do the Origin
    /// allow-list, the trusted proxies and the upgrade filter; an application that does not
    /// serve with `into_make_service_with_connect_info::<SocketAddr>()` has every connection
    /// counted under one address (`0.0.0.0`). A request that is not a WebSocket upgrade gets
    /// 400; one past the connection limits 503 (429 past an address's); one the Origin
    /// allow-list or the filter denies 403 or the filter's status; while the delivery engine
    /// cannot start ([`Server::start`], which the route calls before its first connection),
    /// 503. [`Server::shutdown`] closes these connections too.
    pub fn route<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        let server = self.clone();
        get(move |request: Request| {
            let server = server.clone();
            async move { server.upgrade(request).await }
        })
    }

    /// Answers one request at the endpoint as [`Server::route`] does: 101 and the connection
    /// served once hyper hands over the upgraded stream, or the status that refuses it. For an
    /// application that routes the request itself, to serve a page and the endpoint on one
    /// path, say:
    ///
    /// ```
    /// use axum::extract::Request;
    /// use axum::http::header::UPGRADE;
    /// use axum::response::{Html, IntoResponse, Response};
    /// use axum::{Router, routing::get};
    /// use serde_json::json;
    /// use wse_server::{Decision, Server};
    ///
    /// let server = Server::builder(|_| async { Decision::accept("ann", json!({})) }).build();
    /// let app: Router = Router::new().route("/", get(move |request: Request| {
    ///     let server = server.clone();
    ///     async move {
    ///         if request.headers().contains_key(UPGRADE) {
    ///             server.upgrade(request).await
    ///         } else {
    ///             Html("<h1>hello</h1>").into_response()
    ///         }
    ///     }
    /// }));
    /// ```
    pub async fn upgrade(&self, mut request: Request) -> Response {
        let peer_addr = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |info| info.0);
        let shared = self.shared();
        if let Err(error) = self.start().await {
            self.emit(Event::Rejected {
                remote_addr: peer_addr,
                reason: Rejection::Unavailable(error.to_string()),
            });
            return status(StatusCode::SERVICE_UNAVAILABLE);
        }
        let ticket = match shared.gate.enter() {
            Ok(ticket) => ticket,
            Err(reason) => {
                self.emit(Event::Rejected {
                    remote_addr: peer_addr,
                    reason,
                });
                return status(StatusCode::SERVICE_UNAVAILABLE);
            }
        };
        let head = Head {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: std::mem::take(request.headers_mut()),
        };
        let deadline = wse_core::transport::deadline(shared.config.handshake_timeout);
        let switch = match answer(self, head, peer_addr, ticket, deadline).await {
            Ok(switch) => switch,
            Err(code) => return status(code),
        };
        let mut response = status(StatusCode::SWITCHING_PROTOCOLS);
        *response.headers_mut() = switch.headers;

        let on_upgrade = hyper::upgrade::on(&mut request);
        let config = shared.config.websocket();
        let id = shared.next_connection_id();
        let server = self.clone();
        let upgraded = switch.upgraded;
        let remote_addr = upgraded.request.client_addr;
        let establishing = async move {
            let io = upgraded_within(&server, remote_addr, deadline, on_upgrade).await?;
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, Some(config))
                .await;
            accept_upgraded(server, ws, upgraded, None, id).await
        };
        tokio::spawn(serve_connection(self, id, peer_addr, establishing));
        response
    }
}

fn status(code: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
}
