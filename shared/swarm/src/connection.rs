//! One peer connection: handshake, then a reader and a writer running side by side.
//!
//! The handshake is MSE's (`mse`) or the plain one, whichever the dialer chose; after it the
//! socket is a `PeerStream`, plaintext or RC4 in place. Bytes become messages only through librqbit-peer-protocol (`Handshake`, `Message`). The
//! reader and writer are two futures polled by one task, so a writer blocked on a full socket
//! never stops the reader, and the reader never waits on the writer: it queues outgoing
//! messages in the connection's outbox and wakes the writer.
//!
//! The reader feeds download-side messages to the synchronous [`Download`] state machine and
//! hands what it produces on (requests to the writer, verified pieces to every peer); it serves
//! the upload side itself: requests are checked and queued for the writer while the peer is
//! unchoked. The writer reads verified blocks from storage only when it sends them, under the
//! upload rate limit, and keeps its backlog in user space (`TCP_NOTSENT_LOWAT`) where a cancel
//! still reaches it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bencode::ByteBuf;
use librqbit_core::constants::CHUNK_SIZE;
use librqbit_core::hash_id::Id20;
use peer_binary_protocol::extended::ut_metadata::{UtMetadata, UtMetadataData};
use peer_binary_protocol::extended::ExtendedMessage;
use peer_binary_protocol::{
    Handshake, Message, MessageDeserializeError, Piece, Request, MAX_MSG_LEN,
};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::busy::{self, MY_BUSY_ID};
use crate::download::{Download, Outputs};
use crate::error::PeerError;
use crate::extension::encode_handshake;
use crate::have_block::{self, MY_HAVE_BLOCK_ID};
use crate::inject::{self, Declines, Injector, OurInjection, MY_ELSEWHERE_ID};
use crate::mse::{self, Encryption, Form};
use crate::peer_stream::{PeerReader, PeerStream, PeerWriter};
use crate::peers::{PeerLink, PeerRegistry, Refused};
use crate::pex::{self, PexFeed};
use crate::ratelimit::RateLimiter;
use crate::state::TorrentState;
use crate::stats::Counters;
use crate::table_exchange::{self, TableMsg, MY_TABLE_ID};
use crate::urgent::{self, MY_URGENT_ID, URGENT_QUEUE};
use crate::wire::{Out, MAX_UPLOAD_QUEUE};

/// Largest block served: BEP 3 clients ask 16 KiB; some ask up to 128 KiB.
const MAX_BLOCK: u32 = 128 * 1024;
/// Drop a connection silent for this long (keep-alives come every 2 minutes at most).
const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// Drop a peer that leaves our requests unanswered this long (it holds pieces hostage).
const SNUB_TIMEOUT: Duration = Duration::from_secs(30);
const KEEPALIVE: Duration = Duration::from_secs(90);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keeps at most this many unsent bytes in the kernel's socket buffer.
const UNSENT_LOW_WATER: libc::c_int = 64 * 1024;

/// What a connection may use of its engine: the torrent state, the peer registry, the rate
/// limits and a few settings. Cheap to clone (one per connection).
#[derive(Clone)]
pub(crate) struct ConnCtx {
    pub state: Arc<TorrentState>,
    pub peers: Arc<PeerRegistry>,
    pub down_limit: Arc<RateLimiter>,
    pub up_limit: Arc<RateLimiter>,
    pub our_id: Id20,
    /// Most block requests outstanding at one peer (the window's ceiling).
    pub request_depth: usize,
    /// Which handshakes we dial, accept and select (MSE).
    pub encryption: Encryption,
    /// Our listening port, told to peers in the extended handshake (`p`).
    pub listen_port: Option<u16>,
    /// Peer exchange on: ut_pex is advertised, peers are told of each other, and what they
    /// tell us is dialed through this feed.
    pub pex: Option<Arc<PexFeed>>,
    /// We upload what we get (an injecting seeder may decline us).
    pub shares: bool,
    /// We are an injecting seeder (see [`crate::inject`]).
    pub inject: Option<Arc<Injector>>,
    /// How long a piece an injecting seeder declined us is not asked of it again.
    pub decline_retry: Duration,
    /// We ask peers that choke us and serve urgent requests for the blocks a reader waits for.
    pub asks_urgent: bool,
    /// We serve urgent requests from peers we choke (see [`crate::urgent`]).
    pub serves_urgent: bool,
    /// Urgent uploads queued over all connections: at `busy_backlog`, one more is answered
    /// busy (see [`crate::busy`]).
    pub urgent_backlog: Arc<AtomicUsize>,
    /// How long that backlog may get (`EngineConfig::busy_backlog`).
    pub busy_backlog: usize,
    /// Cancelled when the engine stops.
    pub cancel: CancellationToken,
}

