//! Errors of the swarm engine: one enum, each variant naming the file, address or peer involved.
//!
//! An OS error is the variant's `source`, not part of its message, so printing the chain with
//! `{:#}` (as the binaries do) shows it once: "cannot listen on 127.0.0.1:6881: Address in use".

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use vmt_formats::envelope::FileError;

use super::block_hashes::BlockTableError;

/// Why the swarm engine could not start or keep going. Peer misbehaviour is not here: a bad peer
/// is logged, penalized and dropped, never an error of the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmError {
    /// A `.torrent` file could not be read.
    #[error("{}", path.display())]
    TorrentIo {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A `.torrent` file is not a torrent vmt can use.
    #[error("{}: invalid torrent: {reason}", path.display())]
    BadTorrent {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A `.torrent`'s block-hash table (or the pin in its info dictionary that vouches for it)
    /// is refused: forged, truncated, of another torrent, or of a newer format.
    #[error("{}: block-hash table refused", path.display())]
    BlockTable {
        /// The file (or `<created>`).
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: BlockTableError,
    },
    /// Making a torrent from an image failed.
    #[error("{}: cannot create torrent: {reason}", image.display())]
    CreateTorrent {
        /// The image.
        image: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The local image file could not be opened, read or written.
    #[error("{}", path.display())]
    Storage {
        /// The image file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An image file to seed does not have the torrent's length.
    #[error("{}: image is {found} bytes but the torrent describes {expected}", path.display())]
    ImageSize {
        /// The image file.
        path: PathBuf,
        /// Length in the torrent.
        expected: u64,
        /// Length on disk.
        found: u64,
    },
    /// An image to seed does not match the torrent's piece hashes.
    #[error("{}: piece {piece} does not match the torrent (wrong image for this torrent?)", path.display())]
    ImageMismatch {
        /// The image file.
        path: PathBuf,
        /// First bad piece.
        piece: u32,
    },
    /// The persisted piece bitmap is unusable.
    #[error(transparent)]
    Bitmap(#[from] FileError),
    /// The persisted piece bitmap is for another piece geometry.
    #[error("{}: piece bitmap has {found} pieces, the torrent {expected}", path.display())]
    BitmapGeometry {
        /// The bitmap file.
        path: PathBuf,
        /// Pieces in the torrent.
        expected: u32,
        /// Pieces in the file.
        found: u32,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The engine was shut down before the awaited event.
    #[error("the swarm engine shut down")]
    Shutdown,
    /// Writing fetched data to the local image (or reading it back) failed: a full or failing
    /// disk. The engine stopped fetching; what is present stays readable and seeded.
    #[error("cannot write the image {}; fetching stopped", path.display())]
    WriteFailed {
        /// The image file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// `error` and its sources on one line, "outer: inner: os error", for logs and reports.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Why a connection ended. Normal operation: logged at debug level and shown in dial status,
/// never an error of the engine.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Socket error.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The peer serves another torrent.
    #[error("peer serves another torrent")]
    WrongTorrent,
    /// We dialed ourselves.
    #[error("connected to ourselves")]
    SelfConnection,
    /// Another connection to this peer is kept.
    #[error("duplicate connection")]
    Duplicate(librqbit_core::hash_id::Id20),
    /// The peer is banned.
    #[error("peer is banned")]
    Banned,
    /// Silence or unanswered requests.
    #[error("{0}")]
    Timeout(&'static str),
    /// The engine has `max_peers` connections already, none of which gives nothing.
    #[error("too many peers connected")]
    TooManyPeers,
    /// The peer's address has its share of connections already, none of which gives nothing.
    #[error("too many connections from this address")]
    TooManyFromHost,
    /// Local storage failed.
    #[error("storage: {0}")]
    Storage(io::Error),
    /// The encryption handshake (MSE) failed.
    #[error("encryption handshake: {0}")]
    Encryption(#[from] crate::mse::MseError),
    /// The peer hung up or went silent during a handshake we dialed in this form: it may not
    /// speak it, so the dialer tries the other form once.
    #[error("{form} handshake refused: {cause}")]
    HandshakeRefused {
        /// The form dialed.
        form: crate::mse::Form,
        /// What happened.
        cause: Box<PeerError>,
    },
}

impl PeerError {
    /// Whether this ended a handshake the way a peer that does not speak its form ends it
    /// (hang-up, reset, silence), rather than a peer that spoke and disagreed.
    pub(crate) fn is_refusal(&self) -> bool {
        match self {
            PeerError::Io(_) | PeerError::Closed | PeerError::Timeout(_) => true,
            PeerError::Encryption(e) => e.is_refusal(),
            _ => false,
        }
    }
}

impl From<peer_binary_protocol::MessageDeserializeError> for PeerError {
    fn from(e: peer_binary_protocol::MessageDeserializeError) -> Self {
        PeerError::Protocol(e.to_string())
    }
}

/// Result alias of the swarm engine.
pub type Result<T, E = SwarmError> = std::result::Result<T, E>;
