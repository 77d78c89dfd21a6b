//! Magnet links (BEP 9): the info hash of a swarm and where to look for it, without the
//! `.torrent`.
//!
//! Read here: `xt=urn:btih:` (40 hex digits or 32 base32 characters, as librqbit-core's
//! `Id20` parses them), `dn` (a display name), `tr` (trackers, repeatable) and `x.pe` (a peer
//! as `HOST:PORT`, repeatable). Other keys are ignored, as BEP 9 lets clients do. A link that
//! names no v1 info hash (a v2-only `btmh` link), or two different ones, is refused: vmt's
//! swarms are v1.

use std::str::FromStr;

use librqbit_core::hash_id::Id20;

/// A parsed magnet link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Magnet {
    /// The swarm: SHA-1 of the info dictionary.
    pub info_hash: Id20,
    /// `dn`, if given: a name to show until the info dictionary names the file.
    pub name: Option<String>,
    /// `tr`: announce URLs, in link order, duplicates dropped.
    pub trackers: Vec<String>,
    /// `x.pe`: peers to ask for the metadata, as written (`HOST:PORT`; resolved by the caller).
    pub peers: Vec<String>,
}

/// Why a magnet link is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MagnetError {
    /// Not a `magnet:?…` URI.
    #[error("not a magnet link (it must start with \"magnet:?\"): {0:?}")]
    NotMagnet(String),
    /// No `xt=urn:btih:…`.
    #[error("the magnet link names no BitTorrent v1 info hash (xt=urn:btih:…)")]
    NoInfoHash,
    /// The `btih` value is neither 40 hex digits nor 32 base32 characters.
    #[error("xt=urn:btih:{0} is not an info hash (40 hex digits or 32 base32 characters)")]
    BadInfoHash(String),
    /// Two `xt` values naming different swarms.
    #[error("the magnet link names two different info hashes")]
    TwoInfoHashes,
    /// An `x.pe` that is not `HOST:PORT`.
    #[error("x.pe={0:?} is not a peer address (HOST:PORT)")]
    BadPeer(String),
}

impl Magnet {
    /// Parses `link`. See the module doc for what is read.
    pub fn parse(link: &str) -> Result<Magnet, MagnetError> {
        let link = link.trim();
        let not_magnet = || MagnetError::NotMagnet(link.chars().take(80).collect());
        let query = link
            .get(..8)
            .filter(|s| s.eq_ignore_ascii_case("magnet:?"))
            .map(|_| &link[8..])
            .ok_or_else(not_magnet)?;
        let mut info_hash = None;
        let mut magnet = Magnet {
            info_hash: Id20::default(),
            name: None,
            trackers: Vec::new(),
            peers: Vec::new(),
        };
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                // BEP 9 allows numbered keys (xt.1, tr.1) for several values.
                k if k == "xt" || k.starts_with("xt.") => {
                    let Some(hash) = value.strip_prefix("urn:btih:") else {
                        continue; // another kind of hash (btmh, sha1 of a file): not ours
                    };
                    let id = parse_btih(hash)?;
                    if info_hash.is_some_and(|h| h != id) {
                        return Err(MagnetError::TwoInfoHashes);
                    }
                    info_hash = Some(id);
                }
                "dn" if !value.is_empty() => magnet.name = Some(value.into_owned()),
                k if (k == "tr" || k.starts_with("tr."))
                    && !value.is_empty()
                    && !magnet.trackers.iter().any(|t| *t == value) =>
                {
                    magnet.trackers.push(value.into_owned());
                }
                "x.pe" => {
                    let ok = value.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok()
                    });
                    if !ok {
                        return Err(MagnetError::BadPeer(value.into_owned()));
                    }
                    magnet.peers.push(value.into_owned());
                }
                _ => {}
            }
        }
        magnet.info_hash = info_hash.ok_or(MagnetError::NoInfoHash)?;
        Ok(magnet)
    }
}

impl FromStr for Magnet {
    type Err = MagnetError;

    fn from_str(s: &str) -> Result<Magnet, MagnetError> {
        Magnet::parse(s)
    }
}

