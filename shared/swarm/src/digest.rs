//! One pass over an image computes everything a vmt torrent holds: the SHA-1 of each piece (for
//! every BitTorrent client), the SHA-256 of each 16 KiB block (the block-hash table) and the
//! SHA-256 of the whole image (its content identity). A multi-GB image is read once, not three
//! times; the work is synchronous (CPU and disk), so async callers run it on a blocking thread.

use std::fs::File;
use std::io::{self, Read};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use super::block_hashes::{block_count, BLOCK_HASH_LEN, BLOCK_SIZE};

/// Bytes read per call: large enough that syscalls vanish next to hashing, small enough that
/// progress is smooth; whole pieces fit (a piece larger than this is read whole).
const READ_SIZE: usize = 4 << 20;

/// Read buffers in circulation: one being filled and hashed per piece and block, one being
/// hashed whole on the other thread, one spare so neither waits for the other's hand-over.
const BUFFERS: usize = 3;

/// The hashes of one image.
pub(crate) struct ImageDigests {
    /// SHA-1 of each piece, concatenated (the info dictionary's `pieces`).
    pub piece_sha1: Vec<u8>,
    /// SHA-256 of each block, concatenated (the block-hash table).
    pub block_sha256: Vec<u8>,
    /// SHA-256 of the whole image.
    pub image_sha256: [u8; 32],
}

/// Hashes the `length` bytes of `file` in `piece_length`-byte pieces (a power of two of at
/// least [`BLOCK_SIZE`]), calling `progress(bytes_done)` after each read. When the image's
/// SHA-256 is already known (`known_sha256`, e.g. from the identity cache), it is not
/// recomputed.
///
/// The whole-image SHA-256 (a third of the work) runs on a second thread, one buffer behind
/// the reader, which computes the piece and block hashes: with two cores, creation then takes
/// about as long as those alone, and a cold image's reads overlap hashing.
pub(crate) fn digest_image(
    mut file: &File,
    length: u64,
    piece_length: u32,
    known_sha256: Option<[u8; 32]>,
    progress: &mut dyn FnMut(u64),
) -> io::Result<ImageDigests> {
    debug_assert!(piece_length >= BLOCK_SIZE && piece_length.is_power_of_two());
    advise_sequential(file);
    let pieces = length.div_ceil(piece_length as u64) as usize;
    let mut piece_sha1 = Vec::with_capacity(pieces * 20);
    let mut block_sha256 = Vec::with_capacity(block_count(length) as usize * BLOCK_HASH_LEN);
    // A whole number of pieces, so a piece never straddles two reads.
    let buf_len = READ_SIZE.max(piece_length as usize);
    std::thread::scope(|scope| {
        // Buffers circulate: the reader fills one and hashes its pieces and blocks, then hands
        // it (with its length) to the image hasher, which gives it back once hashed.
        let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(BUFFERS);
        for _ in 0..BUFFERS {
            free_tx
                .send(vec![0u8; buf_len])
                .expect("capacity for every buffer");
        }
        let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(BUFFERS);
        // Without an image hasher the reader recycles its buffers itself. (With one, the reader
        // holds no sender of free buffers, so a dead hasher is an error, not a hang.)
        let (image, recycle) = match known_sha256 {
            Some(_) => (None, Some(free_tx)),
            None => {
                let hasher = std::thread::Builder::new()
                    .name("image-sha256".into())
                    .spawn_scoped(scope, move || {
                        let mut image = Sha256::new();
                        for (buf, len) in full_rx {
                            image.update(&buf[..len]);
                            let _ = free_tx.send(buf);
                        }
                        <[u8; 32]>::from(image.finalize())
                    })?;
                (Some(hasher), None)
            }
        };
        let mut done = 0u64;
        while done < length {
            let mut buf = free_rx
                .recv()
                .map_err(|_| io::Error::other("the image hashing thread stopped"))?;
            let want = (length - done).min(buf_len as u64) as usize;
            read_full(&mut file, &mut buf[..want])?;
            for piece in buf[..want].chunks(piece_length as usize) {
                piece_sha1.extend_from_slice(&sha1(piece));
                for block in piece.chunks(BLOCK_SIZE as usize) {
                    block_sha256.extend_from_slice(&Sha256::digest(block));
                }
            }
            match &recycle {
                Some(free) => free.send(buf).expect("capacity for every buffer"),
                None => full_tx
                    .send((buf, want))
                    .map_err(|_| io::Error::other("the image hashing thread stopped"))?,
            }
            done += want as u64;
            progress(done);
        }
        drop(full_tx);
        let image_sha256 = match (image, known_sha256) {
            (Some(hasher), _) => hasher
                .join()
                .map_err(|_| io::Error::other("the image hashing thread panicked"))?,
            (None, Some(known)) => known,
            (None, None) => unreachable!("a hasher runs unless the hash is known"),
        };
        Ok(ImageDigests {
            piece_sha1,
            block_sha256,
            image_sha256,
        })
    })
}

/// Fills `buf` from `file`; an image shorter than it said is an error, not a short table.
fn read_full(file: &mut &File, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read(buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the image shrank while it was hashed",
                ))
            }
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Tells the kernel the file is read once front to back, so it reads twice as far ahead and a
/// cold image's disk reads overlap the hashing.
fn advise_sequential(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads its integer arguments; the fd is open for the call.
    // The advice is a hint: its failure changes nothing but speed, so the result is ignored.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

/// SHA-1 of `data`, through librqbit's hash wrapper (the same implementation it verifies with).
pub fn sha1(data: &[u8]) -> [u8; 20] {
    use sha1w::ISha1;
    let mut h = sha1w::Sha1::new();
    h.update(data);
    h.finish()
}
