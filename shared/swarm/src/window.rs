//! How many block requests to keep outstanding at one peer: a delay-based window (TCP Vegas
//! applied to requests).
//!
//! A peer serves our requests in order, so every block we ask for ahead of a demanded one
//! delays it. A fixed deep pipeline fills any link but, on a slow one, parks hundreds of
//! milliseconds of background blocks in the remote's socket and the bottleneck queue, where
//! a cancel can no longer reach them; this is why background fill used to make a demanded
//! piece wait several piece times. The window instead keeps the link busy with only a few
//! blocks queued: from each answered request it takes the round-trip time, tracks the
//! smallest one seen (the link without our queue), and once per round estimates how many of
//! our blocks wait in a queue, `depth × (1 − base / rtt)`. Below [`ALPHA`] blocks it grows
//! (doubling while in slow start, then by one), above [`BETA`] it sheds half the excess. On a
//! LAN it settles at a handful of blocks; on a long fat path it grows to the bandwidth-delay
//! product.
//!
//! A remote that serves requests in bursts breaks the model: Transmission 3.00 answers about
//! every 500 ms, so every round trip is 400-600 ms whatever the depth, and the estimate took
//! that for our queue and shrank the window to a few blocks per burst (0.5 MB/s on a veth
//! link). So each shrink is judged by the next round: our own queue shrinks with the window
//! (the delay drops) while the link stays busy (the rate holds); if instead the delay stays
//! and the delivery rate falls with the window, the delay is the remote's, and it becomes the
//! base RTT with slow start resumed ([`not_our_delay`]). A queue of others' traffic keeps
//! both delay and rate, so the window still backs off from it.
//!
//! A delay estimate cannot tell a full pipe from jitter: a remote whose answer time varies
//! by more than a block time shows a block or two of "queue" at any depth, and Vegas' one
//! block a round is tens of rounds from a deep window. So where the estimate says "about
//! right" or "grow by one", the window also probes by the delivery rate (as BBR does): it
//! grows by a step, keeps it if the next round delivered more, and undoes it otherwise
//! (`RequestWindow::probe`). The shrink for a real queue stays the delay's.
//!
//! The base RTT is the minimum over the current and previous [`EPOCH`], so a lasting change of
//! path or a persistent queue from other traffic is adopted within two epochs. Updates do no
//! allocation and no system calls beyond the caller's clock reads.

use std::time::{Duration, Instant};

/// Blocks queued below which the window grows. Every queued block delays the next miss by one
/// block time (1.3 ms at 100 Mbit/s): with 2 and 4 the median miss under prefetch waited 6 u
/// (block time + RTT) in the full benchmark, with 1 and 2 it waits 4 u, and a whole-image
/// download is as fast (118 s for 1.4 GB at 100 Mbit/s either way).
pub const ALPHA: f64 = 1.0;
/// Blocks queued above which the window shrinks.
pub const BETA: f64 = 2.0;
/// Smallest window: one block in flight while the next is asked for.
pub const MIN_DEPTH: usize = 2;
/// Window at connection start, before any measurement.
pub const INITIAL_DEPTH: usize = 8;
/// How long a base-RTT minimum is trusted.
pub const EPOCH: Duration = Duration::from_secs(10);
/// First growth of a rate probe, as a fraction of the window. A quarter stands out of the
/// round-to-round noise of a remote serving in bursts (its pulse varies by about ±20%).
const PROBE_STEP: f64 = 0.25;
/// Rounds between failed probes, at first; doubled per failure up to [`PROBE_WAIT_MAX`], so on
/// a full link a probe adds its few blocks of queue to one round in 8 at most, and in 64 once
/// the link has been found full several times.
const PROBE_WAIT: u32 = 8;
/// See [`PROBE_WAIT`].
const PROBE_WAIT_MAX: u32 = 64;

