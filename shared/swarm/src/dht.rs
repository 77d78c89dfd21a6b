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
//!   network. librqbit-dht puts a node into its routing table only when another node's response
//!   names it (`on_request_start` of its `find_node` recursion): never the bootstrap node it
//!   queried (queried with no id), never a node that queries it. Against the public routers that
//!   is enough, as they answer with hundreds of nodes; in a private DHT every table starts empty
//!   and stays empty, so `get_peers` has nobody to ask. So the given bootstrap nodes go into the
//!   starting routing table ([`seeded_tables`]), under a stand-in id that starts with the
//!   info-hash's prefix like ours (their real id is unknown until they answer, and the table
//!   cannot be changed from outside afterwards): searched first, and announced to. The table
//!   holds them from the start, so nodes may start in any order; an unreachable one is retried
//!   by every search round.
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
/// librqbit-dht's own routing table size (`RoutingTable::DEFAULT_MAX_SIZE`).
const ROUTING_TABLE_SIZE: usize = 512;
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

/// The librqbit-dht settings of node `id` serving `info_hash`, listening on `listen_addr`, joining
/// through `bootstrap` (resolved: `seeds`).
fn node_config(
    listen_addr: SocketAddr,
    id: Id20,
    info_hash: Id20,
    bootstrap: &[String],
    seeds: &[SocketAddr],
    cancel: &CancellationToken,
) -> Result<NodeConfig<'static>, String> {
    let mut node = NodeConfig {
        peer_id: Some(id),
        bootstrap_addrs: (!bootstrap.is_empty()).then(|| bootstrap.to_vec()),
        listen_addr: Some(listen_addr),
        cancellation_token: Some(cancel.child_token()),
        ..Default::default()
    };
    seeded_tables(&mut node, id, info_hash, seeds)?;
    Ok(node)
}

/// Gives `node` routing tables (IPv4 and IPv6) that hold the bootstrap nodes `seeds`, each under
/// a stand-in id with the info-hash's prefix (see the module doc).
///
/// librqbit-dht exports no name for its routing table type, only the `DhtConfig` fields and its
/// serde form: an empty table is deserialized (the one-leaf form `RoutingTable::new` makes) and
/// filled with its public `add_node`. A change of that form in another librqbit-dht version is
/// an error here, and the unit test below catches it.
fn seeded_tables(
    node: &mut NodeConfig<'_>,
    own: Id20,
    info_hash: Id20,
    seeds: &[SocketAddr],
) -> Result<(), String> {
    let empty = || {
        serde_json::json!({
            "id": own.as_string(),
            "size": 0,
            "buckets": {
                "data": [{
                    "bits": 160,
                    "start": Id20::new([0; 20]).as_string(),
                    "end_inclusive": Id20::new([0xff; 20]).as_string(),
                    "data": { "Leaf": { "nodes": [] } },
                }],
                "size": 0,
                "max_size": ROUTING_TABLE_SIZE,
            },
        })
    };
    let error = |e: serde_json::Error| format!("dht: cannot make a routing table: {e}");
    node.routing_table = Some(serde_json::from_value(empty()).map_err(error)?);
    node.routing_table_v6 = Some(serde_json::from_value(empty()).map_err(error)?);
    for &addr in seeds {
        let table = match addr {
            SocketAddr::V4(_) => node.routing_table.as_mut(),
            SocketAddr::V6(_) => node.routing_table_v6.as_mut(),
        };
        if let Some(table) = table {
            table.add_node(node_id(info_hash), addr);
        }
    }
    Ok(())
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
    let id = node_id(info_hash);
    let mut seeds = Vec::new();
    for host in &config.bootstrap {
        match tokio::net::lookup_host(host.as_str()).await {
            Ok(addrs) => seeds.extend(addrs),
            // librqbit-dht's own bootstrap keeps retrying it.
            Err(e) => tracing::warn!("dht: cannot resolve bootstrap node {host}: {e}"),
        }
    }
    let node_config = |listen_addr: SocketAddr| {
        node_config(
            listen_addr,
            id,
            info_hash,
            &config.bootstrap,
            &seeds,
            &cancel,
        )
    };
    // Dual-stack where the system has IPv6; IPv4 alone where it does not.
    let dht = match DhtState::with_config(node_config((Ipv6Addr::UNSPECIFIED, config.port).into())?)
        .await
    {
        Ok(dht) => dht,
        Err(v6) => DhtState::with_config(node_config((Ipv4Addr::UNSPECIFIED, config.port).into())?)
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

    /// Three nodes on loopback, as `--dht-bootstrap` joins them: a seeder and a client that know
    /// only the hub's address. The seeder's search announces its port to the hub; the client's
    /// search finds it there. Without the seeded routing tables no node ever has anybody to ask.
    #[tokio::test]
    async fn a_private_dht_of_three_nodes_finds_an_announced_peer() {
        const PORT: u16 = 43_210;
        let info_hash = Id20::new(rand::random());
        let cancel = CancellationToken::new();
        let _stop = cancel.clone().drop_guard();
        let free = || {
            std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|s| s.local_addr())
                .unwrap()
        };
        let (hub, seeder, client) = (free(), free(), free());
        let start = |at: SocketAddr, via: SocketAddr| {
            let config = node_config(
                at,
                node_id(info_hash),
                info_hash,
                &[via.to_string()],
                &[via],
                &cancel,
            )
            .unwrap();
            DhtState::with_config(config)
        };
        // The seeder first: the hub it joins through is not up yet.
        let seeder = start(seeder, hub).await.unwrap();
        let mut announce = seeder.get_peers(info_hash, Some(PORT));
        let _hub = start(hub, seeder.listen_addr()).await.unwrap();
        let client = start(client, hub).await.unwrap();
        let mut search = client.get_peers(info_hash, None);
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                tokio::select! {
                    Some(addr) = search.next() => if addr.port() == PORT { return addr },
                    _ = announce.next() => {}
                }
            }
        })
        .await
        .expect("the client found the announced peer through the hub");
        assert_eq!(found, SocketAddr::from((Ipv4Addr::LOCALHOST, PORT)));
    }

    #[test]
    fn the_bootstrap_nodes_are_in_the_starting_routing_tables() {
        let info_hash = Id20::new([0x5a; 20]);
        let seeds: [SocketAddr; 3] = [
            "127.0.0.1:1".parse().unwrap(),
            "10.0.0.2:2".parse().unwrap(),
            "[::1]:3".parse().unwrap(),
        ];
        let node = node_config(
            (Ipv4Addr::LOCALHOST, 0).into(),
            node_id(info_hash),
            info_hash,
            &[],
            &seeds,
            &CancellationToken::new(),
        )
        .unwrap();
        let v4 = node.routing_table.as_ref().unwrap();
        let v6 = node.routing_table_v6.as_ref().unwrap();
        assert_eq!((v4.len(), v6.len()), (2, 1));
        let mut got: Vec<SocketAddr> = v4.iter().chain(v6.iter()).map(|n| n.addr()).collect();
        got.sort();
        let mut want = seeds.to_vec();
        want.sort();
        assert_eq!(got, want);
        for n in v4.iter().chain(v6.iter()) {
            assert_eq!(
                n.id().0[..ID_PREFIX],
                info_hash.0[..ID_PREFIX],
                "announced to"
            );
        }
    }

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
