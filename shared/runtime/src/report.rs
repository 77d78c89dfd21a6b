//! The runtime's snapshot for progress bars, the `--status` endpoint and the exit report.

use serde::{Deserialize, Serialize};
use vmt_fs::{ReadStatsSnapshot, Waiting, COARSE_BOUNDS_US};
use vmt_swarm::{WastedBytes, WebSeedStats};

/// Block numbers listed for the oldest parked read: enough to see which file or range it is,
/// few enough for a status line.
const LISTED_BLOCKS: usize = 64;

impl From<ReadStatsSnapshot> for StallSummary {
    fn from(r: ReadStatsSnapshot) -> StallSummary {
        let s = r.stalls;
        StallSummary {
            count: s.count,
            total_s: s.total.as_secs_f64(),
            p50_s: s.p50.as_secs_f64(),
            p99_s: s.p99.as_secs_f64(),
            max_s: s.max.as_secs_f64(),
            below: COARSE_BOUNDS_US
                .iter()
                .zip(s.below)
                .map(|(&us, n)| (us as f64 / 1e6, n))
                .collect(),
            timed_out: r.timed_out,
            interrupted: r.interrupted,
            failed_at_shutdown: r.failed_at_shutdown,
        }
    }
}

impl From<Waiting> for OldestParked {
    fn from(w: Waiting) -> OldestParked {
        OldestParked {
            waited_s: w.parked_at.elapsed().as_secs_f64(),
            missing: w.units.len(),
            missing_blocks: w.units.into_iter().take(LISTED_BLOCKS).collect(),
        }
    }
}

/// The longest wait going on: how long, and for which blocks.
#[derive(Clone, Debug, Serialize)]
pub struct OldestParked {
    /// Seconds it has waited so far.
    pub waited_s: f64,
    /// Blocks it still waits for.
    pub missing: usize,
    /// The first of them (at most 64), ascending.
    pub missing_blocks: Vec<u32>,
}

/// Stalls: reads parked on missing blocks, from the FUSE request to its reply, however they
/// were answered.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StallSummary {
    /// Parked reads answered: with data, or with an error (the three counts below).
    pub count: u64,
    /// Their total waiting time, seconds.
    pub total_s: f64,
    /// Median wait, seconds.
    pub p50_s: f64,
    /// 99th-percentile wait, seconds.
    pub p99_s: f64,
    /// Longest wait, seconds.
    pub max_s: f64,
    /// Coarse buckets, ascending: (bound in seconds, waits shorter than it), cumulative;
    /// exact, counted in the same pass as `count` (the Prometheus histogram).
    pub below: Vec<(f64, u64)>,
    /// Reads answered `EIO` by `--read-timeout`.
    pub timed_out: u64,
    /// Reads whose process was killed while they waited.
    pub interrupted: u64,
    /// Reads answered `EIO` at shutdown, still waiting then.
    pub failed_at_shutdown: u64,
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
    /// Blocks and pieces from it that failed verification.
    pub hash_failures: u32,
    /// Whether it was banned for sending corrupt data.
    pub banned: bool,
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
    /// Blocks present (verified alone or in their piece): readable.
    pub blocks_present: u32,
    /// Blocks in the image.
    pub blocks_total: u32,
    /// Whether blocks are verified alone (the torrent has a block-hash table), so a read
    /// waits for its blocks only, not for whole pieces.
    pub blocks_verified_alone: bool,
    /// FUSE reads served from local pieces at once.
    pub read_hits: u64,
    /// FUSE reads that had to wait for missing blocks.
    pub read_misses: u64,
    /// FUSE writes (into the overlay).
    pub writes: u64,
    /// Reads waiting now.
    pub parked_now: usize,
    /// The longest wait going on, if any.
    pub oldest_parked: Option<OldestParked>,
    /// Stalls so far.
    pub stalls: StallSummary,
    /// The most believed profile now, and its belief.
    pub profile: Option<(String, f64)>,
    /// Profile switches so far.
    pub profile_switches: Vec<ProfileSwitch>,
    /// Payload bytes downloaded (fetched), wasted ones included: `useful + wasted`.
    pub downloaded: u64,
    /// Payload bytes that made a block present.
    pub useful: u64,
    /// Of `downloaded`: bytes from web seeds (HTTP origins, BEP 19), which cost their owner;
    /// the rest came from peers.
    pub origin_downloaded: u64,
    /// Of `useful`: bytes web seeds made present.
    pub origin_useful: u64,
    /// Each web seed and how it serves (state, bytes, verification failures).
    pub web_seeds: Vec<WebSeedStats>,
    /// Payload bytes received and thrown away.
    pub wasted: u64,
    /// The wasted bytes by cause: where the download's overhead went.
    pub wasted_by: WastedBytes,
    /// Blocks and pieces that failed verification.
    pub hash_failures: u32,
    /// Addresses banned for sending corrupt data.
    pub banned: Vec<String>,
    /// Peers evicted because they gave nothing while a newcomer waited for a slot.
    pub peers_evicted: u64,
    /// Why fetching stopped (local storage failed: reads of missing data fail), if it did.
    pub failure: Option<String>,
    /// Payload bytes uploaded.
    pub uploaded: u64,
    /// Pieces an injecting seeder declined us (`vmt_elsewhere`): each costs a read that
    /// needs the piece a fetch from a peer, or a retry.
    pub declines_received: u64,
    /// Urgent requests sent to peers that choked us (blocks a reader waited for).
    pub urgent_asked: u64,
    /// Urgent requests served to peers we choked.
    pub urgent_served: u64,
    /// Urgent requests answered busy (our backlog of them was long).
    pub busy_sent: u64,
    /// Busy answers got to our urgent requests.
    pub busy_received: u64,
    /// Peers connected now.
    pub peers_connected: usize,
    /// Per peer.
    pub peers: Vec<PeerTraffic>,
    /// Human status of the peer connections ("no reachable peer: ...").
    pub peer_status: String,
    /// Blocks held by the copy-on-write overlay.
    pub overlay_blocks: u64,
    /// At exit, how the mount went away: `clean`; `lazy` (something held the image open, so
    /// it was detached and ends when they let go); `gone` (unmounted by someone else); or
    /// `failed: ...`. `None` while mounted.
    pub unmount: Option<String>,
    /// At exit, whether the filesystem was still in use elsewhere when the process gave up
    /// waiting (a copy of the mount in another mount namespace, the holders of a lazy
    /// detach): it ends with the process.
    pub fuse_left_behind: bool,
}
