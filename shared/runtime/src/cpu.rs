//! CPU use over a run: this process's CPU time, and how busy the whole machine was, so that a
//! run whose figures measure a saturated CPU rather than the links can be told apart.
//!
//! A run's mean hides its peaks: a crowd of 128 at K=10 averaged 51% busy while the machine sat
//! at 1.6-1.9 cores through its first minutes, when every trace's first reads come at once
//! (`datasets/results/scale/stop35/`). [`BusyWindows`] therefore also counts the seconds the
//! machine was saturated, and a run saturated for [`SATURATED_SHARE`] of its time is rejected
//! like one saturated on average.

use std::time::Instant;

/// A machine whose cores were busy at least this share of a run was the bottleneck: replays
/// then wait for a core, not for the links, and the run's figures are rejected.
pub const SATURATED: f64 = 0.9;

/// A run whose machine was saturated ([`SATURATED`]) for at least this share of its
/// [`BusyWindows`] was CPU-bound in its busiest phase: rejected too.
pub const SATURATED_SHARE: f64 = 0.05;

/// One reading of the counters; two make a [`CpuUse`].
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    at: Instant,
    /// This process's user + system time, seconds.
    process_s: f64,
    /// The machine's busy and total jiffies (every core), from `/proc/stat`.
    busy: u64,
    total: u64,
    load1: f64,
}

/// CPU use between two samples.
#[derive(Clone, Copy, Debug)]
pub struct CpuUse {
    /// Wall time, seconds.
    pub wall_s: f64,
    /// This process's CPU time, seconds.
    pub cpu_s: f64,
    /// Cores of the machine.
    pub cores: usize,
    /// `cpu_s / wall_s / cores`.
    pub cpu_frac: f64,
    /// The share of the machine's core time that was busy (every process).
    pub machine_busy: f64,
    /// 1-minute load average at the first and the second sample.
    pub load1: (f64, f64),
}

impl CpuSample {
    /// Reads the counters now (zeros where `/proc` cannot be read).
    pub fn now() -> CpuSample {
        // SAFETY: getrusage writes only into the struct it is given.
        let process_s = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            if libc::getrusage(libc::RUSAGE_SELF, &mut ru) == 0 {
                let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
                t(ru.ru_utime) + t(ru.ru_stime)
            } else {
                0.0
            }
        };
        let (busy, total) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().next().map(machine_jiffies))
            .unwrap_or((0, 0));
        let load1 = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        CpuSample {
            at: Instant::now(),
            process_s,
            busy,
            total,
            load1,
        }
    }

    /// CPU use from `self` to `later`.
    pub fn until(&self, later: &CpuSample) -> CpuUse {
        let wall_s = later.at.duration_since(self.at).as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu_s = later.process_s - self.process_s;
        CpuUse {
            wall_s,
            cpu_s,
            cores,
            cpu_frac: if wall_s > 0.0 {
                cpu_s / wall_s / cores as f64
            } else {
                0.0
            },
            machine_busy: busy_share((self.busy, self.total), (later.busy, later.total))
                .unwrap_or(0.0),
            load1: (self.load1, later.load1),
        }
    }
}

impl CpuUse {
    /// Whether the machine was the bottleneck ([`SATURATED`]).
    pub fn saturated(&self) -> bool {
        self.machine_busy >= SATURATED
    }
}

/// The machine's busy share window by window (one window per [`BusyWindows::tick`], about a
/// second apart), so that a saturated phase shows however idle the rest of the run was.
#[derive(Clone, Copy, Debug)]
pub struct BusyWindows {
    last: (u64, u64),
    /// Windows counted.
    pub windows: u32,
    /// Windows at least [`SATURATED`] busy.
    pub saturated: u32,
    /// The busiest window's share.
    pub peak: f64,
}

impl BusyWindows {
    /// Starts counting from `sample`.
    pub fn new(sample: &CpuSample) -> BusyWindows {
        BusyWindows {
            last: (sample.busy, sample.total),
            windows: 0,
            saturated: 0,
            peak: 0.0,
        }
    }

