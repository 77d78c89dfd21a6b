//! The watch over parked reads: a task that, every [`WATCH_INTERVAL`], answers the reads that
//! must not wait any longer (past `--read-timeout`, or whose process was killed: see
//! [`ImageFs::expire_parked`](vmt_fs::ImageFs::expire_parked)) and tells once, in a log line,
//! of each read that has waited [`LONG_WAIT`]: which blocks it waits for and how the peers
//! fare, so that a hard-mount wait on a dead swarm is never silent.

use std::sync::Arc;
use std::time::Duration;

use vmt_fs::{ImageFs, ReadReply, Waiting};
use vmt_swarm::{DialState, DialStatus, Engine};

use crate::source::SwarmSource;

/// How often parked reads are checked: a killed reader is answered within this, and a read
/// timeout is kept to within it.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// A read waiting this long is worth a log line: far beyond a block's fetch on any working
/// link, short enough that whoever watches a hung VM learns why.
pub(crate) const LONG_WAIT: Duration = Duration::from_secs(5);

/// See the module doc. Runs until the runtime's tasks stop.
pub(crate) async fn run<O: vmt_fs::AccessObserver, R: ReadReply>(
    fs: Arc<ImageFs<SwarmSource, O, R>>,
    engine: Engine,
) {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        // Reading /proc and answering a few replies: short, but blocking calls.
        let f = fs.clone();
        let Ok(long) = tokio::task::spawn_blocking(move || {
            f.expire_parked();
            f.newly_overdue(LONG_WAIT)
        })
        .await
        else {
            return;
        };
        if long.is_empty() {
            continue;
        }
        let st = engine.stats();
        let peers = peers_tried(st.connected, &st.dials);
        for (wait, read) in long {
            tracing::warn!("{}; {peers}", describe(&wait, read));
        }
    }
}

/// "a read of 131072 bytes at offset 2097152 has waited 5 s for 8 missing block(s), from block
/// 128 to block 135": which read, and what it waits for. `read` is the read's byte range
/// (`None` for a write waiting for the rest of its blocks).
fn describe(wait: &Waiting, read: Option<(u64, u32)>) -> String {
    let waited = wait.parked_at.elapsed().as_secs_f64();
    let who = match read {
        Some((offset, len)) => format!("a read of {len} bytes at offset {offset}"),
        None => "a partial-block write".to_string(),
    };
    match (wait.units.first(), wait.units.last()) {
        (Some(first), Some(last)) => format!(
            "{who} has waited {waited:.0} s for {} missing block(s), from block {first} to block {last}",
            wait.units.len()
        ),
        _ => format!("{who} has waited {waited:.0} s"),
    }
}

/// Dials a warning names: a crowd dials a hundred peers, and a line naming them all (10 KB at
/// N=128) buries what it is about.
const DIALS_NAMED: usize = 8;

/// The peers and how the dials fare: how many are connected, and the first few that are not
/// (the ones that explain a wait) with their last failure.
fn peers_tried(connected: usize, dials: &[DialStatus]) -> String {
    let mut out = format!("{connected} peer(s) connected");
    if dials.is_empty() {
        return out + ", no peer to dial";
    }
    let not_connected = || {
        dials
            .iter()
            .filter(|d| !matches!(d.state, DialState::Connected))
    };
    let (dialed, others) = (dials.len(), not_connected().count());
    out.push_str(&format!(
        "; {dialed} peer(s) dialed, {} connected",
        dialed - others
    ));
    if others == 0 {
        return out;
    }
    let named: Vec<String> = not_connected()
        .take(DIALS_NAMED)
        .map(|d| {
            let state = match &d.state {
                DialState::Connecting => "connecting".to_string(),
                DialState::Connected => "connected".to_string(),
                DialState::Failed(e) => format!("failing: {e}"),
                DialState::Given(why) => format!("given up: {why}"),
            };
            format!("{} ({state}, {} attempts)", d.addr, d.attempts)
        })
        .collect();
    out.push_str(&format!("; not connected: {}", named.join(", ")));
    if others > DIALS_NAMED {
        out.push_str(&format!(" and {} more", others - DIALS_NAMED));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_long_wait_names_its_blocks() {
        let wait = Waiting {
            parked_at: Instant::now() - Duration::from_secs(6),
            units: vec![128, 129, 135],
        };
        let line = describe(&wait, Some((2 << 20, 4096)));
        assert!(
            line.starts_with("a read of 4096 bytes at offset 2097152 has waited 6 s"),
            "{line}"
        );
        assert!(
            line.contains("3 missing block(s), from block 128 to block 135"),
            "{line}"
        );
        let one = Waiting {
            parked_at: Instant::now(),
            units: vec![7],
        };
        assert!(describe(&one, None).starts_with("a partial-block write has waited"));
        assert!(describe(&one, None).contains("from block 7"));
    }

    /// A crowd's warning stays one readable line: counts, and the first few dials that are
    /// not connected, never every dial.
    #[test]
    fn the_peer_summary_names_a_few_unconnected_dials_only() {
        let dial = |i: u16, state| DialStatus {
            addr: ([127, 0, 0, 1], 40000 + i).into(),
            state,
            attempts: 3,
        };
        assert_eq!(
            peers_tried(90, &[]),
            "90 peer(s) connected, no peer to dial"
        );
        let mut dials: Vec<DialStatus> = (0..100).map(|i| dial(i, DialState::Connected)).collect();
        assert_eq!(
            peers_tried(90, &dials),
            "90 peer(s) connected; 100 peer(s) dialed, 100 connected"
        );
        for i in (0..100).step_by(4) {
            dials[i].state = DialState::Failed("early eof".into());
        }
        let line = peers_tried(90, &dials);
        assert!(
            line.starts_with(
                "90 peer(s) connected; 100 peer(s) dialed, 75 connected; not connected: \
                 127.0.0.1:40000 (failing: early eof, 3 attempts), 127.0.0.1:40004"
            ),
            "{line}"
        );
        assert!(line.ends_with(" and 17 more"), "{line}");
        assert_eq!(line.matches("127.0.0.1:").count(), DIALS_NAMED, "{line}");
    }
}
