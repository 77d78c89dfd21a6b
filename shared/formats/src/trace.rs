//! Block-access traces: what a task read and wrote, when, as the FUSE layer saw it.
//!
//! A [`Trace`] is one recording: a single task run (`vmt-record run`) or a session of several
//! marked tasks (`vmt-record session`), whose records carry the index of their task label so the
//! trainer can learn task-to-task transitions. Records keep exact byte ranges; blocks are derived
//! later with a [`crate::image::BlockGeometry`] of the trainer's choosing.
//!
//! On disk a trace is a [`crate::envelope`] (`VMTTRACE`, version 1, image identity)
//! around a bincode body. The CSV interchange form (`t_us,op,offset,len[,task]` with `#` header
//! lines) converts both ways losslessly, and traces of a real VM disk taken with blktrace can be
//! imported from `blkparse`'s default text output.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::envelope::{self, FileError, FileKind};
use crate::image::{BlockGeometry, ImageId};

/// The trace file kind.
pub const TRACE_FILE: FileKind = FileKind {
    magic: *b"VMTTRACE",
    name: "trace",
    version: 1,
};

/// File name extension of traces.
pub const TRACE_EXTENSION: &str = "vmtrace";

/// Direction of an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Data read by the task.
    Read,
    /// Data written by the task (into the recorder's throwaway overlay).
    Write,
}

impl Op {
    fn as_csv(self) -> &'static str {
        match self {
            Op::Read => "R",
            Op::Write => "W",
        }
    }

    fn from_csv(s: &str) -> Option<Op> {
        match s {
            "R" | "r" | "read" | "READ" => Some(Op::Read),
            "W" | "w" | "write" | "WRITE" => Some(Op::Write),
            _ => None,
        }
    }
}

/// One access: an exact byte range at a time since the trace started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Microseconds since the trace started.
    pub t_us: u64,
    /// Read or write.
    pub op: Op,
    /// Byte offset in the image.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
    /// Index into [`Trace::tasks`] of the task this access belongs to.
    pub task: u16,
}

/// Whether a trace holds one task run or a session of marked tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceKind {
    /// One run of one task.
    Task,
    /// Several tasks in sequence, one mount.
    Session,
}

/// A recorded trace. See the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// The image the accesses were made on.
    pub image: ImageId,
    /// Task run or session.
    pub kind: TraceKind,
    /// The task name (for a session: the session's name).
    pub label: String,
    /// Run number among traces of the same label.
    pub run: u32,
    /// Wall-clock start, microseconds since the Unix epoch.
    pub start_unix_us: u64,
    /// What made the trace (`vmt-record 0.1.0`, `csv import`, `blkparse import`).
    pub recorder: String,
    /// Task labels the records refer to by index (a task trace has exactly one).
    pub tasks: Vec<String>,
    /// Accesses in time order.
    pub records: Vec<Record>,
}

/// Body of the trace file: everything but the image identity, which lives in the envelope.
#[derive(Serialize, Deserialize)]
struct TraceBody {
    kind: TraceKind,
    label: String,
    run: u32,
    start_unix_us: u64,
    recorder: String,
    tasks: Vec<String>,
    records: Vec<Record>,
}

/// Why a trace is invalid, read or parsed wrongly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// Reading or writing the file failed, or the file is not a valid trace file.
    #[error(transparent)]
    File(#[from] FileError),
    /// A trace file whose content contradicts itself.
    #[error("{}: invalid trace: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A line of CSV or blkparse text that cannot be used.
    #[error("{}:{line}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Nothing that identifies the image was given or found.
    #[error("{}: the image size is unknown: pass --image or --image-bytes", path.display())]
    UnknownImage {
        /// The file.
        path: PathBuf,
    },
}

/// A contiguous stretch of one task within a trace.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// The task label.
    pub task: &'a str,
    /// The task's index in [`Trace::tasks`].
    pub task_index: u16,
    /// The records of this stretch.
    pub records: &'a [Record],
}

