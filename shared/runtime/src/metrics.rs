//! `GET /metrics`: the runtime's [`Status`] in Prometheus' text exposition format (0.0.4).
//!
//! Encoded with `prometheus-client`, the Prometheus project's own Rust client (the one
//! `prometheus/client_rust` maintains, next to the Go and Java ones): it writes the format's
//! names, escaping and histogram series the way Prometheus parses them, with few dependencies
//! and no global registry. Its metrics are used as constants over one snapshot (a
//! [`Collector`] per scrape): every figure comes from the same `Runtime::status` the JSON at
//! `/status` shows, so there is no second bookkeeping to drift, and a scrape takes the same
//! short locks as `/status` does, in the same order, from the status server's task (never the
//! FUSE threads). The counters are monotone because the snapshot's figures are: atomics that
//! only grow, and the profile switches, a list only appended to.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::report::Status;

/// The `Content-Type` of the text format.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric's name starts with this.
const PREFIX: &str = "vmt";

/// Renders `status` in the text format.
pub(crate) fn render(status: Status) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(Snapshot(status)));
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a metric below.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::warn!("metrics: encoding failed: {e}");
    }
    out
}

/// Payload bytes received, by where they came from: `peer` (BitTorrent peers) and `origin`
/// (web seeds, BEP 19).
///
/// The engine counts origin (web seed) bytes inside `downloaded` too, so peers' bytes are the
/// difference: the two series add up to what was received.
fn bytes_by_source(st: &Status) -> [(&'static str, u64); 2] {
    let origin = st.origin_downloaded.min(st.downloaded);
    [("peer", st.downloaded - origin), ("origin", origin)]
}

/// One status snapshot, as a collector the registry encodes once.
#[derive(Debug)]
struct Snapshot(Status);

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let st = &self.0;
        let bytes = Some(&Unit::Bytes);

        gauge(
            &mut e,
            "pieces_present",
            "Verified pieces.",
            st.pieces_present,
        )?;
        gauge(
            &mut e,
            "pieces_in_flight",
            "Pieces being fetched.",
            st.pieces_in_flight,
        )?;
        gauge(&mut e, "pieces", "Pieces in the image.", st.pieces_total)?;
        gauge(
            &mut e,
            "blocks_present",
            "Blocks present (readable), verified alone or in their piece.",
            st.blocks_present,
        )?;
        gauge(&mut e, "blocks", "Blocks in the image.", st.blocks_total)?;

        counters(
            &mut e,
            "downloaded",
            "Payload bytes received, wasted ones included, by source.",
            bytes,
            "source",
            &bytes_by_source(st),
        )?;
        counter(
            &mut e,
            "useful",
            "Payload bytes that made a block present.",
            bytes,
            st.useful,
        )?;
        let w = st.wasted_by;
        counters(
            &mut e,
            "wasted",
            "Payload bytes received and thrown away, by cause.",
            bytes,
            "cause",
            &[
                ("duplicate", w.duplicate),
                ("corrupt", w.corrupt),
                ("unrequested", w.unrequested),
                ("abandoned", w.abandoned),
            ],
        )?;
        counter(
            &mut e,
            "uploaded",
            "Payload bytes sent to peers.",
            bytes,
            st.uploaded,
        )?;

        counters(
            &mut e,
            "reads",
            "FUSE reads: hit (served from present blocks at once) or miss (waited for blocks).",
            None,
            "result",
            &[("hit", st.read_hits), ("miss", st.read_misses)],
        )?;
        counter(
            &mut e,
            "writes",
            "FUSE writes (into the overlay).",
            None,
            st.writes,
        )?;
        gauge(
            &mut e,
            "reads_parked",
            "Reads waiting for blocks now.",
            st.parked_now as u64,
        )?;
        stalls(&mut e, st)?;
        counters(
            &mut e,
            "stalls_failed",
            "Parked reads answered with EIO, by why.",
            None,
            "why",
            &[
                ("timeout", st.stalls.timed_out),
                ("interrupted", st.stalls.interrupted),
                ("shutdown", st.stalls.failed_at_shutdown),
            ],
        )?;

        counter(
            &mut e,
            "profile_switches",
            "Changes of the most believed profile.",
            None,
            st.profile_switches.len() as u64,
        )?;
        gauge(
            &mut e,
            "peers_connected",
            "Peers connected now.",
            st.peers_connected as u64,
        )?;
        gauge(
            &mut e,
            "peers_banned",
            "Addresses banned for sending corrupt data.",
            st.banned.len() as u64,
        )?;
        counter(
            &mut e,
            "peers_evicted",
            "Peers evicted for giving nothing while a newcomer waited.",
            None,
            st.peers_evicted,
        )?;
        counter(
            &mut e,
            "hash_failures",
            "Blocks and pieces that failed verification.",
            None,
            u64::from(st.hash_failures),
        )?;
        gauge(
            &mut e,
            "storage_failed",
            "1 once local storage failed and fetching stopped.",
            u64::from(st.failure.is_some()),
        )?;
        let uptime = ConstGauge::new(st.uptime_s);
        uptime.encode(e.encode_descriptor(
            "uptime",
            "Time since the mount.",
            Some(&Unit::Seconds),
            uptime.metric_type(),
        )?)
    }
}

