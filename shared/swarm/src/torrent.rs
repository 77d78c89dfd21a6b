//! The `.torrent` of an image: parsed with librqbit-core, made in one pass by vmt.
//!
//! vmt serves one image file, so only single-file torrents are accepted. Standard fields are
//! parsed by librqbit-core's `torrent_from_bytes` (which also computes the info hash); vmt reads
//! only its own keys itself, with librqbit's bencode crate.
//!
//! # What vmt adds to a stock torrent
//! - Inside the info dictionary, a `vmt` dictionary (the *pin*): `version` (1), `block size`
//!   (16384), `block hashes root` (SHA-256 of the block-hash table) and `image sha256` (SHA-256
//!   of the image content, the identity profile bundles and traces name). The info hash covers
//!   it, so nobody can change it without making another swarm.
//! - Outside the info dictionary, under `vmt block hashes`, the block-hash table itself (32
//!   bytes per 16 KiB block, see [`BlockHashes`]), like BEP 52 keeps its piece layers outside
//!   info: it would bloat metadata exchange, and it is checked against the pinned root anyway.
//! - The comment `vmt image sha256 <hex>`, for vmt builds older than the pin (ignored when a pin
//!   is present).
//! - Only in a torrent a magnet client wrote when no peer served the table (its peers were
//!   stock clients): `vmt block hashes unavailable` (1), which lets the pin stand without its
//!   table; its blocks are then verified with their piece, like a stock torrent's.
//!
//! Stock clients ignore both unknown keys; the standard fields (`name`, `length`,
//! `piece length`, `pieces`, `announce`, `announce-list`) are exactly what they expect. A
//! torrent with neither pin nor table (made by another tool) is a stock torrent: its blocks
//! cannot be verified alone. A table without a pin, or a pin whose table is missing, short or
//! of another root, is refused.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bencode::raw_value::RawValue;
use bencode::{BencodeValue, ByteBuf, ByteBufOwned};
use bytes::Bytes;
use librqbit_core::hash_id::Id20;
use librqbit_core::lengths::{Lengths, ValidPieceIndex};
use librqbit_core::torrent_metainfo::{torrent_from_bytes, TorrentMetaV1};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::block_hashes::{BlockHashes, BlockTableError, BLOCK_SIZE};
use super::digest::{digest_image, ImageDigests};
use super::error::{Result, SwarmError};
use vmt_formats::image::{FileStamp, IdCache, ImageId};

/// Largest piece length accepted, in torrents read as in torrents made: the rule of
/// [`vmt_formats::piece_size`].
pub const MAX_PIECE_LENGTH: u32 = vmt_formats::piece_size::MAX_PIECE_BYTES;

/// Largest `.torrent` read. vmt's block-hash table is 32 bytes per 16 KiB block (0.2% of the
/// image), so this holds the torrent of an image of about 128 GiB; anything larger is not a
/// torrent, and reading it whole would cost its size in memory.
pub const MAX_TORRENT_LEN: u64 = 256 << 20;

/// Checks that `head`, the first two bytes of a file, open a bencode dictionary (`d`, then a
/// key's length digit or the `e` of an empty one), as every `.torrent` does.
fn check_opening(head: &[u8]) -> std::result::Result<(), String> {
    match head {
        [b'd', b'0'..=b'9' | b'e'] => Ok(()),
        _ => Err(format!(
            "not a .torrent: it starts with {:?}, not a bencoded dictionary",
            String::from_utf8_lossy(head)
        )),
    }
}

/// `s` percent-encoded for a URI query value: everything but RFC 3986's unreserved characters.
fn uri_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why librqbit-core refused `bytes`, with the key it was reading: its `torrent_from_bytes`
/// drops where the error was (a `length` that is not an integer said only "invalid value"), so
/// parse again keeping it: `"info" -> "length": invalid value`. Cold path: only on refusal.
fn why_unreadable(bytes: &[u8]) -> String {
    match bencode::from_bytes::<TorrentMetaV1<ByteBuf<'_>>>(bytes) {
        Err(e) => format!("not a torrent vmt can read: {e}"),
        Ok(_) => "not a torrent vmt can read".into(),
    }
}

/// A parsed single-file torrent. Cloning is cheap: the bytes, piece hashes and block-hash table
/// are shared, not copied.
#[derive(Clone)]
pub struct Torrent {
    bytes: Bytes,
    info_hash: Id20,
    lengths: Lengths,
    /// The info dictionary's `pieces`: 20 bytes per piece, a slice of `bytes`.
    pieces: Bytes,
    /// The info dictionary as it is hashed: what ut_metadata (BEP 9) serves.
    info: Bytes,
    name: String,
    trackers: Vec<String>,
    /// BEP 19 web seeds (`url-list`), as written in the torrent.
    web_seeds: Vec<String>,
    identity: ImageId,
    image_sha256: Option<[u8; 32]>,
    block_hashes: Option<BlockHashes>,
}

/// Prefix of the `.torrent` comment in which vmt builds before the pin recorded the SHA-256 of
/// the image content. The comment is outside the info dictionary, so the pin supersedes it.
const IMAGE_SHA256_COMMENT: &str = "vmt image sha256 ";

/// Top-level key of the block-hash table.
const TABLE_KEY: &str = "vmt block hashes";

/// Version of the pin (the `vmt` dictionary inside info) this build writes and reads.
const PIN_VERSION: i64 = 1;

/// vmt's keys in a `.torrent`, as serde sees them. One type for writing and reading, so the
/// key names cannot drift apart.
#[derive(Serialize, Deserialize)]
struct Pin<'a> {
    version: i64,
    #[serde(rename = "block size")]
    block_size: i64,
    #[serde(rename = "block hashes root", borrow)]
    block_hashes_root: ByteBuf<'a>,
    #[serde(rename = "image sha256", borrow)]
    image_sha256: ByteBuf<'a>,
}

