//! The closing line of `vmt-run seed` and `fetch`: bytes each way, their rates, the peers and
//! the time, so a run that ends says what it did (before, `seed` ended with just "stopping").

use std::fmt;
use std::time::Duration;

use vmt_formats::units::human_bytes;
use vmt_swarm::SwarmStats;

/// What a swarm run moved, over how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    /// Payload bytes received.
    pub downloaded: u64,
    /// Of them, from web seeds (HTTP origins).
    pub from_origin: u64,
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Peers that connected at some point.
    pub peers: usize,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Totals {
    /// The totals of an engine's final figures after `elapsed`.
    pub fn of(stats: &SwarmStats, elapsed: Duration) -> Totals {
        Totals {
            downloaded: stats.downloaded,
            from_origin: stats.origin_downloaded,
            uploaded: stats.uploaded,
            peers: stats.peers.len(),
            elapsed,
        }
    }

    /// `bytes` per second of the run, as `1.50 MiB/s`.
    fn rate(&self, bytes: u64) -> String {
        // Under a millisecond, a rate means nothing: show none rather than a huge one.
        let secs = self.elapsed.as_secs_f64();
        if secs < 1e-3 {
            return "-".into();
        }
        format!("{}/s", human_bytes((bytes as f64 / secs) as u64))
    }
}

impl fmt::Display for Totals {
    /// "downloaded 4.00 MiB (1.31 MiB/s), uploaded 0 B (0 B/s), 1 peer(s), 3.1 s", with
    /// "downloaded 4.00 MiB (1.31 MiB/s; 1.00 MiB from web seeds)" when an origin served.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = if self.from_origin > 0 {
            format!("; {} from web seeds", human_bytes(self.from_origin))
        } else {
            String::new()
        };
        write!(
            f,
            "downloaded {} ({}{origin}), uploaded {} ({}), {} peer(s), {:.1} s",
            human_bytes(self.downloaded),
            self.rate(self.downloaded),
            human_bytes(self.uploaded),
            self.rate(self.uploaded),
            self.peers,
            self.elapsed.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_say_bytes_rates_peers_and_time() {
        let t = Totals {
            from_origin: 0,
            downloaded: 4 << 20,
            uploaded: 0,
            peers: 2,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(
            t.to_string(),
            "downloaded 4.00 MiB (2.00 MiB/s), uploaded 0 B (0 B/s), 2 peer(s), 2.0 s"
        );
        let instant = Totals {
            elapsed: Duration::ZERO,
            ..t
        };
        assert!(instant.to_string().contains("(-)"), "{instant}");
    }
}
