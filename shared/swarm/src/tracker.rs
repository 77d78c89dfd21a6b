//! Tracker announces through librqbit-tracker-comms: peers it returns are dialed like
//! `--peer` addresses. HTTP and UDP trackers are supported; the announce reports our real
//! upload/download totals and what is left.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use tracker_comms::{
    TorrentStatsProvider, TrackerComms, TrackerCommsStats, TrackerCommsStatsState, UdpTrackerClient,
};

use super::engine::Shared;
use super::spawn::spawn;

/// What the announces report, read live from the engine.
struct Report(Arc<Shared>);

impl TorrentStatsProvider for Report {
    fn get(&self) -> TrackerCommsStats {
        let s = &self.0;
        let lengths = s.torrent.lengths();
        let have = s.storage.bitmap().count() as u64;
        let total = lengths.total_length();
        TrackerCommsStats {
            uploaded_bytes: s.counters.uploaded.load(Ordering::Relaxed),
            // "left" is computed from this: count verified bytes, not raw traffic.
            downloaded_bytes: (have * lengths.default_piece_length() as u64).min(total),
            total_bytes: total,
            torrent_state: TrackerCommsStatsState::Live,
        }
    }
}

/// Starts announcing to the torrent's trackers; peers found are dialed.
pub(crate) fn start(s: Arc<Shared>) {
    let span = tracing::debug_span!("tracker");
    spawn(&s.tasks.clone(), "tracker", span, run(s));
}

async fn run(s: Arc<Shared>) -> anyhow_free::Result {
    let urls: HashSet<url::Url> = s
        .torrent
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
    let Some(port) = s.listen_addr.map(|a| a.port()) else {
        tracing::warn!("not listening: trackers cannot send peers to us, announcing port 6881");
        return run_with_port(s, urls, 6881).await;
    };
    run_with_port(s, urls, port).await
}

async fn run_with_port(s: Arc<Shared>, urls: HashSet<url::Url>, port: u16) -> anyhow_free::Result {
    let udp = UdpTrackerClient::new(s.cancel.clone(), None)
        .await
        .map_err(|e| format!("udp tracker client: {e:#}"))?;
    let Some(mut peers) = TrackerComms::start(
        s.torrent.info_hash(),
        s.peer_id,
        urls,
        Box::new(Report(s.clone())),
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
                Some(addr) => super::engine::add_dialer(&s, addr),
                None => return Ok(()),
            },
            _ = s.cancel.cancelled() => return Ok(()),
        }
    }
}

/// Errors of the tracker task are only logged: a dead tracker must not stop the swarm.
mod anyhow_free {
    pub type Result = std::result::Result<(), String>;
}