/// The parts of a `.torrent` only vmt reads (every other key is skipped without copying).
#[derive(Deserialize)]
struct VmtParts<'a> {
    #[serde(borrow)]
    info: InfoPin<'a>,
    #[serde(rename = "vmt block hashes", borrow, default)]
    block_hashes: Option<ByteBuf<'a>>,
    /// Written by a magnet client whose peers had the info dictionary but not the table its
    /// pin names (stock clients): the pin without its table is then taken on purpose.
    #[serde(rename = "vmt block hashes unavailable", default)]
    table_unavailable: Option<i64>,
    /// BEP 19: one URL, or a list of them.
    #[serde(rename = "url-list", default)]
    url_list: Option<BencodeValue<ByteBufOwned>>,
}

#[derive(Deserialize)]
struct InfoPin<'a> {
    #[serde(borrow, default)]
    vmt: Option<Pin<'a>>,
}

/// The info dictionary vmt writes: a stock single-file one plus the pin.
#[derive(Serialize)]
struct InfoOut<'a> {
    length: u64,
    name: ByteBuf<'a>,
    #[serde(rename = "piece length")]
    piece_length: u32,
    pieces: ByteBuf<'a>,
    vmt: Pin<'a>,
}

/// The `.torrent` vmt writes. The serializer sorts keys (canonical bencode, as BEP 3 asks), so
/// clients that re-encode the info dictionary to hash it (Transmission) get the same info hash.
#[derive(Serialize)]
struct TorrentOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    announce: Option<&'a str>,
    /// One tier of all trackers (BEP 12), as librqbit's `create_torrent` writes it.
    #[serde(rename = "announce-list", skip_serializing_if = "Vec::is_empty")]
    announce_list: Vec<&'a [String]>,
    comment: &'a str,
    #[serde(rename = "created by")]
    created_by: &'a str,
    /// Serialized once, so the info hash is computed over exactly these bytes.
    info: RawValue<&'a [u8]>,
    #[serde(rename = "vmt block hashes")]
    block_hashes: ByteBuf<'a>,
}

/// The `.torrent` a magnet client writes: the info dictionary it fetched, byte for byte, the
/// link's trackers, and the block-hash table when one was fetched.
#[derive(Serialize)]
struct FromMetadataOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    announce: Option<&'a str>,
    #[serde(rename = "announce-list", skip_serializing_if = "Vec::is_empty")]
    announce_list: Vec<&'a [String]>,
    info: RawValue<&'a [u8]>,
    #[serde(rename = "vmt block hashes", skip_serializing_if = "Option::is_none")]
    block_hashes: Option<ByteBuf<'a>>,
    #[serde(
        rename = "vmt block hashes unavailable",
        skip_serializing_if = "Option::is_none"
    )]
    table_unavailable: Option<i64>,
}

/// What the info dictionary says of the block-hash table a magnet client must fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TablePin {
    /// SHA-256 of the table.
    pub root: [u8; 32],
    /// Length of the table in bytes (32 per block of the image).
    pub table_len: u64,
}