/// A `btih` value: 40 hex digits, or 32 base32 characters (RFC 4648, as BEP 9 allows).
fn parse_btih(s: &str) -> Result<Id20, MagnetError> {
    let bad = || MagnetError::BadInfoHash(s.chars().take(64).collect());
    if s.len() != 40 && s.len() != 32 {
        return Err(bad());
    }
    // librqbit-core's base32 decoder wants upper case; hex is read in either case.
    let s2 = if s.len() == 32 {
        s.to_ascii_uppercase()
    } else {
        s.to_owned()
    };
    Id20::from_str(&s2).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "a621779b5e3d486e127c3efbca9b6f8d135f52e5";

    #[test]
    fn hex_and_base32_name_the_same_swarm() {
        let m = Magnet::parse(&format!(
            "magnet:?xt=urn:btih:{HEX}&dn=app%20v1.img&tr=http%3A%2F%2F10.0.0.1%3A6969%2Fannounce\
             &tr=udp://t.example:80&tr=udp://t.example:80&x.pe=10.0.0.2%3A42001&x.pe=[::1]:42002"
        ))
        .unwrap();
        assert_eq!(m.info_hash.as_string(), HEX);
        assert_eq!(m.name.as_deref(), Some("app v1.img"));
        assert_eq!(
            m.trackers,
            ["http://10.0.0.1:6969/announce", "udp://t.example:80"]
        );
        assert_eq!(m.peers, ["10.0.0.2:42001", "[::1]:42002"]);
        // The same 20 bytes in base32 (RFC 4648), in upper and lower case.
        let b32 = "UYQXPG26HVEG4ET4H354VG3PRUJV6UXF";
        for link in [
            format!("magnet:?xt=urn:btih:{b32}"),
            format!("MAGNET:?xt=urn:btih:{}", b32.to_lowercase()),
            format!("magnet:?xt=urn:btih:{}", HEX.to_uppercase()),
        ] {
            let m = Magnet::parse(&link).unwrap();
            assert_eq!(m.info_hash.as_string(), HEX, "{link}");
            assert!(m.trackers.is_empty() && m.peers.is_empty() && m.name.is_none());
        }
        assert_eq!(
            format!("magnet:?xt=urn:btih:{HEX}").parse::<Magnet>(),
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}"))
        );
    }

    #[test]
    fn a_vmt_seeders_link_parses_back() {
        // What `Torrent::magnet_link` writes (see its test), read back.
        let link = format!(
            "magnet:?xt=urn:btih:{HEX}&dn=app.img\
             &tr=http%3A%2F%2F10.0.0.1%3A6969%2Fannounce%3Fa%3Db%20c&x.pe=10.0.0.2%3A43001"
        );
        let m = Magnet::parse(&link).unwrap();
        assert_eq!(m.trackers, ["http://10.0.0.1:6969/announce?a=b c"]);
        assert_eq!(m.peers, ["10.0.0.2:43001"]);
    }

    #[test]
    fn bad_links_are_refused_with_their_reason() {
        let cases: &[(&str, MagnetError)] = &[
            ("http://x/a.torrent", MagnetError::NotMagnet("http://x/a.torrent".into())),
            ("magnet:", MagnetError::NotMagnet("magnet:".into())),
            ("magnet:?dn=x&tr=http://t/a", MagnetError::NoInfoHash),
            (
                "magnet:?xt=urn:btmh:1220aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                MagnetError::NoInfoHash,
            ),
            ("magnet:?xt=urn:btih:abc", MagnetError::BadInfoHash("abc".into())),
            (
                "magnet:?xt=urn:btih:g621779b5e3d486e127c3efbca9b6f8d135f52e5",
                MagnetError::BadInfoHash("g621779b5e3d486e127c3efbca9b6f8d135f52e5".into()),
            ),
            (
                "magnet:?xt=urn:btih:UYQXPG26HVEG4ET4H354VG3PRUJV6UX1",
                MagnetError::BadInfoHash("UYQXPG26HVEG4ET4H354VG3PRUJV6UX1".into()),
            ),
        ];
        for (link, want) in cases {
            assert_eq!(Magnet::parse(link).as_ref(), Err(want), "{link}");
        }
        let two = format!(
            "magnet:?xt=urn:btih:{HEX}&xt.1=urn:btih:b621779b5e3d486e127c3efbca9b6f8d135f52e5"
        );
        assert_eq!(Magnet::parse(&two), Err(MagnetError::TwoInfoHashes));
        let same = format!(
            "magnet:?xt=urn:btih:{HEX}&xt.1=urn:btih:{}",
            HEX.to_uppercase()
        );
        assert!(Magnet::parse(&same).is_ok());
        for pe in ["x.pe=10.0.0.2", "x.pe=:80", "x.pe=h:99999", "x.pe="] {
            let e = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&{pe}")).unwrap_err();
            assert!(matches!(e, MagnetError::BadPeer(_)), "{pe}: {e}");
        }
        assert!(MagnetError::NoInfoHash.to_string().contains("xt=urn:btih"));
    }
}
