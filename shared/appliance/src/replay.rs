//! Trace replay: how strategies are compared for real.
//!
//! [`replay`] issues a trace's reads against a file (a vmt-run mount, the raw image, a network
//! mount) in recorded order, keeping the recorded compute gaps: read *i* is issued no earlier
//! than its recorded time plus the delay accumulated so far (stalls and inserted think time),
//! so a slow read pushes everything after it, as it would a real task. Reads are issued one at a
//! time, which makes replays of the same trace directly comparable across runtimes.
//!
//! *Completion time* is the time to the end of the last read; *stall time* is completion minus
//! the trace's own duration minus the think time inserted at task boundaries (DESIGN.md §5).
//! Writes are not replayed: replaying them against the raw image would modify it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use vmt_formats::trace::{Op, Trace};

/// How to replay.
#[derive(Clone, Copy, Debug)]
pub struct ReplayParams {
    /// Idle time inserted at each task boundary of a session trace (users pause between tasks).
    pub think: Duration,
    /// Evict the target file from the page cache first, so a local file is read from disk.
    pub cold: bool,
    /// Time dilation K (at least 1): recorded compute gaps and think time are multiplied by K,
    /// for runs whose links are slowed down by K so that many clients fit on one machine. The
    /// report is as measured; [`ReplayReport::undilated`] divides its times by K.
    pub dilation: u32,
}

impl Default for ReplayParams {
    fn default() -> ReplayParams {
        ReplayParams {
            think: Duration::ZERO,
            cold: false,
            dilation: 1,
        }
    }
}

/// Where a replay reads: a file, or a filesystem core answering in process.
pub trait ReadTarget {
    /// Fills `buf` from `offset`, waiting as long as the data takes to arrive.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadTarget for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

/// Timing of one task segment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SegmentReport {
    /// Task label.
    pub task: String,
    /// Reads issued.
    pub reads: u64,
    /// Recorded duration of the segment (first to last read), in seconds.
    pub recorded_s: f64,
    /// Replayed duration (from the segment's first read issue to its last read's end).
    pub replayed_s: f64,
    /// Time reads of this segment spent waiting beyond their recorded schedule, in seconds.
    pub stall_s: f64,
}

/// Result of a replay, as `vmt-record replay --json` prints it and `vmt-bench` reads it back.
/// Its `Display` is the human report: a summary line, then a line per task segment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplayReport {
    /// The trace's label.
    pub trace: String,
    /// Reads issued.
    pub reads: u64,
    /// Bytes read.
    pub bytes: u64,
    /// The trace's own duration (to its last read), seconds.
    pub trace_s: f64,
    /// Think time inserted, seconds.
    pub think_s: f64,
    /// Completion time, seconds.
    pub completion_s: f64,
    /// Completion minus trace duration minus think time, seconds.
    pub stall_s: f64,
    /// Median latency of one read, seconds.
    pub read_p50_s: f64,
    /// 99th-percentile latency of one read, seconds.
    pub read_p99_s: f64,
    /// Largest latency of one read, seconds.
    pub read_max_s: f64,
    /// Per task segment.
    pub segments: Vec<SegmentReport>,
}

impl ReplayReport {
    /// The report of a replay dilated by `k`, in undilated seconds: every time divided by `k`.
    pub fn undilated(mut self, k: u32) -> ReplayReport {
        let k = f64::from(k.max(1));
        for t in [
            &mut self.trace_s,
            &mut self.think_s,
            &mut self.completion_s,
            &mut self.stall_s,
            &mut self.read_p50_s,
            &mut self.read_p99_s,
            &mut self.read_max_s,
        ] {
            *t /= k;
        }
        for s in &mut self.segments {
            s.recorded_s /= k;
            s.replayed_s /= k;
            s.stall_s /= k;
        }
        self
    }
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} reads, {:.1} MiB; completion {:.3} s = trace {:.3} s + think {:.3} s + stall {:.3} s; read latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.trace,
            self.reads,
            self.bytes as f64 / (1 << 20) as f64,
            self.completion_s,
            self.trace_s,
            self.think_s,
            self.stall_s,
            self.read_p50_s * 1e3,
            self.read_p99_s * 1e3,
            self.read_max_s * 1e3
        )?;
        for s in &self.segments {
            writeln!(
                f,
                "  {:<12} {:>6} reads  recorded {:>8.3} s  replayed {:>8.3} s  stall {:>8.3} s",
                s.task, s.reads, s.recorded_s, s.replayed_s, s.stall_s
            )?;
        }
        Ok(())
    }
}

/// Replays `trace`'s reads against `path`. See the module doc.
pub fn replay(trace: &Trace, path: &Path, params: ReplayParams) -> io::Result<ReplayReport> {
    if params.cold {
        crate::throughput::drop_cache(path)?;
    }
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    if size < trace.image.size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {size} bytes, smaller than the trace's {}-byte image",
                path.display(),
                trace.image.size
            ),
        ));
    }
    replay_on(trace, &file, params)
}

