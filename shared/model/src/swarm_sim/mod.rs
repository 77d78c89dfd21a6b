//! A flow-level simulation of a crowd of clients starting the image from one seeder and each
//! other (issue 15), extending the one-client [`crate::simulate`] to N clients.
//!
//! Each client replays its trace as [`crate::simulate`] does (its reads at their recorded
//! gaps, think time before each task that reads, a read that misses waits, to the last
//! read), driving its own
//! [`Scheduler`] (the planner and belief `vmt-run` uses) with the same calls. What it fetches,
//! and from whom, follows the engine (`vmt-swarm`):
//!
//! - **Units and pieces.** Reads wait for fetch units ([`Granularity::unit`]: 16 KiB blocks
//!   with the block-hash table); peers trade only whole pieces they have verified (BEP 3's
//!   `have`), so a client uploads a piece once all its units are in.
//! - **Choking.** Every uploader (the seeder, and each client unless `--no-upload`) unchokes
//!   at most [`SwarmParams::slots`] interested peers, longest waiting first, and every
//!   [`SwarmParams::rechoke_us`] moves one slot from the longest unchoked to the longest
//!   waiting (`peers.rs`'s `rechoke`). A peer is interested while the uploader has a piece it
//!   wants; a connection with nothing left to fetch is choked and its slot refilled.
//! - **Picking.** Over each unchoked connection one request at a time: the waiting read's
//!   missing units first (they pay one round trip), then the plan's units
//!   ([`SwarmParams::window`] of them, those of the first planned piece the uploader has),
//!   then, for strategies that fill the background, the rarest of a few pieces the uploader
//!   has, taken in a rotation from a per-client start (the picker's rarest first with seeded
//!   tie-breaks).
//! - **The request window** ([`SwarmParams::queue`]). When a read misses, each of its
//!   client's planned and background requests keeps only the units the engine's window would
//!   have asked for ([`QUEUE`], 2), and the read's units follow them; while one of those is on
//!   its way no connection of the client starts another such request (the engine's
//!   hold-back). With `--queue 0` the read's units preempt the requests of the connections
//!   that serve them at once, and the other connections go on: that made the simulator 5%
//!   fast at N=6 (33.03 s for 34.74 s; 34.50 s with the window) and its stall 20% low (−3%).
//! - **Bandwidth.** Every request is a flow from the uploader's uplink to the client's downlink;
//!   flows share both max-min fairly ([`flows`]), recomputed when flows start or end, at most
//!   once per [`SwarmParams::quantum_us`] (0 = at every change, exact).
//! - **Arrivals.** All at once (flash crowd) or Poisson. A client leaves when its trace ends
//!   (the benchmark unmounts after the replay), taking its pieces with it.
//!
//! - **Urgent requests** ([`SwarmParams::urgent`], the engine's `vmt_urgent`). A waiting
//!   read's units that no connection serving the client is fetching are asked of a holder
//!   that chokes it (a neighbour, or the seeder, chosen in turn by the client's stall count),
//!   outside that holder's slots: an urgent connection that carries demanded units only (from
//!   an injecting seeder, then the rest of their piece, which it declines to everyone else
//!   meanwhile) and ends when it has none (or turns into an ordinary one if the holder
//!   unchokes the client). With them, as in the engine:
//!   - **block announcements** ([`SwarmParams::have_block`], `vmt_have_block`): a unit a read
//!     waited for makes its client a holder of that unit, before its piece is whole;
//!   - **busy holders** ([`SwarmParams::busy_backlog`], `vmt_busy`): a client with that many
//!     units in flight over urgent connections turns the next asker away, which tries the
//!     next holder, or asks again after the time that backlog takes to drain (10 ms-2 s);
//!   - **asking a new holder at once**: a read with a unit that no neighbour could serve
//!     when asked (none held it, or every holder was busy) asks again as soon as a neighbour
//!     completes that unit's piece or announces the unit, as the engine's reader asks on
//!     each `have`. Before, it waited for its busy retry, a choke or unchoke, or one of its
//!     own requests ending: at N=128 on `datasets/results/scale/stop35/`'s image that said
//!     36.26 s, 35.53 and 35.70 s over three seeds, and now 35.01, 34.42 and 34.39 s.
//!
//!   Without the last two, a fresh piece's one holder shared its uplink among every waiting
//!   client's urgent requests: against the real crowd of 128 (every client a neighbour of
//!   every other, as peer exchange makes it) the simulator said 62.8 s for 40.8 s. With them
//!   (and the request window above) it says 36.4 s (−11%), and is within 15% in completion
//!   at N = 1 and 6 too (`datasets/results/scale/rebuilt/stop34/validation/`). With a plain
//!   seeder it said the crowd would stall (291 s against 45.6 s), and the engine's did (no
//!   client done in 16 minutes), so a plain seeder serves no urgent requests (`vmt-run seed`
//!   refuses `--urgent` without `--inject`).
//! - **Injecting seeder** ([`SwarmParams::inject`], `vmt-run seed --inject`). The seeder
//!   declines a piece that a client holds, or that it is sending to another client, so each
//!   piece enters the crowd once and spreads from there; clients ask it only for demanded and
//!   planned pieces, never background fill, and are not interested in it otherwise, so its
//!   slots go round. Only with uploading clients (the engine declines only peers that share).
//!   Not modelled: the engine's fallback, which serves a piece a client asks for again a
//!   retry (5 s) after its decline.
//!
//! Peers: every client knows the seeder, and all other clients up to `max_peers`, beyond which
//! a ring of `max_peers` neighbours stands for the tracker's random subset. The seeder is one
//! uploader among others ([`Source::Seeder`]): an HTTP origin would be another source with its
//! own uplink and no choking, a seam left for later.
//!
//! **Demand first** ([`SwarmParams::demand_first`]; `--no-demand-first` is the engine before stop
//! 37): every holder sends a read's units before its other uploads. Simulated at N=128 it took
//! 36.4 s to 34.1 s (36.3 s to 33.6 s on the image of `datasets/results/scale/stop35/`); the
//! engine built to do it left real crowds within their spread at K=10 and K=20 (stop 35,
//! reverted then), and with a busy backlog of 8 took the unsaturated K=40 crowd from 37.0-38.3 s
//! to 36.45 and 35.19 s (`datasets/results/scale/stop37/`): landed with that backlog.
//!
//! **Where the stall goes** ([`Waits`]): each read that misses is counted, from the miss to
//! its answer, under what its first missing unit was then: racing a request of its own, held
//! by a neighbour (turned away by a busy one or not), on its way from the seeder to another
//! client, or at the seeder only. At N=128 on that image (seed 1, a 10.7 s stall): racing
//! 1.0 s, at peers 4.0 s, turned away 4.3 s, on its way 1.3 s, at the seeder only 0.06 s;
//! each trace alone (N=1): racing 1.4 s, at the seeder 0.8 s. So a crowd's extra wait is
//! for pieces its neighbours hold: their uplinks, shared with their slots' uploads and
//! other askers, and their busy answers.
//!
//! Not modelled: CPU (the real N=16 crowd is CPU-bound, see the validation), TCP slow start,
//! endgame duplicates, the seeder's own `max_peers`.

mod flows;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::Serialize;

use crate::granularity::Granularity;
use crate::scheduler::Scheduler;
use crate::simulate::{bytes_read, ReplayShape};
use flows::{FlowId, Flows, Key};
use vmt_formats::trace::{Op, Trace};

/// How clients arrive.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Arrival {
    /// All at time 0.
    Flash,
    /// A Poisson process of this many clients per second.
    Poisson(f64),
}

/// Who delivered bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The seeder (uploader 0).
    Seeder,
    /// Another client.
    Peer,
}