impl Trace {
    /// Checks the invariants every consumer relies on: at least one task label, records in time
    /// order, task indices in range, every range inside the image.
    pub fn validate(&self) -> Result<(), String> {
        if self.tasks.is_empty() {
            return Err("no task label".into());
        }
        if self.kind == TraceKind::Task && self.tasks != [self.label.as_str()] {
            return Err(format!(
                "a task trace must have exactly its own label as task, has {:?}",
                self.tasks
            ));
        }
        let mut last = 0;
        for (i, r) in self.records.iter().enumerate() {
            if r.t_us < last {
                return Err(format!("record {i} goes back in time"));
            }
            last = r.t_us;
            if r.task as usize >= self.tasks.len() {
                return Err(format!(
                    "record {i} names task #{} of {}",
                    r.task,
                    self.tasks.len()
                ));
            }
            if r.offset
                .checked_add(r.len as u64)
                .is_none_or(|end| end > self.image.size)
            {
                return Err(format!(
                    "record {i} ({}+{}) lies outside the {}-byte image",
                    r.offset, r.len, self.image.size
                ));
            }
        }
        Ok(())
    }

    /// Reads a trace file.
    pub fn load(path: &Path) -> Result<Trace, TraceError> {
        let (header, body): (_, TraceBody) = envelope::read(path, &TRACE_FILE)?;
        let trace = Trace {
            image: header.image,
            kind: body.kind,
            label: body.label,
            run: body.run,
            start_unix_us: body.start_unix_us,
            recorder: body.recorder,
            tasks: body.tasks,
            records: body.records,
        };
        trace.validate().map_err(|reason| TraceError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        Ok(trace)
    }

    /// Reads a trace file and checks it belongs to `image`.
    pub fn load_for(path: &Path, image: &ImageId) -> Result<Trace, TraceError> {
        let trace = Trace::load(path)?;
        envelope::check_image(path, &TRACE_FILE, image, &trace.image)?;
        Ok(trace)
    }

    /// Writes the trace atomically.
    pub fn save(&self, path: &Path) -> Result<(), TraceError> {
        let body = TraceBody {
            kind: self.kind,
            label: self.label.clone(),
            run: self.run,
            start_unix_us: self.start_unix_us,
            recorder: self.recorder.clone(),
            tasks: self.tasks.clone(),
            records: self.records.clone(),
        };
        envelope::write(path, &TRACE_FILE, &self.image, &body)?;
        Ok(())
    }

    /// Contiguous stretches of one task, in order (one for a task trace).
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_>> {
        self.records
            .chunk_by(|a, b| a.task == b.task)
            .map(|records| Segment {
                task: &self.tasks[records[0].task as usize],
                task_index: records[0].task,
                records,
            })
    }

    /// What identifies the trace's content, whatever its file is named: SHA-256 over the image
    /// identity, the kind, the task labels and every record. The name, run number, start time
    /// and recorder are left out, so a copy renamed or renumbered (`traces/test/x-1` holding
    /// what `traces/train/x-3` holds) is the same trace, and two recordings never are.
    pub fn content_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"vmt trace content v1");
        h.update(self.image.size.to_le_bytes());
        h.update(self.image.sha256);
        h.update([matches!(self.kind, TraceKind::Session) as u8]);
        h.update((self.tasks.len() as u64).to_le_bytes());
        for t in &self.tasks {
            h.update((t.len() as u64).to_le_bytes());
            h.update(t.as_bytes());
        }
        h.update((self.records.len() as u64).to_le_bytes());
        for r in &self.records {
            h.update(r.t_us.to_le_bytes());
            h.update([matches!(r.op, Op::Write) as u8]);
            h.update(r.offset.to_le_bytes());
            h.update(r.len.to_le_bytes());
            h.update(r.task.to_le_bytes());
        }
        h.finalize().into()
    }

    /// Time from the trace start to its last access, in microseconds.
    pub fn duration_us(&self) -> u64 {
        self.records.last().map_or(0, |r| r.t_us)
    }

    /// Summary figures over `geometry`'s blocks.
    pub fn summary(&self, geometry: &BlockGeometry) -> TraceSummary {
        let mut s = TraceSummary {
            reads: 0,
            writes: 0,
            read_bytes: 0,
            written_bytes: 0,
            distinct_blocks: 0,
            duration_us: self.duration_us(),
            image_blocks: geometry.block_count() as u64,
        };
        // Distinct blocks from the records' block spans, merged: memory follows the records,
        // not the image size a file declares (a map of a 16 TiB image's blocks is 4 GiB).
        let bs = geometry.block_size() as u64;
        let mut spans: Vec<(u64, u64)> = Vec::with_capacity(self.records.len());
        for r in &self.records {
            match r.op {
                Op::Read => {
                    s.reads += 1;
                    s.read_bytes += r.len as u64;
                }
                Op::Write => {
                    s.writes += 1;
                    s.written_bytes += r.len as u64;
                }
            }
            let end = (r.offset.saturating_add(r.len as u64)).min(geometry.image_bytes());
            if r.offset < end {
                spans.push((r.offset / bs, end.div_ceil(bs)));
            }
        }
        spans.sort_unstable();
        let mut covered_to = 0;
        for (first, end) in spans {
            let from = first.max(covered_to);
            if end > from {
                s.distinct_blocks += end - from;
                covered_to = end;
            }
        }
        s
    }

    /// Sorted, distinct blocks each task label touched (reads and writes), in label order.
    pub fn blocks_by_task(&self, geometry: &BlockGeometry) -> Vec<(&str, Vec<u32>)> {
        let mut sets: Vec<Vec<u32>> = vec![Vec::new(); self.tasks.len()];
        for r in &self.records {
            let set = &mut sets[r.task as usize];
            set.extend(
                geometry
                    .blocks_of(r.offset, r.len as u64)
                    .map(|b| b.get() as u32),
            );
        }
        self.tasks
            .iter()
            .zip(sets)
            .filter(|(_, set)| !set.is_empty())
            .map(|(task, mut set)| {
                set.sort_unstable();
                set.dedup();
                (task.as_str(), set)
            })
            .collect()
    }

    /// The CSV interchange form (see the module doc).
    pub fn to_csv(&self) -> String {
        let mut out = String::with_capacity(64 + self.records.len() * 32);
        let kind = match self.kind {
            TraceKind::Task => "task",
            TraceKind::Session => "session",
        };
        let _ = writeln!(out, "# vmt trace csv v1 kind={kind}");
        let _ = writeln!(
            out,
            "# image_bytes={} task={} run={}",
            self.image.size,
            escape(&self.label),
            self.run
        );
        if !self.image.is_size_only() {
            let _ = writeln!(out, "# image_sha256={}", self.image.sha256_hex());
        }
        let _ = writeln!(out, "# start_unix_us={}", self.start_unix_us);
        let _ = writeln!(out, "# recorder={}", escape(&self.recorder));
        let session = self.kind == TraceKind::Session;
        let tasks: Vec<String> = self.tasks.iter().map(|t| escape(t)).collect();
        let _ = writeln!(out, "# tasks={}", tasks.join(","));
        if session {
            out.push_str("t_us,op,offset,len,task\n");
        } else {
            out.push_str("t_us,op,offset,len\n");
        }
        for r in &self.records {
            let _ = write!(out, "{},{},{},{}", r.t_us, r.op.as_csv(), r.offset, r.len);
            if session {
                let _ = write!(out, ",{}", escape(&self.tasks[r.task as usize]));
            }
            out.push('\n');
        }
        out
    }

    /// Parses the CSV interchange form. `image` overrides (and must agree with) the identity in
    /// the header lines; without either, parsing fails with [`TraceError::UnknownImage`].
    pub fn from_csv(path: &Path, text: &str, image: Option<ImageId>) -> Result<Trace, TraceError> {
        let parse_err = |line: usize, reason: String| TraceError::Parse {
            path: path.to_owned(),
            line,
            reason,
        };
        let mut image_bytes: Option<u64> = None;
        let mut sha: Option<String> = None;
        let mut label = None;
        let mut run = 0u32;
        let mut start_unix_us = 0u64;
        let mut recorder = "csv import".to_string();
        let mut kind: Option<TraceKind> = None;
        let mut tasks: Vec<String> = Vec::new();
        let mut records = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                for field in comment.split_whitespace() {
                    let Some((k, v)) = field.split_once('=') else {
                        continue;
                    };
                    let num = |v: &str| {
                        v.parse::<u64>()
                            .map_err(|_| parse_err(line_no, format!("{k}={v} is not a number")))
                    };
                    match k {
                        "image_bytes" => image_bytes = Some(num(v)?),
                        "image_sha256" => sha = Some(v.to_string()),
                        "task" => label = Some(unescape(v)),
                        "run" => {
                            run = u32::try_from(num(v)?)
                                .map_err(|_| parse_err(line_no, format!("run={v} is too large")))?
                        }
                        "start_unix_us" => start_unix_us = num(v)?,
                        "recorder" => recorder = unescape(v),
                        "kind" => {
                            kind = Some(match v {
                                "task" => TraceKind::Task,
                                "session" => TraceKind::Session,
                                _ => return Err(parse_err(line_no, format!("unknown kind={v}"))),
                            })
                        }
                        "tasks" => {
                            tasks = v
                                .split(',')
                                .filter(|t| !t.is_empty())
                                .map(unescape)
                                .collect()
                        }
                        _ => {}
                    }
                }
                continue;
            }
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            if cols.first() == Some(&"t_us") {
                continue; // the optional column header row
            }
            if cols.len() != 4 && cols.len() != 5 {
                return Err(parse_err(
                    line_no,
                    format!(
                        "expected 4 or 5 columns (t_us,op,offset,len[,task]), found {}",
                        cols.len()
                    ),
                ));
            }
            let num = |what: &str, v: &str| {
                v.parse::<u64>()
                    .map_err(|_| parse_err(line_no, format!("{what} {v:?} is not a number")))
            };
            let t_us = num("t_us", cols[0])?;
            let op = Op::from_csv(cols[1])
                .ok_or_else(|| parse_err(line_no, format!("op {:?} is not R or W", cols[1])))?;
            let offset = num("offset", cols[2])?;
            let len = u32::try_from(num("len", cols[3])?)
                .map_err(|_| parse_err(line_no, format!("len {} is too large", cols[3])))?;
            let task = match cols.get(4) {
                Some(name) => {
                    let name = unescape(name);
                    match tasks.iter().position(|t| *t == name) {
                        Some(p) => p,
                        None => {
                            tasks.push(name);
                            tasks.len() - 1
                        }
                    }
                }
                None => 0,
            };
            let task = u16::try_from(task)
                .map_err(|_| parse_err(line_no, "more than 65535 task labels".into()))?;
            if let Some(prev) = records.last().map(|r: &Record| r.t_us) {
                if t_us < prev {
                    return Err(parse_err(
                        line_no,
                        format!("t_us {t_us} goes back in time (after {prev})"),
                    ));
                }
            }
            records.push(Record {
                t_us,
                op,
                offset,
                len,
                task,
            });
        }
        let header_image =
            match (image_bytes, &sha) {
                (Some(size), Some(hex)) => Some(ImageId::from_hex(size, hex).ok_or_else(|| {
                    parse_err(0, format!("image_sha256={hex} is not 64 hex digits"))
                })?),
                (Some(size), None) => Some(ImageId::size_only(size)),
                (None, _) => None,
            };
        let image = match (image, header_image) {
            (Some(given), Some(header)) => {
                let agrees = given.size == header.size
                    && (header.is_size_only() || given.is_size_only() || given == header);
                if !agrees {
                    return Err(FileError::WrongImage {
                        path: path.to_owned(),
                        kind: "csv trace",
                        expected: given,
                        found: header,
                    }
                    .into());
                }
                if given.is_size_only() {
                    header
                } else {
                    given
                }
            }
            (Some(given), None) => given,
            (None, Some(header)) => header,
            (None, None) => {
                return Err(TraceError::UnknownImage {
                    path: path.to_owned(),
                })
            }
        };
        let label = label
            .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "imported".into());
        if tasks.is_empty() {
            tasks.push(label.clone());
        }
        let kind = kind.unwrap_or(if tasks.len() > 1 {
            TraceKind::Session
        } else {
            TraceKind::Task
        });
        let trace = Trace {
            image,
            kind,
            label,
            run,
            start_unix_us,
            recorder,
            tasks,
            records,
        };
        trace.validate().map_err(|reason| TraceError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        Ok(trace)
    }

    /// Parses `blkparse`'s default text output (sector units of 512 bytes). Only queue (`Q`)
    /// events are kept, so one I/O counts once although blktrace logs it at several stages;
    /// when the text holds no `Q` events, issue (`D`) and then complete (`C`) events are used.
    pub fn from_blkparse(
        path: &Path,
        text: &str,
        image: ImageId,
        label: &str,
    ) -> Result<Trace, TraceError> {
        struct Event {
            time_ns: u64,
            action: char,
            op: Op,
            sector: u64,
            sectors: u64,
            line: usize,
        }
        let mut events = Vec::new();
        for (i, line) in text.lines().enumerate() {
            // "  8,0    3   1   0.000000000   697  Q   R 223490 + 8 [kjournald]"
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || !f[0].contains(',') || f[8] != "+" {
                continue; // summaries, headers, events without a sector range
            }
            let Some(time_ns) = parse_seconds_ns(f[3]) else {
                continue;
            };
            let action = f[5].chars().next().unwrap_or(' ');
            let op = if f[6].contains('W') {
                Op::Write
            } else if f[6].contains('R') {
                Op::Read
            } else {
                continue; // flushes, discards
            };
            let (Ok(sector), Ok(sectors)) = (f[7].parse::<u64>(), f[9].parse::<u64>()) else {
                continue;
            };
            if sectors == 0 {
                continue;
            }
            events.push(Event {
                time_ns,
                action,
                op,
                sector,
                sectors,
                line: i + 1,
            });
        }
        let action = ['Q', 'D', 'C']
            .into_iter()
            .find(|a| events.iter().any(|e| e.action == *a))
            .ok_or_else(|| TraceError::Parse {
                path: path.to_owned(),
                line: 0,
                reason: "no blkparse read or write events (Q, D or C) found".into(),
            })?;
        events.retain(|e| e.action == action);
        events.sort_by_key(|e| e.time_ns);
        let t0 = events[0].time_ns;
        let mut records = Vec::with_capacity(events.len());
        for e in &events {
            // Checked: sector numbers are untrusted text, and a wrapped product would pass
            // the range check below.
            let offset = e.sector.checked_mul(512);
            let len = e
                .sectors
                .checked_mul(512)
                .and_then(|l| u32::try_from(l).ok());
            let Some((offset, len)) = offset
                .zip(len)
                .filter(|&(o, l)| o.checked_add(l as u64).is_some_and(|end| end <= image.size))
            else {
                return Err(TraceError::Parse {
                    path: path.to_owned(),
                    line: e.line,
                    reason: format!(
                        "sectors {}+{} lie outside the {}-byte image",
                        e.sector, e.sectors, image.size
                    ),
                });
            };
            records.push(Record {
                t_us: (e.time_ns - t0) / 1000,
                op: e.op,
                offset,
                len,
                task: 0,
            });
        }
        Ok(Trace {
            image,
            kind: TraceKind::Task,
            label: label.to_string(),
            run: 0,
            start_unix_us: 0,
            recorder: "blkparse import".into(),
            tasks: vec![label.to_string()],
            records,
        })
    }
}

