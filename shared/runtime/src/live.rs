//! The live page's feed: a sampler that turns the runtime's state into small JSON events a few
//! times a second, off the read path, for [`crate::serve_status`] to stream (server-sent
//! events) to `page/index.html`.
//!
//! Each tick ([`SAMPLE_EVERY`]) the sampler takes, with short locks and into buffers it keeps:
//! the piece map (one pass under the engine's picker lock), the belief (a copy under the
//! planner's lock), the longest parked reads (under the filesystem's wait table), and the
//! status. It then publishes, on a watch channel:
//! - `map`: each piece's state and source, run-length encoded, rebuilt only when it changed.
//!   A map of 10^5 pieces is a few runs while it fills in order, and at worst two numbers per
//!   piece; it is sent when it changed, not every tick.
//! - `live`: the status, the belief now, the reads waiting now (age, missing blocks), the
//!   stalls that ended lately, and each peer's rates.
//!
//! The belief's history is a ring of the last [`HISTORY`] samples (a minute at 4 Hz) in a
//! preallocated buffer; a page that connects gets it once (`history`), then follows the `live`
//! events. Its lock (`Live::history`) is a leaf: held to copy one sample in or the ring out,
//! never with another lock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use vmt_fs::Waiting;
use vmt_swarm::{MapCell, PieceMap, Source};

use crate::report::Status;

/// How often the sampler runs: the page moves 4 times a second.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Belief samples kept: a minute at [`SAMPLE_EVERY`].
pub const HISTORY: usize = 240;
/// Parked reads listed: the longest waits; the count of all is in the status.
pub(crate) const LISTED_WAITS: usize = 32;
/// Blocks listed per parked read.
const LISTED_BLOCKS: usize = 64;
/// Ended stalls kept for the page.
const RECENT_STALLS: usize = 16;
/// Weight of the newest tick in a peer's smoothed rate: about a second of memory at 4 Hz.
const RATE_SMOOTHING: f64 = 0.3;

/// What the runtime fills in for a tick, kept between ticks so sampling reuses its buffers.
#[derive(Default)]
pub(crate) struct LiveInputs {
    /// Each piece's state and source.
    pub map: PieceMap,
    /// The belief over the profiles (empty without one).
    pub belief: Vec<f64>,
    /// The longest waits going on, oldest first.
    pub parked: Vec<Waiting>,
}

/// One published tick.
pub(crate) struct Tick {
    /// Bumped when the map changed.
    pub map_seq: u64,
    /// The map event's JSON.
    pub map: Arc<str>,
    /// The live event's JSON.
    pub live: Arc<str>,
}

/// The belief ring: `HISTORY` rows of `width` probabilities, preallocated.
struct History {
    names: Vec<String>,
    width: usize,
    t_s: Vec<f64>,
    probs: Vec<f32>,
    /// Next row to write.
    next: usize,
    len: usize,
}

impl History {
    fn new(names: Vec<String>) -> History {
        let width = names.len();
        History {
            names,
            width,
            t_s: vec![0.0; HISTORY],
            probs: vec![0.0; HISTORY * width],
            next: 0,
            len: 0,
        }
    }

    /// Appends a sample, overwriting the oldest when full; allocation-free.
    fn push(&mut self, t_s: f64, probs: &[f64]) {
        if self.width == 0 || probs.len() != self.width {
            return;
        }
        let row = self.next;
        self.t_s[row] = t_s;
        for (slot, &p) in self.probs[row * self.width..(row + 1) * self.width]
            .iter_mut()
            .zip(probs)
        {
            *slot = p as f32;
        }
        self.next = (row + 1) % HISTORY;
        self.len = (self.len + 1).min(HISTORY);
    }

    /// The ring, oldest first.
    fn snapshot(&self) -> HistoryJson {
        let first = (self.next + HISTORY - self.len) % HISTORY;
        let samples = (0..self.len)
            .map(|k| {
                let row = (first + k) % HISTORY;
                BeliefSample {
                    t_s: self.t_s[row],
                    p: self.probs[row * self.width..(row + 1) * self.width].to_vec(),
                }
            })
            .collect();
        HistoryJson {
            names: self.names.clone(),
            samples,
        }
    }
}

