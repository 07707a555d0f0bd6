//! The demo server: `cargo run -p wse-examples -- --port 4200` (`--help` lists every flag).
//!
//! Serves the demo application on 127.0.0.1:PORT (JSON, and MessagePack when offered), and the
//! same application behind the built-in HMAC challenge on PORT + 1 (or `--hmac-port`). Port 0
//! picks a free port; the first line on stdout names the addresses. Ctrl-C (or SIGTERM) stops
//! it gracefully.
//!
//! Each port is an axum application:
//!
//! | route | what |
//! | --- | --- |
//! | `GET /` | the demo page in a browser; the WebSocket endpoint for an upgrade (clients of `ws://ADDR` use it) |
//! | `GET /ws` | the WebSocket endpoint |
//! | `GET /app.js`, `/style.css`, `/wse.js` | the page's files; `/wse.js` is the browser client |
//! | `GET /health` | 200 `ok` |
//! | `GET /metrics` | Prometheus text: the process's metrics (both servers share the series) |
//!
//! The limits are the library's safe defaults (with two devices per user, as the demo's
//! contract says) unless a flag changes them; they are logged at startup.
//!
//! With `--redis URL`, each port is a node of a cluster joined over that Redis: every demo
//! process started with the same Redis and `--redis-prefix P` serves one application per port,
//! where a user's devices on any process are one user (sends, `ask_user`, the per-user limit).
//! The plain port's cluster is `P`, the HMAC port's `P-hmac`. A Redis that cannot be reached
//! at startup is an error (exit 1); a later outage is logged, and meanwhile each process goes
//! on delivering to its own connections (and refuses new ones with 1013).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use clap::{CommandFactory, Parser};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tracing_subscriber::EnvFilter;
use wse_examples::{Auth, demo_server_with, page};
use wse_redis::{ClusterEvent, RedisConfig};
use wse_server::{Builder, DeliveryError, Event, IpNet, RateLimit, Server};

/// How often the metrics recorder drains its histograms (its own default), so that they do
/// not grow between scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// How long the HTTP side may take to finish its requests at shutdown, after the WebSocket
/// connections are closed.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// The Prometheus text format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The shortest node timeout [`RedisConfig::node_timeout`] takes.
const MIN_NODE_TIMEOUT_MS: u64 = 30;

/// The demo server of wse-rs: the demo application on 127.0.0.1:PORT, and behind the HMAC
/// challenge on 127.0.0.1:HMAC-PORT. Each port serves the WebSocket endpoint at `/` and `/ws`,
/// `GET /health` and `GET /metrics` (Prometheus text).
#[derive(Debug, Parser)]
#[command(name = "demo")]
struct Options {
    /// The demo on 127.0.0.1:PORT; 0 picks a free port.
    #[arg(short, long, value_name = "PORT", default_value_t = 4200)]
    port: u16,

    /// The demo behind the HMAC challenge on 127.0.0.1:PORT; 0 picks a free port
    /// [default: --port + 1, or 0 when --port is 0]
    #[arg(long, value_name = "PORT")]
    hmac_port: Option<u16>,

    /// Messages per second each connection may send, in bursts of up to twice as many; `off`
    /// for no limit. Past it a call is refused and a message dropped; a connection that keeps
    /// on is closed.
    #[arg(long, value_name = "N|off", default_value = "1000", value_parser = rate_limit)]
    rate_limit: Rate,

    /// How many WebSocket connections each port holds at once; past it an upgrade gets 503.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = at_least_one)]
    max_connections: usize,

    /// How many WebSocket connections one client address holds at once on each port; past it
    /// an upgrade gets 429.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = at_least_one)]
    max_connections_per_address: usize,

    /// How many devices one user may have connected at once; a new one closes the oldest.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = at_least_one)]
    conn_per_user: usize,

    /// Admit browsers only from this origin (`https://app.example`); repeat for more. An
    /// upgrade whose `Origin` is none of them gets 403; one without `Origin` is admitted
    /// [default: every origin]
    #[arg(long = "allow-origin", value_name = "URL", value_parser = origin)]
    allow_origins: Vec<String>,

    /// Trust this proxy (an address, or a network such as 10.0.0.0/8) to name the client in
    /// X-Forwarded-For; repeat for more [default: nobody]
    #[arg(long = "trusted-proxy", value_name = "ADDR", value_parser = proxy)]
    trusted_proxies: Vec<IpNet>,

