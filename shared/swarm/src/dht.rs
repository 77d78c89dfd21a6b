//! Peer discovery through the mainline DHT (BEP 5), opt-in ([`DhtConfig`]). The node searches
//! the torrent's info-hash and hands every peer found to the engine over the same channel the
//! trackers use, so they are dialed like `--peer` addresses; when the engine listens, every
//! search also announces that port (never a port nobody serves).
//!
//! On `librqbit-dht` (rqbit's DHT, the same project and version as the peer-protocol crates
//! the engine is built on): a maintained, tokio-native BEP 5 node with a routing table, token
//! handling, a peer store (so a vmt node also answers other nodes' searches), and a
//! `get_peers` stream that re-queries the closest nodes by itself (every minute, sooner while
//! the routing table is small). It is already in the lock file through librqbit. The
//! `mainline` crate was the alternative; it brings its own thread and BEP 44 crypto vmt does not
//! need.
//!
//! Two things make a private DHT of a few nodes work with it:
//! - **Node id.** librqbit-dht announces only to nodes whose id is within 2^-16 of the
//!   info-hash, and stores announces only for info-hashes within 2^-20 of its own id: right in
//!   a DHT of millions of nodes, where the closest ones always are that close, never true in a
//!   private DHT of three. A vmt node serves one torrent, so its id starts with the
//!   info-hash's first [`ID_PREFIX`] bytes (the rest random): every vmt node of a swarm is
//!   one of the few nodes that store its peers, in a private DHT and in the public one. (BEP 42,
//!   which ties ids to IP addresses, is not enforced by librqbit-dht nor by most nodes; a node
//!   that enforces it only ignores us as a storer, it still answers our searches.)
//! - **Bootstrap.** `--dht-bootstrap` replaces the public routers, so nothing leaves a private
//!   network. librqbit-dht retries an unreachable bootstrap node with backoff, so nodes may
//!   start in any order.
//!
//! Starved (no peer connected and pieces missing), the engine starts the search again every
//! [`STARVED_RESEARCH`] instead of waiting for the stream's minute.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use librqbit_core::hash_id::Id20;
use librqbit_dht::{DhtConfig as NodeConfig, DhtState};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::peers::PeerRegistry;
use crate::state::TorrentState;

/// Bytes of the info-hash a vmt node's id starts with: 4 (32 bits) is past both of
/// librqbit-dht's distance thresholds (16 bits to announce, 20 to store), with 128 random bits
/// left so that nodes of one swarm still differ.
const ID_PREFIX: usize = 4;
/// How often a starved engine restarts the search (a fresh lookup of the closest nodes, and an
/// announce), rather than the stream's own minute.
const STARVED_RESEARCH: Duration = Duration::from_secs(5);

/// The DHT node's settings; `EngineConfig::dht`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhtConfig {
    /// UDP port of the node (all addresses, IPv6 and IPv4 where the system allows); 0 picks a
    /// free one.
    pub port: u16,
    /// Nodes to join through, as HOST:PORT; empty means the public routers
    /// (`dht.transmissionbt.com`, `dht.libtorrent.org`).
    pub bootstrap: Vec<String>,
}

/// A node id for serving `info_hash`: its first [`ID_PREFIX`] bytes, then random bytes.
fn node_id(info_hash: Id20) -> Id20 {
    let mut id: [u8; 20] = rand::random();
    id[..ID_PREFIX].copy_from_slice(&info_hash.0[..ID_PREFIX]);
    Id20::new(id)
}

/// Starts the node (an error if its port cannot be bound), then searches (and announces
/// `listen_port`) until `cancel`; every peer address found goes to `found`.
pub(crate) async fn run(
    state: Arc<TorrentState>,
    peers: Arc<PeerRegistry>,
    config: DhtConfig,
    listen_port: Option<u16>,
    cancel: CancellationToken,
    found: UnboundedSender<SocketAddr>,
) -> Result<(), String> {
    let info_hash = state.torrent().info_hash();
    let node_config = |listen_addr: SocketAddr| NodeConfig {
        peer_id: Some(node_id(info_hash)),
        bootstrap_addrs: (!config.bootstrap.is_empty()).then(|| config.bootstrap.clone()),
        listen_addr: Some(listen_addr),
        cancellation_token: Some(cancel.child_token()),
        ..Default::default()
    };
    // Dual-stack where the system has IPv6; IPv4 alone where it does not.
    let dht = match DhtState::with_config(node_config((Ipv6Addr::UNSPECIFIED, config.port).into()))
        .await
    {
        Ok(dht) => dht,
        Err(v6) => DhtState::with_config(node_config((Ipv4Addr::UNSPECIFIED, config.port).into()))
            .await
            .map_err(|e| {
                let e = format!(
                    "dht: cannot listen on UDP port {}: {e:#} ({v6:#})",
                    config.port
                );
                tracing::warn!("{e}; running without the DHT");
                e
            })?,
    };
    tracing::info!(
        "dht node on UDP {}, announcing {}",
        dht.listen_addr(),
        listen_port.map_or("nothing (not listening)".into(), |p| format!(
            "TCP port {p}"
        ))
    );
    loop {
        let mut search = dht.get_peers(info_hash, listen_port);
        let mut research = tokio::time::interval(STARVED_RESEARCH);
        research.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                addr = search.next() => match addr {
                    Some(addr) => {
                        tracing::debug!("dht: peer {addr}");
                        if found.send(addr).is_err() {
                            return Ok(());
                        }
                    }
                    None => return Err("dht: the search ended".into()),
                },
                _ = research.tick() => {
                    let complete = state.storage().bitmap().count()
                        == state.layout().pieces();
                    if peers.live() == 0 && !complete {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_shares_the_info_hash_prefix_and_nothing_more() {
        let hash = Id20::new([0xab; 20]);
        let (a, b) = (node_id(hash), node_id(hash));
        assert_eq!(a.0[..ID_PREFIX], hash.0[..ID_PREFIX]);
        assert_ne!(a, b, "nodes of one swarm differ");
        // Within librqbit-dht's thresholds: 16 bits to be announced to, 20 to store.
        let store = Id20::new([
            0x00, 0x00, 0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        assert!(hash.distance(&a) <= store);
    }
}
