//! Which piece a peer should fetch next: demand, then plan, then rarest first, then endgame.
//!
//! [`PiecePicker`] is the engine's only source of piece decisions. It is a plain synchronous
//! type (no tokio, no I/O, no clock): given the same calls and seed it makes the same picks, so it
//! is unit-tested on its own and could be driven by a simulator.
//!
//! # Invariant
//! Every piece is in exactly one [`PieceState`]:
//! - `Have`: verified and written; never picked again.
//! - `InFlight`: assigned to at least one peer (`copies > 0`) and not yet verified.
//! - `Queued`: wanted, assigned to no peer.
//! - `NotNeeded`: not wanted (see [`PiecePicker::set_wanted`]) and not in flight.
//!
//! `copies[p]` counts the peers holding an assignment for `p`; each assignment handed out by
//! [`PiecePicker::pick`] is returned exactly once by [`PiecePicker::release`] (peer gave up:
//! choke, disconnect, bad hash, piece already done) or [`PiecePicker::complete`] (verified).
//! A `Have` piece may still have `copies > 0` while duplicate endgame requests drain.
//!
//! # Priority
//! 1. Demanded pieces, oldest demand first. A demanded piece already in flight elsewhere may be
//!    assigned to one more peer ([`MAX_URGENT_COPIES`]), so a slow peer cannot hold up a parked read.
//! 2. The plan (application prefetch order), first queued piece the peer has. A planned piece
//!    is fetched even when not wanted (`NotNeeded`): the plan is how an application that does
//!    not fetch everything (no `fetch_all`) asks for pieces ahead of its reads. With several
//!    peers connected, the pick is the least available of the next `PLAN_SPREAD` (16) queued
//!    entries, ties broken by the seeded rotation: clients of a flash crowd follow the same
//!    plan, and asking the seeder for the same piece at once would spend its uplink on copies
//!    instead of on pieces they can then trade.
//! 3. Rarest first among queued pieces; ties broken from a seeded rotation so that clients
//!    started together do not all fetch the same piece.
//! 4. Endgame: when nothing is queued, duplicate an in-flight piece with the fewest copies.
//!
//! Picks, releases and completions allocate nothing; [`PiecePicker::set_plan`] and
//! [`PiecePicker::demand`] reuse their buffers (allocating only to grow them), so the plan can
//! be replaced on every read the application sees. A unit test counts allocations to hold this.

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
    /// Wanted, not assigned.
    Queued,
    /// Not wanted, not assigned.
    NotNeeded,
}

/// Why a piece was picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PickReason {
    /// A reader waits for it.
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
    /// Wanted pieces waiting for a peer.
    pub queued: u32,
    /// Pieces not wanted.
    pub not_needed: u32,
}

/// The piece bookkeeping and priority decisions of one torrent.
#[derive(Debug, Clone)]
pub struct PiecePicker {
    state: Vec<PieceState>,
    wanted: Vec<bool>,
    copies: Vec<u8>,
    /// Number of connected peers that have each piece.
    avail: Vec<u16>,
    demanded: Vec<u32>,
    is_demanded: Vec<bool>,
    plan: Vec<u32>,
    plan_rank: Vec<u32>,
    /// Every plan entry before this index is not `Queued`.
    plan_cursor: usize,
    /// Start of the rarest-first tie-break rotation.
    rotation: u32,
    /// Queued plan entries a plan pick chooses among: 1 (strict order) or `PLAN_SPREAD` (16).
    plan_window: u32,
    counts: PieceCounts,
}

impl PiecePicker {
    /// A picker for `pieces` pieces, all queued. `seed` fixes the rarest-first tie-break.
    pub fn new(pieces: u32, seed: u64) -> PiecePicker {
        let n = pieces as usize;
        // splitmix64 step: a well-spread rotation from any seed, including small ones.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        PiecePicker {
            state: vec![PieceState::Queued; n],
            wanted: vec![true; n],
            copies: vec![0; n],
            avail: vec![0; n],
            demanded: Vec::new(),
            is_demanded: vec![false; n],
            plan: Vec::new(),
            plan_rank: vec![NOT_PLANNED; n],
            plan_cursor: 0,
            rotation: if pieces == 0 {
                0
            } else {
                (z % pieces as u64) as u32
            },
            plan_window: 1,
            counts: PieceCounts {
                queued: pieces,
                ..PieceCounts::default()
            },
        }
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

    fn set_state(&mut self, piece: u32, new: PieceState) {
        let slot = &mut self.state[piece as usize];
        let old = *slot;
        if old == new {
            return;
        }
        *slot = new;
        *self.count_mut(old) -= 1;
        *self.count_mut(new) += 1;
        if Self::plannable(new) {
            let rank = self.plan_rank[piece as usize];
            if rank != NOT_PLANNED && (rank as usize) < self.plan_cursor {
                self.plan_cursor = rank as usize;
            }
        }
        if new == PieceState::Have && self.is_demanded[piece as usize] {
            self.is_demanded[piece as usize] = false;
            self.demanded.retain(|&p| p != piece);
        }
    }

