//! One peer connection: handshake, then a reader and a writer running side by side.
//!
//! Bytes become messages only through librqbit-peer-protocol (`Handshake`, `Message`). The
//! reader and writer are two futures polled by one task, so a writer blocked on a full socket
//! never stops the reader (two peers uploading to each other cannot deadlock), and the reader
//! never waits on the writer: it queues outgoing messages in the [`Outbox`] (bounded by the
//! request pipeline and by [`MAX_UPLOAD_QUEUE`]) and wakes the writer.
//!
//! Download side (reader): tracks the remote's pieces, keeps a [`RequestWindow`] of block
//! requests in flight on pieces assigned by the picker (demanded pieces go beyond it),
//! assembles each piece in a reused buffer, checks its SHA-1, and only then writes it to
//! storage. A piece that fails the check goes back to the queue and counts a strike against
//! the peer; at [`MAX_STRIKES`] the peer is banned. Pieces finished elsewhere first (endgame,
//! urgent duplicates) are cancelled.
//!
//! Upload side (writer): serves requests while the peer is unchoked, reading verified pieces
//! from storage under the upload rate limit.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use librqbit_core::constants::CHUNK_SIZE;
use librqbit_core::hash_id::Id20;
use librqbit_core::lengths::ValidPieceIndex;
use peer_binary_protocol::extended::PeerExtendedMessageIds;
use peer_binary_protocol::{
    Handshake, Message, MessageDeserializeError, Piece, Request, MAX_MSG_LEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::engine::{lock, PeerLink, Refused, Shared};
use super::picker::PickReason;
use super::stats::Counters;
use super::torrent::sha1;
use super::window::RequestWindow;

/// Corrupt pieces tolerated from one peer before it is banned.
pub const MAX_STRIKES: u32 = 2;
/// Upload requests queued per peer. Transmission pipelines ~700 on a fast link; a peer that
/// queues more than this is dropped (it reconnects and re-requests), because silently ignoring
/// a request would stall it: without the fast extension there is no "reject".
pub const MAX_UPLOAD_QUEUE: usize = 4096;
/// Largest block served: BEP 3 clients ask 16 KiB; some ask up to 128 KiB.
const MAX_BLOCK: u32 = 128 * 1024;
/// Drop a connection silent for this long (keep-alives come every 2 minutes at most).
const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// Drop a peer that leaves our requests unanswered this long (it holds pieces hostage).
const SNUB_TIMEOUT: Duration = Duration::from_secs(30);
const KEEPALIVE: Duration = Duration::from_secs(90);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A piece has at most 16 MiB / 16 KiB blocks (the torrent module caps piece length).
const MAX_BLOCKS: usize = 1024;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The peer serves another torrent.
    #[error("peer serves another torrent")]
    WrongTorrent,
    /// We dialed ourselves.
    #[error("connected to ourselves")]
    SelfConnection,
    /// Another connection to this peer is kept.
    #[error("duplicate connection")]
    Duplicate(Id20),
    /// The peer is banned.
    #[error("peer is banned")]
    Banned,
    /// Silence or unanswered requests.
    #[error("{0}")]
    Timeout(&'static str),
    /// The engine has `max_peers` connections already.
    #[error("too many peers connected")]
    TooManyPeers,
    /// Local storage failed.
    #[error("storage: {0}")]
    Storage(std::io::Error),
}

impl From<MessageDeserializeError> for PeerError {
    fn from(e: MessageDeserializeError) -> Self {
        PeerError::Protocol(e.to_string())
    }
}

/// A message waiting for the writer. Piece data is read at send time, so the queue holds no
/// payload.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Out {
    Bitfield,
    Interested,
    NotInterested,
    Choke,
    Unchoke,
    Have(u32),
    Request(Request),
    Cancel(Request),
    Piece(Request),
}