/// Replays `trace`'s reads against `target`, which must hold the trace's whole image. See the
/// module doc.
pub fn replay_on(
    trace: &Trace,
    target: &impl ReadTarget,
    params: ReplayParams,
) -> io::Result<ReplayReport> {
    let k = params.dilation.max(1);
    let think = params.think * k;
    let scaled = |t_us: u64| Duration::from_micros(t_us.saturating_mul(u64::from(k)));
    let max_len = trace.records.iter().map(|r| r.len).max().unwrap_or(0) as usize;
    let mut buf = vec![0u8; max_len];
    let mut latencies = Vec::with_capacity(trace.records.len());
    let mut segments = Vec::new();
    let mut think_total = Duration::ZERO;
    let mut bytes = 0u64;
    let start = Instant::now();
    // Delay of the replay behind the recorded schedule: think time plus stalls so far.
    let mut delay = Duration::ZERO;
    let mut end = start;
    for (i, seg) in trace.segments().enumerate() {
        // Think time precedes a task that reads; a write-only segment adds none, and nothing
        // is added after the last read (it would not be part of the completion time).
        let mut think_due = i > 0;
        let mut report = SegmentReport {
            task: seg.task.to_string(),
            reads: 0,
            recorded_s: 0.0,
            replayed_s: 0.0,
            stall_s: 0.0,
        };
        let first_t = seg.records.first().map_or(0, |r| r.t_us);
        let mut seg_start: Option<Instant> = None;
        let mut last_t = first_t;
        // The delay when the segment's first read was due: stalls are what it grows by after.
        let mut delay_at_start: Option<Duration> = None;
        for r in seg.records.iter().filter(|r| r.op == Op::Read) {
            if std::mem::take(&mut think_due) {
                delay += think;
                think_total += think;
            }
            delay_at_start.get_or_insert(delay);
            let due = start + scaled(r.t_us) + delay;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let issued = Instant::now().max(due);
            seg_start.get_or_insert(issued);
            target.read_exact_at(&mut buf[..r.len as usize], r.offset)?;
            end = Instant::now();
            latencies.push(end - issued);
            // Whatever this read took beyond the recorded gap to the next read delays the rest;
            // the recorded schedule already includes the original service time.
            delay = (end - start).saturating_sub(scaled(r.t_us)).max(delay);
            bytes += r.len as u64;
            report.reads += 1;
            last_t = r.t_us;
        }
        report.recorded_s = scaled(last_t - first_t).as_secs_f64();
        if let Some(s) = seg_start {
            report.replayed_s = (end - s).as_secs_f64();
        }
        report.stall_s = delay_at_start.map_or(0.0, |d| (delay - d).as_secs_f64());
        segments.push(report);
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, Duration::as_secs_f64)
    };
    let trace_s = trace
        .records
        .iter()
        .rev()
        .find(|r| r.op == Op::Read)
        .map_or(0.0, |r| scaled(r.t_us).as_secs_f64());
    let completion_s = (end - start).as_secs_f64();
    Ok(ReplayReport {
        trace: format!("{}-{}", trace.label, trace.run),
        reads: latencies.len() as u64,
        bytes,
        trace_s,
        think_s: think_total.as_secs_f64(),
        completion_s,
        stall_s: (completion_s - trace_s - think_total.as_secs_f64()).max(0.0),
        read_p50_s: pct(0.5),
        read_p99_s: pct(0.99),
        read_max_s: latencies.last().map_or(0.0, Duration::as_secs_f64),
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmt_formats::image::ImageId;
    use vmt_formats::trace::{Record, TraceKind};

    /// A 1 MiB image file and a session trace of `tasks` over it.
    fn session(tasks: &[&str], records: Vec<Record>) -> (tempfile::NamedTempFile, Trace) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![5u8; 1 << 20]).unwrap();
        let trace = Trace {
            image: ImageId::size_only(1 << 20),
            kind: TraceKind::Session,
            label: "s".into(),
            run: 1,
            start_unix_us: 0,
            recorder: "test".into(),
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
            records,
        };
        (f, trace)
    }

    fn rec(t_us: u64, op: Op, task: u16) -> Record {
        Record {
            t_us,
            op,
            offset: t_us * 10,
            len: 4096,
            task,
        }
    }

    #[test]
    fn local_replay_keeps_the_schedule_and_inserts_think_time() {
        let (f, trace) = session(
            &["a", "b"],
            vec![
                rec(0, Op::Read, 0),
                rec(20_000, Op::Read, 0),
                rec(40_000, Op::Read, 1),
                rec(60_000, Op::Read, 1),
            ],
        );
        let think = Duration::from_millis(30);
        let r = replay(
            &trace,
            f.path(),
            ReplayParams {
                think,
                ..ReplayParams::default()
            },
        )
        .unwrap();
        assert_eq!(r.reads, 4);
        assert_eq!(r.segments.len(), 2);
        assert!((r.trace_s - 0.06).abs() < 1e-9);
        assert!((r.think_s - 0.03).abs() < 1e-9);
        // Nothing can finish before its schedule; a local file adds little beyond it.
        assert!(r.completion_s >= 0.09, "{r:?}");
        assert!(r.stall_s < 0.5, "{r:?}");
        let small = tempfile::NamedTempFile::new().unwrap();
        assert!(replay(&trace, small.path(), ReplayParams::default()).is_err());
    }

    #[test]
    fn no_think_time_before_a_segment_without_reads() {
        // Like a recorded session: the last mark ("c") came just before the session stopped.
        let (f, trace) = session(
            &["a", "b", "c"],
            vec![
                rec(0, Op::Read, 0),
                rec(10_000, Op::Read, 1),
                rec(20_000, Op::Write, 2),
            ],
        );
        let think = Duration::from_millis(30);
        let r = replay(
            &trace,
            f.path(),
            ReplayParams {
                think,
                ..ReplayParams::default()
            },
        )
        .unwrap();
        assert!(
            (r.think_s - 0.03).abs() < 1e-9,
            "one think, before b: {r:?}"
        );
        assert!(r.completion_s >= 0.04, "{r:?}");
    }
}
