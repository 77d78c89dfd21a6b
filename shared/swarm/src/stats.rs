//! Progress and traffic figures, for progress bars and reports.

use std::net::SocketAddr;
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
}

/// Engine-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
    pub wasted: AtomicU64,
    pub hash_failures: AtomicU32,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
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
    /// Payload bytes received (including wasted ones).
    pub downloaded: u64,
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Payload bytes received and thrown away (duplicates, corrupt pieces, unrequested blocks).
    pub wasted: u64,
    /// Pieces that failed verification.
    pub hash_failures: u32,
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
        if self.connected > 0 {
            return format!("{} peer(s) connected", self.connected);
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
            "no peer connected yet".into()
        } else {
            format!("no reachable peer, retrying: {}", failing.join(", "))
        }
    }
}