/// Keeps queued uploads in the outbox rather than in a multi-megabyte socket buffer: a peer's
/// cancel (it found the block elsewhere, or needs another one first) can then still withdraw
/// them. Best effort: without the option the socket just buffers more.
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

/// Which end of a connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// We dialed, starting the handshake in this form.
    Dial(Form),
    /// The peer dialed us: either form is recognised.
    Accept,
}

/// The BitTorrent handshake on `tcp`, inside MSE when that is the form (dialed, or recognised
/// when accepting): the stream past both handshakes, the form, and the remote's handshake. The
/// engine's connections and the magnet's metadata fetch both come through here, so both speak
/// MSE. A dialed form the remote hangs up on is `PeerError::HandshakeRefused`, for the caller to
/// redial in the policy's other form.
pub(crate) async fn handshake(
    tcp: TcpStream,
    side: Side,
    info_hash: Id20,
    our_id: Id20,
    encryption: Encryption,
) -> Result<(PeerStream, Form, Handshake), PeerError> {
    tcp.set_nodelay(true)?;
    limit_unsent(&tcp);
    // With the extension bit (BEP 10): `reqq`, listen port, PEX and metadata follow.
    let ours = Handshake::new(info_hash, our_id);
    let mut hs = [0u8; 68];
    let n = ours.serialize_unchecked_len(&mut hs);
    let handshake = async {
        let (mut stream, form) = match side {
            Side::Accept => {
                let a = mse::accept(tcp, &[info_hash], encryption).await?;
                (a.stream, a.form)
            }
            // Our handshake travels as MSE's initial payload (IA): no extra round trip.
            Side::Dial(Form::Mse) => (
                mse::dial(tcp, info_hash, &hs[..n], encryption).await?,
                Form::Mse,
            ),
            Side::Dial(Form::Plain) => (PeerStream::new(tcp, Vec::new(), None, None), Form::Plain),
        };
        if side != Side::Dial(Form::Mse) {
            // A copy: writing encrypts in place (RC4), and `hs` may still be IA above.
            let mut out = hs;
            stream.write_all(&mut out[..n]).await?;
        }
        let mut theirs = [0u8; 68];
        stream.read_exact(&mut theirs).await?;
        Ok::<_, PeerError>((stream, form, Handshake::deserialize(&theirs)?.0))
    };
    match (
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .unwrap_or(Err(PeerError::Timeout("no handshake"))),
        side,
    ) {
        (Ok(x), _) => Ok(x),
        (Err(e), Side::Dial(form)) if e.is_refusal() => Err(PeerError::HandshakeRefused {
            form,
            cause: Box::new(e),
        }),
        (Err(e), _) => Err(e),
    }
}