/// The crowd's settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SwarmParams {
    /// Each client's uplink and downlink, bits per second.
    pub client_bits_per_s: f64,
    /// The seeder's uplink, bits per second.
    pub seeder_bits_per_s: f64,
    /// Whether clients upload to each other (`false`: client-server, `vmt-run --no-upload`).
    pub upload: bool,
    /// Peers an uploader unchokes at once (`EngineConfig::upload_slots`, 4).
    pub slots: usize,
    /// The seeder's upload slots (the same 4 by default).
    pub seeder_slots: usize,
    /// Period of the choker's rotation (µs; `EngineConfig::rechoke_interval`, 10 s).
    pub rechoke_us: f64,
    /// Idle time at each task boundary of a session (µs).
    pub think_us: u64,
    /// Round trip paid by each demanded request (µs).
    pub rtt_us: u64,
    /// Factor on the trace's recorded gaps between records (not on think time): 1 replays
    /// them as recorded; `bench.sh` replays a trace's reads back to back (its local replay of
    /// session-1 takes 0.68 s of the recorded 5.8 s), which about 0.1 stands for.
    pub gap_scale: f64,
    /// Arrival pattern.
    pub arrival: Arrival,
    /// Plan units looked at per request (the runtime's window is 8 MiB; a request takes the
    /// planned units of one piece, so a shorter look-ahead changes little and costs less).
    pub window: usize,
    /// Most peers a client connects to (`EngineConfig::max_peers`, 128).
    pub max_peers: usize,
    /// Shortest time between two rate recomputations (µs); 0 recomputes at every change.
    pub quantum_us: f64,
    /// Seed of the arrivals and each client's piece rotation.
    pub seed: u64,
    /// The seeder injects each piece once (see the module doc); `false` serves every request.
    pub inject: bool,
    /// Urgent requests (`EngineConfig::urgent`, off by default): a waiting read's units are
    /// fetched from a holder that chokes the client, outside its slots.
    pub urgent: bool,
    /// With urgent requests: a unit a read waited for is announced alone and served before
    /// its piece is whole (the engine's `vmt_have_block`).
    pub have_block: bool,
    /// With urgent requests: units a client queues for urgent connections before it turns
    /// the next asker away (the engine's `vmt_busy`, `EngineConfig::busy_backlog`, 8); 0
    /// never does.
    pub busy_backlog: u32,
    /// Units of a planned or background request still to come when a read misses (the
    /// engine's request window, whose smallest depth is 2): the demanded units wait behind
    /// them, and no connection of the client starts another such request while a read's unit
    /// is on its way (the engine's hold-back). 0 is the older model: the demanded units
    /// preempt the requests of the connections that serve them at once, and the others go on.
    pub queue: u32,
    /// With urgent requests, a read's units are asked urgently of every holder, choked or
    /// not, which sends them before its other uploads and counts them in its busy backlog (the
    /// engine since stop 37). Modelled as strict priority of those flows at both their uplink
    /// and downlink ([`flows`]; the client's hold-back, see [`SwarmParams::queue`], keeps its
    /// downlink mostly theirs anyway). False (the engine before): they share both alike with
    /// every other flow.
    pub demand_first: bool,
}

impl SwarmParams {
    /// The engine's defaults on symmetric links of `bits_per_s` (the seeder too), flash crowd,
    /// no think time, the default round trip.
    pub fn new(bits_per_s: f64) -> SwarmParams {
        SwarmParams {
            client_bits_per_s: bits_per_s,
            seeder_bits_per_s: bits_per_s,
            upload: true,
            slots: 4,
            seeder_slots: 4,
            rechoke_us: 10e6,
            think_us: 0,
            rtt_us: crate::simulate::DEFAULT_RTT_US,
            gap_scale: 1.0,
            arrival: Arrival::Flash,
            window: 64,
            max_peers: 128,
            quantum_us: 0.0,
            seed: 1,
            inject: false,
            urgent: false,
            have_block: true,
            busy_backlog: BUSY_BACKLOG,
            queue: QUEUE,
            demand_first: true,
        }
    }
}

/// One client of the crowd: the trace it replays (an index into the traces given to [`run`])
/// and its planner.
pub struct ClientSpec {
    /// Index of its trace.
    pub trace: usize,
    /// Its scheduler, fresh.
    pub sched: Scheduler,
}

/// How one client's replay went.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClientOutcome {
    /// Index of its trace.
    pub trace: usize,
    /// When it arrived (µs since the start).
    pub arrival_us: u64,
    /// From its arrival to its trace's last read (µs); `None` if it never finished.
    pub completion_us: Option<u64>,
    /// Completion minus the trace's own duration with think time (µs).
    pub stall_us: Option<u64>,
    /// Reads that waited.
    pub stalls: u64,
    /// Bytes its trace read.
    pub bytes_read: u64,
    /// Bytes received from the seeder (partial units of cancelled requests included).
    pub from_seeder: u64,
    /// Bytes received from other clients.
    pub from_peers: u64,
    /// Bytes it uploaded to other clients.
    pub uploaded: u64,
    /// Its reads' waits by what each found when it missed.
    pub waits: Waits,
}

/// Where a crowd's stall goes: each read that missed, from the miss to its answer (µs),
/// counted under what its first missing unit was then. The causes sum to the stall less the
/// round trips and think-time shifts `stall_us` also holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Waits {
    /// A request of the client's own already carried it (a prefetch racing the read).
    pub racing_us: u64,
    /// A neighbour held it (its piece, or the unit announced alone), and none turned the
    /// client away during the wait.
    pub at_peers_us: u64,
    /// A neighbour held it, and a busy one turned the client away at least once.
    pub turned_away_us: u64,
    /// Only the seeder had it, and it was injecting that piece into another client.
    pub on_its_way_us: u64,
    /// Only the seeder had it, free to send.
    pub seeder_us: u64,
}

impl Waits {
    fn add(&mut self, cause: Cause, us: u64) {
        *match cause {
            Cause::Racing => &mut self.racing_us,
            Cause::AtPeers => &mut self.at_peers_us,
            Cause::TurnedAway => &mut self.turned_away_us,
            Cause::OnItsWay => &mut self.on_its_way_us,
            Cause::Seeder => &mut self.seeder_us,
        } += us;
    }

    fn sum(&mut self, o: &Waits) {
        self.racing_us += o.racing_us;
        self.at_peers_us += o.at_peers_us;
        self.turned_away_us += o.turned_away_us;
        self.on_its_way_us += o.on_its_way_us;
        self.seeder_us += o.seeder_us;
    }

    fn scale(&mut self, f: f64) {
        for x in [
            &mut self.racing_us,
            &mut self.at_peers_us,
            &mut self.turned_away_us,
            &mut self.on_its_way_us,
            &mut self.seeder_us,
        ] {
            *x = (*x as f64 * f).round() as u64;
        }
    }
}

/// What a waiting read's first missing unit was when the read missed (see [`Waits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    Racing,
    AtPeers,
    TurnedAway,
    OnItsWay,
    Seeder,
}

/// The crowd's outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SwarmOutcome {
    /// Per client, in client order.
    pub clients: Vec<ClientOutcome>,
    /// Image size.
    pub image_bytes: u64,
    /// Bytes the seeder uploaded until the last client finished.
    pub seeder_bytes: u64,
    /// Clients that finished.
    pub finished: usize,
    /// Mean completion of the finished clients (µs).
    pub mean_completion_us: f64,
    /// 95th percentile completion (nearest rank, µs).
    pub p95_completion_us: f64,
    /// Mean stall (µs).
    pub mean_stall_us: f64,
    /// Mean of the finished clients' [`Waits`].
    pub mean_waits: Waits,
    /// Simulated time at the end (µs).
    pub end_us: f64,
    /// Events processed and rate recomputations: the simulation's cost.
    pub events: u64,
    /// Rate recomputations.
    pub recomputes: u64,
}

/// A crowd that cannot be simulated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SwarmSimError {
    /// No clients.
    #[error("a crowd needs at least one client")]
    NoClients,
    /// A client's trace index is out of range.
    #[error("client {client} replays trace {trace}, but there are {traces} traces")]
    NoSuchTrace {
        /// The client.
        client: usize,
        /// Its trace index.
        trace: usize,
        /// Traces given.
        traces: usize,
    },
    /// A scheduler plans in other units than the granularity fetches, or for another image.
    #[error("client {client}'s scheduler plans {units} units of {unit} bytes, the crowd fetches {want} units of {want_unit} bytes")]
    UnitMismatch {
        /// The client.
        client: usize,
        /// Its scheduler's unit count.
        units: u32,
        /// Its scheduler's unit.
        unit: u32,
        /// The crowd's unit count.
        want: u32,
        /// The crowd's unit.
        want_unit: u32,
    },
    /// More than 64 units a piece (a request's units are a 64-bit mask).
    #[error("{0} units a piece: at most 64 (use bigger blocks or smaller pieces)")]
    PieceTooBig(u32),
    /// A rate that is not positive.
    #[error("link rates must be positive")]
    BadRate,
}

