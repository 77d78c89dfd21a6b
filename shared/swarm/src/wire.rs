//! Messages waiting for a connection's writer.
//!
//! The reader, the choker and the engine never write to a socket: they queue an [`Out`] in the
//! connection's [`Outbox`] and wake the writer, so a writer blocked on a full socket never stops
//! a reader (two peers uploading to each other cannot deadlock). Piece data is read from
//! storage only when the writer sends it, so the queue holds no payload, and a cancel or a
//! choke can still withdraw queued uploads.

use std::collections::VecDeque;

use peer_binary_protocol::Request;

/// Upload requests queued per peer. Transmission pipelines ~700 on a fast link; a peer that
/// queues more than this is dropped (it reconnects and re-requests), because silently ignoring
/// a request would stall it: without the fast extension there is no "reject".
pub const MAX_UPLOAD_QUEUE: usize = 4096;

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
    Request(Request),
    Cancel(Request),
    /// Upload of a block the peer requested.
    Piece(Request),
}

/// Messages queued for one connection's writer.
pub(crate) struct Outbox {
    queue: VecDeque<Out>,
    uploads: usize,
}

impl Outbox {
    pub fn new() -> Outbox {
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

    pub fn pop(&mut self) -> Option<Out> {
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

    /// Withdraws a queued upload the peer cancelled.
    pub fn cancel_upload(&mut self, r: &Request) {
        let before = self.queue.len();
        self.queue.retain(|o| {
            !matches!(o, Out::Piece(q) if q.index == r.index && q.begin == r.begin && q.length == r.length)
        });
        self.uploads -= before - self.queue.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_bounded_cancellable_and_dropped_on_choke() {
        let mut o = Outbox::new();
        let r = |i| Request::new(i, 0, 16384);
        for i in 0..MAX_UPLOAD_QUEUE as u32 {
            assert!(o.push(Out::Piece(r(i))));
        }
        assert!(!o.push(Out::Piece(r(9999))), "beyond the bound");
        assert!(o.push(Out::Have(1)), "other messages always queue");
        o.cancel_upload(&r(0));
        assert!(o.push(Out::Piece(r(9999))), "a cancel frees a slot");
        o.drop_uploads();
        assert!(matches!(o.pop(), Some(Out::Have(1))));
        assert!(o.pop().is_none());
    }
}
