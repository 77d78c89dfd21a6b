//! BEP 19 web seeds: an HTTP origin (any web server, object store or CDN that answers Range
//! requests) as a seed that is always unchoked.
//!
//! Every byte an origin serves costs its owner, so peers come first (see
//! [`PiecePicker::pick_origin`]): the origin is asked for a demanded block when no connected
//! peer has its piece or peers have been too slow for it (`patience`), and, in the background,
//! only for pieces no connected peer has. Its share is capped by its own rate limit. A demanded
//! piece is fetched only for its demanded blocks when the torrent has a block-hash table (a
//! read waits for them, not for the piece); anything else is fetched as a whole piece.
//!
//! Every range is verified like any piece (block SHA-256 with the table, else piece SHA-1)
//! before it is written; a range that fails is thrown away, counts a strike, and at
//! [`MAX_ORIGIN_STRIKES`] the URL is banned. A server that ignores Range (a 200 with the whole
//! file) or refuses the file (4xx), a redirect loop, or a `Content-Range` for another file
//! bans the URL at once with the reason; a 5xx, a timeout or a refused connection backs off
//! (doubling, up to [`MAX_BACKOFF`]) and retries.
//!
//! Each URL has [`WORKERS`] tasks: one may fill the background, both take demands, so a
//! demanded block does not wait behind a background piece. The background is filled only
//! once reads pause ([`BACKGROUND_QUIET`]): the origin's uplink is the crowd's bottleneck.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_RANGE, RANGE, RETRY_AFTER};
use reqwest::StatusCode;

use crate::digest::sha1;
use crate::error::SwarmError;
use crate::peers::PeerRegistry;
use crate::picker::PickReason;
use crate::ratelimit::RateLimiter;
use crate::sources::{Source, SourceId};
use crate::state::{lock, TorrentState};
use crate::stats::Counters;
use crate::stats::{OriginState, WebSeedStats};

/// Ranges of corrupt data an origin may send before its URL is banned: one can be a torn
/// read on a file being replaced; more means it serves another file.
pub const MAX_ORIGIN_STRIKES: u32 = 3;
/// Redirects followed per request; a loop ends here.
pub const MAX_REDIRECTS: usize = 5;
/// Longest wait before retrying an origin that failed (5xx, timeouts, refused connections).
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// First wait after a failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Tasks per URL: one fills the background, both take demands.
const WORKERS: usize = 2;
/// How often an idle worker looks for work besides being woken (demands become overdue
/// without any event).
const TICK: Duration = Duration::from_millis(50);
/// How long after this client's last demand the origin may fill the background. While reads
/// come, a background piece shares the origin's uplink, which a whole crowd shares, with the
/// demands of every client (8 clients on nginx: half the origin's bytes were background and
/// the sessions took 1.1x as long as from a vmt seeder); in a pause (think time, a session
/// over, a whole-image fetch that demands nothing) it delays no read.
const BACKGROUND_QUIET: Duration = Duration::from_secs(1);
/// A request's whole time: a 16 MiB piece at 2 Mbit/s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the engine uses its origins.
#[derive(Clone, Debug)]
pub(crate) struct OriginPolicy {
    /// Bytes per second all origins may send us together; `None` = unlimited.
    pub limit: Option<u64>,
    /// How long a demanded block waits for peers before the origin is asked too.
    pub patience: Duration,
    /// Whether the origin fills pieces nobody has (fetch-all); otherwise demand and plan only.
    pub background: bool,
}

/// Why an origin request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OriginError {
    /// The server answered 200 with the whole file: not downloading a whole image for a range.
    #[error("the server ignores Range requests (200 instead of 206); not downloading the whole image for one range")]
    NoRanges,
    /// Redirects without end.
    #[error("more than {MAX_REDIRECTS} redirects (a redirect loop?)")]
    Redirects,
    /// 4xx: the file is not there, or not for us.
    #[error("HTTP {0}")]
    Refused(StatusCode),
    /// 5xx and other statuses worth retrying.
    #[error("HTTP {0}")]
    Unavailable(StatusCode),
    /// A 206 for another range or another file length.
    #[error(
        "Content-Range {found:?} does not match the requested bytes {want} of a {total}-byte image"
    )]
    WrongRange {
        found: String,
        want: String,
        total: u64,
    },
    /// The body was longer or shorter than the range.
    #[error("the body has {found} bytes, the range {expected}")]
    Length { found: u64, expected: u64 },
    /// Network or HTTP protocol failure.
    #[error("{0}")]
    Http(String),
    /// The data failed verification.
    #[error("{what} failed verification")]
    Corrupt { what: String },
    /// Local storage failed: not the origin's fault.
    #[error("local storage failed")]
    Storage,
}

