//! Before the WebSocket: the upgrade request, checked; the client's address behind trusted
//! proxies; the Origin allow-list; the admission limits; the application's upgrade filter;
//! the codec negotiation and the `101 Switching Protocols` that ends it. One path for a
//! socket from [`Server::bind`] (which reads the request itself) and for the axum route
//! (where hyper has read it).
//!
//! ```text
//! request ─► well-formed upgrade? ─► client address ─► Origin ─► limits ─► filter ─► 101
//!              400                                     403        503/429   403…
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::header::{
    CONNECTION, CONTENT_LENGTH, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use tokio_tungstenite::tungstenite::http::{
    HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri,
};
use wse_core::Protocol;

use crate::auth::BoxFuture;
use crate::events::{Event, Rejection};
use crate::limits::Ticket;
use crate::server::Server;

/// The HTTP request that asked for the WebSocket upgrade, as the upgrade filter and identify
/// see it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UpgradeRequest {
    /// The method (a well-formed upgrade is a `GET`).
    pub method: Method,
    /// The path, e.g. `/ws`.
    pub path: String,
    /// The query string, without its `?`.
    pub query: Option<String>,
    /// Every header as sent.
    pub headers: HeaderMap,
    /// The address of the socket's peer: the client itself, or a proxy in front of it.
    pub peer_addr: SocketAddr,
    /// The client's address: the peer's, unless the peer is a trusted proxy
    /// ([`Builder::trusted_proxy`](crate::Builder::trusted_proxy)), in which case it is the
    /// address `X-Forwarded-For` names (with port 0, since the header carries none). The
    /// per-address limits count this one.
    pub client_addr: SocketAddr,
}

impl Default for UpgradeRequest {
    fn default() -> Self {
        Self::new("/", None, HeaderMap::new())
    }
}

impl UpgradeRequest {
    /// A `GET` at `path` with `query` and `headers`, from `0.0.0.0:0`.
    pub fn new(path: impl Into<String>, query: Option<String>, headers: HeaderMap) -> Self {
        let nowhere = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        Self {
            method: Method::GET,
            path: path.into(),
            query,
            headers,
            peer_addr: nowhere,
            client_addr: nowhere,
        }
    }

    /// The same request from `peer_addr`, on behalf of `client_addr`.
    #[must_use]
    pub fn from_addrs(mut self, peer_addr: SocketAddr, client_addr: SocketAddr) -> Self {
        self.peer_addr = peer_addr;
        self.client_addr = client_addr;
        self
    }

    /// The value of the header `name`, if it is there and is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// The `Origin` header: where a browser's page came from (`https://app.example`);
    /// `None` for a client that is not a browser.
    pub fn origin(&self) -> Option<&str> {
        self.header(ORIGIN.as_str())
    }

    /// The value of the cookie `name` in the `Cookie` headers.
    ///
    /// ```
    /// use wse_server::UpgradeRequest;
    /// use wse_server::http::{HeaderMap, HeaderValue};
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("cookie", HeaderValue::from_static("theme=dark; session=abc123"));
    /// let request = UpgradeRequest::new("/ws", None, headers);
    /// assert_eq!(request.cookie("session"), Some("abc123"));
    /// assert_eq!(request.cookie("nope"), None);
    /// ```
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all("cookie")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find_map(|(key, value)| (key == name).then_some(value))
    }

    /// The value of the query parameter `name` (as sent, not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .as_deref()?
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find_map(|(key, value)| (key == name).then_some(value))
    }
}

/// What an upgrade filter ([`Builder::upgrade_filter`](crate::Builder::upgrade_filter))
/// decides about an upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeDecision {
    /// Go on to the WebSocket upgrade and the handshake.
    Admit,
    /// Answer with this HTTP status instead; no WebSocket is made.
    Deny(StatusCode),
}

impl UpgradeDecision {
    /// Deny with 403 Forbidden.
    pub const fn deny() -> Self {
        Self::Deny(StatusCode::FORBIDDEN)
    }
}

/// The application's upgrade filter.
pub(crate) type UpgradeFilter =
    Arc<dyn Fn(Arc<UpgradeRequest>) -> BoxFuture<UpgradeDecision> + Send + Sync>;

