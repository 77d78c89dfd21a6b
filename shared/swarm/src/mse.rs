//! Message Stream Encryption (MSE, also called PE): the obfuscated handshake that Transmission,
//! libtorrent (qBittorrent, Deluge), Vuze and others speak before the BitTorrent handshake.
//!
//! The exchange, as the spec writes it (A dials, B accepts; SKEY is the info hash):
//!
//! ```text
//! 1 A->B: Ya, PadA
//! 2 B->A: Yb, PadB
//! 3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!         ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! 4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload)
//! 5 A->B: ENCRYPT2(payload)
//! ```
//!
//! Y is a 768-bit Diffie-Hellman public key (the spec's prime P, generator 2, a 160-bit
//! private key), S the shared secret, HASH SHA-1, ENCRYPT RC4 keyed with HASH('keyA', S, SKEY)
//! (A to B) or HASH('keyB', S, SKEY) (B to A) with its first 1024 bytes discarded, VC eight zero
//! bytes. Pads are random, at most 512 bytes; a receiver finds their end by scanning for the
//! next marker (HASH('req1', S) for B, ENCRYPT(VC) for A). ENCRYPT2 is the method B selects:
//! RC4 (the same keystreams, continued) or plaintext. IA, A's first payload, carries our
//! BitTorrent handshake, which saves a round trip.
//!
//! # Policy ([`Encryption`])
//! Accepting is always possible in both forms: the first 20 bytes tell a plaintext handshake
//! (19, "BitTorrent protocol") from a public key. The policy decides what we dial and select:
//!
//! - `prefer` (the default) dials MSE offering RC4 and plaintext, and, as B, selects plaintext
//!   whenever A offers it. Transmission and libtorrent set to prefer or require encryption
//!   offer or select RC4 only, so they get RC4; two vmt peers get an obfuscated handshake and
//!   then plaintext, which costs no RC4 on the multi-gigabyte payload. A peer that hangs up on
//!   MSE is dialed again in plaintext once (and a peer that hangs up on plaintext, in MSE).
//! - `plaintext` dials the plain BitTorrent handshake first (MSE once if that is refused) and
//!   selects plaintext when offered: for peers on paths that do not care about obfuscation.
//! - `require` dials MSE offering RC4 only, selects RC4, and refuses plain handshakes.
//!
//! RC4 is obfuscation, not security (it is broken, and DH here has no authentication): its
//! purpose is to get past middleboxes that throttle BitTorrent and to talk to clients that
//! insist on it. Integrity comes from the piece and block hashes, as always.

use std::fmt;
use std::io;
use std::str::FromStr;

use librqbit_core::hash_id::Id20;
use num_bigint::BigUint;
use rc4::KeyInit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::digest::sha1;
use crate::peer_stream::{PeerStream, Rc4Sha1};

/// The spec's 768-bit prime (the Oakley group 1 prime), big-endian.
const P: [u8; DH_LEN] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC9, 0x0F, 0xDA, 0xA2, 0x21, 0x68, 0xC2, 0x34,
    0xC4, 0xC6, 0x62, 0x8B, 0x80, 0xDC, 0x1C, 0xD1, 0x29, 0x02, 0x4E, 0x08, 0x8A, 0x67, 0xCC, 0x74,
    0x02, 0x0B, 0xBE, 0xA6, 0x3B, 0x13, 0x9B, 0x22, 0x51, 0x4A, 0x08, 0x79, 0x8E, 0x34, 0x04, 0xDD,
    0xEF, 0x95, 0x19, 0xB3, 0xCD, 0x3A, 0x43, 0x1B, 0x30, 0x2B, 0x0A, 0x6D, 0xF2, 0x5F, 0x14, 0x37,
    0x4F, 0xE1, 0x35, 0x6D, 0x6D, 0x51, 0xC2, 0x45, 0xE4, 0x85, 0xB5, 0x76, 0x62, 0x5E, 0x7E, 0xC6,
    0xF4, 0x4C, 0x42, 0xE9, 0xA6, 0x3A, 0x36, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x05, 0x63,
];
/// The spec's generator.
const G: u32 = 2;
/// Bytes of a public key or shared secret on the wire (768 bits).
const DH_LEN: usize = 96;
/// Bytes of a private key: the spec recommends 160 bits (at least 128; more adds only time).
const PRIVATE_LEN: usize = 20;
/// Longest pad (A, B, C or D) the spec allows.
const MAX_PAD: usize = 512;
/// The verification constant: decrypted, it proves both sides derived the same keys.
const VC: [u8; 8] = [0; 8];
/// RC4 keystream bytes thrown away first (the spec's defence against RC4's biased start).
const DISCARD: usize = 1024;
/// `crypto_provide` / `crypto_select` bit for a plaintext payload.
const CRYPTO_PLAINTEXT: u32 = 0x01;
/// `crypto_provide` / `crypto_select` bit for an RC4 payload.
const CRYPTO_RC4: u32 = 0x02;
/// The first bytes of a plaintext BitTorrent handshake: pstrlen and pstr.
const PLAIN_PREFIX: &[u8; 20] = b"\x13BitTorrent protocol";

