//! The download side of one connection, as a synchronous state machine.
//!
//! [`Download`] turns what the remote peer says (choke, have, bitfield, blocks) and what the
//! engine wants (demand, plan, background) into block requests, and blocks into stored data. It
//! does no I/O on sockets and no waiting: each call takes the torrent state and an [`Outputs`]
//! to fill with messages for the writer and pieces to announce, which the connection task then
//! hands on. That is why it is unit-tested without sockets.
//!
//! # Requests
//! The picker assigns whole pieces (a peer serves only pieces it announced); inside a piece this
//! connection requests the *wanted* blocks. Blocks a reader waits for are requested at once,
//! beyond the request window, ahead of everything; other wanted blocks keep a delay-based
//! [`RequestWindow`] outstanding (enough to fill the link, a few blocks of queue, so a later
//! demand does not wait behind much). While a demanded piece arrives over another connection,
//! this one asks for nothing else, so it has the downlink. A peer that holds only some blocks
//! of a piece (announced alone, see [`crate::have_block`]) is asked for those a reader waits
//! for, and never for anything else of it.
//!
//! # Arrivals
//! With the torrent's block-hash table, a block someone waits for or plans to read is verified
//! alone (SHA-256), written and published at once: the read it unblocks is answered before the
//! rest of its piece exists. Other blocks (background fill) are assembled in a piece buffer, as
//! is everything without a table. When every block of the piece is received or present, the
//! piece is checked against its SHA-1, written, and announced; only then is it seeded.
//! A block or piece that fails its hash is thrown away and counts a strike against the peer's
//! address; at [`MAX_STRIKES`] the address is banned.
//!
//! # Where the bytes go
//! Every byte received ends in exactly one of [`Counters`]' classes: `useful` (it made a block
//! present), `duplicate` (the block was present or received already: urgent and endgame
//! copies, withdrawn requests answered anyway, a piece completed over another connection),
//! `corrupt` (it failed its hash), `unrequested` (nothing asked for it, or its request was
//! given up), `abandoned` (buffered, then lost unverified: a piece given up without a
//! block-hash table, or a block we could not write).
//!
//! # A peer that chokes us
//! Nothing is asked of it, unless it serves urgent requests (see [`crate::urgent`]): then the
//! blocks a reader waits for, in pieces it holds, are asked of it as urgent requests, at most
//! [`URGENT_QUEUE`] outstanding; never planned or background blocks, but from an injecting
//! seeder the rest of a demanded piece too. A choke voids them like any request; if it
//! unchokes us meanwhile they are ordinary requests from then on.
//!
//! # An injecting seeder
//! From a seeder that injects (see [`crate::inject`]) this connection asks only for demanded
//! and planned pieces, and is interested only while it has one of those to ask; a piece the
//! seeder declines (`vmt_elsewhere`) is treated as not held there for a retry (half the
//! choker's rotation period), so it comes from a peer.
//!
//! # A local storage failure
//! A failed write is our fault, not the peer's: the connection stays, the engine records the
//! failure once ([`TorrentState::fail`]) and every connection stops fetching (it gives its
//! pieces back and tells its peer it is not interested), so nothing is downloaded again and
//! again into a full disk.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use librqbit_core::constants::CHUNK_SIZE;
use librqbit_core::hash_id::Id20;
use peer_binary_protocol::Request;

use crate::bitmap::wire_bit;
use crate::digest::sha1;
use crate::error::{PeerError, SwarmError};
use crate::extension::DEFAULT_REMOTE_REQQ;
use crate::peers::MAX_STRIKES;
use crate::picker::{PickReason, PiecePicker};
use crate::sources::{Source, SourceId};
use crate::state::TorrentState;
use crate::stats::{Counters, PeerCounters};
use crate::urgent::URGENT_QUEUE;
use crate::window::RequestWindow;
use crate::wire::Out;

/// A piece has at most 16 MiB / 16 KiB blocks (the torrent module caps piece length).
const MAX_BLOCKS: usize = 1024;
/// Urgent pieces one fill may start: a bound, so a burst of demands cannot starve the rest.
const MAX_URGENT_STARTS: usize = 8;

/// One bit per block of a piece.
type Mask = crate::bitmap::Bits<[u64; MAX_BLOCKS / 64]>;
const EMPTY: Mask = crate::bitmap::Bits([0; MAX_BLOCKS / 64]);

/// A piece assigned to this connection.
struct Active {
    piece: u32,
    reason: PickReason,
    /// A second copy of a demanded piece another connection fetches: only its urgent blocks
    /// are asked for here, so the two do not both fetch the rest.
    duplicate: bool,
    /// The remote holds only some blocks of the piece (announced with `vmt_have_block`): only
    /// the urgent blocks among those are asked for here.
    partial: bool,
    first: u32,
    blocks: u32,
    /// Requested and not yet answered.
    pending: Mask,
    /// Requests withdrawn so that urgent ones are next at the remote: not asked for again
    /// until those have arrived (by then, whatever the remote had already sent is here too).
    withdrawn: Mask,
    /// In `buf`, not stored yet.
    received: Mask,
    received_bytes: u64,
    /// The piece's bytes as they arrive; empty until the first block.
    buf: Vec<u8>,
}

/// What a call produced besides its state change; the connection drains it.
#[derive(Default)]
pub(crate) struct Outputs {
    /// Messages for the writer, in order.
    pub msgs: Vec<Out>,
    /// Pieces this connection verified first: to announce to every peer.
    pub verified: Vec<u32>,
    /// Blocks a reader waited for that this connection verified alone: to announce to the
    /// peers that take `vmt_have_block` (see [`crate::have_block`]).
    pub blocks: Vec<u32>,
    /// A piece was given back unfinished: other connections may take it up.
    pub released: bool,
}

impl Outputs {
    pub fn clear(&mut self) {
        self.msgs.clear();
        self.verified.clear();
        self.blocks.clear();
        self.released = false;
    }
}

/// See the module doc.
pub(crate) struct Download {
    peer_id: Id20,
    addr: SocketAddr,
    counters: Arc<PeerCounters>,
    remote_has: Vec<u64>,
    peer_choking: bool,
    am_interested: bool,
    active: Vec<Active>,
    /// Block requests sent and not yet answered or cancelled.
    outstanding: usize,
    /// When each outstanding request was sent, in order: (block, sent).
    sent: VecDeque<(u32, Instant)>,
    /// Piece buffers to reuse, so assembling a piece allocates nothing.
    pool: Vec<Vec<u8>>,
    /// Pieces to finish or give back after a fill (decided under the picker lock).
    idle: Vec<u32>,
    /// A block whose message arrived in two parts, joined to be hashed and written.
    scratch: Vec<u8>,
    /// Strikes of the peer's address, shared with its other connections, past and future.
    strikes: Arc<AtomicU32>,
    window: RequestWindow,
    /// Most requests the remote takes without dropping any (its `reqq`, BEP 10): a ceiling on
    /// everything outstanding, demanded blocks included.
    remote_reqq: usize,
    /// This peer as a source on the live map.
    source: SourceId,
    /// The remote is an injecting seeder and we share: demand and plan only.
    injector: bool,
    /// Pieces the remote declined, and when to ask it again, oldest first.
    declined: VecDeque<(u32, Instant)>,
    /// The remote serves urgent requests while it chokes us.
    urgent: bool,
    /// The remote answered an urgent request busy: no more are asked of it until then.
    busy_until: Option<Instant>,
    /// Blocks the remote announced with `vmt_have_block` (its pieces not whole yet); allocated
    /// at its first announcement.
    remote_blocks: Option<Bits>,
    /// Scratch for a fill: demanded pieces of which the remote holds an urgent block, but
    /// not the whole piece.
    partial_demand: Vec<u32>,
}

/// One bit per block of the image.
type Bits = crate::bitmap::Bits<Vec<u64>>;

impl Download {
    pub fn new(
        st: &TorrentState,
        peer_id: Id20,
        addr: SocketAddr,
        counters: Arc<PeerCounters>,
        strikes: Arc<AtomicU32>,
        request_depth: usize,
        now: Instant,
    ) -> Download {
        Download {
            peer_id,
            addr,
            counters,
            remote_has: vec![0; st.storage().bitmap().words()],
            peer_choking: true,
            am_interested: false,
            active: Vec::new(),
            outstanding: 0,
            sent: VecDeque::with_capacity(request_depth.max(64)),
            pool: Vec::new(),
            idle: Vec::new(),
            scratch: Vec::with_capacity(CHUNK_SIZE as usize),
            strikes,
            window: RequestWindow::new(request_depth, now),
            remote_reqq: DEFAULT_REMOTE_REQQ,
            source: st.sources().intern(Source::Peer(addr)),
            injector: false,
            declined: VecDeque::new(),
            urgent: false,
            busy_until: None,
            remote_blocks: None,
            partial_demand: Vec::new(),
        }
    }

    /// The remote is an injecting seeder and we share what we get (see the module doc).
    pub fn set_injector(&mut self, injector: bool) {
        self.injector = injector;
    }

    /// The remote serves urgent requests (`vmt_urgent`), and we ask them.
    pub fn set_urgent(&mut self, urgent: bool) {
        self.urgent = urgent;
    }