/// The request window of one connection.
#[derive(Debug, Clone)]
pub struct RequestWindow {
    depth: usize,
    max: usize,
    slow_start: bool,
    /// Minimum RTT of the current epoch and of the previous one.
    epoch_min: Duration,
    prev_min: Duration,
    epoch_start: Instant,
    /// Minimum RTT and samples of the current round (one window's worth of answers).
    round_min: Duration,
    round_samples: usize,
    /// Whether the window was full at some answer of the current round (see `on_answer`).
    round_full: bool,
    /// When the previous round ended: rounds end one window's worth of answers apart, so
    /// `depth / (end - previous end)` is the delivery rate, bursts or not.
    round_end: Instant,
    /// The last shrink, to judge by the next round whether the delay was ours.
    shrunk: Option<Shrink>,
    /// The answers per second of the previous round.
    prev_rate: f64,
    /// A growth to be judged by the next round's rate (see `probe`).
    probe: Option<Probe>,
    /// Growth of the next probe, as a fraction of the window.
    probe_step: f64,
    /// Rounds until the next probe may start, and the wait after the next failed one.
    probe_in: u32,
    probe_wait: u32,
    /// Whether the current round still carries the queue of a probe just undone, so its
    /// delay says nothing about the window.
    after_probe: bool,
}

/// A growth of the window made to see whether the delivery rate grows with it.
#[derive(Debug, Clone, Copy)]
struct Probe {
    depth: usize,
    /// Answers per second before the growth (the better of the last two rounds).
    rate: f64,
}

/// A shrink of the window and the round that caused it.
#[derive(Debug, Clone, Copy)]
struct Shrink {
    rtt: Duration,
    /// Answers per second in the round before the shrink.
    rate: f64,
    /// Fraction of the window removed.
    fraction: f64,
}

impl RequestWindow {
    /// A window that never exceeds `max` (at least [`MIN_DEPTH`]).
    pub fn new(max: usize, now: Instant) -> RequestWindow {
        let max = max.max(MIN_DEPTH);
        RequestWindow {
            depth: INITIAL_DEPTH.clamp(MIN_DEPTH, max),
            max,
            slow_start: true,
            epoch_min: Duration::MAX,
            prev_min: Duration::MAX,
            epoch_start: now,
            round_min: Duration::MAX,
            round_samples: 0,
            round_full: false,
            round_end: now,
            shrunk: None,
            prev_rate: 0.0,
            probe: None,
            probe_step: PROBE_STEP,
            probe_in: 0,
            probe_wait: PROBE_WAIT,
            after_probe: false,
        }
    }

    /// Requests to keep outstanding now.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The smallest round-trip time trusted now, if any was measured.
    pub fn base_rtt(&self) -> Option<Duration> {
        let b = self.epoch_min.min(self.prev_min);
        (b != Duration::MAX).then_some(b)
    }