/// Whether and how peer connections are encrypted (Message Stream Encryption); see the module
/// documentation of `mse` for what each does and why `prefer` is the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encryption {
    /// Dial the plain BitTorrent handshake (MSE once if refused); select plaintext when
    /// offered; accept both forms.
    Plaintext,
    /// Dial MSE offering RC4 and plaintext (plain once if refused); select plaintext when
    /// offered; accept both forms.
    #[default]
    Prefer,
    /// Dial MSE offering RC4 only; select RC4; refuse plain handshakes.
    Require,
}

impl Encryption {
    /// The handshake form dialed first.
    pub(crate) fn first_form(self) -> Form {
        match self {
            Encryption::Plaintext => Form::Plain,
            Encryption::Prefer | Encryption::Require => Form::Mse,
        }
    }

    /// The other form to dial once if `form` is refused, if the policy allows one.
    pub(crate) fn fallback(self, form: Form) -> Option<Form> {
        match (self, form) {
            (Encryption::Require, _) => None,
            (_, Form::Plain) => Some(Form::Mse),
            (_, Form::Mse) => Some(Form::Plain),
        }
    }

    /// The payload methods we offer (as A) or accept (as B).
    fn allowed(self) -> u32 {
        match self {
            Encryption::Plaintext | Encryption::Prefer => CRYPTO_PLAINTEXT | CRYPTO_RC4,
            Encryption::Require => CRYPTO_RC4,
        }
    }

    /// What we select (as B) among the methods A offered; 0 if none is acceptable.
    /// Plaintext when allowed: the handshake is already obfuscated, and a plaintext payload
    /// costs no cipher per byte.
    fn select(self, offered: u32) -> u32 {
        let common = offered & self.allowed();
        if common & CRYPTO_PLAINTEXT != 0 {
            CRYPTO_PLAINTEXT
        } else {
            common & CRYPTO_RC4
        }
    }
}

impl fmt::Display for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encryption::Plaintext => "plaintext",
            Encryption::Prefer => "prefer",
            Encryption::Require => "require",
        })
    }
}

impl FromStr for Encryption {
    type Err = String;

    fn from_str(s: &str) -> Result<Encryption, String> {
        match s {
            "plaintext" => Ok(Encryption::Plaintext),
            "prefer" => Ok(Encryption::Prefer),
            "require" => Ok(Encryption::Require),
            _ => Err(format!(
                "unknown encryption policy {s:?} (plaintext, prefer or require)"
            )),
        }
    }
}

/// How a connection's handshake starts on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// The plain BitTorrent handshake.
    Plain,
    /// Message Stream Encryption, then the BitTorrent handshake.
    Mse,
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Form::Plain => "plaintext",
            Form::Mse => "MSE",
        })
    }
}

