//! A peer's socket once the encryption handshake is over: plaintext or RC4 each way, and the
//! bytes that handshake read ahead.
//!
//! Message Stream Encryption (see `mse`) ends in a stream that is either plaintext or RC4 in
//! each direction; the handshake also reads past its own end at times (it scans for markers
//! after random padding). [`PeerStream`] carries both facts to the connection, which splits it
//! into a [`PeerReader`] and a [`PeerWriter`]. Both work in place on the caller's buffers, so
//! the per-message path stays free of allocations; without RC4 they are the bare socket halves.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// RC4 keyed with a 20-byte SHA-1 digest, as MSE derives its keys.
pub(crate) type Rc4Sha1 = rc4::Rc4<rc4::consts::U20>;

/// Applies `cipher`'s keystream to `buf` in place (encrypting and decrypting are the same).
fn apply(cipher: &mut Option<Rc4Sha1>, buf: &mut [u8]) {
    if let Some(c) = cipher {
        rc4::StreamCipher::apply_keystream(c, buf);
    }
}

/// Bytes already read (and decrypted) that the next reads return first.
#[derive(Default)]
struct Ahead {
    bytes: Vec<u8>,
    pos: usize,
}

impl Ahead {
    /// Moves up to `buf.len()` of them into `buf`; how many.
    fn take(&mut self, buf: &mut [u8]) -> usize {
        let n = (self.bytes.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.bytes.len() {
            // Frees the handshake's buffer once drained.
            *self = Ahead::default();
        }
        n
    }
}

/// A connected peer's socket and how each direction is protected.
pub(crate) struct PeerStream {
    tcp: TcpStream,
    ahead: Ahead,
    /// Decrypts what we read; `None` for plaintext.
    rx: Option<Rc4Sha1>,
    /// Encrypts what we write; `None` for plaintext.
    tx: Option<Rc4Sha1>,
}

impl PeerStream {
    /// `tcp` with `ahead` (plaintext already read) to be returned first, and the ciphers of
    /// the two directions.
    pub fn new(
        tcp: TcpStream,
        ahead: Vec<u8>,
        rx: Option<Rc4Sha1>,
        tx: Option<Rc4Sha1>,
    ) -> PeerStream {
        PeerStream {
            tcp,
            ahead: Ahead {
                bytes: ahead,
                pos: 0,
            },
            rx,
            tx,
        }
    }

    /// Whether the payload is RC4-encrypted (both directions are, or neither).
    pub fn is_encrypted(&self) -> bool {
        self.rx.is_some()
    }

    /// Fills `buf` exactly (the peer's BitTorrent handshake).
    pub async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let n = self.ahead.take(buf);
        self.tcp.read_exact(&mut buf[n..]).await?;
        apply(&mut self.rx, &mut buf[n..]);
        Ok(())
    }

    /// Encrypts `buf` in place (if RC4) and writes it whole.
    pub async fn write_all(&mut self, buf: &mut [u8]) -> io::Result<()> {
        apply(&mut self.tx, buf);
        self.tcp.write_all(buf).await
    }

    /// The two halves, for a reader and a writer running side by side.
    pub fn into_split(self) -> (PeerReader, PeerWriter) {
        let (rd, wr) = self.tcp.into_split();
        (
            PeerReader {
                half: rd,
                ahead: self.ahead,
                rx: self.rx,
            },
            PeerWriter {
                half: wr,
                tx: self.tx,
            },
        )
    }
}

/// The reading half of a [`PeerStream`].
pub(crate) struct PeerReader {
    half: OwnedReadHalf,
    ahead: Ahead,
    rx: Option<Rc4Sha1>,
}

impl PeerReader {
    /// Reads what is available into `buf` and decrypts it there; 0 at end of stream.
    /// Cancel-safe: bytes are decrypted in the same poll that reads them.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.ahead.bytes.is_empty() {
            return Ok(self.ahead.take(buf));
        }
        let n = self.half.read(buf).await?;
        apply(&mut self.rx, &mut buf[..n]);
        Ok(n)
    }
}

/// The writing half of a [`PeerStream`].
pub(crate) struct PeerWriter {
    half: OwnedWriteHalf,
    tx: Option<Rc4Sha1>,
}

impl PeerWriter {
    /// Encrypts `buf` in place (if RC4) and writes it whole.
    pub async fn write_all(&mut self, buf: &mut [u8]) -> io::Result<()> {
        apply(&mut self.tx, buf);
        self.half.write_all(buf).await
    }
}