/// What decides about an upgrade request before the WebSocket exists: the trusted proxies,
/// the Origin allow-list and the application's filter.
#[derive(Default)]
pub(crate) struct Gatekeeper {
    /// Allowed origins, normalised by [`normalise_origin`]; empty: every origin.
    pub(crate) origins: Vec<String>,
    pub(crate) proxies: Vec<IpNet>,
    pub(crate) filter: Option<UpgradeFilter>,
}

impl fmt::Debug for Gatekeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gatekeeper")
            .field("origins", &self.origins)
            .field("proxies", &self.proxies)
            .field("filter", &self.filter.is_some())
            .finish()
    }
}

impl Gatekeeper {
    /// Whether `address` is one of the trusted proxies.
    pub(crate) fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.proxies.iter().any(|proxy| proxy.contains(&address))
    }

    /// The client's address: `peer`, or, when `peer` is a trusted proxy, the nearest address
    /// in `X-Forwarded-For` that is not one (read from the right, since only the entries
    /// the proxies appended can be believed). An entry that does not parse ends the walk at
    /// the last proxy.
    pub(crate) fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .map(|value| value.to_str().unwrap_or(""))
            .flat_map(|value| value.rsplit(','));
        let mut client = peer;
        for hop in hops {
            let Some(address) = parse_hop(hop.trim()) else {
                break;
            };
            client = SocketAddr::new(address, 0);
            if !self.trusts(address) {
                break;
            }
        }
        client
    }

    /// Whether a request with these headers may upgrade: every request when no origin is
    /// listed, else one without `Origin` (not a browser) or with a listed one.
    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        if self.origins.is_empty() {
            return true;
        }
        let Some(origin) = headers.get(ORIGIN) else {
            return true;
        };
        let origin = normalise_origin(origin.to_str().unwrap_or(""));
        self.origins.contains(&origin)
    }
}

/// An address in `X-Forwarded-For`: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]` or `[::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Ok(address) = hop.parse::<SocketAddr>() {
        return Some(address.ip().to_canonical());
    }
    let bracketed = hop.strip_prefix('[')?.strip_suffix(']')?;
    bracketed.parse::<IpAddr>().ok().map(|a| a.to_canonical())
}

/// An origin as compared: scheme and authority only, lower case, without a trailing slash
/// (`https://App.example/` and `https://app.example` are the same origin).
pub(crate) fn normalise_origin(origin: &str) -> String {
    let origin = origin.trim();
    let end = origin
        .find("://")
        .and_then(|scheme| origin[scheme + 3..].find('/').map(|path| scheme + 3 + path))
        .unwrap_or(origin.len());
    origin[..end].to_ascii_lowercase()
}

/// The subprotocols the client offers, in its order.
pub(crate) fn offered(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
}

/// The first codec the client offers that the server speaks.
pub(crate) fn negotiate(codecs: &[Arc<dyn Protocol>], headers: &HeaderMap) -> Option<usize> {
    offered(headers).find_map(|offered| codecs.iter().position(|codec| codec.name() == offered))
}

/// The `Sec-WebSocket-Key` of a well-formed WebSocket upgrade request (RFC 6455 §4.2.1).
fn upgrade_key<'h>(method: &Method, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    };
    let version = headers.get(SEC_WEBSOCKET_VERSION)?;
    let upgrade = method == Method::GET
        && has_token(CONNECTION, "upgrade")
        && has_token(UPGRADE, "websocket")
        && version == "13";
    upgrade.then(|| headers.get(SEC_WEBSOCKET_KEY)).flatten()
}

/// What the upgrade settled: the connection's place within the limits, its codec, its
/// deadline and its request.
pub(crate) struct Upgraded {
    /// The connection's place within the server's limits.
    pub(crate) ticket: Ticket,
    /// The index of the codec chosen, or what the client offered when none fits.
    pub(crate) chosen: Result<usize, Vec<String>>,
    /// When the handshake must be over.
    pub(crate) deadline: Instant,
    /// The request that asked for it.
    pub(crate) request: Arc<UpgradeRequest>,
}

/// An admitted upgrade: the headers of its `101 Switching Protocols`, and what it settled.
pub(crate) struct Switch {
    pub(crate) headers: HeaderMap,
    pub(crate) upgraded: Upgraded,
}

/// The request line and headers of an upgrade request.
pub(crate) struct Head {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
}