impl Torrent {
    /// The table an info dictionary pins (`None` for a stock one), so a magnet client knows
    /// what to ask peers for and how long it is before it has it. `info` must be an info
    /// dictionary whose SHA-1 was checked.
    pub fn table_pin_of_info(info: &[u8]) -> Result<Option<TablePin>> {
        #[derive(Deserialize)]
        struct Info<'a> {
            length: Option<u64>,
            #[serde(borrow, default)]
            vmt: Option<Pin<'a>>,
        }
        let bad = |reason: String| SwarmError::BadTorrent {
            path: "<metadata>".into(),
            reason,
        };
        let parsed: Info = bencode::from_bytes(info).map_err(|e| bad(format!("{e:#}")))?;
        let Some(pin) = parsed.vmt else {
            return Ok(None);
        };
        let (root, _) = pin.check().map_err(|source| SwarmError::BlockTable {
            path: "<metadata>".into(),
            source,
        })?;
        let length = parsed.length.ok_or_else(|| bad("no length".into()))?;
        Ok(Some(TablePin {
            root,
            table_len: super::block_hashes::block_count(length)
                * super::block_hashes::BLOCK_HASH_LEN as u64,
        }))
    }

    /// The torrent of an info dictionary fetched from peers (BEP 9), announcing to `trackers`,
    /// with the block-hash `table` the info dictionary pins, if fetched. Without it, a pinned
    /// torrent is marked `vmt block hashes unavailable` (so it loads again, its blocks verified
    /// with their piece, like a stock torrent's); a pinned torrent without table or mark is
    /// still refused. Refused unless the info dictionary hashes to `info_hash`; the table is
    /// checked against the pin as when loaded.
    pub fn from_metadata(
        info_hash: Id20,
        info: &[u8],
        trackers: &[String],
        table: Option<&[u8]>,
    ) -> Result<Torrent> {
        let pinned = Torrent::table_pin_of_info(info)?.is_some();
        let out = FromMetadataOut {
            announce: trackers.first().map(String::as_str),
            announce_list: if trackers.is_empty() {
                Vec::new()
            } else {
                vec![trackers]
            },
            info: RawValue(info),
            block_hashes: table.map(ByteBuf),
            table_unavailable: (pinned && table.is_none()).then_some(1),
        };
        let mut bytes = Vec::with_capacity(info.len() + table.map_or(0, <[u8]>::len) + 512);
        bencode::bencode_serialize_to_writer(&out, &mut bytes).map_err(|e| {
            SwarmError::BadTorrent {
                path: "<metadata>".into(),
                reason: format!("{e:#}"),
            }
        })?;
        let t = Torrent::from_bytes(bytes, Path::new("<metadata>"))?;
        if t.info_hash != info_hash {
            return Err(SwarmError::BadTorrent {
                path: "<metadata>".into(),
                reason: format!(
                    "the info dictionary hashes to {}, not to the magnet link's {}",
                    t.info_hash.as_string(),
                    info_hash.as_string()
                ),
            });
        }
        Ok(t)
    }

    /// Parses a `.torrent`; `path` only names the source in errors.
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Torrent> {
        let bytes = Bytes::from(bytes);
        let bad = |reason: String| SwarmError::BadTorrent {
            path: path.to_owned(),
            reason,
        };
        check_opening(&bytes[..bytes.len().min(2)]).map_err(bad)?;
        let meta = torrent_from_bytes(&bytes).map_err(|_| bad(why_unreadable(&bytes)))?;
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
        let vmt: VmtParts =
            bencode::from_bytes(&bytes).map_err(|e| bad(format!("vmt keys: {e:#}")))?;
        let web_seeds = web_seeds_of(vmt.url_list.as_ref()).map_err(bad)?;
        let table_err = |source: BlockTableError| SwarmError::BlockTable {
            path: path.to_owned(),
            source,
        };
        let (image_sha256, block_hashes) = match (vmt.info.vmt, vmt.block_hashes) {
            (Some(pin), table) => {
                let (root, image_sha256) = pin.check().map_err(table_err)?;
                match table {
                    // Blocks are verified with their piece, as in a stock torrent.
                    None if vmt.table_unavailable == Some(1) => (Some(image_sha256), None),
                    None => return Err(table_err(BlockTableError::Missing)),
                    Some(table) => {
                        let table = BlockHashes::pinned(bytes.slice_ref(table.0), length, &root)
                            .map_err(table_err)?;
                        (Some(image_sha256), Some(table))
                    }
                }
            }
            (None, Some(_)) => return Err(table_err(BlockTableError::Unpinned)),
            (None, None) => {
                let legacy = meta
                    .comment
                    .as_ref()
                    .and_then(|c| std::str::from_utf8(c.as_ref()).ok())
                    .and_then(|c| c.strip_prefix(IMAGE_SHA256_COMMENT))
                    .and_then(|hex| ImageId::from_hex(length, hex))
                    .map(|id| id.sha256);
                (legacy, None)
            }
        };
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
        let pieces = bytes.slice_ref(pieces);
        let info = Bytes::copy_from_slice(meta.info.raw_bytes.as_ref());
        let info_hash = meta.info_hash;
        Ok(Torrent {
            image_sha256,
            block_hashes,
            info_hash,
            lengths,
            pieces,
            info,
            name,
            trackers,
            web_seeds,
            identity,
            bytes,
        })
    }

    /// Reads and parses a `.torrent` file. Its first bytes must open a bencode dictionary and
    /// it may hold at most 256 MiB (`MAX_TORRENT_LEN`), so a disk image or `/dev/zero` given by
    /// mistake is refused after a few bytes, not after reading it whole.
    pub fn load(path: &Path) -> Result<Torrent> {
        let io = |source| SwarmError::TorrentIo {
            path: path.to_owned(),
            source,
        };
        let bad = |reason: String| SwarmError::BadTorrent {
            path: path.to_owned(),
            reason,
        };
        let too_large = |size: u64| {
            bad(format!(
                "{size} bytes, more than the {MAX_TORRENT_LEN} a .torrent may have"
            ))
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.is_file() && meta.len() > MAX_TORRENT_LEN {
            return Err(too_large(meta.len()));
        }
        let mut bytes = Vec::new();
        (&mut file).take(2).read_to_end(&mut bytes).map_err(io)?;
        check_opening(&bytes).map_err(bad)?;
        bytes.reserve(if meta.is_file() {
            meta.len() as usize
        } else {
            64 << 10
        });
        // One byte more than allowed tells a pipe that is too long.
        (&mut file)
            .take(MAX_TORRENT_LEN + 1 - bytes.len() as u64)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_TORRENT_LEN {
            return Err(too_large(bytes.len() as u64));
        }
        Torrent::from_bytes(bytes, path)
    }

    /// Hashes `image` into a single-file torrent with `piece_length`-byte pieces (a power of
    /// two from 16 KiB to 16 MiB), with its block-hash table and content SHA-256 pinned.
    pub async fn create(image: &Path, piece_length: u32, trackers: Vec<String>) -> Result<Torrent> {
        Torrent::create_with_progress(image, piece_length, trackers, |_| {}).await
    }

    /// [`create`](Self::create), calling `progress(bytes_hashed)` as the image is read (every
    /// 4 MiB), e.g. to draw a bar. The image is read once, on a blocking thread: the SHA-1 of
    /// each piece, the SHA-256 of each block and of the whole image are computed in the same
    /// pass, and the last is recorded in the user's [`IdCache`] so identifying the image later
    /// does not hash it again.
    pub async fn create_with_progress(
        image: &Path,
        piece_length: u32,
        trackers: Vec<String>,
        progress: impl FnMut(u64) + Send + 'static,
    ) -> Result<Torrent> {
        let owned = image.to_owned();
        tokio::task::spawn_blocking(move || {
            create_blocking(&owned, piece_length, &trackers, IdCache::user(), progress)
        })
        .await
        .map_err(|e| SwarmError::CreateTorrent {
            image: image.to_owned(),
            reason: format!("the hashing thread failed: {e}"),
        })?
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

    /// The `.torrent` without its block-hash table: the same info dictionary (so the same info
    /// hash and swarm), a few bytes per piece instead of 32 per block. For stock clients that
    /// limit what they take in, e.g. aria2's RPC (`--rpc-max-request-size`, 2 MiB by default,
    /// so a vmt torrent of an image over ~775 MB). vmt itself refuses it (a pin without its
    /// table) until tables are fetched from peers.
    pub fn bytes_without_table(&self) -> Result<Vec<u8>> {
        let Some(table) = &self.block_hashes else {
            return Ok(self.bytes.to_vec());
        };
        // The table is a slice of `bytes`, right after its key and its length prefix.
        let start = table.as_bytes().as_ptr() as usize - self.bytes.as_ptr() as usize;
        let entry = format!("{}:{TABLE_KEY}{}:", TABLE_KEY.len(), table.as_bytes().len());
        let from = start.checked_sub(entry.len());
        let bad = || SwarmError::BadTorrent {
            path: "<memory>".into(),
            reason: "the block-hash table is not canonically encoded".into(),
        };
        let from = from
            .filter(|&f| self.bytes[f..start] == *entry.as_bytes())
            .ok_or_else(bad)?;
        let end = start + table.as_bytes().len();
        let out = [&self.bytes[..from], &self.bytes[end..]].concat();
        match torrent_from_bytes(&out) {
            Ok(meta) if meta.info_hash == self.info_hash => Ok(out),
            _ => Err(bad()),
        }
    }

    /// The info dictionary, byte for byte as hashed into [`Torrent::info_hash`]. vmt's
    /// block-hash table lies outside it (pinned inside by its root), so a client that got only
    /// this (a magnet link) has the piece hashes but not the table.
    pub fn info_bytes(&self) -> &[u8] {
        &self.info
    }

    /// A magnet link (BEP 9) to this torrent: `xt` (the info hash), `dn` (the name), a `tr`
    /// per tracker, and `x.pe` (a peer to ask for the metadata) if `peer` is given and
    /// dialable (not an unspecified address).
    pub fn magnet_link(&self, peer: Option<std::net::SocketAddr>) -> String {
        let mut m = format!(
            "magnet:?xt=urn:btih:{}&dn={}",
            self.info_hash.as_string(),
            uri_escape(&self.name)
        );
        for t in &self.trackers {
            m.push_str("&tr=");
            m.push_str(&uri_escape(t));
        }
        if let Some(p) = peer.filter(|p| !p.ip().is_unspecified()) {
            m.push_str("&x.pe=");
            m.push_str(&uri_escape(&p.to_string()));
        }
        m
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
        let start = piece.get_usize() * 20;
        self.pieces[start..start + 20]
            .try_into()
            .expect("piece count checked when parsed")
    }

    /// The file name inside the torrent.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Announce URLs.
    pub fn trackers(&self) -> &[String] {
        &self.trackers
    }

    /// BEP 19 web seeds: HTTP(S) URLs of the image (a URL ending in `/` is a directory: the
    /// torrent's name is appended, see [`Torrent::web_seed_url`]).
    pub fn web_seeds(&self) -> &[String] {
        &self.web_seeds
    }

    /// The URL of the image file a web seed names: as given, or, for a directory URL (ending
    /// in `/`), with the torrent's name appended, as stock clients do for single-file torrents.
    pub fn web_seed_url(&self, url: &str) -> String {
        if url.ends_with('/') {
            let name: String = url::form_urlencoded::byte_serialize(self.name.as_bytes()).collect();
            // form encoding writes a space as `+`; a path wants `%20`.
            format!("{url}{}", name.replace('+', "%20"))
        } else {
            url.to_owned()
        }
    }

    /// Why [`with_web_seeds`](Self::with_web_seeds) would refuse a web seed URL (one that
    /// does not parse or is not `http://` or `https://`), as a message naming it. Callers
    /// check before minutes of hashing rather than after.
    pub fn check_web_seed(url: &str) -> std::result::Result<(), String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("web seed {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("web seed {url:?}: not an http:// or https:// URL"));
        }
        Ok(())
    }

    /// This torrent with `urls` as its web seeds (BEP 19 `url-list`, replacing any): the key is
    /// outside the info dictionary, so the info hash, the swarm and every other byte stay the
    /// same. Each URL must be `http://` or `https://`.
    pub fn with_web_seeds(&self, urls: &[String]) -> Result<Torrent> {
        let bad = |reason: String| SwarmError::BadTorrent {
            path: "<memory>".into(),
            reason,
        };
        for u in urls {
            Torrent::check_web_seed(u).map_err(bad)?;
        }
        let entries = top_level_entries(&self.bytes).map_err(bad)?;
        let mut value = Vec::new();
        if !urls.is_empty() {
            value.push(b'l');
            for u in urls {
                value.extend_from_slice(format!("{}:{u}", u.len()).as_bytes());
            }
            value.push(b'e');
        }
        let key = &b"url-list"[..];
        let mut out = Vec::with_capacity(self.bytes.len() + value.len() + 16);
        out.push(b'd');
        let mut written = value.is_empty();
        for (k, v) in entries {
            if k == key {
                continue;
            }
            if !written && k > key {
                out.extend_from_slice(b"8:url-list");
                out.extend_from_slice(&value);
                written = true;
            }
            out.extend_from_slice(format!("{}:", k.len()).as_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(v);
        }
        if !written {
            out.extend_from_slice(b"8:url-list");
            out.extend_from_slice(&value);
        }
        out.push(b'e');
        let t = Torrent::from_bytes(out, Path::new("<memory>"))?;
        if t.info_hash != self.info_hash {
            return Err(bad("adding web seeds changed the info hash".into()));
        }
        Ok(t)
    }

    /// SHA-256 of the image content, when the torrent was made by vmt (pinned in the info
    /// dictionary, or in the comment of torrents made before the pin).
    pub fn image_sha256(&self) -> Option<[u8; 32]> {
        self.image_sha256
    }

    /// The verified table of block hashes, when the torrent pins one; `None` for a stock
    /// torrent, whose blocks can only be verified with their whole piece.
    pub fn block_hashes(&self) -> Option<&BlockHashes> {
        self.block_hashes.as_ref()
    }

    /// Identity used in vmt file headers for state tied to this torrent: size = image length,
    /// sha256 = SHA-256 of the bencoded info dictionary (not of the image content, which a
    /// client does not have yet).
    pub fn identity(&self) -> ImageId {
        self.identity
    }
}

/// The torrent's identity and geometry, not its megabytes of hashes.
impl std::fmt::Debug for Torrent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Torrent")
            .field("name", &self.name)
            .field("info_hash", &self.info_hash)
            .field("length", &self.lengths.total_length())
            .field("piece_length", &self.lengths.default_piece_length())
            .field("block_hashes", &self.block_hashes)
            .finish_non_exhaustive()
    }
}

