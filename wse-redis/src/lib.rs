//! Several wse-rs nodes behind a load balancer, joined over Redis: a user's phone on node A
//! and laptop on node B are one user.
//!
//! ```no_run
//! use wse_redis::RedisConfig;
//! use wse_server::{Decision, Server};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = RedisConfig::new("redis://127.0.0.1:6379/").prefix("chat");
//! let server = Server::builder(|handshake| async move {
//!     match handshake.identity.as_str() {
//!         Some(user) => Decision::accept(user, serde_json::Value::Null),
//!         None => Decision::refuse(),
//!     }
//! })
//! .conn_per_user(3)
//! .delivery(move |local| cluster.delivery(local))
//! .build();
//! // Connects to Redis and registers this node before the first connection.
//! let serving = server.bind("0.0.0.0:8080").await?;
//! // Reaches alice's devices on every node, each once.
//! server.send_to_user("alice", "news", &"hello")?;
//! # Ok(())
//! # }
//! ```
//!
//! # What is cluster-wide
//!
//! - **Sends** to a user, a room, everyone, or one connection by id, with their exclusions:
//!   done on this node at once, and published once, already encoded in every codec, to the
//!   node that holds the connection or to every node; each node delivers to its own
//!   connections. Disconnects (a logout of every device, say) travel the same way.
//! - **`conn_per_user`**, atomically: admitting a connection is one script over the user's
//!   devices, so two devices admitted at once on two nodes never both stay past the limit,
//!   and a device past it is closed with `wse.clients-concurrency` on whichever node holds it.
//! - **Who is online**: the users and their devices ([`Server::users`],
//!   [`Server::devices`], [`Server::counts`]); a user joins when its first device in the
//!   cluster is admitted and leaves with its last: `Event::Joined` and `Event::Left` come
//!   once per cluster, from the node that admitted or released that device.
//! - **A node that dies without a word** stops renewing its place; the first node to renew
//!   after its timeout takes it and its connections out, and reports it with the users who
//!   went offline with it ([`ClusterEvent::NodeGone`], once for the cluster).
//!
//! - **Server → client calls by id** ([`Server::call`]): to a device on another node, the
//!   call and its answer (or the device's typed error) cross Redis; when that node dies, the
//!   call fails with `wse.client.rp.disconnect` as soon as it is taken out, not after the
//!   call's timeout.
//!
//! - **Rooms**: a connection joins or leaves from any node ([`Server::join`]), a whole user
//!   joins with every device it has on every node and every device it connects later
//!   ([`Server::join_user`]), within the per-connection room limit counted cluster-wide;
//!   members, users and rooms are answered for the cluster. A user who goes offline leaves
//!   the rooms it joined as a whole, and a connection that ends, or whose node dies, its
//!   own. Each change is made in Redis first (one script) and then reaches the delivery of
//!   the nodes concerned in the order its node published it: a send from the node that made
//!   a change sees it everywhere; a send from a third node at the same moment may not yet.
//!
//! - **Presence and profiles**: online users with their device counts, aliases and
//!   availability ([`Server::online`], [`Server::presence`], [`Server::profile`]), answered
//!   for the cluster; every change (a device more or less on any node, a profile update, a
//!   node taken out) takes the next version of one cluster-wide counter and reaches every
//!   node's presence subscribers, so that a late change never overwrites a newer one. A user
//!   comes online and goes offline once for the cluster.
//!
//! - **Going offline**: optionally after a grace period ([`RedisConfig::presence_grace`]): a
//!   user whose last device comes back within it never went offline (it stays online, with no
//!   device meanwhile; its rooms and profile are kept; no offline hook runs). The offline hook ([`RedisConfig::on_offline`]) runs once per
//!   user for the cluster, on the node that released its last device, reaped the node that
//!   held it, or found its grace period over: each of these claims the user in one script.
//!   The hook runs at most once: a node that dies while running it does not hand it over.
//!
//! [`Server::online`]: wse_server::Server::online
//! [`Server::presence`]: wse_server::Server::presence
//! [`Server::profile`]: wse_server::Server::profile
//!
//! [`Server::join`]: wse_server::Server::join
//! [`Server::join_user`]: wse_server::Server::join_user
//!
//! [`Server::call`]: wse_server::Server::call
//!
//! [`Server::users`]: wse_server::Server::users
//! [`Server::devices`]: wse_server::Server::devices
//! [`Server::counts`]: wse_server::Server::counts
//!
//! # Guarantees
//!
//! - **At most once** across nodes: Redis pub/sub keeps nothing for a subscriber that is not
//!   there. A message reaches each connection at most once.
//! - **Per sender, in order**: one node publishes on one connection, in the order it sent,
//!   and each node hears both its channels on one connection: what a node sent and changed
//!   reaches every other node in that order.
//! - **While Redis is down**, every node goes on delivering to its own connections. What it
//!   publishes meanwhile is dropped and reported ([`ClusterEvent::Lost`], the
//!   `wse_redis_lost_total` counter); a send that finds the publish queue full returns
//!   [`DeliveryError::Unavailable`](wse_server::DeliveryError::Unavailable) after delivering
//!   here. What others published is lost to it ([`ClusterEvent::Disconnected`]). Admissions
//!   fail (the connection is refused with 1013) rather than break the user limit. Each
//!   node reconnects by itself, at most half a second apart, subscribes again
//!   ([`ClusterEvent::Reconnected`]), and lists its connections again if Redis came back
//!   empty ([`ClusterEvent::Relisted`]): their users and devices, not their room memberships
//!   or profiles, which stay in each node's delivery (room sends still reach them) but are
//!   gone from the cluster's answers until they join again. No queue grows without bound: past
//!   [`RedisConfig::queue`] messages are dropped and counted.
//!
//! # Data layout
//!
//! Every name starts with the prefix `P` ([`RedisConfig::prefix`], default `wse`); node
//! ids are 16 hex digits, connection ids `c<n>@<node>`:
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `P:nodes` | sorted set | live nodes, scored by the time (ms, Redis's clock) past which each counts as dead |
//! | `P:node:<node>` | hash | a node's connections → their user ids |
//! | `P:user:<user>` | sorted set | a user's connections, scored by admission order (oldest first) |
//! | `P:users` | set | users with at least one connection |
//! | `P:seq` | string | the admission counter |
//! | `P:room:<room>` | hash | connections in the room by their own join → their user ids |
//! | `P:joined:<connection>` | set | rooms a connection joined by its own join |
//! | `P:room-users:<room>` | set | users in the room as a whole |
//! | `P:user-rooms:<user>` | set | rooms a user joined as a whole |
//! | `P:profile:<user>` | hash | an online user's `alias`, `available`, `public`, its presence's `version`, and whether others saw it online last (`shown`) |
//! | `P:version` | string | the presence version counter |
//! | `P:grace` | sorted set | users whose last device left, scored by the end of their grace period |
//!
//! | channel | who listens | what |
//! | --- | --- | --- |
//! | `P:to:all` | every node | sends and disconnects for users, rooms and everyone; whole users' room changes; presence changes; nodes taken out |
//! | `P:to:<node>` | that node | sends, disconnects and room changes for one of its connections, evictions, calls to its devices and their answers |
//!
//! A message is a binary envelope: a version byte, the publishing node, the kind, the target
//! and exclusion, and the frames by codec name (see `envelope.rs`). Changes of shared state
//! run as Lua scripts (`scripts.rs`), so a single Redis (or a primary with replicas and
//! Sentinel) is required; Redis Cluster is not supported.

mod config;
mod delivery;
mod envelope;
mod keys;
mod metrics;
mod node;
mod scripts;

pub use config::{ClusterEvent, RedisConfig};
pub use delivery::RedisDelivery;
