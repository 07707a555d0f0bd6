//! The demo page: plain HTML, CSS and a module that imports the browser client, served
//! beside the endpoint. `GET /` is the page for a browser and the endpoint for a WebSocket
//! client, so `ws://ADDR` keeps working for every client that used it before the page came.

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE, UPGRADE};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use wse_server::Server;

const INDEX: &str = include_str!("../web/index.html");
const APP: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/style.css");
/// The browser client as it ships: `clients/js/dist/wse.js`.
const CLIENT: &str = include_str!("../../clients/js/dist/wse.js");

/// The page's routes: `/` (the page, or the endpoint for an upgrade), and its files
/// `/app.js`, `/style.css` and `/wse.js` (the browser client, importable from any origin).
pub fn routes<S: Clone + Send + Sync + 'static>(server: &Server) -> Router<S> {
    Router::new()
        .route("/", page_or_endpoint(server))
        .route("/app.js", asset("text/javascript; charset=utf-8", APP))
        .route("/style.css", asset("text/css; charset=utf-8", STYLE))
        .route(
            "/wse.js",
            get(|| async {
                // Any page may import the client from here: a module script from another
                // origin (or a file:// page) needs CORS.
                let mut response = file("text/javascript; charset=utf-8", CLIENT);
                response
                    .headers_mut()
                    .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
                response
            }),
        )
}

/// The page for a plain `GET`, the endpoint for a WebSocket upgrade.
fn page_or_endpoint<S: Clone + Send + Sync + 'static>(server: &Server) -> MethodRouter<S> {
    let server = server.clone();
    get(move |request: Request| {
        let server = server.clone();
        async move {
            if request.headers().contains_key(UPGRADE) {
                server.upgrade(request).await
            } else {
                file("text/html; charset=utf-8", INDEX)
            }
        }
    })
}

fn asset<S: Clone + Send + Sync + 'static>(
    content_type: &'static str,
    body: &'static str,
) -> MethodRouter<S> {
    get(move || async move { file(content_type, body) })
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    // The files live in the binary; no-cache keeps a browser from holding on to a page of an
    // older build across a restart.
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}