/// Messages queued for one connection's writer.
pub(crate) struct Outbox {
    queue: VecDeque<Out>,
    uploads: usize,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            queue: VecDeque::with_capacity(256),
            uploads: 0,
        }
    }

    /// Queues `out`; false (and nothing queued) if it is an upload beyond [`MAX_UPLOAD_QUEUE`].
    pub fn push(&mut self, out: Out) -> bool {
        if let Out::Piece(_) = out {
            if self.uploads >= MAX_UPLOAD_QUEUE {
                return false;
            }
            self.uploads += 1;
        }
        self.queue.push_back(out);
        true
    }

    fn pop(&mut self) -> Option<Out> {
        let out = self.queue.pop_front()?;
        if let Out::Piece(_) = out {
            self.uploads -= 1;
        }
        Some(out)
    }

    /// Forgets queued uploads (we choked the peer, which voids its requests).
    pub fn drop_uploads(&mut self) {
        self.queue.retain(|o| !matches!(o, Out::Piece(_)));
        self.uploads = 0;
    }

    fn cancel_upload(&mut self, r: &Request) {
        let before = self.queue.len();
        self.queue.retain(|o| {
            !matches!(o, Out::Piece(q) if q.index == r.index && q.begin == r.begin && q.length == r.length)
        });
        self.uploads -= before - self.queue.len();
    }
}

/// Keeps at most this many unsent bytes in the kernel's socket buffer.
const UNSENT_LOW_WATER: libc::c_int = 64 * 1024;

/// Keeps queued uploads in our [`Outbox`] rather than in a multi-megabyte socket buffer: a
/// peer's cancel (it found the block elsewhere, or needs another one first) can then still
/// withdraw them. Best effort: without the option the socket just buffers more.
fn limit_unsent(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let v = UNSENT_LOW_WATER;
    // SAFETY: a valid socket descriptor and a c_int option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!("TCP_NOTSENT_LOWAT: {}", std::io::Error::last_os_error());
    }
}

fn no_extensions() -> PeerExtendedMessageIds {
    PeerExtendedMessageIds {
        ut_metadata: None,
        ut_pex: None,
    }
}

/// Handshakes on `stream`, registers the peer and runs it until it ends or the engine stops.
pub(crate) async fn run(
    s: &Arc<Shared>,
    mut stream: TcpStream,
    addr: SocketAddr,
    outbound: bool,
) -> Result<(), PeerError> {
    stream.set_nodelay(true)?;
    limit_unsent(&stream);
    // No extension bit: vmt speaks plain BEP 3, so peers send no extended messages to ignore.
    let mut ours = Handshake::new(s.torrent.info_hash(), s.peer_id);
    ours.reserved = 0;
    let mut hs = [0u8; 68];
    let n = ours.serialize_unchecked_len(&mut hs);
    let theirs = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        stream.write_all(&hs[..n]).await?;
        stream.read_exact(&mut hs).await?;
        Ok::<_, PeerError>(Handshake::deserialize(&hs)?.0)
    })
    .await
    .map_err(|_| PeerError::Timeout("no handshake"))??;
    if theirs.info_hash != s.torrent.info_hash() {
        return Err(PeerError::WrongTorrent);
    }
    if theirs.peer_id == s.peer_id {
        return Err(PeerError::SelfConnection);
    }
    let link = Arc::new(PeerLink {
        outbox: std::sync::Mutex::new(Outbox::new()),
        wake_writer: Notify::new(),
        wake_reader: Notify::new(),
        am_choking: AtomicBool::new(true),
        remote_interested: AtomicBool::new(false),
        choke_changed_ms: AtomicU64::new(s.now_ms()),
        close: s.cancel.child_token(),
        counters: s.counters_for(theirs.peer_id),
    });
    // Queued before registration so it precedes every Have the engine broadcasts.
    link.push(Out::Bitfield);
    let conn = match s.register(theirs.peer_id, addr, outbound, link.clone()) {
        Ok(c) => c,
        Err(Refused::Banned) => return Err(PeerError::Banned),
        Err(Refused::Duplicate) => return Err(PeerError::Duplicate(theirs.peer_id)),
        Err(Refused::Full) => return Err(PeerError::TooManyPeers),
    };
    tracing::debug!(peer = %theirs.peer_id.as_string(), "connected");
    let (mut rd, mut wr) = stream.into_split();
    let mut dl = Download::new(s, link.clone(), theirs.peer_id, addr);
    let result = tokio::select! {
        r = dl.read_loop(&mut rd) => r,
        r = write_loop(s, &link, &mut wr) => r,
        _ = link.close.cancelled() => Ok(()),
    };
    dl.cleanup();
    s.unregister(conn);
    result
}

