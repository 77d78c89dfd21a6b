//! Peer addresses as people type them: `HOST:PORT`, where the host is a name (`localhost`,
//! `seed.lan`) or an IP address (`10.0.0.2`, `[::1]`).
//!
//! Parsing ([`str::parse`]) only checks the form, so clap can reject a typo at once without a
//! name lookup; [`PeerAddr::resolve`] (called by the commands' `check`) looks the name up once,
//! at start. A peer is one address to the engine, so of several addresses for one name the
//! first IPv4 one is taken: a vmt peer told `--listen 0.0.0.0:P` (the usual way) listens on
//! IPv4 only, and `localhost` often resolves to `::1` first.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// What a peer address looks like, for error messages.
const FORMS: &str = "HOST:PORT, e.g. 10.0.0.2:6881, localhost:6881 or [::1]:6881";

/// Why a peer address is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerAddrError {
    /// The text is not `HOST:PORT`.
    #[error("invalid peer address {input:?}: {reason} (expected {FORMS})")]
    Form {
        /// The text as given.
        input: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The host name could not be looked up.
    #[error("cannot resolve peer {peer}")]
    Unresolvable {
        /// The peer as given.
        peer: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The host name has no address.
    #[error("peer {peer} resolves to no address")]
    NoAddress {
        /// The peer as given.
        peer: String,
    },
}

/// A peer's host (name or IP address) and port, not yet resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    host: String,
    port: u16,
}

impl PeerAddr {
    /// The host as given (without IPv6 brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address to dial: the IP itself, or the name's first IPv4 address (else its first
    /// address). Blocks for the lookup of a name.
    pub fn resolve(&self) -> Result<SocketAddr, PeerAddrError> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|source| PeerAddrError::Unresolvable {
                peer: self.to_string(),
                source,
            })?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| PeerAddrError::NoAddress {
                peer: self.to_string(),
            })
    }
}

/// Resolves every peer, in order; the first failure is the error.
pub fn resolve_all(peers: &[PeerAddr]) -> Result<Vec<SocketAddr>, PeerAddrError> {
    peers.iter().map(PeerAddr::resolve).collect()
}

impl FromStr for PeerAddr {
    type Err = PeerAddrError;

    fn from_str(s: &str) -> Result<PeerAddr, PeerAddrError> {
        let bad = |reason| PeerAddrError::Form {
            input: s.to_string(),
            reason,
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let host = match host.strip_prefix('[') {
            Some(v6) => {
                let ip = v6
                    .strip_suffix(']')
                    .ok_or_else(|| bad("an opening '[' without a closing ']'"))?;
                ip.parse::<std::net::Ipv6Addr>()
                    .map_err(|_| bad("not an IPv6 address between the brackets"))?;
                ip
            }
            None if host.contains(':') => return Err(bad("an IPv6 address needs brackets")),
            None => host,
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.starts_with('-')
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(bad("the host is neither a name nor an IP address"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
        Ok(PeerAddr {
            host: host.to_string(),
            port,
        })
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> PeerAddr {
        PeerAddr {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<PeerAddr, String> {
        s.parse::<PeerAddr>().map_err(|e| e.to_string())
    }

    #[test]
    fn forms() {
        for (input, host, port) in [
            ("127.0.0.1:6881", "127.0.0.1", 6881),
            ("localhost:6881", "localhost", 6881),
            ("seed-1.lan:80", "seed-1.lan", 80),
            ("[::1]:6881", "::1", 6881),
        ] {
            let p = parse(input).unwrap();
            assert_eq!((p.host(), p.port()), (host, port), "{input}");
            assert_eq!(p.to_string(), input, "displays as typed");
        }
        let from: PeerAddr = "[::1]:7".parse::<SocketAddr>().unwrap().into();
        assert_eq!(from.to_string(), "[::1]:7");
    }

    #[test]
    fn bad_forms_say_what_is_expected() {
        for (input, reason) in [
            ("localhost", "no port"),
            (":6881", "no host"),
            ("localhost:0", "port"),
            ("localhost:http", "port"),
            ("localhost:70000", "port"),
            ("::1:6881", "brackets"),
            ("[::1:6881", "closing"),
            ("[nope]:6881", "IPv6"),
            ("a b:1", "neither a name"),
        ] {
            let e = parse(input).unwrap_err();
            assert!(e.contains(reason), "{input}: {e}");
            assert!(e.contains(&format!("{input:?}")), "names the input: {e}");
            assert!(e.contains("HOST:PORT"), "{e}");
        }
    }

    #[test]
    fn resolves_ips_and_names() {
        let ip: PeerAddr = "10.1.2.3:9".parse().unwrap();
        assert_eq!(ip.resolve().unwrap(), "10.1.2.3:9".parse().unwrap());
        let v6: PeerAddr = "[::1]:9".parse().unwrap();
        assert_eq!(v6.resolve().unwrap(), "[::1]:9".parse().unwrap());
        let local: PeerAddr = "localhost:6881".parse().unwrap();
        let addr = local.resolve().unwrap();
        assert!(addr.ip().is_loopback() && addr.is_ipv4(), "{addr}");
        assert_eq!(addr.port(), 6881);
        // RFC 6761: .invalid never resolves.
        let none: PeerAddr = "no-such-host.invalid:6881".parse().unwrap();
        let e = none.resolve().unwrap_err();
        assert!(matches!(e, PeerAddrError::Unresolvable { .. }), "{e:?}");
        assert!(e.to_string().contains("no-such-host.invalid:6881"), "{e}");
        assert!(resolve_all(&[ip, none]).is_err());
    }
}