/// Handshakes on `tcp` (MSE first, if that is the form), registers the peer and runs it until
/// it ends or the engine stops.
pub(crate) async fn run(
    ctx: &ConnCtx,
    tcp: TcpStream,
    addr: SocketAddr,
    side: Side,
) -> Result<(), PeerError> {
    let st = &ctx.state;
    let outbound = side != Side::Accept;
    let info_hash = st.torrent().info_hash();
    // A peer that stalls the handshake must not hold up the engine's shutdown.
    let (stream, form, theirs) = tokio::select! {
        r = handshake(tcp, side, info_hash, ctx.our_id, ctx.encryption) => r?,
        _ = ctx.cancel.cancelled() => return Ok(()),
    };
    if theirs.info_hash != st.torrent().info_hash() {
        return Err(PeerError::WrongTorrent);
    }
    if theirs.peer_id == ctx.our_id {
        return Err(PeerError::SelfConnection);
    }
    let counters = ctx.peers.counters_for(theirs.peer_id);
    counters
        .encrypted
        .store(stream.is_encrypted(), Ordering::Relaxed);
    let link = Arc::new(PeerLink::new(
        ctx.cancel.child_token(),
        counters,
        ctx.peers.now_ms(),
        ctx.urgent_backlog.clone(),
    ));
    // Queued before registration so it precedes every Have the registry broadcasts. The
    // bitfield must be the first message (BEP 3); the extended handshake follows at once.
    link.push(Out::Bitfield);
    if theirs.supports_extended() {
        link.push(Out::ExtendedHandshake);
    }
    let (conn, live) = match ctx
        .peers
        .register(theirs.peer_id, addr, outbound, link.clone())
    {
        Ok(c) => c,
        Err(Refused::Banned) => return Err(PeerError::Banned),
        Err(Refused::Duplicate) => return Err(PeerError::Duplicate(theirs.peer_id)),
        Err(Refused::Full) => return Err(PeerError::TooManyPeers),
        Err(Refused::HostFull) => return Err(PeerError::TooManyFromHost),
    };
    st.picker().set_plan_spread(live > 1);
    tracing::debug!(
        peer = %theirs.peer_id.as_string(),
        %form,
        rc4 = stream.is_encrypted(),
        "connected"
    );
    let (mut rd, mut wr) = stream.into_split();
    let inject_conn = ctx.inject.as_ref().map_or(0, |i| i.connection());
    let mut reader = Reader {
        ctx,
        link: &link,
        dl: Download::new(
            st,
            theirs.peer_id,
            addr,
            link.counters.clone(),
            ctx.peers.strikes_for(addr.ip()),
            ctx.request_depth,
            Instant::now(),
        ),
        out: Outputs::default(),
        ignored_requests: 0,
        inject_conn,
        sharer: false,
        declined: Declines::default(),
        told_blocks: false,
    };
    let result = tokio::select! {
        r = reader.run(&mut rd) => r,
        r = write_loop(ctx, &link, inject_conn, &mut wr) => r,
        _ = link.close.cancelled() => Ok(()),
    };
    // Closing verifies what it buffered, which may strike the address's last strike.
    if let (true, Some(inj)) = (reader.sharer, &ctx.inject) {
        reader.dl.each_remote_piece(|p| inj.remove_holder(p));
    }
    reader.dl.close(st);
    if matches!(result, Err(PeerError::Banned)) || ctx.peers.is_banned_addr(addr) {
        ctx.peers.ban(theirs.peer_id, addr);
    }
    let live = ctx.peers.unregister(conn);
    st.picker().set_plan_spread(live > 1);
    // Its pieces are free again: let the other connections take them up.
    ctx.peers.wake_readers();
    result
}

/// The reading half: messages in, state machine, outputs out.
struct Reader<'a> {
    ctx: &'a ConnCtx,
    link: &'a Arc<PeerLink>,
    dl: Download,
    out: Outputs,
    /// Requests ignored because its upload queue was full.
    ignored_requests: u64,
    /// This connection in the injector's reservations.
    inject_conn: u32,
    /// The remote shares what it gets (`vmt_elsewhere`) and, when we inject, its pieces are
    /// counted as held in the crowd.
    sharer: bool,
    /// Pieces we declined this peer (we inject).
    declined: Declines,
    /// The blocks we held alone when the remote said it takes `vmt_have_block` were queued
    /// for it; later ones go out as they are verified.
    told_blocks: bool,
}