/// A piece being assembled from blocks.
struct Active {
    piece: ValidPieceIndex,
    len: u32,
    buf: Vec<u8>,
    blocks: u32,
    next_block: u32,
    received: [u64; MAX_BLOCKS / 64],
    received_count: u32,
    reason: PickReason,
}

impl Active {
    fn block_len(&self, b: u32) -> u32 {
        (self.len - b * CHUNK_SIZE).min(CHUNK_SIZE)
    }
    fn got(&self, b: u32) -> bool {
        self.received[(b / 64) as usize] & (1 << (b % 64)) != 0
    }
}

/// The download side of one connection.
struct Download {
    s: Arc<Shared>,
    link: Arc<PeerLink>,
    peer_id: Id20,
    addr: SocketAddr,
    remote_has: Vec<u64>,
    peer_choking: bool,
    am_interested: bool,
    active: Vec<Active>,
    /// Block requests sent and not yet answered.
    outstanding: usize,
    /// When each outstanding request was sent, in order: (piece, begin, sent).
    sent: VecDeque<(u32, u32, Instant)>,
    /// Piece buffers to reuse, so assembling a piece allocates nothing.
    pool: Vec<Vec<u8>>,
    strikes: u32,
    window: RequestWindow,
}

impl Download {
    fn new(s: &Arc<Shared>, link: Arc<PeerLink>, peer_id: Id20, addr: SocketAddr) -> Download {
        let words = s.storage.bitmap().words();
        Download {
            s: s.clone(),
            link,
            peer_id,
            addr,
            remote_has: vec![0; words],
            peer_choking: true,
            am_interested: false,
            active: Vec::new(),
            outstanding: 0,
            sent: VecDeque::with_capacity(s.config.request_depth.max(64)),
            pool: Vec::new(),
            strikes: 0,
            window: RequestWindow::new(s.config.request_depth, Instant::now()),
        }
    }