/// The `history` event.
#[derive(Serialize)]
struct HistoryJson {
    names: Vec<String>,
    samples: Vec<BeliefSample>,
}

/// One belief sample: seconds since the mount, a probability per profile.
#[derive(Serialize)]
struct BeliefSample {
    t_s: f64,
    p: Vec<f32>,
}

/// The feed shared by the sampler and the page's connections.
pub(crate) struct Live {
    history: Mutex<History>,
    ticks: watch::Sender<Option<Arc<Tick>>>,
}

impl Live {
    /// A feed for profiles named `names`.
    pub fn new(names: Vec<String>) -> Live {
        Live {
            history: Mutex::new(History::new(names)),
            ticks: watch::channel(None).0,
        }
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `history` event's JSON.
    pub fn history_json(&self) -> String {
        let snapshot = self.history().snapshot();
        serde_json::to_string(&snapshot).unwrap_or_default()
    }

    /// Follows the ticks.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Tick>>> {
        self.ticks.subscribe()
    }

    /// The latest tick, if any.
    pub fn latest(&self) -> Option<Arc<Tick>> {
        self.ticks.borrow().clone()
    }
}

/// A read parked now, as the page shows it.
#[derive(Clone, Serialize)]
struct WaitJson {
    /// Seconds since it parked.
    age_s: f64,
    /// Blocks it still waits for.
    missing: usize,
    /// The first of them, ascending.
    blocks: Vec<u32>,
}

/// A stall that ended: the read was answered (or failed) between two ticks.
#[derive(Clone, Serialize)]
struct EndedJson {
    /// Seconds since the mount when it was seen ended.
    ended_s: f64,
    /// How long it waited, to within a tick.
    waited_s: f64,
    /// The blocks it waited for when first seen.
    blocks: Vec<u32>,
}

/// A peer's traffic and smoothed rates.
#[derive(Clone, Serialize)]
struct PeerJson {
    addr: String,
    down_bps: f64,
    up_bps: f64,
    downloaded: u64,
    uploaded: u64,
}

/// The `live` event.
#[derive(Serialize)]
struct LiveJson<'a> {
    status: &'a Status,
    profiles: &'a [String],
    belief: Option<BeliefSample>,
    parked: &'a [WaitJson],
    recent_stalls: &'a VecDeque<EndedJson>,
    peers: &'a [PeerJson],
    map_seq: u64,
}

/// The `map` event.
#[derive(Serialize)]
struct MapJson<'a> {
    pieces: usize,
    piece_len: u32,
    block_len: u32,
    /// State names by code.
    states: [&'static str; 6],
    /// Run-length encoded codes: `[code, count, code, count, ...]`.
    cells: &'a [u32],
    /// Sources by number, from 1.
    sources: Vec<SourceJson>,
    /// Run-length encoded source numbers (0: unknown).
    source_of: &'a [u32],
}

#[derive(Serialize)]
struct SourceJson {
    kind: &'static str,
    name: String,
}

/// Run-length encodes `values` into `out` as `[value, count, ...]`.
fn rle(values: impl Iterator<Item = u32>, out: &mut Vec<u32>) {
    out.clear();
    for v in values {
        match out.len() {
            n if n >= 2 && out[n - 2] == v => out[n - 1] += 1,
            _ => out.extend([v, 1]),
        }
    }
}

/// The sampler's state between ticks.
pub(crate) struct Sampler {
    inputs: LiveInputs,
    prev_cells: Vec<u8>,
    prev_sources: (Vec<u16>, usize),
    map_seq: u64,
    map_json: Arc<str>,
    cells_rle: Vec<u32>,
    sources_rle: Vec<u32>,
    piece_len: u32,
    block_len: u32,
    /// Parked reads seen at the last tick: when they parked, their first blocks.
    seen: HashMap<Instant, Vec<u32>>,
    recent: VecDeque<EndedJson>,
    waits: Vec<WaitJson>,
    peers: HashMap<String, PeerJson>,
    peers_out: Vec<PeerJson>,
    last: Option<Instant>,
}

