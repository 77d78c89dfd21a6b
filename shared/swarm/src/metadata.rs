//! A torrent from a magnet link: the info dictionary fetched from peers over ut_metadata
//! (BEP 9), and, when it pins one, vmt's block-hash table over `vmt_block_hashes`
//! ([`crate::table_exchange`]).
//!
//! Peers are asked one at a time, in the order they are learned (the link's `x.pe` and the
//! caller's peers first, then what the link's trackers return), each dialed through the
//! engine's handshake (`connection::handshake`: MSE or plain as the policy says, one redial in
//! the other form). A peer is dropped, and the
//! next one asked, when it does not speak the extension, rejects a piece, sends a piece of the
//! wrong size, a dictionary of another size than announced or one that does not hash to the
//! info hash, or a table that does not hash to the root its info dictionary pins. Both are
//! bounded: the info dictionary by [`MAX_METADATA_SIZE`], the table by the image length the
//! (verified) info dictionary gives. Requests are pipelined a few at a time, under the serving
//! side's queue bound.
//!
//! A table no peer serves within [`TABLE_WAIT`] of the info dictionary (the peers are stock
//! clients: they have the info dictionary, not vmt's table) is done without: the torrent is
//! marked so, and its blocks are verified with their whole piece, as a stock torrent's.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use librqbit_core::hash_id::Id20;
use peer_binary_protocol::extended::ut_metadata::UtMetadata;
use peer_binary_protocol::extended::{ExtendedMessage, PeerExtendedMessageIds};
use peer_binary_protocol::{Handshake, Message, MessageDeserializeError, MAX_MSG_LEN};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracker_comms::{
    TorrentStatsProvider, TrackerComms, TrackerCommsStats, TrackerCommsStatsState, UdpTrackerClient,
};

use crate::connection::{compact, handshake, Side};
use crate::digest::sha1;
use crate::error::{PeerError, SwarmError};
use crate::extension::encode_handshake;
use crate::mse::Encryption;
use crate::peer_stream::PeerStream;
use crate::table_exchange::{self, TableMsg, MY_TABLE_ID};
use crate::torrent::{TablePin, Torrent};

/// Largest info dictionary accepted. A single-file info dictionary is 20 bytes per piece plus a
/// few hundred: 16 MiB holds the piece hashes of a 200 GiB image at 256 KiB pieces. Anything
/// larger announced by a peer is a lie or an attack on our memory.
pub const MAX_METADATA_SIZE: u32 = 16 << 20;

/// Size of a metadata piece (BEP 9).
const PIECE: usize = 16 * 1024;

/// Requests outstanding at one peer: under the serving side's bound (vmt queues 16), enough to
/// cover a round trip or two.
const PIPELINE: u32 = 8;

/// How long one peer may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one peer may take for everything we ask of it, so a slow or silent one does not
/// hold the whole fetch.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the block-hash table is waited for once the info dictionary is in, before going on
/// without it (pieces verified by SHA-1 alone): a vmt peer sends it within a round trip or
/// two; when the peers known are stock clients, waiting longer only delays the start.
const TABLE_WAIT: Duration = Duration::from_secs(10);

/// Largest message read while fetching metadata (a bitfield of a huge torrent may come first).
const MAX_READ: usize = 4 << 20;

/// What to fetch and where to look.
#[derive(Clone, Debug)]
pub struct MetadataRequest {
    /// The swarm.
    pub info_hash: Id20,
    /// Peers to ask first.
    pub peers: Vec<SocketAddr>,
    /// Trackers to ask for more peers.
    pub trackers: Vec<String>,
    /// Give up after this long.
    pub timeout: Duration,
    /// Which handshakes we dial (MSE), as the engine would: a peer that requires encryption
    /// (Transmission's `encryption 2`) still serves metadata.
    pub encryption: Encryption,
}

/// Why no torrent came of a magnet link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// No peer sent a valid info dictionary in time.
    #[error("no peer sent the info dictionary of {info_hash} within {timeout:?} ({tried} peers tried{})", last_failure(.last))]
    NoMetadata {
        /// The swarm, in hex.
        info_hash: String,
        /// The time allowed.
        timeout: Duration,
        /// Peers asked.
        tried: usize,
        /// Why the last peer asked failed.
        last: Option<String>,
    },
    /// The metadata verified but is not a torrent vmt can use (e.g. multi-file).
    #[error("the metadata of the magnet link")]
    Torrent(#[source] SwarmError),
    /// Stopped before done.
    #[error("cancelled while fetching the metadata")]
    Cancelled,
}

