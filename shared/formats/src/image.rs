//! The appliance image: its identity (size + SHA-256 of the content) and its block geometry.
//!
//! Every file vmt writes names the image it belongs to by an [`ImageId`], so a trace, a bundle or
//! a piece bitmap of another image is refused instead of silently mixed in. Hashing a multi-GB
//! image takes seconds, so [`ImageId::of_file`] reports progress and [`IdCache`] remembers the
//! result per (device, inode, size, mtime) so it is never recomputed for an unchanged file; a
//! pass that hashes the image anyway (making its torrent) records its result there too.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Identity of an image: its size and the SHA-256 of its content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageId {
    /// Image size in bytes.
    pub size: u64,
    /// SHA-256 of the whole content; all zeros when the content was never seen (see
    /// [`ImageId::size_only`]).
    pub sha256: [u8; 32],
}

impl ImageId {
    /// An identity known only by size, for traces imported without the image at hand. Such an
    /// identity matches only other size-only identities of the same size.
    pub fn size_only(size: u64) -> ImageId {
        ImageId {
            size,
            sha256: [0; 32],
        }
    }

    /// Whether the content hash is unknown.
    pub fn is_size_only(&self) -> bool {
        self.sha256 == [0; 32]
    }

    /// Hashes `path`, calling `progress(bytes_done)` after each chunk.
    pub fn of_file(path: &Path, mut progress: impl FnMut(u64)) -> io::Result<ImageId> {
        let mut file = File::open(path)?;
        let size = file.metadata()?.len();
        let mut hasher = Sha256::new();
        // 1 MiB: large enough that syscalls vanish next to hashing, small enough for smooth progress.
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            done += n as u64;
            progress(done);
        }
        if done != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("image changed size while hashing ({size} bytes before, {done} read)"),
            ));
        }
        Ok(ImageId {
            size,
            sha256: hasher.finalize().into(),
        })
    }

    /// Parses a 64-digit hex SHA-256 given by the user for an image of `size` bytes.
    pub fn from_hex(size: u64, hex: &str) -> Option<ImageId> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return None;
        }
        let mut sha256 = [0u8; 32];
        for (i, byte) in sha256.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(ImageId { size, sha256 })
    }

    /// The full SHA-256 as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_size_only() {
            write!(f, "{} bytes (content unknown)", self.size)
        } else {
            write!(
                f,
                "{} bytes, sha256 {}",
                self.size,
                &self.sha256_hex()[..16]
            )
        }
    }
}

impl fmt::Debug for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Remembers image identities by (device, inode, size, mtime) in a small text file, so a
/// multi-GB image is hashed once, not on every command.
///
/// The cache is advisory: a missing, unreadable or unwritable cache only costs a re-hash.
pub struct IdCache {
    path: PathBuf,
}

impl IdCache {
    /// The per-user cache (`$XDG_CACHE_HOME/vmt/image-ids`, else `~/.cache/vmt/image-ids`).
    pub fn user() -> IdCache {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        IdCache::at(base.join("vmt").join("image-ids"))
    }

    /// A cache stored at `path`.
    pub fn at(path: PathBuf) -> IdCache {
        IdCache { path }
    }

    /// The cached identity of the file that has `stamp` (just taken with [`FileStamp::of`]).
    pub fn cached(&self, stamp: &FileStamp) -> Option<ImageId> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        text.lines().find_map(|line| {
            let (k, hex) = line.split_once(' ')?;
            (k == stamp.key).then(|| ImageId::from_hex(stamp.size, hex))?
        })
    }

    /// The identity of `image`, from the cache when the file is unchanged, else hashed (with
    /// `progress`) and remembered.
    pub fn identify(&self, image: &Path, progress: impl FnMut(u64)) -> io::Result<ImageId> {
        let stamp = FileStamp::of(image)?;
        if let Some(id) = self.cached(&stamp) {
            return Ok(id);
        }
        let id = ImageId::of_file(image, progress)?;
        self.remember(image, &stamp, &id);
        Ok(id)
    }

    /// Remembers `id`, hashed by the caller (e.g. in the same pass that made a torrent) from
    /// `image` as it was at `before` (taken before reading). Nothing is recorded if the file
    /// changed since, so a cached identity is always of the content it names.
    pub fn remember(&self, image: &Path, before: &FileStamp, id: &ImageId) {
        use std::io::Write;
        if id.size != before.size || FileStamp::of(image).ok().as_ref() != Some(before) {
            return;
        }
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = writeln!(f, "{} {}", before.key, id.sha256_hex());
        }
    }
}

/// What tells an unchanged file: (device, inode, size, mtime). Taken before a file is hashed and
/// compared after, it also tells whether the file changed while it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStamp {
    key: String,
    size: u64,
}

impl FileStamp {
    /// The stamp of `path` now.
    pub fn of(path: &Path) -> io::Result<FileStamp> {
        let m = std::fs::metadata(path)?;
        Ok(FileStamp {
            key: format!(
                "{}:{}:{}:{}.{}",
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec()
            ),
            size: m.size(),
        })
    }

    /// The file's size when stamped.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Splits an image into fixed-size blocks (the unit of traces and profiles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockGeometry {
    image_bytes: u64,
    block_size: u32,
}

/// Index of a block of a [`BlockGeometry`]; only the geometry mints them, so they are in range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockIndex(u32);