impl Reader<'_> {
    async fn run(&mut self, rd: &mut PeerReader) -> Result<(), PeerError> {
        let st = &*self.ctx.state;
        // Room for a few full block messages per read; a bitfield of a huge torrent may need more.
        let size = (4 * MAX_MSG_LEN).max(st.torrent().lengths().piece_bitfield_bytes() + 64);
        let mut buf = vec![0u8; size];
        let (mut start, mut end) = (0usize, 0usize);
        loop {
            self.dl.retry_declined(st, Instant::now());
            self.dl.update_interest(st, &mut self.out);
            let filled = self.dl.fill(st, Instant::now(), &mut self.out);
            self.flush();
            filled?;
            let limit = if self.dl.outstanding() > 0 {
                SNUB_TIMEOUT
            } else {
                IDLE_TIMEOUT
            };
            let retry = self.dl.next_retry();
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(retry.unwrap_or_else(Instant::now).into()), if retry.is_some() => continue,
                _ = self.link.wake_reader.notified() => {
                    let woke = self.dl.on_wake(st, &mut self.out);
                    self.flush();
                    woke?;
                    continue;
                }
                r = tokio::time::timeout(limit, rd.read(&mut buf[end..])) => {
                    let n = r.map_err(|_| PeerError::Timeout(if self.dl.outstanding() > 0 {
                        "requests unanswered"
                    } else {
                        "idle"
                    }))??;
                    if n == 0 {
                        return Err(PeerError::Closed);
                    }
                    end += n;
                    self.ctx.down_limit.consume(n as u64).await;
                }
            }
            loop {
                match Message::deserialize(&buf[start..end], &[]) {
                    Ok((msg, len)) => {
                        if let Message::Extended(ExtendedMessage::Handshake(_)) = &msg {
                            // Length, id 20, extension id 0, then the bencoded dictionary.
                            self.link.ext.update_raw(&buf[start + 6..start + len]);
                        }
                        let handled = self.handle(msg);
                        self.flush();
                        handled?;
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
            compact(&mut buf, &mut start, &mut end);
        }
    }

    /// Hands what the state machine produced on: requests to our writer, verified pieces to
    /// every peer.
    fn flush(&mut self) {
        self.link.fed_by.store(self.dl.is_fed(), Ordering::Relaxed);
        if tracing::enabled!(target: "vmt_swarm::waits", tracing::Level::TRACE) {
            self.trace_requests();
        }
        self.link.push_all(&self.out.msgs);
        for &piece in &self.out.verified {
            self.ctx.peers.announce(piece);
        }
        // Served while we choke, so worth announcing (see [`crate::have_block`]).
        if self.ctx.shares && self.ctx.serves_urgent {
            self.ctx.peers.announce_blocks(&self.out.blocks);
        }
        if self.out.released {
            self.ctx.peers.wake_readers();
        }
        self.out.clear();
    }

    /// Where a reader's wait goes, hop by hop, as trace events of the target
    /// `vmt_swarm::waits` (on only with `VMT_LOG=vmt_swarm::waits=trace`; read by
    /// `datasets/wait-phases.py`): the intake's "demand", then here each "request" queued
    /// for a block a reader waits for, the writer's "request sent", at the holder "urgent in"
    /// ([`Reader::on_request`]) and "upload" (the writer), and "arrival" ([`Reader::handle`]).
    /// Each names us by our listening port and the other end by its own (`p` of its
    /// handshake), so one log of a whole crowd joins up. The picker lock is taken only when
    /// the target is on, and as everywhere with nothing else held.
    fn trace_requests(&self) {
        let st = &*self.ctx.state;
        let layout = st.layout();
        let picker = st.picker();
        for m in &self.out.msgs {
            let (Out::Request(r) | Out::Urgent(r)) = m else {
                continue;
            };
            let Some(b) = layout.block_at(r.index, r.begin, r.length) else {
                continue;
            };
            if picker.is_block_demanded(b) {
                tracing::trace!(
                    target: "vmt_swarm::waits",
                    me = self.ctx.listen_port.unwrap_or(0),
                    block = b,
                    peer = %self.dl.addr(),
                    to = self.link.ext.listen_port().unwrap_or(0),
                    urgent = matches!(m, Out::Urgent(_)),
                    "request"
                );
            }
        }
    }

    fn handle(&mut self, msg: Message<'_>) -> Result<(), PeerError> {
        let st = &*self.ctx.state;
        match msg {
            Message::KeepAlive => Ok(()),
            Message::Extended(e) => self.on_extended(e),
            Message::Choke => self.dl.on_choke(st, &mut self.out),
            Message::Unchoke => {
                self.dl.on_unchoke();
                Ok(())
            }
            Message::Interested => {
                self.link.remote_interested.store(true, Ordering::Relaxed);
                self.ctx.peers.rechoke(false);
                Ok(())
            }
            Message::NotInterested => {
                self.link.remote_interested.store(false, Ordering::Relaxed);
                self.ctx.peers.rechoke(false);
                Ok(())
            }
            Message::Have(i) => {
                if self.dl.on_have(st, i) && self.sharer {
                    if let Some(inj) = &self.ctx.inject {
                        inj.add_holder(i);
                    }
                }
                Ok(())
            }
            Message::Bitfield(bits) => self.dl.on_bitfield(st, bits.as_ref()),
            Message::Request(r) => self.on_request(r, false),
            Message::Cancel(r) => {
                self.link.outbox().cancel_upload(&r);
                Ok(())
            }
            Message::Piece(p) => {
                let asked = self.dl.outstanding();
                let data = p.data();
                if tracing::enabled!(target: "vmt_swarm::waits", tracing::Level::TRACE) {
                    let len = (data.0.len() + data.1.len()) as u32;
                    if let Some(b) = st.layout().block_at(p.index, p.begin, len) {
                        if st.picker().is_block_demanded(b) {
                            tracing::trace!(
                                target: "vmt_swarm::waits",
                                me = self.ctx.listen_port.unwrap_or(0),
                                block = b,
                                peer = %self.dl.addr(),
                                from = self.link.ext.listen_port().unwrap_or(0),
                                "arrival"
                            );
                        }
                    }
                }
                let r = self
                    .dl
                    .on_block(st, p.index, p.begin, data, Instant::now(), &mut self.out);
                // Only an answer to a request counts as feeding us: unasked-for blocks do not
                // keep a slot.
                if self.dl.outstanding() < asked {
                    self.link.block_received(self.ctx.peers.now_ms());
                }
                r
            }
        }
    }

    /// A block request; `urgent` if it came as `vmt_urgent`, which we serve while we choke the
    /// peer too, up to [`URGENT_QUEUE`] queued (see [`crate::urgent`]).
    fn on_request(&mut self, r: Request, urgent: bool) -> Result<(), PeerError> {
        let choking = self.link.am_choking.load(Ordering::Relaxed);
        // Checked against the queue, not a count of our own: a choke drops every queued
        // upload, so while we choke the peer the queue holds urgent requests only.
        if choking
            && !(urgent && self.ctx.serves_urgent && self.link.outbox().uploads() < URGENT_QUEUE)
        {
            return Ok(());
        }
        let st = &*self.ctx.state;
        if urgent && tracing::enabled!(target: "vmt_swarm::waits", tracing::Level::TRACE) {
            if let Some(b) = st.layout().block_at(r.index, r.begin, r.length) {
                tracing::trace!(
                    target: "vmt_swarm::waits",
                    me = self.ctx.listen_port.unwrap_or(0),
                    block = b,
                    from = self.link.ext.listen_port().unwrap_or(0),
                    choking,
                    queued = self.link.outbox().uploads(),
                    "urgent in"
                );
            }
        }
        let lengths = st.torrent().lengths();
        let Some(piece) = lengths.validate_piece_index(r.index) else {
            return Ok(());
        };
        let ok = r.length > 0
            && r.length <= MAX_BLOCK
            && r.begin as u64 + r.length as u64 <= lengths.piece_length(piece) as u64
            && (st.storage().has_piece(r.index) || blocks_present(st, &r));
        if !ok {
            return Ok(());
        }
        if urgent && choking && self.ctx.inject.is_none() {
            let backlog = self.ctx.urgent_backlog.load(Ordering::Relaxed);
            if backlog >= self.ctx.busy_backlog && self.link.ext.busy_id().is_some() {
                let retry = busy::retry(backlog, r.length, self.ctx.up_limit.rate());
                self.link.push(Out::Busy(r, retry));
                Counters::add(&st.counters().busy_sent, 1);
                return Ok(());
            }
        }
        if self.sharer {
            if let Some(inj) = &self.ctx.inject {
                let now = Instant::now();
                // A second ask (after a retry) is served unless the piece is still on its
                // way to another peer: that copy reaches the asker sooner than a new one.
                let admitted = inj.admit(r.index, self.inject_conn, now);
                let served = admitted
                    || (!inj.on_its_way_elsewhere(r.index, self.inject_conn, now)
                        && self.declined.asks_again(r.index, inj.retry(), now));
                // How one piece enters a crowd, request by request: with each client's
                // "piece verified", what `datasets/piece-timeline.py` reads
                // (VMT_LOG=vmt_swarm::connection=trace,vmt_swarm::download=trace).
                tracing::trace!(
                    piece = r.index,
                    begin = r.begin,
                    conn = self.inject_conn,
                    urgent,
                    choking,
                    admitted,
                    served,
                    "injector"
                );
                if !served {
                    // Held in the crowd, or on its way to another peer: fetch it there. Each
                    // request gets its decline (the peer ignores repeats): one that crossed
                    // an earlier decline, or came after the peer's retry, must not go
                    // unanswered until its request timeout.
                    self.link.push(Out::Elsewhere(r.index));
                    Counters::add(&st.counters().declined, 1);
                    return Ok(());
                }
            }
        }
        // Asked urgently, choked or not: a reader waits for it, so it goes first.
        if self
            .link
            .push(Out::Piece(r, urgent && self.ctx.serves_urgent))
        {
            if choking {
                Counters::add(&st.counters().urgent_served, 1);
            }
        } else {
            // Beyond what we told it (`reqq`) and beyond the headroom: ignored, as libtorrent
            // does; it asks again after its request timeout. Closing would cost it every
            // queued request and a reconnect.
            if self.ignored_requests == 0 {
                tracing::debug!(
                    "more than {MAX_UPLOAD_QUEUE} requests queued: ignoring the excess"
                );
            }
            self.ignored_requests += 1;
        }
        Ok(())
    }

    /// Queues an announcement of every block we hold of a piece not yet whole, for a peer
    /// that just said it takes them (see [`crate::have_block`]): the blocks verified before
    /// it connected. Its extended handshake set its id first, so a block verified meanwhile
    /// is announced live instead (or twice, which is harmless).
    fn tell_blocks(&self) {
        if !(self.ctx.shares && self.ctx.serves_urgent) {
            return;
        }
        let st = &*self.ctx.state;
        let layout = st.layout();
        let mut outbox = self.link.outbox();
        for piece in 0..layout.pieces() {
            if st.storage().has_piece(piece) {
                continue;
            }
            for b in layout.piece_blocks(piece) {
                if st.storage().has_block(b) {
                    outbox.push(Out::HaveBlock(b));
                }
            }
        }
        drop(outbox);
        self.link.wake_writer.notify_one();
    }

    /// Extension messages (BEP 10): the remote's handshake, peer exchange, metadata requests,
    /// declines. Anything else (unknown ids, ut_metadata data and rejects, which we never ask
    /// for) is ignored, as BEP 10 asks.
    fn on_extended(&mut self, e: ExtendedMessage<ByteBuf<'_>>) -> Result<(), PeerError> {
        match e {
            ExtendedMessage::Handshake(h) => {
                self.link.ext.update(&h);
                if !self.told_blocks && self.link.ext.have_block_id().is_some() {
                    self.told_blocks = true;
                    self.tell_blocks();
                }
                self.dl.set_remote_reqq(self.link.ext.reqq());
                self.dl
                    .set_urgent(self.ctx.asks_urgent && self.link.ext.urgent_id().is_some());
                let inj = self.link.ext.injection();
                self.dl.set_injector(inj.injects && self.ctx.shares);
                if inj.elsewhere.is_some() && !self.sharer {
                    self.sharer = true;
                    if let Some(injector) = &self.ctx.inject {
                        self.dl.each_remote_piece(|p| injector.add_holder(p));
                    }
                }
            }
            ExtendedMessage::UtPex(p) => {
                if let Some(feed) = &self.ctx.pex {
                    let we_seed = self.ctx.state.storage().is_complete();
                    for addr in pex::learned(&p, we_seed) {
                        feed.offer(addr);
                    }
                }
            }
            ExtendedMessage::UtMetadata(UtMetadata::Request(piece)) => {
                if self.link.ext.ids().ut_metadata.is_some() {
                    self.link.push(Out::Metadata(piece));
                }
            }
            ExtendedMessage::Dyn(MY_TABLE_ID, v) => {
                if let Some(TableMsg::Request(piece)) = table_exchange::decode(&v) {
                    if self.link.ext.table_id().is_some() {
                        self.link.push(Out::BlockTable(piece));
                    }
                }
            }
            ExtendedMessage::Dyn(MY_ELSEWHERE_ID, v) => {
                if let Some(piece) = inject::decode_elsewhere(&v) {
                    let st = &*self.ctx.state;
                    let retry_at = Instant::now() + self.ctx.decline_retry;
                    return self.dl.on_elsewhere(st, piece, retry_at, &mut self.out);
                }
            }
            ExtendedMessage::Dyn(MY_HAVE_BLOCK_ID, v) => {
                if let Some(b) = have_block::decode(&v) {
                    self.dl.on_have_block(&self.ctx.state, b);
                }
            }
            ExtendedMessage::Dyn(MY_BUSY_ID, v) => {
                if let Some((r, retry)) = busy::decode(&v) {
                    let retry_at = Instant::now() + retry;
                    return self.dl.on_busy(&self.ctx.state, r, retry_at, &mut self.out);
                }
            }
            ExtendedMessage::Dyn(MY_URGENT_ID, v) => {
                if let Some(r) = urgent::decode(&v) {
                    return self.on_request(r, true);
                }
            }
            ExtendedMessage::UtMetadata(_) | ExtendedMessage::Dyn(..) => {}
        }
        Ok(())
    }
}

/// What the writer just sent, for `vmt_swarm::waits`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// A request (traced only for a block a reader waits for).
    Request,
    /// Any upload.
    Upload,
}

