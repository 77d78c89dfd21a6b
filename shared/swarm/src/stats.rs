//! Progress and traffic figures, for progress bars and reports.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use serde::Serialize;

use crate::picker::PieceCounts;

/// Lifetime counters of one remote peer (by peer id), kept after it disconnects.
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
    pub hash_failures: AtomicU32,
    pub connected: AtomicBool,
    pub banned: AtomicBool,
    /// Its last connection's payload is RC4 (MSE).
    pub encrypted: AtomicBool,
}

/// Engine-wide counters. Every downloaded byte ends in one of the classes below it (see
/// the `download` module doc).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub downloaded: AtomicU64,
    pub useful: AtomicU64,
    pub duplicate: AtomicU64,
    pub corrupt: AtomicU64,
    pub unrequested: AtomicU64,
    pub abandoned: AtomicU64,
    pub uploaded: AtomicU64,
    pub hash_failures: AtomicU32,
    /// Of `downloaded`: received from web seeds (BEP 19 origins).
    pub origin_downloaded: AtomicU64,
    /// Of `useful`: made present by web seeds.
    pub origin_useful: AtomicU64,
    /// Block requests we declined as an injecting seeder (`vmt_elsewhere`).
    pub declined: AtomicU64,
    /// Pieces an injecting seeder declined us.
    pub declines: AtomicU64,
    /// Urgent requests we sent to peers that choked us (`vmt_urgent`).
    pub urgent_asked: AtomicU64,
    /// Urgent requests we queued for peers we choked.
    pub urgent_served: AtomicU64,
    /// Urgent requests we answered busy (`vmt_busy`).
    pub busy_sent: AtomicU64,
    /// Busy answers we got.
    pub busy_received: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn wasted(&self) -> WastedBytes {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WastedBytes {
            duplicate: get(&self.duplicate),
            corrupt: get(&self.corrupt),
            unrequested: get(&self.unrequested),
            abandoned: get(&self.abandoned),
        }
    }
}

/// Payload bytes received and thrown away, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WastedBytes {
    /// Blocks present or received already when they arrived: urgent and endgame copies,
    /// withdrawn requests answered anyway, pieces completed over another connection.
    pub duplicate: u64,
    /// Blocks or pieces that failed their hash.
    pub corrupt: u64,
    /// Blocks nothing asked for, or whose request was given up (choke, cancel).
    pub unrequested: u64,
    /// Blocks received and then lost unverified: a piece given up without a block-hash
    /// table, or data that could not be written after a storage failure.
    pub abandoned: u64,
}

impl WastedBytes {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.duplicate + self.corrupt + self.unrequested + self.abandoned
    }
}

/// One remote peer's figures.
#[derive(Clone, Debug, Serialize)]
pub struct PeerStats {
    /// Its 20-byte peer id.
    pub peer_id: [u8; 20],
    /// Address of its last connection.
    pub addr: SocketAddr,
    /// Whether it is connected now.
    pub connected: bool,
    /// Payload bytes of verified-or-not blocks received from it.
    pub downloaded: u64,
    /// Payload bytes sent to it.
    pub uploaded: u64,
    /// Pieces from it that failed verification.
    pub hash_failures: u32,
    /// Whether it was banned for sending corrupt data.
    pub banned: bool,
    /// Whether its last connection's payload was RC4-encrypted (MSE with `crypto_select`
    /// RC4); an MSE handshake that selected plaintext counts as not encrypted.
    pub encrypted: bool,
}

/// State of an address the engine dials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum DialState {
    /// First attempt in progress.
    Connecting,
    /// A connection is up.
    Connected,
    /// The last attempt failed; retrying.
    Failed(String),
    /// Not redialed: it is us, or it was banned.
    Given(String),
}

/// A dialed address and how it goes.
#[derive(Clone, Debug, Serialize)]
pub struct DialStatus {
    /// The address.
    pub addr: SocketAddr,
    /// Its state.
    pub state: DialState,
    /// Connection attempts so far.
    pub attempts: u32,
}