impl BlockIndex {
    /// The index as a `usize`, for indexing per-block arrays.
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// Why a geometry cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GeometryError {
    /// Block sizes must be powers of two of at least 512 bytes.
    #[error("block size {0} is not a power of two of at least 512 bytes")]
    BadBlockSize(u32),
    /// Empty images have nothing to serve.
    #[error("the image is empty")]
    EmptyImage,
    /// Block indices are `u32`.
    #[error("{image_bytes} bytes in {block_size}-byte blocks is more than 2^32 blocks")]
    TooManyBlocks {
        /// Image size.
        image_bytes: u64,
        /// Requested block size.
        block_size: u32,
    },
}

impl BlockGeometry {
    /// The default block size: the page size, and ext4's usual block size.
    pub const DEFAULT_BLOCK_SIZE: u32 = 4096;

    /// A geometry of `image_bytes` in `block_size` blocks (the last one may be short).
    pub fn new(image_bytes: u64, block_size: u32) -> Result<BlockGeometry, GeometryError> {
        if block_size < 512 || !block_size.is_power_of_two() {
            return Err(GeometryError::BadBlockSize(block_size));
        }
        if image_bytes == 0 {
            return Err(GeometryError::EmptyImage);
        }
        if image_bytes.div_ceil(block_size as u64) > u32::MAX as u64 {
            return Err(GeometryError::TooManyBlocks {
                image_bytes,
                block_size,
            });
        }
        Ok(BlockGeometry {
            image_bytes,
            block_size,
        })
    }

    /// Image size in bytes.
    pub fn image_bytes(&self) -> u64 {
        self.image_bytes
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Number of blocks, counting a short last one.
    pub fn block_count(&self) -> u32 {
        self.image_bytes.div_ceil(self.block_size as u64) as u32
    }

    /// The block `index`, if it is in range.
    pub fn validate(&self, index: u64) -> Option<BlockIndex> {
        (index < self.block_count() as u64).then_some(BlockIndex(index as u32))
    }

    /// The blocks a byte range touches, clipped to the image (an empty range touches none).
    pub fn blocks_of(&self, offset: u64, len: u64) -> impl Iterator<Item = BlockIndex> {
        let end = offset.saturating_add(len).min(self.image_bytes);
        let bs = self.block_size as u64;
        let (first, last) = if offset >= end {
            (1, 0)
        } else {
            (offset / bs, (end - 1) / bs)
        };
        (first..=last).map(|b| BlockIndex(b as u32))
    }

    /// Byte offset where `block` starts.
    pub fn block_offset(&self, block: BlockIndex) -> u64 {
        block.0 as u64 * self.block_size as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn identity_of_known_content() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"abc").unwrap();
        let id = ImageId::of_file(f.path(), |_| {}).unwrap();
        assert_eq!(id.size, 3);
        assert_eq!(
            id.sha256_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(ImageId::from_hex(3, &id.sha256_hex()), Some(id));
        assert_eq!(ImageId::from_hex(3, "zz"), None);
    }

    #[test]
    fn cache_skips_rehash_of_unchanged_file() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::write(&img, vec![7u8; 10_000]).unwrap();
        let cache = IdCache::at(dir.path().join("cache"));
        let mut calls = 0;
        let a = cache.identify(&img, |_| calls += 1).unwrap();
        assert!(calls > 0);
        let mut calls_again = 0;
        let b = cache.identify(&img, |_| calls_again += 1).unwrap();
        assert_eq!(a, b);
        assert_eq!(calls_again, 0, "unchanged file must not be hashed again");
    }

    #[test]
    fn cache_takes_identities_hashed_elsewhere_only_for_the_unchanged_file() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::write(&img, vec![7u8; 10_000]).unwrap();
        let cache = IdCache::at(dir.path().join("cache"));
        let before = FileStamp::of(&img).unwrap();
        let id = ImageId::of_file(&img, |_| {}).unwrap();
        cache.remember(&img, &before, &id);
        assert_eq!(cache.cached(&before), Some(id));
        let mut calls = 0;
        assert_eq!(cache.identify(&img, |_| calls += 1).unwrap(), id);
        assert_eq!(
            calls, 0,
            "an identity remembered by another pass is not hashed again"
        );

        // A file that changed after its stamp was taken is not remembered.
        let img2 = dir.path().join("img2");
        std::fs::write(&img2, vec![1u8; 5_000]).unwrap();
        let before2 = FileStamp::of(&img2).unwrap();
        let id2 = ImageId::of_file(&img2, |_| {}).unwrap();
        std::fs::write(&img2, vec![2u8; 6_000]).unwrap();
        cache.remember(&img2, &before2, &id2);
        assert_eq!(cache.cached(&before2), None);
        assert_eq!(cache.cached(&FileStamp::of(&img2).unwrap()), None);
    }

    #[test]
    fn geometry_blocks() {
        let g = BlockGeometry::new(10_000, 4096).unwrap();
        assert_eq!(g.block_count(), 3);
        let b: Vec<_> = g.blocks_of(4095, 2).map(|b| b.get()).collect();
        assert_eq!(b, vec![0, 1]);
        assert_eq!(g.blocks_of(9_000, 100_000).count(), 1);
        assert_eq!(g.blocks_of(0, 0).count(), 0);
        assert_eq!(g.blocks_of(20_000, 10).count(), 0);
        assert!(g.validate(3).is_none());
        assert_eq!(
            BlockGeometry::new(1, 1000),
            Err(GeometryError::BadBlockSize(1000))
        );
        assert_eq!(BlockGeometry::new(0, 4096), Err(GeometryError::EmptyImage));
    }
}
