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
    timed_out: AtomicU64,
    interrupted: AtomicU64,
    at_shutdown: AtomicU64,
}

/// How a parked read ended, besides with its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StallEnd {
    /// Answered with its bytes.
    Served,
    /// Answered `EIO` after the read timeout.
    TimedOut,
    /// Answered because its process was killed.
    Interrupted,
    /// Answered `EIO` when the filesystem closed.
    Shutdown,
    /// Answered `EIO` because the source can never deliver (its storage failed); the run's
    /// failure says why, so only the wait is counted.
    SourceFailed,
}

/// The read path's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStatsSnapshot {
    /// Reads answered at once (every unit present or hidden by the overlay).
    pub hits: u64,
    /// Reads parked on missing units.
    pub misses: u64,
    /// Every parked read answered, however (data, timeout, killed reader, shutdown), and its
    /// wait from park to reply.
    pub stalls: LatencySummary,
    /// Of those, reads answered `EIO` by the read timeout.
    pub timed_out: u64,
    /// Of those, reads whose process was killed while they waited.
    pub interrupted: u64,
    /// Of those, reads answered `EIO` because the filesystem closed (shutdown).
    pub failed_at_shutdown: u64,
}

impl ReadStats {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// A parked read was answered after waiting `waited`.
    pub(crate) fn stall(&self, waited: Duration, end: StallEnd) {
        self.stalls.record(waited);
        let counter = match end {
            StallEnd::Served | StallEnd::SourceFailed => return,
            StallEnd::TimedOut => &self.timed_out,
            StallEnd::Interrupted => &self.interrupted,
            StallEnd::Shutdown => &self.at_shutdown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ReadStatsSnapshot {
        ReadStatsSnapshot {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stalls: self.stalls.summary(),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            interrupted: self.interrupted.load(Ordering::Relaxed),
            failed_at_shutdown: self.at_shutdown.load(Ordering::Relaxed),
        }
    }
}
