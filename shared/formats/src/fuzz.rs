//! Bounded fuzzing of file readers as ordinary tests (a stable toolchain has no cargo-fuzz):
//! seeded mutations of valid files, each fed to a reader that must not panic, must refuse with
//! an error or accept, and must take no more memory than its input justifies.
//!
//! [`PeakAlloc`], installed as a test binary's global allocator, counts what the current
//! thread allocates, so [`fuzz`] checks every input's peak against the target's bound: a
//! reader that trusts a length inside a file is caught when it asks for the memory, before the
//! allocator fails. A run is deterministic (input `i` is the same on every machine) and
//! bounded: [`DEFAULT_BUDGET`] per target, or `VMT_FUZZ_SECS` seconds for a longer campaign.
//! A failing input is written to the temp directory and named in the failure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Time each target runs for unless `VMT_FUZZ_SECS` says otherwise.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(3);

/// Inputs each target tries at most within its time, so a fast machine does not spend its
/// whole budget on one target.
const MAX_INPUTS: u64 = 200_000;

thread_local! {
    /// Bytes this thread holds now, counted since the last [`measure`] (can go below zero when
    /// it frees what it held before).
    static HELD: Cell<isize> = const { Cell::new(0) };
    /// Most of [`HELD`] since the last [`measure`].
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting each thread's allocations for [`measure`].
pub struct PeakAlloc;

impl PeakAlloc {
    fn add(bytes: usize) {
        // `try_with`: the counters have no destructor, but a thread's last frees may come
        // after its thread-locals are gone.
        let _ = HELD.try_with(|held| {
            let now = held.get().saturating_add(bytes as isize);
            held.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    fn sub(bytes: usize) {
        let _ = HELD.try_with(|held| held.set(held.get().saturating_sub(bytes as isize)));
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        PeakAlloc::add(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        PeakAlloc::add(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        PeakAlloc::sub(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        PeakAlloc::add(new_size);
        PeakAlloc::sub(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result and the most memory the current thread held meanwhile
/// beyond what it held before. Needs [`PeakAlloc`] as the global allocator (panics without).
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    HELD.with(|h| h.set(0));
    PEAK.with(|p| p.set(0));
    drop(std::hint::black_box(Box::new([0u8; 64])));
    assert!(
        PEAK.with(Cell::get) >= 64,
        "fuzz::measure needs `#[global_allocator] static A: PeakAlloc = PeakAlloc;`"
    );
    PEAK.with(|p| p.set(0));
    let out = f();
    (out, PEAK.with(Cell::get).max(0) as usize)
}

/// Seeded mutations of valid inputs.
pub struct Mutator {
    rng: StdRng,
}

/// Byte values that mean something to the readers' parsers: bincode's varint tags (251-253
/// announce a u16, u32 or u64), bencode's structure and digits, text's line ends, extremes.
const SPECIAL_BYTES: [u8; 14] = [
    0, 1, 0x7f, 0x80, 0xfb, 0xfc, 0xfd, 0xfe, 0xff, b'd', b'e', b'9', b'\n', b',',
];

impl Mutator {
    /// A mutator whose choices follow from `seed` alone.
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The random source, for targets that build inputs of their own.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// `input` changed by one to four mutations: truncated, bits flipped, bytes set to random
    /// or meaningful values, an 8-byte field set to an extreme, a stretch deleted, duplicated
    /// or inserted at random; or now and then replaced by random bytes.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        if self.rng.gen_ratio(1, 50) {
            let len = self.rng.gen_range(0..4096);
            return (0..len).map(|_| self.rng.gen()).collect();
        }
        for _ in 0..self.rng.gen_range(1..=4) {
            self.mutate_once(&mut out);
        }
        out
    }

    fn mutate_once(&mut self, out: &mut Vec<u8>) {
        let len = out.len();
        if len == 0 {
            out.push(self.rng.gen());
            return;
        }
        let at = self.rng.gen_range(0..len);
        match self.rng.gen_range(0..8) {
            0 => out.truncate(at),
            1 => out[at] ^= 1 << self.rng.gen_range(0..8),
            2 => out[at] = self.rng.gen(),
            3 => out[at] = SPECIAL_BYTES[self.rng.gen_range(0..SPECIAL_BYTES.len())],
            4 => {
                let value =
                    [0, u64::MAX, 1 << 32, 1 << 62, u32::MAX as u64][self.rng.gen_range(0..5)];
                let end = (at + 8).min(len);
                out[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
            }
            5 => {
                let end = self.rng.gen_range(at..=len.min(at + 64));
                out.drain(at..end);
            }
            6 => {
                let end = self.rng.gen_range(at..=len.min(at + 64));
                let piece = out[at..end].to_vec();
                let to = self.rng.gen_range(0..=out.len());
                insert(out, to, &piece);
            }
            _ => {
                let piece: Vec<u8> = (0..self.rng.gen_range(1..16))
                    .map(|_| self.rng.gen())
                    .collect();
                insert(out, at, &piece);
            }
        }
    }
}

/// A directory for the files a target writes for each input: in memory (`/dev/shm`) where
/// there is one, as rewriting a file on a disk file system can cost milliseconds (ext4 flushes
/// a file truncated and rewritten when it is closed).
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vmt-fuzz-")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a temporary directory")
}

/// Puts `piece` into `out` at `at`.
fn insert(out: &mut Vec<u8>, at: usize, piece: &[u8]) {
    let tail = out.split_off(at);
    out.extend_from_slice(piece);
    out.extend_from_slice(&tail);
}

/// `bytes` as a vmt envelope whose declared body length and checksum match what follows its
/// header, so a mutation of the body reaches the decoder instead of the checksum. Bytes too
/// short for a header are returned as they are.
pub fn sealed(mut bytes: Vec<u8>) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    const HEADER_LEN: usize = crate::envelope::HEADER_LEN;
    if bytes.len() >= HEADER_LEN {
        let body_len = (bytes.len() - HEADER_LEN) as u64;
        bytes[52..60].copy_from_slice(&body_len.to_le_bytes());
        let sum = Sha256::digest(&bytes[HEADER_LEN..]);
        bytes[60..HEADER_LEN].copy_from_slice(&sum[..8]);
    }
    bytes
}

/// A reader to fuzz.
pub struct Target<'a> {
    /// Names the target in failures and in the files of failing inputs.
    pub name: &'a str,
    /// Valid inputs the mutations start from.
    pub seeds: &'a [Vec<u8>],
    /// Most memory the reader may take for an input of this many bytes.
    pub memory: &'a dyn Fn(usize) -> usize,
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// Inputs tried.
    pub inputs: u64,
    /// Inputs the reader accepted.
    pub accepted: u64,
    /// Most memory one input took.
    pub peak: usize,
}

/// Feeds mutations of `target`'s seeds (and `prepare`d forms of them, e.g. with a checksum
/// made to match so the mutation reaches the decoder behind it) to `read`, which returns
/// `Ok` for an accepted input and `Err(message)` for a refused one. Fails on a panic, an empty
/// error message, or an input that took more than the target's memory bound.
pub fn fuzz(
    target: Target<'_>,
    prepare: impl Fn(Vec<u8>) -> Vec<u8>,
    mut read: impl FnMut(&[u8]) -> Result<(), String>,
) -> Outcome {
    let budget = std::env::var("VMT_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_BUDGET, Duration::from_secs);
    let max_inputs = if budget > DEFAULT_BUDGET {
        u64::MAX
    } else {
        MAX_INPUTS
    };
    let start = Instant::now();
    let mut outcome = Outcome::default();
    let mut mutator = Mutator::new(0x766d_7431_3263);
    while outcome.inputs < max_inputs && start.elapsed() < budget {
        let seed = &target.seeds[outcome.inputs as usize % target.seeds.len()];
        let input = prepare(mutator.mutate(seed));
        let failing = FailingInput {
            name: target.name,
            index: outcome.inputs,
            input: &input,
        };
        let (result, peak) = measure(|| read(&input));
        let bound = (target.memory)(input.len());
        assert!(
            peak <= bound,
            "{}: input #{} of {} bytes took {peak} bytes (bound {bound})",
            target.name,
            outcome.inputs,
            input.len()
        );
        match result {
            Ok(()) => outcome.accepted += 1,
            Err(message) => assert!(!message.trim().is_empty(), "an empty error message"),
        }
        drop(failing);
        outcome.inputs += 1;
        outcome.peak = outcome.peak.max(peak);
    }
    eprintln!(
        "fuzz {}: {} inputs in {:.1?}, {} accepted, peak {} bytes",
        target.name,
        outcome.inputs,
        start.elapsed(),
        outcome.accepted,
        outcome.peak
    );
    outcome
}

/// Saves the input being read if the reader or a check on it panics.
struct FailingInput<'a> {
    name: &'a str,
    index: u64,
    input: &'a [u8],
}

impl Drop for FailingInput<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let path = std::env::temp_dir().join(format!("vmt-fuzz-{}-{}.bin", self.name, self.index));
        let saved = std::fs::write(&path, self.input).is_ok();
        eprintln!(
            "fuzz {}: input #{} ({} bytes){}",
            self.name,
            self.index,
            self.input.len(),
            if saved {
                format!(" saved to {}", path.display())
            } else {
                String::new()
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_sees_what_a_closure_allocates() {
        let (v, peak) = measure(|| vec![1u8; 1 << 20]);
        assert!(((1 << 20)..(2 << 20)).contains(&peak), "{peak}");
        drop(v);
        let ((), peak) = measure(|| drop(vec![0u64; 1000]));
        assert!(peak >= 8000, "{peak}");
    }

    #[test]
    fn mutations_are_deterministic_and_vary() {
        let seed = b"0123456789abcdef".repeat(4);
        let run = |s| {
            let mut m = Mutator::new(s);
            (0..100).map(|_| m.mutate(&seed)).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let distinct: std::collections::HashSet<_> = run(1).into_iter().collect();
        assert!(distinct.len() > 90, "{}", distinct.len());
    }
}
