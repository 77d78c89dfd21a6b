//! Tracker announces through librqbit-tracker-comms. HTTP and UDP trackers are supported; the
//! announce reports our real upload total and what is left. Peers it returns are handed to the
//! engine over a channel and dialed like `--peer` addresses: address sources never call into
//! the engine.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use librqbit_core::hash_id::Id20;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracker_comms::{
    TorrentStatsProvider, TrackerComms, TrackerCommsStats, TrackerCommsStatsState, UdpTrackerClient,
};

use crate::state::TorrentState;

/// What the announces report, read live from the torrent state.
struct Report(Arc<TorrentState>);

impl TorrentStatsProvider for Report {
    fn get(&self) -> TrackerCommsStats {
        let s = &self.0;
        let lengths = s.torrent().lengths();
        let have = s.storage().bitmap().count() as u64;
        let total = lengths.total_length();
        TrackerCommsStats {
            uploaded_bytes: s.counters().uploaded.load(Ordering::Relaxed),
            // "left" is computed from this: count verified bytes, not raw traffic.
            downloaded_bytes: (have * lengths.default_piece_length() as u64).min(total),
            total_bytes: total,
            torrent_state: TrackerCommsStatsState::Live,
        }
    }
}

/// Announces to the torrent's trackers until `cancel`; every peer address found goes to
/// `found`. Errors are returned for logging only: a dead tracker must not stop the swarm.
pub(crate) async fn announce(
    state: Arc<TorrentState>,
    our_id: Id20,
    listen_port: Option<u16>,
    cancel: CancellationToken,
    found: UnboundedSender<SocketAddr>,
) -> Result<(), String> {
    let urls: HashSet<url::Url> = state
        .torrent()
        .trackers()
        .iter()
        .filter_map(|t| match url::Url::parse(t) {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::warn!("ignoring tracker {t:?}: {e}");
                None
            }
        })
        .collect();
    let port = listen_port.unwrap_or_else(|| {
        tracing::warn!("not listening: trackers cannot send peers to us, announcing port 6881");
        6881
    });
    let udp = UdpTrackerClient::new(cancel.clone(), None)
        .await
        .map_err(|e| format!("udp tracker client: {e:#}"))?;
    let Some(mut peers) = TrackerComms::start(
        state.torrent().info_hash(),
        our_id,
        urls,
        Box::new(Report(state.clone())),
        None,
        port,
        reqwest::Client::new(),
        udp,
    ) else {
        return Ok(());
    };
    loop {
        tokio::select! {
            addr = peers.next() => match addr {
                Some(addr) => {
                    if found.send(addr).is_err() {
                        return Ok(());
                    }
                }
                None => return Ok(()),
            },
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}