/// Why an encryption handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MseError {
    /// Socket error.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer hung up before the handshake was done.
    #[error("connection closed during the encryption handshake")]
    Closed,
    /// A plain handshake while encryption is required.
    #[error("plaintext handshake refused: encryption is required")]
    PlaintextRefused,
    /// We dialed MSE and the peer answered with a plain BitTorrent handshake (it sends its
    /// own before reading ours): it does not speak MSE.
    #[error("the peer answered in plaintext")]
    PlainAnswer,
    /// The peer's public key is 0, 1, P-1 or beyond P (it would fix the shared secret).
    #[error("the peer's Diffie-Hellman key is out of range")]
    BadKey,
    /// The marker after a pad never came.
    #[error("no {marker} within {limit} bytes of padding")]
    NoSync {
        /// What was looked for.
        marker: &'static str,
        /// Bytes searched.
        limit: usize,
    },
    /// HASH('req2', SKEY) matches none of our torrents.
    #[error("the encryption handshake names no torrent we serve")]
    UnknownTorrent,
    /// The verification constant did not decrypt to zeros: the keys differ.
    #[error("bad verification constant")]
    BadVc,
    /// Nothing the peer offers is allowed by our policy.
    #[error("no common method: the peer offers {offered:#x}, we allow {allowed:#x}")]
    NoCommonMethod {
        /// The peer's `crypto_provide`.
        offered: u32,
        /// Ours.
        allowed: u32,
    },
    /// The peer selected something we did not offer, or more than one method.
    #[error("the peer selected method {selected:#x}, we offered {offered:#x}")]
    BadSelect {
        /// The peer's `crypto_select`.
        selected: u32,
        /// Our `crypto_provide`.
        offered: u32,
    },
    /// A pad length beyond the spec's 512.
    #[error("pad of {len} bytes (at most {MAX_PAD})")]
    PadTooLong {
        /// The length sent.
        len: usize,
    },
}

impl MseError {
    /// Whether the peer just did not take part (hung up, reset, went silent or never sent a
    /// marker), as a client that does not speak this form does; as opposed to a peer that
    /// spoke it and disagreed.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self,
            MseError::Io(_) | MseError::Closed | MseError::NoSync { .. } | MseError::PlainAnswer
        )
    }
}

