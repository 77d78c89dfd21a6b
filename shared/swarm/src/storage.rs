//! Local piece storage: a sparse image file, the blocks and pieces verified in it, and a
//! persisted bitmap of verified pieces.
//!
//! Two bitmaps say what may be read: verified *pieces* (SHA-1; what is announced and seeded)
//! and present *blocks* (16 KiB; what a reader may read). A verified piece has all its blocks
//! present; with the torrent's block-hash table a block can also be present alone, verified on
//! its own before the rest of its piece has arrived.
//!
//! Storage is deliberately synchronous (`pread`/`pwrite` on a shared `File`, as rqbit's storage
//! is): pieces are written in one call from a buffer the peer task already owns, and the FUSE
//! layer reads from its own threads without a runtime.
//!
//! # Durability
//! A piece's bit is set in memory right after its verified bytes are written, so it is served at
//! once (the bytes are in the page cache). The bitmap file only records durable pieces:
//! [`Storage::flush`] snapshots the in-memory bitmap, *then* `fdatasync`s the image, *then* writes
//! the snapshot atomically (envelope: temp file, fsync, rename). Every piece in the file therefore
//! had its data on disk before the file was written. After a crash, pieces verified since the
//! last flush are simply not in the file; on resume they are re-hashed (only pieces not recorded,
//! and only where the file has data), so nothing is lost and nothing unverified is trusted.
//!
//! Blocks of unfinished pieces (verified alone with the torrent's block-hash table) are not in
//! the file: on resume they are verified again, block by block, where the file has data, so
//! they survive a restart for the price of hashing them.
//!
//! The bitmap envelope's image identity is the torrent's [`Torrent::identity`] (image length +
//! SHA-256 of the info dictionary), so a bitmap of another torrent is refused.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use librqbit_core::lengths::{Lengths, ValidPieceIndex};
use serde::{Deserialize, Serialize};

use crate::bitmap::{wire_bit, AtomicBitmap};
use crate::digest::sha1;
use crate::error::{Result, SwarmError};
use crate::layout::Layout;
use crate::torrent::Torrent;
use vmt_formats::envelope::{self, FileError, FileKind};
use vmt_formats::image::ImageId;

/// The piece bitmap file kind.
pub const BITMAP_KIND: FileKind = FileKind {
    magic: *b"VMTBITS\0",
    name: "piece bitmap",
    version: 1,
};

#[derive(Serialize, Deserialize)]
struct BitmapBody {
    pieces: u32,
    piece_length: u32,
    /// Wire-form bitfield (bit 0 = high bit of byte 0).
    bits: Vec<u8>,
}

/// What opening a download found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResumeReport {
    /// Pieces the bitmap file recorded as verified (trusted without hashing).
    pub recorded: u32,
    /// Pieces not recorded whose bytes on disk hashed correctly.
    pub rehashed_ok: u32,
    /// Pieces not recorded that had to be hashed.
    pub rehashed: u32,
    /// Blocks of unfinished pieces kept because they match the torrent's block-hash table.
    pub blocks_kept: u32,
}

/// A sparse image file with its verified-piece bitmap.
#[derive(Debug)]
pub struct Storage {
    path: PathBuf,
    file: File,
    lengths: Lengths,
    layout: Layout,
    have: AtomicBitmap,
    blocks: AtomicBitmap,
    bitmap_path: Option<PathBuf>,
    identity: ImageId,
    dirty: AtomicBool,
    /// Serializes flushes so two snapshots never race to the rename.
    flush_lock: Mutex<()>,
}

impl Storage {
    /// How many pieces the bitmap file at `bitmap_path` records as verified, without opening
    /// or changing anything (for status tools and tests).
    pub fn recorded_pieces(bitmap_path: &Path, torrent: &Torrent) -> Result<u32> {
        let (header, body) = envelope::read::<BitmapBody>(bitmap_path, &BITMAP_KIND)?;
        envelope::check_image(
            bitmap_path,
            &BITMAP_KIND,
            &torrent.identity(),
            &header.image,
        )?;
        Ok((0..body.pieces.min(torrent.piece_count()))
            .filter(|&i| wire_bit(&body.bits, i))
            .count() as u32)
    }