/// Summary of a trace (see [`Trace::summary`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TraceSummary {
    /// Read requests.
    pub reads: u64,
    /// Write requests.
    pub writes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub written_bytes: u64,
    /// Distinct blocks read or written.
    pub distinct_blocks: u64,
    /// Blocks in the image.
    pub image_blocks: u64,
    /// Time to the last access.
    pub duration_us: u64,
}

/// Jaccard similarity |a ∩ b| / |a ∪ b| of two sorted, distinct block lists (1 when both are
/// empty).
pub fn jaccard(a: &[u32], b: &[u32]) -> f64 {
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - common;
    if union == 0 {
        1.0
    } else {
        common as f64 / union as f64
    }
}

/// "12.345678" seconds as nanoseconds.
fn parse_seconds_ns(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let whole: u64 = whole.parse().ok()?;
    let mut ns = 0u64;
    for (i, c) in frac.chars().take(9).enumerate() {
        ns += c.to_digit(10)? as u64 * 10u64.pow(8 - i as u32);
    }
    whole.checked_mul(1_000_000_000)?.checked_add(ns)
}

/// Task labels may hold any text; in CSV, `%`, `,`, whitespace and control characters are
/// percent-encoded so every label survives a round trip.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '%' || c == ',' || c == '=' || c.is_whitespace() || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Suffix added to the trace of a task that failed (`NAME-<run>.vmtrace.failed`): kept for a
/// look with `vmt-record show`, but not a trace file by its extension, so `vmt-train fit`
/// does not learn from it.
pub const FAILED_SUFFIX: &str = "failed";

