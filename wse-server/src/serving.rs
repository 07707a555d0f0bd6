//! Serving: bind, accept, streams accepted elsewhere, and graceful shutdown of one listener or
//! of the whole server.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::events::{Event, Rejection};
use crate::server::Server;
use crate::task;

impl Server {
    /// Binds `addr` and serves on it, starting the delivery engine first if it has not
    /// started yet.
    ///
    /// # Errors
    /// The I/O error of binding; a delivery engine that cannot start, as
    /// [`io::ErrorKind::Other`].
    ///
    /// # Cancel safety
    /// Cancel-safe: until it returns, nothing is served.
    pub async fn bind(&self, addr: impl ToSocketAddrs) -> io::Result<Serving> {
        self.serve(TcpListener::bind(addr).await?).await
    }

    /// Serves on `listener` in a background task, starting the delivery engine first if it
    /// has not started yet.
    ///
    /// # Errors
    /// The I/O error of reading the listener's address; a delivery engine that cannot start,
    /// as [`io::ErrorKind::Other`].
    ///
    /// # Cancel safety
    /// Cancel-safe: until it returns, nothing is served.
    pub async fn serve(&self, listener: TcpListener) -> io::Result<Serving> {
        let local_addr = listener.local_addr()?;
        self.start().await.map_err(io::Error::other)?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(self.clone(), listener, stopped));
        Ok(Serving {
            local_addr,
            stop,
            task,
        })
    }

    /// Serves one stream that is already accepted (a TLS stream from your acceptor, a Unix
    /// socket, an in-memory duplex) until the connection ends: WebSocket upgrade, handshake,
    /// and everything after, exactly as for a socket from [`Server::bind`]. `remote_addr` is
    /// what identify and [`Connection::remote_addr`](crate::Connection::remote_addr) see.
    ///
    /// # Cancel safety
    /// Dropping the future drops the connection abruptly (no close frame).
    pub async fn serve_io<S>(&self, io: S, remote_addr: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if let Err(error) = self.start().await {
            self.emit(Event::Rejected {
                remote_addr,
                reason: Rejection::Unavailable(error.to_string()),
            });
            return;
        }
        // No listener's shutdown reaches this connection; the server's does.
        task::run(self.clone(), io, remote_addr, None).await;
    }

    /// Stops every listener, closes every connection of this node with 1012 `wse.by-server`
    /// (clients with reconnect enabled come back), waits until every listener and connection
    /// task has ended (an open connection within the close timeout, one still in its handshake
    /// within the handshake timeout), then closes the delivery engine, which says goodbye to
    /// the other nodes of a cluster.
    ///
    /// # Cancel safety
    /// The stop is requested at once; dropping the future only stops the waiting (and skips
    /// the delivery engine's goodbye).
    pub async fn shutdown(&self) {
        let shared = self.shared();
        // The flag first, then the list: a connection listed after this look sees the flag
        // (the index's lock orders the two) and closes itself.
        shared.stopping.store(true, Ordering::SeqCst);
        shared.stop.send_replace(true);
        self.close_local(|_| true);
        shared.tasks.idle().await;
        shared.delivery.close().await;
    }
}

/// A server serving on one listener.
///
/// Dropping it leaves the server running; [`Serving::shutdown`] stops it.
#[derive(Debug)]
pub struct Serving {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Serving {
    /// The address it listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection this listener accepted with 1012
    /// `wse.by-server` (clients with reconnect enabled come back), and waits until each of
    /// their tasks has ended (each bounded by the close timeout). The server's other listeners
    /// go on; [`Server::shutdown`] stops them all.
    ///
    /// # Cancel safety
    /// The stop is requested at once; dropping the future only stops the waiting.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Resolves when the listener is told to stop; never if its [`Serving`] is dropped (which
/// leaves it running).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A listener's stop flag, held by the connections it accepted.
#[derive(Debug, Default)]
pub(crate) struct Listener {
    stopping: AtomicBool,
}

impl Listener {
    /// Whether the listener is shutting down.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

async fn accept_loop(server: Server, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    // Each connection task holds a clone of `done`; when the last is dropped, they are all over.
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let this = Arc::new(Listener::default());
    let mut server_stop = server.shared().stop.subscribe();
    // Counted like a connection, so that the server's shutdown waits for this loop too: no
    // connection is served after it.
    let _running = server.shared().tasks.enter();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            () = stopped(&mut server_stop) => break,
            accepted = listener.accept() => match accepted {
                // Accepted as the server's shutdown began: dropped unserved.
                Ok(_) if server.stopping() => break,
                Ok((tcp, remote_addr)) => {
                    // Replies are small and latency matters more than packet count; the
                    // writer batches what is queued.
                    let _ = tcp.set_nodelay(true);
                    let done = done.clone();
                    let serving =
                        task::run(server.clone(), tcp, remote_addr, Some(Arc::clone(&this)));
                    // `map`, not an `async` block around it, which would hold the connection's
                    // future twice.
                    tokio::spawn(serving.map(move |()| drop(done)));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    // The flag first, then the list: a connection listed after this look sees the flag (the
    // index's lock orders the two), and closes itself.
    this.stopping.store(true, Ordering::SeqCst);
    server.close_local(|connection| {
        connection
            .listener()
            .is_some_and(|of| Arc::ptr_eq(of, &this))
    });
    drop(done);
    let _ = all_done.recv().await;
}

/// How many connection tasks run, so that a shutdown can wait for the last.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    running: AtomicUsize,
    idle: Notify,
}

/// One running connection task; counted until dropped.
#[derive(Debug)]
pub(crate) struct TaskGuard(Arc<Tasks>);

impl Tasks {
    pub(crate) fn enter(self: &Arc<Self>) -> TaskGuard {
        self.running.fetch_add(1, Ordering::SeqCst);
        TaskGuard(Arc::clone(self))
    }

    /// Waits until no connection task runs.
    async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            let mut idle = std::pin::pin!(idle);
            // Registered before the look, so that the last task's exit in between is not missed.
            idle.as_mut().enable();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
