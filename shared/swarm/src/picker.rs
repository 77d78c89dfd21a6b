//! Which piece a peer should fetch next, and which of its blocks are wanted.
//!
//! [`PiecePicker`] is the engine's only source of fetch decisions. It is a plain synchronous
//! type (no tokio, no I/O, no clock): given the same calls and seed it makes the same picks, so
//! it is unit-tested on its own, against a reference model, and could drive a simulator.
//!
//! Pieces are handed to peers (a peer can only serve whole pieces it announced); inside an
//! assigned piece the peer requests the *wanted* blocks, demanded ones first. A block is wanted
//! when it is missing and demanded (a read waits for it), planned (the prefetch plan names it),
//! or its piece is wanted as a whole (background fill). Without a block-hash table a block
//! cannot be verified alone, so any wanted block makes the whole piece wanted
//! ([`PiecePicker::new`]'s `verify_blocks`).
//!
//! # Invariant
//! Every piece is in exactly one [`PieceState`]:
//! - `Have`: verified (SHA-1) and written, every block present; never picked again.
//! - `InFlight`: assigned to at least one peer (`copies > 0`) and not verified.
//! - `Queued`: assigned to no peer, and it *needs* fetching: it has missing blocks and is wanted,
//!   or has demanded or planned blocks missing.
//! - `NotNeeded`: assigned to no peer, and nothing in it is wanted (it may hold present
//!   blocks: a partial piece a demand or a plan left behind).
//!
//! `copies[p]` counts the peers holding an assignment for `p`; each assignment handed out by
//! [`PiecePicker::pick`] is returned exactly once by [`PiecePicker::release`] (peer gave up or
//! has nothing more to fetch in it) or [`PiecePicker::complete`] (verified). A `Have` piece may
//! still have `copies > 0` while duplicate requests drain. `demanded_missing[p]` and
//! `planned_missing[p]` count the demanded and planned blocks of `p` that are not present; a
//! piece is in the demand list exactly when its `demanded_missing` is positive.
//!
//! # Priority
//! 1. Pieces with demanded blocks, oldest demand first. One already in flight may be assigned
//!    to one more peer ([`MAX_URGENT_COPIES`]), so a slow peer cannot hold up a parked read.
//! 2. The plan: the pieces of the planned blocks, in the order of their first planned block,
//!    first queued one the peer has. With several peers connected, the pick is the least
//!    available of the next `PLAN_SPREAD` (16) queued entries, ties broken by the seeded
//!    rotation: clients of a flash crowd follow the same plan, and asking the seeder for the
//!    same piece at once would spend its uplink on copies instead of pieces they can trade.
//! 3. Rarest first among queued pieces; ties broken from a seeded rotation so that clients
//!    started together do not all fetch the same piece.
//! 4. Endgame: when nothing is queued, duplicate an in-flight piece with the fewest copies.
//!
//! Picks, releases, completions and block arrivals allocate nothing; [`PiecePicker::set_plan`]
//! and [`PiecePicker::demand`] reuse their buffers (allocating only to grow them), so the plan
//! can be replaced as often as the application likes. A unit test counts allocations.

use crate::layout::Layout;

/// Plan entries among which a pick prefers the least available, once several peers are
/// connected (see [`PiecePicker::set_plan_spread`]).
pub const PLAN_SPREAD: u32 = 16;
/// Most peers that may fetch a demanded piece at once.
pub const MAX_URGENT_COPIES: u8 = 2;
/// Most peers that may fetch the same piece during endgame.
pub const MAX_ENDGAME_COPIES: u8 = 2;

const NOT_PLANNED: u32 = u32::MAX;

/// Where a piece stands; see the module invariant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceState {
    /// Verified and written.
    Have,
    /// Assigned to at least one peer.
    InFlight,
    /// Needs fetching, not assigned.
    Queued,
    /// Nothing in it wanted, not assigned.
    NotNeeded,
}

/// Why a piece was picked; the classes in priority order (`Demand < Plan < ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PickReason {
    /// A reader waits for some of its blocks.
    Demand,
    /// Next in the application's plan.
    Plan,
    /// Background fill, rarest first.
    Rarest,
    /// Duplicate of an in-flight piece, to finish without waiting on a slow peer.
    Endgame,
}

/// A piece handed to a peer, to be returned by `release` or `complete`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    /// The piece.
    pub piece: u32,
    /// Which priority class chose it.
    pub reason: PickReason,
}

/// Counts of pieces per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PieceCounts {
    /// Verified pieces.
    pub have: u32,
    /// Pieces assigned to peers.
    pub in_flight: u32,
    /// Pieces waiting for a peer.
    pub queued: u32,
    /// Pieces nothing is wanted of.
    pub not_needed: u32,
}

/// The blocks of the image, one bit each.
type Bits = crate::bitmap::Bits<Vec<u64>>;

fn bits(len: u32) -> Bits {
    crate::bitmap::Bits(vec![0; (len as usize).div_ceil(64)])
}

/// The piece and block bookkeeping and priority decisions of one torrent.
#[derive(Debug, Clone)]
pub struct PiecePicker {
    layout: Layout,
    verify_blocks: bool,
    state: Vec<PieceState>,
    wanted: Vec<bool>,
    copies: Vec<u8>,
    /// Number of connected peers that have each piece.
    avail: Vec<u16>,
    present_count: Vec<u16>,
    demanded_missing: Vec<u16>,
    planned_missing: Vec<u16>,
    /// Position of each piece in `plan`, or `NOT_PLANNED`.
    plan_rank: Vec<u32>,
    present: Bits,
    demanded: Bits,
    planned: Bits,
    /// Pieces with demanded blocks missing, oldest demand first.
    demand_order: Vec<u32>,
    /// The plan as given, in blocks (to clear it when replaced).
    plan_blocks: Vec<u32>,
    /// The plan's pieces, in the order of their first planned block.
    plan: Vec<u32>,
    /// Scratch: the previous plan's pieces while a new plan is set.
    old_plan: Vec<u32>,
    /// Every plan entry before this index is not plannable.
    plan_cursor: usize,
    /// Start of the rarest-first tie-break rotation.
    rotation: u32,
    /// Queued plan entries a plan pick chooses among: 1 (strict order) or `PLAN_SPREAD` (16).
    plan_window: u32,
    counts: PieceCounts,
}