    /// Join a cluster over the Redis at URL (`redis://host:port/db`): each port's users on
    /// every demo process with the same Redis and prefix are one (sends, `ask_user`,
    /// --conn-per-user). Unreachable at startup: exit 1 [default: no cluster]
    #[arg(long, value_name = "URL", value_parser = redis_url)]
    redis: Option<String>,

    /// The cluster's key and channel prefix: `P` for the plain port, `P-hmac` for the HMAC
    /// port
    #[arg(
        long,
        value_name = "P",
        default_value = "wse-demo",
        requires = "redis",
        value_parser = redis_prefix
    )]
    redis_prefix: String,

    /// Milliseconds a process may go without renewing its place in the cluster before the
    /// others take it and its connections out (at least 30)
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10_000,
        requires = "redis",
        value_parser = node_timeout_ms
    )]
    node_timeout_ms: u64,

    /// Milliseconds a user whose last device left stays online before it goes offline for
    /// the cluster: a device back within it finds its user never left (0: none)
    #[arg(long, value_name = "N", default_value_t = 0, requires = "redis")]
    presence_grace_ms: u64,
}

/// `--rate-limit`: a limit, or none.
#[derive(Debug, Clone, Copy)]
struct Rate(Option<RateLimit>);

fn rate_limit(value: &str) -> Result<Rate, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(Rate(None));
    }
    let per_second: u32 = value
        .parse()
        .map_err(|_| "expected messages per second (1 or more), or `off`".to_owned())?;
    if per_second == 0 {
        return Err("0 would admit nothing; `off` is no limit".to_owned());
    }
    Ok(Rate(Some(RateLimit {
        per_second,
        burst: per_second.saturating_mul(2),
    })))
}

fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse() {
        Ok(0) | Err(_) => Err("expected a whole number, at least 1".to_owned()),
        Ok(n) => Ok(n),
    }
}

/// An origin as browsers send it: a scheme and a host, maybe a port, and no path.
fn origin(value: &str) -> Result<String, String> {
    let expected = || "expected an origin such as https://app.example".to_owned();
    let uri: wse_server::http::Uri = value.parse().map_err(|_| expected())?;
    match (uri.scheme(), uri.host(), uri.path_and_query()) {
        (Some(_), Some(host), path)
            if !host.is_empty() && path.is_none_or(|path| path.as_str() == "/") =>
        {
            Ok(value.to_owned())
        }
        _ => Err(expected()),
    }
}

/// A Redis URL the cluster can use: TCP or a Unix socket, without TLS.
fn redis_url(value: &str) -> Result<String, String> {
    if value.starts_with("rediss://") {
        return Err("TLS (rediss://) is not built in; expected redis://HOST:PORT/DB".to_owned());
    }
    if ["redis://", "redis+unix://", "unix://"]
        .iter()
        .any(|scheme| value.len() > scheme.len() && value.starts_with(scheme))
    {
        Ok(value.to_owned())
    } else {
        Err("expected a Redis URL such as redis://127.0.0.1:6379/".to_owned())
    }
}