/// The URLs of a `url-list` value: one string or a list of strings (BEP 19). Entries that are
/// not text, and empty ones, are refused.
fn web_seeds_of(
    value: Option<&BencodeValue<ByteBufOwned>>,
) -> std::result::Result<Vec<String>, String> {
    let one = |v: &BencodeValue<ByteBufOwned>| match v {
        BencodeValue::Bytes(b) => std::str::from_utf8(b.as_ref())
            .ok()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| "url-list: an entry is empty or not UTF-8".to_string()),
        _ => Err("url-list: an entry is not a string".into()),
    };
    match value {
        None => Ok(Vec::new()),
        // Some tools write an empty string for "no web seed".
        Some(BencodeValue::Bytes(b)) if b.as_ref().is_empty() => Ok(Vec::new()),
        Some(BencodeValue::List(l)) => l.iter().map(one).collect(),
        Some(v) => one(v).map(|u| vec![u]),
    }
}

/// A `(key, encoded value)` pair of a bencoded dictionary, as slices of its bytes.
type Entry<'a> = (&'a [u8], &'a [u8]);

/// The top-level `(key, encoded value)` pairs of a bencoded dictionary, in file order, as
/// slices of `bytes` (so a value is copied byte for byte, the info dictionary included).
fn top_level_entries(bytes: &[u8]) -> std::result::Result<Vec<Entry<'_>>, String> {
    let err = || "not a bencoded dictionary".to_string();
    if bytes.first() != Some(&b'd') {
        return Err(err());
    }
    let mut at = 1;
    let mut out = Vec::new();
    while bytes.get(at) != Some(&b'e') {
        let key_end = skip_value(bytes, at).ok_or_else(err)?;
        let colon = at
            + bytes[at..key_end]
                .iter()
                .position(|&b| b == b':')
                .ok_or_else(err)?;
        let key = &bytes[colon + 1..key_end];
        let value_end = skip_value(bytes, key_end).ok_or_else(err)?;
        out.push((key, &bytes[key_end..value_end]));
        at = value_end;
    }
    Ok(out)
}

