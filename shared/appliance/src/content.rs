//! Deterministic incompressible content: the bytes of demo files, test images and bench
//! images. An xorshift stream is cheap (1 GiB in about a second), reproducible from its seed,
//! and incompressible, so neither a filesystem nor a page cache can shortcut reading it.

use std::io::{self, Write};
use std::path::Path;

/// The xorshift64 state for `seed` (never zero, which xorshift would keep forever).
fn state(seed: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

/// Fills `out` with the stream, continuing from `state`.
fn fill(state: &mut u64, out: &mut [u8]) {
    for chunk in out.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

/// `len` bytes of the stream for `seed`.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill(&mut state(seed), &mut out);
    out
}

/// Writes `len` bytes of the stream for `seed` to a new file at `path` (synced), 1 MiB at a
/// time, so a multi-GB image needs no multi-GB buffer. Equal to [`bytes`] for the same seed.
pub fn write_file(path: &Path, seed: u64, len: u64) -> io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let mut s = state(seed);
    // A multiple of 8, so chunks continue the stream exactly where `bytes` would.
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        fill(&mut s, &mut chunk[..n]);
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_equals_bytes_and_seeds_differ() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let len = (1 << 20) + 13;
        write_file(&path, 5, len as u64).unwrap();
        assert!(std::fs::read(&path).unwrap() == bytes(5, len));
        assert_ne!(bytes(5, 64), bytes(6, 64));
        assert_eq!(bytes(0, 3).len(), 3);
    }
}
