//! When to announce again before the tracker's interval. A client that is starved (it lacks
//! pieces and no connected peer feeds it) asks its trackers for fresh peers instead of waiting
//! out the interval (opentracker's is about 30 min): a seeder that joined after our last
//! announce is learned in about [`FLOOR`], not half an hour later. The waits double while the
//! client stays starved, so a swarm with nobody to find never turns into a tight loop.

use std::time::{Duration, Instant};

/// No early announce sooner than this after the last one: peers it returned need time to be
/// dialed and to unchoke us, and a tracker should never see a client hammer it.
pub(crate) const FLOOR: Duration = Duration::from_secs(30);

/// The longest wait between early announces while still starved: about opentracker's regular
/// interval, beyond which the regular announces are as frequent anyway.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(30 * 60);

/// How often the tracker task checks whether the client is starved: well below [`FLOOR`], and
/// cheap (one registry lock).
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The backoff between early announces. Pure (time is passed in) so it is tested without a
/// network.
#[derive(Debug)]
pub(crate) struct Reannounce {
    /// The last announce (the first one happens when the tracker task starts).
    last: Instant,
    /// How long after `last` the next early announce may happen.
    wait: Duration,
}

impl Reannounce {
    /// The backoff of a client whose first announce went out at `now`.
    pub fn new(now: Instant) -> Reannounce {
        Reannounce {
            last: now,
            wait: FLOOR,
        }
    }

    /// Whether to announce again at `now`. A client that is fed again starts over at
    /// [`FLOOR`]; a starved one announces once its wait is over, and then waits twice as long
    /// (up to [`MAX_WAIT`]).
    pub fn due(&mut self, now: Instant, starved: bool) -> bool {
        if !starved {
            self.wait = FLOOR;
            return false;
        }
        if now.saturating_duration_since(self.last) < self.wait {
            return false;
        }
        self.last = now;
        self.wait = (self.wait * 2).min(MAX_WAIT);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The times (seconds after the first announce) of the early announces of a client that
    /// is polled every [`CHECK_EVERY`] for `secs`, starved whenever `starved(t)`.
    fn announces(secs: u64, starved: impl Fn(u64) -> bool) -> Vec<u64> {
        let t0 = Instant::now();
        let mut r = Reannounce::new(t0);
        (0..=secs)
            .step_by(CHECK_EVERY.as_secs() as usize)
            .filter(|&t| r.due(t0 + Duration::from_secs(t), starved(t)))
            .collect()
    }

    #[test]
    fn a_fed_client_never_announces_early() {
        assert!(announces(4 * 3600, |_| false).is_empty());
    }

    #[test]
    fn a_starved_client_announces_after_the_floor_then_backs_off_to_the_cap() {
        let got = announces(4 * 3600, |_| true);
        assert_eq!(got[..7], [30, 90, 210, 450, 930, 1890, 3690]);
        // Past the cap, one early announce per MAX_WAIT: never a tight loop.
        for w in got.windows(2) {
            assert!(w[1] - w[0] >= FLOOR.as_secs(), "{got:?}");
            assert!(w[1] - w[0] <= MAX_WAIT.as_secs(), "{got:?}");
        }
        assert_eq!(got.len(), 12, "{got:?}");
    }

    #[test]
    fn being_fed_again_restarts_the_backoff_at_the_floor_after_the_last_announce() {
        // Starved, fed from 100 s to 200 s (a peer came and went), starved again.
        let got = announces(400, |t| !(100..200).contains(&t));
        assert_eq!(got, [30, 90, 200, 260, 380]);
    }

    #[test]
    fn a_starved_client_waits_the_floor_after_its_first_announce() {
        let t0 = Instant::now();
        let mut r = Reannounce::new(t0);
        assert!(!r.due(t0, true));
        assert!(!r.due(t0 + FLOOR - Duration::from_millis(1), true));
        assert!(r.due(t0 + FLOOR, true));
        assert!(!r.due(t0 + FLOOR, true), "not twice at the same instant");
    }
}