/// Deepest nesting [`skip_value`] follows: far beyond any torrent, and a bound on its
/// recursion.
const MAX_DEPTH: u32 = 64;

/// The end of the bencoded value starting at `at`; `None` if it is malformed, truncated or
/// nested deeper than [`MAX_DEPTH`].
fn skip_value(bytes: &[u8], at: usize) -> Option<usize> {
    skip_nested(bytes, at, 0)
}

fn skip_nested(bytes: &[u8], at: usize, depth: u32) -> Option<usize> {
    match *bytes.get(at)? {
        b'i' => Some(at + bytes[at..].iter().position(|&b| b == b'e')? + 1),
        b'l' | b'd' if depth < MAX_DEPTH => {
            let mut at = at + 1;
            while *bytes.get(at)? != b'e' {
                at = skip_nested(bytes, at, depth + 1)?;
            }
            Some(at + 1)
        }
        b'0'..=b'9' => {
            let colon = at + bytes[at..].iter().position(|&b| b == b':')?;
            let len: usize = std::str::from_utf8(&bytes[at..colon]).ok()?.parse().ok()?;
            let end = colon.checked_add(1)?.checked_add(len)?;
            (end <= bytes.len()).then_some(end)
        }
        _ => None,
    }
}

impl Pin<'_> {
    /// The pinned root and image SHA-256, if this build can use the pin.
    fn check(&self) -> std::result::Result<([u8; 32], [u8; 32]), BlockTableError> {
        if self.version != PIN_VERSION {
            return Err(BlockTableError::Version {
                found: self.version,
                supported: PIN_VERSION,
            });
        }
        if self.block_size != BLOCK_SIZE as i64 {
            return Err(BlockTableError::BlockSize {
                found: self.block_size,
            });
        }
        let hash = |field: &'static str, b: &ByteBuf| {
            <[u8; 32]>::try_from(b.0).map_err(|_| BlockTableError::PinField {
                field,
                found: b.0.len(),
            })
        };
        Ok((
            hash("block hashes root", &self.block_hashes_root)?,
            hash("image sha256", &self.image_sha256)?,
        ))
    }
}

/// Makes the torrent of `image` (see [`Torrent::create_with_progress`]), recording the image's
/// identity in `cache`.
fn create_blocking(
    image: &Path,
    piece_length: u32,
    trackers: &[String],
    cache: IdCache,
    mut progress: impl FnMut(u64),
) -> Result<Torrent> {
    let err = |reason: String| SwarmError::CreateTorrent {
        image: image.to_owned(),
        reason,
    };
    let io_err = |source| SwarmError::Storage {
        path: image.to_owned(),
        source,
    };
    let meta = std::fs::metadata(image).map_err(io_err)?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    if meta.len() == 0 {
        return Err(err("the image is empty".into()));
    }
    vmt_formats::piece_size::check_piece_size(piece_length).map_err(|e| err(e.to_string()))?;
    let before = FileStamp::of(image).map_err(io_err)?;
    let file = std::fs::File::open(image).map_err(io_err)?;
    let cached = cache.cached(&before).map(|id| id.sha256);
    let digests =
        digest_image(&file, before.size(), piece_length, cached, &mut progress).map_err(io_err)?;
    if FileStamp::of(image).map_err(io_err)? != before {
        return Err(err("the image changed while it was hashed".into()));
    }
    let id = ImageId {
        size: before.size(),
        sha256: digests.image_sha256,
    };
    if cached.is_none() {
        cache.remember(image, &before, &id);
    }
    let name = image.file_name().map_or(&b"image"[..], |n| n.as_bytes());
    let bytes = encode(name, piece_length, &id, &digests, trackers)
        .map_err(|e| err(format!("encoding: {e:#}")))?;
    Torrent::from_bytes(bytes, &PathBuf::from("<created>"))
}

