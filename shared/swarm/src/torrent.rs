//! The `.torrent` of an image: parsed with librqbit-core, created with librqbit.
//!
//! vmt serves one image file, so only single-file torrents are accepted. Parsing goes through
//! `torrent_from_bytes` (which also computes the info hash) and `validate` (piece geometry), so no
//! bencode is handled here.

use std::path::{Path, PathBuf};

use librqbit_core::hash_id::Id20;
use librqbit_core::lengths::{Lengths, ValidPieceIndex};
use librqbit_core::torrent_metainfo::torrent_from_bytes;
use sha2::{Digest, Sha256};

use crate::block_hashes::BlockHashes;
use crate::error::{Result, SwarmError};
use vmt_formats::image::ImageId;

/// Largest piece length accepted: bigger pieces make a demanded read wait for too many bytes and
/// make each piece buffer huge.
pub const MAX_PIECE_LENGTH: u32 = 16 << 20;

/// A parsed single-file torrent.
#[derive(Clone, Debug)]
pub struct Torrent {
    bytes: Vec<u8>,
    info_hash: Id20,
    lengths: Lengths,
    hashes: Vec<[u8; 20]>,
    name: String,
    trackers: Vec<String>,
    identity: ImageId,
    image_sha256: Option<[u8; 32]>,
    block_hashes: Option<BlockHashes>,
}

/// Prefix of the `.torrent` comment in which vmt records the SHA-256 of the image content, so a
/// client can refuse a profile bundle of another image before any piece arrives. The comment is
/// outside the info dictionary: other clients ignore it and the info hash does not depend on it.
const IMAGE_SHA256_COMMENT: &str = "vmt image sha256 ";

