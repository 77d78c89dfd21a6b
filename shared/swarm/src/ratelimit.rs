//! Token-bucket rate limits for upload and download, for experiments on one machine.
//!
//! [`TokenBucket`] is the synchronous core (no clock of its own, so it is tested with made-up
//! instants); [`RateLimiter`] shares one bucket between all connections and sleeps outside the
//! lock. Callers take tokens *after* moving bytes and sleep off any debt, so a 16 KiB block never
//! waits for a bucket smaller than itself, and the long-run rate is exact.
//!
//! Uploads have two classes. A block a reader waits for ([`RateLimiter::consume_first`]) goes
//! as [`RateLimiter::consume`] does; any other upload ([`RateLimiter::consume_after`]) waits
//! while one of those is pacing, and then takes only tokens saved up, never debt, so the next
//! block a reader waits for finds the bucket clear. On a paced uplink shared by many peers, a
//! reader's block then waits for its own bytes only, not for a share among every queued
//! upload (measured in `datasets/results/scale/`: see `crate::urgent`). Unpaced, the socket's
//! unsent allowance (`connection::UNSENT_LOW_WATER`) keeps what is queued ahead short anyway.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A token bucket: `rate` tokens (bytes) per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` bytes refilled at `rate` bytes per second (`rate` > 0).
    pub fn new(rate: u64, burst: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: rate.max(1) as f64,
            burst: burst as f64,
            tokens: burst as f64,
            last: now,
        }
    }

    /// Takes `n` tokens at `now` and returns how long the caller must wait to pay off any debt.
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Takes `n` tokens if that many (or a full bucket's worth, for more than it holds) are
    /// saved up at `now`, leaving no debt; else takes nothing and returns how long until then.
    pub fn take_saved(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let need = (n as f64).min(self.burst);
        if self.tokens >= need {
            self.tokens -= n as f64;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((need - self.tokens) / self.rate))
        }
    }
}

/// The runtime's clock (the system's, or a test's paused one).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A bucket shared by all connections of an engine; `None` rate means unlimited.
#[derive(Debug)]
pub struct RateLimiter {
    bucket: Option<Mutex<TokenBucket>>,
    rate: Option<u64>,
    /// Callers in [`RateLimiter::consume_first`].
    first: AtomicUsize,
    /// Notified when the last of them leaves.
    first_done: Notify,
}

impl RateLimiter {
    /// A limiter of `rate` bytes per second (burst: a tenth of a second, at least 64 KiB), or
    /// unlimited for `None`.
    pub fn new(rate: Option<u64>) -> RateLimiter {
        RateLimiter {
            rate,
            bucket: rate.map(|r| {
                let burst = (r / 10).max(64 * 1024);
                Mutex::new(TokenBucket::new(r, burst, now()))
            }),
            first: AtomicUsize::new(0),
            first_done: Notify::new(),
        }
    }

