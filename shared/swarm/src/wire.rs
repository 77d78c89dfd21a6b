//! Messages waiting for a connection's writer.
//!
//! The reader, the choker and the engine never write to a socket: they queue an [`Out`] in the
//! connection's [`Outbox`] and wake the writer, so a writer blocked on a full socket never stops
//! a reader (two peers uploading to each other cannot deadlock). Piece data is read from
//! storage only when the writer sends it, so the queue holds no payload, and a cancel or a
//! choke can still withdraw queued uploads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use peer_binary_protocol::Request;

/// Upload requests queued per peer. A request is 16 bytes here (data is read when sent), so
/// the bound is about memory only loosely; it is twice [`ADVERTISED_REQQ`] so a peer that
/// honours our `reqq` never reaches it, even with requests that crossed our extended
/// handshake or a choke on the wire.
pub const MAX_UPLOAD_QUEUE: usize = 4096;

/// The `reqq` of our extended handshake (BEP 10): requests a peer may keep outstanding at us.
/// Transmission without a hint queues about 10 s worth of requests (thousands on a fast link);
/// told this, it stays below it. libtorrent advertises 2000 (`max_allowed_in_request_queue`).
pub const ADVERTISED_REQQ: usize = MAX_UPLOAD_QUEUE / 2;

/// Metadata pieces (BEP 9, and of the block-hash table) queued per peer: an info dictionary
/// is a few pieces and a client asks a table a few pieces at a time, so more requests than
/// this are a flood and ignored.
const MAX_METADATA_QUEUE: usize = 16;

/// A message waiting for the writer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Out {
    /// Our bitfield, as it is when sent.
    Bitfield,
    Interested,
    NotInterested,
    Choke,
    Unchoke,
    Have(u32),
    /// Block `n` verified alone, of a piece not yet whole (`vmt_have_block`).
    HaveBlock(u32),
    Request(Request),
    /// A request for a block a reader waits for, to a peer that chokes us (`vmt_urgent`).
    Urgent(Request),
    Cancel(Request),
    /// Upload of a block the peer requested; `true` if it asked urgently (`vmt_urgent`: a
    /// reader waits for it), which goes before the others (see [`Outbox::push`]) and is
    /// counted in the engine's urgent backlog (see [`crate::busy`]).
    Piece(Request, bool),
    /// Our answer to an urgent request we do not queue: ask again after the duration
    /// (`vmt_busy`).
    Busy(Request, std::time::Duration),
    /// Our extended handshake (BEP 10); the first message after the handshake.
    ExtendedHandshake,
    /// The peer-exchange message waiting in the connection's PEX state (BEP 11).
    Pex,
    /// Piece `n` of the info dictionary (BEP 9), or a reject if we cannot serve it.
    Metadata(u32),
    /// Piece `n` of the block-hash table (`vmt_block_hashes`), or a reject.
    BlockTable(u32),
    /// A decline of piece `n` (`vmt_elsewhere`): we inject, and the crowd has it.
    Elsewhere(u32),
}

/// Messages queued for one connection's writer.
pub(crate) struct Outbox {
    queue: VecDeque<Out>,
    uploads: usize,
    metadata: usize,
    /// Urgent uploads queued here, also counted in `backlog`.
    urgent: usize,
    /// Urgent uploads queued over all of the engine's connections.
    backlog: Arc<AtomicUsize>,
}

impl Outbox {
    pub fn new(backlog: Arc<AtomicUsize>) -> Outbox {
        Outbox {
            queue: VecDeque::with_capacity(256),
            uploads: 0,
            metadata: 0,
            urgent: 0,
            backlog,
        }
    }

    fn forget_urgent(&mut self, n: usize) {
        self.urgent -= n;
        self.backlog.fetch_sub(n, Ordering::Relaxed);
    }