impl Sampler {
    /// A sampler for an image of `piece_len`-byte pieces and `block_len`-byte blocks.
    pub fn new(piece_len: u32, block_len: u32) -> Sampler {
        Sampler {
            inputs: LiveInputs::default(),
            prev_cells: Vec::new(),
            prev_sources: (Vec::new(), 0),
            map_seq: 0,
            map_json: Arc::from("{}"),
            cells_rle: Vec::new(),
            sources_rle: Vec::new(),
            piece_len,
            block_len,
            seen: HashMap::new(),
            recent: VecDeque::with_capacity(RECENT_STALLS),
            waits: Vec::new(),
            peers: HashMap::new(),
            peers_out: Vec::new(),
            last: None,
        }
    }

    /// The buffers the runtime fills for this tick.
    pub fn inputs(&mut self) -> &mut LiveInputs {
        &mut self.inputs
    }

    /// Turns the filled inputs and `status` into a tick on `live`.
    pub fn publish(&mut self, live: &Live, status: &Status, profiles: &[String]) {
        let now = Instant::now();
        let dt = self
            .last
            .map(|l| now.duration_since(l).as_secs_f64())
            .unwrap_or(0.0);
        self.last = Some(now);
        self.update_map();
        self.update_waits(now, status.uptime_s);
        self.update_peers(status, dt);
        let belief = (!self.inputs.belief.is_empty()).then(|| {
            let mut h = live.history();
            h.push(status.uptime_s, &self.inputs.belief);
            drop(h);
            BeliefSample {
                t_s: status.uptime_s,
                p: self.inputs.belief.iter().map(|&p| p as f32).collect(),
            }
        });
        let json = LiveJson {
            status,
            profiles,
            belief,
            parked: &self.waits,
            recent_stalls: &self.recent,
            peers: &self.peers_out,
            map_seq: self.map_seq,
        };
        let live_json: Arc<str> = serde_json::to_string(&json).unwrap_or_default().into();
        live.ticks.send_replace(Some(Arc::new(Tick {
            map_seq: self.map_seq,
            map: self.map_json.clone(),
            live: live_json,
        })));
    }

    fn update_map(&mut self) {
        let map = &self.inputs.map;
        let same = map.cells == self.prev_cells
            && map.source_of == self.prev_sources.0
            && map.sources.len() == self.prev_sources.1;
        if same && self.map_seq > 0 {
            return;
        }
        self.prev_cells.clone_from(&map.cells);
        self.prev_sources.0.clone_from(&map.source_of);
        self.prev_sources.1 = map.sources.len();
        self.map_seq += 1;
        rle(map.cells.iter().map(|&c| c as u32), &mut self.cells_rle);
        rle(
            map.source_of.iter().map(|&s| s as u32),
            &mut self.sources_rle,
        );
        let json = MapJson {
            pieces: map.cells.len(),
            piece_len: self.piece_len,
            block_len: self.block_len,
            states: MapCell::ALL.map(MapCell::name),
            cells: &self.cells_rle,
            sources: map
                .sources
                .iter()
                .map(|s: &Source| SourceJson {
                    kind: s.kind(),
                    name: s.to_string(),
                })
                .collect(),
            source_of: &self.sources_rle,
        };
        self.map_json = serde_json::to_string(&json).unwrap_or_default().into();
    }

    /// Lists the reads parked now, and moves those gone since the last tick to the ended.
    fn update_waits(&mut self, now: Instant, uptime_s: f64) {
        self.waits.clear();
        let mut still = HashMap::with_capacity(self.inputs.parked.len());
        for w in &self.inputs.parked {
            self.waits.push(WaitJson {
                age_s: now.saturating_duration_since(w.parked_at).as_secs_f64(),
                missing: w.units.len(),
                blocks: w.units.iter().take(LISTED_BLOCKS).copied().collect(),
            });
            let first_seen = self
                .seen
                .remove(&w.parked_at)
                .unwrap_or_else(|| w.units.iter().take(LISTED_BLOCKS).copied().collect());
            still.insert(w.parked_at, first_seen);
        }
        // Only the longest waits are listed: one that dropped off the list while others wait
        // longer may still wait, so ended means "gone while the list had room".
        let complete = self.inputs.parked.len() < LISTED_WAITS;
        for (parked_at, blocks) in self.seen.drain() {
            if !complete {
                break;
            }
            if self.recent.len() == RECENT_STALLS {
                self.recent.pop_front();
            }
            self.recent.push_back(EndedJson {
                ended_s: uptime_s,
                waited_s: now.saturating_duration_since(parked_at).as_secs_f64(),
                blocks,
            });
        }
        self.seen = still;
    }