    /// Records that a request sent `rtt` ago was answered; `outstanding` requests (this one
    /// excluded) are still in flight. Samples taken while the window was not full say nothing
    /// about the queue and only feed the base RTT.
    pub fn on_answer(&mut self, rtt: Duration, outstanding: usize, now: Instant) {
        if now.duration_since(self.epoch_start) >= EPOCH {
            self.prev_min = self.epoch_min;
            self.epoch_min = Duration::MAX;
            self.epoch_start = now;
        }
        self.epoch_min = self.epoch_min.min(rtt);
        self.round_min = self.round_min.min(rtt);
        self.round_samples += 1;
        // Whether the window, not the lack of wanted blocks, limits the transfer: it was full
        // right after some refill of this round. Judged over the round, not at its last
        // answer: the caller refills once per read, and a read brings several blocks, so at
        // any one answer the window may be several blocks short of full (judging at the
        // last answer held it at 7-11 blocks for ~30 s against Transmission).
        self.round_full |= outstanding + 1 >= self.depth;
        if self.round_samples < self.depth {
            return;
        }
        // One round done: judge it by its least-delayed answer, which filters out the
        // scheduling jitter of either end.
        let rtt = self.round_min;
        let samples = self.round_samples;
        self.round_min = Duration::MAX;
        self.round_samples = 0;
        let limited = std::mem::take(&mut self.round_full);
        let rate = samples as f64 / now.duration_since(self.round_end).as_secs_f64().max(1e-6);
        let prev_rate = std::mem::replace(&mut self.prev_rate, rate);
        self.round_end = now;
        if let Some(p) = self.probe.take() {
            self.judge_probe(p, rate);
            return;
        }
        if std::mem::take(&mut self.after_probe) {
            return;
        }
        if let Some(s) = self.shrunk.take() {
            if not_our_delay(s, rtt, rate, self.base_rtt()) {
                // The delay is the remote's way of serving, not a queue of ours: adopt it as
                // the base and find the window anew from there.
                self.epoch_min = rtt;
                self.prev_min = rtt;
                self.slow_start = true;
            }
        }
        let Some(base) = self.base_rtt() else { return };
        let queued = self.depth as f64 * (1.0 - base.as_secs_f64() / rtt.as_secs_f64().max(1e-9));
        tracing::trace!(
            depth = self.depth,
            ?rtt,
            ?base,
            queued,
            rate,
            limited,
            "window round"
        );
        if queued > BETA {
            // Drain half the excess per round: a deep queue (a burst of background requests,
            // a new bottleneck) goes within a few rounds, without oscillating.
            self.slow_start = false;
            let excess = ((queued - (ALPHA + BETA) / 2.0) / 2.0).ceil() as usize;
            let before = self.depth;
            self.depth = self.depth.saturating_sub(excess.max(1)).max(MIN_DEPTH);
            self.shrunk = (self.depth < before).then(|| Shrink {
                rtt,
                rate,
                fraction: (before - self.depth) as f64 / before as f64,
            });
        } else if queued < ALPHA && limited {
            if self.slow_start && queued < 1.0 {
                self.depth = (self.depth * 2).min(self.max);
            } else {
                // Vegas' one block a round takes a burst-serving remote tens of seconds to
                // ramp; a probe that pays off goes on doubling.
                self.slow_start = false;
                self.depth = (self.depth + 1).min(self.max);
                self.probe(rate.max(prev_rate));
            }
        } else if queued >= 1.0 {
            self.slow_start = false;
            if limited {
                self.probe(rate.max(prev_rate));
            }
        }
    }

    /// The delay says the window holds about as much queue as it should, but a delay estimate
    /// cannot tell a full pipe from jitter: a remote whose answer time varies by more than a
    /// block time (any stock client on a fast link; Transmission by hundreds of milliseconds)
    /// shows a block or two of "queue" at any depth. So the window grows by a step and the
    /// next round shows whether the delivery rate grew with it (BBR's bandwidth probe): if it
    /// did, the window and not the link was the limit, and the next probe may go on at once
    /// with a doubled step; if not, the growth is undone and the next probe waits.
    fn probe(&mut self, rate: f64) {
        if self.probe_in > 0 {
            self.probe_in -= 1;
            return;
        }
        if self.depth >= self.max {
            return;
        }
        let step = ((self.depth as f64 * self.probe_step).ceil() as usize).max(1);
        self.probe = Some(Probe {
            depth: self.depth,
            rate,
        });
        self.depth = (self.depth + step).min(self.max);
    }

    /// Keeps a probe's growth if the round after it delivered at least half the rate growth a
    /// window-limited transfer would show, and undoes it otherwise.
    fn judge_probe(&mut self, p: Probe, rate: f64) {
        let gain = (self.depth - p.depth) as f64 / p.depth as f64;
        tracing::trace!(
            from = p.depth,
            to = self.depth,
            before = p.rate,
            rate,
            "window probe"
        );
        if rate >= p.rate * (1.0 + gain / 2.0) {
            self.probe_step = (self.probe_step * 2.0).min(1.0);
            self.probe_wait = PROBE_WAIT;
            self.probe_in = 0;
        } else {
            self.depth = p.depth;
            self.after_probe = true;
            self.probe_step = PROBE_STEP;
            self.probe_in = self.probe_wait;
            self.probe_wait = (self.probe_wait * 2).min(PROBE_WAIT_MAX);
        }
    }
}