fn redis_prefix(value: &str) -> Result<String, String> {
    if value.is_empty() {
        Err("expected a non-empty prefix".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

fn node_timeout_ms(value: &str) -> Result<u64, String> {
    match value.parse() {
        Ok(ms) if ms >= MIN_NODE_TIMEOUT_MS => Ok(ms),
        _ => Err(format!(
            "expected milliseconds, at least {MIN_NODE_TIMEOUT_MS} (room for three renewals)"
        )),
    }
}

fn proxy(value: &str) -> Result<IpNet, String> {
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| "expected an IP address or a network such as 10.0.0.0/8".to_owned())
}

impl Options {
    /// The HMAC port, or the usage error of a `--port` that leaves no room for PORT + 1.
    fn hmac_port(&self) -> Result<u16, clap::Error> {
        match (self.hmac_port, self.port) {
            (Some(hmac), _) => Ok(hmac),
            (None, 0) => Ok(0),
            (None, plain) => plain.checked_add(1).ok_or_else(|| {
                Self::command().error(
                    clap::error::ErrorKind::ValueValidation,
                    "--port 65535 leaves no room for PORT + 1: give --hmac-port",
                )
            }),
        }
    }

    /// The builder with the flags' settings.
    fn configure(&self, builder: Builder) -> Builder {
        let builder = builder
            .rate_limit(self.rate_limit.0)
            .max_connections(self.max_connections)
            .max_connections_per_address(self.max_connections_per_address)
            .conn_per_user(self.conn_per_user);
        let builder = self
            .allow_origins
            .iter()
            .fold(builder, |builder, origin| builder.allow_origin(origin));
        self.trusted_proxies
            .iter()
            .fold(builder, |builder, proxy| builder.trusted_proxy(*proxy))
    }

    /// The cluster the server of `auth`'s port joins, with `--redis`: each port is its own
    /// application, so each has its own cluster.
    fn cluster(&self, auth: Auth) -> Option<RedisConfig> {
        let url = self.redis.as_deref()?;
        Some(
            RedisConfig::new(url)
                .prefix(self.cluster_prefix(auth))
                .node_timeout(Duration::from_millis(self.node_timeout_ms))
                .presence_grace(Duration::from_millis(self.presence_grace_ms)),
        )
    }

    /// The key prefix of the cluster of `auth`'s port.
    fn cluster_prefix(&self, auth: Auth) -> String {
        match auth {
            Auth::Plain => self.redis_prefix.clone(),
            Auth::Hmac => format!("{}-hmac", self.redis_prefix),
        }
    }

    fn log_limits(&self) {
        let rate_limit = match self.rate_limit.0 {
            Some(limit) => format!("{}/s, bursts of {}", limit.per_second, limit.burst),
            None => "off".to_owned(),
        };
        let origins = if self.allow_origins.is_empty() {
            "any".to_owned()
        } else {
            self.allow_origins.join(", ")
        };
        let proxies: Vec<String> = self.trusted_proxies.iter().map(|p| p.to_string()).collect();
        tracing::info!(
            rate_limit,
            max_connections = self.max_connections,
            max_connections_per_address = self.max_connections_per_address,
            conn_per_user = self.conn_per_user,
            allow_origin = origins,
            trusted_proxies = if proxies.is_empty() {
                "none".to_owned()
            } else {
                proxies.join(", ")
            },
            "limits of each port"
        );
    }
}

/// The demo on `auth`'s port, with the flags' settings; with `--redis`, a node of its
/// cluster (under the returned prefix), whose cluster events are logged from now on. Its
/// delivery engine starts in [`join`].
fn demo(options: &Options, auth: Auth, name: &'static str) -> (Server, Option<String>) {
    let Some(cluster) = options.cluster(auth) else {
        return (
            demo_server_with(auth, |builder| options.configure(builder)),
            None,
        );
    };
    log_cluster_events(name, cluster.events());
    let server = demo_server_with(auth, |builder| {
        options
            .configure(builder)
            .delivery(move |local| cluster.delivery(local))
    });
    (server, Some(options.cluster_prefix(auth)))
}

/// One port's application: the page and the endpoint at `/`, the endpoint at `/ws`, the
/// page's files, `/health` and `/metrics`.
fn app(server: &Server, metrics: PrometheusHandle) -> Router {
    page::routes(server)
        .route("/ws", server.route())
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || async move { ([(CONTENT_TYPE, PROMETHEUS_TEXT)], metrics.render()) }),
        )
}

/// Serves `app` on `listener`, with each peer's address (which the per-address limits count),
/// until `stop` says so; then waits for its HTTP requests to finish. Upgraded connections are
/// no longer axum's: [`Server::shutdown`] closes them.
fn serve(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
) -> impl Future<Output = io::Result<()>> {
    let stopped = async move {
        // A dropped sender stops too.
        let _ = stop.wait_for(|stop| *stop).await;
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped)
    .into_future()
}

/// Logs what a server tells the application.
fn log_events(name: &'static str, server: &Server) {
    let mut events = server.events();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                Event::Joined { user_id } => tracing::info!(server = name, %user_id, "joined"),
                Event::Left { user_id } => tracing::info!(server = name, %user_id, "left"),
                Event::Error {
                    connection_id,
                    error,
                } => {
                    tracing::warn!(server = name, ?connection_id, %error, "error")
                }
                Event::Rejected {
                    remote_addr,
                    reason,
                } => {
                    tracing::info!(server = name, %remote_addr, ?reason, "rejected")
                }
                _ => {}
            }
        }
    });
}