/// The bencoded `.torrent` of an image.
fn encode(
    name: &[u8],
    piece_length: u32,
    id: &ImageId,
    digests: &ImageDigests,
    trackers: &[String],
) -> std::result::Result<Vec<u8>, bencode::SerializeError> {
    let root = super::block_hashes::root_of(&digests.block_sha256);
    let info = InfoOut {
        length: id.size,
        name: ByteBuf(name),
        piece_length,
        pieces: ByteBuf(&digests.piece_sha1),
        vmt: Pin {
            version: PIN_VERSION,
            block_size: BLOCK_SIZE as i64,
            block_hashes_root: ByteBuf(&root),
            image_sha256: ByteBuf(&id.sha256),
        },
    };
    let mut info_bytes = Vec::new();
    bencode::bencode_serialize_to_writer(&info, &mut info_bytes)?;
    let comment = format!("{IMAGE_SHA256_COMMENT}{}", id.sha256_hex());
    let created_by = concat!("vmt ", env!("CARGO_PKG_VERSION"));
    let torrent = TorrentOut {
        announce: trackers.first().map(String::as_str),
        announce_list: if trackers.is_empty() {
            Vec::new()
        } else {
            vec![trackers]
        },
        comment: &comment,
        created_by,
        info: RawValue(&info_bytes),
        block_hashes: ByteBuf(&digests.block_sha256),
    };
    let mut out = Vec::with_capacity(info_bytes.len() + digests.block_sha256.len() + 1024);
    bencode::bencode_serialize_to_writer(&torrent, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha1;
    use crate::testutil::{librqbit_torrent, random_image};
    use librqbit_core::torrent_metainfo::TorrentMetaV1Owned;

    const KIB: usize = 1024;

    /// Makes the torrent of `image` with a cache in `dir` (the user's cache stays untouched).
    fn create(image: &Path, piece: u32, dir: &Path) -> Torrent {
        create_blocking(image, piece, &[], IdCache::at(dir.join("ids")), |_| {}).unwrap()
    }

    /// `bytes` with the top-level `vmt block hashes` value replaced by `table` (or the key
    /// removed). The table is outside the info dictionary, so the info hash does not change.
    fn with_table(bytes: &[u8], table: Option<&[u8]>) -> Vec<u8> {
        let key = format!("{}:{TABLE_KEY}", TABLE_KEY.len());
        let key = key.as_bytes();
        let at = bytes.windows(key.len()).position(|w| w == key);
        let (head, tail) = match at {
            Some(at) => {
                let value = at + key.len();
                let colon = value + bytes[value..].iter().position(|&b| b == b':').unwrap();
                let len: usize = std::str::from_utf8(&bytes[value..colon])
                    .unwrap()
                    .parse()
                    .unwrap();
                (&bytes[..at], &bytes[colon + 1 + len..])
            }
            // No table: a new one goes last (it sorts after every other top-level key).
            None => (&bytes[..bytes.len() - 1], &b"e"[..]),
        };
        let mut out = head.to_vec();
        if let Some(table) = table {
            out.extend_from_slice(key);
            out.extend_from_slice(format!("{}:", table.len()).as_bytes());
            out.extend_from_slice(table);
        }
        out.extend_from_slice(tail);
        out
    }

    fn table_error(result: Result<Torrent>) -> (String, BlockTableError) {
        match result {
            Err(e @ SwarmError::BlockTable { .. }) => {
                let message = format!("{e}: {}", std::error::Error::source(&e).unwrap());
                let SwarmError::BlockTable { source, .. } = e else {
                    unreachable!()
                };
                (message, source)
            }
            other => panic!("expected a refused block table, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn one_pass_hashes_equal_the_references() {
        let dir = tempfile::tempdir().unwrap();
        // A short last piece and block, then a length that is a whole number of pieces.
        for (len, piece) in [(1_000_000, 65536), (512 * KIB, 262144), (300_000, 16384)] {
            let (img, data) = random_image(dir.path(), len, len as u64);
            let t = create(&img, piece, dir.path());

            let reference = librqbit_torrent(&img, piece).await;
            let pieces = t.lengths().total_pieces() as usize;
            assert_eq!(
                &t.pieces[..],
                &reference.info.data.pieces.as_ref()[..pieces * 20],
                "SHA-1 per piece as librqbit computes them"
            );
            for p in 0..t.piece_count() {
                let piece_index = t.piece(p).unwrap();
                let start = t.lengths().piece_offset(piece_index) as usize;
                let end = start + t.lengths().piece_length(piece_index) as usize;
                assert_eq!(t.piece_hash(piece_index), &sha1(&data[start..end]));
            }

            let blocks = t.block_hashes().expect("a vmt torrent carries its table");
            assert_eq!(blocks.block_count() as usize, len.div_ceil(16384));
            for (i, block) in data.chunks(16384).enumerate() {
                assert_eq!(
                    blocks.hash(i as u32).unwrap()[..],
                    Sha256::digest(block)[..]
                );
                assert!(blocks.verify(i as u32, block));
            }
            assert_eq!(blocks.root()[..], Sha256::digest(blocks.as_bytes())[..]);

            let id = ImageId::of_file(&img, |_| {}).unwrap();
            assert_eq!(t.image_sha256(), Some(id.sha256));
            assert_eq!(t.total_length(), len as u64);
            assert_eq!(t.name(), "image.img");
            std::fs::remove_file(&img).unwrap();
        }
    }

    /// The seeder refuses exactly the piece sizes `vmt-train eval` refuses (issue 13): one rule,
    /// `vmt_formats::piece_size`, with one message.
    #[test]
    fn creation_refuses_the_piece_sizes_eval_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = random_image(dir.path(), 100_000, 1);
        for piece in [8 << 10, 100_000, 3 << 20, 32 << 20] {
            let e = create_blocking(
                &img,
                piece,
                &[],
                IdCache::at(dir.path().join("ids")),
                |_| {},
            )
            .unwrap_err()
            .to_string();
            let rule = vmt_formats::piece_size::check_piece_size(piece).unwrap_err();
            assert!(e.contains(&rule.to_string()), "{e}");
        }
    }

    #[test]
    fn the_magnet_link_names_the_info_hash_and_the_info_bytes_hash_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = random_image(dir.path(), 100_000, 1);
        let trackers = ["http://10.0.0.1:6969/announce?a=b c".to_string()];
        let t = create_blocking(
            &img,
            16384,
            &trackers,
            IdCache::at(dir.path().join("ids")),
            |_| {},
        )
        .unwrap();
        assert_eq!(sha1(t.info_bytes()), t.info_hash().0);
        let hex = t.info_hash().as_string();
        let name = uri_escape(t.name());
        assert_eq!(
            t.magnet_link(Some("10.0.0.2:43001".parse().unwrap())),
            format!(
                "magnet:?xt=urn:btih:{hex}&dn={name}\
                 &tr=http%3A%2F%2F10.0.0.1%3A6969%2Fannounce%3Fa%3Db%20c&x.pe=10.0.0.2%3A43001"
            )
        );
        let bare = t.magnet_link(Some("0.0.0.0:1".parse().unwrap()));
        assert!(!bare.contains("x.pe"), "an unspecified address is no peer");
    }

    #[test]
    fn creation_records_the_identity_and_reuses_a_cached_one() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = random_image(dir.path(), 100_000, 1);
        let cache = IdCache::at(dir.path().join("ids"));
        let mut hashed = 0;
        let t = create_blocking(&img, 16384, &[], IdCache::at(dir.path().join("ids")), |n| {
            hashed = n
        })
        .unwrap();
        assert_eq!(hashed, 100_000, "progress reaches the image length");
        let stamp = FileStamp::of(&img).unwrap();
        assert_eq!(cache.cached(&stamp).map(|id| id.sha256), t.image_sha256());

        // A cached identity is taken, not recomputed: a planted one ends up in the torrent.
        let planted = ImageId {
            size: 100_000,
            sha256: [9; 32],
        };
        let other = IdCache::at(dir.path().join("planted"));
        other.remember(&img, &stamp, &planted);
        let t = create_blocking(&img, 16384, &[], other, |_| {}).unwrap();
        assert_eq!(t.image_sha256(), Some([9; 32]));
    }

    #[test]
    fn created_torrents_are_canonical_and_stock_readable() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = random_image(dir.path(), 200_000, 2);
        let trackers = vec![
            "http://a.example/announce".to_owned(),
            "udp://b.example:80".to_owned(),
        ];
        let t = create_blocking(
            &img,
            32768,
            &trackers,
            IdCache::at(dir.path().join("ids")),
            |_| {},
        )
        .unwrap();
        assert_eq!(t.trackers(), &trackers[..]);
        let meta = torrent_from_bytes(t.as_bytes()).unwrap();
        assert_eq!(meta.info_hash, t.info_hash());
        assert_eq!(meta.announce.unwrap().as_ref(), trackers[0].as_bytes());
        let info = &meta.info.data;
        assert_eq!((info.length, info.piece_length), (Some(200_000), 32768));
        // Clients that re-encode the info dictionary to hash it (Transmission) get the same
        // bytes: keys sorted at every level, integers and strings canonical.
        let value: bencode::BencodeValueOwned =
            bencode::from_bytes(meta.info.raw_bytes.as_ref()).unwrap();
        let mut again = Vec::new();
        bencode::bencode_serialize_to_writer(&value, &mut again).unwrap();
        assert_eq!(again, meta.info.raw_bytes.as_ref());
        let whole: bencode::BencodeValueOwned = bencode::from_bytes(t.as_bytes()).unwrap();
        let mut again = Vec::new();
        bencode::bencode_serialize_to_writer(&whole, &mut again).unwrap();
        assert_eq!(again, t.as_bytes());
        let debug = format!("{t:?}");
        assert!(debug.len() < 400 && debug.contains("blocks: 13"), "{debug}");
        // The same image makes the same torrent (no creation date).
        let t2 = create(&img, 32768, dir.path());
        let t3 = create(&img, 32768, dir.path());
        assert_eq!(t2.as_bytes(), t3.as_bytes());
    }

    #[test]
    fn a_flipped_table_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = random_image(dir.path(), 300_000, 3);
        let t = create(&img, 65536, dir.path());
        let table = t.block_hashes().unwrap().as_bytes();
        let offset = table.as_ptr() as usize - t.as_bytes().as_ptr() as usize;
        let mut forged = t.as_bytes().to_vec();
        forged[offset + 5 * 32 + 7] ^= 1;
        let path = Path::new("app.torrent");
        let (message, error) = table_error(Torrent::from_bytes(forged, path));
        assert!(
            matches!(error, BlockTableError::Root { pinned, .. } if pinned == *t.block_hashes().unwrap().root())
        );
        assert!(
            message.starts_with("app.torrent: block-hash table refused: "),
            "{message}"
        );
        assert!(
            message.contains("forged or belongs to another torrent"),
            "{message}"
        );
    }

    #[test]
    fn another_images_table_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = random_image(&dir.path().join("a"), 300_000, 4);
        let (b, _) = random_image(&dir.path().join("b"), 300_000, 5);
        let (c, _) = random_image(&dir.path().join("c"), 500_000, 6);
        let ta = create(&a, 65536, dir.path());
        let tb = create(&b, 65536, dir.path());
        let tc = create(&c, 65536, dir.path());
        // Same length: the count fits, the root does not.
        let spliced = with_table(ta.as_bytes(), Some(tb.block_hashes().unwrap().as_bytes()));
        assert_eq!(
            torrent_from_bytes(&spliced).unwrap().info_hash,
            ta.info_hash()
        );
        let (message, error) = table_error(Torrent::from_bytes(spliced, Path::new("a.torrent")));
        assert!(matches!(error, BlockTableError::Root { .. }), "{message}");
        // Another length: refused for its size before it is hashed.
        let spliced = with_table(ta.as_bytes(), Some(tc.block_hashes().unwrap().as_bytes()));
        let (message, error) = table_error(Torrent::from_bytes(spliced, Path::new("a.torrent")));
        assert!(
            matches!(
                error,
                BlockTableError::Length {
                    expected: 608,
                    found: 992,
                    ..
                }
            ),
            "{message}"
        );
        assert!(
            message.contains("forged or belongs to another torrent"),
            "{message}"
        );
        // The untouched torrent still loads.
        let round = with_table(ta.as_bytes(), Some(ta.block_hashes().unwrap().as_bytes()));
        assert_eq!(round, ta.as_bytes());
        Torrent::from_bytes(round, Path::new("a.torrent")).unwrap();
    }

    #[test]
    fn a_pin_without_its_table_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = random_image(dir.path(), 100_000, 7);
        let t = create(&img, 16384, dir.path());
        let stripped = with_table(t.as_bytes(), None);
        // What stock clients with a size limit get: the same swarm, no table.
        assert_eq!(t.bytes_without_table().unwrap(), stripped);
        assert_eq!(
            torrent_from_bytes(&stripped).unwrap().info_hash,
            t.info_hash()
        );
        let (message, error) = table_error(Torrent::from_bytes(stripped, Path::new("x.torrent")));
        assert_eq!(error, BlockTableError::Missing, "{message}");
    }

    #[tokio::test]
    async fn stock_and_legacy_torrents_load_without_a_table_and_a_table_needs_a_pin() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = random_image(dir.path(), 100_000, 8);
        let mut meta = librqbit_torrent(&img, 16384).await;
        // librqbit's extra hash of zero bytes only appears for whole pieces; 100_000 is not.
        let encode = |meta: &TorrentMetaV1Owned| {
            let mut out = Vec::new();
            bencode::bencode_serialize_to_writer(meta, &mut out).unwrap();
            out
        };
        let stock = Torrent::from_bytes(encode(&meta), Path::new("stock.torrent")).unwrap();
        assert!(stock.block_hashes().is_none());
        assert_eq!(stock.image_sha256(), None);

        // A torrent made by vmt before the pin: the image SHA-256 in the comment only.
        let id = ImageId::of_file(&img, |_| {}).unwrap();
        meta.comment = Some(
            format!("{IMAGE_SHA256_COMMENT}{}", id.sha256_hex())
                .as_bytes()
                .into(),
        );
        let legacy = Torrent::from_bytes(encode(&meta), Path::new("old.torrent")).unwrap();
        assert!(legacy.block_hashes().is_none());
        assert_eq!(legacy.image_sha256(), Some(id.sha256));

        // A table (even the right one) that the info dictionary does not pin is refused.
        let made = create(&img, 16384, dir.path());
        let with = with_table(
            &encode(&meta),
            Some(made.block_hashes().unwrap().as_bytes()),
        );
        let (message, error) = table_error(Torrent::from_bytes(with, Path::new("old.torrent")));
        assert_eq!(error, BlockTableError::Unpinned, "{message}");
    }

    #[test]
    fn creation_validates_its_input() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = random_image(dir.path(), 100_000, 9);
        let cache = || IdCache::at(dir.path().join("ids"));
        for piece in [8192, 16384 + 1, 3 << 14, 32 << 20] {
            let e = create_blocking(&img, piece, &[], cache(), |_| {}).unwrap_err();
            assert!(
                matches!(e, SwarmError::CreateTorrent { .. }),
                "{piece}: {e}"
            );
        }
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let e = create_blocking(&empty, 16384, &[], cache(), |_| {}).unwrap_err();
        assert!(e.to_string().contains("the image is empty"), "{e}");
        let e = create_blocking(dir.path(), 16384, &[], cache(), |_| {}).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}

