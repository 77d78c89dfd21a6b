//! The live status over HTTP: one JSON document per request.
//!
//! The server has no authentication and its document names the peers' addresses, so
//! `vmt-run` serves it on loopback unless given an address ([`StatusAddr`]), and warns when
//! that address reaches beyond the machine.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::report::Status;

/// Pause after a failed accept. EMFILE and its kin last while the backlog stays readable, so
/// retrying at once spins a core; the swarm engine's accept loop waits as long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Where the status is served: `PORT` alone means loopback (`127.0.0.1:PORT`), `ADDR:PORT`
/// is taken as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusAddr(pub SocketAddr);

impl FromStr for StatusAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<StatusAddr, String> {
        if let Ok(port) = s.parse::<u16>() {
            return Ok(StatusAddr(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
            )));
        }
        s.parse().map(StatusAddr).map_err(|_| {
            format!("{s:?} is neither a port nor an address with a port (127.0.0.1:9000)")
        })
    }
}

impl fmt::Display for StatusAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl StatusAddr {
    /// What to tell the user when the status would be reachable from other hosts.
    pub fn exposure_warning(&self) -> Option<String> {
        (!self.0.ip().is_loopback()).then(|| {
            format!(
                "the status on {} is reachable from other hosts, without authentication, and shows peer addresses; give a port alone to serve it on 127.0.0.1 only",
                self.0
            )
        })
    }
}

/// Serves [`Status`] as JSON to any HTTP request on `listener` until `cancel` fires, and waits
/// for the requests in progress; `status` returning `None` (the runtime is shutting down)
/// answers 503.
pub async fn serve_status(
    listener: TcpListener,
    status: impl Fn() -> Option<Status> + Send + Sync + 'static,
    cancel: CancellationToken,
) {
    let status = Arc::new(status);
    let requests = TaskTracker::new();
    // Said once per run of failures, not ten times a second.
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        let mut sock = match accepted {
            Ok((sock, _)) => {
                failing = false;
                sock
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("status server: accept: {e}; retrying every {ACCEPT_BACKOFF:?}");
                }
                failing = true;
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let status = status.clone();
        requests.spawn(async move {
            let mut buf = [0u8; 2048];
            // One request per connection; its content does not matter.
            let _ = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await;
            let (code, body) = match status() {
                Some(st) => (
                    "200 OK",
                    serde_json::to_string_pretty(&st).unwrap_or_default(),
                ),
                None => ("503 Service Unavailable", "{}".to_string()),
            };
            let head = format!(
                "HTTP/1.0 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
    requests.close();
    // A request holds the runtime (through `status`) only while it writes; bounded by the
    // read timeout above and one small write.
    let _ = tokio::time::timeout(Duration::from_secs(5), requests.wait()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_alone_is_served_on_loopback_and_other_hosts_are_warned_of() {
        let port: StatusAddr = "9000".parse().unwrap();
        assert_eq!(port.to_string(), "127.0.0.1:9000");
        assert_eq!(port.exposure_warning(), None);
        let v6: StatusAddr = "[::1]:9000".parse().unwrap();
        assert_eq!(v6.exposure_warning(), None);
        let public: StatusAddr = "0.0.0.0:9000".parse().unwrap();
        assert!(public
            .exposure_warning()
            .unwrap()
            .contains("reachable from other hosts"));
        assert!("localhost".parse::<StatusAddr>().is_err());
    }
}
