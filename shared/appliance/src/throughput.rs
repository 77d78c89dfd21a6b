//! Read-throughput measurement for the recorder and runtime benchmarks.
//!
//! Sequential passes read the whole file in fixed chunks; random passes read aligned chunks at
//! seeded pseudo-random offsets, so two files are compared on the very same offsets.
//! [`drop_cache`] evicts a file from the page cache so cold figures measure the disk, not memory.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

/// Access pattern of a pass.
#[derive(Clone, Copy, Debug)]
pub enum Pattern {
    /// The whole file front to back in `chunk`-byte reads.
    Sequential {
        /// Bytes per read.
        chunk: usize,
    },
    /// `count` reads of `chunk` bytes at aligned pseudo-random offsets drawn from `seed`.
    Random {
        /// Bytes per read.
        chunk: usize,
        /// Reads in the pass.
        count: usize,
        /// Seed of the offsets.
        seed: u64,
    },
}

/// Result of one pass.
#[derive(Clone, Copy, Debug)]
pub struct Pass {
    /// Bytes read.
    pub bytes: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl Pass {
    /// Throughput in MiB/s.
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.seconds.max(1e-9)
    }
}

/// Reads `path` with `pattern` and times it.
pub fn measure(path: &Path, pattern: Pattern) -> io::Result<Pass> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let chunk = match pattern {
        Pattern::Sequential { chunk } | Pattern::Random { chunk, .. } => chunk.max(1),
    };
    let mut buf = vec![0u8; chunk];
    let start = Instant::now();
    let mut bytes = 0u64;
    match pattern {
        Pattern::Sequential { .. } => {
            let mut offset = 0;
            while offset < size {
                let n = file.read_at(&mut buf, offset)?;
                if n == 0 {
                    break;
                }
                offset += n as u64;
                bytes += n as u64;
            }
        }
        Pattern::Random { count, seed, .. } => {
            let slots = (size / chunk as u64).max(1);
            let mut state = seed | 1;
            for _ in 0..count {
                // xorshift64*: cheap, seeded, identical offsets for every file measured.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
                let offset = (r % slots) * chunk as u64;
                bytes += file.read_at(&mut buf, offset)? as u64;
            }
        }
    }
    Ok(Pass {
        bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Evicts `path`'s pages from the page cache.
pub fn drop_cache(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    file.sync_all()?;
    // SAFETY: the fd is valid for the call; fadvise only reads its arguments.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_count_bytes() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![1u8; 100_000]).unwrap();
        let seq = measure(f.path(), Pattern::Sequential { chunk: 4096 }).unwrap();
        assert_eq!(seq.bytes, 100_000);
        let rnd = measure(
            f.path(),
            Pattern::Random {
                chunk: 4096,
                count: 10,
                seed: 1,
            },
        )
        .unwrap();
        assert_eq!(rnd.bytes, 40_960);
        drop_cache(f.path()).unwrap();
    }
}