/// Decides about an upgrade request from `peer_addr`, which holds `ticket` (counted under
/// the peer's address already, or not yet when the peer may be a proxy): the `101`'s headers,
/// or the status to answer with instead. A refusal is reported as [`Event::Rejected`].
pub(crate) async fn answer(
    server: &Server,
    head: Head,
    peer_addr: SocketAddr,
    mut ticket: Ticket,
    deadline: Instant,
) -> Result<Switch, StatusCode> {
    let shared = server.shared();
    let keeper = &shared.gatekeeper;
    let client_addr = keeper.client_addr(peer_addr, &head.headers);
    let refuse = |status: StatusCode, reason: Rejection| {
        server.emit(Event::Rejected {
            remote_addr: client_addr,
            reason,
        });
        Err(status)
    };
    let Some(key) = upgrade_key(&head.method, &head.headers) else {
        let reason = Rejection::Upgrade("not a WebSocket upgrade request".to_owned());
        return refuse(StatusCode::BAD_REQUEST, reason);
    };
    let accept_key = derive_accept_key(key.as_bytes());
    if !keeper.origin_allowed(&head.headers) {
        let origin = head
            .headers
            .get(ORIGIN)
            .map(|origin| String::from_utf8_lossy(origin.as_bytes()).into_owned());
        let reason = Rejection::OriginNotAllowed(origin.unwrap_or_default());
        return refuse(StatusCode::FORBIDDEN, reason);
    }
    if let Err(reason) = ticket.count(client_addr.ip()) {
        return refuse(status_of(&reason), reason);
    }
    let request = Arc::new(UpgradeRequest {
        method: head.method,
        path: head.uri.path().to_owned(),
        query: head.uri.query().map(str::to_owned),
        headers: head.headers,
        peer_addr,
        client_addr,
    });
    if let Some(filter) = &keeper.filter {
        match tokio::time::timeout_at(deadline, filter(Arc::clone(&request))).await {
            Ok(UpgradeDecision::Admit) => {}
            Ok(UpgradeDecision::Deny(status)) => {
                return refuse(status, Rejection::Denied(status.as_u16()));
            }
            Err(_) => return refuse(StatusCode::SERVICE_UNAVAILABLE, Rejection::HandshakeTimeout),
        }
    }

    let chosen = negotiate(&shared.codecs, &request.headers)
        .ok_or_else(|| offered(&request.headers).map(str::to_owned).collect());
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept_key) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Ok(index) = &chosen
        && let Ok(name) = HeaderValue::from_str(shared.codecs[*index].name())
    {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, name);
    }
    Ok(Switch {
        headers,
        upgraded: Upgraded {
            ticket,
            chosen,
            deadline,
            request,
        },
    })
}

/// The status a request refused by the limits gets.
fn status_of(reason: &Rejection) -> StatusCode {
    match reason {
        Rejection::TooManyFromAddress | Rejection::AuthThrottled => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The most a request line and its headers may take; browsers with many cookies send a few
/// KiB.
const MAX_HEAD_BYTES: usize = 32 << 10;
/// The most headers a request may have.
const MAX_HEADERS: usize = 100;

/// Why a request head could not be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The peer left or the socket failed; nothing can be answered.
    Gone(String),
    /// Not an HTTP/1.1 request, or too large: answer 400 (or 431).
    Malformed(StatusCode, String),
}

/// Reads an HTTP request's head from `io`: the head, and whatever the peer sent after it
/// (the first WebSocket frames of an eager client).
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    io: &mut S,
) -> Result<(Head, Vec<u8>), HeadError> {
    let mut buffer = Vec::with_capacity(1024);
    // Where the search for the head's end goes on: a peer that sends its head a byte at a
    // time must not make each byte parse the whole head again.
    let mut searched: usize = 0;
    loop {
        if buffer.len() >= MAX_HEAD_BYTES {
            let reason = "request head too large".to_owned();
            return Err(HeadError::Malformed(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                reason,
            ));
        }
        buffer.reserve(1024);
        match io.read_buf(&mut buffer).await {
            Ok(0) => return Err(HeadError::Gone("closed before the request".to_owned())),
            Ok(_) => {}
            Err(error) => return Err(HeadError::Gone(error.to_string())),
        }
        // The first read is parsed at once, so that what is not HTTP is answered at once.
        let first = searched == 0;
        let ended = buffer[searched.saturating_sub(3)..]
            .windows(4)
            .any(|window| window == b"\r\n\r\n");
        searched = buffer.len();
        if (first || ended)
            && let Some((head, length)) = parse_head(&buffer)?
        {
            let rest = buffer.split_off(length);
            return Ok((head, rest));
        }
    }
}