/// The handshake's read buffer: what came from the socket and is not consumed yet. Reads may
/// go past the handshake; the rest goes on to the [`PeerStream`].
struct Inbox {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Inbox {
    fn new() -> Inbox {
        // Ya or Yb, a full pad, the hashes and fixed fields, and a plain handshake as IA.
        Inbox {
            buf: vec![0; 2 * DH_LEN + 2 * MAX_PAD + 128],
            start: 0,
            end: 0,
        }
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    /// Reads until at least `n` bytes are buffered.
    async fn need(&mut self, tcp: &mut TcpStream, n: usize) -> Result<(), MseError> {
        while self.len() < n {
            if self.buf.len() - self.start < n {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() < n {
                    self.buf.resize(n, 0);
                }
            }
            let got = tcp.read(&mut self.buf[self.end..]).await?;
            if got == 0 {
                return Err(MseError::Closed);
            }
            self.end += got;
        }
        Ok(())
    }

    /// The buffered bytes.
    fn peek(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Consumes `n` buffered bytes, returning them for in-place decryption.
    fn take(&mut self, n: usize) -> &mut [u8] {
        let at = self.start;
        self.start += n;
        &mut self.buf[at..at + n]
    }

    /// Reads and consumes `n` bytes.
    async fn read(&mut self, tcp: &mut TcpStream, n: usize) -> Result<&mut [u8], MseError> {
        self.need(tcp, n).await?;
        Ok(self.take(n))
    }

    /// Skips past the first occurrence of `marker` that starts within `MAX_PAD` bytes,
    /// reading as needed.
    async fn sync(
        &mut self,
        tcp: &mut TcpStream,
        marker: &[u8],
        name: &'static str,
    ) -> Result<(), MseError> {
        for pad in 0..=MAX_PAD {
            self.need(tcp, pad + marker.len()).await?;
            if &self.peek()[pad..pad + marker.len()] == marker {
                self.take(pad + marker.len());
                return Ok(());
            }
        }
        Err(MseError::NoSync {
            marker: name,
            limit: MAX_PAD + marker.len(),
        })
    }

    /// What is left, decrypted with `rx` if the payload is RC4.
    fn rest(mut self, rx: &mut Option<Rc4Sha1>) -> Vec<u8> {
        let rest = self.take(self.len());
        if let Some(c) = rx {
            rc4::StreamCipher::apply_keystream(c, rest);
        }
        rest.to_vec()
    }
}

/// One side's Diffie-Hellman key pair.
struct KeyPair {
    private: BigUint,
    public: [u8; DH_LEN],
}

impl KeyPair {
    fn new() -> KeyPair {
        let private = BigUint::from_bytes_be(&rand::random::<[u8; PRIVATE_LEN]>());
        let public = BigUint::from(G).modpow(&private, &BigUint::from_bytes_be(&P));
        KeyPair {
            private,
            public: to_wire(&public),
        }
    }

    /// S from the peer's public key; refuses keys that would force a known secret.
    fn secret(&self, theirs: &[u8]) -> Result<[u8; DH_LEN], MseError> {
        let p = BigUint::from_bytes_be(&P);
        let y = BigUint::from_bytes_be(theirs);
        if y < BigUint::from(2u32) || y > &p - 2u32 {
            return Err(MseError::BadKey);
        }
        Ok(to_wire(&y.modpow(&self.private, &p)))
    }
}

/// `n` as 96 big-endian bytes, zero-padded on the left.
fn to_wire(n: &BigUint) -> [u8; DH_LEN] {
    let bytes = n.to_bytes_be();
    let mut out = [0u8; DH_LEN];
    out[DH_LEN - bytes.len()..].copy_from_slice(&bytes);
    out
}

/// SHA-1 of the concatenation of `parts`.
fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut all = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        all.extend_from_slice(p);
    }
    sha1(&all)
}

/// HASH('req2', SKEY) xor HASH('req3', S): how A names the torrent without revealing it.
fn torrent_tag(skey: &Id20, s: &[u8]) -> [u8; 20] {
    let mut tag = hash(&[b"req2", &skey.0]);
    for (t, r) in tag.iter_mut().zip(hash(&[b"req3", s])) {
        *t ^= r;
    }
    tag
}

/// The RC4 of one direction (`b"keyA"`: A to B, `b"keyB"`: B to A), its start discarded.
fn cipher(direction: &[u8; 4], s: &[u8], skey: &Id20) -> Rc4Sha1 {
    let key = hash(&[direction, s, &skey.0]);
    let mut c = Rc4Sha1::new(&key.into());
    rc4::StreamCipher::apply_keystream(&mut c, &mut [0u8; DISCARD]);
    c
}

fn encrypt(c: &mut Rc4Sha1, buf: &mut [u8]) {
    rc4::StreamCipher::apply_keystream(c, buf);
}

/// Our public key and a random pad of 0..=512 bytes.
fn key_and_pad(keys: &KeyPair) -> Vec<u8> {
    let pad = rand::random::<u16>() as usize % (MAX_PAD + 1);
    let mut out = Vec::with_capacity(DH_LEN + pad);
    out.extend_from_slice(&keys.public);
    out.extend((0..pad).map(|_| rand::random::<u8>()));
    out
}

fn pad_len(bytes: &[u8]) -> Result<usize, MseError> {
    let len = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
    if len > MAX_PAD {
        return Err(MseError::PadTooLong { len });
    }
    Ok(len)
}

/// Dials MSE on `tcp` for torrent `skey` (we are A), sending `ia` (our BitTorrent handshake)
/// as the initial payload. The stream returned is past B's answer; `ia` is already sent.
pub(crate) async fn dial(
    mut tcp: TcpStream,
    skey: Id20,
    ia: &[u8],
    policy: Encryption,
) -> Result<PeerStream, MseError> {
    let keys = KeyPair::new();
    tcp.write_all(&key_and_pad(&keys)).await?;
    let mut inbox = Inbox::new();
    // A plain-only peer that speaks first would otherwise be taken for Yb and leave us
    // waiting for a VC that never comes: tell it at once, so the dialer redials in plaintext.
    inbox.need(&mut tcp, PLAIN_PREFIX.len()).await?;
    if inbox.peek().starts_with(PLAIN_PREFIX) {
        return Err(MseError::PlainAnswer);
    }
    let s = keys.secret(inbox.read(&mut tcp, DH_LEN).await?)?;
    // B sends PadB and then waits for us: what follows Yb now is padding.
    let mut tx = cipher(b"keyA", &s, &skey);
    let mut rx = cipher(b"keyB", &s, &skey);
    let offered = policy.allowed();
    let mut step3 = Vec::with_capacity(40 + 16 + ia.len());
    step3.extend_from_slice(&hash(&[b"req1", &s]));
    step3.extend_from_slice(&torrent_tag(&skey, &s));
    let at = step3.len();
    step3.extend_from_slice(&VC);
    step3.extend_from_slice(&offered.to_be_bytes());
    step3.extend_from_slice(&0u16.to_be_bytes()); // len(PadC): empty, as every client sends.
    step3.extend_from_slice(&(ia.len() as u16).to_be_bytes());
    step3.extend_from_slice(ia);
    encrypt(&mut tx, &mut step3[at..]);
    tcp.write_all(&step3).await?;
    // ENCRYPT(VC) under B's key marks the end of PadB.
    let mut vc = VC;
    encrypt(&mut rx, &mut vc);
    inbox.sync(&mut tcp, &vc, "encrypted VC").await?;
    let fixed = inbox.read(&mut tcp, 6).await?;
    encrypt(&mut rx, fixed);
    let selected = u32::from_be_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]);
    let pad_d = pad_len(&fixed[4..6])?;
    if !(selected == CRYPTO_PLAINTEXT || selected == CRYPTO_RC4) || selected & offered == 0 {
        return Err(MseError::BadSelect { selected, offered });
    }
    encrypt(&mut rx, inbox.read(&mut tcp, pad_d).await?);
    let (mut rx, tx) = if selected == CRYPTO_RC4 {
        (Some(rx), Some(tx))
    } else {
        (None, None)
    };
    let ahead = inbox.rest(&mut rx);
    Ok(PeerStream::new(tcp, ahead, rx, tx))
}