/// Issue 16: a file that is not a usable torrent says what it is, or which key is wrong, not
/// just "invalid value".
#[cfg(test)]
mod refusals {
    use super::*;

    fn refusal(bytes: &[u8]) -> String {
        match Torrent::from_bytes(bytes.to_vec(), Path::new("x.torrent")) {
            Ok(_) => panic!(
                "{:?} was taken for a torrent",
                String::from_utf8_lossy(bytes)
            ),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn r16_3_5_a_refused_torrent_says_why() {
        let text = refusal(b"# vmt\n\nStart virtual appliances on demand\n");
        assert!(text.contains("not a bencoded dictionary"), "{text}");
        let png = refusal(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
        assert!(png.contains("not a bencoded dictionary"), "{png}");
        let no_info = refusal(b"d8:announce3:urle");
        assert!(no_info.contains("`info`"), "{no_info}");
        let no_pieces = refusal(b"d4:infod6:lengthi5e4:name1:a12:piece lengthi16384eee");
        assert!(no_pieces.contains("`pieces`"), "{no_pieces}");
        let bad_length = refusal(b"d4:infod6:length1:a4:name1:a12:piece lengthi16384e6:pieces0:ee");
        assert!(
            bad_length.contains(r#""info" -> "length": invalid value"#),
            "{bad_length}"
        );
        let list = refusal(b"li1ee");
        assert!(list.contains("not a bencoded dictionary"), "{list}");
    }

    /// `url-list` (BEP 19) is written outside the info dictionary (same info hash, same bytes
    /// otherwise), read back as a list, replaced, and removed; a stock torrent's single string
    /// reads too; a directory URL gets the torrent's name.
    #[test]
    fn web_seeds_are_written_and_read_without_changing_the_swarm() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = crate::testutil::random_image(dir.path(), 300_000, 5);
        let t = create_blocking(
            &img,
            65536,
            &[],
            IdCache::at(dir.path().join("ids")),
            |_| {},
        )
        .unwrap();
        assert!(t.web_seeds().is_empty());
        let urls = vec![
            "http://origin.example/app.img".to_string(),
            "https://cdn.example/images/".to_string(),
        ];
        let w = t.with_web_seeds(&urls).unwrap();
        assert_eq!(w.web_seeds(), urls);
        assert_eq!(w.info_hash(), t.info_hash());
        assert_eq!(w.identity(), t.identity());
        assert!(w.block_hashes().is_some());
        let reread = Torrent::from_bytes(w.as_bytes().to_vec(), Path::new("w")).unwrap();
        assert_eq!(reread.web_seeds(), urls);
        // Canonical: what librqbit-core parses re-encodes to the same bytes' info hash.
        let name = t.name().to_owned();
        assert_eq!(w.web_seed_url(&urls[0]), urls[0]);
        assert_eq!(
            w.web_seed_url(&urls[1]),
            format!("https://cdn.example/images/{name}")
        );
        let one = w.with_web_seeds(&urls[..1]).unwrap();
        assert_eq!(one.web_seeds(), &urls[..1]);
        let none = w.with_web_seeds(&[]).unwrap();
        assert!(none.web_seeds().is_empty());
        assert_eq!(
            none.as_bytes(),
            t.as_bytes(),
            "removing restores the original bytes"
        );
        assert!(t.with_web_seeds(&["ftp://x/y".into()]).is_err());
        assert!(t.with_web_seeds(&["not a url".into()]).is_err());

        // A single string, as some tools write it; and an empty one meaning none.
        let splice = |value: &str| {
            let b = t.as_bytes();
            let at = b.windows(6).position(|w| w == b"4:info").unwrap();
            [&b[..at], value.as_bytes(), &b[at..]].concat()
        };
        let s = Torrent::from_bytes(splice("8:url-list13:http://a/b.im"), Path::new("s")).unwrap();
        assert_eq!(s.web_seeds(), ["http://a/b.im"]);
        let e = Torrent::from_bytes(splice("8:url-list0:"), Path::new("e")).unwrap();
        assert!(e.web_seeds().is_empty());
        assert!(Torrent::from_bytes(splice("8:url-listi3e"), Path::new("i")).is_err());
    }
}
