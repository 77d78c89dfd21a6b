//! Hot paths of the online side: `Belief::observe` per read (goal: < 1 µs for 16 profiles, no
//! allocation) and `Scheduler::plan` (a window of 8 units: 256 KiB pieces, and 16 KiB verified
//! blocks; the benefit planner, the default, and the merge planner).
//!
//! Inputs are seeded synthetic traces: a 16-task image, a bundle fitted from 3 runs per task,
//! and the reads of held-out runs replayed in a loop. A counting global allocator checks that
//! neither call allocates before Criterion measures them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use vmt_formats::trace::Trace;
use vmt_model::markov::{Belief, BeliefParams};
use vmt_model::profile::BundleParams;
use vmt_model::scheduler::{PlanOrder, Scheduler, SchedulerParams, Strategy};
use vmt_model::synth::{SynthImage, SynthParams};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn setup() -> (vmt_model::profile::Bundle, Vec<(u64, u64)>) {
    let img = SynthImage::new(SynthParams::new(256 << 20, 16));
    let traces: Vec<(String, Trace)> = img.named_corpus(3, 0, 0);
    let bundle = BundleParams::new(4096)
        .check()
        .unwrap()
        .fit(&traces, |_| {})
        .unwrap();
    assert_eq!(bundle.profiles.len(), 16);
    let mut reads = Vec::new();
    let mut t0 = 0;
    for task in 0..16 {
        let run = img.task_run(task, 99, 1234 + task as u64);
        for r in &run.records {
            reads.push((r.offset, t0 + r.t_us));
        }
        t0 += run.duration_us() + 2_000_000;
    }
    (bundle, reads)
}

fn bench(c: &mut Criterion) {
    let (bundle, reads) = setup();
    let model = bundle.markov.compile(bundle.block_count(), &bundle.common);
    let mut belief = Belief::new(&model, BeliefParams::default());
    let blocks: Vec<(u32, u64)> = reads
        .iter()
        .map(|(off, t)| ((off / bundle.block_size as u64) as u32, *t))
        .collect();

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for &(b, t) in &blocks {
        belief.observe(&model, b, t);
    }
    let mut sched =
        Scheduler::new(&bundle, Strategy::Markov, SchedulerParams::new(256 << 10)).unwrap();
    let mut out = Vec::with_capacity(8);
    let after_setup = ALLOCATIONS.load(Ordering::Relaxed);
    for (i, &(off, t)) in reads.iter().enumerate() {
        sched.on_read(off, 4096, t);
        sched.plan(&|p: u32| p % 3 == (i % 3) as u32, 8, &mut out);
    }
    let plan_allocs = ALLOCATIONS.load(Ordering::Relaxed) - after_setup;
    let observe_allocs = {
        let start = ALLOCATIONS.load(Ordering::Relaxed);
        for &(b, t) in &blocks {
            belief.observe(&model, b, t + 1_000_000_000);
        }
        ALLOCATIONS.load(Ordering::Relaxed) - start
    };
    assert!(before > 0);
    assert_eq!(observe_allocs, 0, "Belief::observe allocated");
    assert_eq!(plan_allocs, 0, "Scheduler::on_read/plan allocated");
    // The same in 16 KiB units (a torrent with a block table): 16 times as many units.
    let mut blocks_sched =
        Scheduler::new(&bundle, Strategy::Markov, SchedulerParams::new(16 << 10)).unwrap();
    let start = ALLOCATIONS.load(Ordering::Relaxed);
    for (i, &(off, t)) in reads.iter().enumerate() {
        blocks_sched.on_read(off, 4096, t);
        blocks_sched.plan(&|p: u32| p % 3 == (i % 3) as u32, 8, &mut out);
    }
    let block_plan_allocs = ALLOCATIONS.load(Ordering::Relaxed) - start;
    assert_eq!(
        block_plan_allocs, 0,
        "Scheduler::on_read/plan in 16 KiB units allocated"
    );
    // The earlier merge planner, kept for comparison, stays allocation-free too.
    let mut merge_sched = Scheduler::new(
        &bundle,
        Strategy::Markov,
        SchedulerParams {
            order: PlanOrder::Merge,
            ..SchedulerParams::new(16 << 10)
        },
    )
    .unwrap();
    let start = ALLOCATIONS.load(Ordering::Relaxed);
    for (i, &(off, t)) in reads.iter().enumerate() {
        merge_sched.on_read(off, 4096, t);
        merge_sched.plan(&|p: u32| p % 3 == (i % 3) as u32, 8, &mut out);
    }
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed) - start,
        0,
        "the merge planner allocated"
    );
    println!(
        "{} reads, 16 profiles: no allocation in observe, on_read or plan",
        reads.len()
    );

    let mut i = 0usize;
    let mut t_shift = 0u64;
    c.bench_function("Belief::observe (16 profiles)", |b| {
        b.iter(|| {
            let (blk, t) = blocks[i];
            i += 1;
            if i == blocks.len() {
                i = 0;
                t_shift += 1_000_000_000;
            }
            black_box(belief.observe(&model, black_box(blk), t + t_shift))
        })
    });
    let mut j = 0usize;
    c.bench_function("Scheduler::plan (16 profiles, window 8)", |b| {
        b.iter(|| {
            j = (j + 1) % 3;
            sched.plan(&|p: u32| p % 3 == j as u32, 8, &mut out);
            black_box(out.len())
        })
    });
    c.bench_function(
        "Scheduler::plan (16 profiles, 16 KiB units, window 8)",
        |b| {
            b.iter(|| {
                j = (j + 1) % 3;
                blocks_sched.plan(&|p: u32| p % 3 == j as u32, 8, &mut out);
                black_box(out.len())
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