/// Whether the round after shrink `s` shows that the delay it shrank for was not a queue of
/// ours. Our own queue shrinks with the window: the next round's delay drops (by about the
/// fraction removed) and the delivery rate holds, since the link stays busy. A remote that
/// serves requests in bursts (Transmission answers about every 500 ms) or a queue of others'
/// traffic keeps the delay; only in the first case does the rate fall with the window, since
/// then the window, not the link, limits the transfer. Shrinking further would then starve
/// the connection down to [`MIN_DEPTH`] blocks per burst.
fn not_our_delay(s: Shrink, rtt: Duration, rate: f64, base: Option<Duration>) -> bool {
    let Some(base) = base else { return false };
    let excess_before = s.rtt.saturating_sub(base).as_secs_f64();
    let delay_kept = rtt.as_secs_f64() > s.rtt.as_secs_f64() - s.fraction / 2.0 * excess_before;
    let rate_fell = rate < s.rate * (1.0 - s.fraction / 2.0);
    delay_kept && rate_fell
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link of `rate` blocks/s and propagation `prop`, serving in order: drives the window
    /// and returns where it settles.
    fn settle(rate: f64, prop: Duration, max: usize) -> usize {
        let t0 = Instant::now();
        let mut w = RequestWindow::new(max, t0);
        let block = Duration::from_secs_f64(1.0 / rate);
        // Times at which outstanding requests will be answered, in order.
        let mut clock = Duration::ZERO;
        let mut link_free = Duration::ZERO;
        let mut inflight: std::collections::VecDeque<(Duration, Duration)> = Default::default();
        for _ in 0..20_000 {
            while inflight.len() < w.depth() {
                // Request reaches the remote after prop/2, leaves the link when it is free.
                let start = (clock + prop / 2).max(link_free);
                link_free = start + block;
                inflight.push_back((clock, link_free + prop / 2));
            }
            let (sent, done) = inflight.pop_front().unwrap();
            clock = clock.max(done);
            w.on_answer(clock - sent, inflight.len(), t0 + clock);
        }
        w.depth()
    }

    /// A remote that serves in bursts: every `period` it sends, at `rate` blocks/s, what was
    /// asked of it until then (Transmission does so about every 500 ms). Returns where the
    /// window settles and the blocks per second it achieved over the last half of the run.
    fn settle_bursty(rate: f64, prop: Duration, period: Duration, max: usize) -> (usize, f64) {
        let t0 = Instant::now();
        let mut w = RequestWindow::new(max, t0);
        let block = Duration::from_secs_f64(1.0 / rate);
        let (mut clock, mut link_free) = (Duration::ZERO, Duration::ZERO);
        let mut inflight: std::collections::VecDeque<(Duration, Duration)> = Default::default();
        let n = 40_000;
        let mut half = Duration::ZERO;
        for k in 0..n {
            while inflight.len() < w.depth() {
                let arrives = clock + prop / 2;
                let tick = period * (arrives.as_nanos().div_ceil(period.as_nanos()) as u32);
                let start = tick.max(link_free);
                link_free = start + block;
                inflight.push_back((clock, link_free + prop / 2));
            }
            let (sent, done) = inflight.pop_front().unwrap();
            clock = clock.max(done);
            if k == n / 2 {
                half = clock;
            }
            w.on_answer(clock - sent, inflight.len(), t0 + clock);
        }
        (w.depth(), (n / 2) as f64 / (clock - half).as_secs_f64())
    }

    /// A remote whose answers jitter: each request waits `service` plus up to `jitter` (a
    /// deterministic pseudo-random share) at the remote before it is sent at `rate` blocks/s,
    /// in order. Returns the window after `answers` answers and the blocks per second achieved
    /// over the last half of them.
    fn settle_jittery(
        rate: f64,
        service: Duration,
        jitter: Duration,
        max: usize,
        answers: usize,
    ) -> (usize, f64) {
        let t0 = Instant::now();
        let mut w = RequestWindow::new(max, t0);
        let block = Duration::from_secs_f64(1.0 / rate);
        let (mut clock, mut link_free) = (Duration::ZERO, Duration::ZERO);
        let mut inflight: std::collections::VecDeque<(Duration, Duration)> = Default::default();
        let mut rng = Jitter(0x9e37_79b9_7f4a_7c15);
        let mut half = Duration::ZERO;
        for k in 0..answers {
            while inflight.len() < w.depth() {
                let ready = clock + service + jitter.mul_f64(rng.share());
                let start = ready.max(link_free);
                link_free = start + block;
                inflight.push_back((clock, link_free));
            }
            let (sent, done) = inflight.pop_front().unwrap();
            clock = clock.max(done);
            if k == answers / 2 {
                half = clock;
            }
            w.on_answer(clock - sent, inflight.len(), t0 + clock);
        }
        (
            w.depth(),
            (answers / 2) as f64 / (clock - half).as_secs_f64(),
        )
    }

    /// A remote that serves in bursts at uneven intervals, `period` plus up to `jitter`
    /// (Transmission 3.00's pulse is 400-620 ms seen from the client): at each tick it sends,
    /// at `rate` blocks/s, what was asked of it until then. Returns the simulated seconds
    /// until the window first reached `target` blocks, if it did within `answers` answers.
    fn time_to_depth_uneven_bursts(
        rate: f64,
        period: Duration,
        jitter: Duration,
        target: usize,
        answers: usize,
    ) -> Option<f64> {
        let t0 = Instant::now();
        let mut w = RequestWindow::new(4096, t0);
        let block = Duration::from_secs_f64(1.0 / rate);
        let (mut clock, mut link_free) = (Duration::ZERO, Duration::ZERO);
        let mut inflight: std::collections::VecDeque<(Duration, Duration)> = Default::default();
        let mut rng = Jitter(0x9e37_79b9_7f4a_7c15);
        // The remote's ticks, generated as far as needed.
        let mut ticks: std::collections::VecDeque<Duration> = Default::default();
        let mut last_tick = Duration::ZERO;
        for k in 0..answers {
            // The client reads up to 4 blocks a read and asks for more after each read.
            while k % 4 == 0 && inflight.len() < w.depth() {
                let arrives = clock + Duration::from_micros(100);
                while ticks.back().is_none_or(|&t| t < arrives) {
                    last_tick += period + jitter.mul_f64(rng.share());
                    ticks.push_back(last_tick);
                }
                while ticks.front().is_some_and(|&t| t < arrives) {
                    ticks.pop_front();
                }
                let start = ticks[0].max(link_free);
                link_free = start + block;
                inflight.push_back((clock, link_free + Duration::from_micros(100)));
            }
            let (sent, done) = inflight.pop_front().unwrap();
            clock = clock.max(done);
            w.on_answer(clock - sent, inflight.len(), t0 + clock);
            if w.depth() >= target {
                return Some(clock.as_secs_f64());
            }
        }
        None
    }

    /// A deterministic share in [0, 1) per call (xorshift), for simulated jitter.
    struct Jitter(u64);

    impl Jitter {
        fn share(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % 1000) as f64 / 1000.0
        }
    }

    #[test]
    fn uneven_bursts_do_not_hold_the_window_at_a_few_blocks() {
        // 1 Gbit/s (7630 blocks/s) from a remote that answers every 400-600 ms, read 4 blocks
        // at a time: the window, not the link, limits the transfer far beyond 256 blocks, so
        // it must get there in a few seconds. It took 28.7 s (the real trace: 7-11 blocks for
        // ~32 s), since a round's last answer rarely found the window full; then 14 s with
        // Vegas' one block a round.
        let t = time_to_depth_uneven_bursts(
            7630.0,
            Duration::from_millis(400),
            Duration::from_millis(200),
            256,
            200_000,
        );
        assert!(
            t.is_some_and(|t| t <= 10.0),
            "reached 256 blocks after {t:?} s"
        );
    }

    #[test]
    fn jittery_round_trips_do_not_stall_the_window_below_the_pipe() {
        // 1 Gbit/s (7630 blocks/s) behind a 4-6 ms answer time: about 40 blocks fill the
        // pipe, but the jitter alone shows a block or two of "queue" at any depth. The delay
        // estimate alone held 0.78 of the link (5915 blocks/s).
        let ms = Duration::from_millis;
        let (d, rate) = settle_jittery(7630.0, ms(4), ms(2), 256, 4_000);
        assert!(d >= 20, "depth {d}");
        assert!(rate >= 0.8 * 7630.0, "{rate:.0} blocks/s");
    }

    #[test]
    fn a_remote_serving_in_bursts_does_not_shrink_the_window() {
        // 1 Gbit/s (7630 blocks/s) but answers only every 500 ms: the window, not the link,
        // limits the transfer, so it must grow to its ceiling (it used to fall to MIN_DEPTH,
        // 4 blocks a second).
        let (d, rate) = settle_bursty(
            7630.0,
            Duration::from_micros(200),
            Duration::from_millis(500),
            256,
        );
        assert!(d >= 200, "depth {d}");
        assert!(rate >= 350.0, "{rate:.0} blocks/s");
        // 100 Mbit/s (763 blocks/s): a period needs 381 blocks; beyond that the link is the
        // limit, and more depth is only queue.
        let (d, rate) = settle_bursty(
            763.0,
            Duration::from_micros(200),
            Duration::from_millis(500),
            4096,
        );
        assert!((300..=1200).contains(&d), "depth {d}");
        assert!(rate >= 600.0, "{rate:.0} blocks/s");
    }

    #[test]
    fn lan_settles_at_a_few_blocks() {
        // 100 Mbit/s (763 blocks/s), 0.2 ms: the link needs about one block in flight.
        let d = settle(763.0, Duration::from_micros(200), 256);
        assert!((MIN_DEPTH..=7).contains(&d), "depth {d}");
    }

    #[test]
    fn long_fat_path_grows_to_the_bandwidth_delay_product() {
        // 100 Mbit/s, 50 ms: 38 blocks fill the path.
        let d = settle(763.0, Duration::from_millis(50), 256);
        assert!((38..=48).contains(&d), "depth {d}");
    }

    #[test]
    fn respects_its_maximum() {
        assert_eq!(settle(7630.0, Duration::from_millis(50), 64), 64);
        assert_eq!(RequestWindow::new(0, Instant::now()).depth(), MIN_DEPTH);
    }

    #[test]
    fn a_lasting_queue_shrinks_the_window_then_becomes_the_base() {
        let t0 = Instant::now();
        let mut w = RequestWindow::new(256, t0);
        let ms = Duration::from_millis;
        for k in 0..100 {
            w.on_answer(ms(1), w.depth(), t0 + ms(k));
        }
        assert!(w.depth() >= 64, "grew to {}", w.depth());
        // Answers now take 20 ms: a queue of others' traffic we cannot drain. The window
        // backs off to the few blocks that stay within BETA.
        for k in 0..600 {
            w.on_answer(ms(20), w.depth(), t0 + ms(100 + k));
        }
        assert!(w.depth() <= 5, "still {} deep", w.depth());
        assert_eq!(w.base_rtt(), Some(ms(1)));
        // Two epochs later the 20 ms path is the base.
        for k in 0..250 {
            w.on_answer(ms(20), w.depth(), t0 + ms(700 + 100 * k));
        }
        assert_eq!(w.base_rtt(), Some(ms(20)));
    }
}