impl OriginError {
    /// Whether the URL is of no use any more (retrying would get the same answer).
    fn is_permanent(&self) -> bool {
        match self {
            OriginError::NoRanges | OriginError::Redirects | OriginError::WrongRange { .. } => true,
            OriginError::Refused(s) => {
                *s != StatusCode::REQUEST_TIMEOUT && *s != StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// One origin URL, shared by its workers and the stats.
pub(crate) struct Origin {
    url: String,
    source: SourceId,
    downloaded: AtomicU64,
    useful: AtomicU64,
    strikes: AtomicU32,
    status: Mutex<Status>,
}

struct Status {
    state: OriginState,
    backoff: Duration,
    retry_at: Option<Instant>,
}

impl Origin {
    pub fn new(url: String, st: &TorrentState) -> Origin {
        let source = st.sources().intern(Source::WebSeed(url.clone()));
        Origin {
            url,
            source,
            downloaded: AtomicU64::new(0),
            useful: AtomicU64::new(0),
            strikes: AtomicU32::new(0),
            status: Mutex::new(Status {
                state: OriginState::Ok,
                backoff: FIRST_BACKOFF,
                retry_at: None,
            }),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn stats(&self) -> WebSeedStats {
        WebSeedStats {
            url: self.url.clone(),
            downloaded: self.downloaded.load(Ordering::Relaxed),
            useful: self.useful.load(Ordering::Relaxed),
            hash_failures: self.strikes.load(Ordering::Relaxed),
            state: lock(&self.status).state.clone(),
        }
    }

    fn is_banned(&self) -> bool {
        matches!(lock(&self.status).state, OriginState::Banned(_))
    }

    fn retry_at(&self) -> Option<Instant> {
        lock(&self.status).retry_at
    }

    fn succeeded(&self) {
        let mut s = lock(&self.status);
        if s.state != OriginState::Ok {
            tracing::info!(url = %self.url, "web seed serves again");
        }
        s.state = OriginState::Ok;
        s.backoff = FIRST_BACKOFF;
        s.retry_at = None;
    }

    /// Records a failure: bans the URL or schedules a retry, with one log line each.
    fn failed(&self, error: &OriginError, retry_after: Option<Duration>) {
        let mut s = lock(&self.status);
        if matches!(s.state, OriginState::Banned(_)) {
            return;
        }
        if let OriginError::Corrupt { .. } = error {
            let strikes = self.strikes.fetch_add(1, Ordering::Relaxed) + 1;
            if strikes >= MAX_ORIGIN_STRIKES {
                let why = format!("{strikes} ranges failed verification (it serves another file)");
                tracing::error!(url = %self.url, "web seed banned: {why}");
                s.state = OriginState::Banned(why);
                return;
            }
            tracing::warn!(
                url = %self.url,
                "web seed: {error} ({strikes} of {MAX_ORIGIN_STRIKES} strikes); thrown away"
            );
            return;
        }
        if error.is_permanent() {
            tracing::error!(url = %self.url, "web seed banned: {error}");
            s.state = OriginState::Banned(error.to_string());
            return;
        }
        let wait = retry_after.unwrap_or(s.backoff).min(MAX_BACKOFF);
        tracing::warn!(url = %self.url, "web seed: {error}; retrying in {} s", wait.as_secs_f32());
        s.state = OriginState::Retrying(error.to_string());
        s.retry_at = Some(Instant::now() + wait);
        s.backoff = (s.backoff * 2).min(MAX_BACKOFF);
    }
}

/// What the workers of all origins share.
pub(crate) struct OriginCtx {
    pub state: Arc<TorrentState>,
    pub peers: Arc<PeerRegistry>,
    pub down_limit: Arc<RateLimiter>,
    pub policy: OriginPolicy,
    pub limit: RateLimiter,
    pub client: reqwest::Client,
    pub cancel: tokio_util::sync::CancellationToken,
    /// When the engine started: the background waits `patience` for the first peers to say
    /// what they have (before their bitfields, every piece looks like nobody has it).
    started: Instant,
    /// Pieces the origins' workers hold assignments of: one origin fetch of a piece at a
    /// time. A leaf lock, taken under the picker's.
    held: Mutex<Vec<u32>>,
}

impl OriginCtx {
    pub fn new(
        state: Arc<TorrentState>,
        peers: Arc<PeerRegistry>,
        down_limit: Arc<RateLimiter>,
        policy: OriginPolicy,
        cancel: tokio_util::sync::CancellationToken,
    ) -> OriginCtx {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("vmt/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        OriginCtx {
            limit: RateLimiter::new(policy.limit),
            state,
            peers,
            down_limit,
            policy,
            client,
            cancel,
            started: Instant::now(),
            held: Mutex::new(Vec::new()),
        }
    }
}

/// Number of worker tasks per origin.
pub(crate) const fn workers() -> usize {
    WORKERS
}

/// A piece assigned to a worker, and the blocks to ask for.
struct Job {
    piece: u32,
    blocks: Range<u32>,
}

/// One worker of `origin`: picks, fetches, verifies, stores, until cancelled or banned.
pub(crate) async fn worker(
    ctx: Arc<OriginCtx>,
    origin: Arc<Origin>,
    index: usize,
) -> Result<(), std::convert::Infallible> {
    // Worker 0 also follows the plan and fills the background; the others take demands only,
    // so a demanded block never waits behind a background piece.
    let first = index == 0;
    let mut since: Vec<(u32, Instant)> = Vec::new();
    let mut last_demand = None;
    let mut buf = Vec::new();
    loop {
        if ctx.cancel.is_cancelled() || origin.is_banned() {
            return Ok(());
        }
        if let Some(at) = origin.retry_at() {
            let at = tokio::time::Instant::from_std(at);
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = ctx.cancel.cancelled() => return Ok(()),
            }
        }
        let st = &ctx.state;
        let job = if st.has_failed() || st.storage().is_complete() {
            None
        } else {
            let plan = first && ctx.started.elapsed() >= ctx.policy.patience;
            let background = plan && ctx.policy.background;
            pick(&ctx, &mut since, &mut last_demand, plan, background)
        };
        let Some(job) = job else {
            let wake = ctx.peers.origin_wake().notified();
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = ctx.cancel.cancelled() => return Ok(()),
            }
            continue;
        };
        let piece = job.piece;
        let result = tokio::select! {
            r = fetch(&ctx, &origin, &job, &mut buf) => r,
            _ = ctx.cancel.cancelled() => Err((OriginError::Http("shutting down".into()), None)),
        };
        lock(&ctx.held).retain(|&p| p != piece);
        match result {
            Ok(true) => origin.succeeded(),
            Ok(false) => {
                origin.succeeded();
                st.picker().release(piece);
            }
            Err((e, retry_after)) => {
                st.picker().release(piece);
                if !ctx.cancel.is_cancelled() && !matches!(e, OriginError::Storage) {
                    origin.failed(&e, retry_after);
                }
            }
        }
        ctx.peers.wake_readers();
    }
}

/// Whether the background may be filled from the origin at `now`, given this client's last
/// demand: only once reads have paused for [`BACKGROUND_QUIET`].
fn quiet(last_demand: Option<Instant>, now: Instant) -> bool {
    last_demand.is_none_or(|t| now.saturating_duration_since(t) >= BACKGROUND_QUIET)
}

/// The next job, under the picker lock. `since` keeps when each demanded piece was first seen
/// (for `patience`); it holds only pieces still demanded. `last_demand`: when a demand was
/// last seen (the background waits for a pause).
fn pick(
    ctx: &OriginCtx,
    since: &mut Vec<(u32, Instant)>,
    last_demand: &mut Option<Instant>,
    plan: bool,
    background: bool,
) -> Option<Job> {
    let st = &ctx.state;
    let layout = *st.layout();
    let now = Instant::now();
    let mut picker = st.picker();
    let demanded = picker.demanded_pieces();
    if !demanded.is_empty() {
        *last_demand = Some(now);
    }
    let background = background && quiet(*last_demand, now);
    since.retain(|(p, _)| demanded.contains(p));
    for &p in demanded {
        if !since.iter().any(|(q, _)| *q == p) {
            since.push((p, now));
        }
    }
    let patience = ctx.policy.patience;
    let overdue = |p: u32| {
        since
            .iter()
            .any(|&(q, t)| q == p && now.duration_since(t) >= patience)
    };
    let mut held = lock(&ctx.held);
    let pick = picker.pick_origin(overdue, |p| held.contains(&p), plan, background)?;
    held.push(pick.piece);
    drop(held);
    let all = layout.piece_blocks(pick.piece);
    let blocks = if pick.reason == PickReason::Demand && picker.verifies_blocks() {
        // Only what readers wait for (and what lies between: one request).
        let mut urgent = all.clone().filter(|&b| picker.is_block_urgent(b));
        let first = urgent.next();
        match first {
            Some(first) => first..urgent.next_back().unwrap_or(first) + 1,
            None => all,
        }
    } else {
        all
    };
    tracing::debug!(
        piece = pick.piece,
        blocks = blocks.len(),
        reason = ?pick.reason,
        peers_have = picker.availability(pick.piece),
        "web seed pick"
    );
    Some(Job {
        piece: pick.piece,
        blocks,
    })
}

type Failure = (OriginError, Option<Duration>);

/// Fetches and stores `job`. Ok(true): its piece was verified (the assignment is returned);
/// Ok(false): blocks were stored, the assignment is still held.
async fn fetch(
    ctx: &OriginCtx,
    origin: &Origin,
    job: &Job,
    buf: &mut Vec<u8>,
) -> Result<bool, Failure> {
    let st = &ctx.state;
    let layout = *st.layout();
    let start = layout.block_offset(job.blocks.start);
    let last = job.blocks.end - 1;
    let end = layout.block_offset(last) + layout.block_size(last) as u64;
    let len = end - start;
    ctx.limit.consume(len).await;
    ctx.down_limit.consume(len).await;
    get_range(ctx, &origin.url, start, end, st.layout().total_len(), buf).await?;
    Counters::add(&st.counters().downloaded, len);
    Counters::add(&st.counters().origin_downloaded, len);
    origin.downloaded.fetch_add(len, Ordering::Relaxed);
    let whole = job.blocks == layout.piece_blocks(job.piece);
    if whole {
        store_piece(ctx, origin, job.piece, buf).map_err(|e| (e, None))
    } else {
        store_blocks(ctx, origin, job, buf).map_err(|e| (e, None))
    }
}

/// GETs bytes `start..end` of the image at `url` into `buf`, refusing anything but a 206 of
/// exactly that range.
async fn get_range(
    ctx: &OriginCtx,
    url: &str,
    start: u64,
    end: u64,
    total: u64,
    buf: &mut Vec<u8>,
) -> Result<(), Failure> {
    let http = |e: reqwest::Error| {
        if e.is_redirect() {
            (OriginError::Redirects, None)
        } else {
            (OriginError::Http(crate::error::chain(&e)), None)
        }
    };
    let mut resp = ctx
        .client
        .get(url)
        .header(RANGE, format!("bytes={}-{}", start, end - 1))
        .send()
        .await
        .map_err(http)?;
    let status = resp.status();
    if status != StatusCode::PARTIAL_CONTENT {
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Dropping the response closes the connection: the body is not read.
        let e = if status == StatusCode::OK {
            OriginError::NoRanges
        } else if status.is_redirection() {
            OriginError::Redirects
        } else if status.is_client_error() && status != StatusCode::RANGE_NOT_SATISFIABLE {
            OriginError::Refused(status)
        } else if status == StatusCode::RANGE_NOT_SATISFIABLE {
            // The file is shorter than the torrent says: another file.
            OriginError::WrongRange {
                found: "416".into(),
                want: format!("{start}-{}", end - 1),
                total,
            }
        } else {
            OriginError::Unavailable(status)
        };
        return Err((e, retry_after));
    }
    let found = resp
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let want = format!("bytes {}-{}/", start, end - 1);
    let total_ok = match found.strip_prefix(&want) {
        Some("*") => true,
        Some(t) => t.parse::<u64>() == Ok(total),
        None => false,
    };
    if !total_ok {
        return Err((
            OriginError::WrongRange {
                found,
                want: format!("{start}-{}", end - 1),
                total,
            },
            None,
        ));
    }
    let expected = end - start;
    buf.clear();
    while let Some(chunk) = resp.chunk().await.map_err(http)? {
        if buf.len() as u64 + chunk.len() as u64 > expected {
            return Err((
                OriginError::Length {
                    found: buf.len() as u64 + chunk.len() as u64,
                    expected,
                },
                None,
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.len() as u64 != expected {
        return Err((
            OriginError::Length {
                found: buf.len() as u64,
                expected,
            },
            None,
        ));
    }
    Ok(())
}

/// A whole piece: checked against its SHA-1, written, verified, announced.
fn store_piece(
    ctx: &OriginCtx,
    origin: &Origin,
    piece: u32,
    data: &[u8],
) -> Result<bool, OriginError> {
    let st = &ctx.state;
    let c = st.counters();
    let index = st.torrent().piece(piece).expect("picked pieces are valid");
    if sha1(data) != *st.torrent().piece_hash(index) {
        Counters::add(&c.corrupt, data.len() as u64);
        return Err(OriginError::Corrupt {
            what: format!("piece {piece}"),
        });
    }
    if let Err(e) = st.storage().write_piece(index, data) {
        Counters::add(&c.abandoned, data.len() as u64);
        storage_failed(st, e);
        return Err(OriginError::Storage);
    }
    let (first, new_bytes) = st.piece_stored(index, true);
    if new_bytes > 0 {
        st.sources().record(piece, origin.source);
    }
    if first {
        ctx.peers.announce(piece);
    }
    Counters::add(&c.useful, new_bytes);
    Counters::add(&c.origin_useful, new_bytes);
    origin.useful.fetch_add(new_bytes, Ordering::Relaxed);
    Counters::add(&c.duplicate, data.len() as u64 - new_bytes);
    Ok(true)
}

/// Some blocks of a piece (demanded, with a block-hash table): each verified alone and
/// stored; if that completes the piece, it is verified as a whole (Ok(true)).
fn store_blocks(
    ctx: &OriginCtx,
    origin: &Origin,
    job: &Job,
    data: &[u8],
) -> Result<bool, OriginError> {
    let st = &ctx.state;
    let c = st.counters();
    let layout = *st.layout();
    let table = st.block_hashes().expect("partial jobs need the table");
    let mut bad = None;
    let mut at = 0;
    for b in job.blocks.clone() {
        let size = layout.block_size(b) as usize;
        let block = &data[at..at + size];
        at += size;
        if st.storage().has_block(b) {
            Counters::add(&c.duplicate, size as u64);
        } else if !table.verify(b, block) {
            Counters::add(&c.corrupt, size as u64);
            bad.get_or_insert(b);
        } else if let Err(e) = st.storage().write_block(b, block) {
            Counters::add(&c.abandoned, size as u64);
            storage_failed(st, e);
            return Err(OriginError::Storage);
        } else if st.block_stored(b) {
            st.sources().record(job.piece, origin.source);
            Counters::add(&c.useful, size as u64);
            Counters::add(&c.origin_useful, size as u64);
            origin.useful.fetch_add(size as u64, Ordering::Relaxed);
        } else {
            Counters::add(&c.duplicate, size as u64);
        }
    }
    if let Some(b) = bad {
        return Err(OriginError::Corrupt {
            what: format!("block {b}"),
        });
    }
    if !layout
        .piece_blocks(job.piece)
        .all(|b| st.storage().has_block(b))
    {
        return Ok(false);
    }
    // Every block is present: the piece is verified as a whole from disk (as a peer
    // connection does), so it can be announced and seeded.
    let index = st
        .torrent()
        .piece(job.piece)
        .expect("picked pieces are valid");
    let mut piece = vec![0; layout.piece_size(job.piece) as usize];
    let offset = layout.block_offset(layout.piece_blocks(job.piece).start);
    if let Err(e) = st.storage().read_at(offset, &mut piece) {
        storage_failed(st, e);
        return Err(OriginError::Storage);
    }
    if sha1(&piece) != *st.torrent().piece_hash(index) {
        tracing::error!(
            piece = job.piece,
            "every block matches the block-hash table but the piece does not match its SHA-1: \
             the torrent's two hash lists disagree"
        );
        return Ok(false);
    }
    let (first, _) = st.piece_stored(index, true);
    if first {
        ctx.peers.announce(job.piece);
    }
    Ok(true)
}

fn storage_failed(st: &TorrentState, source: std::io::Error) {
    st.fail(SwarmError::WriteFailed {
        path: st.storage().path().to_owned(),
        source,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The background waits for reads to pause: never demanded, or demanded long enough ago.
    #[test]
    fn the_background_waits_for_a_pause_in_demands() {
        let t0 = Instant::now();
        assert!(quiet(None, t0));
        assert!(!quiet(Some(t0), t0));
        assert!(!quiet(Some(t0), t0 + BACKGROUND_QUIET / 2));
        assert!(quiet(Some(t0), t0 + BACKGROUND_QUIET));
        // A clock read before the demand was stamped is no pause.
        assert!(!quiet(Some(t0 + BACKGROUND_QUIET), t0));
    }
}
