//! Token-bucket rate limits for upload and download, for experiments on one machine.
//!
//! [`TokenBucket`] is the synchronous core (no clock of its own, so it is tested with made-up
//! instants); [`RateLimiter`] shares one bucket between all connections and sleeps outside the
//! lock. Callers take tokens *after* moving bytes and sleep off any debt, so a 16 KiB block never
//! waits for a bucket smaller than itself, and the long-run rate is exact.

use std::sync::Mutex;
use std::time::{Duration, Instant};

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
}

/// A bucket shared by all connections of an engine; `None` rate means unlimited.
#[derive(Debug)]
pub struct RateLimiter {
    bucket: Option<Mutex<TokenBucket>>,
    rate: Option<u64>,
}

impl RateLimiter {
    /// A limiter of `rate` bytes per second (burst: a tenth of a second, at least 64 KiB), or
    /// unlimited for `None`.
    pub fn new(rate: Option<u64>) -> RateLimiter {
        RateLimiter {
            rate,
            bucket: rate.map(|r| {
                let burst = (r / 10).max(64 * 1024);
                Mutex::new(TokenBucket::new(r, burst, Instant::now()))
            }),
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
            .take(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
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

    #[test]
    fn time_going_backwards_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let mut b = TokenBucket::new(100, 100, t0);
        assert_eq!(b.take(100, t0 - Duration::from_secs(1)), Duration::ZERO);
    }
}