impl Sent {
    /// The event's message, which `datasets/wait-phases.py` matches.
    fn event(self) -> &'static str {
        match self {
            Sent::Request => "request sent",
            Sent::Upload => "upload",
        }
    }
}

/// A request for a block a reader waits for, or any upload, as the writer sends it: see
/// [`Reader::trace_requests`].
fn trace_sent(ctx: &ConnCtx, link: &PeerLink, r: &Request, what: Sent) {
    if !tracing::enabled!(target: "vmt_swarm::waits", tracing::Level::TRACE) {
        return;
    }
    let st = &*ctx.state;
    let Some(b) = st.layout().block_at(r.index, r.begin, r.length) else {
        return;
    };
    if what == Sent::Upload || st.picker().is_block_demanded(b) {
        tracing::trace!(
            target: "vmt_swarm::waits",
            me = ctx.listen_port.unwrap_or(0),
            block = b,
            to = link.ext.listen_port().unwrap_or(0),
            "{}",
            what.event()
        );
    }
}

/// Whether every block `r` covers is present (verified alone, or with its piece): such
/// blocks are served before their piece is whole (see [`crate::have_block`]).
fn blocks_present(st: &TorrentState, r: &Request) -> bool {
    let layout = st.layout();
    let first = layout.piece_blocks(r.index).start;
    let bl = layout.block_len();
    let (from, to) = (r.begin / bl, (r.begin + r.length - 1) / bl);
    (first + from..=first + to).all(|b| st.storage().has_block(b))
}