/// The head at the start of `bytes` and its length, `None` when it is not all there yet.
fn parse_head(bytes: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let malformed = |why: String| HeadError::Malformed(StatusCode::BAD_REQUEST, why);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(malformed(format!("malformed request: {error}"))),
    };
    if request.version != Some(1) {
        return Err(malformed("not an HTTP/1.1 request".to_owned()));
    }
    let method = Method::from_bytes(request.method.unwrap_or("").as_bytes())
        .map_err(|e| malformed(e.to_string()))?;
    let uri: Uri = request.path.unwrap_or("/").parse().map_err(
        |e: tokio_tungstenite::tungstenite::http::uri::InvalidUri| malformed(e.to_string()),
    )?;
    let mut map = HeaderMap::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name =
            HeaderName::from_bytes(header.name.as_bytes()).map_err(|e| malformed(e.to_string()))?;
        let value = HeaderValue::from_bytes(header.value).map_err(|e| malformed(e.to_string()))?;
        map.append(name, value);
    }
    let head = Head {
        method,
        uri,
        headers: map,
    };
    Ok(Some((head, length)))
}

/// Answers with `status` and closes.
pub(crate) async fn write_refusal<S: AsyncWrite + Unpin>(
    io: &mut S,
    status: StatusCode,
) -> std::io::Result<()> {
    write_response(io, status, &HeaderMap::new()).await
}

