//! Copy-on-write overlay: the VM's writes land here, never in the pristine image.
//!
//! An [`Overlay`] is a sparse file the size of the image plus a bitmap of the 4 KiB blocks it
//! holds. Reads prefer the overlay ([`Overlay::patch`] copies overlay blocks over pristine bytes);
//! writes of partial blocks first copy the rest of the block from the pristine image, so a block
//! is either wholly pristine or wholly overlay.
//!
//! The recorder uses a throwaway overlay ([`Overlay::temporary`]); the runtime a persistent one
//! ([`Overlay::open`]) whose bitmap is written atomically on `fsync` and on close, after the data
//! file is synced, so the bitmap never claims a block whose bytes are not on disk.
//!
//! The bitmap is atomic words: the read path checks it without a lock and without allocating
//! ([`Overlay::is_empty`] short-cuts the common case of an untouched image). Writers serialize on
//! one mutex, since a partial-block write is a read-modify-write; syncs serialize on another.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use vmt_formats::envelope::{self, FileError, FileKind};
use vmt_formats::image::ImageId;

/// Granularity of the overlay: the page size, so page-cache writebacks cover whole blocks.
pub const OVERLAY_BLOCK: u64 = 4096;

/// The persisted overlay bitmap.
pub const OVERLAY_MAP_FILE: FileKind = FileKind {
    magic: *b"VMTOVLAY",
    name: "overlay bitmap",
    version: 1,
};

#[derive(Serialize, Deserialize)]
struct MapBody {
    words: Vec<u64>,
}

/// Why the overlay failed.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The data file could not be used.
    #[error("overlay data {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The bitmap is unreadable or belongs to another image.
    #[error(transparent)]
    Map(#[from] FileError),
}

/// See the module doc.
pub struct Overlay {
    data: File,
    data_path: PathBuf,
    /// Where the bitmap is persisted; `None` for a throwaway overlay.
    map_path: Option<PathBuf>,
    image: ImageId,
    words: Vec<AtomicU64>,
    blocks_present: AtomicU64,
    /// Blocks written since the last [`Overlay::sync`].
    dirty: AtomicBool,
    write_lock: Mutex<()>,
    /// Serializes [`Overlay::sync`] (see there), as `Storage::flush` does with its bitmap.
    sync_lock: Mutex<()>,
    _tempdir: Option<tempfile::TempDir>,
}

impl Overlay {
    /// A throwaway overlay in a temporary directory, removed on drop.
    pub fn temporary(image: ImageId) -> Result<Overlay, OverlayError> {
        let dir = tempfile::Builder::new()
            .prefix("vmt-overlay-")
            .tempdir()
            .map_err(|source| OverlayError::Io {
                path: std::env::temp_dir(),
                error: source,
            })?;
        let data_path = dir.path().join("overlay.img");
        let mut overlay = Overlay::with_files(image, data_path, None)?;
        overlay._tempdir = Some(dir);
        Ok(overlay)
    }

    /// Opens (or creates) the persistent overlay `DIR/overlay.img` + `DIR/overlay.map`.
    pub fn open(dir: &Path, image: ImageId) -> Result<Overlay, OverlayError> {
        std::fs::create_dir_all(dir).map_err(|source| OverlayError::Io {
            path: dir.to_owned(),
            error: source,
        })?;
        let map_path = dir.join("overlay.map");
        let overlay = Overlay::with_files(image, dir.join("overlay.img"), Some(map_path.clone()))?;
        if map_path.exists() {
            let (header, body): (_, MapBody) = envelope::read(&map_path, &OVERLAY_MAP_FILE)?;
            envelope::check_image(&map_path, &OVERLAY_MAP_FILE, &image, &header.image)?;
            if body.words.len() != overlay.words.len() {
                return Err(FileError::Corrupt {
                    path: map_path,
                    kind: OVERLAY_MAP_FILE.name,
                    reason: "bitmap length does not match the image".into(),
                }
                .into());
            }
            let mut count = 0;
            for (w, v) in overlay.words.iter().zip(body.words) {
                w.store(v, Ordering::Relaxed);
                count += v.count_ones() as u64;
            }
            overlay.blocks_present.store(count, Ordering::Release);
        }
        Ok(overlay)
    }