    /// Queues `out`; false (and nothing queued) if it is an upload beyond [`MAX_UPLOAD_QUEUE`]:
    /// the request is ignored, as libtorrent does beyond its `max_allowed_in_request_queue`
    /// (without the fast extension there is no reject); the peer re-requests it after its
    /// request timeout. An urgent upload goes ahead of the queued uploads nobody waits for
    /// (BEP 3 asks no order of answers), behind the urgent ones before it.
    pub fn push(&mut self, out: Out) -> bool {
        if let Out::Piece(_, urgent) = out {
            if self.uploads >= MAX_UPLOAD_QUEUE {
                return false;
            }
            self.uploads += 1;
            if urgent {
                self.urgent += 1;
                self.backlog.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Out::Metadata(_) | Out::BlockTable(_) = out {
            if self.metadata >= MAX_METADATA_QUEUE {
                return false;
            }
            self.metadata += 1;
        }
        if let Out::Piece(_, true) = out {
            if let Some(at) = self
                .queue
                .iter()
                .position(|o| matches!(o, Out::Piece(_, false)))
            {
                self.queue.insert(at, out);
                return true;
            }
        }
        self.queue.push_back(out);
        true
    }

    /// The next message; with `others` false, the next but the uploads nobody waits for
    /// (they stay queued, in order).
    pub fn pop(&mut self, others: bool) -> Option<Out> {
        let out = if others {
            self.queue.pop_front()?
        } else {
            let at = self
                .queue
                .iter()
                .position(|o| !matches!(o, Out::Piece(_, false)))?;
            self.queue.remove(at)?
        };
        match out {
            Out::Piece(_, urgent) => {
                self.uploads -= 1;
                if urgent {
                    self.forget_urgent(1);
                }
            }
            Out::Metadata(_) | Out::BlockTable(_) => self.metadata -= 1,
            _ => {}
        }
        Some(out)
    }

    /// Uploads queued.
    pub fn uploads(&self) -> usize {
        self.uploads
    }

    /// Forgets queued uploads (we choked the peer, which voids its requests).
    pub fn drop_uploads(&mut self) {
        self.queue.retain(|o| !matches!(o, Out::Piece(..)));
        self.uploads = 0;
        self.forget_urgent(self.urgent);
    }

    /// Withdraws a queued upload the peer cancelled.
    pub fn cancel_upload(&mut self, r: &Request) {
        let (before, mut urgent) = (self.queue.len(), 0);
        self.queue.retain(|o| match o {
            Out::Piece(q, u)
                if q.index == r.index && q.begin == r.begin && q.length == r.length =>
            {
                urgent += usize::from(*u);
                false
            }
            _ => true,
        });
        self.uploads -= before - self.queue.len();
        self.forget_urgent(urgent);
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.forget_urgent(self.urgent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_bounded_cancellable_and_dropped_on_choke() {
        let mut o = Outbox::new(Arc::default());
        let r = |i| Request::new(i, 0, 16384);
        for i in 0..MAX_UPLOAD_QUEUE as u32 {
            assert!(o.push(Out::Piece(r(i), false)));
        }
        assert!(!o.push(Out::Piece(r(9999), false)), "beyond the bound");
        assert!(o.push(Out::Have(1)), "other messages always queue");
        o.cancel_upload(&r(0));
        assert!(o.push(Out::Piece(r(9999), false)), "a cancel frees a slot");
        o.drop_uploads();
        assert!(matches!(o.pop(true), Some(Out::Have(1))));
        assert!(o.pop(true).is_none());
    }

    /// An urgent upload overtakes the uploads nobody waits for, not the urgent ones before
    /// it nor other messages.
    #[test]
    fn urgent_uploads_overtake_the_others() {
        let mut o = Outbox::new(Arc::default());
        let r = |i| Request::new(i, 0, 16384);
        o.push(Out::Have(7));
        o.push(Out::Piece(r(1), false));
        o.push(Out::Piece(r(2), true));
        o.push(Out::Piece(r(3), false));
        o.push(Out::Piece(r(4), true));
        let order: Vec<String> = std::iter::from_fn(|| o.pop(true))
            .map(|m| match m {
                Out::Have(i) => format!("have {i}"),
                Out::Piece(r, u) => format!("{} {}", r.index, u),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(order, ["have 7", "2 true", "4 true", "1 false", "3 false"]);
        assert_eq!(o.uploads(), 0);
        // Held back, the others still go: a request queued behind an upload overtakes it.
        o.push(Out::Piece(r(5), false));
        o.push(Out::Request(r(6)));
        assert!(matches!(o.pop(false), Some(Out::Request(q)) if q.index == 6));
        assert!(o.pop(false).is_none());
        assert_eq!(o.uploads(), 1);
        assert!(matches!(o.pop(true), Some(Out::Piece(q, false)) if q.index == 5));
    }

    /// The engine-wide urgent backlog counts exactly the urgent uploads queued in every
    /// outbox, whichever way they leave: sent, cancelled, dropped by a choke, or with the
    /// connection.
    #[test]
    fn the_urgent_backlog_follows_every_outbox() {
        let backlog = Arc::new(AtomicUsize::new(0));
        let n = || backlog.load(Ordering::Relaxed);
        let r = |i| Request::new(i, 0, 16384);
        let mut a = Outbox::new(backlog.clone());
        let mut b = Outbox::new(backlog.clone());
        for i in 0..4 {
            a.push(Out::Piece(r(i), true));
            b.push(Out::Piece(r(i), i % 2 == 0));
        }
        assert_eq!(n(), 6);
        assert!(matches!(a.pop(true), Some(Out::Piece(_, true))));
        assert_eq!(n(), 5, "sent");
        a.cancel_upload(&r(1));
        b.cancel_upload(&r(1));
        assert_eq!(n(), 4, "a cancelled urgent one, and a plain one");
        b.drop_uploads();
        assert_eq!(n(), 2, "a choke");
        drop(a);
        assert_eq!(n(), 0, "the connection closed");
        drop(b);
        assert_eq!(n(), 0);
    }
}