    /// Opens or creates the download target `path` for `torrent`, with its bitmap at
    /// `bitmap_path`. Existing data is kept: recorded pieces are trusted, other pieces with
    /// data on disk are hashed.
    pub fn open_download(
        path: &Path,
        torrent: &Torrent,
        bitmap_path: &Path,
    ) -> Result<(Storage, ResumeReport)> {
        let io_err = |source| SwarmError::Storage {
            path: path.to_owned(),
            source,
        };
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len != torrent.total_length() {
            // Sparse: no blocks are allocated until pieces are written.
            file.set_len(torrent.total_length()).map_err(io_err)?;
        }
        let storage = Storage::new(path, file, torrent, Some(bitmap_path.to_owned()))?;
        // A process killed while writing the bitmap left its temp file; nothing else would
        // remove it if no flush follows (a complete download).
        if let Err(e) = envelope::remove_stale_temps(bitmap_path) {
            tracing::warn!(
                "cleaning stale temp files of {}: {e}",
                bitmap_path.display()
            );
        }
        let mut report = ResumeReport::default();
        match envelope::read::<BitmapBody>(bitmap_path, &BITMAP_KIND) {
            Ok((header, body)) => {
                envelope::check_image(
                    bitmap_path,
                    &BITMAP_KIND,
                    &torrent.identity(),
                    &header.image,
                )?;
                if body.pieces != torrent.piece_count()
                    || body.piece_length != torrent.lengths().default_piece_length()
                    || body.bits.len() != torrent.lengths().piece_bitfield_bytes()
                {
                    return Err(SwarmError::BitmapGeometry {
                        path: bitmap_path.to_owned(),
                        expected: torrent.piece_count(),
                        found: body.pieces,
                    });
                }
                for i in 0..body.pieces {
                    if wire_bit(&body.bits, i) {
                        storage.set_piece_bits(i, |_| {});
                        report.recorded += 1;
                    }
                }
            }
            Err(FileError::Io { error: source, .. })
                if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if existed {
            storage.verify_unrecorded(torrent, &mut report)?;
        }
        if report.rehashed_ok > 0 {
            storage.dirty.store(true, Ordering::Release);
        }
        Ok((storage, report))
    }

    /// Opens a complete image read-only for seeding. With `verify`, every piece is hashed
    /// against the torrent first (use it when the torrent was not just made from this image).
    pub fn open_seed(path: &Path, torrent: &Torrent, verify: bool) -> Result<Storage> {
        let io_err = |source| SwarmError::Storage {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len != torrent.total_length() {
            return Err(SwarmError::ImageSize {
                path: path.to_owned(),
                expected: torrent.total_length(),
                found: len,
            });
        }
        let storage = Storage::new(path, file, torrent, None)?;
        let mut buf = vec![0u8; torrent.lengths().default_piece_length() as usize];
        for info in torrent.lengths().iter_piece_infos() {
            if verify {
                let data = &mut buf[..info.len as usize];
                storage
                    .file
                    .read_exact_at(data, torrent.lengths().piece_offset(info.piece_index))
                    .map_err(io_err)?;
                if sha1(data) != *torrent.piece_hash(info.piece_index) {
                    return Err(SwarmError::ImageMismatch {
                        path: path.to_owned(),
                        piece: info.piece_index.get(),
                    });
                }
            }
            storage.set_piece_bits(info.piece_index.get(), |_| {});
        }
        Ok(storage)
    }

    fn new(
        path: &Path,
        file: File,
        torrent: &Torrent,
        bitmap_path: Option<PathBuf>,
    ) -> Result<Storage> {
        let layout = Layout::new(torrent.lengths()).map_err(|reason| SwarmError::BadTorrent {
            path: path.to_owned(),
            reason,
        })?;
        Ok(Storage {
            path: path.to_owned(),
            file,
            lengths: *torrent.lengths(),
            layout,
            have: AtomicBitmap::new(torrent.piece_count()),
            blocks: AtomicBitmap::new(layout.blocks()),
            bitmap_path,
            identity: torrent.identity(),
            dirty: AtomicBool::new(false),
            flush_lock: Mutex::new(()),
        })
    }

    fn verify_unrecorded(&self, torrent: &Torrent, report: &mut ResumeReport) -> Result<()> {
        let mut buf = vec![0u8; self.lengths.default_piece_length() as usize];
        for info in self.lengths.iter_piece_infos() {
            let i = info.piece_index.get();
            let offset = self.lengths.piece_offset(info.piece_index);
            if self.have.get(i) || !self.has_data(offset, info.len as u64) {
                continue;
            }
            report.rehashed += 1;
            let data = &mut buf[..info.len as usize];
            self.file
                .read_exact_at(data, offset)
                .map_err(|source| SwarmError::Storage {
                    path: self.path.clone(),
                    source,
                })?;
            if sha1(data) == *torrent.piece_hash(info.piece_index) {
                self.set_piece_bits(i, |_| {});
                report.rehashed_ok += 1;
            } else if let Some(table) = torrent.block_hashes() {
                // An unfinished piece: its blocks verified alone survive the restart.
                let bl = self.layout.block_len() as usize;
                for b in self.layout.piece_blocks(i) {
                    let at = (self.layout.block_offset(b) - offset) as usize;
                    let block = &data[at..(at + bl).min(data.len())];
                    let len = block.len() as u64;
                    if self.has_data(self.layout.block_offset(b), len) && table.verify(b, block) {
                        self.blocks.set(b);
                        report.blocks_kept += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the file has any allocated data in `offset..offset+len` (false for a hole, so a
    /// fresh sparse file is not hashed). When the file system cannot tell, assume data.
    fn has_data(&self, offset: u64, len: u64) -> bool {
        // SAFETY: lseek on a file descriptor we own; it does not touch memory.
        let r = unsafe {
            libc::lseek(
                self.file.as_raw_fd(),
                offset as libc::off_t,
                libc::SEEK_DATA,
            )
        };
        if r < 0 {
            // ENXIO: no data at or after offset. Anything else: unknown, so look.
            return io::Error::last_os_error().raw_os_error() != Some(libc::ENXIO);
        }
        (r as u64) < offset + len
    }

    /// The image file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Piece geometry.
    pub fn lengths(&self) -> &Lengths {
        &self.lengths
    }

    /// How the image is cut into pieces and blocks.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The verified pieces; lock-free.
    pub fn bitmap(&self) -> &AtomicBitmap {
        &self.have
    }

    /// The present blocks; lock-free.
    pub fn block_bitmap(&self) -> &AtomicBitmap {
        &self.blocks
    }

    /// Whether block `b` is present (verified alone or in its piece); lock-free.
    pub fn has_block(&self, b: u32) -> bool {
        self.blocks.get(b)
    }

    /// Whether piece `i` is verified; lock-free.
    pub fn has_piece(&self, i: u32) -> bool {
        self.have.get(i)
    }

    /// Whether every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.have.count() == self.have.len()
    }

    /// Reads image bytes at `offset` into `buf`; returns the count read (short only at the end
    /// of the image). Callers read only ranges whose pieces are verified; other ranges hold
    /// zeros or unverified bytes.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let end = self.lengths.total_length();
        if offset >= end {
            return Ok(0);
        }
        let n = buf.len().min((end - offset) as usize);
        self.file.read_exact_at(&mut buf[..n], offset)?;
        Ok(n)
    }

    /// Writes the verified bytes of `piece`. Does not mark it: call [`Storage::mark_verified`].
    pub fn write_piece(&self, piece: ValidPieceIndex, data: &[u8]) -> io::Result<()> {
        debug_assert_eq!(data.len(), self.lengths.piece_length(piece) as usize);
        self.file
            .write_all_at(data, self.lengths.piece_offset(piece))
    }

    /// Writes the verified bytes of `block`. Does not mark it: call [`Storage::mark_block`].
    pub fn write_block(&self, block: u32, data: &[u8]) -> io::Result<()> {
        debug_assert_eq!(data.len(), self.layout.block_size(block) as usize);
        self.file
            .write_all_at(data, self.layout.block_offset(block))
    }

    /// Marks a written block present; returns whether it was not before. Its piece is not
    /// verified by this: a piece is verified (SHA-1) only whole.
    pub fn mark_block(&self, block: u32) -> bool {
        self.blocks.set(block)
    }

    /// Sets the bits of a piece whose bytes are written: its blocks first, so a reader that
    /// sees the piece bit also sees every block bit. `new_block` sees each block not present
    /// before.
    fn set_piece_bits(&self, piece: u32, mut new_block: impl FnMut(u32)) -> bool {
        for b in self.layout.piece_blocks(piece) {
            if self.blocks.set(b) {
                new_block(b);
            }
        }
        self.have.set(piece)
    }

    /// Marks a written piece verified, and its blocks present; returns whether the piece was
    /// not verified before. `new_block` sees each block that was not present before.
    pub fn mark_verified(&self, piece: ValidPieceIndex, new_block: impl FnMut(u32)) -> bool {
        let new = self.set_piece_bits(piece.get(), new_block);
        if new {
            self.dirty.store(true, Ordering::Release);
        }
        new
    }

    /// Makes verified pieces durable and records them in the bitmap file (see the module doc
    /// for the order). Does nothing for seed storage or when nothing changed.
    pub fn flush(&self) -> Result<()> {
        let Some(bitmap_path) = &self.bitmap_path else {
            return Ok(());
        };
        let _one_at_a_time = self.flush_lock.lock().unwrap_or_else(|e| e.into_inner());
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let mut bits = vec![0u8; self.lengths.piece_bitfield_bytes()];
        self.have.to_wire(&mut bits);
        let result = (|| {
            self.file
                .sync_data()
                .map_err(|source| SwarmError::Storage {
                    path: self.path.clone(),
                    source,
                })?;
            let body = BitmapBody {
                pieces: self.have.len(),
                piece_length: self.lengths.default_piece_length(),
                bits,
            };
            envelope::write(bitmap_path, &BITMAP_KIND, &self.identity, &body)?;
            Ok(())
        })();
        if result.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{make_torrent, random_image};

    /// Issue 12 item 10: `kill -9` during a flush left `.out.vmtbits.tmp<pid>` beside the
    /// bitmap, and nothing ever removed it. Opening the download again does, even when no
    /// flush follows; a temp file of a process that still runs is another live writer's.
    #[tokio::test]
    async fn r12_10_reopening_removes_the_bitmap_temp_a_killed_flush_left() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = random_image(dir.path(), 3 * 16384, 9);
        let torrent = make_torrent(&img, 16384).await;
        let out = dir.path().join("out.img");
        let bits = dir.path().join("out.vmtbits");
        let (s, _) = Storage::open_download(&out, &torrent, &bits).unwrap();
        drop(s);
        // Above the kernel's pid limit (2^22): no process has it, nor will under the test.
        let dead = (1u32 << 22) + 1;
        let stale = dir.path().join(format!(".out.vmtbits.tmp{dead}"));
        let live = dir.path().join(".out.vmtbits.tmp1.0");
        std::fs::write(&stale, b"half a bitmap").unwrap();
        std::fs::write(&live, b"init writes").unwrap();
        let (_s, _) = Storage::open_download(&out, &torrent, &bits).unwrap();
        assert!(!stale.exists(), "the dead writer's temp file is gone");
        assert!(live.exists(), "a running process's temp file stays");
    }

    #[tokio::test]
    async fn resume_trusts_recorded_and_rehashes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (img, data) = random_image(dir.path(), 5 * 16384 + 100, 7);
        let torrent = make_torrent(&img, 16384).await;
        let out = dir.path().join("out.img");
        let bits = dir.path().join("out.bits");
        let (s, r) = Storage::open_download(&out, &torrent, &bits).unwrap();
        assert_eq!(
            r,
            ResumeReport::default(),
            "a fresh sparse file hashes nothing"
        );
        for i in [0u32, 2, 5] {
            let p = torrent.piece(i).unwrap();
            let off = torrent.lengths().piece_offset(p) as usize;
            let len = torrent.lengths().piece_length(p) as usize;
            s.write_piece(p, &data[off..off + len]).unwrap();
            s.mark_verified(p, |_| {});
            if i == 2 {
                s.flush().unwrap();
            }
        }
        // Piece 5 was verified after the last flush: a "crash" here loses only its record.
        drop(s);
        let (s, r) = Storage::open_download(&out, &torrent, &bits).unwrap();
        assert_eq!(r.recorded, 2);
        assert_eq!(
            (r.rehashed, r.rehashed_ok),
            (1, 1),
            "only piece 5 is hashed"
        );
        assert!(s.has_piece(5) && !s.has_piece(1));
        let mut buf = vec![0u8; 100];
        assert_eq!(s.read_at(5 * 16384, &mut buf).unwrap(), 100);
        assert_eq!(buf, data[5 * 16384..]);
        s.flush().unwrap();
    }

    #[tokio::test]
    async fn blocks_of_unfinished_pieces_survive_a_restart_when_the_table_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (img, data) = random_image(dir.path(), 3 * 65536 + 100, 8);
        let torrent = make_torrent(&img, 65536).await;
        let out = dir.path().join("out.img");
        let bits = dir.path().join("out.bits");
        let (s, _) = Storage::open_download(&out, &torrent, &bits).unwrap();
        // Blocks 5 and 6 of piece 1 verified alone; block 9 of piece 2 written but corrupt
        // (a crash in the middle of a write, say); piece 0 untouched.
        for b in [5u32, 6] {
            let at = b as usize * 16384;
            s.write_block(b, &data[at..at + 16384]).unwrap();
            s.mark_block(b);
        }
        let mut bad = data[9 * 16384..10 * 16384].to_vec();
        bad[0] ^= 1;
        s.write_block(9, &bad).unwrap();
        s.flush().unwrap();
        drop(s);
        let (s, r) = Storage::open_download(&out, &torrent, &bits).unwrap();
        assert_eq!((r.recorded, r.rehashed, r.rehashed_ok), (0, 2, 0));
        assert_eq!(r.blocks_kept, 2);
        assert!(s.has_block(5) && s.has_block(6));
        assert!(!s.has_block(4) && !s.has_block(9) && !s.has_piece(1));
    }

    #[tokio::test]
    async fn bad_bitmaps_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = random_image(dir.path(), 4 * 16384, 1);
        let (img2, _) = random_image(&dir.path().join("x"), 4 * 16384, 2);
        let torrent = make_torrent(&img, 16384).await;
        let other = make_torrent(&img2, 16384).await;
        let out = dir.path().join("out.img");
        let bits = dir.path().join("out.bits");
        let (s, _) = Storage::open_download(&out, &other, &bits).unwrap();
        s.mark_verified(other.piece(0).unwrap(), |_| {});
        s.flush().unwrap();
        drop(s);
        let err = Storage::open_download(&out, &torrent, &bits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("belongs to another image"), "{err}");

        std::fs::write(&bits, b"not a bitmap at all").unwrap();
        let err = Storage::open_download(&out, &torrent, &bits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrong magic"), "{err}");

        let good = envelope::encode(
            &BITMAP_KIND,
            &torrent.identity(),
            &BitmapBody {
                pieces: 4,
                piece_length: 16384,
                bits: vec![0],
            },
        );
        let mut corrupt = good.clone();
        *corrupt.last_mut().unwrap() ^= 0xff;
        std::fs::write(&bits, &corrupt).unwrap();
        let err = Storage::open_download(&out, &torrent, &bits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("corrupt"), "{err}");
        std::fs::write(&bits, &good[..good.len() - 1]).unwrap();
        let err = Storage::open_download(&out, &torrent, &bits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[tokio::test]
    async fn seeding_checks_size_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let (img, mut data) = random_image(dir.path(), 3 * 16384, 3);
        let torrent = make_torrent(&img, 16384).await;
        let s = Storage::open_seed(&img, &torrent, true).unwrap();
        assert!(s.is_complete());
        data[20000] ^= 1;
        std::fs::write(&img, &data).unwrap();
        let err = Storage::open_seed(&img, &torrent, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("piece 1 does not match"), "{err}");
        std::fs::write(&img, &data[..100]).unwrap();
        let err = Storage::open_seed(&img, &torrent, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("image is 100 bytes"), "{err}");
    }
}