    fn remote_has(&self, i: u32) -> bool {
        self.remote_has[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set_remote_has(&mut self, i: u32) {
        if i >= self.s.torrent.piece_count() || self.remote_has(i) {
            return;
        }
        self.remote_has[(i / 64) as usize] |= 1 << (i % 64);
        self.s.picker().add_availability(i);
    }

    async fn read_loop(&mut self, rd: &mut OwnedReadHalf) -> Result<(), PeerError> {
        // Room for a few full block messages per read; a bitfield of a huge torrent may need more.
        let size = (4 * MAX_MSG_LEN).max(self.s.torrent.lengths().piece_bitfield_bytes() + 64);
        let mut buf = vec![0u8; size];
        let (mut start, mut end) = (0usize, 0usize);
        loop {
            self.update_interest();
            self.fill_requests();
            let limit = if self.outstanding > 0 {
                SNUB_TIMEOUT
            } else {
                IDLE_TIMEOUT
            };
            tokio::select! {
                biased;
                _ = self.link.wake_reader.notified() => {
                    self.drop_finished();
                    continue;
                }
                r = tokio::time::timeout(limit, rd.read(&mut buf[end..])) => {
                    let n = r.map_err(|_| PeerError::Timeout(if self.outstanding > 0 {
                        "requests unanswered"
                    } else {
                        "idle"
                    }))??;
                    if n == 0 {
                        return Err(PeerError::Closed);
                    }
                    end += n;
                    self.s.down_limit.consume(n as u64).await;
                }
            }
            loop {
                match Message::deserialize(&buf[start..end], &[]) {
                    Ok((msg, len)) => {
                        self.handle(msg)?;
                        start += len;
                    }
                    Err(MessageDeserializeError::NotEnoughData(more, _)) => {
                        if end - start + more > buf.len() {
                            return Err(PeerError::Protocol(format!(
                                "message of {} bytes is too large",
                                end - start + more
                            )));
                        }
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if start == end {
                (start, end) = (0, 0);
            } else if buf.len() - end < MAX_MSG_LEN {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
        }
    }

    fn handle(&mut self, msg: Message<'_>) -> Result<(), PeerError> {
        match msg {
            Message::KeepAlive | Message::Extended(_) => {}
            Message::Choke => {
                self.peer_choking = true;
                // A choke voids our requests: give the pieces back to the picker.
                for a in std::mem::take(&mut self.active) {
                    self.s.picker().release(a.piece.get());
                    self.pool.push(a.buf);
                }
                self.outstanding = 0;
                self.sent.clear();
            }
            Message::Unchoke => self.peer_choking = false,
            Message::Interested => {
                self.link.remote_interested.store(true, Ordering::Relaxed);
                self.s.rechoke(false);
            }
            Message::NotInterested => {
                self.link.remote_interested.store(false, Ordering::Relaxed);
                self.s.rechoke(false);
            }
            Message::Have(i) => self.set_remote_has(i),
            Message::Bitfield(bits) => {
                let bits = bits.as_ref();
                if bits.len() != self.s.torrent.lengths().piece_bitfield_bytes() {
                    return Err(PeerError::Protocol(format!(
                        "bitfield of {} bytes",
                        bits.len()
                    )));
                }
                // One lock for the whole bitfield, not one per piece.
                let mut picker = self.s.picker();
                for i in 0..self.s.torrent.piece_count() {
                    if super::bitmap::wire_bit(bits, i) && !self.remote_has(i) {
                        self.remote_has[(i / 64) as usize] |= 1 << (i % 64);
                        picker.add_availability(i);
                    }
                }
            }
            Message::Request(r) => self.on_request(r)?,
            Message::Cancel(r) => {
                lock(&self.link.outbox).cancel_upload(&r);
            }
            Message::Piece(p) => self.on_block(p)?,
        }
        Ok(())
    }

    fn on_request(&mut self, r: Request) -> Result<(), PeerError> {
        if self.link.am_choking.load(Ordering::Relaxed) {
            return Ok(());
        }
        let lengths = self.s.torrent.lengths();
        let Some(piece) = lengths.validate_piece_index(r.index) else {
            return Ok(());
        };
        let ok = r.length > 0
            && r.length <= MAX_BLOCK
            && r.begin as u64 + r.length as u64 <= lengths.piece_length(piece) as u64
            && self.s.storage.has_piece(r.index);
        if ok && !self.link.push(Out::Piece(r)) {
            return Err(PeerError::Protocol(format!(
                "more than {MAX_UPLOAD_QUEUE} requests queued"
            )));
        }
        Ok(())
    }

    fn on_block(&mut self, p: Piece<librqbit::ByteBuf<'_>>) -> Result<(), PeerError> {
        let (b0, b1) = p.data();
        let len = (b0.len() + b1.len()) as u32;
        Counters::add(&self.s.counters.downloaded, len as u64);
        Counters::add(&self.link.counters.downloaded, len as u64);
        let slot = self.active.iter().position(|a| a.piece.get() == p.index);
        let Some(k) = slot.filter(|_| p.begin % CHUNK_SIZE == 0) else {
            Counters::add(&self.s.counters.wasted, len as u64);
            return Ok(());
        };
        let a = &mut self.active[k];
        let b = p.begin / CHUNK_SIZE;
        if b >= a.next_block || a.got(b) || len != a.block_len(b) {
            Counters::add(&self.s.counters.wasted, len as u64);
            return Ok(());
        }
        let at = p.begin as usize;
        a.buf[at..at + b0.len()].copy_from_slice(b0);
        a.buf[at + b0.len()..at + len as usize].copy_from_slice(b1);
        a.received[(b / 64) as usize] |= 1 << (b % 64);
        a.received_count += 1;
        let done = a.received_count == a.blocks;
        self.outstanding -= 1;
        if let Some(sent) = self.forget_request(p.index, p.begin) {
            let now = Instant::now();
            self.window
                .on_answer(now.duration_since(sent), self.outstanding, now);
        }
        if done {
            let a = self.active.swap_remove(k);
            self.finish(a)?;
        }
        Ok(())
    }

    /// Verifies an assembled piece; writes and announces it if good.
    fn finish(&mut self, a: Active) -> Result<(), PeerError> {
        let s = self.s.clone();
        let i = a.piece.get();
        let data = &a.buf[..a.len as usize];
        if s.storage.has_piece(i) {
            s.picker().complete(i);
            Counters::add(&s.counters.wasted, a.len as u64);
            self.pool.push(a.buf);
            return Ok(());
        }
        if sha1(data) != *s.torrent.piece_hash(a.piece) {
            s.picker().release(i);
            s.counters.hash_failures.fetch_add(1, Ordering::Relaxed);
            self.link
                .counters
                .hash_failures
                .fetch_add(1, Ordering::Relaxed);
            Counters::add(&s.counters.wasted, a.len as u64);
            self.pool.push(a.buf);
            self.strikes += 1;
            tracing::warn!(
                peer = %self.peer_id.as_string(), addr = %self.addr, piece = i,
                "piece failed verification ({} of {MAX_STRIKES} strikes)", self.strikes
            );
            if self.strikes >= MAX_STRIKES {
                s.ban(self.peer_id, self.addr);
                return Err(PeerError::Banned);
            }
            s.wake_readers();
            return Ok(());
        }
        let written = s.storage.write_piece(a.piece, data);
        if let Err(e) = written {
            s.picker().release(i);
            self.pool.push(a.buf);
            tracing::error!("{}: writing piece {i}: {e}", s.storage.path().display());
            return Err(PeerError::Storage(e));
        }
        let first = s.storage.mark_verified(a.piece);
        s.picker().complete(i);
        self.pool.push(a.buf);
        tracing::trace!(piece = i, reason = ?a.reason, "piece verified");
        if first {
            s.piece_verified(a.piece);
        }
        Ok(())
    }

    /// Cancels pieces verified through another peer meanwhile.
    fn drop_finished(&mut self) {
        let mut k = 0;
        while k < self.active.len() {
            let a = &self.active[k];
            if !self.s.storage.has_piece(a.piece.get()) {
                k += 1;
                continue;
            }
            let a = self.active.swap_remove(k);
            for b in 0..a.next_block {
                if !a.got(b) {
                    self.outstanding -= 1;
                    let r = Request::new(a.piece.get(), b * CHUNK_SIZE, a.block_len(b));
                    self.forget_request(r.index, r.begin);
                    self.link.push(Out::Cancel(r));
                }
            }
            self.s.picker().release(a.piece.get());
            self.pool.push(a.buf);
        }
    }

    fn update_interest(&mut self) {
        let have = self.s.storage.bitmap();
        let wants = (0..self.remote_has.len()).any(|k| self.remote_has[k] & !have.word(k) != 0);
        if wants != self.am_interested {
            self.am_interested = wants;
            self.link.push(if wants {
                Out::Interested
            } else {
                Out::NotInterested
            });
        }
    }

    fn start(&mut self, piece: u32, reason: PickReason) {
        let lengths = self.s.torrent.lengths();
        let piece = lengths
            .validate_piece_index(piece)
            .expect("the picker only knows valid pieces");
        let len = lengths.piece_length(piece);
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.resize(lengths.default_piece_length() as usize, 0);
        self.active.push(Active {
            piece,
            len,
            buf,
            blocks: len.div_ceil(CHUNK_SIZE),
            next_block: 0,
            received: [0; MAX_BLOCKS / 64],
            received_count: 0,
            reason,
        });
    }

    /// Requests the next block of active piece `k`; false if all are requested.
    fn request_next(&mut self, k: usize) -> bool {
        let a = &mut self.active[k];
        if a.next_block >= a.blocks {
            return false;
        }
        let b = a.next_block;
        a.next_block += 1;
        let r = Request::new(a.piece.get(), b * CHUNK_SIZE, a.block_len(b));
        self.outstanding += 1;
        self.sent.push_back((r.index, r.begin, Instant::now()));
        self.link.push(Out::Request(r));
        true
    }

    /// Removes the send record of a request (answered or cancelled); when it was sent.
    fn forget_request(&mut self, piece: u32, begin: u32) -> Option<Instant> {
        // Answers come in request order, so this is almost always the front.
        let k = self
            .sent
            .iter()
            .position(|&(p, b, _)| p == piece && b == begin)?;
        self.sent.remove(k).map(|(_, _, t)| t)
    }

    fn pick(&mut self, urgent_only: bool) -> Option<(u32, PickReason)> {
        let (has, active) = (&self.remote_has, &self.active);
        let pick = self.s.picker().pick(
            |i| has[(i / 64) as usize] & (1 << (i % 64)) != 0,
            |i| active.iter().any(|a| a.piece.get() == i),
            urgent_only,
        )?;
        Some((pick.piece, pick.reason))
    }

    /// Keeps the window's worth of block requests in flight; a demanded piece is requested even
    /// beyond it.
    fn fill_requests(&mut self) {
        if self.peer_choking || !self.am_interested {
            return;
        }
        // While a demanded piece arrives over another connection, background blocks on this
        // one would take a share of our downlink from it: ask for demanded pieces only. On the
        // connection carrying the demand, background queues behind it and costs it nothing.
        let hold_back = {
            let picker = self.s.picker();
            // A piece picked for the plan may have been demanded since: it is urgent now.
            let mut carries_demand = false;
            for a in &mut self.active {
                if picker.is_demanded(a.piece.get()) {
                    a.reason = PickReason::Demand;
                }
                carries_demand |= a.reason == PickReason::Demand;
            }
            !carries_demand && picker.demand_in_flight()
        };
        while !hold_back && self.outstanding < self.window.depth() {
            // Finish requesting started pieces first (demanded ones sort first).
            if let Some(k) = (0..self.active.len())
                .filter(|&k| self.active[k].next_block < self.active[k].blocks)
                .min_by_key(|&k| self.active[k].reason != PickReason::Demand)
            {
                self.request_next(k);
                continue;
            }
            match self.pick(false) {
                Some((p, reason)) => self.start(p, reason),
                None => break,
            }
        }
        // Urgent pieces do not wait for the pipeline to drain.
        let urgent_pending = self
            .active
            .iter()
            .any(|a| a.reason == PickReason::Demand && a.next_block < a.blocks);
        if !urgent_pending {
            if let Some((p, reason)) = self.pick(true) {
                // The remote serves requests in order: withdraw queued background pieces so
                // the urgent blocks do not wait behind a full pipeline.
                self.cancel_unstarted();
                self.start(p, reason);
            }
        }
        for k in 0..self.active.len() {
            if self.active[k].reason == PickReason::Demand {
                while self.request_next(k) {}
            }
        }
    }

    /// Cancels non-urgent pieces of which no block has arrived yet, handing them back to the
    /// picker. Blocks the remote already sent arrive anyway and are counted as wasted.
    fn cancel_unstarted(&mut self) {
        let mut k = 0;
        while k < self.active.len() {
            let a = &self.active[k];
            if a.reason == PickReason::Demand || a.received_count > 0 {
                k += 1;
                continue;
            }
            let a = self.active.swap_remove(k);
            for b in 0..a.next_block {
                self.outstanding -= 1;
                let r = Request::new(a.piece.get(), b * CHUNK_SIZE, a.block_len(b));
                self.forget_request(r.index, r.begin);
                self.link.push(Out::Cancel(r));
            }
            self.s.picker().release(a.piece.get());
            self.pool.push(a.buf);
        }
    }

    /// Returns assignments and availability when the connection ends.
    fn cleanup(&mut self) {
        let mut picker = self.s.picker();
        for a in self.active.drain(..) {
            picker.release(a.piece.get());
        }
        for i in 0..self.s.torrent.piece_count() {
            if self.remote_has[(i / 64) as usize] & (1 << (i % 64)) != 0 {
                picker.remove_availability(i);
            }
        }
    }
}

async fn write_loop(s: &Shared, link: &PeerLink, wr: &mut OwnedWriteHalf) -> Result<(), PeerError> {
    let bitfield_len = s.torrent.lengths().piece_bitfield_bytes();
    let mut buf = vec![0u8; (2 * MAX_BLOCK as usize + 64).max(bitfield_len + 64)];
    let mut bitfield = vec![0u8; bitfield_len];
    let mut block = vec![0u8; MAX_BLOCK as usize];
    let ext = no_extensions;
    loop {
        let mut len = 0;
        // Batch queued messages into one write while a worst-case message still fits, but
        // not much more than the socket's unsent allowance: what is popped cannot be cancelled.
        while len < UNSENT_LOW_WATER as usize && buf.len() - len >= MAX_BLOCK as usize + 64 {
            let Some(out) = lock(&link.outbox).pop() else {
                break;
            };
            let msg = match out {
                Out::Bitfield => {
                    if s.storage.bitmap().count() == 0 {
                        continue;
                    }
                    s.storage.bitmap().to_wire(&mut bitfield);
                    Message::Bitfield(librqbit::ByteBuf(&bitfield))
                }
                Out::Interested => Message::Interested,
                Out::NotInterested => Message::NotInterested,
                Out::Choke => Message::Choke,
                Out::Unchoke => Message::Unchoke,
                Out::Have(i) => Message::Have(i),
                Out::Request(r) => Message::Request(r),
                Out::Cancel(r) => Message::Cancel(r),
                Out::Piece(r) => {
                    let data = &mut block[..r.length as usize];
                    let lengths = s.torrent.lengths();
                    let piece = lengths
                        .validate_piece_index(r.index)
                        .expect("validated when queued");
                    let offset = lengths.piece_offset(piece) + r.begin as u64;
                    s.storage
                        .read_at(offset, data)
                        .map_err(PeerError::Storage)?;
                    s.up_limit.consume(r.length as u64).await;
                    Counters::add(&s.counters.uploaded, r.length as u64);
                    Counters::add(&link.counters.uploaded, r.length as u64);
                    Message::Piece(Piece::from_data(r.index, r.begin, data))
                }
            };
            len += msg
                .serialize(&mut buf[len..], &ext)
                .map_err(|e| PeerError::Protocol(format!("serialize: {e}")))?;
        }
        if len == 0 {
            tokio::select! {
                _ = link.wake_writer.notified() => continue,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    len = Message::KeepAlive
                        .serialize(&mut buf, &ext)
                        .map_err(|e| PeerError::Protocol(format!("serialize: {e}")))?;
                }
            }
        }
        wr.write_all(&buf[..len]).await?;
    }
}
