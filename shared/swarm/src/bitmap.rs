//! A fixed-size bitmap of verified pieces that any thread can read without a lock.
//!
//! The FUSE worker threads ask "is piece `i` here?" on every read; a relaxed atomic load answers
//! that without touching the engine's locks. Bits only ever go from 0 to 1 while the engine runs
//! (a verified piece stays verified), so a reader that sees a bit set may read the piece's bytes:
//! the bit is set with `Release` after the data was written, and read with `Acquire`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Piece bitmap with lock-free reads and sets.
#[derive(Debug)]
pub struct AtomicBitmap {
    words: Box<[AtomicU64]>,
    len: u32,
}

impl AtomicBitmap {
    /// A bitmap of `len` bits, all clear.
    pub fn new(len: u32) -> AtomicBitmap {
        let words = (0..(len as usize).div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        AtomicBitmap { words, len }
    }

    /// Number of bits.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the bitmap has no bits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether bit `i` is set; false when out of range.
    pub fn get(&self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let w = self.words[(i / 64) as usize].load(Ordering::Acquire);
        w & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; returns whether it was clear before.
    pub fn set(&self, i: u32) -> bool {
        assert!(i < self.len, "bit {i} out of range {}", self.len);
        let mask = 1 << (i % 64);
        self.words[(i / 64) as usize].fetch_or(mask, Ordering::AcqRel) & mask == 0
    }

    /// Number of set bits.
    pub fn count(&self) -> u32 {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones())
            .sum()
    }

    /// Word `k` (bits `64k..64k+64`), for fast set operations against another bitmap.
    pub fn word(&self, k: usize) -> u64 {
        self.words[k].load(Ordering::Acquire)
    }

    /// Number of 64-bit words.
    pub fn words(&self) -> usize {
        self.words.len()
    }

    /// Writes the BitTorrent wire form (bit 0 = high bit of byte 0) into `out`, which must hold
    /// `len.div_ceil(8)` bytes.
    pub fn to_wire(&self, out: &mut [u8]) {
        out.fill(0);
        for i in 0..self.len {
            if self.get(i) {
                out[(i / 8) as usize] |= 0x80 >> (i % 8);
            }
        }
    }
}

/// A plain (not atomic) bit set over any word storage: a `Vec` for a torrent's blocks, a
/// fixed array for one piece's blocks (no allocation per piece).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bits<W>(pub W);

impl<W: AsRef<[u64]> + AsMut<[u64]>> Bits<W> {
    pub fn get(&self, i: u32) -> bool {
        self.0.as_ref()[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    pub fn set(&mut self, i: u32) {
        self.0.as_mut()[(i / 64) as usize] |= 1 << (i % 64);
    }
    pub fn clear(&mut self, i: u32) {
        self.0.as_mut()[(i / 64) as usize] &= !(1 << (i % 64));
    }
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().iter().all(|&w| w == 0)
    }
}

/// Whether bit `i` is set in a BitTorrent wire-form bitfield.
pub fn wire_bit(bytes: &[u8], i: u32) -> bool {
    bytes
        .get((i / 8) as usize)
        .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count_wire() {
        let b = AtomicBitmap::new(70);
        assert!(b.set(0));
        assert!(!b.set(0));
        assert!(b.set(69));
        assert!(b.get(69) && !b.get(68) && !b.get(70));
        assert_eq!(b.count(), 2);
        let mut wire = [0u8; 9];
        b.to_wire(&mut wire);
        assert_eq!(wire[0], 0x80);
        assert!(wire_bit(&wire, 69) && !wire_bit(&wire, 1) && !wire_bit(&wire, 1000));
    }
}