/// Logs what a node reports about its cluster: trouble at warn, the rest at info.
fn log_cluster_events(name: &'static str, mut events: broadcast::Receiver<ClusterEvent>) {
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ClusterEvent::Disconnected) => tracing::warn!(
                    server = name,
                    "lost Redis: serving this process's connections only until it is back"
                ),
                Ok(ClusterEvent::Reconnected) => {
                    tracing::info!(server = name, "Redis is back: in the cluster again")
                }
                Ok(ClusterEvent::Relisted { connections }) => tracing::warn!(
                    server = name,
                    connections,
                    "Redis did not know this node: its connections were listed again"
                ),
                Ok(ClusterEvent::NodeGone { node, offline }) => {
                    let offline: Vec<&str> = offline.iter().map(|user| &**user).collect();
                    tracing::warn!(
                        server = name,
                        %node,
                        offline = offline.join(", "),
                        "a node stopped renewing its place and was taken out"
                    )
                }
                Ok(ClusterEvent::Lost { messages, reason }) => {
                    tracing::warn!(server = name, messages, reason, "messages lost")
                }
                Ok(other) => tracing::info!(server = name, event = ?other, "cluster"),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(server = name, missed, "cluster events missed")
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

/// Starts each node's delivery engine before the first connection (the axum route would
/// start it at its first connection, and refuse connections while it cannot): connects to
/// Redis and joins the cluster, or fails within the command timeout.
async fn join(nodes: [(&'static str, &Server, Option<&String>); 2]) -> Result<(), DeliveryError> {
    for (name, server, prefix) in nodes {
        let Some(prefix) = prefix else { continue };
        server.start().await?;
        tracing::info!(server = name, node = %server.node_id(), prefix, "joined the cluster");
    }
    Ok(())
}

/// Resolves at Ctrl-C, or at SIGTERM (what service managers send).
async fn stop_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // A usage error exits with 2 and the message, `--help` with 0 and the flags.
    let options = Options::parse();
    let hmac_port = options.hmac_port().unwrap_or_else(|error| error.exit());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    // Before the servers are built: each takes its metric handles from the recorder then.
    let metrics = match PrometheusBuilder::new().install_recorder() {
        Ok(metrics) => metrics,
        Err(error) => {
            eprintln!("cannot install the metrics recorder: {error}");
            return ExitCode::FAILURE;
        }
    };
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(METRICS_UPKEEP);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });

    let (plain, plain_node) = demo(&options, Auth::Plain, "plain");
    let (hmac, hmac_node) = demo(&options, Auth::Hmac, "hmac");
    let listeners = match (
        TcpListener::bind(("127.0.0.1", options.port)).await,
        TcpListener::bind(("127.0.0.1", hmac_port)).await,
    ) {
        (Ok(plain), Ok(hmac)) => [plain, hmac],
        (Err(error), _) | (_, Err(error)) => {
            eprintln!(
                "cannot listen on 127.0.0.1:{} and 127.0.0.1:{hmac_port}: {error}",
                options.port
            );
            return ExitCode::FAILURE;
        }
    };
    let addrs = match listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<io::Result<Vec<_>>>()
    {
        Ok(addrs) => addrs,
        Err(error) => {
            eprintln!("cannot read the listening addresses: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Before the first connection: an admission asks the cluster.
    let nodes = [
        ("plain", &plain, plain_node.as_ref()),
        ("hmac", &hmac, hmac_node.as_ref()),
    ];
    if let Err(error) = join(nodes).await {
        eprintln!("cannot join the cluster over Redis (--redis): {error}");
        // A node that did join says goodbye.
        tokio::join!(plain.shutdown(), hmac.shutdown());
        return ExitCode::FAILURE;
    }
    // One plain line first, for people and for the tests that start this binary.
    println!(
        "wse demo listening on ws://{} (HMAC challenge on ws://{})",
        addrs[0], addrs[1]
    );
    options.log_limits();

    let (stop, _) = watch::channel(false);
    let [plain_listener, hmac_listener] = listeners;
    let servings = [
        ("plain", &plain, plain_listener),
        ("hmac", &hmac, hmac_listener),
    ]
    .map(|(name, server, listener)| {
        log_events(name, server);
        let serving = serve(listener, app(server, metrics.clone()), stop.subscribe());
        (name, tokio::spawn(serving))
    });

    stop_signal().await;
    tracing::info!("stopping");
    // No new requests on either port; then the WebSocket connections close with 1012.
    stop.send_replace(true);
    tokio::join!(plain.shutdown(), hmac.shutdown());
    let mut code = ExitCode::SUCCESS;
    for (name, serving) in servings {
        match tokio::time::timeout(HTTP_DRAIN, serving).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                tracing::error!(server = name, %error, "serving failed");
                code = ExitCode::FAILURE;
            }
            Ok(Err(error)) => {
                tracing::error!(server = name, %error, "serving task failed");
                code = ExitCode::FAILURE;
            }
            Err(_) => tracing::warn!(server = name, "HTTP requests still open at exit"),
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use wse_server::Decision;

    fn builder() -> Builder {
        Server::builder(|_| async { Decision::refuse() })
    }

    #[test]
    fn the_defaults_are_the_librarys() {
        let options = Options::try_parse_from(["demo"]).unwrap();
        // The demo's contract: two devices per user.
        let library = format!("{:?}", builder().conn_per_user(2));
        assert_eq!(format!("{:?}", options.configure(builder())), library);
    }

    #[test]
    fn the_flags_parse() {
        Options::command().debug_assert();
        let options = Options::try_parse_from([
            "demo",
            "--rate-limit",
            "off",
            "--allow-origin",
            "https://a.example:8443",
            "--allow-origin",
            "http://b.example/",
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "::1",
        ])
        .unwrap();
        assert!(options.rate_limit.0.is_none());
        assert_eq!(options.allow_origins.len(), 2);
        assert_eq!(
            options.trusted_proxies,
            [
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        let options = Options::try_parse_from(["demo", "--rate-limit", "5"]).unwrap();
        assert_eq!(
            options.rate_limit.0,
            Some(RateLimit {
                per_second: 5,
                burst: 10
            })
        );
        for bad in [
            &["--rate-limit", "0"][..],
            &["--rate-limit", "fast"],
            &["--max-connections", "0"],
            &["--conn-per-user", "-1"],
            &["--allow-origin", "app.example"],
            &["--allow-origin", "https://app.example/path"],
            &["--trusted-proxy", "10.0.0.0/33"],
            &["--port", "65536"],
            &["--redis", "127.0.0.1:7000"],
            &["--redis", "rediss://127.0.0.1:7000/"],
            &["--redis", "redis://"],
            &["--redis", "redis://127.0.0.1/", "--redis-prefix", ""],
            &["--redis", "redis://127.0.0.1/", "--node-timeout-ms", "29"],
            // The cluster's settings without a cluster are a mistake.
            &["--redis-prefix", "chat"],
            &["--node-timeout-ms", "600"],
        ] {
            let args = std::iter::once("demo").chain(bad.iter().copied());
            assert!(Options::try_parse_from(args).is_err(), "{bad:?}");
        }
        let options = Options::try_parse_from(["demo", "--port", "65535"]).unwrap();
        assert!(options.hmac_port().is_err());
    }

    #[test]
    fn each_port_joins_a_cluster_of_its_own_with_redis() {
        let options = Options::try_parse_from(["demo"]).unwrap();
        assert!(options.cluster(Auth::Plain).is_none());
        assert!(options.cluster(Auth::Hmac).is_none());

        let options =
            Options::try_parse_from(["demo", "--redis", "redis://127.0.0.1:7000/"]).unwrap();
        assert_eq!(options.node_timeout_ms, 10_000);
        assert_eq!(options.cluster_prefix(Auth::Plain), "wse-demo");
        assert_eq!(options.cluster_prefix(Auth::Hmac), "wse-demo-hmac");
        assert!(options.cluster(Auth::Plain).is_some());

        let options = Options::try_parse_from([
            "demo",
            "--redis",
            "redis://127.0.0.1:7000/",
            "--redis-prefix",
            "chat",
            "--node-timeout-ms",
            "30",
            "--presence-grace-ms",
            "1500",
        ])
        .unwrap();
        assert_eq!(options.node_timeout_ms, 30);
        assert_eq!(options.presence_grace_ms, 1500);
        assert_eq!(options.cluster_prefix(Auth::Plain), "chat");
        assert_eq!(options.cluster_prefix(Auth::Hmac), "chat-hmac");
    }
}
