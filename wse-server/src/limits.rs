//! Admission limits: connections in total and per remote address, failed authentications per
//! address, and each connection's inbound message rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::events::Rejection;

/// A per-connection inbound rate limit: a token bucket refilled at `per_second`, holding at
/// most `burst` tokens; each message takes one.
///
/// Past it, a call is answered with `wse.server.rate-limited` and a message is dropped (both
/// reported); a connection refused a whole `burst` of messages before it has been quiet long
/// enough to fill its bucket again is closed with 1008 `wse.rate-limited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained messages per second.
    pub per_second: u32,
    /// How many messages may come at once after a quiet spell.
    pub burst: u32,
}

/// Close code and reason for a connection that keeps sending past its rate limit.
pub const RATE_LIMITED: (u16, &str) = (1008, "wse.rate-limited");

/// A connection's token bucket, owned by its read loop.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    refilled: Instant,
    /// Messages refused since the bucket was last full (the peer last paused long enough).
    refused: u32,
}

/// What the bucket says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Admit,
    Refuse,
    /// Refused, and the connection has been refused a whole burst without pausing: close it.
    Abuse,
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            refilled: now,
            refused: 0,
        }
    }

    pub(crate) fn take(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        let burst = f64::from(self.limit.burst);
        self.tokens = (self.tokens + elapsed * f64::from(self.limit.per_second)).min(burst);
        if self.tokens >= burst {
            // Quiet long enough to fill up: past refusals are forgiven.
            self.refused = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Admit;
        }
        // Admitting the odd message as tokens trickle back does not forgive a flooder: only
        // a full bucket does.
        self.refused = self.refused.saturating_add(1);
        if self.refused >= self.limit.burst.max(1) {
            Verdict::Abuse
        } else {
            Verdict::Refuse
        }
    }
}

/// How many failed authentications an address may have within a window before its new
/// connections are dropped until the window has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailureLimit {
    /// Failures allowed within `window`.
    pub max_failures: u32,
    /// How long a failure counts.
    pub window: Duration,
}