    /// Its rate in bytes per second; `None` if unlimited.
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// Accounts `n` bytes just moved, sleeping while the bucket is in debt.
    pub async fn consume(&self, n: u64) {
        let Some(bucket) = &self.bucket else { return };
        // The std lock is released before the sleep: never held across `.await`.
        let wait = bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(n, now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// [`RateLimiter::consume`] for an upload a reader waits for: uploads in
    /// [`RateLimiter::consume_after`] hold back meanwhile.
    pub async fn consume_first(&self, n: u64) {
        if self.bucket.is_none() {
            return;
        }
        struct Pacing<'a>(&'a RateLimiter);
        impl Drop for Pacing<'_> {
            fn drop(&mut self) {
                if self.0.first.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.0.first_done.notify_waiters();
                }
            }
        }
        self.first.fetch_add(1, Ordering::AcqRel);
        let _pacing = Pacing(self);
        self.consume(n).await;
    }

    /// Whether an upload nobody waits for may start now: no upload a reader waits for is
    /// pacing.
    pub fn others_may_go(&self) -> bool {
        self.first.load(Ordering::Acquire) == 0
    }

    /// Returns once [`RateLimiter::others_may_go`]. Cancel-safe.
    pub async fn others_free(&self) {
        loop {
            let done = self.first_done.notified();
            tokio::pin!(done);
            // Registered before the check, so the last one leaving cannot be missed.
            done.as_mut().enable();
            if self.others_may_go() {
                return;
            }
            done.await;
        }
    }

    /// Accounts `n` bytes of an upload nobody waits for, before moving them: waits while an
    /// upload in [`RateLimiter::consume_first`] paces, then until `n` tokens are saved up.
    pub async fn consume_after(&self, n: u64) {
        let Some(bucket) = &self.bucket else { return };
        loop {
            self.others_free().await;
            let taken = bucket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take_saved(n, now());
            match taken {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_paces() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 500, t0);
        assert_eq!(b.take(500, t0), Duration::ZERO);
        // 250 bytes of debt at 1000 B/s: 250 ms.
        assert_eq!(b.take(250, t0), Duration::from_millis(250));
        // After the debt is paid, a second later the bucket is full again but capped at burst.
        let t1 = t0 + Duration::from_millis(250);
        assert_eq!(b.take(0, t1), Duration::ZERO);
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.take(500, t2), Duration::ZERO);
        assert!(b.take(1, t2) > Duration::ZERO);
    }

    #[test]
    fn long_run_rate_is_exact() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10_000, 1_000, t0);
        let mut now = t0;
        // Move 100 KB in 1 KB steps, waiting exactly what the bucket says.
        for _ in 0..100 {
            now += b.take(1_000, now);
        }
        let secs = now.duration_since(t0).as_secs_f64();
        assert!((secs - 9.9).abs() < 1e-6, "took {secs} s");
    }

    /// Saved tokens only: no debt, and a request bigger than the bucket waits for a full one.
    #[test]
    fn take_saved_never_leaves_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 500, t0);
        assert_eq!(b.take_saved(400, t0), Ok(()));
        assert_eq!(b.take_saved(200, t0), Err(Duration::from_millis(100)));
        assert_eq!(b.take_saved(200, t0 + Duration::from_millis(100)), Ok(()));
        assert_eq!(
            b.take_saved(800, t0 + Duration::from_millis(100)),
            Err(Duration::from_millis(500))
        );
        assert_eq!(b.take_saved(800, t0 + Duration::from_millis(600)), Ok(()));
        assert!(
            b.take(0, t0 + Duration::from_millis(600)) > Duration::ZERO,
            "800 from 500 saved"
        );
    }

    /// A reader's block on a drained uplink (100 KB/s) with four other uploads already
    /// waiting for it takes its own 16,384 bytes' time, 164 ms, not the 819 ms of all five;
    /// the others go after it, and all of them by then.
    #[tokio::test(start_paused = true)]
    async fn a_readers_upload_goes_before_the_queued_others() {
        let l = std::sync::Arc::new(RateLimiter::new(Some(100_000)));
        let t0 = tokio::time::Instant::now();
        l.consume(65_536).await; // the burst, spent
        let mut others = Vec::new();
        for _ in 0..4 {
            let l = l.clone();
            others.push(tokio::spawn(async move {
                l.consume_after(16_384).await;
                tokio::time::Instant::now()
            }));
        }
        tokio::task::yield_now().await;
        l.consume_first(16_384).await;
        let first = tokio::time::Instant::now() - t0;
        assert!(first <= Duration::from_millis(170), "{first:?}");
        for o in others {
            let at = o.await.unwrap() - t0;
            assert!(at > first && at <= Duration::from_millis(830), "{at:?}");
        }
        assert_eq!(l.first.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let mut b = TokenBucket::new(100, 100, t0);
        assert_eq!(b.take(100, t0 - Duration::from_secs(1)), Duration::ZERO);
    }
}