/// Makes room in a read buffer holding unparsed bytes `start..end`: back to the start when all
/// are parsed, else moved down once less than a whole message fits after them.
pub(crate) fn compact(buf: &mut [u8], start: &mut usize, end: &mut usize) {
    if *start == *end {
        (*start, *end) = (0, 0);
    } else if buf.len() - *end < MAX_MSG_LEN {
        buf.copy_within(*start..*end, 0);
        *end -= *start;
        *start = 0;
    }
}

/// Our answer to a request for piece `piece` of the info dictionary (BEP 9): its 16 KiB, or a
/// reject if there is no such piece.
fn metadata_reply(info: &[u8], piece: u32) -> UtMetadata<ByteBuf<'_>> {
    let start = piece as usize * CHUNK_SIZE as usize;
    if start >= info.len() {
        return UtMetadata::Reject(piece);
    }
    let end = (start + CHUNK_SIZE as usize).min(info.len());
    UtMetadata::Data(UtMetadataData::from_bytes(
        piece,
        info.len() as u32,
        ByteBuf(&info[start..end]),
    ))
}

async fn write_loop(
    ctx: &ConnCtx,
    link: &PeerLink,
    inject_conn: u32,
    wr: &mut PeerWriter,
) -> Result<(), PeerError> {
    let st = &*ctx.state;
    let bitfield_len = st.torrent().lengths().piece_bitfield_bytes();
    let mut buf = vec![0u8; (2 * MAX_BLOCK as usize + 64).max(bitfield_len + 64)];
    let mut bitfield = vec![0u8; bitfield_len];
    let mut block = vec![0u8; MAX_BLOCK as usize];
    let ext = || link.ext.ids();
    let info = st.torrent().info_bytes();
    let table = st.torrent().block_hashes().map(|t| t.as_bytes());
    let listen_port = ctx.listen_port;
    loop {
        let mut len = 0;
        // Uploads nobody waits for stay queued while one a reader waits for paces our uplink
        // (see `crate::ratelimit`); the other messages go on meanwhile.
        let mut held = false;
        // Batch queued messages into one write while a worst-case message still fits, but
        // not much more than the socket's unsent allowance: what is popped cannot be cancelled.
        while len < UNSENT_LOW_WATER as usize && buf.len() - len >= MAX_BLOCK as usize + 64 {
            let open = ctx.up_limit.others_may_go();
            let popped = {
                let mut outbox = link.outbox();
                let out = outbox.pop(open);
                held = out.is_none() && !open && outbox.uploads() > 0;
                out
            };
            let Some(out) = popped else { break };
            let pex_msg;
            let msg = match out {
                Out::Bitfield => {
                    if st.storage().bitmap().count() == 0 {
                        continue;
                    }
                    st.storage().bitmap().to_wire(&mut bitfield);
                    Message::Bitfield(bencode::ByteBuf(&bitfield))
                }
                Out::Interested => Message::Interested,
                Out::NotInterested => Message::NotInterested,
                Out::Choke => Message::Choke,
                Out::Unchoke => Message::Unchoke,
                Out::Have(i) => Message::Have(i),
                Out::HaveBlock(b) => {
                    let Some(id) = link.ext.have_block_id() else {
                        continue;
                    };
                    len += have_block::encode(&mut buf[len..], id, b);
                    continue;
                }
                Out::Request(r) => {
                    trace_sent(ctx, link, &r, Sent::Request);
                    Message::Request(r)
                }
                Out::Urgent(r) => match link.ext.urgent_id() {
                    Some(id) => {
                        trace_sent(ctx, link, &r, Sent::Request);
                        len += urgent::encode(&mut buf[len..], id, &r);
                        Counters::add(&st.counters().urgent_asked, 1);
                        continue;
                    }
                    None => Message::Request(r),
                },
                Out::Cancel(r) => Message::Cancel(r),
                Out::Piece(r, first) => {
                    let data = &mut block[..r.length as usize];
                    let lengths = st.torrent().lengths();
                    let piece = lengths
                        .validate_piece_index(r.index)
                        .expect("validated when queued");
                    let offset = lengths.piece_offset(piece) + r.begin as u64;
                    st.storage()
                        .read_at(offset, data)
                        .map_err(PeerError::Storage)?;
                    if first {
                        ctx.up_limit.consume_first(r.length as u64).await;
                    } else {
                        ctx.up_limit.consume_after(r.length as u64).await;
                    }
                    trace_sent(ctx, link, &r, Sent::Upload);
                    if let Some(inj) = &ctx.inject {
                        inj.sent(r.index, inject_conn, Instant::now());
                    }
                    Counters::add(&st.counters().uploaded, r.length as u64);
                    Counters::add(&link.counters.uploaded, r.length as u64);
                    Message::Piece(Piece::from_data(r.index, r.begin, data))
                }
                Out::ExtendedHandshake => {
                    let pex = ctx.pex.is_some();
                    len += encode_handshake(
                        &mut buf[len..],
                        listen_port,
                        info.len(),
                        pex,
                        table.is_some(),
                        OurInjection {
                            shares: ctx.shares,
                            injects: ctx.inject.is_some(),
                        },
                        ctx.serves_urgent,
                    );
                    continue;
                }
                Out::Busy(r, retry) => {
                    let Some(id) = link.ext.busy_id() else {
                        continue;
                    };
                    len += busy::encode(&mut buf[len..], id, &r, retry);
                    continue;
                }
                Out::Elsewhere(piece) => {
                    let Some(id) = link.ext.injection().elsewhere else {
                        continue;
                    };
                    len += inject::encode_elsewhere(&mut buf[len..], id, piece);
                    continue;
                }
                Out::BlockTable(piece) => {
                    let Some(id) = link.ext.table_id() else {
                        continue;
                    };
                    len += table_exchange::encode_reply(&mut buf[len..], id, table, piece);
                    continue;
                }
                Out::Pex => {
                    pex_msg = crate::state::lock(&link.pex).take();
                    let Some(p) = &pex_msg else { continue };
                    Message::Extended(ExtendedMessage::UtPex(p.as_borrowed()))
                }
                Out::Metadata(piece) => {
                    Message::Extended(ExtendedMessage::UtMetadata(metadata_reply(info, piece)))
                }
            };
            len += msg
                .serialize(&mut buf[len..], &ext)
                .map_err(|e| PeerError::Protocol(format!("serialize: {e}")))?;
        }
        if len == 0 {
            tokio::select! {
                _ = link.wake_writer.notified() => continue,
                _ = ctx.up_limit.others_free(), if held => continue,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    len = Message::KeepAlive
                        .serialize(&mut buf, &ext)
                        .map_err(|e| PeerError::Protocol(format!("serialize: {e}")))?;
                }
            }
        }
        wr.write_all(&mut buf[..len]).await?;
    }
}