/// Writes a response head with `status` and `headers`; any status but 101 also closes.
pub(crate) async fn write_response<S: AsyncWrite + Unpin>(
    io: &mut S,
    status: StatusCode,
    headers: &HeaderMap,
) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(256);
    let reason = status.canonical_reason().unwrap_or("");
    bytes.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", status.as_u16()).as_bytes());
    for (name, value) in headers {
        bytes.extend_from_slice(name.as_str().as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    let closing = status != StatusCode::SWITCHING_PROTOCOLS;
    if closing {
        bytes.extend_from_slice(CONNECTION.as_str().as_bytes());
        bytes.extend_from_slice(b": close\r\n");
        bytes.extend_from_slice(CONTENT_LENGTH.as_str().as_bytes());
        bytes.extend_from_slice(b": 0\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    io.write_all(&bytes).await?;
    io.flush().await?;
    if closing {
        io.shutdown().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wse_core::{Json, MsgPack};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn keeper(proxies: &[&str], origins: &[&str]) -> Gatekeeper {
        Gatekeeper {
            origins: origins.iter().map(|o| normalise_origin(o)).collect(),
            proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
            filter: None,
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn negotiation_takes_the_clients_first_offer_the_server_speaks() {
        let codecs: Vec<Arc<dyn Protocol>> = vec![Arc::new(Json), Arc::new(MsgPack)];
        let offer = |value| headers(&[("sec-websocket-protocol", value)]);
        assert_eq!(
            negotiate(&codecs, &offer("wse-msgpack, wse-default-json")),
            Some(1)
        );
        assert_eq!(negotiate(&codecs, &offer("x,wse-default-json")), Some(0));
        assert_eq!(negotiate(&codecs, &HeaderMap::new()), None);
        assert_eq!(negotiate(&codecs, &offer("x, y")), None);
    }

    #[test]
    fn only_a_well_formed_get_upgrade_has_a_key() {
        let mut map = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert!(upgrade_key(&Method::GET, &map).is_some());
        assert!(upgrade_key(&Method::POST, &map).is_none());
        map.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(upgrade_key(&Method::GET, &map).is_none());
        map.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        map.remove(UPGRADE);
        assert!(upgrade_key(&Method::GET, &map).is_none());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let keeper = keeper(&["10.0.0.0/8", "192.168.1.1/32"], &[]);
        let forwarded = headers(&[("x-forwarded-for", "203.0.113.7, 10.1.2.3")]);
        // From a stranger: the header is the stranger's word, ignored.
        let stranger = addr("198.51.100.1:4000");
        assert_eq!(keeper.client_addr(stranger, &forwarded), stranger);
        // From a proxy: the nearest address that is not a proxy, skipping proxies in between.
        let proxy = addr("192.168.1.1:5000");
        assert_eq!(keeper.client_addr(proxy, &forwarded), addr("203.0.113.7:0"));
        // A client that forges entries to the left of its own address gains nothing.
        let forged = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7")]);
        assert_eq!(keeper.client_addr(proxy, &forged), addr("203.0.113.7:0"));
        // Several header lines are one list, in order.
        let lines = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        assert_eq!(keeper.client_addr(proxy, &lines), addr("203.0.113.9:0"));
        // Ports and IPv6 forms.
        let v6 = headers(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        assert_eq!(keeper.client_addr(proxy, &v6), addr("[2001:db8::1]:0"));
        // Garbage ends the walk at the last proxy; no header leaves the proxy itself.
        let garbage = headers(&[("x-forwarded-for", "nonsense, 10.0.0.5")]);
        assert_eq!(keeper.client_addr(proxy, &garbage), addr("10.0.0.5:0"));
        assert_eq!(keeper.client_addr(proxy, &HeaderMap::new()), proxy);
        // An IPv4 proxy reached over an IPv6 socket is still trusted.
        let mapped = addr("[::ffff:192.168.1.1]:5000");
        assert_eq!(
            keeper.client_addr(mapped, &forwarded),
            addr("203.0.113.7:0")
        );
    }

    #[test]
    fn origins_are_compared_by_scheme_and_host_and_absent_is_allowed() {
        let open = keeper(&[], &[]);
        assert!(open.origin_allowed(&headers(&[("origin", "https://evil.example")])));
        let keeper = keeper(&[], &["https://App.example/", "http://localhost:8080"]);
        assert!(keeper.origin_allowed(&headers(&[("origin", "https://app.example")])));
        assert!(keeper.origin_allowed(&headers(&[("origin", "http://localhost:8080")])));
        assert!(!keeper.origin_allowed(&headers(&[("origin", "http://localhost:8081")])));
        assert!(!keeper.origin_allowed(&headers(&[("origin", "https://evil.example")])));
        assert!(!keeper.origin_allowed(&headers(&[("origin", "null")])));
        assert!(keeper.origin_allowed(&HeaderMap::new()));
        assert_eq!(
            normalise_origin("https://a.example/app/page"),
            "https://a.example"
        );
    }

    #[test]
    fn a_head_is_read_whole_with_what_follows_it() {
        let request = b"GET /ws?token=1 HTTP/1.1\r\nHost: x\r\nCookie: a=b\r\n\r\nEXTRA";
        assert!(parse_head(&request[..20]).unwrap().is_none());
        let (head, length) = parse_head(request).unwrap().unwrap();
        assert_eq!(&request[length..], b"EXTRA");
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.path(), "/ws");
        assert_eq!(head.uri.query(), Some("token=1"));
        assert_eq!(head.headers["cookie"], "a=b");
        let old = b"GET / HTTP/1.0\r\n\r\n";
        assert!(matches!(
            parse_head(old),
            Err(HeadError::Malformed(StatusCode::BAD_REQUEST, _))
        ));
        assert!(matches!(
            parse_head(b"\x16\x03\x01 not http\r\n\r\n"),
            Err(HeadError::Malformed(..))
        ));
    }

    #[tokio::test]
    async fn a_head_sent_a_byte_at_a_time_is_read_and_garbage_refused_at_once() {
        use tokio::io::AsyncWriteExt;

        let request = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n\x81";
        let (mut peer, mut ours) = tokio::io::duplex(64);
        let sending = tokio::spawn(async move {
            for byte in request {
                peer.write_all(&[*byte]).await.unwrap();
                peer.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            peer
        });
        let (head, rest) = read_head(&mut ours).await.unwrap();
        assert_eq!(head.uri.path(), "/ws");
        // What followed the head in the same read is kept for the WebSocket.
        assert!(rest.is_empty() || rest == b"\x81");
        drop(sending.await.unwrap());

        let (mut peer, mut ours) = tokio::io::duplex(64);
        peer.write_all(b"\x16\x03\x01 not http").await.unwrap();
        assert!(matches!(
            read_head(&mut ours).await,
            Err(HeadError::Malformed(StatusCode::BAD_REQUEST, _))
        ));
    }
}
