//! Clusters of servers joined through a `redis-server` of the test's own (wse-testkit).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

pub use wse_testkit::RedisServer as RedisProcess;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wse_client::Client;
use wse_redis::{ClusterEvent, RedisConfig};
use wse_server::{Decision, PresenceProcedures, Server, Serving};

/// How long any single wait in a test may take.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A node timeout short enough for tests of a node that dies.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(600);

/// A prefix no other test of this run uses: tests share no keys, so they run in parallel.
pub fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "wse-test-{test}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Fails the test if `future` takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: nothing within {PATIENCE:?}"),
    }
}

/// Waits until `check` holds, polling.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// One node of a test cluster: a server that accepts any string identity as that user.
pub struct Node {
    pub server: Server,
    pub serving: Serving,
    pub events: tokio::sync::broadcast::Receiver<ClusterEvent>,
}

impl Node {
    /// A node on `redis` under `prefix`, with `conn_per_user`, served on port 0.
    pub async fn start(redis: &RedisProcess, prefix: &str, conn_per_user: usize) -> Self {
        Self::start_with(redis, prefix, conn_per_user, |cluster| cluster).await
    }

    /// A node as [`Node::start`] makes it, its cluster settings changed by `configure`.
    pub async fn start_with(
        redis: &RedisProcess,
        prefix: &str,
        conn_per_user: usize,
        configure: impl FnOnce(RedisConfig) -> RedisConfig,
    ) -> Self {
        Self::start_serving(redis, prefix, conn_per_user, configure, |builder| builder).await
    }

    /// A node as [`Node::start_with`] makes it, its server's settings changed by `server`.
    pub async fn start_serving(
        redis: &RedisProcess,
        prefix: &str,
        conn_per_user: usize,
        configure: impl FnOnce(RedisConfig) -> RedisConfig,
        server: impl FnOnce(wse_server::Builder) -> wse_server::Builder,
    ) -> Self {
        let cluster = configure(
            RedisConfig::new(redis.url())
                .prefix(prefix)
                .node_timeout(NODE_TIMEOUT)
                .command_timeout(Duration::from_millis(500)),
        );
        let events = cluster.events();
        let builder = Server::builder(|handshake| async move {
            match handshake.identity.as_str() {
                Some(user) => Decision::accept(user, Value::Null),
                None => Decision::refuse(),
            }
        })
        .conn_per_user(conn_per_user)
        .presence_procedures(PresenceProcedures::new());
        let server = server(builder)
            .delivery(move |local| cluster.delivery(local))
            .build();
        let serving = within("bind", server.bind("127.0.0.1:0"))
            .await
            .expect("the node starts");
        Self {
            server,
            serving,
            events,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.serving.local_addr())
    }
}

/// A device of `user` connected to `node`, recording every `news` message it gets.
pub struct Device {
    pub client: Client,
    pub inbox: Arc<Mutex<Vec<Value>>>,
    pub presence: Arc<Mutex<Vec<Value>>>,
}

impl Device {
    pub async fn connect(url: &str, user: &str) -> Self {
        let client = Client::builder(url).build();
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&inbox);
        client
            .on("news", move |_, payload: Value| {
                record.lock().unwrap().push(payload);
            })
            .unwrap();
        let presence = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&presence);
        client
            .on("presence", move |_, change: Value| {
                record.lock().unwrap().push(change);
            })
            .unwrap();
        within("connect", client.connect(json!(user), json!({})))
            .await
            .expect("the node accepts the device");
        Self {
            client,
            inbox,
            presence,
        }
    }

    pub fn received(&self) -> Vec<Value> {
        self.inbox.lock().unwrap().clone()
    }
}

/// A node on a runtime and thread of its own, like [`Node`]; the returned function drops
/// that runtime, ending every task of the node at once with no goodbye to Redis, as a killed
/// process would.
pub fn doomed_node(redis_url: String, prefix: String) -> (std::net::SocketAddr, impl FnOnce()) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let cluster = RedisConfig::new(redis_url)
                .prefix(prefix)
                .node_timeout(NODE_TIMEOUT)
                .command_timeout(Duration::from_millis(500));
            let server = Server::builder(|handshake| async move {
                match handshake.identity.as_str() {
                    Some(user) => Decision::accept(user, Value::Null),
                    None => Decision::refuse(),
                }
            })
            .conn_per_user(3)
            .delivery(move |local| cluster.delivery(local))
            .build();
            let serving = server.bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(serving.local_addr()).unwrap();
            // Held, never shut down.
            std::mem::forget(serving);
            std::mem::forget(server);
        });
        let _ = kill_rx.recv();
        runtime.shutdown_background();
    });
    let addr = addr_rx
        .recv_timeout(PATIENCE)
        .expect("the doomed node starts");
    (addr, move || {
        let _ = kill_tx.send(());
        let _ = thread.join();
    })
}
