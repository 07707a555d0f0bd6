//! How a session ends: a flag, a count of what must be gone before it has ended (the futures
//! of running procedures, and the holds of whoever still has to clean up), and one wake-up
//! for both. Kept inside the session rather than in a token of its own: every connection
//! has one, and this costs it no allocation.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(super) struct Ending {
    closed: AtomicBool,
    alive: AtomicUsize,
    changed: Notify,
}

impl Ending {
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Counts one more thing that must go before the session has ended.
    pub(super) fn enter(&self) {
        self.alive.fetch_add(1, Ordering::SeqCst);
    }

    /// One such thing has gone.
    pub(super) fn leave(&self) {
        if self.alive.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.changed.notify_waiters();
        }
    }

    /// Completes once the session is closed.
    pub(super) async fn cancelled(&self) {
        self.until(|ending| ending.is_closed()).await;
    }

    /// Completes once the session is closed and nothing counted is left.
    pub(super) async fn ended(&self) {
        self.until(|ending| ending.is_closed() && ending.alive.load(Ordering::SeqCst) == 0)
            .await;
    }

    async fn until(&self, done: impl Fn(&Self) -> bool) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Listening before looking: a change between the two still wakes us.
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn it_ends_once_closed_and_the_last_counted_thing_is_gone() {
        let ending = Arc::new(Ending::default());
        ending.enter();
        let waiting = tokio::spawn({
            let ending = Arc::clone(&ending);
            async move { ending.ended().await }
        });
        ending.close();
        ending.cancelled().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "one thing is still counted");
        ending.leave();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("ended once the last one left")
            .expect("no panic");
    }
}