/// Where the trace at `path` goes when its task failed: `path` + `.failed`.
pub fn failed_trace_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(FAILED_SUFFIX);
    PathBuf::from(name)
}

/// The next free `DIR/LABEL-<run>.vmtrace`: run numbers count up from 1 and never overwrite.
pub fn next_run_path(dir: &Path, label: &str) -> std::io::Result<(u32, PathBuf)> {
    let prefix = format!("{label}-");
    let extension = format!(".{TRACE_EXTENSION}");
    let failed = format!("{extension}.{FAILED_SUFFIX}");
    let mut max = 0u32;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(rest) = name.strip_prefix(&prefix) {
            // A failed run's trace keeps its number taken.
            let num = rest
                .strip_suffix(&extension)
                .or_else(|| rest.strip_suffix(&failed));
            if let Some(num) = num {
                if let Ok(n) = num.parse::<u32>() {
                    max = max.max(n);
                }
            }
        }
    }
    let run = max + 1;
    Ok((run, dir.join(format!("{label}-{run}.{TRACE_EXTENSION}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: TraceKind) -> Trace {
        let tasks = match kind {
            TraceKind::Task => vec!["my task".to_string()],
            TraceKind::Session => vec!["boot".to_string(), "edit doc, 2%".to_string()],
        };
        let n = tasks.len() as u16;
        Trace {
            image: ImageId {
                size: 1 << 20,
                sha256: [3; 32],
            },
            kind,
            label: "my task".into(),
            run: 7,
            start_unix_us: 1_700_000_000_000_000,
            recorder: "vmt-record 0.1.0".into(),
            tasks,
            records: (0..50)
                .map(|i| Record {
                    t_us: i * 100,
                    op: if i % 5 == 0 { Op::Write } else { Op::Read },
                    offset: i * 4096,
                    len: 4096 + i as u32,
                    task: (i as u16 * n) / 50,
                })
                .collect(),
        }
    }

    /// Issue 13: `traces/test` reused the training names with other contents. The digest
    /// follows the content, not the name: renamed, renumbered or re-timed copies are the same
    /// trace, and a change to any record, label or the image is another.
    #[test]
    fn content_digest_follows_content_not_name() {
        let t = sample(TraceKind::Session);
        let d = t.content_digest();
        let renamed = Trace {
            label: "other".into(),
            run: 1,
            start_unix_us: 5,
            recorder: "csv import".into(),
            ..t.clone()
        };
        assert_eq!(renamed.content_digest(), d);
        let back = Trace::from_csv(Path::new("t.csv"), &t.to_csv(), None).unwrap();
        assert_eq!(back.content_digest(), d);
        let mut changes: Vec<Trace> = Vec::new();
        let mut x = t.clone();
        x.records[10].offset += 4096;
        changes.push(x);
        let mut x = t.clone();
        x.records[3].t_us += 1;
        changes.push(x);
        let mut x = t.clone();
        x.records[0].op = Op::Read;
        changes.push(x);
        let mut x = t.clone();
        x.records.pop();
        changes.push(x);
        let mut x = t.clone();
        x.tasks[1] = "edit doc, 3%".into();
        changes.push(x);
        let mut x = t.clone();
        x.image.sha256[0] ^= 1;
        changes.push(x);
        changes.push(Trace {
            kind: TraceKind::Task,
            ..t.clone()
        });
        for (i, c) in changes.iter().enumerate() {
            assert_ne!(c.content_digest(), d, "change {i}");
        }
    }

    #[test]
    fn csv_round_trip_is_lossless() {
        for kind in [TraceKind::Task, TraceKind::Session] {
            let t = sample(kind);
            let back = Trace::from_csv(Path::new("t.csv"), &t.to_csv(), None).unwrap();
            assert_eq!(back, t);
        }
    }

    #[test]
    fn file_round_trip_and_segments() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.vmtrace");
        let t = sample(TraceKind::Session);
        t.save(&p).unwrap();
        let back = Trace::load(&p).unwrap();
        assert_eq!(back, t);
        let segs: Vec<_> = back.segments().map(|s| (s.task, s.records.len())).collect();
        assert_eq!(segs, vec![("boot", 25), ("edit doc, 2%", 25)]);
        let other = ImageId::size_only(1 << 20);
        assert!(Trace::load_for(&p, &other)
            .unwrap_err()
            .to_string()
            .contains("another image"));
    }

    #[test]
    fn csv_errors_name_the_line() {
        let p = Path::new("bad.csv");
        let e = Trace::from_csv(p, "# image_bytes=100\n0,R,0,10\n5,X,0,1\n", None).unwrap_err();
        assert_eq!(e.to_string(), "bad.csv:3: op \"X\" is not R or W");
        let e = Trace::from_csv(p, "0,R,0,10\n", None).unwrap_err();
        assert!(e.to_string().contains("--image-bytes"));
        let e = Trace::from_csv(p, "# image_bytes=100\n0,R,95,10\n", None).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        let e = Trace::from_csv(p, "# image_bytes=100\n5,R,0,1\n3,R,0,1\n", None).unwrap_err();
        assert!(e.to_string().contains("back in time"), "{e}");
    }

    #[test]
    fn blkparse_import() {
        let text = "\
  8,0    3        1     0.000000000   697  Q   R 8 + 8 [qemu]
  8,0    3        2     0.000001000   697  D   R 8 + 8 [qemu]
  8,0    3        3     0.000500000   697  C   R 8 + 8 [0]
  8,0    1        4     0.002000000   697  Q  WS 16 + 16 [qemu]
  8,0    1        5     0.003000000   697  Q  FN [qemu]
CPU0 (8,0):
 Reads Queued:           1,        4KiB
";
        let t = Trace::from_blkparse(Path::new("b.txt"), text, ImageId::size_only(1 << 20), "vm")
            .unwrap();
        assert_eq!(
            t.records,
            vec![
                Record {
                    t_us: 0,
                    op: Op::Read,
                    offset: 4096,
                    len: 4096,
                    task: 0
                },
                Record {
                    t_us: 2000,
                    op: Op::Write,
                    offset: 8192,
                    len: 8192,
                    task: 0
                },
            ]
        );
        assert!(
            Trace::from_blkparse(Path::new("b"), "nothing", ImageId::size_only(1), "x").is_err()
        );
    }

    /// Issue 12 item 7: `vmt-record show` of a trace declaring a 16 TiB image made a map of
    /// its 4 billion blocks before counting three records' blocks.
    #[test]
    fn r12_7_a_summary_takes_memory_by_records_not_by_image_size() {
        let mut t = sample(TraceKind::Task);
        t.image.size = u32::MAX as u64 * 4096;
        let g = BlockGeometry::new(t.image.size, 4096).unwrap();
        let (s, peak) = crate::fuzz::measure(|| t.summary(&g));
        assert!(
            peak < 1 << 20,
            "{peak} bytes for {} records",
            t.records.len()
        );
        // The same figures as counting block by block.
        let mut blocks: Vec<usize> = t
            .records
            .iter()
            .flat_map(|r| g.blocks_of(r.offset, r.len as u64).map(|b| b.get()))
            .collect();
        blocks.sort_unstable();
        blocks.dedup();
        assert_eq!(s.distinct_blocks, blocks.len() as u64);
        assert_eq!((s.reads, s.writes), (40, 10));
    }

    #[test]
    fn task_block_sets_and_jaccard() {
        let t = sample(TraceKind::Session);
        let g = BlockGeometry::new(t.image.size, 4096).unwrap();
        let sets = t.blocks_by_task(&g);
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].0, "boot");
        assert!(sets[0].1.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
        assert_eq!(jaccard(&[], &[]), 1.0);
        assert_eq!(jaccard(&[1], &[]), 0.0);
    }

    #[test]
    fn run_numbers_count_up() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next_run_path(dir.path(), "boot").unwrap().0, 1);
        std::fs::write(dir.path().join("boot-1.vmtrace"), b"").unwrap();
        std::fs::write(dir.path().join("boot-9.vmtrace"), b"").unwrap();
        std::fs::write(dir.path().join("boot-x-3.vmtrace"), b"").unwrap();
        let (run, path) = next_run_path(dir.path(), "boot").unwrap();
        assert_eq!(run, 10);
        assert!(path.ends_with("boot-10.vmtrace"));
        // A failed run set aside keeps its number.
        std::fs::write(failed_trace_path(&path), b"").unwrap();
        assert_eq!(next_run_path(dir.path(), "boot").unwrap().0, 11);
    }
}