impl PiecePicker {
    /// A picker for `layout`, every piece queued (wanted). `seed` fixes the tie-breaks;
    /// `verify_blocks` says whether a block can be verified alone (the torrent has a block-hash
    /// table): if not, a wanted block makes its whole piece wanted.
    pub fn new(layout: Layout, seed: u64, verify_blocks: bool) -> PiecePicker {
        let n = layout.pieces() as usize;
        // splitmix64 step: a well-spread rotation from any seed, including small ones.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        PiecePicker {
            layout,
            verify_blocks,
            state: vec![PieceState::Queued; n],
            wanted: vec![true; n],
            copies: vec![0; n],
            avail: vec![0; n],
            present_count: vec![0; n],
            demanded_missing: vec![0; n],
            planned_missing: vec![0; n],
            plan_rank: vec![NOT_PLANNED; n],
            present: bits(layout.blocks()),
            demanded: bits(layout.blocks()),
            planned: bits(layout.blocks()),
            // Every piece may wait for a demand at once; sized now so a demand never allocates.
            demand_order: Vec::with_capacity(n),
            plan_blocks: Vec::new(),
            plan: Vec::new(),
            old_plan: Vec::new(),
            plan_cursor: 0,
            rotation: if n == 0 { 0 } else { (z % n as u64) as u32 },
            plan_window: 1,
            counts: PieceCounts {
                queued: n as u32,
                ..PieceCounts::default()
            },
        }
    }

    /// The geometry.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether blocks are verified alone (see [`PiecePicker::new`]).
    pub fn verifies_blocks(&self) -> bool {
        self.verify_blocks
    }

    /// Number of pieces.
    pub fn len(&self) -> u32 {
        self.state.len() as u32
    }

    /// Whether the torrent has no pieces (never true for a valid torrent).
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// State of `piece`. Panics if out of range.
    pub fn state(&self, piece: u32) -> PieceState {
        self.state[piece as usize]
    }

    /// Pieces per state.
    pub fn counts(&self) -> PieceCounts {
        self.counts
    }

    /// Whether every wanted piece is verified.
    pub fn is_complete(&self) -> bool {
        self.counts.queued == 0 && self.counts.in_flight == 0
    }

    fn count_mut(&mut self, s: PieceState) -> &mut u32 {
        match s {
            PieceState::Have => &mut self.counts.have,
            PieceState::InFlight => &mut self.counts.in_flight,
            PieceState::Queued => &mut self.counts.queued,
            PieceState::NotNeeded => &mut self.counts.not_needed,
        }
    }

    fn set_state(&mut self, piece: u32, new: PieceState) {
        let old = std::mem::replace(&mut self.state[piece as usize], new);
        if old == new {
            return;
        }
        *self.count_mut(old) -= 1;
        *self.count_mut(new) += 1;
        if new == PieceState::Queued {
            let rank = self.plan_rank[piece as usize];
            if rank != NOT_PLANNED && (rank as usize) < self.plan_cursor {
                self.plan_cursor = rank as usize;
            }
        }
    }

    /// Whether `piece` has missing blocks that something wants.
    fn needs(&self, piece: u32) -> bool {
        let i = piece as usize;
        let size = self.layout.piece_blocks(piece).len() as u16;
        self.state[i] != PieceState::Have
            && self.present_count[i] < size
            && (self.wanted[i] || self.demanded_missing[i] > 0 || self.planned_missing[i] > 0)
    }

    /// Puts an unassigned piece in the state its wants give it.
    fn refresh(&mut self, piece: u32) {
        if matches!(
            self.state[piece as usize],
            PieceState::Queued | PieceState::NotNeeded
        ) {
            let s = if self.needs(piece) {
                PieceState::Queued
            } else {
                PieceState::NotNeeded
            };
            self.set_state(piece, s);
        }
    }

    /// Whether the plan may hand out `piece` now.
    fn plannable(&self, piece: u32) -> bool {
        self.state[piece as usize] == PieceState::Queued && self.planned_missing[piece as usize] > 0
    }

    fn undemand_piece(&mut self, piece: u32) {
        if let Some(k) = self.demand_order.iter().position(|&p| p == piece) {
            self.demand_order.remove(k);
        }
    }

    /// Records `piece` as verified without a peer (resume, seeding, a piece finished by hashing
    /// local data). Returns false if it already was.
    pub fn mark_have(&mut self, piece: u32) -> bool {
        if self.state[piece as usize] == PieceState::Have {
            return false;
        }
        for b in self.layout.piece_blocks(piece) {
            self.present.set(b);
            self.demanded.clear(b);
        }
        let i = piece as usize;
        self.present_count[i] = self.layout.piece_blocks(piece).len() as u16;
        if self.demanded_missing[i] > 0 {
            self.demanded_missing[i] = 0;
            self.undemand_piece(piece);
        }
        self.planned_missing[i] = 0;
        self.set_state(piece, PieceState::Have);
        true
    }

    /// Records a block verified on its own and written. Returns false if it already was.
    pub fn block_present(&mut self, block: u32) -> bool {
        if self.present.get(block) {
            return false;
        }
        self.present.set(block);
        let piece = self.layout.piece_of(block);
        let i = piece as usize;
        self.present_count[i] += 1;
        if self.demanded.get(block) {
            self.demanded.clear(block);
            self.demanded_missing[i] -= 1;
            if self.demanded_missing[i] == 0 {
                self.undemand_piece(piece);
            }
        }
        if self.planned.get(block) {
            self.planned_missing[i] -= 1;
        }
        self.refresh(piece);
        true
    }

    /// Whether `block` is present (verified and written).
    pub fn is_present(&self, block: u32) -> bool {
        self.present.get(block)
    }

    /// Includes or excludes `piece` as a whole from what to fetch (background fill).
    /// Demanded and planned blocks are fetched anyway.
    pub fn set_wanted(&mut self, piece: u32, wanted: bool) {
        self.wanted[piece as usize] = wanted;
        self.refresh(piece);
    }

    /// Puts the missing blocks of `blocks` (clipped to the image) ahead of everything else.
    /// Returns whether any of them is missing.
    pub fn demand(&mut self, blocks: std::ops::Range<u32>) -> bool {
        let blocks = blocks.start..blocks.end.min(self.layout.blocks());
        let mut any = false;
        let mut last_piece = u32::MAX;
        for b in blocks {
            if self.present.get(b) {
                continue;
            }
            any = true;
            let piece = self.layout.piece_of(b);
            if !self.demanded.get(b) {
                self.demanded.set(b);
                let i = piece as usize;
                self.demanded_missing[i] += 1;
                if self.demanded_missing[i] == 1 {
                    self.demand_order.push(piece);
                }
            }
            if piece != last_piece {
                last_piece = piece;
                self.refresh(piece);
            }
        }
        any
    }

    /// Replaces the prefetch plan (blocks, most urgent first). Out-of-range and repeated
    /// entries are ignored. Planned blocks are fetched even when their piece is not otherwise
    /// wanted; a piece leaving the plan goes back to not needed unless wanted or demanded.
    pub fn set_plan(&mut self, blocks: &[u32]) {
        for k in 0..self.plan_blocks.len() {
            let b = self.plan_blocks[k];
            self.planned.clear(b);
            if !self.present.get(b) {
                self.planned_missing[self.layout.piece_of(b) as usize] -= 1;
            }
        }
        self.plan_blocks.clear();
        std::mem::swap(&mut self.plan, &mut self.old_plan);
        for k in 0..self.old_plan.len() {
            self.plan_rank[self.old_plan[k] as usize] = NOT_PLANNED;
        }
        for &b in blocks {
            if b >= self.layout.blocks() || self.planned.get(b) {
                continue;
            }
            self.planned.set(b);
            self.plan_blocks.push(b);
            let piece = self.layout.piece_of(b);
            let i = piece as usize;
            if !self.present.get(b) {
                self.planned_missing[i] += 1;
            }
            if self.plan_rank[i] == NOT_PLANNED {
                self.plan_rank[i] = self.plan.len() as u32;
                self.plan.push(piece);
            }
        }
        for k in 0..self.old_plan.len() {
            let p = self.old_plan[k];
            self.refresh(p);
        }
        self.old_plan.clear();
        for k in 0..self.plan.len() {
            let p = self.plan[k];
            self.refresh(p);
        }
        self.plan_cursor = 0;
    }

    /// Whether a reader waits for some block of `piece`.
    pub fn is_demanded(&self, piece: u32) -> bool {
        self.demanded_missing[piece as usize] > 0
    }

    /// Whether the plan names missing blocks of `piece`.
    pub fn is_planned(&self, piece: u32) -> bool {
        self.planned_missing[piece as usize] > 0
    }

    /// How many blocks of `piece` are present.
    pub fn present_blocks(&self, piece: u32) -> u32 {
        self.present_count[piece as usize] as u32
    }

    /// Whether a reader waits for `block`.
    pub fn is_block_demanded(&self, block: u32) -> bool {
        self.demanded.get(block)
    }

    /// Whether `block` is to be requested ahead of everything: a reader waits for it, or,
    /// when blocks cannot be verified alone, for any block of its piece (the read then needs
    /// the whole piece).
    pub fn is_block_urgent(&self, block: u32) -> bool {
        if self.verify_blocks {
            self.demanded.get(block)
        } else {
            !self.present.get(block)
                && self.demanded_missing[self.layout.piece_of(block) as usize] > 0
        }
    }

    /// Whether `block` is missing and named by the plan.
    pub fn is_block_planned(&self, block: u32) -> bool {
        self.planned.get(block) && !self.present.get(block)
    }

    /// Whether `block` should be fetched: missing, and demanded, planned, or in a wanted piece
    /// (any wanted block of its piece, when blocks cannot be verified alone).
    pub fn block_wanted(&self, block: u32) -> bool {
        if self.present.get(block) {
            return false;
        }
        let i = self.layout.piece_of(block) as usize;
        if self.verify_blocks {
            self.wanted[i] || self.demanded.get(block) || self.planned.get(block)
        } else {
            self.wanted[i] || self.demanded_missing[i] > 0 || self.planned_missing[i] > 0
        }
    }

    /// Whether a demanded piece is being fetched: other peers then hold back background
    /// blocks, which would share our downlink with it.
    pub fn demand_in_flight(&self) -> bool {
        self.demand_order
            .iter()
            .any(|&p| self.state[p as usize] == PieceState::InFlight)
    }

    /// Whether plan picks spread over the next `PLAN_SPREAD` (16) entries (several peers
    /// connected) or follow the plan strictly (one peer: nobody to trade with).
    pub fn set_plan_spread(&mut self, spread: bool) {
        self.plan_window = if spread { PLAN_SPREAD } else { 1 };
    }

    /// Whether several peers are connected (see [`PiecePicker::set_plan_spread`]): pieces are
    /// then worth more whole, since only whole pieces can be traded.
    pub fn has_several_peers(&self) -> bool {
        self.plan_window > 1
    }

    /// A connected peer announced `piece`.
    pub fn add_availability(&mut self, piece: u32) {
        let a = &mut self.avail[piece as usize];
        *a = a.saturating_add(1);
    }

    /// A peer that had `piece` disconnected.
    pub fn remove_availability(&mut self, piece: u32) {
        let a = &mut self.avail[piece as usize];
        *a = a.saturating_sub(1);
    }

    /// Number of peers holding an assignment of `piece`.
    pub fn copies(&self, piece: u32) -> u8 {
        self.copies[piece as usize]
    }

    /// Number of connected peers that have `piece`.
    pub fn availability(&self, piece: u32) -> u16 {
        self.avail[piece as usize]
    }

    fn assign(&mut self, piece: u32, reason: PickReason) -> Pick {
        self.copies[piece as usize] += 1;
        self.set_state(piece, PieceState::InFlight);
        Pick { piece, reason }
    }

    /// The next piece for a peer that has the pieces where `peer_has` is true and already holds
    /// the assignments where `mine` is true. `urgent_only` restricts the pick to demanded pieces
    /// (used when the peer's request window is full).
    pub fn pick(
        &mut self,
        peer_has: impl Fn(u32) -> bool,
        mine: impl Fn(u32) -> bool,
        urgent_only: bool,
    ) -> Option<Pick> {
        let upto = if urgent_only {
            PickReason::Demand
        } else {
            PickReason::Endgame
        };
        self.pick_upto(peer_has, mine, upto)
    }

    /// [`PiecePicker::pick`] among the classes up to `upto` only: e.g. `Plan` takes a demanded
    /// or planned piece, never background, so a peer can fetch the planned blocks of further
    /// pieces before the rest of the pieces it holds.
    pub fn pick_upto(
        &mut self,
        peer_has: impl Fn(u32) -> bool,
        mine: impl Fn(u32) -> bool,
        upto: PickReason,
    ) -> Option<Pick> {
        // 1. Demand.
        let mut urgent_dup = None;
        for &p in &self.demand_order {
            let i = p as usize;
            match self.state[i] {
                PieceState::Queued if peer_has(p) => {
                    return Some(self.assign(p, PickReason::Demand));
                }
                PieceState::InFlight
                    if urgent_dup.is_none()
                        && self.copies[i] < MAX_URGENT_COPIES
                        && peer_has(p)
                        && !mine(p) =>
                {
                    urgent_dup = Some(p);
                }
                _ => {}
            }
        }
        if let Some(p) = urgent_dup {
            return Some(self.assign(p, PickReason::Demand));
        }
        if upto < PickReason::Plan {
            return None;
        }
        // 2. Plan.
        while self.plan_cursor < self.plan.len() && !self.plannable(self.plan[self.plan_cursor]) {
            self.plan_cursor += 1;
        }
        let (window, rotation) = (self.plan_window, self.rotation % self.plan_window);
        let mut best: Option<((u16, u32), u32)> = None;
        let mut seen = 0;
        for k in self.plan_cursor..self.plan.len() {
            let p = self.plan[k];
            if !self.plannable(p) {
                continue;
            }
            if peer_has(p) {
                let key = (self.avail[p as usize], (seen + rotation) % window);
                if best.is_none_or(|(b, _)| key < b) {
                    best = Some((key, p));
                }
            }
            seen += 1;
            // Past the window, the first entry this peer has.
            if seen >= window && best.is_some() {
                break;
            }
        }
        if let Some((_, p)) = best {
            return Some(self.assign(p, PickReason::Plan));
        }
        if upto < PickReason::Rarest {
            return None;
        }
        // 3. Rarest first.
        let n = self.len();
        if self.counts.queued > 0 {
            let mut best: Option<(u16, u32)> = None;
            for k in 0..n {
                let p = (self.rotation + k) % n;
                if self.state[p as usize] == PieceState::Queued && peer_has(p) {
                    let a = self.avail[p as usize];
                    if best.is_none_or(|(ba, _)| a < ba) {
                        best = Some((a, p));
                    }
                }
            }
            if let Some((_, p)) = best {
                return Some(self.assign(p, PickReason::Rarest));
            }
        }
        // 4. Endgame: only once nothing is queued at all.
        if self.counts.queued == 0 && self.counts.in_flight > 0 {
            let mut best: Option<(u8, u32)> = None;
            for p in 0..n {
                let c = self.copies[p as usize];
                if self.state[p as usize] == PieceState::InFlight
                    && c < MAX_ENDGAME_COPIES
                    && peer_has(p)
                    && !mine(p)
                    && best.is_none_or(|(bc, _)| c < bc)
                {
                    best = Some((c, p));
                }
            }
            if let Some((_, p)) = best {
                return Some(self.assign(p, PickReason::Endgame));
            }
        }
        None
    }

    /// Whether a peer that has the pieces where `peer_has` is true has a demanded or planned
    /// piece to give (an injecting seeder is asked for nothing else).
    pub fn wants_demand_or_plan(&self, peer_has: impl Fn(u32) -> bool) -> bool {
        self.demand_order
            .iter()
            .any(|&p| self.state[p as usize] != PieceState::Have && peer_has(p))
            || self.plan[self.plan_cursor.min(self.plan.len())..]
                .iter()
                .any(|&p| self.plannable(p) && peer_has(p))
    }

    /// Pieces with demanded blocks missing, oldest demand first.
    pub fn demanded_pieces(&self) -> &[u32] {
        &self.demand_order
    }

    /// The next piece for an origin (a BEP 19 web seed: it has every piece, and every byte it
    /// serves costs its owner). Peers come first: a demanded piece is taken when no connected
    /// peer has it, or when `overdue(piece)` says peers are too slow for it (then as a second
    /// copy if a peer holds it, like an urgent duplicate); with `plan`, then a planned piece
    /// no connected peer has (spread over the plan window like a peer's plan pick); with
    /// `background` too, then any such queued piece. `mine`: assignments the origin already
    /// holds.
    pub fn pick_origin(
        &mut self,
        overdue: impl Fn(u32) -> bool,
        mine: impl Fn(u32) -> bool,
        plan: bool,
        background: bool,
    ) -> Option<Pick> {
        let mut dup = None;
        for &p in &self.demand_order {
            let i = p as usize;
            match self.state[i] {
                PieceState::Queued if self.avail[i] == 0 || overdue(p) => {
                    return Some(self.assign(p, PickReason::Demand));
                }
                PieceState::InFlight
                    if dup.is_none()
                        && self.copies[i] < MAX_URGENT_COPIES
                        && overdue(p)
                        && !mine(p) =>
                {
                    dup = Some(p);
                }
                _ => {}
            }
        }
        if let Some(p) = dup {
            return Some(self.assign(p, PickReason::Demand));
        }
        if !plan || self.counts.queued == 0 {
            return None;
        }
        let orphan = |s: &PiecePicker, p: u32| {
            s.state[p as usize] == PieceState::Queued && s.avail[p as usize] == 0
        };
        // Spread over the window as a peer's plan pick is: clients started together follow
        // the same plan, and all taking its first orphan from the origin at once would pay
        // the origin for copies instead of pieces they can trade (8 clients: 1.3x the bytes).
        let (window, rotation) = (self.plan_window, self.rotation % self.plan_window);
        let mut best: Option<(u32, u32)> = None;
        let mut seen = 0;
        for &p in &self.plan[self.plan_cursor.min(self.plan.len())..] {
            if !orphan(self, p) {
                continue;
            }
            let key = (seen + rotation) % window;
            if best.is_none_or(|(b, _)| key < b) {
                best = Some((key, p));
            }
            seen += 1;
            if seen >= window {
                break;
            }
        }
        if let Some((_, p)) = best {
            return Some(self.assign(p, PickReason::Plan));
        }
        if !background {
            return None;
        }
        // From the seeded rotation, so clients started together take different pieces from
        // the origin and can then trade them.
        let n = self.len();
        let p = (0..n)
            .map(|k| (self.rotation + k) % n)
            .find(|&p| orphan(self, p))?;
        Some(self.assign(p, PickReason::Rarest))
    }

    /// A peer gives back its assignment of `piece` without verifying it: it gave up, or has
    /// nothing more to fetch in it (a partial piece keeps its present blocks).
    pub fn release(&mut self, piece: u32) {
        let i = piece as usize;
        debug_assert!(self.copies[i] > 0, "release of piece {piece} not assigned");
        self.copies[i] = self.copies[i].saturating_sub(1);
        if self.copies[i] == 0 && self.state[i] == PieceState::InFlight {
            self.set_state(piece, PieceState::NotNeeded);
            self.refresh(piece);
        }
    }

    /// A peer's assignment of `piece` verified. Returns true if this made the piece `Have`
    /// (false: a duplicate finished first, drop this copy).
    pub fn complete(&mut self, piece: u32) -> bool {
        let i = piece as usize;
        debug_assert!(self.copies[i] > 0, "complete of piece {piece} not assigned");
        self.copies[i] = self.copies[i].saturating_sub(1);
        self.mark_have(piece)
    }

    /// Checks the module invariant; for tests.
    #[cfg(test)]
    pub(crate) fn check_invariant(&self) {
        let mut c = PieceCounts::default();
        for (i, &s) in self.state.iter().enumerate() {
            let p = i as u32;
            let blocks = self.layout.piece_blocks(p);
            let present = blocks.clone().filter(|&b| self.present.get(b)).count() as u16;
            let dm = blocks
                .clone()
                .filter(|&b| self.demanded.get(b) && !self.present.get(b))
                .count() as u16;
            let pm = blocks
                .clone()
                .filter(|&b| self.planned.get(b) && !self.present.get(b))
                .count() as u16;
            assert_eq!(self.present_count[i], present, "piece {i} present count");
            if s != PieceState::Have {
                assert_eq!(self.demanded_missing[i], dm, "piece {i} demanded count");
                assert_eq!(self.planned_missing[i], pm, "piece {i} planned count");
            }
            assert!(
                blocks
                    .clone()
                    .all(|b| !(self.demanded.get(b) && self.present.get(b))),
                "piece {i}: a present block is still demanded"
            );
            assert_eq!(
                self.demanded_missing[i] > 0,
                self.demand_order.contains(&p),
                "piece {i} demand list"
            );
            match s {
                PieceState::Have => {
                    c.have += 1;
                    assert_eq!(present as usize, blocks.len());
                }
                PieceState::InFlight => {
                    c.in_flight += 1;
                    assert!(self.copies[i] > 0, "in-flight piece {i} without copies");
                }
                PieceState::Queued => {
                    c.queued += 1;
                    assert_eq!(self.copies[i], 0, "queued piece {i} with copies");
                    assert!(self.needs(p), "queued piece {i} needs nothing");
                }
                PieceState::NotNeeded => {
                    c.not_needed += 1;
                    assert_eq!(self.copies[i], 0);
                    assert!(!self.needs(p), "piece {i} needs fetching but is not queued");
                }
            }
        }
        assert_eq!(c, self.counts);
        for k in 0..self.plan_cursor {
            assert!(!self.plannable(self.plan[k]));
        }
        for (k, &p) in self.plan.iter().enumerate() {
            assert_eq!(self.plan_rank[p as usize], k as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// `pieces` pieces of `per_piece` 16 KiB blocks each.
    pub(crate) fn layout(pieces: u32, per_piece: u32) -> Layout {
        let piece = per_piece * 16384;
        let lengths =
            librqbit_core::lengths::Lengths::new(pieces as u64 * piece as u64, piece).unwrap();
        Layout::new(&lengths).unwrap()
    }

    /// A picker whose pieces are one block each, so blocks and pieces share their numbers.
    fn picker(pieces: u32, seed: u64) -> PiecePicker {
        PiecePicker::new(layout(pieces, 1), seed, true)
    }

    /// Demands all of `piece` (one block).
    fn demand(p: &mut PiecePicker, piece: u32) -> bool {
        p.demand(piece..piece + 1)
    }

    fn all(_: u32) -> bool {
        true
    }
    fn none(_: u32) -> bool {
        false
    }

    #[test]
    fn demand_beats_plan_beats_rarest() {
        let mut p = picker(10, 1);
        p.set_plan(&[5, 6, 7]);
        assert!(demand(&mut p, 9));
        let first = p.pick(all, none, false).unwrap();
        assert_eq!(
            first,
            Pick {
                piece: 9,
                reason: PickReason::Demand
            }
        );
        assert!(p.complete(9));
        assert_eq!(p.pick(all, none, false).unwrap().piece, 5);
        // A peer without 6 gets 7.
        assert_eq!(p.pick(|i| i != 6, none, false).unwrap().piece, 7);
        assert_eq!(p.pick(all, none, false).unwrap().piece, 6);
        // Plan exhausted: rarest first.
        for i in 0..10 {
            p.add_availability(i);
        }
        p.add_availability(3); // 3 is now the most common
        p.remove_availability(2);
        assert_eq!(
            p.pick(all, none, false).unwrap(),
            Pick {
                piece: 2,
                reason: PickReason::Rarest
            }
        );
        p.check_invariant();
    }

    #[test]
    fn plan_fetches_pieces_that_are_not_wanted() {
        // Without fetch_all (demand, oracle) nothing is wanted: the plan alone asks for pieces.
        let mut p = picker(6, 1);
        for i in 0..6 {
            p.set_wanted(i, false);
        }
        assert_eq!(p.pick(all, none, false), None);
        p.set_plan(&[4, 2]);
        let a = p.pick(all, none, false).unwrap();
        assert_eq!(
            a,
            Pick {
                piece: 4,
                reason: PickReason::Plan
            }
        );
        assert_eq!(p.pick(all, none, false).unwrap().piece, 2);
        // (This peer holds both: nothing to duplicate in endgame either.)
        assert_eq!(p.pick(all, all, false), None);
        // A planned piece given back is planned again; one dropped from the plan is not.
        p.release(4);
        p.check_invariant();
        assert_eq!(p.pick(all, none, false).unwrap().piece, 4);
        p.release(4);
        p.set_plan(&[]);
        assert_eq!(p.pick(all, all, false), None);
        assert!(p.complete(2));
        p.check_invariant();
    }

    #[test]
    fn urgent_duplicates_and_endgame() {
        let mut p = picker(2, 0);
        let a = p.pick(all, none, false).unwrap().piece;
        let b = p.pick(all, none, false).unwrap().piece;
        assert_ne!(a, b);
        // Nothing queued: endgame duplicates, but never to a peer that already holds it.
        let e = p.pick(all, |i| i == a, false).unwrap();
        assert_eq!(
            e,
            Pick {
                piece: b,
                reason: PickReason::Endgame
            }
        );
        assert_eq!(p.pick(all, |i| i == a, false), None, "b has its 2 copies");
        assert!(p.complete(b));
        assert!(
            !p.complete(b),
            "the duplicate finishing later changes nothing"
        );
        assert_eq!(p.state(b), PieceState::Have);
        // A demanded in-flight piece gets a second peer even with urgent_only.
        assert!(demand(&mut p, a));
        assert_eq!(
            p.pick(all, |i| i == 99, true).unwrap(),
            Pick {
                piece: a,
                reason: PickReason::Demand
            }
        );
        p.release(a);
        p.release(a);
        assert_eq!(p.state(a), PieceState::Queued);
        p.check_invariant();
    }

    #[test]
    fn release_requeues_and_rewinds_plan() {
        let mut p = picker(4, 0);
        p.set_plan(&[0, 1, 2, 3]);
        let x = p.pick(all, none, false).unwrap();
        let y = p.pick(all, none, false).unwrap();
        assert_eq!((x.piece, y.piece), (0, 1));
        p.release(0);
        assert_eq!(p.pick(all, none, false).unwrap().piece, 0);
        p.check_invariant();
    }

    #[test]
    fn not_needed_pieces_are_skipped_unless_demanded() {
        let mut p = picker(3, 0);
        p.set_wanted(0, false);
        p.set_wanted(1, false);
        assert_eq!(p.counts().not_needed, 2);
        assert_eq!(p.pick(all, none, false).unwrap().piece, 2);
        assert_eq!(p.pick(all, |i| i == 2, false), None);
        demand(&mut p, 1);
        assert_eq!(p.pick(all, none, false).unwrap().piece, 1);
        p.check_invariant();
    }

    /// Counts allocations per thread, so a test can assert a call allocates nothing while
    /// other tests run on other threads.
    struct CountingAlloc;

    thread_local! {
        static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    // SAFETY: forwards every call unchanged to the system allocator; the counter is a
    // const-initialized thread-local Cell, which never allocates.
    unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            ALLOCATIONS.with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as our caller's.
            unsafe { std::alloc::System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
            // SAFETY: same contract as our caller's.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: CountingAlloc = CountingAlloc;

    #[test]
    fn picks_and_plans_allocate_nothing() {
        let mut p = picker(4096, 3);
        let plan: Vec<u32> = (0..4096).rev().collect();
        // Twice: sizes the plan's two buffers, which take turns.
        p.set_plan(&plan);
        p.set_plan(&plan);
        demand(&mut p, 5); // sizes the demand list once
        let before = ALLOCATIONS.with(|c| c.get());
        for round in 0..100u32 {
            p.set_plan(&plan[(round as usize)..]);
            let pick = p.pick(|i| i % 3 != 0, |_| false, false).unwrap();
            p.release(pick.piece);
            demand(&mut p, round * 7 % 4096);
            let pick = p.pick(all, none, true).unwrap();
            p.complete(pick.piece);
        }
        assert_eq!(
            ALLOCATIONS.with(|c| c.get()) - before,
            0,
            "pick/set_plan/demand/release/complete allocated"
        );
        let mut q = PiecePicker::new(layout(256, 16), 5, true);
        let plan: Vec<u32> = (0..4096).rev().step_by(3).collect();
        // Twice: the plan's two buffers take turns.
        q.set_plan(&plan);
        q.set_plan(&plan);
        let before_blocks = ALLOCATIONS.with(|c| c.get());
        for round in 0..100u32 {
            q.set_plan(&plan[round as usize..]);
            q.demand(round * 37 % 4096..round * 37 % 4096 + 9);
            let pick = q.pick(all, none, false).unwrap();
            for b in q.layout().piece_blocks(pick.piece) {
                if q.block_wanted(b) {
                    q.block_present(b);
                }
            }
            q.release(pick.piece);
        }
        assert_eq!(
            ALLOCATIONS.with(|c| c.get()) - before_blocks,
            0,
            "block arrivals, block demands or block plans allocated"
        );
        let after = ALLOCATIONS.with(|c| c.get());
        // The counter does see allocations.
        let b = std::hint::black_box(Box::new(1u64));
        assert!(ALLOCATIONS.with(|c| c.get()) > after);
        drop(b);
    }

    #[test]
    fn plan_spread_sends_crowd_members_to_different_rare_pieces() {
        let plan: Vec<u32> = (100..200).collect();
        let first = |seed: u64, spread: bool| {
            let mut p = picker(1000, seed);
            p.set_plan(&plan);
            p.set_plan_spread(spread);
            for i in 0..1000 {
                p.add_availability(i);
            }
            p.pick(all, none, false).unwrap()
        };
        // One peer: strict plan order, whatever the seed.
        for seed in 0..8 {
            assert_eq!(
                first(seed, false),
                Pick {
                    piece: 100,
                    reason: PickReason::Plan
                }
            );
        }
        // Several: within the window, spread by seed.
        let picks: std::collections::BTreeSet<u32> = (0..8).map(|s| first(s, true).piece).collect();
        assert!(picks.len() > 1, "{picks:?}");
        assert!(picks.iter().all(|&q| (100..100 + PLAN_SPREAD).contains(&q)));
        // A piece others already have is left to them: the rarer ones go first.
        let mut p = picker(1000, 3);
        p.set_plan(&plan);
        p.set_plan_spread(true);
        for i in 0..1000 {
            p.add_availability(i);
            if i != 107 {
                p.add_availability(i);
            }
        }
        assert_eq!(p.pick(all, none, false).unwrap().piece, 107);
        // Beyond the window, still the first entry the peer has.
        let far = |i: u32| i == 150;
        assert_eq!(p.pick(far, none, false).unwrap().piece, 150);
        p.check_invariant();
    }

    #[test]
    fn planned_pieces_are_fetched_without_background_fill() {
        let mut p = picker(8, 1);
        for i in 0..8 {
            p.set_wanted(i, false);
        }
        assert_eq!(p.pick(|_| true, |_| false, false), None, "nothing wanted");
        p.set_plan(&[5, 2]);
        assert_eq!(p.pick(|_| true, |_| false, false).map(|x| x.piece), Some(5));
        p.set_plan(&[3]);
        assert_eq!(
            p.counts().queued,
            1,
            "piece 2 left the plan: not needed again"
        );
        assert_eq!(p.pick(|_| true, |_| false, false).map(|x| x.piece), Some(3));
        // Only endgame duplicates are left, and this peer already holds both.
        assert_eq!(p.pick(|_| true, |i| i == 5 || i == 3, false), None);
        p.check_invariant();
    }

    /// The straightforward definition of the priority rule, recomputed from scratch each time.
    fn reference_pick(
        p: &PiecePicker,
        has: &[bool],
        mine: &[bool],
        urgent_only: bool,
    ) -> Option<Pick> {
        let ok = |i: u32| has[i as usize];
        for &d in &p.demand_order {
            if p.state[d as usize] == PieceState::Queued && ok(d) {
                return Some(Pick {
                    piece: d,
                    reason: PickReason::Demand,
                });
            }
        }
        for &d in &p.demand_order {
            let i = d as usize;
            if p.state[i] == PieceState::InFlight
                && p.copies[i] < MAX_URGENT_COPIES
                && ok(d)
                && !mine[i]
            {
                return Some(Pick {
                    piece: d,
                    reason: PickReason::Demand,
                });
            }
        }
        if urgent_only {
            return None;
        }
        for &q in &p.plan {
            if p.plannable(q) && ok(q) {
                return Some(Pick {
                    piece: q,
                    reason: PickReason::Plan,
                });
            }
        }
        let n = p.len();
        let rarest = (0..n)
            .map(|k| (p.rotation + k) % n)
            .filter(|&i| p.state[i as usize] == PieceState::Queued && ok(i))
            .enumerate()
            .min_by_key(|&(order, i)| (p.avail[i as usize], order))
            .map(|(_, i)| i);
        if let Some(i) = rarest {
            return Some(Pick {
                piece: i,
                reason: PickReason::Rarest,
            });
        }
        let queued = p.state.contains(&PieceState::Queued);
        if !queued {
            return (0..n)
                .filter(|&i| {
                    p.state[i as usize] == PieceState::InFlight
                        && p.copies[i as usize] < MAX_ENDGAME_COPIES
                        && ok(i)
                        && !mine[i as usize]
                })
                .min_by_key(|&i| (p.copies[i as usize], i))
                .map(|i| Pick {
                    piece: i,
                    reason: PickReason::Endgame,
                });
        }
        None
    }

    #[test]
    fn randomized_against_reference() {
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let n = rng.gen_range(1..40u32);
            let mut p = picker(n, seed);
            // Three simulated peers with their bitfields and assignments.
            let mut has = vec![vec![false; n as usize]; 3];
            let mut mine: Vec<Vec<bool>> = vec![vec![false; n as usize]; 3];
            for h in &mut has {
                for (i, b) in h.iter_mut().enumerate() {
                    *b = rng.gen_bool(0.7);
                    if *b {
                        p.add_availability(i as u32);
                    }
                }
            }
            for _ in 0..400 {
                let peer = rng.gen_range(0..3);
                match rng.gen_range(0..10) {
                    0..=3 => {
                        let urgent = rng.gen_bool(0.2);
                        let expect = reference_pick(&p, &has[peer], &mine[peer], urgent);
                        let got = {
                            let (h, m) = (&has[peer], &mine[peer]);
                            p.pick(|i| h[i as usize], |i| m[i as usize], urgent)
                        };
                        assert_eq!(got, expect, "seed {seed}");
                        if let Some(pk) = got {
                            assert!(!mine[peer][pk.piece as usize]);
                            mine[peer][pk.piece as usize] = true;
                        }
                    }
                    4 | 5 => {
                        // Finish or drop one of this peer's assignments.
                        if let Some(i) = (0..n as usize).find(|&i| mine[peer][i]) {
                            mine[peer][i] = false;
                            if rng.gen_bool(0.6) {
                                p.complete(i as u32);
                            } else {
                                p.release(i as u32);
                            }
                        }
                    }
                    6 => {
                        demand(&mut p, rng.gen_range(0..n));
                    }
                    7 => {
                        let len = rng.gen_range(0..n as usize + 3);
                        let plan: Vec<u32> = (0..len).map(|_| rng.gen_range(0..n + 2)).collect();
                        p.set_plan(&plan);
                    }
                    8 => p.set_wanted(rng.gen_range(0..n), rng.gen_bool(0.7)),
                    _ => {
                        let i = rng.gen_range(0..n);
                        if !has[peer][i as usize] {
                            has[peer][i as usize] = true;
                            p.add_availability(i);
                        }
                    }
                }
                p.check_invariant();
                let total: u32 = mine
                    .iter()
                    .map(|m| m.iter().filter(|&&b| b).count() as u32)
                    .sum();
                let copies: u32 = p.copies.iter().map(|&c| c as u32).sum();
                assert_eq!(total, copies, "every assignment is counted once");
            }
        }
    }

    #[test]
    fn a_demand_wants_only_its_blocks_when_blocks_verify_alone() {
        // Demand only (no background fill): 4 pieces of 4 blocks.
        let mut p = PiecePicker::new(layout(4, 4), 1, true);
        for i in 0..4 {
            p.set_wanted(i, false);
        }
        assert_eq!(p.counts().not_needed, 4);
        assert!(p.demand(5..7));
        assert!(p.is_demanded(1) && p.is_block_demanded(5) && !p.is_block_demanded(4));
        assert_eq!(
            p.pick(all, none, false),
            Some(Pick {
                piece: 1,
                reason: PickReason::Demand
            })
        );
        let wanted: Vec<u32> = (4..8).filter(|&b| p.block_wanted(b)).collect();
        assert_eq!(wanted, vec![5, 6], "only the demanded blocks");
        assert!(p.demand_in_flight());
        assert!(p.block_present(5));
        assert!(!p.block_present(5), "a block arrives once");
        assert!(p.is_demanded(1));
        p.block_present(6);
        assert!(!p.is_demanded(1) && !p.demand_in_flight());
        // Nothing else wanted in it: the peer gives it back and it stays partial.
        p.release(1);
        assert_eq!(p.state(1), PieceState::NotNeeded);
        assert!(p.is_present(5) && !p.is_present(4));
        // A later demand of a present block needs nothing.
        assert!(!p.demand(5..7));
        assert_eq!(p.pick(all, none, false), None);
        p.check_invariant();
    }

    #[test]
    fn without_block_verification_a_demand_wants_the_whole_piece() {
        let mut p = PiecePicker::new(layout(4, 4), 1, false);
        for i in 0..4 {
            p.set_wanted(i, false);
        }
        p.demand(5..6);
        let wanted: Vec<u32> = (0..16).filter(|&b| p.block_wanted(b)).collect();
        assert_eq!(wanted, vec![4, 5, 6, 7]);
        assert_eq!(p.pick(all, none, false).unwrap().piece, 1);
        assert!(p.complete(1));
        assert!(!p.is_demanded(1) && (4..8).all(|b| p.is_present(b)));
        p.check_invariant();
    }

    #[test]
    fn the_plan_is_blocks_and_picks_their_pieces_in_order() {
        let mut p = PiecePicker::new(layout(4, 4), 1, true);
        for i in 0..4 {
            p.set_wanted(i, false);
        }
        // Pieces in the order of their first planned block: 2, then 0.
        p.set_plan(&[9, 2, 10, 99, 9]);
        assert_eq!(p.counts().queued, 2);
        assert!(p.block_wanted(9) && p.block_wanted(10) && !p.block_wanted(8));
        assert!(p.is_block_planned(2) && !p.is_block_planned(3));
        assert_eq!(
            p.pick(all, none, false),
            Some(Pick {
                piece: 2,
                reason: PickReason::Plan
            })
        );
        assert_eq!(p.pick(all, none, false).unwrap().piece, 0);
        assert_eq!(p.pick(all, |i| i == 0 || i == 2, false), None);
        // Planned blocks of piece 2 arrive: given back, it needs nothing more.
        p.block_present(9);
        p.block_present(10);
        p.release(2);
        assert_eq!(p.state(2), PieceState::NotNeeded);
        // A new plan drops piece 0's block: once given back, piece 0 is not needed.
        p.set_plan(&[12]);
        p.release(0);
        assert_eq!(p.state(0), PieceState::NotNeeded);
        assert_eq!(p.state(3), PieceState::Queued);
        p.check_invariant();
    }

    #[test]
    fn a_pick_can_stop_at_the_plan() {
        let mut p = PiecePicker::new(layout(4, 4), 1, true);
        p.set_plan(&[9]);
        assert_eq!(
            p.pick_upto(all, none, PickReason::Plan),
            Some(Pick {
                piece: 2,
                reason: PickReason::Plan
            })
        );
        assert_eq!(
            p.pick_upto(all, none, PickReason::Plan),
            None,
            "only background left"
        );
        assert_eq!(
            p.pick_upto(all, none, PickReason::Endgame)
                .map(|x| x.reason),
            Some(PickReason::Rarest)
        );
        p.check_invariant();
    }

    #[test]
    fn blocks_arriving_in_a_wanted_piece_leave_it_for_its_peer_to_verify() {
        let mut p = PiecePicker::new(layout(2, 2), 1, true);
        assert_eq!(p.pick(all, none, false).unwrap().piece, 1);
        p.block_present(2);
        p.block_present(3);
        // All blocks present but not yet hashed: not queued again, still the peer's.
        assert_eq!(p.state(1), PieceState::InFlight);
        assert!(!p.block_wanted(2));
        assert!(p.complete(1));
        assert_eq!(p.state(1), PieceState::Have);
        // A piece whose blocks are all present but which failed its SHA-1 (a table that
        // disagrees with the torrent) is not fetched again forever.
        let mut q = PiecePicker::new(layout(1, 2), 1, true);
        assert_eq!(q.pick(all, none, false).unwrap().piece, 0);
        q.block_present(0);
        q.block_present(1);
        q.release(0);
        assert_eq!(q.state(0), PieceState::NotNeeded);
        assert_eq!(q.pick(all, none, false), None);
        p.check_invariant();
        q.check_invariant();
    }

    /// Random block-level operations on multi-block pieces keep the invariant, and
    /// `block_wanted` matches its definition.
    #[test]
    fn randomized_blocks_keep_the_invariant() {
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let pieces = rng.gen_range(1..12u32);
            let per = rng.gen_range(1..6u32);
            let verify = rng.gen_bool(0.7);
            let mut p = PiecePicker::new(layout(pieces, per), seed, verify);
            let blocks = p.layout().blocks();
            let mut mine = vec![0u32; pieces as usize];
            let mut plan: Vec<u32> = Vec::new();
            for _ in 0..300 {
                match rng.gen_range(0..8) {
                    0 => {
                        let a = rng.gen_range(0..blocks);
                        let len = rng.gen_range(1..4);
                        p.demand(a..a + len);
                    }
                    1 => {
                        let len = rng.gen_range(0..blocks as usize + 2);
                        plan = (0..len).map(|_| rng.gen_range(0..blocks + 2)).collect();
                        p.set_plan(&plan);
                    }
                    2 => p.set_wanted(rng.gen_range(0..pieces), rng.gen_bool(0.5)),
                    3 | 4 => {
                        if let Some(pk) = p.pick(all, |i| mine[i as usize] > 0, false) {
                            mine[pk.piece as usize] += 1;
                        }
                    }
                    5 => {
                        // A peer's block arrives in a piece it holds.
                        if let Some(i) = (0..pieces).find(|&i| mine[i as usize] > 0) {
                            let b = rng.gen_range(p.layout().piece_blocks(i));
                            if verify {
                                p.block_present(b);
                            }
                        }
                    }
                    _ => {
                        if let Some(i) = (0..pieces).find(|&i| mine[i as usize] > 0) {
                            mine[i as usize] -= 1;
                            if rng.gen_bool(0.4) {
                                p.complete(i);
                            } else {
                                p.release(i);
                            }
                        }
                    }
                }
                p.check_invariant();
                for b in 0..blocks {
                    let piece = p.layout().piece_of(b) as usize;
                    let planned_missing = plan.contains(&b) && !p.is_present(b);
                    let expect = !p.is_present(b)
                        && if verify {
                            p.wanted[piece] || p.is_block_demanded(b) || planned_missing
                        } else {
                            p.wanted[piece]
                                || p.demanded_missing[piece] > 0
                                || p.planned_missing[piece] > 0
                        };
                    assert_eq!(p.block_wanted(b), expect, "seed {seed} block {b}");
                }
            }
        }
    }

    /// Clients of a crowd asking the origin for their shared plan's pieces take different
    /// ones while several peers are connected (they trade them after), and strict plan order
    /// when alone.
    #[test]
    fn origin_plan_picks_spread_over_a_crowd() {
        let plan: Vec<u32> = (100..200).collect();
        let first = |seed: u64, spread: bool| {
            let mut p = picker(1000, seed);
            p.set_plan(&plan);
            p.set_plan_spread(spread);
            // Peers have what is not in the plan: every plan piece is an orphan.
            for i in (0..100).chain(200..1000) {
                p.add_availability(i);
            }
            let never = |_: u32| false;
            let pick = p.pick_origin(never, never, true, false).unwrap();
            assert_eq!(pick.reason, PickReason::Plan);
            p.check_invariant();
            pick.piece
        };
        for seed in 0..8 {
            assert_eq!(first(seed, false), 100, "alone: the plan's order");
        }
        let picks: std::collections::BTreeSet<u32> = (0..8).map(|s| first(s, true)).collect();
        assert!(
            picks.len() >= 4,
            "8 clients, few distinct origin picks: {picks:?}"
        );
        assert!(picks.iter().all(|&q| (100..100 + PLAN_SPREAD).contains(&q)));
        // A plan piece a peer has is left to the peer, spread or not.
        let mut p = picker(1000, 5);
        p.set_plan(&plan);
        p.set_plan_spread(true);
        for i in (0..1000).filter(|&i| i != 150) {
            p.add_availability(i);
        }
        let never = |_: u32| false;
        assert_eq!(p.pick_origin(never, never, true, false).unwrap().piece, 150);
        assert_eq!(p.pick_origin(never, |q| q == 150, true, false), None);
    }

    /// The origin takes what no peer has, or what peers are too slow for, and never a piece
    /// a peer has that nobody waits for.
    #[test]
    fn the_origin_comes_after_peers() {
        let mut p = PiecePicker::new(layout(4, 4), 1, true);
        p.add_availability(1);
        p.add_availability(3);
        p.demand(0..1);
        p.demand(4..5);
        let never = |_: u32| false;
        // Demanded and nobody has it: at once.
        let a = p.pick_origin(never, never, false, false).unwrap();
        assert_eq!((a.piece, a.reason), (0, PickReason::Demand));
        // Demanded, a peer has it, not overdue: not for the origin, and without the plan
        // nothing else either.
        assert_eq!(p.pick_origin(never, |q| q == 0, false, false), None);
        // The background takes only the piece nobody has.
        let b = p.pick_origin(never, |q| q == 0, true, true).unwrap();
        assert_eq!((b.piece, b.reason), (2, PickReason::Rarest));
        assert_eq!(p.pick_origin(never, |q| q == 0 || q == 2, true, true), None);
        // Overdue at its peer: the origin takes it too.
        let c = p
            .pick_origin(|q| q == 1, |q| q == 0 || q == 2, false, false)
            .unwrap();
        assert_eq!((c.piece, c.reason), (1, PickReason::Demand));
        p.check_invariant();
    }
}
