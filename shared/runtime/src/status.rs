//! The live status over HTTP: the status as JSON, the same in Prometheus' text format at
//! `/metrics` (see `metrics`), and a live page of what is happening (the
//! piece map, the belief over time, stalls as they happen, peers' rates) fed by server-sent
//! events; see [`serve_status`] and `live`.
//!
//! The server has no authentication and its document names the peers' addresses, so
//! `vmt-run` serves it on loopback unless given an address ([`StatusAddr`]), and warns when
//! that address reaches beyond the machine.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::live::{Live, Sampler, SAMPLE_EVERY};
use crate::metrics;
use crate::Runtime;

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

/// The live page: one static file, no build step, no external script.
const PAGE: &str = include_str!("page/index.html");
/// How long a request may take to arrive.
const REQUEST_WAIT: Duration = Duration::from_secs(2);
/// Most bytes of a request read: a request line and headers; the body, if any, is ignored.
const REQUEST_MAX: usize = 8192;
/// An SSE comment sent when nothing changed for this long, so proxies and the browser keep
/// the stream open and a closed tab is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// The status as JSON: `GET /status`, and `GET /` from anything but a browser (scripts
    /// and earlier versions' users fetch `/`).
    Status,
    /// The live page: `GET /` (or `/index.html`) accepting `text/html`.
    Page,
    /// The server-sent events feeding the page.
    Events,
    /// The latest map event, as JSON.
    Map,
    /// The latest live event, as JSON.
    Live,
    /// The status in Prometheus' text format (`metrics`).
    Metrics,
    NotFound,
}

/// Routes a request by its request line and `Accept` header.
fn route(request: &str) -> Route {
    let mut lines = request.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let wants_html = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("accept") && v.contains("text/html")
        })
    });
    match path {
        "/" if wants_html => Route::Page,
        "/index.html" => Route::Page,
        "/" | "/status" => Route::Status,
        "/events" => Route::Events,
        "/map" => Route::Map,
        "/live" => Route::Live,
        "/metrics" => Route::Metrics,
        _ => Route::NotFound,
    }
}

/// Serves the runtime's status and live page over HTTP on `listener` until `cancel` fires, and
/// waits for the requests in progress (see [`Route`]). A sampler task feeds the page (see
/// `live`); it and every request hold the runtime only for a moment, so shutting down can
/// take it back. Once the runtime is gone the server answers 503.
pub async fn serve_status(
    listener: TcpListener,
    runtime: Weak<Runtime>,
    cancel: CancellationToken,
) {
    let Some((names, geometry)) = runtime
        .upgrade()
        .map(|r| (r.profile_names().to_vec(), r.geometry()))
    else {
        return;
    };
    let live = Arc::new(Live::new(names.clone()));
    let requests = TaskTracker::new();
    requests.spawn(sample(
        runtime.clone(),
        live.clone(),
        names,
        geometry,
        cancel.clone(),
    ));
    // Said once per run of failures, not ten times a second.
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        let sock = match accepted {
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
        requests.spawn(answer(sock, runtime.clone(), live.clone(), cancel.clone()));
    }
    requests.close();
    // A request holds the runtime only while it takes a status; event streams end at `cancel`.
    let _ = tokio::time::timeout(Duration::from_secs(5), requests.wait()).await;
}

/// Samples the runtime every [`SAMPLE_EVERY`] into `live` until `cancel` or the runtime goes.
async fn sample(
    runtime: Weak<Runtime>,
    live: Arc<Live>,
    names: Vec<String>,
    (piece_len, block_len): (u32, u32),
    cancel: CancellationToken,
) {
    let mut sampler = Sampler::new(piece_len, block_len);
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        let Some(rt) = runtime.upgrade() else { return };
        let status = rt.sample(sampler.inputs());
        drop(rt);
        sampler.publish(&live, &status, &names);
    }
}

