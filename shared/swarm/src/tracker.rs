//! Tracker announces through librqbit-tracker-comms. HTTP and UDP trackers are supported; the
//! announce reports our real upload total and what is left. Peers it returns are handed to the
//! engine over a channel and dialed like `--peer` addresses: address sources never call into
//! the engine. A starved client announces again early (see [`crate::reannounce`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use librqbit_core::hash_id::Id20;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracker_comms::{
    TorrentStatsProvider, TrackerComms, TrackerCommsStats, TrackerCommsStatsState, UdpTrackerClient,
};

use crate::peers::PeerRegistry;
use crate::reannounce::{Reannounce, CHECK_EVERY};
use crate::state::TorrentState;

/// The port announced when we do not listen. BEP 3 defines `port` as the port we listen on;
/// we listen on none, so we say 0 rather than invent one: a made-up port (librqbit's default
/// 6881) makes trackers hand out an address nobody serves, or someone else's client.
/// opentracker (checked: Debian's, on loopback) accepts 0, counts us in the swarm and lists us
/// as `IP:0`, an address that stock clients and our own dialer skip. A tracker that refuses
/// port 0 gives a non-listening client no peers; librqbit-tracker-comms then retries it with
/// backoff.
pub(crate) const NOT_LISTENING: u16 = 0;

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
/// `found`. While the client lacks pieces and no connected peer feeds it, it announces again
/// before the tracker's interval, with [`Reannounce`]'s backoff. Errors are returned for
/// logging only: a dead tracker must not stop the swarm.
///
/// An early announce restarts librqbit-tracker-comms, which announces to every tracker
/// (HTTP and UDP) at once and then waits the tracker's interval (HTTP: its `min interval` if
/// given) from there: the regular announces do not pile up on top of the early ones. That
/// crate hides the response's intervals, so the early waits are ours alone ([`Reannounce`]);
/// the restarted HTTP announce carries `event=started` again, which trackers take as a
/// plain announce.
pub(crate) async fn announce(
    state: Arc<TorrentState>,
    registry: Arc<PeerRegistry>,
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
        tracing::info!("not listening: announcing port {NOT_LISTENING}, peers cannot dial us");
        NOT_LISTENING
    });
    let udp = UdpTrackerClient::new(cancel.clone(), None)
        .await
        .map_err(|e| format!("udp tracker client: {e:#}"))?;
    let http = reqwest::Client::new();
    let start = || {
        TrackerComms::start(
            state.torrent().info_hash(),
            our_id,
            urls.clone(),
            Box::new(Report(state.clone())),
            None,
            port,
            http.clone(),
            udp.clone(),
        )
    };
    let Some(mut peers) = start() else {
        return Ok(());
    };
    let mut early = Reannounce::new(Instant::now());
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            addr = peers.next() => match addr {
                // Port 0 is a peer that does not listen (as we announce ourselves then).
                Some(addr) if addr.port() == 0 => {}
                Some(addr) => {
                    if found.send(addr).is_err() {
                        return Ok(());
                    }
                }
                None => return Ok(()),
            },
            _ = check.tick() => {
                let starved = !state.storage().is_complete() && !registry.any_feeds_us();
                if early.due(Instant::now(), starved) {
                    tracing::info!("starved: announcing again before the tracker's interval");
                    if let Some(p) = start() {
                        peers = p;
                    }
                }
            }
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}