/// The stall-time histogram: the filesystem histogram's coarse buckets (exact counts at powers
/// of two of microseconds, from about 1 ms to 34 s). A bucket `le` counts waits shorter than
/// its bound, to the microsecond.
fn stalls(e: &mut DescriptorEncoder, st: &Status) -> fmt::Result {
    let s = &st.stalls;
    // The encoder wants each bucket's own count; the summary's are cumulative.
    let mut buckets = Vec::with_capacity(s.below.len());
    let mut last = 0;
    for &(le, below) in &s.below {
        buckets.push((le, below.saturating_sub(last)));
        last = below;
    }
    e.encode_descriptor(
        "stall",
        "How long parked reads waited, from the FUSE request to the reply, however answered.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?
    .encode_histogram::<NoLabelSet>(s.total_s, s.count, &buckets, None)
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, unit, c.metric_type())?)
}

/// One counter family with one label, a series per `(label value, count)`.
fn counters(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    label: &str,
    values: &[(&str, u64)],
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for &(value, n) in values {
        let labels = [(label, value)];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: impl Into<u64>) -> fmt::Result {
    let g = ConstGauge::new(value.into());
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use prometheus_parse::{Scrape, Value};
    use vmt_fs::{LatencyHistogram, ReadStatsSnapshot};
    use vmt_swarm::WastedBytes;

    use super::*;
    use crate::report::{ProfileSwitch, StallSummary};

    fn status() -> Status {
        let h = LatencyHistogram::new();
        for ms in [0.5, 3.0, 3.0, 40.0, 90_000.0] {
            h.record(std::time::Duration::from_secs_f64(ms / 1000.0));
        }
        let reads = ReadStatsSnapshot {
            hits: 70,
            misses: 5,
            stalls: h.summary(),
            timed_out: 1,
            ..Default::default()
        };
        let switch = ProfileSwitch {
            t_s: 1.0,
            from: None,
            to: "boot".into(),
            belief: 0.9,
        };
        Status {
            strategy: "markov".into(),
            uptime_s: 12.5,
            pieces_present: 10,
            pieces_in_flight: 2,
            pieces_total: 64,
            blocks_present: 170,
            blocks_total: 1024,
            blocks_verified_alone: true,
            read_hits: reads.hits,
            read_misses: reads.misses,
            writes: 3,
            parked_now: 1,
            oldest_parked: None,
            stalls: StallSummary::from(reads),
            profile: None,
            profile_switches: vec![switch.clone(), switch],
            downloaded: 3 << 20,
            useful: (3 << 20) - 16384,
            origin_downloaded: 1 << 20,
            origin_useful: 1 << 20,
            web_seeds: Vec::new(),
            wasted: 16384,
            wasted_by: WastedBytes {
                duplicate: 16384,
                ..Default::default()
            },
            hash_failures: 1,
            banned: vec!["10.0.0.9".into()],
            peers_evicted: 0,
            failure: None,
            uploaded: 1 << 20,
            declines_received: 0,
            urgent_asked: 0,
            urgent_served: 0,
            busy_sent: 0,
            busy_received: 0,
            peers_connected: 2,
            peers: Vec::new(),
            peer_status: String::new(),
            overlay_blocks: 0,
            unmount: None,
            fuse_left_behind: false,
        }
    }

    /// Samples by `(name, labels "k=v,...")`.
    type Samples = HashMap<(String, String), f64>;

    /// Parses `text` as a scraper would, into samples and the histogram's `(le, count)`.
    pub(crate) fn parse(text: &str) -> (Samples, Vec<(f64, f64)>) {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let mut flat = HashMap::new();
        let mut buckets = Vec::new();
        for s in scrape.samples {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let v = match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                Value::Histogram(h) => {
                    buckets = h.iter().map(|b| (b.less_than, b.count)).collect();
                    continue;
                }
                Value::Summary(_) => panic!("no summaries are exported"),
            };
            flat.insert((s.metric, labels.join(",")), v);
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        (flat, buckets)
    }

    #[test]
    fn a_snapshot_renders_as_prometheus_text_that_parses_back() {
        let text = render(status());
        let (m, buckets) = parse(&text);
        let get = |name: &str, labels: &str| {
            *m.get(&(name.to_string(), labels.to_string()))
                .unwrap_or_else(|| panic!("{name}{{{labels}}} in\n{text}"))
        };
        assert_eq!(get("vmt_pieces_present", ""), 10.0);
        assert_eq!(get("vmt_blocks_present", ""), 170.0);
        assert_eq!(get("vmt_blocks", ""), 1024.0);
        assert_eq!(
            get("vmt_downloaded_bytes_total", "source=peer"),
            (2 << 20) as f64
        );
        assert_eq!(
            get("vmt_downloaded_bytes_total", "source=origin"),
            (1 << 20) as f64
        );
        assert_eq!(get("vmt_wasted_bytes_total", "cause=duplicate"), 16384.0);
        assert_eq!(get("vmt_uploaded_bytes_total", ""), (1 << 20) as f64);
        assert_eq!(get("vmt_reads_total", "result=hit"), 70.0);
        assert_eq!(get("vmt_reads_total", "result=miss"), 5.0);
        assert_eq!(get("vmt_stalls_failed_total", "why=timeout"), 1.0);
        assert_eq!(get("vmt_profile_switches_total", ""), 2.0);
        assert_eq!(get("vmt_peers_connected", ""), 2.0);
        assert_eq!(get("vmt_peers_banned", ""), 1.0);
        assert_eq!(get("vmt_hash_failures_total", ""), 1.0);
        assert_eq!(get("vmt_uptime_seconds", ""), 12.5);
        // The histogram: 5 stalls of 0.5, 3, 3, 40 and 90 000 ms.
        assert_eq!(get("vmt_stall_seconds_count", ""), 5.0);
        let sum = get("vmt_stall_seconds_sum", "");
        assert!((sum - 90.0465).abs() < 1e-6, "{sum}");
        let at = |le: f64| buckets.iter().find(|b| b.0 == le).map(|b| b.1);
        assert_eq!(at(0.001024), Some(1.0), "{buckets:?}");
        assert_eq!(at(0.004096), Some(3.0));
        assert_eq!(at(0.065536), Some(4.0));
        assert_eq!(at(33.554432), Some(4.0), "90 s is past the last bound");
        assert_eq!(at(f64::INFINITY), Some(5.0));
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "buckets are cumulative: {buckets:?}"
        );
        assert!(text.contains("# TYPE vmt_stall_seconds histogram"));
    }
}