/// A snapshot of the engine's progress and traffic.
/// Serializable, e.g. as JSON for a status endpoint.
#[derive(Clone, Debug, Serialize)]
pub struct SwarmStats {
    /// Pieces per state.
    pub pieces: PieceCounts,
    /// Number of pieces in the torrent.
    pub total_pieces: u32,
    /// Bytes in verified pieces.
    pub have_bytes: u64,
    /// Blocks present (verified alone or in their piece): what readers can read.
    pub blocks_present: u32,
    /// Number of blocks in the torrent.
    pub total_blocks: u32,
    /// Bytes in present blocks.
    pub present_bytes: u64,
    /// Payload bytes received (including wasted ones): `useful + wasted`, once no block is
    /// buffered in a connection any more.
    pub downloaded: u64,
    /// Payload bytes that made a block present.
    pub useful: u64,
    /// Of `downloaded`: payload bytes received from web seeds (HTTP origins), which cost
    /// their owner; the rest came from peers.
    pub origin_downloaded: u64,
    /// Of `useful`: bytes web seeds made present.
    pub origin_useful: u64,
    /// Each web seed (BEP 19 origin) and how it serves.
    pub web_seeds: Vec<WebSeedStats>,
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Payload bytes received and thrown away: `wasted_by.total()`.
    pub wasted: u64,
    /// The wasted bytes by cause.
    pub wasted_by: WastedBytes,
    /// Blocks and pieces that failed verification.
    pub hash_failures: u32,
    /// Addresses banned for sending corrupt data.
    pub banned: Vec<IpAddr>,
    /// Peers evicted because they gave nothing while a newcomer waited for a slot.
    pub evicted: u64,
    /// Block requests we declined as an injecting seeder: the crowd held the piece.
    pub declined_requests: u64,
    /// Pieces an injecting seeder declined us (we fetched them from peers).
    pub declines_received: u64,
    /// Urgent requests we sent to peers that choked us: blocks a reader waited for.
    pub urgent_asked: u64,
    /// Urgent requests we served to peers we choked.
    pub urgent_served: u64,
    /// Urgent requests we answered busy: our backlog of them was long (see `busy.rs`).
    pub busy_sent: u64,
    /// Busy answers we got to our urgent requests.
    pub busy_received: u64,
    /// Why the engine stopped fetching (local storage failed), if it did.
    pub failure: Option<String>,
    /// Connected peers.
    pub connected: usize,
    /// Every peer seen, by peer id.
    pub peers: Vec<PeerStats>,
    /// Every dialed address.
    pub dials: Vec<DialStatus>,
}

impl SwarmStats {
    /// Bytes downloaded from peers other than `peer_id`.
    pub fn downloaded_except(&self, peer_id: &[u8; 20]) -> u64 {
        self.peers
            .iter()
            .filter(|p| &p.peer_id != peer_id)
            .map(|p| p.downloaded)
            .sum()
    }

    /// A one-line status for humans, e.g. for the "no reachable peer" case.
    pub fn peer_status(&self) -> String {
        let origins = self.origin_status();
        if self.connected > 0 {
            return format!("{} peer(s) connected{origins}", self.connected);
        }
        if !origins.is_empty() && self.dials.is_empty() {
            return origins.trim_start_matches(", ").to_owned();
        }
        let failing: Vec<String> = self
            .dials
            .iter()
            .filter_map(|d| match &d.state {
                DialState::Failed(e) => Some(format!("{} ({e}, {} attempts)", d.addr, d.attempts)),
                _ => None,
            })
            .collect();
        if failing.is_empty() {
            format!("no peer connected yet{origins}")
        } else {
            format!(
                "no reachable peer, retrying: {}{origins}",
                failing.join(", ")
            )
        }
    }

    /// ", web seed: 12.0 MiB (2 of 3 banned)"-like, or empty without web seeds.
    fn origin_status(&self) -> String {
        if self.web_seeds.is_empty() {
            return String::new();
        }
        let mib = self.origin_downloaded as f64 / (1 << 20) as f64;
        let banned = self
            .web_seeds
            .iter()
            .filter(|w| matches!(w.state, OriginState::Banned(_)))
            .count();
        let retrying = self.web_seeds.iter().find_map(|w| match &w.state {
            OriginState::Retrying(e) => Some(e.as_str()),
            _ => None,
        });
        let mut s = format!(", web seed {mib:.1} MiB");
        if banned > 0 {
            s.push_str(&format!(" ({banned} of {} banned)", self.web_seeds.len()));
        }
        if let Some(e) = retrying {
            s.push_str(&format!(" (retrying: {e})"));
        }
        s
    }
}

/// What an origin is doing, for status displays.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum OriginState {
    /// Serving, or idle.
    Ok,
    /// The last request failed; retrying after a pause.
    Retrying(String),
    /// Never asked again, for this reason.
    Banned(String),
}

/// One origin's figures.
#[derive(Clone, Debug, Serialize)]
pub struct WebSeedStats {
    /// The URL requested (a directory URL with the torrent's name appended).
    pub url: String,
    /// Payload bytes received from it (verified or not).
    pub downloaded: u64,
    /// Bytes of it that made blocks present.
    pub useful: u64,
    /// Ranges from it that failed verification.
    pub hash_failures: u32,
    /// Its state.
    pub state: OriginState,
}