    fn update_peers(&mut self, status: &Status, dt: f64) {
        for p in &status.peers {
            let e = self
                .peers
                .entry(p.addr.clone())
                .or_insert_with(|| PeerJson {
                    addr: p.addr.clone(),
                    down_bps: 0.0,
                    up_bps: 0.0,
                    downloaded: p.downloaded,
                    uploaded: p.uploaded,
                });
            if dt > 0.0 {
                let down = p.downloaded.saturating_sub(e.downloaded) as f64 / dt;
                let up = p.uploaded.saturating_sub(e.uploaded) as f64 / dt;
                e.down_bps += RATE_SMOOTHING * (down - e.down_bps);
                e.up_bps += RATE_SMOOTHING * (up - e.up_bps);
            }
            e.downloaded = p.downloaded;
            e.uploaded = p.uploaded;
        }
        self.peers_out.clear();
        self.peers_out.extend(self.peers.values().cloned());
        self.peers_out.sort_by(|a, b| a.addr.cmp(&b.addr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_value_and_count() {
        let mut out = Vec::new();
        rle([5, 5, 5, 0, 0, 4].into_iter(), &mut out);
        assert_eq!(out, [5, 3, 0, 2, 4, 1]);
        rle(std::iter::empty(), &mut out);
        assert!(out.is_empty());
        // 10^5 pieces filled in order: four numbers, not 10^5.
        rle((0..100_000u32).map(|i| (i < 60_000) as u32 * 5), &mut out);
        assert_eq!(out, [5, 60_000, 0, 40_000]);
    }

    #[test]
    fn a_wait_gone_between_ticks_is_an_ended_stall() {
        let mut s = Sampler::new(256 << 10, 16 << 10);
        let parked_at = Instant::now() - Duration::from_secs(2);
        s.inputs().parked.push(Waiting {
            parked_at,
            units: vec![7, 8],
        });
        s.update_waits(Instant::now(), 3.0);
        assert_eq!(s.waits.len(), 1);
        assert_eq!(s.waits[0].blocks, [7, 8]);
        assert!(s.waits[0].age_s >= 2.0);
        assert!(s.recent.is_empty());
        s.inputs().parked[0].units = vec![8];
        s.update_waits(Instant::now(), 3.25);
        assert_eq!(s.waits[0].missing, 1);
        assert!(s.recent.is_empty(), "still waiting");
        s.inputs().parked.clear();
        s.update_waits(Instant::now(), 3.5);
        assert!(s.waits.is_empty());
        assert_eq!(s.recent.len(), 1);
        assert_eq!(s.recent[0].blocks, [7, 8], "the blocks it first waited for");
        assert!(s.recent[0].waited_s >= 2.0);
        assert_eq!(s.recent[0].ended_s, 3.5);
    }

    #[test]
    fn the_history_ring_keeps_the_last_samples_oldest_first() {
        let mut h = History::new(vec!["a".into(), "b".into()]);
        for i in 0..(HISTORY + 3) {
            h.push(i as f64, &[0.25, 0.75]);
        }
        h.push(999.0, &[1.0]); // wrong width: ignored
        let s = h.snapshot();
        assert_eq!(s.samples.len(), HISTORY);
        assert_eq!(s.samples[0].t_s, 3.0);
        assert_eq!(s.samples[HISTORY - 1].t_s, (HISTORY + 2) as f64);
        assert_eq!(s.samples[0].p, [0.25, 0.75]);
    }
}
