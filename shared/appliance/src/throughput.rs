//! Read-throughput measurement for the recorder and runtime benchmarks.
//!
//! Sequential passes read the whole file in fixed chunks; random passes read aligned chunks at
//! seeded pseudo-random offsets, so two files are compared on the very same offsets.
//! [`drop_cache`] evicts a file from the page cache so cold figures measure the disk, not memory.
//! [`compare`] runs the recorder benchmark's passes (`vmt-record bench`) on two files, and
//! [`bench_image`] generates the image it reads when none is given.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::ext4::ApplianceError;

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

/// The smallest generated bench image: below it a pass times system calls, not reads.
pub const MIN_BENCH_IMAGE: u64 = 1 << 20;

/// Generates `dir/bench.img`: `size` incompressible bytes, so neither the page cache nor a
/// filesystem can shortcut reading them.
pub fn bench_image(dir: &Path, size: u64) -> Result<PathBuf, ApplianceError> {
    if size < MIN_BENCH_IMAGE {
        return Err(ApplianceError::ImageTooSmall {
            size,
            min: MIN_BENCH_IMAGE,
        });
    }
    let path = dir.join("bench.img");
    crate::content::write_file(&path, 0x1234_5678, size).map_err(|error| ApplianceError::Io {
        path: path.clone(),
        error,
    })?;
    Ok(path)
}

/// One row of [`compare`]: the best of its repetitions on each file.
#[derive(Clone, Copy, Debug)]
pub struct Comparison {
    /// The pass, e.g. `sequential 128 KiB`.
    pub pattern: &'static str,
    /// Whether both files were evicted from the page cache before each pass.
    pub cold: bool,
    /// Throughput of the raw file, MiB/s.
    pub raw_mib_s: f64,
    /// Throughput of the other file, MiB/s.
    pub other_mib_s: f64,
}

impl Comparison {
    /// The other file's throughput as a share of the raw file's.
    pub fn ratio(&self) -> f64 {
        self.other_mib_s / self.raw_mib_s
    }
}

/// The recorder benchmark's passes: sequential 128 KiB and random 4 KiB reads, warm (the file
/// read once before) and cold (evicted first), on `raw` and on `other` (the same bytes served
/// another way), keeping the best of `repeat` runs of each. `evict_other` also evicts `other`
/// for cold passes; a FUSE mount's pages go with the raw file's, a separate file's do not.
/// `on_row` sees each row as soon as it is measured.
pub fn compare(
    raw: &Path,
    other: &Path,
    evict_other: bool,
    repeat: usize,
    mut on_row: impl FnMut(&Comparison),
) -> io::Result<Vec<Comparison>> {
    let passes = [
        (
            "sequential 128 KiB",
            Pattern::Sequential { chunk: 128 << 10 },
        ),
        (
            "random 4 KiB",
            Pattern::Random {
                chunk: 4096,
                count: 20_000,
                seed: 7,
            },
        ),
    ];
    let mut rows = Vec::new();
    for (name, pattern) in passes {
        for cold in [false, true] {
            let mut best = [0f64; 2];
            for _ in 0..repeat.max(1) {
                for (i, path) in [raw, other].into_iter().enumerate() {
                    if cold {
                        drop_cache(raw)?;
                        if evict_other {
                            drop_cache(other)?;
                        }
                    } else {
                        measure(path, Pattern::Sequential { chunk: 1 << 20 })?;
                    }
                    best[i] = best[i].max(measure(path, pattern)?.mib_per_s());
                }
            }
            let row = Comparison {
                pattern: name,
                cold,
                raw_mib_s: best[0],
                other_mib_s: best[1],
            };
            on_row(&row);
            rows.push(row);
        }
    }
    Ok(rows)
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

    #[test]
    fn compare_measures_both_files_on_every_pass() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            bench_image(dir.path(), 4096),
            Err(ApplianceError::ImageTooSmall { size: 4096, .. })
        ));
        let raw = bench_image(dir.path(), MIN_BENCH_IMAGE).unwrap();
        let copy = dir.path().join("copy.img");
        std::fs::copy(&raw, &copy).unwrap();
        let mut seen = 0;
        let rows = compare(&raw, &copy, true, 1, |_| seen += 1).unwrap();
        assert_eq!((rows.len(), seen), (4, 4));
        assert!(rows
            .iter()
            .all(|r| r.raw_mib_s > 0.0 && r.other_mib_s > 0.0));
        assert_eq!(rows.iter().filter(|r| r.cold).count(), 2);
    }
}