    /// The remote declined `piece` (`vmt_elsewhere`): it is not asked for it again until
    /// `retry_at`, and what this connection held of it goes back to the picker.
    pub fn on_elsewhere(
        &mut self,
        st: &TorrentState,
        piece: u32,
        retry_at: Instant,
        out: &mut Outputs,
    ) -> Result<(), PeerError> {
        if piece >= st.layout().pieces() || !self.remote_has(piece) {
            return Ok(());
        }
        self.remote_has[(piece / 64) as usize] &= !(1 << (piece % 64));
        st.picker().remove_availability(piece);
        self.declined.push_back((piece, retry_at));
        Counters::add(&st.counters().declines, 1);
        let Some(k) = self.active.iter().position(|a| a.piece == piece) else {
            return Ok(());
        };
        let mut a = self.active.swap_remove(k);
        self.cancel_pending(st, &mut a, out, |_| true);
        out.released = true;
        self.give_back(st, a)
    }

    /// The remote answered urgent request `r` busy (see [`crate::busy`]): it is dropped, so
    /// the block can be asked elsewhere, and nothing more is asked of the remote urgently
    /// until `retry_at`. Requests it queued stay.
    pub fn on_busy(
        &mut self,
        st: &TorrentState,
        r: Request,
        retry_at: Instant,
        out: &mut Outputs,
    ) -> Result<(), PeerError> {
        Counters::add(&st.counters().busy_received, 1);
        let layout = st.layout();
        let Some(b) = layout.block_at(r.index, r.begin, r.length) else {
            return Ok(());
        };
        let Some(a) = self.active.iter_mut().find(|a| a.piece == r.index) else {
            return Ok(());
        };
        let i = b - a.first;
        if !a.pending.get(i) {
            return Ok(());
        }
        a.pending.clear(i);
        self.outstanding -= 1;
        forget(&mut self.sent, b);
        self.busy_until = Some(self.busy_until.map_or(retry_at, |t| t.max(retry_at)));
        // Given back by the fill's step 4 if nothing else is pending here: another
        // connection takes it up.
        out.released = true;
        Ok(())
    }