/// A set of indices.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    #[inline]
    fn get(&self, i: u32) -> bool {
        self.0[(i / 64) as usize] >> (i % 64) & 1 == 1
    }
    #[inline]
    fn set(&mut self, i: u32, v: bool) {
        let w = &mut self.0[(i / 64) as usize];
        if v {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Demand,
    Plan,
    Background,
}

/// One request: some units of one piece.
#[derive(Clone, Copy, Debug)]
struct Job {
    piece: u32,
    mask: u64,
    bytes: f64,
    kind: Kind,
    /// Over an urgent connection: counted in the uploader's urgent backlog.
    urgent: bool,
}

struct Conn {
    /// Uploader: 0 = seeder, c + 1 = client c.
    up: u32,
    /// The piece of the last request: with background fill the whole piece is wanted, so the
    /// picker keeps it assigned to this peer until it is complete.
    last_piece: Option<u32>,
    flow: Option<(FlowId, Job)>,
    /// Outside the uploader's slots: demanded units only (see [`SwarmParams::urgent`]).
    urgent: bool,
}

struct Client {
    spec_trace: usize,
    sched: Scheduler,
    have: Bits,
    inflight: Bits,
    piece_have: Vec<u16>,
    piece_done: Bits,
    pieces_done: u32,
    /// Units a read waited for, announced alone (see [`SwarmParams::have_block`]).
    told: Bits,
    /// A retry of urgent requests turned away by busy holders is scheduled.
    retry_pending: bool,
    /// In [`Sim::starved`].
    starved: bool,
    /// The waiting read: when it missed and what it found (see [`Waits`]).
    missed: (f64, Cause),
    conns: Vec<Conn>,
    /// Next record of the trace.
    next: usize,
    /// The read waiting: its units.
    waiting: Option<std::ops::Range<u32>>,
    arrived: bool,
    left: bool,
    arrival: f64,
    rotation: u32,
    /// Pieces before this in the rotation are complete.
    cursor: u32,
    out: ClientOutcome,
    local_us: u64,
}

struct Uploader {
    cap: f64,
    slots: usize,
    unchoked: Vec<u32>,
    /// Per neighbour slot: time of the last choke or unchoke (rotation order).
    changed: Vec<f64>,
    fill_pending: bool,
    uploaded: u64,
    /// Units in flight over urgent connections from it (see [`SwarmParams::busy_backlog`]).
    urgent_units: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrive(u32),
    Record(u32),
    Resume(u32),
    Fill(u32),
    Rechoke(u32),
    /// Asks busy holders again (see [`SwarmParams::busy_backlog`]).
    Retry(u32),
}

struct Sim<'a> {
    p: &'a SwarmParams,
    traces: &'a [Trace],
    upp: u32,
    unit: u64,
    units: u32,
    image: u64,
    pieces: u32,
    clients: Vec<Client>,
    /// Per trace: where think time goes, and the last read (where a client leaves).
    shapes: Vec<ReplayShape>,
    ups: Vec<Uploader>,
    avail: Vec<u32>,
    /// Per piece: the client the seeder is sending it to (`NOBODY`), for an injecting seeder.
    injecting: Vec<u32>,
    flows: Flows,
    /// Flow id → (client, uploader).
    owner: Vec<(u32, u32)>,
    events: BinaryHeap<Reverse<(Key, u64, Event)>>,
    seq: u64,
    now: f64,
    plan: Vec<u32>,
    order: Vec<u32>,
    ring: usize,
    finished: usize,
    n_events: u64,
    /// Clients whose waiting read has a unit that no connection fetches and that no
    /// neighbour served when last asked (none held it, or every holder was busy): asked
    /// again as soon as a neighbour gets a piece or announces a unit, as the engine's reader
    /// asks whenever a `have` comes in, not only at its next retry.
    starved: Vec<u32>,
    /// [`Sim::starved`]'s spare, so waking them allocates nothing.
    starved_spare: Vec<u32>,
    /// Pieces a client completed, or of which it announced a unit, since the starved were
    /// last woken.
    fresh: Vec<u32>,
}