/// Answers one request on `sock`.
async fn answer(
    mut sock: TcpStream,
    runtime: Weak<Runtime>,
    live: Arc<Live>,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; REQUEST_MAX];
    let mut len = 0;
    let _ = tokio::time::timeout(REQUEST_WAIT, async {
        while len < buf.len() {
            match sock.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let request = String::from_utf8_lossy(&buf[..len]);
    let (code, kind, body) = match route(&request) {
        Route::Events => return stream_events(sock, live, cancel).await,
        Route::Page => ("200 OK", "text/html; charset=utf-8", PAGE.to_string()),
        Route::Status => match runtime.upgrade().map(|r| r.status()) {
            Some(st) => (
                "200 OK",
                "application/json",
                serde_json::to_string_pretty(&st).unwrap_or_default(),
            ),
            None => ("503 Service Unavailable", "application/json", "{}".into()),
        },
        Route::Metrics => match runtime.upgrade().map(|r| r.status()) {
            Some(st) => ("200 OK", metrics::CONTENT_TYPE, metrics::render(st)),
            None => ("503 Service Unavailable", "text/plain", "stopped\n".into()),
        },
        Route::Map | Route::Live => match live.latest() {
            Some(t) if route(&request) == Route::Map => {
                ("200 OK", "application/json", t.map.to_string())
            }
            Some(t) => ("200 OK", "application/json", t.live.to_string()),
            None => ("503 Service Unavailable", "application/json", "{}".into()),
        },
        Route::NotFound => ("404 Not Found", "text/plain", "not found\n".into()),
    };
    let head = format!(
        "HTTP/1.0 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body.as_bytes()).await;
}

/// Streams the feed as server-sent events: the belief's `history` once, then per tick a `map`
/// event when the map changed and a `live` event; ends at `cancel` or when the page goes.
async fn stream_events(mut sock: TcpStream, live: Arc<Live>, cancel: CancellationToken) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n";
    let history = live.history_json();
    if sock.write_all(head.as_bytes()).await.is_err()
        || write_event(&mut sock, "history", &history).await.is_err()
    {
        return;
    }
    let mut ticks = live.subscribe();
    ticks.mark_changed();
    let mut map_seq = 0;
    loop {
        let changed = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(KEEPALIVE, ticks.changed()) => r,
        };
        let sent = match changed {
            Err(_) => sock.write_all(b": keepalive\n\n").await,
            Ok(Err(_)) => return,
            Ok(Ok(())) => {
                let Some(tick) = ticks.borrow_and_update().clone() else {
                    continue;
                };
                let mut r = Ok(());
                if tick.map_seq != map_seq {
                    map_seq = tick.map_seq;
                    r = write_event(&mut sock, "map", &tick.map).await;
                }
                match r {
                    Ok(()) => write_event(&mut sock, "live", &tick.live).await,
                    e => e,
                }
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// One server-sent event; `data` is one line of JSON.
async fn write_event(sock: &mut TcpStream, event: &str, data: &str) -> std::io::Result<()> {
    let frame = format!("event: {event}\ndata: {data}\n\n");
    sock.write_all(frame.as_bytes()).await
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

    #[test]
    fn browsers_get_the_page_and_scripts_the_json() {
        let chrome = "GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html,application/xhtml+xml,*/*;q=0.8\r\n\r\n";
        assert_eq!(route(chrome), Route::Page);
        assert_eq!(route("GET / HTTP/1.0\r\n\r\n"), Route::Status);
        assert_eq!(
            route("GET /status HTTP/1.1\r\nAccept: text/html\r\n\r\n"),
            Route::Status
        );
        assert_eq!(route("GET /events HTTP/1.1\r\n\r\n"), Route::Events);
        assert_eq!(route("GET /map?x=1 HTTP/1.1\r\n\r\n"), Route::Map);
        assert_eq!(route("GET /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET /nope HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(""), Route::Status);
        assert!(
            PAGE.contains("EventSource"),
            "the page follows the event stream"
        );
        assert!(
            !PAGE.contains("http://") && !PAGE.contains("https://"),
            "no external resources"
        );
    }
}