/// What an accepted connection turned out to be.
pub(crate) struct Accepted {
    /// The stream, past the encryption handshake if there was one.
    pub stream: PeerStream,
    /// Plain or MSE.
    pub form: Form,
}

/// Answers an incoming connection (we are B): a plain handshake goes on as it is (unless
/// encryption is required); an MSE one is answered for whichever of `skeys` (the info hashes
/// we serve) it names.
pub(crate) async fn accept(
    mut tcp: TcpStream,
    skeys: &[Id20],
    policy: Encryption,
) -> Result<Accepted, MseError> {
    let mut inbox = Inbox::new();
    inbox.need(&mut tcp, PLAIN_PREFIX.len()).await?;
    if inbox.peek().starts_with(PLAIN_PREFIX) {
        if policy == Encryption::Require {
            return Err(MseError::PlaintextRefused);
        }
        return Ok(Accepted {
            stream: PeerStream::new(tcp, inbox.rest(&mut None), None, None),
            form: Form::Plain,
        });
    }
    let keys = KeyPair::new();
    let s = keys.secret(inbox.read(&mut tcp, DH_LEN).await?)?;
    tcp.write_all(&key_and_pad(&keys)).await?;
    inbox
        .sync(&mut tcp, &hash(&[b"req1", &s]), "HASH('req1', S)")
        .await?;
    let tag = inbox.read(&mut tcp, 20).await?;
    let skey = *skeys
        .iter()
        .find(|k| torrent_tag(k, &s) == *tag)
        .ok_or(MseError::UnknownTorrent)?;
    let mut rx = cipher(b"keyA", &s, &skey);
    let mut tx = cipher(b"keyB", &s, &skey);
    let fixed = inbox.read(&mut tcp, 14).await?;
    encrypt(&mut rx, fixed);
    if fixed[..8] != VC {
        return Err(MseError::BadVc);
    }
    let offered = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
    let pad_c = pad_len(&fixed[12..14])?;
    let padded = inbox.read(&mut tcp, pad_c + 2).await?;
    encrypt(&mut rx, padded);
    let ia_len = u16::from_be_bytes([padded[pad_c], padded[pad_c + 1]]) as usize;
    let ia = inbox.read(&mut tcp, ia_len).await?;
    encrypt(&mut rx, ia);
    let mut ahead = ia.to_vec();
    let selected = policy.select(offered);
    if selected == 0 {
        return Err(MseError::NoCommonMethod {
            offered,
            allowed: policy.allowed(),
        });
    }
    let mut step4 = [0u8; 14];
    step4[8..12].copy_from_slice(&selected.to_be_bytes());
    // len(PadD) stays 0, as every client sends.
    encrypt(&mut tx, &mut step4);
    tcp.write_all(&step4).await?;
    let (mut rx, tx) = if selected == CRYPTO_RC4 {
        (Some(rx), Some(tx))
    } else {
        (None, None)
    };
    ahead.extend_from_slice(&inbox.rest(&mut rx));
    Ok(Accepted {
        stream: PeerStream::new(tcp, ahead, rx, tx),
        form: Form::Mse,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const HASH_A: Id20 = librqbit_core::hash_id::Id([7; 20]);
    const HASH_B: Id20 = librqbit_core::hash_id::Id([9; 20]);

    /// A connected TCP pair on loopback: (dialer, acceptor).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    /// A 68-byte stand-in for a BitTorrent handshake.
    fn handshake(tag: u8) -> Vec<u8> {
        let mut h = PLAIN_PREFIX.to_vec();
        h.resize(68, tag);
        h
    }

    /// Runs MSE between a dialer and an acceptor with these policies; then checks that IA
    /// arrived and that payload flows both ways; whether the payload is RC4.
    async fn exchange(
        dial_policy: Encryption,
        accept_policy: Encryption,
        skeys: &[Id20],
    ) -> Result<bool, MseError> {
        let (a, b) = pair().await;
        let ia = handshake(1);
        let (da, db) = tokio::join!(
            dial(a, HASH_A, &ia, dial_policy),
            accept(b, skeys, accept_policy)
        );
        let (mut a, acc) = (da?, db?);
        assert_eq!(acc.form, Form::Mse);
        let mut b = acc.stream;
        let encrypted = a.is_encrypted();
        assert_eq!(encrypted, b.is_encrypted());
        let mut got = [0u8; 68];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got[..], ia[..], "IA is the dialer's first payload");
        // Payload both ways, through the split halves as a connection uses them.
        let mut from_b = handshake(2);
        b.write_all(&mut from_b.clone()).await.unwrap();
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(got[..], from_b[..]);
        let (mut ar, mut aw) = a.into_split();
        let (mut br, mut bw) = b.into_split();
        let msg: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        aw.write_all(&mut msg.clone()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        let mut n = 0;
        while n < back.len() {
            n += br.read(&mut back[n..]).await.unwrap();
        }
        assert_eq!(back, msg);
        from_b = msg.clone();
        bw.write_all(&mut from_b).await.unwrap();
        n = 0;
        while n < back.len() {
            n += ar.read(&mut back[n..]).await.unwrap();
        }
        assert_eq!(back, msg);
        Ok(encrypted)
    }

    #[tokio::test]
    async fn vmt_peers_agree_on_plaintext_after_an_obfuscated_handshake() {
        let encrypted = exchange(Encryption::Prefer, Encryption::Prefer, &[HASH_B, HASH_A])
            .await
            .unwrap();
        assert!(!encrypted, "both allow plaintext: B selects it");
    }

    #[tokio::test]
    async fn rc4_is_selected_when_either_side_requires_it() {
        for (a, b) in [
            (Encryption::Require, Encryption::Prefer),
            (Encryption::Prefer, Encryption::Require),
            (Encryption::Require, Encryption::Require),
        ] {
            let encrypted = exchange(a, b, &[HASH_A]).await.unwrap();
            assert!(encrypted, "{a} -> {b}");
        }
    }

    #[tokio::test]
    async fn an_unknown_torrent_is_refused() {
        let err = exchange(Encryption::Prefer, Encryption::Prefer, &[HASH_B])
            .await
            .unwrap_err();
        // The acceptor refuses; the dialer sees the hang-up.
        assert!(
            matches!(
                err,
                MseError::UnknownTorrent | MseError::Closed | MseError::Io(_)
            ),
            "{err}"
        );
        let (a, b) = pair().await;
        let ia = handshake(1);
        let (_, db) = tokio::join!(
            dial(a, HASH_A, &ia, Encryption::Prefer),
            accept(b, &[HASH_B], Encryption::Prefer)
        );
        assert!(matches!(db, Err(MseError::UnknownTorrent)));
    }

    #[tokio::test]
    async fn a_plain_handshake_is_accepted_unless_encryption_is_required() {
        for policy in [
            Encryption::Plaintext,
            Encryption::Prefer,
            Encryption::Require,
        ] {
            let (mut a, b) = pair().await;
            let hs = handshake(3);
            a.write_all(&hs).await.unwrap();
            let r = accept(b, &[HASH_A], policy).await;
            if policy == Encryption::Require {
                assert!(matches!(r, Err(MseError::PlaintextRefused)));
                continue;
            }
            let acc = r.unwrap();
            assert_eq!(acc.form, Form::Plain);
            let mut s = acc.stream;
            assert!(!s.is_encrypted());
            let mut got = [0u8; 68];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(got[..], hs[..], "the sniffed bytes are read again");
        }
    }

    #[tokio::test]
    async fn a_plain_only_peer_hanging_up_is_a_refusal() {
        let (a, mut b) = pair().await;
        let ia = handshake(1);
        // A plain-only client reads 68 bytes, finds no "BitTorrent protocol", and hangs up.
        let plain_only = async move {
            let mut hs = [0u8; 68];
            b.read_exact(&mut hs).await.unwrap();
        };
        let (dialed, ()) = tokio::join!(dial(a, HASH_A, &ia, Encryption::Prefer), plain_only);
        let Err(err) = dialed else {
            panic!("MSE to a plain-only peer succeeded")
        };
        assert!(err.is_refusal(), "{err}");
    }

    #[tokio::test]
    async fn a_plain_peer_that_speaks_first_is_a_refusal_at_once() {
        let (a, mut b) = pair().await;
        let ia = handshake(1);
        // It sends its handshake and opening messages before reading anything, then waits.
        let speaks_first = async move {
            let mut opening = handshake(4);
            opening.extend_from_slice(&[0, 0, 0, 1, 1].repeat(20));
            b.write_all(&opening).await.unwrap();
            b
        };
        let started = std::time::Instant::now();
        let (dialed, _b) = tokio::join!(dial(a, HASH_A, &ia, Encryption::Prefer), speaks_first);
        assert!(matches!(dialed, Err(MseError::PlainAnswer)));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn keys_agree_and_bad_keys_are_refused() {
        let (a, b) = (KeyPair::new(), KeyPair::new());
        assert_eq!(a.secret(&b.public).unwrap(), b.secret(&a.public).unwrap());
        let mut one = [0u8; DH_LEN];
        one[DH_LEN - 1] = 1;
        assert!(matches!(a.secret(&one), Err(MseError::BadKey)));
        assert!(matches!(a.secret(&P), Err(MseError::BadKey)));
    }

    #[test]
    fn select_prefers_plaintext_only_where_allowed() {
        let both = CRYPTO_PLAINTEXT | CRYPTO_RC4;
        assert_eq!(Encryption::Prefer.select(both), CRYPTO_PLAINTEXT);
        assert_eq!(Encryption::Prefer.select(CRYPTO_RC4), CRYPTO_RC4);
        assert_eq!(Encryption::Require.select(both), CRYPTO_RC4);
        assert_eq!(Encryption::Require.select(CRYPTO_PLAINTEXT), 0);
        assert_eq!(Encryption::Plaintext.select(CRYPTO_RC4), CRYPTO_RC4);
        for p in ["plaintext", "prefer", "require"] {
            assert_eq!(p.parse::<Encryption>().unwrap().to_string(), p);
        }
        assert!("rc4".parse::<Encryption>().is_err());
    }
}