/// Simulates `clients` replaying `traces` at `granularity` under `params`; `progress(done)`
/// is called as clients finish.
pub fn run(
    traces: &[Trace],
    clients: Vec<ClientSpec>,
    granularity: &Granularity,
    params: &SwarmParams,
    mut progress: impl FnMut(usize),
) -> Result<SwarmOutcome, SwarmSimError> {
    if clients.is_empty() {
        return Err(SwarmSimError::NoClients);
    }
    if !(params.client_bits_per_s > 0.0 && params.seeder_bits_per_s > 0.0) {
        return Err(SwarmSimError::BadRate);
    }
    let upp = granularity.units_per_piece();
    if upp > 64 {
        return Err(SwarmSimError::PieceTooBig(upp));
    }
    let image = traces.get(clients[0].trace).map_or(0, |t| t.image.size);
    let unit = granularity.unit() as u64;
    let units = image.div_ceil(unit) as u32;
    for (i, c) in clients.iter().enumerate() {
        if c.trace >= traces.len() {
            return Err(SwarmSimError::NoSuchTrace {
                client: i,
                trace: c.trace,
                traces: traces.len(),
            });
        }
        if c.sched.unit_size() != granularity.unit() || c.sched.units() != units {
            return Err(SwarmSimError::UnitMismatch {
                client: i,
                units: c.sched.units(),
                unit: c.sched.unit_size(),
                want: units,
                want_unit: granularity.unit(),
            });
        }
    }
    let pieces = units.div_ceil(upp);
    let n = clients.len();
    let bytes_per_us = |bits: f64| bits / 8.0 / 1e6;
    let client_cap = bytes_per_us(params.client_bits_per_s);
    let ring = if n - 1 <= params.max_peers {
        0
    } else {
        (params.max_peers / 2).max(1)
    };
    let neighbours = if ring == 0 { n } else { 2 * ring };
    let mut rng = SplitMix(params.seed);
    let mut ups = Vec::with_capacity(n + 1);
    ups.push(Uploader {
        cap: bytes_per_us(params.seeder_bits_per_s),
        slots: params.seeder_slots,
        unchoked: Vec::new(),
        changed: vec![0.0; n],
        fill_pending: false,
        uploaded: 0,
        urgent_units: 0,
    });
    for _ in 0..n {
        ups.push(Uploader {
            cap: client_cap,
            slots: if params.upload { params.slots } else { 0 },
            unchoked: Vec::new(),
            changed: vec![0.0; if params.upload { neighbours } else { 0 }],
            fill_pending: false,
            uploaded: 0,
            urgent_units: 0,
        });
    }
    let up_caps: Vec<f64> = ups.iter().map(|u| u.cap).collect();
    let flows = Flows::new(&up_caps, &vec![client_cap; n]);
    let mut order: Vec<u32> = (0..pieces).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let shapes: Vec<ReplayShape> = traces.iter().map(ReplayShape::of).collect();
    let cls: Vec<Client> = clients
        .into_iter()
        .map(|c| {
            let t = &traces[c.trace];
            Client {
                spec_trace: c.trace,
                sched: c.sched,
                have: Bits::new(units as usize),
                inflight: Bits::new(units as usize),
                piece_have: vec![0; pieces as usize],
                piece_done: Bits::new(pieces as usize),
                pieces_done: 0,
                told: Bits::new(units as usize),
                retry_pending: false,
                starved: false,
                missed: (0.0, Cause::Racing),
                conns: Vec::new(),
                next: 0,
                waiting: None,
                arrived: false,
                left: false,
                arrival: 0.0,
                rotation: (rng.next() % pieces.max(1) as u64) as u32,
                cursor: 0,
                out: ClientOutcome {
                    trace: c.trace,
                    bytes_read: bytes_read(t),
                    ..ClientOutcome::default()
                },
                local_us: {
                    // Recorded gaps scale, think time does not.
                    let shape = &shapes[c.trace];
                    let gaps = shape.end_us(t) as f64 * params.gap_scale;
                    shape.think_us(params.think_us) + gaps.round() as u64
                },
            }
        })
        .collect();
    let mut sim = Sim {
        p: params,
        traces,
        upp,
        unit,
        units,
        image,
        pieces,
        clients: cls,
        shapes,
        ups,
        avail: vec![0; pieces as usize],
        injecting: vec![NOBODY; pieces as usize],
        flows,
        owner: Vec::new(),
        events: BinaryHeap::new(),
        seq: 0,
        now: 0.0,
        plan: Vec::with_capacity(params.window),
        order,
        ring,
        finished: 0,
        n_events: 0,
        starved: Vec::new(),
        starved_spare: Vec::new(),
        fresh: Vec::new(),
    };
    let mut t = 0.0;
    for c in 0..n {
        if let Arrival::Poisson(per_s) = params.arrival {
            if c > 0 {
                let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
                t += -(1.0 - u).ln() / per_s * 1e6;
            }
        }
        sim.push(t, Event::Arrive(c as u32));
    }
    sim.push(params.rechoke_us, Event::Rechoke(0));
    // Clients that can no longer move (nobody has what they wait for) would keep the choker
    // ticking for ever: stop when no flow is under way and none has finished for an hour plus
    // ten of the slowest session (from the last arrival). Not counted from the start: a crowd
    // of 1,000 behind one seeder link is still fetching hours later.
    let longest = sim.clients.iter().map(|c| c.local_us).max().unwrap_or(0) as f64;
    let slack = 10.0 * longest + 3600e6;
    let mut moved = t;
    let mut recomputes = 0;
    let mut last_recompute = f64::NEG_INFINITY;
    let mut reported = 0;
    while sim.finished < n {
        let te = sim.events.peek().map(|Reverse((Key(t), _, _))| *t);
        let tf = sim.flows.next_finish();
        let tr = sim
            .flows
            .dirty
            .then(|| (last_recompute + params.quantum_us).max(sim.now));
        let next_event = te.unwrap_or(f64::INFINITY);
        let next_finish = tf.map_or(f64::INFINITY, |(t, _)| t);
        let next_rate = tr.unwrap_or(f64::INFINITY);
        if tf.is_none() && next_event.min(next_rate) > moved + slack {
            break; // nothing can move: the rest never finish
        }
        sim.n_events += 1;
        if next_rate <= next_event && next_rate <= next_finish {
            sim.now = next_rate;
            sim.flows.recompute(sim.now);
            last_recompute = sim.now;
            recomputes += 1;
        } else if next_finish <= next_event {
            let (t, id) = tf.expect("a finite finish");
            sim.now = t;
            sim.finish(id);
            sim.wake_starved();
            moved = t;
        } else {
            let Some(Reverse((Key(t), _, ev))) = sim.events.pop() else {
                break;
            };
            sim.now = t;
            sim.event(ev);
            sim.wake_starved();
        }
        if sim.finished != reported {
            reported = sim.finished;
            progress(reported);
        }
    }
    let mut out = SwarmOutcome {
        image_bytes: image,
        seeder_bytes: sim.ups[0].uploaded,
        finished: sim.finished,
        end_us: sim.now,
        events: sim.n_events,
        recomputes,
        ..SwarmOutcome::default()
    };
    let mut done: Vec<f64> = Vec::new();
    let mut stall = 0.0;
    for (i, c) in sim.clients.iter_mut().enumerate() {
        c.out.uploaded = sim.ups[i + 1].uploaded;
        if let (Some(x), Some(s)) = (c.out.completion_us, c.out.stall_us) {
            done.push(x as f64);
            stall += s as f64;
            out.mean_waits.sum(&c.out.waits);
        }
    }
    if !done.is_empty() {
        out.mean_completion_us = done.iter().sum::<f64>() / done.len() as f64;
        out.mean_stall_us = stall / done.len() as f64;
        out.mean_waits.scale(1.0 / done.len() as f64);
        done.sort_by(f64::total_cmp);
        let rank = ((0.95 * done.len() as f64).ceil() as usize).clamp(1, done.len());
        out.p95_completion_us = done[rank - 1];
    }
    out.clients = sim.clients.into_iter().map(|c| c.out).collect();
    let _ = sim.traces;
    Ok(out)
}

/// The engine's `vmt_busy` threshold (`EngineConfig::busy_backlog`'s default, which this
/// layer cannot name; `vmt-runtime`'s crowd tests check that the two agree): urgent blocks a
/// client queues before it turns askers away.
pub const BUSY_BACKLOG: u32 = 8;

/// Blocks a connection of the engine has asked for ahead of a read's miss: its request
/// window's smallest depth (`vmt_swarm::MIN_REQUEST_WINDOW`, checked as [`BUSY_BACKLOG`]),
/// where the window settles on a link it fills (see [`SwarmParams::queue`]).
pub const QUEUE: u32 = 2;

/// No client (`Sim::injecting`).
const NOBODY: u32 = u32::MAX;

