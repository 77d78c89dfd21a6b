//! What a `vmt-run mount --report FILE.json` says, as far as the benchmark needs it.
//!
//! The report is `vmt_runtime::Status` serialized at unmount. Every field is optional here:
//! reports written before block-granular fetching lack `wasted` and the `blocks_*` fields, and
//! a report missing something must still give a row (with that cell empty), never fail the
//! run. Unknown fields are ignored.

use anyhow::{Context, Result};
use serde::Deserialize;

/// The mount figures a row carries (see [`crate::Row::with_mount`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MountReport {
    /// Payload bytes fetched, wasted ones included.
    pub downloaded: Option<u64>,
    /// Payload bytes received and thrown away.
    pub wasted: Option<u64>,
    /// FUSE reads that had to wait for missing data.
    pub read_misses: Option<u64>,
    /// Those waits, FUSE arrival to reply.
    pub stalls: Option<Stalls>,
    /// Whether blocks were verified alone (the torrent had a block-hash table).
    pub blocks_verified_alone: Option<bool>,
}

/// The `stalls` object of a mount report.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Stalls {
    /// Parked reads answered.
    pub count: Option<u64>,
    /// Their total wait, seconds.
    pub total_s: Option<f64>,
    /// Median wait, seconds.
    pub p50_s: Option<f64>,
    /// 99th-percentile wait, seconds.
    pub p99_s: Option<f64>,
}

impl MountReport {
    /// Parses a report's JSON.
    pub fn from_json(text: &str) -> Result<MountReport> {
        serde_json::from_str(text).context("not a vmt-run mount report")
    }

    /// Misses behind the stall percentiles: `stalls.count` (the reads they were taken over),
    /// else `read_misses`.
    pub fn misses(&self) -> Option<u64> {
        self.stalls
            .as_ref()
            .and_then(|s| s.count)
            .or(self.read_misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::tests::row;

    /// A report as written before block-granular fetching (from the committed
    /// `datasets/results/full/raw/strategies-markov-swarm-n1-c1-git-1-think0s.mount.json`).
    const OLD: &str = r#"{
      "strategy": "markov", "uptime_s": 2.603229821,
      "pieces_present": 117, "pieces_in_flight": 1, "pieces_total": 5360,
      "read_hits": 224, "read_misses": 97, "writes": 0, "parked_now": 0,
      "stalls": { "count": 97, "total_s": 2.362755, "p50_s": 0.021607, "p99_s": 0.04497,
                  "max_s": 0.048173 },
      "profile": ["git", 0.9881422818377181], "profile_switches": [],
      "downloaded": 31309824, "uploaded": 0,
      "peers": [{ "addr": "10.247.0.1:6881", "downloaded": 31309824, "uploaded": 0 }],
      "peer_status": "1 peer(s) connected", "overlay_blocks": 0
    }"#;

    /// A report with the fields block-granular fetching added.
    const NEW: &str = r#"{
      "strategy": "demand", "uptime_s": 1.5, "pieces_present": 40, "pieces_in_flight": 0,
      "pieces_total": 5360, "blocks_present": 700, "blocks_total": 85760,
      "blocks_verified_alone": true, "read_hits": 200, "read_misses": 90, "writes": 0,
      "parked_now": 0,
      "stalls": { "count": 88, "total_s": 0.2, "p50_s": 0.0016, "p99_s": 0.004, "max_s": 0.005 },
      "profile": null, "profile_switches": [], "downloaded": 11468800, "wasted": 16384,
      "uploaded": 0, "peers": [], "peer_status": "1 peer(s) connected", "overlay_blocks": 0
    }"#;

    #[test]
    fn old_report_gives_what_it_has() {
        let m = MountReport::from_json(OLD).unwrap();
        assert_eq!(m.downloaded, Some(31309824));
        assert_eq!(m.wasted, None);
        assert_eq!(m.blocks_verified_alone, None);
        assert_eq!(m.misses(), Some(97));
        let r = row("strategies", "markov", "swarm", 1, "git-1", 2.6, 2.3).with_mount(&m);
        assert_eq!(r.fetched, Some(31309824));
        assert_eq!(r.miss_p50_s, Some(0.021607));
        assert_eq!(r.miss_total_s, Some(2.362755));
        assert_eq!(r.miss_p99_s, Some(0.04497));
        assert_eq!(r.wasted, None);
        assert_eq!(r.blocks_alone, None);
    }

    #[test]
    fn new_report_gives_every_figure() {
        let m = MountReport::from_json(NEW).unwrap();
        let r = row("strategies", "demand", "swarm", 1, "git-1", 2.0, 1.0).with_mount(&m);
        assert_eq!(r.fetched, Some(11468800));
        assert_eq!(r.wasted, Some(16384));
        assert_eq!(r.misses, Some(88)); // the stalls' population, not read_misses
        assert_eq!(r.miss_p50_s, Some(0.0016));
        assert_eq!(r.blocks_alone, Some(true));
        // And the figures survive the CSV.
        let back = crate::Row::from_csv(&r.to_csv()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn sparse_or_broken_reports() {
        // Nothing the bench needs: every figure empty, still a report.
        assert_eq!(
            MountReport::from_json(r#"{"strategy": "demand"}"#).unwrap(),
            MountReport::default()
        );
        // No stalls object: misses fall back to read_misses.
        let m = MountReport::from_json(r#"{"read_misses": 5}"#).unwrap();
        assert_eq!(m.misses(), Some(5));
        // Not JSON, or a field of the wrong type: an error for the caller to report.
        assert!(MountReport::from_json("").is_err());
        assert!(MountReport::from_json(r#"{"downloaded": "many"}"#).is_err());
    }
}