fn last_failure(last: &Option<String>) -> String {
    last.as_ref()
        .map_or_else(String::new, |l| format!("; the last: {l}"))
}

/// A blob of known size arriving in 16 KiB pieces, in any order.
#[derive(Debug)]
pub(crate) struct Assembly {
    buf: Vec<u8>,
    have: Vec<bool>,
    missing: u32,
    /// Next piece to request.
    next: u32,
}

impl Assembly {
    pub fn new(total: usize) -> Assembly {
        let pieces = total.div_ceil(PIECE);
        Assembly {
            buf: vec![0; total],
            have: vec![false; pieces],
            missing: pieces as u32,
            next: 0,
        }
    }

    fn pieces(&self) -> u32 {
        self.have.len() as u32
    }

    /// The next piece to request, if any is left unrequested.
    fn next_request(&mut self) -> Option<u32> {
        (self.next < self.pieces()).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Takes piece `piece`; an error if there is no such piece or `data` is not its size.
    /// Returns whether the blob is complete.
    pub fn put(&mut self, piece: u32, data: &[u8]) -> Result<bool, String> {
        let start = piece as usize * PIECE;
        if piece >= self.pieces() {
            return Err(format!("sent piece {piece} of {}", self.pieces()));
        }
        let want = (self.buf.len() - start).min(PIECE);
        if data.len() != want {
            return Err(format!(
                "sent {} bytes for piece {piece}, which has {want}",
                data.len()
            ));
        }
        self.buf[start..start + want].copy_from_slice(data);
        if !std::mem::replace(&mut self.have[piece as usize], true) {
            self.missing -= 1;
        }
        Ok(self.missing == 0)
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// What has been fetched so far, across peers.
#[derive(Default)]
struct Progress {
    info: Option<Vec<u8>>,
    pin: Option<TablePin>,
    table: Option<Vec<u8>>,
}

impl Progress {
    fn done(&self) -> bool {
        self.info.is_some() && (self.pin.is_none() || self.table.is_some())
    }
}

/// Fetches the metadata of `req.info_hash` and returns its torrent, announcing to
/// `req.trackers` (which the torrent carries too). See the module doc.
pub async fn fetch_metadata(
    req: MetadataRequest,
    cancel: CancellationToken,
) -> Result<Torrent, MetadataError> {
    let deadline = Instant::now() + req.timeout;
    let mut id = *b"-VM0200-\0\0\0\0\0\0\0\0\0\0\0\0";
    id[8..].copy_from_slice(&rand::random::<[u8; 12]>());
    let our_id = Id20::new(id);
    let (tx, mut rx) = mpsc::unbounded_channel();
    for p in &req.peers {
        let _ = tx.send(*p);
    }
    let stop_trackers = cancel.child_token();
    if !req.trackers.is_empty() {
        tokio::spawn(announce(
            req.info_hash,
            our_id,
            req.trackers.clone(),
            stop_trackers.clone(),
            tx,
        ));
    } else {
        drop(tx);
    }
    let _stop = stop_trackers.drop_guard();
    let mut seen = HashSet::new();
    let mut progress = Progress::default();
    let mut table_deadline = None;
    let (mut tried, mut last) = (0, None);
    while !progress.done() {
        // Once the info dictionary is in, the table gets a short while more.
        let until = match progress.info {
            Some(_) => deadline.min(*table_deadline.get_or_insert(Instant::now() + TABLE_WAIT)),
            None => deadline,
        };
        let addr = tokio::select! {
            a = rx.recv() => match a {
                Some(a) => a,
                None => break,
            },
            _ = tokio::time::sleep_until(until) => break,
            _ = cancel.cancelled() => return Err(MetadataError::Cancelled),
        };
        if !seen.insert(addr) {
            continue;
        }
        tried += 1;
        let until = until.min(Instant::now() + PEER_TIMEOUT);
        let asked = tokio::select! {
            r = tokio::time::timeout_at(until, from_peer(addr, req.info_hash, our_id, req.encryption, &mut progress)) => r,
            _ = cancel.cancelled() => return Err(MetadataError::Cancelled),
        };
        match asked {
            Ok(Ok(())) => {}
            Ok(Err(PeerFault::Fatal(e))) => return Err(MetadataError::Torrent(e)),
            Ok(Err(PeerFault::Peer(why))) => {
                tracing::info!(%addr, "metadata: peer dropped: {why}");
                last = Some(format!("{addr} {why}"));
            }
            Err(_) => {
                tracing::info!(%addr, "metadata: peer too slow");
                last = Some(format!("{addr} was too slow"));
            }
        }
    }
    let Some(info) = progress.info else {
        return Err(MetadataError::NoMetadata {
            info_hash: req.info_hash.as_string(),
            timeout: req.timeout,
            tried,
            last,
        });
    };
    if progress.pin.is_some() && progress.table.is_none() {
        tracing::warn!(
            "no peer served the block-hash table the info dictionary pins ({tried} peers \
             tried{}): blocks are verified with their whole piece, so a read waits for its \
             pieces",
            last_failure(&last)
        );
    }
    Torrent::from_metadata(
        req.info_hash,
        &info,
        &req.trackers,
        progress.table.as_deref(),
    )
    .map_err(MetadataError::Torrent)
}

/// Why one peer gave up: its own fault (the next peer is asked), or a fault of the verified
/// metadata itself (no peer can do better).
enum PeerFault {
    Peer(String),
    Fatal(SwarmError),
}

impl From<std::io::Error> for PeerFault {
    fn from(e: std::io::Error) -> PeerFault {
        PeerFault::Peer(e.to_string())
    }
}

fn fault(why: impl Into<String>) -> PeerFault {
    PeerFault::Peer(why.into())
}

/// Dials `addr` and handshakes (the engine's path: MSE first under `prefer`), redialing once in
/// the policy's other form if the first is refused.
async fn dial(
    addr: SocketAddr,
    info_hash: Id20,
    our_id: Id20,
    encryption: Encryption,
) -> Result<(PeerStream, Handshake), PeerFault> {
    let mut form = encryption.first_form();
    let mut redialed = false;
    loop {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| fault("did not answer the connection"))??;
        match handshake(tcp, Side::Dial(form), info_hash, our_id, encryption).await {
            Ok((stream, _, theirs)) => return Ok((stream, theirs)),
            Err(PeerError::HandshakeRefused { form: f, cause }) => match encryption.fallback(f) {
                Some(next) if !redialed => (form, redialed) = (next, true),
                _ => return Err(fault(format!("refused the {f} handshake: {cause}"))),
            },
            Err(e) => return Err(fault(format!("handshake: {e}"))),
        }
    }
}

/// Asks `addr` for what `progress` still lacks.
async fn from_peer(
    addr: SocketAddr,
    info_hash: Id20,
    our_id: Id20,
    encryption: Encryption,
    progress: &mut Progress,
) -> Result<(), PeerFault> {
    let (stream, theirs) = dial(addr, info_hash, our_id, encryption).await?;
    let (mut rd, mut wr) = stream.into_split();
    let mut out = vec![0u8; MAX_MSG_LEN + 256];
    if theirs.info_hash != info_hash {
        return Err(fault("is in another swarm"));
    }
    if !theirs.supports_extended() {
        return Err(fault("does not speak the extension protocol (BEP 10)"));
    }
    // We serve nothing; advertising ut_metadata and the table gives the peer our ids for them.
    let n = encode_handshake(&mut out, None, 0, false, true, Default::default(), false);
    wr.write_all(&mut out[..n]).await?;

    let mut buf = vec![0u8; 2 * MAX_MSG_LEN];
    let (mut start, mut end) = (0usize, 0usize);
    // The remote's ids, and what is being assembled from it.
    let mut ids = PeerExtendedMessageIds::default();
    let mut table_id = None;
    let mut info: Option<Assembly> = None;
    let mut table: Option<Assembly> = None;
    loop {
        let n = rd.read(&mut buf[end..]).await?;
        if n == 0 {
            return Err(fault("closed the connection"));
        }
        end += n;
        loop {
            let (msg, len) = match Message::deserialize(&buf[start..end], &[]) {
                Ok(m) => m,
                Err(MessageDeserializeError::NotEnoughData(more, _)) => {
                    let need = end - start + more;
                    if need > MAX_READ {
                        return Err(fault(format!("sent a message of {need} bytes")));
                    }
                    if need > buf.len() {
                        buf.resize(need, 0);
                    }
                    break;
                }
                Err(e) => return Err(fault(format!("protocol error: {e}"))),
            };
            let mut requests = Vec::new();
            match msg {
                Message::Extended(ExtendedMessage::Handshake(h)) => {
                    ids = h.peer_extended_messages();
                    table_id = table_exchange::remote_id(&buf[start + 6..start + len]);
                    if progress.info.is_none() {
                        let Some(size) = h.metadata_size.filter(|_| ids.ut_metadata.is_some())
                        else {
                            return Err(fault("does not serve metadata (ut_metadata)"));
                        };
                        if size == 0 || size > MAX_METADATA_SIZE {
                            return Err(fault(format!(
                                "announces an info dictionary of {size} bytes (at most \
                                 {MAX_METADATA_SIZE} accepted)"
                            )));
                        }
                        let mut a = Assembly::new(size as usize);
                        requests
                            .extend((0..PIPELINE).map_while(|_| a.next_request()).map(Ask::Info));
                        info = Some(a);
                    } else {
                        requests.extend(start_table(progress, table_id, &mut table)?);
                    }
                }
                Message::Extended(ExtendedMessage::UtMetadata(UtMetadata::Data(d))) => {
                    let Some(a) = info.as_mut() else {
                        return Err(fault("sent metadata before its extended handshake"));
                    };
                    let mut data = vec![0u8; d.len()];
                    d.copy_to_slice(&mut data);
                    if a.put(d.piece(), &data).map_err(fault)? {
                        let bytes = info.take().expect("assembling").into_bytes();
                        if sha1(&bytes) != info_hash.0 {
                            return Err(fault(
                                "sent an info dictionary that does not hash to the info hash",
                            ));
                        }
                        progress.pin =
                            Torrent::table_pin_of_info(&bytes).map_err(PeerFault::Fatal)?;
                        progress.info = Some(bytes);
                        requests.extend(start_table(progress, table_id, &mut table)?);
                    } else {
                        requests.extend(a.next_request().map(Ask::Info));
                    }
                }
                Message::Extended(ExtendedMessage::UtMetadata(UtMetadata::Reject(p))) => {
                    return Err(fault(format!("rejected metadata piece {p}")));
                }
                Message::Extended(ExtendedMessage::Dyn(MY_TABLE_ID, v)) => {
                    match table_exchange::decode(&v) {
                        Some(TableMsg::Data {
                            piece,
                            total_size,
                            data,
                        }) => {
                            let (Some(a), Some(pin)) = (table.as_mut(), progress.pin) else {
                                return Err(fault("sent a table unasked"));
                            };
                            if total_size != pin.table_len {
                                return Err(fault(format!(
                                    "sent a table of {total_size} bytes, the info dictionary \
                                     pins one of {}",
                                    pin.table_len
                                )));
                            }
                            if a.put(piece, data).map_err(fault)? {
                                let bytes = table.take().expect("assembling").into_bytes();
                                if <[u8; 32]>::from(Sha256::digest(&bytes)) != pin.root {
                                    return Err(fault("sent a block-hash table that does not hash to the pinned root"));
                                }
                                progress.table = Some(bytes);
                            } else {
                                requests.extend(a.next_request().map(Ask::Table));
                            }
                        }
                        Some(TableMsg::Reject(p)) => {
                            return Err(fault(format!("rejected block-hash table piece {p}")))
                        }
                        _ => {}
                    }
                }
                // Bitfield, have, choke, PEX, keep-alive: not what we came for.
                _ => {}
            }
            start += len;
            for ask in requests {
                let n = match ask {
                    Ask::Info(p) => {
                        Message::Extended(ExtendedMessage::UtMetadata(UtMetadata::Request(p)))
                            .serialize(&mut out, &|| ids)
                            .map_err(|e| fault(format!("serialize: {e}")))?
                    }
                    Ask::Table(p) => {
                        table_exchange::encode_request(&mut out, table_id.expect("asked"), p)
                    }
                };
                wr.write_all(&mut out[..n]).await?;
            }
            if progress.done() {
                return Ok(());
            }
        }
        compact(&mut buf, &mut start, &mut end);
    }
}

/// A request to send.
enum Ask {
    Info(u32),
    Table(u32),
}

/// The first requests for the table, once the info dictionary is in and pins one: an error if
/// this peer cannot serve it (the next one is asked).
fn start_table(
    progress: &Progress,
    table_id: Option<u8>,
    table: &mut Option<Assembly>,
) -> Result<Vec<Ask>, PeerFault> {
    let Some(pin) = progress.pin.filter(|_| progress.table.is_none()) else {
        return Ok(Vec::new());
    };
    if table_id.is_none() {
        return Err(fault(
            "does not serve the block-hash table its info dictionary pins (not a vmt peer)",
        ));
    }
    if table.is_some() {
        return Ok(Vec::new());
    }
    let mut a = Assembly::new(pin.table_len as usize);
    let asks = (0..PIPELINE)
        .map_while(|_| a.next_request())
        .map(Ask::Table)
        .collect();
    *table = Some(a);
    Ok(asks)
}

/// What the announces report: a client that has nothing yet.
struct Nothing;

impl TorrentStatsProvider for Nothing {
    fn get(&self) -> TrackerCommsStats {
        TrackerCommsStats {
            uploaded_bytes: 0,
            downloaded_bytes: 0,
            // Unknown until the info dictionary is in; 1 byte left says "not a seed".
            total_bytes: 1,
            torrent_state: TrackerCommsStatsState::Live,
        }
    }
}

/// Announces (port 0: we serve nothing yet) until `cancel`, sending each peer found to `found`.
async fn announce(
    info_hash: Id20,
    our_id: Id20,
    trackers: Vec<String>,
    cancel: CancellationToken,
    found: mpsc::UnboundedSender<SocketAddr>,
) {
    use futures::StreamExt;
    let urls = trackers
        .iter()
        .filter_map(|t| url::Url::parse(t).ok())
        .collect();
    let Ok(udp) = UdpTrackerClient::new(cancel.clone(), None).await else {
        return;
    };
    let Some(mut peers) = TrackerComms::start(
        info_hash,
        our_id,
        urls,
        Box::new(Nothing),
        None,
        crate::tracker::NOT_LISTENING,
        reqwest::Client::new(),
        udp,
    ) else {
        return;
    };
    loop {
        tokio::select! {
            a = peers.next() => match a {
                Some(a) if a.port() == 0 => {}
                Some(a) => if found.send(a).is_err() { return },
                None => return,
            },
            _ = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineConfig};
    use crate::storage::Storage;
    use crate::testutil::{make_torrent, random_image, stock_torrent};
    use peer_binary_protocol::extended::ut_metadata::UtMetadataData;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What a fake peer serves: `info` over ut_metadata (announcing `size`), and `table` over
    /// vmt_block_hashes if given.
    struct Fake {
        info: Vec<u8>,
        size: u32,
        table: Option<Vec<u8>>,
    }

    /// A peer on loopback that answers handshakes for `info_hash` and serves `fake` to every
    /// connection, honestly or not.
    async fn fake_peer(info_hash: Id20, fake: Fake) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let fake = std::sync::Arc::new(fake);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let fake = fake.clone();
                tokio::spawn(async move {
                    let mut hs = [0u8; 68];
                    s.read_exact(&mut hs).await?;
                    let mut out = vec![0u8; MAX_MSG_LEN + 256];
                    let n = Handshake::new(info_hash, Id20::new([7; 20]))
                        .serialize_unchecked_len(&mut out);
                    s.write_all(&out[..n]).await?;
                    let n = encode_handshake(
                        &mut out,
                        None,
                        fake.size as usize,
                        false,
                        fake.table.is_some(),
                        Default::default(),
                        false,
                    );
                    s.write_all(&out[..n]).await?;
                    let mut buf = vec![0u8; 1 << 16];
                    let (mut start, mut end) = (0, 0);
                    let mut remote = PeerExtendedMessageIds::default();
                    let mut remote_table = None;
                    loop {
                        let n = s.read(&mut buf[end..]).await?;
                        if n == 0 {
                            return Ok::<_, std::io::Error>(());
                        }
                        end += n;
                        while let Ok((msg, len)) = Message::deserialize(&buf[start..end], &[]) {
                            let reply = match msg {
                                Message::Extended(ExtendedMessage::Handshake(h)) => {
                                    remote = h.peer_extended_messages();
                                    remote_table =
                                        table_exchange::remote_id(&buf[start + 6..start + len]);
                                    None
                                }
                                Message::Extended(ExtendedMessage::UtMetadata(
                                    UtMetadata::Request(p),
                                )) => {
                                    let at = p as usize * PIECE;
                                    let data = &fake.info[at..(at + PIECE).min(fake.info.len())];
                                    let m = Message::Extended(ExtendedMessage::UtMetadata(
                                        UtMetadata::Data(UtMetadataData::from_bytes(
                                            p,
                                            fake.size,
                                            bencode::ByteBuf(data),
                                        )),
                                    ));
                                    Some(m.serialize(&mut out, &|| remote).unwrap())
                                }
                                Message::Extended(ExtendedMessage::Dyn(MY_TABLE_ID, v)) => {
                                    match table_exchange::decode(&v) {
                                        Some(TableMsg::Request(p)) => {
                                            Some(table_exchange::encode_reply(
                                                &mut out,
                                                remote_table.unwrap(),
                                                fake.table.as_deref(),
                                                p,
                                            ))
                                        }
                                        _ => None,
                                    }
                                }
                                _ => None,
                            };
                            start += len;
                            if let Some(n) = reply {
                                s.write_all(&out[..n]).await?;
                            }
                        }
                        buf.copy_within(start..end, 0);
                        end -= start;
                        start = 0;
                    }
                });
            }
        });
        addr
    }

    /// A vmt seeder of `torrent` (in this process, on loopback).
    async fn seeder(image: &std::path::Path, torrent: &Torrent) -> Engine {
        seeder_with(image, torrent, Encryption::default()).await
    }

    async fn seeder_with(
        image: &std::path::Path,
        torrent: &Torrent,
        encryption: Encryption,
    ) -> Engine {
        let storage = Storage::open_seed(image, torrent, false).unwrap();
        let l = Engine::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let config = EngineConfig {
            encryption,
            ..EngineConfig::default()
        };
        Engine::start(torrent.clone(), storage, Some(l), config)
    }

    fn request(info_hash: Id20, peers: Vec<SocketAddr>) -> MetadataRequest {
        MetadataRequest {
            info_hash,
            peers,
            trackers: Vec::new(),
            timeout: Duration::from_secs(20),
            encryption: Encryption::default(),
        }
    }

    /// The metadata fetch dials as the engine does: a seeder that requires encryption serves
    /// a `prefer` or `require` client over RC4, and a `plaintext` client after its one redial
    /// in MSE. Before, the fetch dialed a plain handshake only, and such a seeder hung up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_seeder_that_requires_encryption_serves_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = random_image(dir.path(), 3 << 20, 43);
        let t = make_torrent(&img, 16384).await;
        let seed = seeder_with(&img, &t, Encryption::Require).await;
        let peer = seed.listen_addr().unwrap();
        for policy in [
            Encryption::Prefer,
            Encryption::Plaintext,
            Encryption::Require,
        ] {
            let req = MetadataRequest {
                encryption: policy,
                ..request(t.info_hash(), vec![peer])
            };
            let got = fetch_metadata(req, CancellationToken::new())
                .await
                .unwrap_or_else(|e| panic!("{policy:?}: {e}"));
            assert_eq!(got.info_bytes(), t.info_bytes(), "{policy:?}");
            assert!(got.block_hashes().is_some(), "{policy:?}");
        }
        seed.shutdown().await.unwrap();
    }

    /// Peers that lie are dropped one after the other, each with its reason, and the honest
    /// vmt seeder behind them gives the torrent, block-hash table included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn liars_are_dropped_and_the_next_peer_gives_the_verified_torrent() {
        let dir = tempfile::tempdir().unwrap();
        // 20 MiB at 16 KiB pieces: an info dictionary of 2 metadata pieces, a table of 3.
        let (img, _) = random_image(dir.path(), (20 << 20) + 1000, 41);
        let t = make_torrent(&img, 16384).await;
        let info = t.info_bytes().to_vec();
        assert!(info.len() > PIECE, "{}", info.len());
        let table = t.block_hashes().unwrap().as_bytes().to_vec();
        let ih = t.info_hash();
        let mut flipped = info.clone();
        flipped[PIECE + 5] ^= 1;
        let wrong_info = fake_peer(
            ih,
            Fake {
                size: info.len() as u32,
                info: flipped,
                table: None,
            },
        )
        .await;
        let huge = fake_peer(
            ih,
            Fake {
                size: MAX_METADATA_SIZE + 1,
                info: info.clone(),
                table: None,
            },
        )
        .await;
        let mut forged = table.clone();
        forged[100] ^= 1;
        let wrong_table = fake_peer(
            ih,
            Fake {
                size: info.len() as u32,
                info: info.clone(),
                table: Some(forged),
            },
        )
        .await;
        let no_table = fake_peer(
            ih,
            Fake {
                size: info.len() as u32,
                info: info.clone(),
                table: None,
            },
        )
        .await;

        // Each liar alone: no torrent, and the reason.
        for (peer, why) in [
            (wrong_info, "does not hash to the info hash"),
            (huge, "at most 16777216 accepted"),
        ] {
            let e = fetch_metadata(request(ih, vec![peer]), CancellationToken::new())
                .await
                .unwrap_err();
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
        // A forged table, or none, alone: the info dictionary without a table (never the
        // forged one), its pieces verified by SHA-1; the torrent saves and loads again.
        for peer in [wrong_table, no_table] {
            let got = fetch_metadata(request(ih, vec![peer]), CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(got.info_bytes(), t.info_bytes());
            assert!(got.block_hashes().is_none());
            assert_eq!(got.image_sha256(), t.image_sha256());
            let path = dir.path().join("fallback.torrent");
            got.save(&path).unwrap();
            let again = Torrent::load(&path).unwrap();
            assert!(again.block_hashes().is_none() && again.info_hash() == ih);
        }
        // All of them, then the real seeder.
        let seed = seeder(&img, &t).await;
        let peers = vec![
            wrong_info,
            huge,
            wrong_table,
            no_table,
            seed.listen_addr().unwrap(),
        ];
        let got = fetch_metadata(request(ih, peers), CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(got.info_hash(), ih);
        assert_eq!(got.info_bytes(), t.info_bytes());
        assert_eq!(got.block_hashes(), t.block_hashes());
        assert_eq!(got.image_sha256(), t.image_sha256());
        seed.shutdown().await.unwrap();
    }

    /// A stock torrent (no pin) needs no table: its info dictionary is enough.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stock_info_dictionary_needs_no_table() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = random_image(dir.path(), 500_000, 42);
        let t = stock_torrent(&img, 65536).await;
        let peer = fake_peer(
            t.info_hash(),
            Fake {
                size: t.info_bytes().len() as u32,
                info: t.info_bytes().to_vec(),
                table: None,
            },
        )
        .await;
        let got = fetch_metadata(request(t.info_hash(), vec![peer]), CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(got.info_bytes(), t.info_bytes());
        assert!(got.block_hashes().is_none());
        // Nobody to ask: a clear error at once, not a wait for the timeout.
        let t0 = std::time::Instant::now();
        let e = fetch_metadata(request(t.info_hash(), vec![]), CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(e, MetadataError::NoMetadata { tried: 0, .. }),
            "{e}"
        );
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn assembly_takes_pieces_in_any_order_and_refuses_wrong_sizes() {
        let blob: Vec<u8> = (0..2 * PIECE + 100).map(|i| (i % 251) as u8).collect();
        let mut a = Assembly::new(blob.len());
        assert_eq!(a.pieces(), 3);
        assert_eq!(
            (0..5).map_while(|_| a.next_request()).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(a.put(2, &blob[2 * PIECE..]), Ok(false));
        // A short piece, a long last piece, a piece past the end: refused, nothing taken.
        assert!(a
            .put(0, &blob[..PIECE - 1])
            .unwrap_err()
            .contains("which has 16384"));
        assert!(a.put(2, &blob[2 * PIECE - 1..]).is_err());
        assert!(a.put(3, &blob[..100]).unwrap_err().contains("piece 3 of 3"));
        assert_eq!(a.put(0, &blob[..PIECE]), Ok(false));
        // The same piece twice counts once.
        assert_eq!(a.put(0, &blob[..PIECE]), Ok(false));
        assert_eq!(a.put(1, &blob[PIECE..2 * PIECE]), Ok(true));
        assert_eq!(a.into_bytes(), blob);
    }
}