    fn with_files(
        image: ImageId,
        data_path: PathBuf,
        map_path: Option<PathBuf>,
    ) -> Result<Overlay, OverlayError> {
        let io_err = |source| OverlayError::Io {
            path: data_path.clone(),
            error: source,
        };
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .map_err(io_err)?;
        // Sparse: only written blocks take space.
        data.set_len(image.size).map_err(io_err)?;
        let blocks = image.size.div_ceil(OVERLAY_BLOCK);
        let words = (0..blocks.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        Ok(Overlay {
            data,
            data_path,
            map_path,
            image,
            words,
            blocks_present: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            write_lock: Mutex::new(()),
            sync_lock: Mutex::new(()),
            _tempdir: None,
        })
    }

    /// Whether no block has been written: the fast path of every read.
    pub fn is_empty(&self) -> bool {
        self.blocks_present.load(Ordering::Acquire) == 0
    }

    /// Number of blocks held.
    pub fn blocks(&self) -> u64 {
        self.blocks_present.load(Ordering::Acquire)
    }

    /// Whether `block` is held by the overlay.
    pub fn has_block(&self, block: u64) -> bool {
        self.words
            .get((block / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (block % 64)) != 0)
    }

    fn set_block(&self, block: u64) {
        let old = self.words[(block / 64) as usize].fetch_or(1 << (block % 64), Ordering::AcqRel);
        if old & (1 << (block % 64)) == 0 {
            self.blocks_present.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Whether any block of the byte range is held.
    pub fn intersects(&self, offset: u64, len: u64) -> bool {
        if self.is_empty() || len == 0 {
            return false;
        }
        let first = offset / OVERLAY_BLOCK;
        let last = (offset + len - 1) / OVERLAY_BLOCK;
        (first..=last).any(|b| self.has_block(b))
    }

    /// Copies the overlay's blocks over `buf`, which holds pristine bytes from `offset`.
    pub fn patch(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if !self.intersects(offset, buf.len() as u64) {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        let mut block = offset / OVERLAY_BLOCK;
        while block * OVERLAY_BLOCK < end {
            if self.has_block(block) {
                let start = (block * OVERLAY_BLOCK).max(offset);
                let stop = ((block + 1) * OVERLAY_BLOCK).min(end);
                let dst = &mut buf[(start - offset) as usize..(stop - offset) as usize];
                self.data.read_exact_at(dst, start)?;
            }
            block += 1;
        }
        Ok(())
    }

    /// Writes `data` at `offset`. For blocks only partly covered and not yet in the overlay,
    /// `pristine(block_offset, buf)` must fill `buf` with the block's original bytes.
    ///
    /// Returns the number of bytes written (the range is clipped to the image size: an overlay
    /// never grows the image).
    pub fn write(
        &self,
        offset: u64,
        data: &[u8],
        mut pristine: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<usize> {
        if offset >= self.image.size {
            return Ok(0);
        }
        let data = &data[..data.len().min((self.image.size - offset) as usize)];
        let end = offset + data.len() as u64;
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut scratch = [0u8; OVERLAY_BLOCK as usize];
        let mut block = offset / OVERLAY_BLOCK;
        while block * OVERLAY_BLOCK < end {
            let block_start = block * OVERLAY_BLOCK;
            let block_end = (block_start + OVERLAY_BLOCK).min(self.image.size);
            let start = block_start.max(offset);
            let stop = block_end.min(end);
            let src = &data[(start - offset) as usize..(stop - offset) as usize];
            if (start == block_start && stop == block_end) || self.has_block(block) {
                self.data.write_all_at(src, start)?;
            } else {
                let whole = &mut scratch[..(block_end - block_start) as usize];
                pristine(block_start, whole)?;
                whole[(start - block_start) as usize..(stop - block_start) as usize]
                    .copy_from_slice(src);
                self.data.write_all_at(whole, block_start)?;
            }
            self.set_block(block);
            block += 1;
        }
        self.dirty.store(true, Ordering::Release);
        Ok(data.len())
    }

    /// Whether blocks were written since the last sync.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Makes written blocks durable: data first, then the bitmap (persistent overlays only).
    ///
    /// Syncs run one at a time (FUSE `fsync`, the periodic sync and shutdown may call this at
    /// once): otherwise an older bitmap could be renamed over a newer one after the newer sync
    /// returned, forgetting blocks it promised durable. The bitmap is snapshotted *before* the
    /// data is synced, so it never claims a block whose bytes were written after that sync.
    pub fn sync(&self) -> Result<(), OverlayError> {
        let _one_at_a_time = self.sync_lock.lock().unwrap_or_else(|e| e.into_inner());
        // Cleared first: a write racing with this sync sets it again and is synced next time.
        self.dirty.store(false, Ordering::Release);
        let body = self.map_path.as_ref().map(|_| MapBody {
            words: self
                .words
                .iter()
                .map(|w| w.load(Ordering::Acquire))
                .collect(),
        });
        self.data.sync_data().map_err(|source| OverlayError::Io {
            path: self.data_path.clone(),
            error: source,
        })?;
        if let (Some(map_path), Some(body)) = (&self.map_path, body) {
            envelope::write(map_path, &OVERLAY_MAP_FILE, &self.image, &body)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pristine(offset: u64, buf: &mut [u8]) -> io::Result<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = ((offset + i as u64) % 251) as u8;
        }
        Ok(())
    }

    fn read(o: &Overlay, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        pristine(offset, &mut buf).unwrap();
        o.patch(offset, &mut buf).unwrap();
        buf
    }

    #[test]
    fn partial_writes_keep_the_rest_of_the_block() {
        let image = ImageId::size_only(10_000);
        let o = Overlay::temporary(image).unwrap();
        assert!(o.is_empty());
        assert_eq!(o.write(4090, b"hello world", pristine).unwrap(), 11);
        assert_eq!(o.blocks(), 2);
        let mut expect = vec![0; 10_000];
        pristine(0, &mut expect).unwrap();
        expect[4090..4101].copy_from_slice(b"hello world");
        assert_eq!(read(&o, 0, 10_000), expect);
        // Writes past the end are clipped, not grown.
        assert_eq!(o.write(9_998, b"abcd", pristine).unwrap(), 2);
        assert_eq!(o.write(20_000, b"x", pristine).unwrap(), 0);
        assert_eq!(&read(&o, 9_990, 10)[8..], b"ab");
    }

    /// Issue 10: FUSE fsync, the periodic sync and shutdown may sync at once while the VM
    /// writes. Every sync succeeds, the map always loads, no temp file is left, and a block
    /// written before a sync that returned is in the map (an older snapshot never lands last).
    #[test]
    fn concurrent_syncs_while_writing() {
        const THREADS: u64 = 6;
        const BLOCKS: u64 = 40;
        let dir = tempfile::tempdir().unwrap();
        let image = ImageId::size_only(THREADS * BLOCKS * OVERLAY_BLOCK);
        let map_path = dir.path().join("overlay.map");
        {
            let o = Overlay::open(dir.path(), image).unwrap();
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let (o, map_path) = (&o, &map_path);
                    s.spawn(move || {
                        for b in 0..BLOCKS {
                            let block = t * BLOCKS + b;
                            o.write(block * OVERLAY_BLOCK, &[t as u8 + 1; 100], pristine)
                                .unwrap();
                            o.sync().unwrap();
                            let (_, body): (_, MapBody) =
                                envelope::read(map_path, &OVERLAY_MAP_FILE).unwrap();
                            let word = body.words[(block / 64) as usize];
                            assert!(word & (1 << (block % 64)) != 0, "block {block} synced");
                        }
                    });
                }
            });
            // Dropped without a final sync: the map must already hold every block.
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
        let o = Overlay::open(dir.path(), image).unwrap();
        assert_eq!(o.blocks(), THREADS * BLOCKS);
        assert_eq!(read(&o, 3 * OVERLAY_BLOCK, 2)[0], 1);
    }

    #[test]
    fn persistent_overlay_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let image = ImageId::size_only(1 << 20);
        {
            let o = Overlay::open(dir.path(), image).unwrap();
            o.write(100, b"persist me", pristine).unwrap();
            o.sync().unwrap();
        }
        let o = Overlay::open(dir.path(), image).unwrap();
        assert_eq!(o.blocks(), 1);
        assert_eq!(&read(&o, 100, 10), b"persist me");
        let other = ImageId::size_only(2 << 20);
        let err = Overlay::open(dir.path(), other).err().unwrap().to_string();
        assert!(err.contains("another image"), "{err}");
    }
}
