//! Issue 12's fuzz target for profile bundles (`.vmtp`): mutations of a fitted bundle, raw
//! and behind a checksum made to match, for a bounded time (see `vmt_formats::fuzz`). No input
//! may panic, every refusal names the file, and none may take more memory than its size
//! justifies.

use vmt_formats::fuzz::{fuzz, scratch_dir, sealed, PeakAlloc, Target};
use vmt_model::profile::{Bundle, BundleParams};
use vmt_model::synth::{SynthImage, SynthParams};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// The file's bytes, what decoding them can fairly make (a block entry of a few encoded bytes
/// is larger in memory, vectors double as they grow), and a margin for a first allocation of
/// a claimed length.
fn bound(len: usize) -> usize {
    64 * len + (4 << 20)
}

#[test]
fn r12_fuzz_bundle_files() {
    let img = SynthImage::new(SynthParams::new(4 << 20, 3));
    let traces: Vec<(String, _)> = img
        .corpus(2, 1, 3)
        .into_iter()
        .enumerate()
        .map(|(i, t)| (format!("t{i}.vmtrace"), t))
        .collect();
    let bundle = BundleParams::new(4096)
        .check()
        .unwrap()
        .fit(&traces, |_| {})
        .unwrap();
    let dir = scratch_dir();
    let path = dir.path().join("fuzz.vmtp");
    bundle.save(&path).unwrap();
    let seeds = vec![std::fs::read(&path).unwrap()];
    for (name, reseal) in [("bundle", false), ("bundle-sealed", true)] {
        let target = Target {
            name,
            seeds: &seeds,
            memory: &bound,
        };
        let prepare = |b: Vec<u8>| if reseal { sealed(b) } else { b };
        let outcome = fuzz(target, prepare, |input| {
            std::fs::write(&path, input).unwrap();
            match Bundle::load(&path) {
                Ok(_) => Ok(()),
                Err(e) => {
                    let message = e.to_string();
                    assert!(message.contains("fuzz.vmtp"), "unnamed: {message}");
                    Err(message)
                }
            }
        });
        assert!(outcome.inputs > 100, "{outcome:?}");
    }
}