/// Addresses tracked at most; past it, expired entries are swept and, if none expired, new
/// addresses are not tracked (failing open rather than growing without bound).
const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// The gate every socket passes before the WebSocket upgrade: connections in total and per
/// address, and addresses that failed to authenticate too often.
#[derive(Debug)]
pub(crate) struct Gate {
    total: Arc<Semaphore>,
    per_address_max: usize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    failure_limit: AuthFailureLimit,
    /// Address → (failures, when the first of them happened).
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// A connection's place within the limits; released on drop.
#[derive(Debug)]
pub(crate) struct Ticket {
    gate: Arc<Gate>,
    /// The address it is counted under, once known.
    address: Option<IpAddr>,
    _permit: OwnedSemaphorePermit,
}

impl Ticket {
    /// Counts this connection under `address`, unless it is counted already; refused when
    /// the address failed to authenticate too often lately or holds its maximum.
    pub(crate) fn count(&mut self, address: IpAddr) -> Result<(), Rejection> {
        if self.address.is_some() {
            return Ok(());
        }
        if self.gate.throttled(address, Instant::now()) {
            return Err(Rejection::AuthThrottled);
        }
        let mut per_address = lock(&self.gate.per_address);
        let count = per_address.entry(address).or_insert(0);
        if *count >= self.gate.per_address_max {
            return Err(Rejection::TooManyFromAddress);
        }
        *count += 1;
        self.address = Some(address);
        Ok(())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(address) = self.address else {
            return;
        };
        let mut per_address = lock(&self.gate.per_address);
        if let Some(count) = per_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                per_address.remove(&address);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only counter updates run under these locks: a poisoned lock still holds valid counts.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Gate {
    pub(crate) fn new(
        max_connections: usize,
        per_address_max: usize,
        failure_limit: AuthFailureLimit,
    ) -> Self {
        Self {
            total: Arc::new(Semaphore::new(max_connections)),
            per_address_max,
            per_address: Mutex::default(),
            failure_limit,
            failures: Mutex::default(),
        }
    }

    /// A place for a new connection, counted under no address yet (see [`Ticket::count`]), or
    /// why there is none. Never waits.
    pub(crate) fn enter(self: &Arc<Self>) -> Result<Ticket, Rejection> {
        let permit = Arc::clone(&self.total)
            .try_acquire_owned()
            .map_err(|_| Rejection::TooManyConnections)?;
        Ok(Ticket {
            gate: Arc::clone(self),
            address: None,
            _permit: permit,
        })
    }

    fn throttled(&self, address: IpAddr, now: Instant) -> bool {
        let mut failures = lock(&self.failures);
        match failures.get(&address) {
            Some(&(count, since)) if now.duration_since(since) < self.failure_limit.window => {
                count >= self.failure_limit.max_failures
            }
            Some(_) => {
                failures.remove(&address);
                false
            }
            None => false,
        }
    }

    /// Counts a failed authentication of `address`.
    pub(crate) fn record_failure(&self, address: IpAddr) {
        let now = Instant::now();
        let window = self.failure_limit.window;
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_TRACKED_ADDRESSES && !failures.contains_key(&address) {
            failures.retain(|_, (_, since)| now.duration_since(*since) < window);
            if failures.len() >= MAX_TRACKED_ADDRESSES {
                return;
            }
        }
        let entry = failures.entry(address).or_insert((0, now));
        if now.duration_since(entry.1) >= window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(gate: &Arc<Gate>, address: IpAddr) -> Result<Ticket, Rejection> {
        let mut ticket = gate.enter()?;
        ticket.count(address)?;
        Ok(ticket)
    }

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test(start_paused = true)]
    async fn the_bucket_admits_a_burst_then_the_rate_then_calls_abuse() {
        let limit = RateLimit {
            per_second: 10,
            burst: 3,
        };
        let start = Instant::now();
        let mut bucket = TokenBucket::new(limit, start);
        let verdicts: Vec<_> = (0..6).map(|_| bucket.take(start)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Admit,
                Verdict::Admit,
                Verdict::Admit,
                Verdict::Refuse,
                Verdict::Refuse,
                Verdict::Abuse
            ]
        );
        // A token trickling back admits one message but forgives nothing.
        let later = start + Duration::from_millis(100);
        assert_eq!(bucket.take(later), Verdict::Admit);
        assert_eq!(bucket.take(later), Verdict::Abuse);
        // A pause long enough to fill the bucket forgives past refusals.
        let quiet = later + Duration::from_secs(1);
        assert_eq!(bucket.take(quiet), Verdict::Admit);
        let verdicts: Vec<_> = (0..3).map(|_| bucket.take(quiet)).collect();
        assert_eq!(verdicts, [Verdict::Admit, Verdict::Admit, Verdict::Refuse]);
    }

    #[tokio::test]
    async fn connections_are_limited_in_total_and_per_address() {
        let limit = AuthFailureLimit {
            max_failures: 3,
            window: Duration::from_secs(60),
        };
        let gate = Arc::new(Gate::new(3, 2, limit));
        let other: IpAddr = "10.0.0.1".parse().unwrap();
        let a = admit(&gate, LOOPBACK).unwrap();
        let _b = admit(&gate, LOOPBACK).unwrap();
        assert_eq!(
            admit(&gate, LOOPBACK).unwrap_err(),
            Rejection::TooManyFromAddress
        );
        let _c = admit(&gate, other).unwrap();
        assert_eq!(
            admit(&gate, other).unwrap_err(),
            Rejection::TooManyConnections
        );
        drop(a);
        let _d = admit(&gate, LOOPBACK).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn failed_authentications_throttle_an_address_for_a_window() {
        let limit = AuthFailureLimit {
            max_failures: 2,
            window: Duration::from_secs(60),
        };
        let gate = Arc::new(Gate::new(100, 100, limit));
        gate.record_failure(LOOPBACK);
        assert!(admit(&gate, LOOPBACK).is_ok());
        gate.record_failure(LOOPBACK);
        assert_eq!(
            admit(&gate, LOOPBACK).unwrap_err(),
            Rejection::AuthThrottled
        );
        assert!(admit(&gate, "10.0.0.1".parse().unwrap()).is_ok());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(admit(&gate, LOOPBACK).is_ok());
    }
}
