//! Counters the serving path bumps (atomics, no locks on a hit) and the snapshot built from
//! them for progress bars, the `--status` endpoint and the exit report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Counters of the serving path.
#[derive(Default)]
pub(crate) struct RuntimeStats {
    hits: AtomicU64,
    misses: AtomicU64,
    writes: AtomicU64,
    stalls: AtomicU64,
    stall_us: AtomicU64,
    /// Every stall's duration in µs, for percentiles (appended on the miss path only).
    stall_list: Mutex<Vec<u64>>,
}

impl RuntimeStats {
    pub(crate) fn record_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_stall(&self, d: Duration) {
        let us = d.as_micros() as u64;
        self.stalls.fetch_add(1, Ordering::Relaxed);
        self.stall_us.fetch_add(us, Ordering::Relaxed);
        self.stall_list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(us);
    }

    pub(crate) fn reads(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn stall_summary(&self) -> StallSummary {
        let mut list = self
            .stall_list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        list.sort_unstable();
        let pct = |p: f64| {
            list.get(((list.len() as f64 - 1.0) * p).round() as usize)
                .map_or(0.0, |&us| us as f64 / 1e6)
        };
        StallSummary {
            count: self.stalls.load(Ordering::Relaxed),
            total_s: self.stall_us.load(Ordering::Relaxed) as f64 / 1e6,
            p50_s: pct(0.5),
            p99_s: pct(0.99),
            max_s: list.last().map_or(0.0, |&us| us as f64 / 1e6),
        }
    }

    pub(crate) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

/// Stalls: reads parked on missing pieces, from the FUSE request to its reply.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StallSummary {
    /// Parked reads answered.
    pub count: u64,
    /// Their total waiting time, seconds.
    pub total_s: f64,
    /// Median wait, seconds.
    pub p50_s: f64,
    /// 99th-percentile wait, seconds.
    pub p99_s: f64,
    /// Longest wait, seconds.
    pub max_s: f64,
}

/// A change of the most believed profile.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileSwitch {
    /// Seconds since the mount.
    pub t_s: f64,
    /// Profile name before (none at the first read).
    pub from: Option<String>,
    /// Profile name after.
    pub to: String,
    /// Belief in `to` at the switch.
    pub belief: f64,
}

/// Traffic with one peer.
#[derive(Clone, Debug, Serialize)]
pub struct PeerTraffic {
    /// The peer's address.
    pub addr: String,
    /// Payload bytes received from it.
    pub downloaded: u64,
    /// Payload bytes sent to it.
    pub uploaded: u64,
}

/// Everything the runtime reports: live (`--status`, bars) and at exit (`--report`).
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Strategy in use.
    pub strategy: String,
    /// Seconds since the mount.
    pub uptime_s: f64,
    /// Verified pieces.
    pub pieces_present: u32,
    /// Pieces being fetched.
    pub pieces_in_flight: u32,
    /// Pieces in the image.
    pub pieces_total: u32,
    /// FUSE reads served from local pieces at once.
    pub read_hits: u64,
    /// FUSE reads that had to wait for a piece.
    pub read_misses: u64,
    /// FUSE writes (into the overlay).
    pub writes: u64,
    /// Reads waiting now.
    pub parked_now: usize,
    /// Stalls so far.
    pub stalls: StallSummary,
    /// The most believed profile now, and its belief.
    pub profile: Option<(String, f64)>,
    /// Profile switches so far.
    pub profile_switches: Vec<ProfileSwitch>,
    /// Payload bytes downloaded.
    pub downloaded: u64,
    /// Payload bytes uploaded.
    pub uploaded: u64,
    /// Per peer.
    pub peers: Vec<PeerTraffic>,
    /// Human status of the peer connections ("no reachable peer: ...").
    pub peer_status: String,
    /// Blocks held by the copy-on-write overlay.
    pub overlay_blocks: u64,
}