impl Torrent {
    /// Parses a `.torrent`; `path` only names the source in errors.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Torrent> {
        let bad = |reason: String| SwarmError::BadTorrent {
            path: path.to_owned(),
            reason,
        };
        let meta = torrent_from_bytes(&bytes).map_err(|e| bad(format!("{e:#}")))?;
        let info = &meta.info.data;
        if info.files.is_some() {
            return Err(bad(
                "multi-file torrents are not supported (vmt serves one image)".into(),
            ));
        }
        let Some(length) = info.length else {
            return Err(bad("no length".into()));
        };
        if info.piece_length == 0 || info.piece_length > MAX_PIECE_LENGTH {
            return Err(bad(format!(
                "unsupported piece length {}",
                info.piece_length
            )));
        }
        let lengths = Lengths::new(length, info.piece_length).map_err(|e| bad(format!("{e:#}")))?;
        let pieces = info.pieces.as_ref();
        if pieces.len() != lengths.total_pieces() as usize * 20 {
            return Err(bad(format!(
                "{} bytes of piece hashes for {} pieces",
                pieces.len(),
                lengths.total_pieces()
            )));
        }
        let hashes = pieces
            .chunks_exact(20)
            .map(|c| c.try_into().expect("chunks of 20"))
            .collect();
        let name = info
            .name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n.as_ref()).into_owned())
            .unwrap_or_else(|| "image".into());
        let trackers = meta
            .iter_announce()
            .map(|t| String::from_utf8_lossy(t.as_ref()).into_owned())
            .collect();
        let identity = ImageId {
            size: length,
            sha256: Sha256::digest(meta.info.raw_bytes.as_ref()).into(),
        };
        let image_sha256 = meta
            .comment
            .as_ref()
            .and_then(|c| std::str::from_utf8(c.as_ref()).ok())
            .and_then(|c| c.strip_prefix(IMAGE_SHA256_COMMENT))
            .and_then(|hex| ImageId::from_hex(length, hex))
            .map(|id| id.sha256);
        let info_hash = meta.info_hash;
        Ok(Torrent {
            block_hashes: None,
            image_sha256,
            info_hash,
            lengths,
            hashes,
            name,
            trackers,
            identity,
            bytes,
        })
    }

    /// Reads and parses a `.torrent` file.
    pub fn load(path: &Path) -> Result<Torrent> {
        let bytes = std::fs::read(path).map_err(|source| SwarmError::TorrentIo {
            path: path.to_owned(),
            source,
        })?;
        Torrent::from_bytes(bytes, path)
    }

    /// Hashes `image` into a single-file torrent with `piece_length`-byte pieces.
    pub async fn create(image: &Path, piece_length: u32, trackers: Vec<String>) -> Result<Torrent> {
        let err = |reason: String| SwarmError::CreateTorrent {
            image: image.to_owned(),
            reason,
        };
        let meta = std::fs::metadata(image).map_err(|source| SwarmError::Storage {
            path: image.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Err(err("not a regular file".into()));
        }
        if meta.len() == 0 {
            return Err(err("the image is empty".into()));
        }
        if !(16384..=MAX_PIECE_LENGTH).contains(&piece_length) || !piece_length.is_power_of_two() {
            return Err(err(format!(
                "piece size {piece_length} must be a power of two from 16 KiB to 16 MiB"
            )));
        }
        let options = librqbit::CreateTorrentOptions {
            name: None,
            trackers,
            piece_length: Some(piece_length),
        };
        let spawner = librqbit::spawn_utils::BlockingSpawner::new(1);
        let mut created = librqbit::create_torrent(image, options, &spawner)
            .await
            .map_err(|e| err(format!("{e:#}")))?;
        // librqbit 9.1.0 appends the SHA-1 of zero bytes as an extra piece hash when the image
        // length is a multiple of the piece length; drop it (the info hash is computed from the
        // serialized info below, so it covers the fixed list).
        let info = &mut created.meta.info.data;
        let expected = meta.len().div_ceil(piece_length as u64) as usize * 20;
        let pieces = info.pieces.as_ref();
        if pieces.len() == expected + 20 && pieces[expected..] == sha1(&[]) {
            info.pieces = librqbit::ByteBufOwned::from(&pieces[..expected]);
        }
        // Record the image's content hash (cached per inode, so seeding again does not rehash).
        let image_id = vmt_formats::image::IdCache::user()
            .identify(image, |_| {})
            .map_err(|e| err(format!("hashing the image: {e}")))?;
        created.meta.comment = Some(librqbit::ByteBufOwned::from(
            format!("{IMAGE_SHA256_COMMENT}{}", image_id.sha256_hex()).as_bytes(),
        ));
        let bytes = created.as_bytes().map_err(|e| err(format!("{e:#}")))?;
        Torrent::from_bytes(bytes.to_vec(), &PathBuf::from("<created>"))
    }

    /// Writes the `.torrent` file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        vmt_formats::envelope::write_atomically(path, &self.bytes).map_err(|source| {
            SwarmError::TorrentIo {
                path: path.to_owned(),
                source,
            }
        })
    }

    /// The bencoded `.torrent`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// SHA-1 of the info dictionary: the swarm's name on the wire.
    pub fn info_hash(&self) -> Id20 {
        self.info_hash
    }

    /// Piece geometry.
    pub fn lengths(&self) -> &Lengths {
        &self.lengths
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.lengths.total_pieces()
    }

    /// Image length in bytes.
    pub fn total_length(&self) -> u64 {
        self.lengths.total_length()
    }

    /// Validates a piece index against this torrent.
    pub fn piece(&self, index: u32) -> Option<ValidPieceIndex> {
        self.lengths.validate_piece_index(index)
    }

    /// Expected SHA-1 of a piece.
    pub fn piece_hash(&self, piece: ValidPieceIndex) -> &[u8; 20] {
        &self.hashes[piece.get_usize()]
    }

    /// The file name inside the torrent.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Announce URLs.
    pub fn trackers(&self) -> &[String] {
        &self.trackers
    }

    /// The block-hash table, when the torrent carries one: blocks can then be verified alone.
    pub fn block_hashes(&self) -> Option<&BlockHashes> {
        self.block_hashes.as_ref()
    }

    /// TEMPORARY (until the block-hash table is in the torrent): attaches a table.
    pub fn with_block_hashes(mut self, hashes: BlockHashes) -> Torrent {
        self.block_hashes = Some(hashes);
        self
    }

    /// SHA-256 of the image content, when the torrent was made by vmt.
    pub fn image_sha256(&self) -> Option<[u8; 32]> {
        self.image_sha256
    }

    /// Identity used in vmt file headers for state tied to this torrent: size = image length,
    /// sha256 = SHA-256 of the bencoded info dictionary (not of the image content, which a
    /// client does not have yet).
    pub fn identity(&self) -> ImageId {
        self.identity
    }
}

/// SHA-1 of `data`, through librqbit's hash wrapper (the same implementation it verifies with).
pub fn sha1(data: &[u8]) -> [u8; 20] {
    use sha1w::ISha1;
    let mut h = sha1w::Sha1::new();
    h.update(data);
    h.finish()
}