/// SplitMix64: a seeded generator for arrivals and rotations, so runs repeat exactly.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Sim<'_> {
    fn push(&mut self, t: f64, ev: Event) {
        self.seq += 1;
        self.events.push(Reverse((Key(t), self.seq, ev)));
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Arrive(c) => self.arrive(c),
            Event::Record(c) => self.records(c),
            Event::Resume(c) => {
                let now = self.now;
                let cl = &mut self.clients[c as usize];
                cl.waiting = None;
                let (at, cause) = cl.missed;
                cl.out.waits.add(cause, (now - at).round() as u64);
                if self.p.queue > 0 {
                    // Connections held back while the read waited ask for the rest again.
                    self.kick(c);
                }
                self.after_record(c);
            }
            Event::Fill(u) => {
                self.ups[u as usize].fill_pending = false;
                self.fill(u);
            }
            Event::Rechoke(u) => self.rechoke(u),
            Event::Retry(c) => {
                self.clients[c as usize].retry_pending = false;
                self.ask_urgently(c);
            }
        }
    }

    fn arrive(&mut self, c: u32) {
        let now = self.now;
        let cl = &mut self.clients[c as usize];
        cl.arrived = true;
        cl.arrival = now;
        cl.out.arrival_us = now.round() as u64;
        let first = self.traces[cl.spec_trace]
            .records
            .first()
            .map_or(0, |r| r.t_us);
        self.push(now + first as f64 * self.p.gap_scale, Event::Record(c));
        if self.p.upload {
            self.push(now + self.p.rechoke_us, Event::Rechoke(c + 1));
        }
        self.want_fill(0);
        for j in 0..self.neighbour_count() {
            if let Some(u) = self.neighbour(c, j) {
                self.want_fill(u + 1);
            }
        }
    }

    /// Processes the client's records from `next` until one waits or time must pass.
    fn records(&mut self, c: u32) {
        let traces = self.traces;
        let trace = &traces[self.clients[c as usize].spec_trace];
        let cl = &mut self.clients[c as usize];
        let replayed = self.shapes[cl.spec_trace].replayed();
        let Some(r) = trace.records[..replayed].get(cl.next) else {
            self.leave(c);
            return;
        };
        if r.op == Op::Read {
            cl.sched.on_read(r.offset, r.len as u64, self.now as u64);
            let range = cl.sched.units_of(r.offset, r.len as u64);
            if let Some(first) = range.clone().find(|&u| !cl.have.get(u)) {
                cl.out.stalls += 1;
                cl.waiting = Some(range);
                let cause = self.cause(c, first);
                self.clients[c as usize].missed = (self.now, cause);
                self.demand(c);
                return;
            }
        }
        self.after_record(c);
    }

    /// The current record is done at `now`: on to the next, after its gap.
    fn after_record(&mut self, c: u32) {
        let traces = self.traces;
        let trace = &traces[self.clients[c as usize].spec_trace];
        let cl = &mut self.clients[c as usize];
        let shape = &self.shapes[cl.spec_trace];
        let i = cl.next;
        cl.next += 1;
        match trace.records[..shape.replayed()].get(i + 1) {
            None => self.leave(c),
            Some(next) => {
                let mut gap =
                    next.t_us.saturating_sub(trace.records[i].t_us) as f64 * self.p.gap_scale;
                if shape.think_before[i + 1] {
                    gap += self.p.think_us as f64;
                }
                self.push(self.now + gap, Event::Record(c));
            }
        }
    }

    fn leave(&mut self, c: u32) {
        let now = self.now;
        let cl = &mut self.clients[c as usize];
        if cl.left {
            return;
        }
        cl.left = true;
        let completion = (now - cl.arrival).round() as u64;
        cl.out.completion_us = Some(completion);
        cl.out.stall_us = Some(completion.saturating_sub(cl.local_us));
        self.finished += 1;
        // Its downloads end, freeing the uploaders' slots.
        while let Some(conn) = self.clients[c as usize].conns.pop() {
            if let Some((id, job)) = conn.flow {
                self.cancel(c, conn.up, id, job);
            }
            self.ups[conn.up as usize].unchoked.retain(|&d| d != c);
            self.want_fill(conn.up);
        }
        // Its uploads end; its pieces leave the swarm.
        let me = c + 1;
        let peers = std::mem::take(&mut self.ups[me as usize].unchoked);
        for d in peers {
            self.drop_conn(d, me);
        }
        if self.p.urgent {
            for d in 0..self.clients.len() as u32 {
                if self.clients[d as usize].conns.iter().any(|x| x.up == me) {
                    self.drop_conn(d, me);
                }
            }
        }
        let cl = &self.clients[c as usize];
        if self.p.upload {
            for p in 0..self.pieces {
                if cl.piece_done.get(p) {
                    self.avail[p as usize] -= 1;
                }
            }
        }
    }

    /// Uploader `u` stops serving client `d` (choke or departure); `d` repicks elsewhere.
    fn drop_conn(&mut self, d: u32, u: u32) {
        let cl = &mut self.clients[d as usize];
        if let Some(i) = cl.conns.iter().position(|x| x.up == u) {
            let conn = cl.conns.swap_remove(i);
            if let Some((id, job)) = conn.flow {
                self.cancel(d, u, id, job);
            }
        }
        self.kick(d);
        self.ask_urgently(d);
    }

    /// A read of `c` missed: demanded units go first on every connection that can serve them
    /// (a prefetch there is cut short, keeping its whole units).
    fn demand(&mut self, c: u32) {
        let mut served = false;
        for i in 0..self.clients[c as usize].conns.len() {
            let conn = &self.clients[c as usize].conns[i];
            let (up, busy) = (conn.up, conn.flow);
            let serves = self.serves_demand(c, up);
            served |= serves;
            let Some((id, job)) = busy.filter(|(_, j)| j.kind != Kind::Demand) else {
                continue;
            };
            if self.p.queue > 0 {
                self.truncate(c, i);
            } else if serves {
                self.clients[c as usize].conns[i].flow = None;
                self.cancel(c, up, id, job);
            }
        }
        self.kick(c);
        if !served {
            // Interested in whoever has the pieces: they fill a free slot if they have one.
            self.want_fill(0);
            if self.p.upload {
                for j in 0..self.neighbour_count() {
                    if let Some(u) = self.neighbour(c, j) {
                        if self.serves_demand(c, u + 1) {
                            self.want_fill(u + 1);
                        }
                    }
                }
            }
        }
        self.ask_urgently(c);
    }

    /// Asks holders that choke `c` for the waiting read's units no connection fetches (see
    /// [`SwarmParams::urgent`]): one urgent connection per holder, until every such unit is
    /// on its way or none of the rest has a holder.
    fn ask_urgently(&mut self, c: u32) {
        if !self.p.urgent {
            return;
        }
        loop {
            let cl = &self.clients[c as usize];
            let Some(w) = cl.waiting.clone() else {
                return;
            };
            let Some(unit) = w
                .into_iter()
                .find(|&u| !cl.have.get(u) && !cl.inflight.get(u))
            else {
                return;
            };
            // Candidates: the neighbours, then the seeder; the stall count picks the first
            // one looked at, so a client's misses spread over its holders.
            let count = if self.p.upload {
                self.neighbour_count()
            } else {
                0
            };
            let start = cl.out.stalls as usize;
            let mut holder = None;
            let mut busy = None;
            for k in 0..=count {
                let j = (start + k) % (count + 1);
                let u = if j == count {
                    0
                } else {
                    match self.neighbour(c, j) {
                        Some(d) => d + 1,
                        None => continue,
                    }
                };
                if u > 0 {
                    let upc = &self.clients[(u - 1) as usize];
                    if !upc.arrived || upc.left {
                        continue;
                    }
                }
                if cl.conns.iter().all(|x| x.up != u) && self.has_unit(c, u, unit) {
                    let backlog = self.ups[u as usize].urgent_units;
                    if u > 0 && self.p.busy_backlog > 0 && backlog >= self.p.busy_backlog {
                        // Turned away: asked again when the first such backlog has drained.
                        let drain = backlog as f64 * self.unit as f64 / self.ups[u as usize].cap;
                        busy = Some(busy.map_or(drain, |d: f64| d.min(drain)));
                        continue;
                    }
                    holder = Some(u);
                    break;
                }
            }
            let Some(up) = holder else {
                if let Some(drain) = busy {
                    let missed = &mut self.clients[c as usize].missed.1;
                    if *missed == Cause::AtPeers {
                        *missed = Cause::TurnedAway;
                    }
                    self.retry_later(c, drain);
                }
                let cl = &mut self.clients[c as usize];
                if !cl.starved {
                    cl.starved = true;
                    self.starved.push(c);
                }
                return;
            };
            let cl = &mut self.clients[c as usize];
            cl.conns.push(Conn {
                up,
                last_piece: None,
                flow: None,
                urgent: true,
            });
            let i = cl.conns.len() - 1;
            self.pick(c, i);
            if !self.clients[c as usize].inflight.get(unit) {
                return; // it took nothing after all (cannot happen: the same `has_piece`)
            }
        }
    }

    /// Asks the starved clients (see [`Sim::starved`]) whose waiting read wants a unit of a
    /// fresh piece again.
    fn wake_starved(&mut self) {
        while let Some(p) = self.fresh.pop() {
            let units = self.piece_units(p);
            let mut list = std::mem::take(&mut self.starved);
            std::mem::swap(&mut self.starved, &mut self.starved_spare);
            for &d in &list {
                let cl = &mut self.clients[d as usize];
                match cl.waiting.clone().filter(|w| !w.is_empty()) {
                    None => cl.starved = false,
                    Some(w) if w.start < units.end && units.start < w.end => {
                        cl.starved = false;
                        self.ask_urgently(d);
                    }
                    Some(_) => self.starved.push(d),
                }
            }
            list.clear();
            self.starved_spare = list;
        }
    }

    /// What client `c`'s read found of `unit` when it missed (see [`Waits`]).
    fn cause(&self, c: u32, unit: u32) -> Cause {
        let cl = &self.clients[c as usize];
        if cl.inflight.get(unit) {
            return Cause::Racing;
        }
        if self.p.upload {
            for j in 0..self.neighbour_count() {
                let Some(d) = self.neighbour(c, j) else {
                    continue;
                };
                let dc = &self.clients[d as usize];
                if dc.arrived && !dc.left && self.has_unit(c, d + 1, unit) {
                    return Cause::AtPeers;
                }
            }
        }
        let to = self.injecting[(unit / self.upp) as usize];
        if self.injects() && to != NOBODY && to != c {
            Cause::OnItsWay
        } else {
            Cause::Seeder
        }
    }

    /// Schedules client `c`'s urgent requests again after the retry a busy holder names: the
    /// time its backlog takes to `drain` (µs), 10 ms to 2 s, as `vmt_busy`'s.
    fn retry_later(&mut self, c: u32, drain: f64) {
        let cl = &mut self.clients[c as usize];
        if cl.retry_pending {
            return;
        }
        cl.retry_pending = true;
        self.push(self.now + drain.clamp(10e3, 2e6), Event::Retry(c));
    }

    /// Whether uploader `up` serves unit `u` to client `c` for a read that waits for it: it
    /// has the piece, or (a client) announced the unit alone (see [`SwarmParams::have_block`]).
    fn has_unit(&self, c: u32, up: u32, u: u32) -> bool {
        self.has_piece(c, up, u / self.upp)
            || (up > 0
                && self.p.urgent
                && self.p.upload
                && self.p.have_block
                && self.clients[(up - 1) as usize].told.get(u))
    }

    /// Whether uploader `up` serves `piece` to client `c`: a client, if it has it; the
    /// seeder always, or when injecting, if no client holds it and it sends it to no other.
    fn has_piece(&self, c: u32, up: u32, piece: u32) -> bool {
        if up > 0 {
            return self.clients[(up - 1) as usize].piece_done.get(piece);
        }
        if !self.injects() {
            return true;
        }
        let to = self.injecting[piece as usize];
        self.avail[piece as usize] == 0 && (to == NOBODY || to == c)
    }

    /// Whether uploader `up` has a piece of the waiting read's missing, unrequested units.
    fn serves_demand(&self, c: u32, up: u32) -> bool {
        let cl = &self.clients[c as usize];
        let Some(w) = cl.waiting.clone() else {
            return false;
        };
        w.into_iter()
            .any(|u| !cl.have.get(u) && !cl.inflight.get(u) && self.has_unit(c, up, u))
    }

    fn unit_bytes(&self, u: u32) -> u64 {
        let start = u as u64 * self.unit;
        (self.image - start.min(self.image)).min(self.unit)
    }

    fn job_of(&self, piece: u32, mask: u64, kind: Kind) -> Job {
        let mut bytes = 0;
        let mut m = mask;
        while m != 0 {
            let k = m.trailing_zeros();
            m &= m - 1;
            bytes += self.unit_bytes(piece * self.upp + k);
        }
        Job {
            piece,
            mask,
            bytes: bytes as f64,
            kind,
            urgent: false,
        }
    }

    /// The next request of client `c` over its connection `i`, if it wants anything there.
    fn choose(&mut self, c: u32, i: usize) -> Option<Job> {
        let up = self.clients[c as usize].conns[i].up;
        let upp = self.upp;
        // 1. The waiting read.
        if let Some(job) = self.demand_job(c, up) {
            return Some(job);
        }
        let cl = &self.clients[c as usize];
        if cl.conns[i].urgent {
            // 1a. An injecting seeder's urgent connection then carries the rest of the piece
            // it served (the engine's choked download asks for it urgently too: the seeder
            // declines that piece to every other client meanwhile).
            if up == 0 && self.injects() {
                if let Some(p) = cl.conns[i].last_piece.filter(|&p| self.has_piece(c, up, p)) {
                    let mask = self
                        .piece_units(p)
                        .filter(|&u| !cl.have.get(u) && !cl.inflight.get(u))
                        .fold(0u64, |m, u| m | 1 << (u % upp));
                    if mask != 0 {
                        return Some(self.job_of(p, mask, Kind::Plan));
                    }
                }
            }
            return None;
        }
        // 1b. With background fill every piece is wanted whole: finish the one assigned here.
        let fills = cl.sched.strategy().fills_background();
        if let (true, Some(p)) = (
            fills,
            cl.conns[i].last_piece.filter(|&p| self.has_piece(c, up, p)),
        ) {
            let mut mask = 0;
            for u in self.piece_units(p) {
                if !cl.have.get(u) && !cl.inflight.get(u) {
                    mask |= 1 << (u % upp);
                }
            }
            if mask != 0 {
                return Some(self.job_of(p, mask, Kind::Plan));
            }
        }
        // 2. The plan (with background fill: the planned piece whole).
        let cl = &mut self.clients[c as usize];
        let (have, inflight) = (&cl.have, &cl.inflight);
        cl.sched.plan(
            &|u: u32| have.get(u) || inflight.get(u),
            self.p.window,
            &mut self.plan,
        );
        let mut piece = None;
        let mut mask = 0u64;
        for &u in &self.plan {
            let p = u / upp;
            match piece {
                None if self.has_piece(c, up, p) => {
                    piece = Some(p);
                    mask |= 1 << (u % upp);
                }
                Some(q) if q == p => mask |= 1 << (u % upp),
                _ => {}
            }
        }
        if let Some(p) = piece {
            if fills {
                let cl = &self.clients[c as usize];
                for u in self.piece_units(p) {
                    if !cl.have.get(u) && !cl.inflight.get(u) {
                        mask |= 1 << (u % upp);
                    }
                }
            }
            return Some(self.job_of(p, mask, Kind::Plan));
        }
        // 3. Background: the rarest of a few pieces the uploader has, in the rotation (never
        // from an injecting seeder).
        if !self.clients[c as usize].sched.strategy().fills_background()
            || (up == 0 && self.injects())
        {
            return None;
        }
        const CANDIDATES: usize = 8;
        const SCAN: u32 = 512;
        let mut best: Option<(u32, u32)> = None;
        let mut found = 0;
        let cl = &self.clients[c as usize];
        let mut k = cl.cursor;
        let mut scanned = 0;
        while k < self.pieces && scanned < SCAN && found < CANDIDATES {
            let p = self.order[((k + cl.rotation) % self.pieces) as usize];
            k += 1;
            if cl.piece_done.get(p) {
                continue;
            }
            scanned += 1;
            if !self.has_piece(c, up, p) {
                continue;
            }
            let wanted = self
                .piece_units(p)
                .any(|u| !cl.have.get(u) && !cl.inflight.get(u));
            if !wanted {
                continue;
            }
            found += 1;
            let a = self.avail[p as usize];
            if best.is_none_or(|(_, b)| a < b) {
                best = Some((p, a));
            }
        }
        // Advance the cursor over complete pieces.
        let cl = &mut self.clients[c as usize];
        while cl.cursor < self.pieces
            && cl
                .piece_done
                .get(self.order[((cl.cursor + cl.rotation) % self.pieces) as usize])
        {
            cl.cursor += 1;
        }
        if best.is_none() && up != 0 {
            // A peer has few pieces: look at those instead of the rotation.
            let cl = &self.clients[c as usize];
            let upc = &self.clients[(up - 1) as usize];
            for p in 0..self.pieces {
                if upc.piece_done.get(p)
                    && !cl.piece_done.get(p)
                    && self
                        .piece_units(p)
                        .any(|u| !cl.have.get(u) && !cl.inflight.get(u))
                {
                    best = Some((p, 0));
                    break;
                }
            }
        }
        let (p, _) = best?;
        let cl = &self.clients[c as usize];
        let mut mask = 0;
        for u in self.piece_units(p) {
            if !cl.have.get(u) && !cl.inflight.get(u) {
                mask |= 1 << (u % upp);
            }
        }
        Some(self.job_of(p, mask, Kind::Background))
    }

    /// The waiting read's missing units that `up` serves and no connection fetches, of the
    /// first such piece.
    fn demand_job(&self, c: u32, up: u32) -> Option<Job> {
        let upp = self.upp;
        let cl = &self.clients[c as usize];
        let w = cl.waiting.clone()?;
        let mut piece = None;
        let mut mask = 0u64;
        for u in w {
            if cl.have.get(u) || cl.inflight.get(u) || !self.has_unit(c, up, u) {
                continue;
            }
            let p = *piece.get_or_insert(u / upp);
            if u / upp == p {
                mask |= 1 << (u % upp);
            }
        }
        piece.map(|p| self.job_of(p, mask, Kind::Demand))
    }

    fn piece_units(&self, p: u32) -> std::ops::Range<u32> {
        let first = p * self.upp;
        first..(first + self.upp).min(self.units)
    }

    /// Starts the next request on connection `i` of `c`; a connection with nothing to fetch
    /// is choked (the client is not interested) and the uploader's slot refilled.
    fn pick(&mut self, c: u32, i: usize) {
        if !self.clients[c as usize].conns[i].urgent && self.holds_back(c) {
            // Only the waiting read's units; the connection stays, idle, until it resumes.
            let up = self.clients[c as usize].conns[i].up;
            if let Some(job) = self.demand_job(c, up) {
                self.start(c, i, job);
            }
            return;
        }
        let Some(job) = self.choose(c, i) else {
            let conn = self.clients[c as usize].conns.swap_remove(i);
            // An urgent connection is no slot: nothing to free.
            if !conn.urgent {
                self.choke(conn.up, c);
            }
            return;
        };
        self.start(c, i, job);
    }

    /// Starts `job` over connection `i` of `c`.
    fn start(&mut self, c: u32, i: usize, mut job: Job) {
        let served_first = self.demand_first(&job);
        let cl = &mut self.clients[c as usize];
        let first = job.piece * self.upp;
        let mut m = job.mask;
        while m != 0 {
            let k = m.trailing_zeros();
            m &= m - 1;
            cl.inflight.set(first + k, true);
        }
        let up = cl.conns[i].up;
        job.urgent = cl.conns[i].urgent || served_first;
        if job.urgent {
            self.ups[up as usize].urgent_units += job.mask.count_ones();
        }
        if up == 0 && self.p.inject && self.p.upload {
            self.injecting[job.piece as usize] = c;
        }
        cl.conns[i].last_piece = Some(job.piece);
        self.begin_flow(c, i, up, job);
    }

    /// Whether `job` carries units a read waits for, asked as urgent requests of an uploader
    /// that serves them first (see [`SwarmParams::demand_first`]).
    fn demand_first(&self, job: &Job) -> bool {
        self.p.urgent && self.p.demand_first && job.kind == Kind::Demand
    }

    /// Puts `job`'s bytes on the links from `up` to `c`, as connection `i`'s request.
    fn begin_flow(&mut self, c: u32, i: usize, up: u32, job: Job) {
        let first = self.demand_first(&job);
        let id = self.flows.start(up, c, job.bytes, first, self.now);
        self.clients[c as usize].conns[i].flow = Some((id, job));
        if self.owner.len() <= id as usize {
            self.owner.resize(id as usize + 1, (0, 0));
        }
        self.owner[id as usize] = (c, up);
    }

    /// Starts requests on `c`'s idle connections.
    fn kick(&mut self, c: u32) {
        let mut i = 0;
        while i < self.clients[c as usize].conns.len() {
            if self.clients[c as usize].conns[i].flow.is_none() {
                let before = self.clients[c as usize].conns.len();
                self.pick(c, i);
                if self.clients[c as usize].conns.len() < before {
                    continue; // choked: another connection moved to `i`
                }
            }
            i += 1;
        }
    }

    /// Credits `bytes` delivered of `job` to `c`: whole units, in order.
    fn credit(&mut self, c: u32, up: u32, job: Job, delivered: f64, whole: bool) {
        let first = job.piece * self.upp;
        let mut left = delivered;
        let mut m = job.mask;
        let mut completed = false;
        while m != 0 {
            let k = m.trailing_zeros();
            m &= m - 1;
            let u = first + k;
            let b = self.unit_bytes(u) as f64;
            let piece_len = self.piece_units(job.piece).len();
            let cl = &mut self.clients[c as usize];
            cl.inflight.set(u, false);
            if (whole || left >= b) && !cl.have.get(u) {
                left -= b;
                cl.have.set(u, true);
                if job.kind == Kind::Demand {
                    cl.told.set(u, true);
                }
                let p = job.piece as usize;
                cl.piece_have[p] += 1;
                if cl.piece_have[p] as usize == piece_len {
                    cl.piece_done.set(job.piece, true);
                    cl.pieces_done += 1;
                    completed = true;
                }
            }
        }
        let bytes = delivered.round() as u64;
        let cl = &mut self.clients[c as usize];
        if up == 0 {
            cl.out.from_seeder += bytes;
        } else {
            cl.out.from_peers += bytes;
        }
        self.ups[up as usize].uploaded += bytes;
        let announced = completed || (job.kind == Kind::Demand && self.p.have_block);
        if announced && self.p.urgent && self.p.upload && !self.starved.is_empty() {
            self.fresh.push(job.piece);
        }
        if completed && self.p.upload {
            self.avail[job.piece as usize] += 1;
            let me = c + 1;
            if self.ups[me as usize].unchoked.len() < self.ups[me as usize].slots {
                self.want_fill(me);
            }
        }
    }

    /// Cuts connection `i`'s request to the units already on their way (see
    /// [`SwarmParams::queue`]): the whole units it delivered are credited, the next `queue`
    /// go on (the first may be partly in), the rest are no longer asked for.
    fn truncate(&mut self, c: u32, i: usize) {
        let q = self.p.queue;
        let cl = &mut self.clients[c as usize];
        let Some((id, job)) = cl.conns[i].flow else {
            return;
        };
        if job.mask.count_ones() <= q {
            return;
        }
        let up = cl.conns[i].up;
        let delivered = self.flows.end(id, job.bytes, self.now);
        let first = job.piece * self.upp;
        let (mut done, mut keep, mut dropped) = (0u64, 0u64, 0u64);
        let (mut done_bytes, mut keep_bytes) = (0.0, 0.0);
        let mut m = job.mask;
        while m != 0 {
            let k = m.trailing_zeros();
            m &= m - 1;
            let b = self.unit_bytes(first + k) as f64;
            if done_bytes + b <= delivered {
                done |= 1 << k;
                done_bytes += b;
            } else if keep.count_ones() < q {
                keep |= 1 << k;
                keep_bytes += b;
            } else {
                dropped |= 1 << k;
            }
        }
        let cl = &mut self.clients[c as usize];
        let mut d = dropped;
        while d != 0 {
            let k = d.trailing_zeros();
            d &= d - 1;
            cl.inflight.set(first + k, false);
        }
        if job.urgent {
            self.ups[up as usize].urgent_units -= dropped.count_ones();
        }
        let partial = delivered - done_bytes;
        if keep != 0 {
            let rest = Job {
                mask: keep,
                bytes: (keep_bytes - partial).max(0.0),
                ..job
            };
            self.begin_flow(c, i, up, rest);
        } else {
            // Everything but whole delivered units was dropped (q ≥ 1 keeps at least one
            // unit whenever one is left, so only a fully delivered request gets here).
            self.clients[c as usize].conns[i].flow = None;
            self.flow_ended(up, Job { mask: 0, ..job });
        }
        let credited = Job {
            mask: done,
            bytes: done_bytes,
            ..job
        };
        // Bytes of the partly received unit count as received now; its units when whole.
        self.credit(c, up, credited, delivered, true);
        self.check_waiting(c, false);
    }

    /// Whether `c` holds back new planned and background requests (see
    /// [`SwarmParams::queue`]): a read waits and one of its units is on its way, or asked of a
    /// connection that serves it after its queue.
    fn holds_back(&self, c: u32) -> bool {
        if self.p.queue == 0 {
            return false;
        }
        let cl = &self.clients[c as usize];
        let Some(w) = cl.waiting.clone() else {
            return false;
        };
        w.into_iter().any(|u| {
            !cl.have.get(u)
                && (cl.inflight.get(u) || cl.conns.iter().any(|x| self.has_unit(c, x.up, u)))
        })
    }

    fn cancel(&mut self, c: u32, up: u32, id: FlowId, job: Job) {
        self.flow_ended(up, job);
        let done = self.flows.end(id, job.bytes, self.now);
        self.credit(c, up, job, done, false);
        self.check_waiting(c, false);
    }

    /// A flow finished.
    fn finish(&mut self, id: FlowId) {
        let (c, up) = self.owner[id as usize];
        let cl = &mut self.clients[c as usize];
        let Some(i) = cl
            .conns
            .iter()
            .position(|x| matches!(x.flow, Some((f, _)) if f == id))
        else {
            self.flows.end(id, 0.0, self.now);
            return;
        };
        let (_, job) = cl.conns[i].flow.take().expect("found above");
        self.flow_ended(up, job);
        self.flows.end(id, job.bytes, self.now);
        self.credit(c, up, job, job.bytes, true);
        self.check_waiting(c, job.kind == Kind::Demand);
        // The connection may have been dropped meanwhile (nothing here drops it, but be safe).
        if let Some(i) = self.clients[c as usize]
            .conns
            .iter()
            .position(|x| x.up == up && x.flow.is_none())
        {
            self.pick(c, i);
        }
        // Units of the read that other holders have (an urgent connection ends with its own).
        self.ask_urgently(c);
    }

    /// Whether the seeder injects: clients that do not upload hold nothing for the crowd, so
    /// to them it is a plain seeder (the engine declines only peers that share).
    fn injects(&self) -> bool {
        self.p.inject && self.p.upload
    }

    /// A request from `up` ended: an injecting seeder may send its piece to another client.
    fn flow_ended(&mut self, up: u32, job: Job) {
        if job.urgent {
            self.ups[up as usize].urgent_units -= job.mask.count_ones();
        }
        if up == 0 {
            self.injecting[job.piece as usize] = NOBODY;
        }
    }

    /// Resumes the waiting read if its units are all in: after a round trip if a demanded
    /// request brought them.
    fn check_waiting(&mut self, c: u32, demanded: bool) {
        let cl = &mut self.clients[c as usize];
        // An empty range: its resume is scheduled already.
        let Some(w) = cl.waiting.clone().filter(|w| !w.is_empty()) else {
            return;
        };
        if w.clone().all(|u| cl.have.get(u)) {
            // Leave `waiting` set, empty, until the resume so no second resume is scheduled.
            cl.waiting = Some(0..0);
            let rtt = if demanded { self.p.rtt_us as f64 } else { 0.0 };
            self.push(self.now + rtt, Event::Resume(c));
        }
    }

    fn neighbour_count(&self) -> usize {
        if self.ring == 0 {
            self.clients.len()
        } else {
            2 * self.ring
        }
    }

    /// Client `c`'s `j`-th neighbour (another client), if any.
    fn neighbour(&self, c: u32, j: usize) -> Option<u32> {
        let n = self.clients.len();
        if self.ring == 0 {
            (j != c as usize).then_some(j as u32)
        } else {
            let off = if j < self.ring {
                j + 1
            } else {
                n - (j - self.ring + 1)
            };
            Some(((c as usize + off) % n) as u32)
        }
    }

    /// Index of client `d` among uploader `u`'s neighbours.
    fn slot_of(&self, u: u32, d: u32) -> usize {
        if u == 0 || self.ring == 0 {
            return d as usize;
        }
        let n = self.clients.len();
        let off = (d as usize + n - (u - 1) as usize) % n;
        if off <= self.ring {
            off - 1
        } else {
            self.ring + (n - off) - 1
        }
    }

    fn want_fill(&mut self, u: u32) {
        let up = &mut self.ups[u as usize];
        if up.slots == 0 || up.fill_pending || up.unchoked.len() >= up.slots {
            return;
        }
        up.fill_pending = true;
        self.push(self.now, Event::Fill(u));
    }

    /// Whether client `d` wants something uploader `u` has: what [`Sim::choose`] would take.
    fn interested(&mut self, u: u32, d: u32) -> bool {
        let cl = &self.clients[d as usize];
        if !cl.arrived || cl.left {
            return false;
        }
        if u > 0 {
            let upc = &self.clients[(u - 1) as usize];
            if upc.left || !upc.arrived {
                return false;
            }
        }
        if self.serves_demand(d, u) {
            return true;
        }
        if cl.sched.strategy().fills_background() && !(u == 0 && self.injects()) {
            if u == 0 {
                return cl.pieces_done < self.pieces;
            }
            // A piece the uploader has, the client lacks, and not all of it on the way.
            let upc = &self.clients[(u - 1) as usize];
            for (w, (a, b)) in upc.piece_done.0.iter().zip(&cl.piece_done.0).enumerate() {
                let mut m = a & !b;
                while m != 0 {
                    let p = (w * 64) as u32 + m.trailing_zeros();
                    m &= m - 1;
                    if self
                        .piece_units(p)
                        .any(|x| !cl.have.get(x) && !cl.inflight.get(x))
                    {
                        return true;
                    }
                }
            }
            return false;
        }
        // Demand and plan only: a planned unit in a piece the uploader has.
        let cl = &mut self.clients[d as usize];
        let (have, inflight) = (&cl.have, &cl.inflight);
        cl.sched.plan(
            &|x: u32| have.get(x) || inflight.get(x),
            self.p.window,
            &mut self.plan,
        );
        self.plan
            .iter()
            .any(|&x| self.has_piece(d, u, x / self.upp))
    }

    /// The interested, choked neighbour of `u` that has waited longest.
    fn longest_waiting(&mut self, u: u32) -> Option<u32> {
        let mut best: Option<(u32, f64)> = None;
        let count = if u == 0 {
            self.clients.len()
        } else {
            self.neighbour_count()
        };
        for j in 0..count {
            let d = if u == 0 {
                j as u32
            } else {
                match self.neighbour(u - 1, j) {
                    Some(d) => d,
                    None => continue,
                }
            };
            if self.ups[u as usize].unchoked.contains(&d) || !self.interested(u, d) {
                continue;
            }
            let t = self.ups[u as usize].changed[self.slot_of(u, d)];
            if best.is_none_or(|(_, b)| t < b) {
                best = Some((d, t));
            }
        }
        best.map(|(d, _)| d)
    }

    fn unchoke(&mut self, u: u32, d: u32) {
        let s = self.slot_of(u, d);
        self.ups[u as usize].changed[s] = self.now;
        self.ups[u as usize].unchoked.push(d);
        let cl = &mut self.clients[d as usize];
        if let Some(i) = cl.conns.iter().position(|x| x.up == u) {
            // Its urgent connection takes the slot.
            cl.conns[i].urgent = false;
            if cl.conns[i].flow.is_none() {
                self.pick(d, i);
            }
            return;
        }
        cl.conns.push(Conn {
            up: u,
            flow: None,
            last_piece: None,
            urgent: false,
        });
        let i = cl.conns.len() - 1;
        self.pick(d, i);
    }

    /// `u` chokes `d` (the connection is already gone from `d`'s side) and refills the slot.
    fn choke(&mut self, u: u32, d: u32) {
        let s = self.slot_of(u, d);
        let up = &mut self.ups[u as usize];
        up.changed[s] = self.now;
        up.unchoked.retain(|&x| x != d);
        self.want_fill(u);
    }

    fn fill(&mut self, u: u32) {
        if u > 0 {
            let c = &self.clients[(u - 1) as usize];
            if !c.arrived || c.left {
                return;
            }
        }
        // Chokes inside the loop must not schedule another fill: that would spin at one time.
        self.ups[u as usize].fill_pending = true;
        let mut failures = 0;
        while self.ups[u as usize].unchoked.len() < self.ups[u as usize].slots && failures < 4 {
            let Some(d) = self.longest_waiting(u) else {
                break;
            };
            self.unchoke(u, d);
            if !self.ups[u as usize].unchoked.contains(&d) {
                failures += 1; // it took nothing after all
            }
        }
        self.ups[u as usize].fill_pending = false;
    }

    /// The periodic round: one slot moves from the longest unchoked to the longest waiting.
    fn rechoke(&mut self, u: u32) {
        if u > 0 && self.clients[(u - 1) as usize].left {
            return;
        }
        let full = {
            let up = &self.ups[u as usize];
            up.unchoked.len() >= up.slots && up.slots > 0
        };
        if full {
            if let Some(next) = self.longest_waiting(u) {
                let up = &self.ups[u as usize];
                let old = up
                    .unchoked
                    .iter()
                    .copied()
                    .min_by(|a, b| {
                        let ta = up.changed[self.slot_of(u, *a)];
                        let tb = up.changed[self.slot_of(u, *b)];
                        ta.total_cmp(&tb)
                    })
                    .expect("slots are full");
                let cl = &mut self.clients[old as usize];
                if let Some(i) = cl.conns.iter().position(|x| x.up == u) {
                    let conn = cl.conns.swap_remove(i);
                    if let Some((id, job)) = conn.flow {
                        self.cancel(old, u, id, job);
                    }
                }
                self.choke(u, old);
                self.unchoke(u, next);
                self.kick(old);
            }
        }
        self.fill(u);
        self.push(self.now + self.p.rechoke_us, Event::Rechoke(u));
    }
}

#[cfg(test)]
mod tests;