    /// Ends the window that began at the last sample; a window without elapsed jiffies (or
    /// without `/proc/stat`) is not counted.
    pub fn tick(&mut self, sample: &CpuSample) {
        let now = (sample.busy, sample.total);
        let Some(share) = busy_share(std::mem::replace(&mut self.last, now), now) else {
            return;
        };
        self.windows += 1;
        self.saturated += u32::from(share >= SATURATED);
        self.peak = self.peak.max(share);
    }

    /// The share of windows that were saturated (0 with none counted).
    pub fn saturated_share(&self) -> f64 {
        if self.windows == 0 {
            0.0
        } else {
            f64::from(self.saturated) / f64::from(self.windows)
        }
    }

    /// Whether the machine was saturated for [`SATURATED_SHARE`] of the windows.
    pub fn saturated_phase(&self) -> bool {
        self.windows > 0 && self.saturated_share() >= SATURATED_SHARE
    }
}

/// The busy share of the jiffies between two (busy, total) readings; `None` if none passed.
fn busy_share(from: (u64, u64), to: (u64, u64)) -> Option<f64> {
    let total = to.1.saturating_sub(from.1);
    (total > 0).then(|| to.0.saturating_sub(from.0) as f64 / total as f64)
}

/// Busy and total jiffies from `/proc/stat`'s `cpu` line: idle and iowait are not busy.
fn machine_jiffies(line: &str) -> (u64, u64) {
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_and_iowait_are_not_busy() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let (busy, total) = machine_jiffies("cpu  100 5 50 800 40 2 3 0 7 0");
        assert_eq!((busy, total), (160, 1000));
    }

    fn at(busy: u64, total: u64) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            process_s: 0.0,
            busy,
            total,
            load1: 0.0,
        }
    }

    #[test]
    fn a_saturated_phase_shows_in_the_windows_though_the_mean_is_low() {
        let mut w = BusyWindows::new(&at(0, 0));
        // Three saturated windows, then 17 nearly idle ones: the run's mean is 18.5% busy.
        let mut busy = 0;
        let mut total = 0;
        for share in [95, 98, 90].into_iter().chain([5; 17]) {
            busy += share;
            total += 100;
            w.tick(&at(busy, total));
        }
        assert_eq!((w.windows, w.saturated), (20, 3));
        assert!((w.peak - 0.98).abs() < 1e-9);
        assert!((w.saturated_share() - 0.15).abs() < 1e-9);
        assert!(w.saturated_phase());
        assert!(
            !at(0, 0).until(&at(busy, total)).saturated(),
            "the mean does not show it"
        );
        // A window in which no jiffy passed is not one.
        w.tick(&at(busy, total));
        assert_eq!(w.windows, 20);
    }

    #[test]
    fn one_busy_second_in_a_long_run_is_not_a_saturated_phase() {
        let mut w = BusyWindows::new(&at(0, 0));
        let (mut busy, mut total) = (0, 0);
        for share in [99].into_iter().chain([30; 99]) {
            busy += share;
            total += 100;
            w.tick(&at(busy, total));
        }
        assert_eq!(w.saturated, 1);
        assert!(!w.saturated_phase());
        assert!(
            !BusyWindows::new(&at(0, 0)).saturated_phase(),
            "nothing counted"
        );
    }

    #[test]
    fn spinning_shows_as_process_time() {
        // Spin until the process's CPU time shows 0.1 s, bounded by wall time: on a busy
        // machine 200 ms of spinning got less than 0.1 s of CPU, so a fixed spin was flaky.
        let a = CpuSample::now();
        let t = Instant::now();
        let mut x = 0u64;
        let u = loop {
            let spin = Instant::now();
            while spin.elapsed().as_millis() < 20 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            let u = a.until(&CpuSample::now());
            if u.cpu_s >= 0.1 || t.elapsed().as_secs() >= 20 {
                break u;
            }
        };
        assert!(x > 0 && u.cpu_s >= 0.1, "{u:?}");
        assert!(u.cpu_s <= u.wall_s * u.cores as f64 + 0.05, "{u:?}");
        assert!(u.machine_busy > 0.0 && u.machine_busy <= 1.0, "{u:?}");
    }
}