    /// When the oldest decline, or the remote's busy answer, lapses.
    pub fn next_retry(&self) -> Option<Instant> {
        let decline = self.declined.front().map(|&(_, at)| at);
        match (decline, self.busy_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The remote has again the pieces whose decline lapsed by `now`, and takes urgent
    /// requests again if its busy answer lapsed.
    pub fn retry_declined(&mut self, st: &TorrentState, now: Instant) {
        if self.busy_until.is_some_and(|t| t <= now) {
            self.busy_until = None;
        }
        while let Some(&(piece, at)) = self.declined.front() {
            if at > now {
                break;
            }
            self.declined.pop_front();
            self.on_have(st, piece);
        }
    }

    /// Calls `f` with every piece the remote announced.
    pub fn each_remote_piece(&self, mut f: impl FnMut(u32)) {
        for (w, &word) in self.remote_has.iter().enumerate() {
            let mut m = word;
            while m != 0 {
                f((w * 64) as u32 + m.trailing_zeros());
                m &= m - 1;
            }
        }
    }

    /// The remote's `reqq` (from its extended handshake): never more requests outstanding.
    pub fn set_remote_reqq(&mut self, reqq: usize) {
        self.remote_reqq = reqq.max(1);
    }

    /// The remote's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests sent and not answered: the connection's snub timer runs while this is positive.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Whether the peer feeds us or can: it has pieces we want and does not choke us.
    pub fn is_fed(&self) -> bool {
        self.am_interested && !self.peer_choking
    }

    fn remote_has(&self, i: u32) -> bool {
        self.remote_has[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// The remote announced `piece`; false if it was known (or out of range).
    pub fn on_have(&mut self, st: &TorrentState, piece: u32) -> bool {
        if piece >= st.layout().pieces() || self.remote_has(piece) {
            return false;
        }
        self.remote_has[(piece / 64) as usize] |= 1 << (piece % 64);
        st.picker().add_availability(piece);
        for a in &mut self.active {
            if a.piece == piece {
                a.partial = false;
            }
        }
        true
    }

    /// The remote announced `block`, verified alone (see [`crate::have_block`]); ignored if it
    /// is out of range or its piece is held whole there.
    pub fn on_have_block(&mut self, st: &TorrentState, block: u32) {
        let layout = st.layout();
        if block >= layout.blocks() || self.remote_has(layout.piece_of(block)) {
            return;
        }
        self.remote_blocks
            .get_or_insert_with(|| {
                crate::bitmap::Bits(vec![0; layout.blocks().div_ceil(64) as usize])
            })
            .set(block);
    }

    /// Whether the remote announced `block` alone.
    fn remote_block(&self, block: u32) -> bool {
        self.remote_blocks.as_ref().is_some_and(|r| r.get(block))
    }

    /// The remote's bitfield (its first message).
    pub fn on_bitfield(&mut self, st: &TorrentState, bits: &[u8]) -> Result<(), PeerError> {
        let n = st.layout().pieces();
        if bits.len() != (n as usize).div_ceil(8) {
            return Err(PeerError::Protocol(format!(
                "bitfield of {} bytes",
                bits.len()
            )));
        }
        // One lock for the whole bitfield, not one per piece.
        let mut picker = st.picker();
        for i in 0..n {
            if wire_bit(bits, i) && !self.remote_has(i) {
                self.remote_has[(i / 64) as usize] |= 1 << (i % 64);
                picker.add_availability(i);
            }
        }
        Ok(())
    }

    /// The remote choked us: our requests are void.
    pub fn on_choke(&mut self, st: &TorrentState, out: &mut Outputs) -> Result<(), PeerError> {
        self.peer_choking = true;
        out.released |= !self.active.is_empty();
        self.outstanding = 0;
        self.sent.clear();
        let mut result = Ok(());
        for a in std::mem::take(&mut self.active) {
            let r = self.give_back(st, a);
            result = result.and(r);
        }
        result
    }

    /// The remote unchoked us.
    pub fn on_unchoke(&mut self) {
        self.peer_choking = false;
    }

    /// A block arrived: `data` in two parts (the receive buffer may wrap).
    pub fn on_block(
        &mut self,
        st: &TorrentState,
        piece: u32,
        begin: u32,
        data: (&[u8], &[u8]),
        now: Instant,
        out: &mut Outputs,
    ) -> Result<(), PeerError> {
        let len = (data.0.len() + data.1.len()) as u32;
        Counters::add(&st.counters().downloaded, len as u64);
        Counters::add(&self.counters.downloaded, len as u64);
        let layout = *st.layout();
        let slot = layout
            .block_at(piece, begin, len)
            .and_then(|b| Some((b, self.active.iter().position(|a| a.piece == piece)?)));
        let Some((b, k)) = slot else {
            // Unasked for, or a piece given up meanwhile.
            let c = st.counters();
            let copy = layout
                .block_at(piece, begin, len)
                .is_some_and(|b| st.storage().has_block(b));
            Counters::add(if copy { &c.duplicate } else { &c.unrequested }, len as u64);
            return Ok(());
        };
        let a = &mut self.active[k];
        let i = b - a.first;
        a.withdrawn.clear(i);
        if a.pending.get(i) {
            a.pending.clear(i);
            self.outstanding -= 1;
            if let Some(sent) = forget(&mut self.sent, b) {
                self.window
                    .on_answer(now.duration_since(sent), self.outstanding, now);
            }
        }
        if a.received.get(i) || st.storage().has_block(b) {
            Counters::add(&st.counters().duplicate, len as u64);
            return Ok(());
        }
        if st.has_failed() {
            // Already asked for when storage failed: nowhere to put it.
            Counters::add(&st.counters().abandoned, len as u64);
            return Ok(());
        }
        let (demanded, planned) = {
            let picker = st.picker();
            (picker.is_block_demanded(b), picker.is_block_planned(b))
        };
        let alone = st.block_hashes().is_some() && (demanded || planned);
        if alone {
            // Someone waits for it, or will soon read it: verified and readable now, written
            // straight from the message (no piece buffer for a piece fetched for a few blocks).
            let mut scratch = std::mem::take(&mut self.scratch);
            let block = if data.1.is_empty() {
                data.0
            } else {
                scratch.clear();
                scratch.extend_from_slice(data.0);
                scratch.extend_from_slice(data.1);
                &scratch[..]
            };
            let announce = demanded.then_some(&mut out.blocks);
            let stored = self.store_alone(st, b, block, announce);
            self.scratch = scratch;
            if !stored? {
                return Ok(());
            }
        } else {
            let a = &mut self.active[k];
            if a.buf.is_empty() {
                a.buf = self.pool.pop().unwrap_or_default();
                a.buf.resize(layout.piece_len() as usize, 0);
            }
            let at = (i * layout.block_len()) as usize;
            a.buf[at..at + data.0.len()].copy_from_slice(data.0);
            a.buf[at + data.0.len()..at + len as usize].copy_from_slice(data.1);
            a.received.set(i);
            a.received_bytes += len as u64;
        }
        if self.is_whole(st, k) {
            let a = self.active.swap_remove(k);
            self.finish(st, a, out)?;
        }
        Ok(())
    }

    /// Verifies one block against the block-hash table and stores it. Ok(false): it was not
    /// stored (corrupt: thrown away, the peer struck, it stays wanted and is asked for again;
    /// or storage failed). A new block is added to `announce`, if given.
    fn store_alone(
        &mut self,
        st: &TorrentState,
        b: u32,
        data: &[u8],
        announce: Option<&mut Vec<u32>>,
    ) -> Result<bool, PeerError> {
        let len = data.len() as u64;
        let ok = st.block_hashes().is_some_and(|h| h.verify(b, data));
        if !ok {
            Counters::add(&st.counters().corrupt, len);
            self.strike(st, format_args!("block {b}"))?;
            return Ok(false);
        }
        if st.has_failed() {
            Counters::add(&st.counters().abandoned, len);
            return Ok(false);
        }
        if let Err(e) = st.storage().write_block(b, data) {
            Counters::add(&st.counters().abandoned, len);
            storage_failed(st, e);
            return Ok(false);
        }
        let new = st.block_stored(b);
        if new {
            st.sources().record(st.layout().piece_of(b), self.source);
            if let Some(announce) = announce {
                announce.push(b);
            }
        }
        Counters::add(
            if new {
                &st.counters().useful
            } else {
                &st.counters().duplicate
            },
            len,
        );
        Ok(true)
    }

    /// A corrupt block or piece from this peer; Err once its address is to be banned.
    fn strike(&mut self, st: &TorrentState, what: std::fmt::Arguments) -> Result<(), PeerError> {
        st.counters().hash_failures.fetch_add(1, Ordering::Relaxed);
        self.counters.hash_failures.fetch_add(1, Ordering::Relaxed);
        let strikes = self.strikes.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            peer = %self.peer_id.as_string(), addr = %self.addr,
            "{what} failed verification ({strikes} of {MAX_STRIKES} strikes of its address)"
        );
        if strikes >= MAX_STRIKES {
            return Err(PeerError::Banned);
        }
        Ok(())
    }

    /// Whether every block of active piece `k` is received here or present.
    fn is_whole(&self, st: &TorrentState, k: usize) -> bool {
        let a = &self.active[k];
        (0..a.blocks).all(|i| a.received.get(i) || st.storage().has_block(a.first + i))
    }

    /// Checks a whole piece against its SHA-1; stores and announces it if good.
    fn finish(
        &mut self,
        st: &TorrentState,
        mut a: Active,
        out: &mut Outputs,
    ) -> Result<(), PeerError> {
        let layout = *st.layout();
        let piece = st
            .torrent()
            .piece(a.piece)
            .expect("the picker only knows valid pieces");
        self.cancel_pending(st, &mut a, out, |_| true);
        if a.buf.is_empty() {
            a.buf = self.pool.pop().unwrap_or_default();
            a.buf.resize(layout.piece_len() as usize, 0);
        }
        let size = layout.piece_size(a.piece) as usize;
        let bl = layout.block_len() as usize;
        let c = st.counters();
        // Blocks stored alone are on disk, not in the buffer.
        for i in 0..a.blocks {
            if !a.received.get(i) {
                let at = i as usize * bl;
                let end = (at + bl).min(size);
                let read = st
                    .storage()
                    .read_at(layout.block_offset(a.first + i), &mut a.buf[at..end]);
                if let Err(e) = read {
                    storage_failed(st, e);
                    Counters::add(&c.abandoned, a.received_bytes);
                    self.drop_piece(st, a, out);
                    return Ok(());
                }
            }
        }
        if sha1(&a.buf[..size]) == *st.torrent().piece_hash(piece) {
            if let Err(e) = st.storage().write_piece(piece, &a.buf[..size]) {
                storage_failed(st, e);
                Counters::add(&c.abandoned, a.received_bytes);
                self.drop_piece(st, a, out);
                return Ok(());
            }
            let (first, new_bytes) = st.piece_stored(piece, true);
            // `first`: false when another connection of ours completed the piece meanwhile
            // (its copy was the duplicate); `datasets/piece-timeline.py` counts first ones.
            tracing::trace!(piece = a.piece, reason = ?a.reason, first, "piece verified");
            if new_bytes > 0 {
                st.sources().record(a.piece, self.source);
            }
            if first {
                out.verified.push(a.piece);
            }
            // Only received blocks can be new: the others were present (`is_whole`).
            Counters::add(&c.useful, new_bytes);
            Counters::add(&c.duplicate, a.received_bytes - new_bytes);
            self.pool.push(std::mem::take(&mut a.buf));
            return Ok(());
        }
        // With a table, find which blocks were bad and keep the good ones.
        let bad_here = match st.block_hashes() {
            Some(table) => {
                let mut bad = false;
                for i in (0..a.blocks).filter(|&i| a.received.get(i)) {
                    let b = a.first + i;
                    let at = i as usize * bl;
                    let block = &a.buf[at..(at + bl).min(size)];
                    let len = block.len() as u64;
                    if !table.verify(b, block) {
                        bad = true;
                        Counters::add(&c.corrupt, len);
                    } else if st.has_failed() {
                        Counters::add(&c.abandoned, len);
                    } else if let Err(e) = st.storage().write_block(b, block) {
                        storage_failed(st, e);
                        Counters::add(&c.abandoned, len);
                    } else if st.block_stored(b) {
                        st.sources().record(a.piece, self.source);
                        Counters::add(&c.useful, len);
                    } else {
                        Counters::add(&c.duplicate, len);
                    }
                }
                if !bad {
                    tracing::error!(
                        piece = a.piece,
                        "every block matches the block-hash table but the piece does not \
                         match its SHA-1: the torrent's two hash lists disagree"
                    );
                }
                bad
            }
            None => {
                Counters::add(&c.corrupt, a.received_bytes);
                true
            }
        };
        let bad_piece = a.piece;
        self.drop_piece(st, a, out);
        if bad_here {
            self.strike(st, format_args!("piece {bad_piece}"))
        } else {
            Ok(())
        }
    }

    /// Gives the assignment of a piece back to the picker without keeping anything of it; its
    /// received bytes are accounted for by the caller.
    fn drop_piece(&mut self, st: &TorrentState, mut a: Active, out: &mut Outputs) {
        st.picker().release(a.piece);
        out.released = true;
        if !a.buf.is_empty() {
            self.pool.push(std::mem::take(&mut a.buf));
        }
    }

    /// Gives back an unfinished piece. With a table its received blocks are verified and kept
    /// (they were fetched once already); without one, or from a banned address, they are lost.
    fn give_back(&mut self, st: &TorrentState, mut a: Active) -> Result<(), PeerError> {
        let mut result = Ok(());
        if st.block_hashes().is_some() {
            let layout = *st.layout();
            let bl = layout.block_len() as usize;
            for i in (0..a.blocks).filter(|&i| a.received.get(i)) {
                let b = a.first + i;
                let at = i as usize * bl;
                let block = &a.buf[at..at + layout.block_size(b) as usize];
                if self.strikes.load(Ordering::Relaxed) >= MAX_STRIKES {
                    // Banned meanwhile: nothing more of it is looked at.
                    Counters::add(&st.counters().abandoned, block.len() as u64);
                } else if let Err(e) = self.store_alone(st, b, block, None) {
                    result = Err(e);
                }
            }
        } else {
            Counters::add(&st.counters().abandoned, a.received_bytes);
        }
        st.picker().release(a.piece);
        if !a.buf.is_empty() {
            self.pool.push(std::mem::take(&mut a.buf));
        }
        result
    }

    /// Withdraws pending requests of `a` for which `which(block)` holds.
    fn cancel_pending(
        &mut self,
        st: &TorrentState,
        a: &mut Active,
        out: &mut Outputs,
        which: impl Fn(u32) -> bool,
    ) {
        let pending = Pending {
            outstanding: &mut self.outstanding,
            sent: &mut self.sent,
        };
        pending.cancel(a, st.layout(), out, which, false);
    }

    /// Something changed elsewhere (a piece or block verified through another peer, a demand,
    /// a plan): drops work that is done, stores buffered blocks a reader now waits for.
    pub fn on_wake(&mut self, st: &TorrentState, out: &mut Outputs) -> Result<(), PeerError> {
        if st.has_failed() {
            return self.stop_fetching(st, out);
        }
        let mut k = 0;
        while k < self.active.len() {
            let piece = self.active[k].piece;
            if st.storage().has_piece(piece) {
                let mut a = self.active.swap_remove(k);
                self.cancel_pending(st, &mut a, out, |_| true);
                // Verified over another connection: what this one buffered came twice.
                Counters::add(&st.counters().duplicate, a.received_bytes);
                st.picker().release(piece);
                if !a.buf.is_empty() {
                    self.pool.push(a.buf);
                }
                continue;
            }
            let mut a = std::mem::replace(&mut self.active[k], Active::placeholder());
            self.cancel_pending(st, &mut a, out, |b| st.storage().has_block(b));
            if st.block_hashes().is_some() && !a.received.is_empty() {
                let demanded = {
                    let picker = st.picker();
                    let mut any = EMPTY;
                    for i in 0..a.blocks {
                        if a.received.get(i) && picker.is_block_demanded(a.first + i) {
                            any.set(i);
                        }
                    }
                    any
                };
                if !demanded.is_empty() {
                    let bl = st.layout().block_len() as usize;
                    for i in 0..a.blocks {
                        if demanded.get(i) {
                            let b = a.first + i;
                            a.received.clear(i);
                            a.received_bytes -= st.layout().block_size(b) as u64;
                            let at = i as usize * bl;
                            let block = &a.buf[at..at + st.layout().block_size(b) as usize];
                            let r = self.store_alone(st, b, block, Some(&mut out.blocks));
                            if let Err(e) = r {
                                self.active[k] = a;
                                return Err(e);
                            }
                        }
                    }
                }
            }
            self.active[k] = a;
            k += 1;
        }
        Ok(())
    }

    /// Local storage failed: withdraws every request and gives every piece back (see the
    /// module doc).
    fn stop_fetching(&mut self, st: &TorrentState, out: &mut Outputs) -> Result<(), PeerError> {
        let mut result = Ok(());
        for mut a in std::mem::take(&mut self.active) {
            self.cancel_pending(st, &mut a, out, |_| true);
            out.released = true;
            let r = self.give_back(st, a);
            result = result.and(r);
        }
        result
    }

    /// Sends Interested or NotInterested when that changes (never interested once local
    /// storage failed).
    pub fn update_interest(&mut self, st: &TorrentState, out: &mut Outputs) {
        let have = st.storage().bitmap();
        let has = &self.remote_has;
        let wants = !st.has_failed()
            && if self.injector {
                // Still fetching here, or a demanded or planned piece it may give.
                !self.active.is_empty()
                    || st
                        .picker()
                        .wants_demand_or_plan(|i| has[(i / 64) as usize] & (1 << (i % 64)) != 0)
            } else {
                (0..has.len()).any(|k| has[k] & !have.word(k) != 0)
            };
        if wants != self.am_interested {
            self.am_interested = wants;
            out.msgs.push(if wants {
                Out::Interested
            } else {
                Out::NotInterested
            });
        }
    }

    /// Sends the requests the state calls for now (see the module doc).
    pub fn fill(
        &mut self,
        st: &TorrentState,
        now: Instant,
        out: &mut Outputs,
    ) -> Result<(), PeerError> {
        if st.has_failed() {
            return self.stop_fetching(st, out);
        }
        // A peer holding only blocks of pieces (announced alone) leaves us not interested, yet
        // may give a reader's block.
        if !(self.am_interested || self.remote_blocks.is_some())
            || (self.peer_choking && !self.urgent)
        {
            return Ok(());
        }
        {
            let mut picker = st.picker();
            self.decide(&mut picker, now, out);
        }
        // Outside the picker lock: finishing and giving back take it themselves.
        while let Some(piece) = self.idle.pop() {
            let Some(k) = self.active.iter().position(|a| a.piece == piece) else {
                continue;
            };
            let whole = self.is_whole(st, k);
            let a = self.active.swap_remove(k);
            if whole {
                self.finish(st, a, out)?;
            } else {
                out.released = true;
                self.give_back(st, a)?;
            }
        }
        Ok(())
    }

    fn decide(&mut self, picker: &mut PiecePicker, now: Instant, out: &mut Outputs) {
        let layout = *picker.layout();
        // Choked (the remote serves urgent requests): only blocks a reader waits for, none
        // while it said it is busy.
        let ceiling = if self.peer_choking && self.busy_until.is_some() {
            0
        } else if self.peer_choking {
            self.remote_reqq.min(URGENT_QUEUE)
        } else {
            self.remote_reqq
        };
        if !self.urgent_pending(picker) {
            for a in &mut self.active {
                a.withdrawn = EMPTY;
            }
        }
        // 1. Blocks a reader waits for, in pieces this connection holds: now, beyond the window.
        let mut issued_urgent = false;
        for k in 0..self.active.len() {
            let (piece, first, blocks) = {
                let a = &self.active[k];
                (a.piece, a.first, a.blocks)
            };
            if !picker.is_demanded(piece) {
                continue;
            }
            for i in 0..blocks {
                let b = first + i;
                if picker.is_block_urgent(b)
                    && !self.active[k].pending.get(i)
                    && !self.active[k].received.get(i)
                    && (!self.active[k].partial || self.remote_block(b))
                    && self.outstanding < ceiling
                {
                    issued_urgent = true;
                    self.request(&layout, k, b, true, now, out);
                }
            }
        }
        // 2. Demanded pieces nobody here holds yet (or a slow peer holds), whole or the
        // blocks a reader waits for.
        self.find_partial_demand(picker);
        for _ in 0..MAX_URGENT_STARTS {
            if self.outstanding >= ceiling {
                break;
            }
            let (has, active, partial) = (&self.remote_has, &self.active, &self.partial_demand);
            let pick = picker.pick(
                |i| has[(i / 64) as usize] & (1 << (i % 64)) != 0 || partial.contains(&i),
                |i| active.iter().any(|a| a.piece == i),
                true,
            );
            let Some(pick) = pick else { break };
            let duplicate = picker.copies(pick.piece) > 1;
            let partial = !self.remote_has(pick.piece);
            let k = self.start(&layout, pick.piece, pick.reason, duplicate, partial);
            for b in layout.piece_blocks(pick.piece) {
                if picker.is_block_urgent(b)
                    && (!partial || self.remote_block(b))
                    && self.outstanding < ceiling
                {
                    issued_urgent = true;
                    self.request(&layout, k, b, true, now, out);
                }
            }
        }
        // The remote answers in order: withdraw the requests queued there that nobody waits
        // for, so the urgent ones just sent come next instead of after them.
        if issued_urgent {
            self.withdraw_background(picker, &layout, out);
        }
        // 2b. Choked by an injecting seeder: the rest of each demanded piece started here,
        // urgently too, after the blocks the reader waits for. The seeder declines the piece to
        // every other sharing peer while it sends it here, so the crowd can only fetch it from
        // us once we hold it whole; given back, it would wait for a slot of ours at the seeder
        // (or its decline's retry), and with it every other reader of the piece.
        if self.peer_choking && self.injector {
            self.ask_rest_of_demanded(picker, &layout, ceiling, now, out);
        }
        // 3. Other wanted blocks within the window, unless a demanded block is arriving: over
        // another connection, background here would share our downlink with it; over this
        // one, it would queue at the remote ahead of the reader's next miss (misses come in
        // bursts). Between bursts (the reader computes) the window refills.
        // Planned blocks come first. Alone with one peer, the planned blocks of further plan
        // pieces come before the rest of the pieces held: fetching each planned piece whole
        // would spend the link on bytes nobody is about to read. With several peers, the
        // rest of the pieces held comes first, wanted or not (see `wanted_here`): only whole
        // pieces can be traded, and a crowd whose members hold partial pieces all wait on the
        // seeder.
        let hold_back = picker.demand_in_flight() || self.peer_choking;
        let whole_first = picker.has_several_peers();
        let depth = self.window.depth().min(self.remote_reqq);
        while !hold_back && self.outstanding < depth {
            if let Some((k, b)) = self.next_wanted(picker, true) {
                self.request(&layout, k, b, false, now, out);
                continue;
            }
            if whole_first {
                if let Some((k, b)) = self.next_wanted(picker, false) {
                    self.request(&layout, k, b, false, now, out);
                    continue;
                }
            }
            if self.start_pick(picker, &layout, PickReason::Plan) {
                continue;
            }
            if let Some((k, b)) = self.next_wanted(picker, false) {
                self.request(&layout, k, b, false, now, out);
                continue;
            }
            // An injecting seeder is asked for demanded and planned pieces only.
            if self.injector || !self.start_pick(picker, &layout, PickReason::Endgame) {
                break;
            }
        }
        // 4. Pieces with nothing pending and nothing more wanted here (choked: nothing more
        // asked here, so an unchoked connection takes the rest up): finish or give back.
        let remote = self.remote_blocks.as_ref();
        for a in &self.active {
            if a.pending.is_empty()
                && a.withdrawn.is_empty()
                && (self.peer_choking
                    || !(0..a.blocks)
                        .any(|i| !a.received.get(i) && wanted_here(picker, a, a.first + i, remote)))
            {
                self.idle.push(a.piece);
            }
        }
    }

    /// Collects in `partial_demand` the demanded pieces the remote does not hold whole but of
    /// which it announced an urgent block.
    fn find_partial_demand(&mut self, picker: &PiecePicker) {
        self.partial_demand.clear();
        let Some(rb) = &self.remote_blocks else {
            return;
        };
        let layout = picker.layout();
        for &p in picker.demanded_pieces() {
            let has = self.remote_has[(p / 64) as usize] & (1 << (p % 64)) != 0;
            if !has
                && layout
                    .piece_blocks(p)
                    .any(|b| rb.get(b) && picker.is_block_urgent(b))
            {
                self.partial_demand.push(p);
            }
        }
    }

    /// Asks for every missing block of the demanded pieces started here (not duplicates) that
    /// is neither pending, received nor withdrawn, up to `ceiling` outstanding.
    fn ask_rest_of_demanded(
        &mut self,
        picker: &PiecePicker,
        layout: &crate::layout::Layout,
        ceiling: usize,
        now: Instant,
        out: &mut Outputs,
    ) {
        for k in 0..self.active.len() {
            let a = &self.active[k];
            if a.duplicate || a.partial || !picker.is_demanded(a.piece) {
                continue;
            }
            let (first, blocks) = (a.first, a.blocks);
            for i in 0..blocks {
                if self.outstanding >= ceiling {
                    return;
                }
                let a = &self.active[k];
                if !a.pending.get(i)
                    && !a.received.get(i)
                    && !a.withdrawn.get(i)
                    && !picker.is_present(first + i)
                {
                    self.request(layout, k, first + i, false, now, out);
                }
            }
        }
    }

    /// Whether an urgent block is requested here and not yet answered.
    fn urgent_pending(&self, picker: &PiecePicker) -> bool {
        self.active.iter().any(|a| {
            !a.pending.is_empty()
                && picker.is_demanded(a.piece)
                && (0..a.blocks).any(|i| a.pending.get(i) && picker.is_block_urgent(a.first + i))
        })
    }

    /// Cancels every pending request nobody waits for (see [`Active::withdrawn`]).
    fn withdraw_background(
        &mut self,
        picker: &PiecePicker,
        layout: &crate::layout::Layout,
        out: &mut Outputs,
    ) {
        for a in &mut self.active {
            let pending = Pending {
                outstanding: &mut self.outstanding,
                sent: &mut self.sent,
            };
            pending.cancel(a, layout, out, |b| !picker.is_block_urgent(b), true);
        }
    }

    /// The first wanted block not yet asked for (only planned ones if `planned`), in the
    /// order pieces were started.
    fn next_wanted(&self, picker: &PiecePicker, planned: bool) -> Option<(usize, u32)> {
        self.active.iter().enumerate().find_map(|(k, a)| {
            (0..a.blocks)
                .find(|&i| {
                    let b = a.first + i;
                    !a.pending.get(i)
                        && !a.withdrawn.get(i)
                        && !a.received.get(i)
                        && wanted_here(picker, a, b, self.remote_blocks.as_ref())
                        && (!planned || picker.is_block_planned(b))
                })
                .map(|i| (k, a.first + i))
        })
    }

    /// Takes up a new piece of a class up to `upto`; false if there is none.
    fn start_pick(
        &mut self,
        picker: &mut PiecePicker,
        layout: &crate::layout::Layout,
        upto: PickReason,
    ) -> bool {
        let (has, active) = (&self.remote_has, &self.active);
        let pick = picker.pick_upto(
            |i| has[(i / 64) as usize] & (1 << (i % 64)) != 0,
            |i| active.iter().any(|a| a.piece == i),
            upto,
        );
        match pick {
            Some(pick) => {
                self.start(layout, pick.piece, pick.reason, false, false);
                true
            }
            None => false,
        }
    }

    fn start(
        &mut self,
        layout: &crate::layout::Layout,
        piece: u32,
        reason: PickReason,
        duplicate: bool,
        partial: bool,
    ) -> usize {
        let blocks = layout.piece_blocks(piece);
        self.active.push(Active {
            piece,
            reason,
            duplicate,
            partial,
            first: blocks.start,
            blocks: blocks.len() as u32,
            pending: EMPTY,
            withdrawn: EMPTY,
            received: EMPTY,
            received_bytes: 0,
            buf: Vec::new(),
        });
        self.active.len() - 1
    }

    /// Asks for block `b` of active piece `k`: as an urgent request (see [`crate::urgent`])
    /// if the remote chokes us, or if a reader `waits` for it and the remote serves urgent
    /// requests, which it then sends before the blocks nobody waits for.
    fn request(
        &mut self,
        layout: &crate::layout::Layout,
        k: usize,
        b: u32,
        waits: bool,
        now: Instant,
        out: &mut Outputs,
    ) {
        let a = &mut self.active[k];
        a.pending.set(b - a.first);
        self.outstanding += 1;
        self.sent.push_back((b, now));
        let r = Request::new(a.piece, layout.begin_in_piece(b), layout.block_size(b));
        out.msgs
            .push(if self.peer_choking || (waits && self.urgent) {
                Out::Urgent(r)
            } else {
                Out::Request(r)
            });
    }

    /// Returns assignments and availability when the connection ends.
    pub fn close(&mut self, st: &TorrentState) {
        for a in std::mem::take(&mut self.active) {
            // Blocks that fail here were from a peer that is going anyway.
            let _ = self.give_back(st, a);
        }
        let mut picker = st.picker();
        for i in 0..st.layout().pieces() {
            if self.remote_has(i) {
                picker.remove_availability(i);
            }
        }
    }
}

impl Active {
    /// Holds a slot while its piece is worked on outside the vector.
    fn placeholder() -> Active {
        Active {
            piece: u32::MAX,
            reason: PickReason::Rarest,
            duplicate: false,
            partial: false,
            first: 0,
            blocks: 0,
            pending: EMPTY,
            withdrawn: EMPTY,
            received: EMPTY,
            received_bytes: 0,
            buf: Vec::new(),
        }
    }
}

/// Whether this connection should fetch `b` of `a`: of a piece the remote holds in part, its
/// urgent blocks there (`remote`: the blocks it announced); a duplicate copy only its urgent
/// blocks; with several peers connected every missing block (a started piece is finished, so
/// it can be traded); otherwise the wanted ones.
fn wanted_here(picker: &PiecePicker, a: &Active, b: u32, remote: Option<&Bits>) -> bool {
    if a.partial {
        picker.is_block_urgent(b) && remote.is_some_and(|r| r.get(b))
    } else if a.duplicate {
        picker.is_block_urgent(b)
    } else if picker.has_several_peers() {
        !picker.is_present(b)
    } else {
        picker.block_wanted(b)
    }
}

/// A write or read of the local image failed: the engine stops fetching (reported once).
fn storage_failed(st: &TorrentState, source: std::io::Error) {
    st.fail(SwarmError::WriteFailed {
        path: st.storage().path().to_owned(),
        source,
    });
}

/// Removes the send record of a request (answered or cancelled); when it was sent.
/// A connection's count and log of requests in flight, borrowed apart from its pieces so a
/// loop over the pieces can cancel requests.
struct Pending<'a> {
    outstanding: &'a mut usize,
    sent: &'a mut VecDeque<(u32, Instant)>,
}

impl Pending<'_> {
    /// Cancels `a`'s pending requests for which `which(block)` holds; `withdrawn` marks them
    /// as withdrawn (asked again only if someone comes to wait for them).
    fn cancel(
        self,
        a: &mut Active,
        layout: &crate::layout::Layout,
        out: &mut Outputs,
        which: impl Fn(u32) -> bool,
        withdrawn: bool,
    ) {
        if a.pending.is_empty() {
            return;
        }
        for i in 0..a.blocks {
            let b = a.first + i;
            if a.pending.get(i) && which(b) {
                a.pending.clear(i);
                if withdrawn {
                    a.withdrawn.set(i);
                }
                *self.outstanding -= 1;
                forget(self.sent, b);
                out.msgs.push(Out::Cancel(Request::new(
                    a.piece,
                    layout.begin_in_piece(b),
                    layout.block_size(b),
                )));
            }
        }
    }
}

fn forget(sent: &mut VecDeque<(u32, Instant)>, block: u32) -> Option<Instant> {
    // Answers come in request order, so this is almost always the front.
    let k = sent.iter().position(|&(b, _)| b == block)?;
    sent.remove(k).map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use crate::storage::Storage;
    use crate::testutil::{make_torrent, random_image, stock_torrent};

    const PIECE: u32 = 4 * 16384;

    /// A fresh download of a 6-piece image (5 full pieces and a short one).
    struct Fixture {
        _dir: tempfile::TempDir,
        st: TorrentState,
        data: Vec<u8>,
    }

    fn fixture(table: bool, fetch_all: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (img, data) = random_image(dir.path(), 5 * PIECE as usize + 20_000, 9);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let torrent = if table {
            rt.block_on(make_torrent(&img, PIECE))
        } else {
            rt.block_on(stock_torrent(&img, PIECE))
        };
        assert_eq!(torrent.block_hashes().is_some(), table);
        let out = dir.path().join("out.img");
        let (storage, _) =
            Storage::open_download(&out, &torrent, &dir.path().join("out.bits")).unwrap();
        let mut picker = PiecePicker::new(*storage.layout(), 1, table);
        for i in 0..storage.layout().pieces() {
            picker.set_wanted(i, fetch_all);
        }
        let st = TorrentState::new(torrent, storage, picker, None);
        Fixture {
            _dir: dir,
            st,
            data,
        }
    }

    impl Fixture {
        fn layout(&self) -> Layout {
            *self.st.layout()
        }

        /// A download from a peer that has told us nothing yet (it chokes us).
        fn fresh(&self) -> Download {
            Download::new(
                &self.st,
                Id20::new([7; 20]),
                "127.0.0.1:1".parse().unwrap(),
                Arc::default(),
                Arc::default(),
                256,
                Instant::now(),
            )
        }

        /// A download from a peer that has every piece and has unchoked us.
        fn connected(&self) -> (Download, Outputs) {
            let mut d = self.fresh();
            let mut out = Outputs::default();
            let n = self.layout().pieces();
            let mut bits = vec![0xffu8; (n as usize).div_ceil(8)];
            *bits.last_mut().unwrap() = 0xff << (bits.len() as u32 * 8 - n);
            d.on_bitfield(&self.st, &bits).unwrap();
            d.on_unchoke();
            d.update_interest(&self.st, &mut out);
            assert!(matches!(out.msgs[..], [Out::Interested]));
            out.clear();
            (d, out)
        }

        /// The blocks requested in `out` with ordinary requests, in order.
        fn requested(&self, out: &Outputs) -> Vec<u32> {
            self.asked(out, false)
        }

        /// The blocks requested in `out`, in order: with urgent requests if `urgent`, else with
        /// ordinary ones.
        fn asked(&self, out: &Outputs, urgent: bool) -> Vec<u32> {
            out.msgs
                .iter()
                .filter_map(|m| match (m, urgent) {
                    (Out::Request(r), false) | (Out::Urgent(r), true) => {
                        self.layout().block_at(r.index, r.begin, r.length)
                    }
                    _ => None,
                })
                .collect()
        }

        /// Answers block `b` with the image's bytes (or `corrupt` ones).
        fn answer(
            &self,
            d: &mut Download,
            b: u32,
            corrupt: bool,
            out: &mut Outputs,
        ) -> Result<(), PeerError> {
            let l = self.layout();
            let at = l.block_offset(b) as usize;
            let mut bytes = self.data[at..at + l.block_size(b) as usize].to_vec();
            if corrupt {
                bytes[7] ^= 1;
            }
            let (x, y) = bytes.split_at(100);
            d.on_block(
                &self.st,
                l.piece_of(b),
                l.begin_in_piece(b),
                (x, y),
                Instant::now(),
                out,
            )
        }

        fn stored(&self, b: u32) -> bool {
            let l = self.layout();
            let mut buf = vec![0u8; l.block_size(b) as usize];
            self.st
                .storage()
                .read_at(l.block_offset(b), &mut buf)
                .unwrap();
            let at = l.block_offset(b) as usize;
            self.st.storage().has_block(b) && buf == self.data[at..at + buf.len()]
        }
    }

    #[test]
    fn fetches_everything_within_the_window_and_verifies_pieces() {
        let f = fixture(true, true);
        let (mut d, mut out) = f.connected();
        let mut verified = Vec::new();
        for round in 0..100 {
            d.fill(&f.st, Instant::now(), &mut out).unwrap();
            let asked = f.requested(&out);
            if round == 0 {
                assert_eq!(d.outstanding(), 8, "the initial window is 8 blocks");
            }
            // Each round is answered at once, so the window grows; it is never exceeded.
            assert!(d.outstanding() <= d.window.depth(), "beyond the window");
            verified.append(&mut out.verified);
            out.clear();
            if asked.is_empty() && d.outstanding() == 0 {
                break;
            }
            for b in asked {
                f.answer(&mut d, b, false, &mut out).unwrap();
            }
        }
        verified.append(&mut out.verified);
        verified.sort();
        assert_eq!(verified, (0..f.layout().pieces()).collect::<Vec<_>>());
        assert!(f.st.storage().is_complete());
        assert!((0..f.layout().blocks()).all(|b| f.stored(b)));
    }

    #[test]
    fn every_received_byte_is_accounted_for() {
        let f = fixture(true, true);
        let (mut d, mut out) = f.connected();
        let mut corrupted = false;
        for _round in 0..200 {
            d.fill(&f.st, Instant::now(), &mut out).unwrap();
            let asked = f.requested(&out);
            out.clear();
            if asked.is_empty() && d.outstanding() == 0 {
                break;
            }
            for b in asked {
                // One corrupt answer (a strike, not a ban), and each block of piece 1 twice.
                let bad = !corrupted && b == 6;
                corrupted |= bad;
                f.answer(&mut d, b, bad, &mut out).unwrap();
                if f.layout().piece_of(b) == 1 {
                    f.answer(&mut d, b, false, &mut out).unwrap();
                }
            }
            out.clear();
        }
        d.close(&f.st);
        assert!(f.st.storage().is_complete());
        let c = f.st.counters();
        let (downloaded, useful) = (
            c.downloaded.load(Ordering::Relaxed),
            c.useful.load(Ordering::Relaxed),
        );
        let w = c.wasted();
        assert_eq!(useful, f.data.len() as u64, "each block made present once");
        assert_eq!(downloaded, useful + w.total(), "{w:?}");
        assert_eq!(w.corrupt, 16384, "{w:?}");
        assert!(w.duplicate >= 4 * 16384, "{w:?}");
        assert_eq!((w.unrequested, w.abandoned), (0, 0), "{w:?}");
    }

    #[test]
    fn a_demanded_block_goes_first_is_verified_alone_and_nothing_else_is_fetched() {
        // Demand only: just the blocks a reader waits for.
        let f = fixture(true, false);
        let (mut d, mut out) = f.connected();
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert!(f.requested(&out).is_empty(), "nothing wanted yet");
        assert!(f.st.picker().demand(9..11));
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert_eq!(f.requested(&out), vec![9, 10]);
        out.clear();
        f.answer(&mut d, 10, false, &mut out).unwrap();
        assert!(f.stored(10), "readable before the rest of its piece");
        assert!(!f.st.storage().has_piece(2));
        f.answer(&mut d, 9, false, &mut out).unwrap();
        assert!(f.stored(9));
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert!(
            f.requested(&out).is_empty(),
            "the rest of the piece is not wanted"
        );
        assert_eq!(d.outstanding(), 0);
        assert_eq!(f.st.picker().state(2), crate::picker::PieceState::NotNeeded);
        assert!(!f.st.storage().has_block(8) && !f.st.storage().has_block(11));
    }

    #[test]
    fn the_remote_reqq_caps_every_request_demanded_ones_included() {
        let f = fixture(true, true);
        let (mut d, mut out) = f.connected();
        d.set_remote_reqq(3);
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        let first = f.requested(&out);
        assert_eq!(first.len(), 3, "the window (8) is cut to the reqq");
        out.clear();
        // A reader waits for the 8 blocks of pieces 3 and 4: none beyond the reqq either.
        f.st.picker().demand(12..20);
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert!(d.outstanding() <= 3, "{} outstanding", d.outstanding());
        let mut asked: Vec<u32> = first;
        asked.extend(f.requested(&out));
        out.clear();
        // As answers come, the demanded blocks follow, never more than 3 at once.
        let mut got = Vec::new();
        for _ in 0..100 {
            let Some(b) = asked.first().copied() else {
                break;
            };
            asked.remove(0);
            f.answer(&mut d, b, false, &mut out).unwrap();
            got.push(b);
            out.clear();
            d.fill(&f.st, Instant::now(), &mut out).unwrap();
            asked.extend(f.requested(&out));
            out.clear();
            assert!(d.outstanding() <= 3, "{} outstanding", d.outstanding());
            if (12..20).all(|b| f.st.storage().has_block(b)) {
                break;
            }
        }
        assert!((12..20).all(|b| f.st.storage().has_block(b)));
    }

    #[test]
    fn with_background_fill_a_demand_jumps_the_queue_and_the_piece_follows() {
        let f = fixture(true, true);
        let (mut d, mut out) = f.connected();
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        let first = f.requested(&out);
        assert_eq!(first.len(), 8, "the initial window");
        assert!(!first.contains(&18));
        out.clear();
        // A reader now waits for block 18 (piece 4): asked for at once, beyond the window.
        f.st.picker().demand(18..19);
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert_eq!(f.requested(&out), vec![18]);
        out.clear();
        f.answer(&mut d, 18, false, &mut out).unwrap();
        assert!(f.stored(18));
        // The rest of piece 4 follows as background, assembled and checked whole.
        let mut pending = first;
        for _ in 0..100 {
            for b in pending.drain(..) {
                f.answer(&mut d, b, false, &mut out).unwrap();
            }
            out.msgs.clear();
            d.fill(&f.st, Instant::now(), &mut out).unwrap();
            pending = f.requested(&out);
            if f.st.storage().has_piece(4) {
                break;
            }
        }
        assert!(f.st.storage().has_piece(4));
        assert!((16..20).all(|b| f.stored(b)));
    }

    #[test]
    fn corrupt_blocks_are_refused_struck_and_the_peer_banned() {
        let f = fixture(true, false);
        let (mut d, mut out) = f.connected();
        f.st.picker().demand(3..5);
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert_eq!(f.requested(&out), vec![3, 4]);
        out.clear();
        f.answer(&mut d, 3, true, &mut out).unwrap();
        assert!(
            !f.st.storage().has_block(3),
            "a corrupt block is never stored"
        );
        assert_eq!(f.st.counters().hash_failures.load(Ordering::Relaxed), 1);
        // Still wanted: asked for again.
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert_eq!(f.requested(&out), vec![3]);
        out.clear();
        f.answer(&mut d, 4, false, &mut out).unwrap();
        assert!(f.stored(4));
        let second = f.answer(&mut d, 3, true, &mut out);
        assert!(matches!(second, Err(PeerError::Banned)), "{second:?}");
        assert!(!f.st.storage().has_block(3));
    }

    #[test]
    fn without_a_table_a_demand_waits_for_the_whole_piece_and_a_bad_piece_strikes() {
        let f = fixture(false, false);
        let (mut d, mut out) = f.connected();
        f.st.picker().demand(5..6);
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert_eq!(
            f.requested(&out),
            vec![4, 5, 6, 7],
            "all of piece 1, urgently"
        );
        out.clear();
        f.answer(&mut d, 5, false, &mut out).unwrap();
        assert!(!f.st.storage().has_block(5), "no table: not readable alone");
        f.answer(&mut d, 4, false, &mut out).unwrap();
        f.answer(&mut d, 6, true, &mut out).unwrap();
        f.answer(&mut d, 7, false, &mut out).unwrap();
        assert!(!f.st.storage().has_piece(1));
        assert_eq!(f.st.counters().hash_failures.load(Ordering::Relaxed), 1);
        assert!(out.released);
        out.clear();
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert_eq!(f.requested(&out), vec![4, 5, 6, 7], "asked for again");
        out.clear();
        for b in 4..8 {
            f.answer(&mut d, b, false, &mut out).unwrap();
        }
        assert_eq!(out.verified, vec![1]);
        assert!((4..8).all(|b| f.stored(b)));
    }

    /// Choked by a peer that serves urgent requests: only the blocks a reader waits for are
    /// asked, as urgent requests, and the rest of their piece goes back for an unchoked
    /// connection; a stock peer that chokes is asked nothing.
    #[test]
    fn a_choking_peer_is_asked_urgently_for_the_blocks_a_reader_waits_for_only() {
        let f = fixture(true, true);
        let (mut d, mut out) = f.connected();
        d.on_choke(&f.st, &mut out).unwrap();
        out.clear();
        assert!(f.st.picker().demand(9..11));
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert!(
            out.msgs.is_empty(),
            "a stock peer that chokes: {:?}",
            out.msgs
        );
        d.set_urgent(true);
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert_eq!(f.asked(&out, true), vec![9, 10]);
        assert!(f.requested(&out).is_empty(), "no background while choked");
        out.clear();
        f.answer(&mut d, 9, false, &mut out).unwrap();
        f.answer(&mut d, 10, false, &mut out).unwrap();
        assert!(f.stored(9) && f.stored(10));
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert!(out.msgs.is_empty(), "{:?}", out.msgs);
        assert!(out.released, "the rest of the piece is given back");
        assert_eq!(d.outstanding(), 0);
        assert_eq!(f.st.picker().state(2), crate::picker::PieceState::Queued);
        out.clear();
        // Unchoked, the same connection fetches as usual, with ordinary requests.
        d.on_unchoke();
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert!(!f.requested(&out).is_empty() && f.asked(&out, true).is_empty());
    }

    /// Unchoked too, a peer that serves urgent requests is asked urgently for the blocks a
    /// reader waits for (it sends them before its other uploads), and ordinarily for the
    /// rest; a stock peer gets ordinary requests for both.
    #[test]
    fn waited_for_blocks_are_asked_urgently_of_an_unchoking_peer_that_serves_them_first() {
        for urgent in [false, true] {
            let f = fixture(true, true);
            let (mut d, mut out) = f.connected();
            d.set_urgent(urgent);
            assert!(f.st.picker().demand(9..11));
            d.fill(&f.st, Instant::now(), &mut out).unwrap();
            assert_eq!(f.asked(&out, urgent), vec![9, 10], "urgent: {urgent}");
            assert!(f.asked(&out, !urgent).is_empty(), "{:?}", out.msgs);
            out.clear();
            f.answer(&mut d, 9, false, &mut out).unwrap();
            f.answer(&mut d, 10, false, &mut out).unwrap();
            out.clear();
            d.fill(&f.st, Instant::now(), &mut out).unwrap();
            assert!(
                !f.requested(&out).is_empty(),
                "nobody waits: ordinary requests"
            );
            assert!(f.asked(&out, true).is_empty(), "{:?}", out.msgs);
        }
    }

    /// A choking peer that answers an urgent request busy is asked nothing more urgently until
    /// its retry, and the piece goes back to the picker for another connection; then it is
    /// asked again.
    #[test]
    fn a_busy_answer_drops_the_request_and_holds_urgent_asks_until_its_retry() {
        let f = fixture(true, true);
        let (mut d, mut out) = f.connected();
        d.on_choke(&f.st, &mut out).unwrap();
        d.set_urgent(true);
        out.clear();
        assert!(f.st.picker().demand(9..10));
        let t0 = Instant::now();
        d.fill(&f.st, t0, &mut out).unwrap();
        assert_eq!(f.asked(&out, true), vec![9]);
        out.clear();
        let layout = f.layout();
        let r = Request::new(
            layout.piece_of(9),
            layout.begin_in_piece(9),
            layout.block_size(9),
        );
        let retry_at = t0 + std::time::Duration::from_millis(200);
        d.on_busy(&f.st, r, retry_at, &mut out).unwrap();
        assert_eq!(d.outstanding(), 0, "the request is dropped");
        assert!(out.released);
        assert_eq!(d.next_retry(), Some(retry_at));
        out.clear();
        d.fill(&f.st, t0, &mut out).unwrap();
        assert!(out.msgs.is_empty(), "busy: {:?}", out.msgs);
        assert_eq!(
            f.st.picker().state(layout.piece_of(9)),
            crate::picker::PieceState::Queued,
            "given back"
        );
        // A busy answer to a request no longer pending changes nothing.
        d.on_busy(&f.st, r, t0 + std::time::Duration::from_secs(9), &mut out)
            .unwrap();
        assert_eq!(d.next_retry(), Some(retry_at));
        d.retry_declined(&f.st, retry_at);
        assert_eq!(d.next_retry(), None);
        d.fill(&f.st, retry_at, &mut out).unwrap();
        assert_eq!(f.asked(&out, true), vec![9], "asked again after the retry");
    }

    /// A peer that holds no whole piece but announced blocks (`vmt_have_block`) is asked,
    /// urgently while it chokes us, for the announced blocks a reader waits for, and for
    /// nothing else; the blocks we got that a reader waited for are reported for announcing.
    #[test]
    fn a_peer_holding_blocks_alone_is_asked_for_those_a_reader_waits_for() {
        let f = fixture(true, true);
        let now = Instant::now();
        let mut d = f.fresh();
        let mut out = Outputs::default();
        d.set_urgent(true);
        d.update_interest(&f.st, &mut out);
        assert!(out.msgs.is_empty(), "it holds no piece: not interested");
        // Four blocks a piece: 9 and 11 are in piece 2, 13 in piece 3.
        for b in [9, 11, 13] {
            d.on_have_block(&f.st, b);
        }
        d.on_have_block(&f.st, f.layout().blocks() + 5);
        assert!(f.st.picker().demand(9..11));
        d.fill(&f.st, now, &mut out).unwrap();
        assert_eq!(
            f.asked(&out, true),
            vec![9],
            "the demanded block it holds, not 10 (not announced) nor 11 and 13 (not waited for)"
        );
        assert!(f.requested(&out).is_empty());
        out.clear();
        f.answer(&mut d, 9, false, &mut out).unwrap();
        assert!(f.stored(9));
        assert_eq!(
            out.blocks,
            vec![9],
            "a waited-for block verified alone is announced"
        );
        d.fill(&f.st, now, &mut out).unwrap();
        assert!(
            out.released,
            "nothing more to ask here: the piece is given back"
        );
        assert_eq!(d.outstanding(), 0);
        out.clear();
        d.fill(&f.st, now, &mut out).unwrap();
        assert!(out.msgs.is_empty(), "no churn: {:?}", out.msgs);
        // Once it holds the whole piece, the piece is asked for as from any holder.
        let mut bits = vec![0u8; (f.layout().pieces() as usize).div_ceil(8)];
        bits[0] = 0x20;
        d.on_bitfield(&f.st, &bits).unwrap();
        d.fill(&f.st, now, &mut out).unwrap();
        assert_eq!(f.asked(&out, true), vec![10]);
    }

    /// Choked by an injecting seeder that serves urgent requests: the blocks a reader waits
    /// for first, then the rest of their piece, urgently too (the seeder declines that piece to
    /// everyone else while it sends it here), and nothing of other pieces; the piece is then
    /// verified here instead of given back.
    #[test]
    fn a_choking_injecting_seeder_is_asked_urgently_for_the_whole_demanded_piece() {
        let f = fixture(true, true);
        let (mut d, mut out) = f.connected();
        d.set_injector(true);
        d.set_urgent(true);
        d.on_choke(&f.st, &mut out).unwrap();
        out.clear();
        let l = f.layout();
        let plan: Vec<u32> = l.piece_blocks(3).collect();
        f.st.picker().set_plan(&plan);
        assert!(f.st.picker().demand(9..10));
        d.update_interest(&f.st, &mut out);
        out.clear();
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert_eq!(
            f.asked(&out, true),
            vec![9, 8, 10, 11],
            "the waited-for block, then the rest of piece 2; not the planned piece 3"
        );
        assert!(f.requested(&out).is_empty(), "nothing but urgent requests");
        out.clear();
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert!(out.msgs.is_empty(), "asked once: {:?}", out.msgs);
        for b in [9, 8, 10, 11] {
            f.answer(&mut d, b, false, &mut out).unwrap();
        }
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert_eq!(out.verified, vec![2], "verified here");
        assert!(!out.released, "nothing given back");
        assert!((8..12).all(|b| f.stored(b)));
        assert_eq!(f.st.picker().state(2), crate::picker::PieceState::Have);
    }

    #[test]
    fn a_choke_gives_pieces_back_and_keeps_verified_received_blocks() {
        let f = fixture(true, true);
        let (mut d, mut out) = f.connected();
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        let asked = f.requested(&out);
        out.clear();
        // Two background blocks of a 4-block piece arrive (buffered, not yet stored), then
        // a choke.
        let (x, y) = (asked[2], asked[3]);
        assert_eq!(f.layout().piece_of(x), f.layout().piece_of(y));
        f.answer(&mut d, x, false, &mut out).unwrap();
        f.answer(&mut d, y, false, &mut out).unwrap();
        assert!(!f.st.storage().has_block(x));
        d.on_choke(&f.st, &mut out).unwrap();
        assert!(out.released);
        assert_eq!(d.outstanding(), 0);
        assert!(f.stored(x) && f.stored(y), "kept: verified by the table");
        let picker = f.st.picker();
        assert_eq!(picker.counts().in_flight, 0);
        drop(picker);
        out.clear();
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert!(f.requested(&out).is_empty(), "choked: no requests");
    }

    #[test]
    fn blocks_verified_elsewhere_are_cancelled() {
        let f = fixture(true, true);
        let (mut d, mut out) = f.connected();
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        let asked = f.requested(&out);
        out.clear();
        // Another connection stores the first requested block.
        let b = asked[0];
        let l = f.layout();
        let at = l.block_offset(b) as usize;
        f.st.storage()
            .write_block(b, &f.data[at..at + l.block_size(b) as usize])
            .unwrap();
        f.st.block_stored(b);
        d.on_wake(&f.st, &mut out).unwrap();
        assert!(
            matches!(out.msgs[..], [Out::Cancel(r)] if l.block_at(r.index, r.begin, r.length) == Some(b)),
            "{:?}",
            out.msgs
        );
        assert_eq!(d.outstanding(), asked.len() - 1);
    }

    #[test]
    fn while_a_demand_arrives_elsewhere_background_holds_back() {
        let f = fixture(true, true);
        let (mut other, mut out) = f.connected();
        f.st.picker().demand(0..1);
        other.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert_eq!(
            f.requested(&out)[0],
            0,
            "the other connection carries the demand"
        );
        out.clear();
        // A second connection may duplicate the demanded block (a slow peer must not hold
        // up a read), but asks for no background while it arrives.
        let (mut d, mut out2) = f.connected();
        d.fill(&f.st, Instant::now(), &mut out2).unwrap();
        assert_eq!(
            f.requested(&out2),
            vec![0],
            "held back while block 0 arrives"
        );
        out2.clear();
        f.answer(&mut other, 0, false, &mut out).unwrap();
        d.on_wake(&f.st, &mut out2).unwrap();
        assert!(
            matches!(out2.msgs[..], [Out::Cancel(_)]),
            "its copy is withdrawn"
        );
        out2.clear();
        d.fill(&f.st, Instant::now(), &mut out2).unwrap();
        assert_eq!(f.requested(&out2).len(), 8, "free again once it is here");
    }

    #[test]
    fn an_urgent_request_withdraws_queued_background_until_it_arrives() {
        let f = fixture(true, true);
        let (mut d, mut out) = f.connected();
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        let background = f.requested(&out);
        assert_eq!(background.len(), 8);
        out.clear();
        f.st.picker().demand(18..19);
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert_eq!(
            f.requested(&out),
            vec![18],
            "the urgent block, and nothing new"
        );
        let cancelled: Vec<u32> = out
            .msgs
            .iter()
            .filter_map(|m| match m {
                Out::Cancel(r) => f.layout().block_at(r.index, r.begin, r.length),
                _ => None,
            })
            .collect();
        assert_eq!(cancelled, background, "the queued background is withdrawn");
        assert_eq!(d.outstanding(), 1);
        out.clear();
        // A withdrawn block the remote had already sent is still taken.
        f.answer(&mut d, background[0], false, &mut out).unwrap();
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert!(
            f.requested(&out).is_empty(),
            "nothing while the urgent block is on its way"
        );
        f.answer(&mut d, 18, false, &mut out).unwrap();
        assert!(f.stored(18));
        out.clear();
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        let again = f.requested(&out);
        assert!(
            background[1..].iter().all(|b| again.contains(b)) && !again.contains(&background[0]),
            "withdrawn blocks are asked for again once it is here: {again:?}"
        );
    }

    #[test]
    fn with_several_peers_a_started_piece_is_finished_before_the_plan_goes_on() {
        // Demand only, so nothing but the piece started for the plan is fetched.
        let f = fixture(true, false);
        let (mut d, mut out) = f.connected();
        f.st.picker().set_plan(&[5, 9]);
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert_eq!(
            f.requested(&out),
            vec![5, 9],
            "alone: the planned blocks only"
        );
        let g = fixture(true, false);
        let (mut e, mut out2) = g.connected();
        g.st.picker().set_plan_spread(true);
        g.st.picker().set_plan(&[5, 9]);
        e.fill(&g.st, Instant::now(), &mut out2).unwrap();
        assert_eq!(
            g.requested(&out2),
            vec![5, 4, 6, 7, 9, 8, 10, 11],
            "with several peers: each planned block's piece is finished, to be traded"
        );
    }

    /// From an injecting seeder: only demanded and planned pieces, interest only while there
    /// is one to ask, and a declined piece is not asked there again until its retry.
    #[test]
    fn an_injecting_seeder_is_asked_for_demand_and_plan_only_and_a_decline_holds_until_retry() {
        let f = fixture(true, true);
        let (mut d, mut out) = f.connected();
        d.set_injector(true);
        d.update_interest(&f.st, &mut out);
        assert!(
            matches!(out.msgs[..], [Out::NotInterested]),
            "background fill is not asked of it: {:?}",
            out.msgs
        );
        out.clear();
        let l = f.layout();
        let plan: Vec<u32> = l.piece_blocks(2).collect();
        f.st.picker().set_plan(&plan);
        d.update_interest(&f.st, &mut out);
        assert!(matches!(out.msgs[..], [Out::Interested]), "{:?}", out.msgs);
        out.clear();
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        let asked = f.requested(&out);
        assert_eq!(asked, plan, "the planned piece and nothing else");
        out.clear();
        // Nothing more to plan there, but its piece is on the way: still interested (a fault:
        // it lost interest, and the seeder choked it mid-piece).
        d.update_interest(&f.st, &mut out);
        assert!(out.msgs.is_empty(), "{:?}", out.msgs);
        // Declined: the requests are withdrawn, the piece goes back, nothing is asked.
        let t0 = Instant::now();
        let retry = std::time::Duration::from_secs(5);
        d.on_elsewhere(&f.st, 2, t0 + retry, &mut out).unwrap();
        assert!(out.released);
        assert_eq!(d.outstanding(), 0);
        assert_eq!(f.st.picker().state(2), crate::picker::PieceState::Queued);
        assert_eq!(
            f.st.picker().availability(2),
            0,
            "not counted as held there"
        );
        out.clear();
        d.update_interest(&f.st, &mut out);
        assert!(
            matches!(out.msgs[..], [Out::NotInterested]),
            "{:?}",
            out.msgs
        );
        out.clear();
        d.retry_declined(&f.st, t0 + retry / 2);
        assert_eq!(d.next_retry(), Some(t0 + retry));
        d.update_interest(&f.st, &mut out);
        assert!(out.msgs.is_empty(), "still declined: {:?}", out.msgs);
        d.retry_declined(&f.st, t0 + retry);
        assert_eq!(d.next_retry(), None);
        d.update_interest(&f.st, &mut out);
        assert!(matches!(out.msgs[..], [Out::Interested]), "{:?}", out.msgs);
        out.clear();
        d.fill(&f.st, Instant::now(), &mut out).unwrap();
        assert_eq!(f.requested(&out), plan, "asked again after the retry");
        // A decline of a piece it never announced, or out of range, changes nothing.
        out.clear();
        d.on_elsewhere(&f.st, 999, t0 + retry, &mut out).unwrap();
        assert!(!out.released && d.next_retry().is_none());
    }
}