    /// Whether the plan may hand out a piece in state `s`. Planning a piece makes it queued
    /// even when it is not otherwise wanted (see [`PiecePicker::set_plan`]), so this is the
    /// queued state alone.
    fn plannable(s: PieceState) -> bool {
        s == PieceState::Queued
    }

    fn count_mut(&mut self, s: PieceState) -> &mut u32 {
        match s {
            PieceState::Have => &mut self.counts.have,
            PieceState::InFlight => &mut self.counts.in_flight,
            PieceState::Queued => &mut self.counts.queued,
            PieceState::NotNeeded => &mut self.counts.not_needed,
        }
    }

    /// The state a piece falls back to when no peer holds it.
    fn idle_state(&self, piece: u32) -> PieceState {
        let i = piece as usize;
        if self.wanted[i] || self.is_demanded[i] || self.plan_rank[i] != NOT_PLANNED {
            PieceState::Queued
        } else {
            PieceState::NotNeeded
        }
    }

    /// Records `piece` as verified without a peer (resume, seeding). Returns false if it already was.
    pub fn mark_have(&mut self, piece: u32) -> bool {
        if self.state[piece as usize] == PieceState::Have {
            return false;
        }
        self.set_state(piece, PieceState::Have);
        true
    }

    /// Includes or excludes `piece` from the pieces to fetch. Demanded pieces are fetched anyway.
    pub fn set_wanted(&mut self, piece: u32, wanted: bool) {
        self.wanted[piece as usize] = wanted;
        if matches!(
            self.state[piece as usize],
            PieceState::Queued | PieceState::NotNeeded
        ) {
            let s = self.idle_state(piece);
            self.set_state(piece, s);
        }
    }

    /// Puts `piece` ahead of everything else. Returns false if it is already verified.
    pub fn demand(&mut self, piece: u32) -> bool {
        let i = piece as usize;
        if self.state[i] == PieceState::Have {
            return false;
        }
        if !self.is_demanded[i] {
            self.is_demanded[i] = true;
            self.demanded.push(piece);
        }
        if self.state[i] == PieceState::NotNeeded {
            self.set_state(piece, PieceState::Queued);
        }
        true
    }

    /// Replaces the prefetch order. Out-of-range and repeated entries are ignored. Planned
    /// pieces are fetched even when not otherwise wanted (a client without background fill
    /// still prefetches its plan); a piece leaving the plan goes back to not needed unless
    /// wanted or demanded.
    pub fn set_plan(&mut self, plan: &[u32]) {
        for k in 0..self.plan.len() {
            let p = self.plan[k];
            self.plan_rank[p as usize] = NOT_PLANNED;
            if self.state[p as usize] == PieceState::Queued {
                let s = self.idle_state(p);
                self.set_state(p, s);
            }
        }
        self.plan.clear();
        for &p in plan {
            if let Some(rank) = self.plan_rank.get_mut(p as usize) {
                if *rank == NOT_PLANNED {
                    *rank = self.plan.len() as u32;
                    self.plan.push(p);
                    if self.state[p as usize] == PieceState::NotNeeded {
                        self.set_state(p, PieceState::Queued);
                    }
                }
            }
        }
        self.plan_cursor = 0;
    }

    /// Whether a reader waits for `piece`.
    pub fn is_demanded(&self, piece: u32) -> bool {
        self.is_demanded[piece as usize]
    }

    /// Whether a demanded piece is being fetched: other peers then hold back background
    /// blocks, which would share our downlink with it.
    pub fn demand_in_flight(&self) -> bool {
        self.demanded
            .iter()
            .any(|&p| self.state[p as usize] == PieceState::InFlight)
    }

