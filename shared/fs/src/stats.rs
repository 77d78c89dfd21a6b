//! Counters of the read path: atomics bumped on the FUSE and reply threads, read as a snapshot
//! by the runtime's status and report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::histogram::{LatencyHistogram, LatencySummary};

/// See the module doc.
#[derive(Default)]
pub(crate) struct ReadStats {
    hits: AtomicU64,
    misses: AtomicU64,
    stalls: LatencyHistogram,
}

/// The read path's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStatsSnapshot {
    /// Reads answered at once (every unit present or hidden by the overlay).
    pub hits: u64,
    /// Reads parked on missing units.
    pub misses: u64,
    /// Parked reads answered with data, and their wait from park to reply.
    pub stalls: LatencySummary,
}

impl ReadStats {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stall(&self, waited: Duration) {
        self.stalls.record(waited);
    }

    pub(crate) fn snapshot(&self) -> ReadStatsSnapshot {
        ReadStatsSnapshot {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stalls: self.stalls.summary(),
        }
    }
}