    /// Whether plan picks spread over the next `PLAN_SPREAD` (16) entries (several peers
    /// connected) or follow the plan strictly (one peer: nobody to trade with).
    pub fn set_plan_spread(&mut self, spread: bool) {
        self.plan_window = if spread { PLAN_SPREAD } else { 1 };
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
    /// (used when the peer's request pipeline is full).
    pub fn pick(
        &mut self,
        peer_has: impl Fn(u32) -> bool,
        mine: impl Fn(u32) -> bool,
        urgent_only: bool,
    ) -> Option<Pick> {
        // 1. Demand.
        let mut urgent_dup = None;
        for &p in &self.demanded {
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
        if urgent_only {
            return None;
        }
        // 2. Plan.
        while self.plan_cursor < self.plan.len()
            && !Self::plannable(self.state[self.plan[self.plan_cursor] as usize])
        {
            self.plan_cursor += 1;
        }
        let (window, rotation) = (self.plan_window, self.rotation % self.plan_window);
        let mut best: Option<((u16, u32), u32)> = None;
        let mut seen = 0;
        for k in self.plan_cursor..self.plan.len() {
            let p = self.plan[k];
            if !Self::plannable(self.state[p as usize]) {
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

    /// A peer gives back its assignment of `piece` without a verified result.
    pub fn release(&mut self, piece: u32) {
        let i = piece as usize;
        debug_assert!(self.copies[i] > 0, "release of piece {piece} not assigned");
        self.copies[i] = self.copies[i].saturating_sub(1);
        if self.copies[i] == 0 && self.state[i] == PieceState::InFlight {
            let s = self.idle_state(piece);
            self.set_state(piece, s);
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
    fn check_invariant(&self) {
        let mut c = PieceCounts::default();
        for (i, &s) in self.state.iter().enumerate() {
            match s {
                PieceState::Have => c.have += 1,
                PieceState::InFlight => {
                    c.in_flight += 1;
                    assert!(self.copies[i] > 0, "in-flight piece {i} without copies");
                }
                PieceState::Queued => {
                    c.queued += 1;
                    assert_eq!(self.copies[i], 0, "queued piece {i} with copies");
                    assert!(
                        self.wanted[i] || self.is_demanded[i] || self.plan_rank[i] != NOT_PLANNED
                    );
                }
                PieceState::NotNeeded => {
                    c.not_needed += 1;
                    assert_eq!(self.copies[i], 0);
                    assert!(
                        !self.wanted[i] && !self.is_demanded[i] && self.plan_rank[i] == NOT_PLANNED
                    );
                }
            }
            assert_eq!(self.is_demanded[i], self.demanded.contains(&(i as u32)));
        }
        assert_eq!(c, self.counts);
        for k in 0..self.plan_cursor {
            assert!(!Self::plannable(self.state[self.plan[k] as usize]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn all(_: u32) -> bool {
        true
    }
    fn none(_: u32) -> bool {
        false
    }

    #[test]
    fn demand_beats_plan_beats_rarest() {
        let mut p = PiecePicker::new(10, 1);
        p.set_plan(&[5, 6, 7]);
        assert!(p.demand(9));
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
        let mut p = PiecePicker::new(6, 1);
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
        let mut p = PiecePicker::new(2, 0);
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
        assert!(p.demand(a));
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
        let mut p = PiecePicker::new(4, 0);
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
        let mut p = PiecePicker::new(3, 0);
        p.set_wanted(0, false);
        p.set_wanted(1, false);
        assert_eq!(p.counts().not_needed, 2);
        assert_eq!(p.pick(all, none, false).unwrap().piece, 2);
        assert_eq!(p.pick(all, |i| i == 2, false), None);
        p.demand(1);
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
        let mut p = PiecePicker::new(4096, 3);
        let plan: Vec<u32> = (0..4096).rev().collect();
        p.set_plan(&plan); // sizes the plan buffer once
        p.demand(5); // sizes the demand list once
        let before = ALLOCATIONS.with(|c| c.get());
        for round in 0..100u32 {
            p.set_plan(&plan[(round as usize)..]);
            let pick = p.pick(|i| i % 3 != 0, |_| false, false).unwrap();
            p.release(pick.piece);
            p.demand(round * 7 % 4096);
            let pick = p.pick(all, none, true).unwrap();
            p.complete(pick.piece);
        }
        let after = ALLOCATIONS.with(|c| c.get());
        assert_eq!(
            after - before,
            0,
            "pick/set_plan/demand/release/complete allocated"
        );
        // The counter does see allocations.
        let b = std::hint::black_box(Box::new(1u64));
        assert!(ALLOCATIONS.with(|c| c.get()) > after);
        drop(b);
    }

    #[test]
    fn plan_spread_sends_crowd_members_to_different_rare_pieces() {
        let plan: Vec<u32> = (100..200).collect();
        let first = |seed: u64, spread: bool| {
            let mut p = PiecePicker::new(1000, seed);
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
        let mut p = PiecePicker::new(1000, 3);
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
        let mut p = PiecePicker::new(8, 1);
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
        for &d in &p.demanded {
            if p.state[d as usize] == PieceState::Queued && ok(d) {
                return Some(Pick {
                    piece: d,
                    reason: PickReason::Demand,
                });
            }
        }
        for &d in &p.demanded {
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
            if PiecePicker::plannable(p.state[q as usize]) && ok(q) {
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
            let mut p = PiecePicker::new(n, seed);
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
                        p.demand(rng.gen_range(0..n));
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
}
