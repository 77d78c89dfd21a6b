//! The committed real traces (`datasets/traces`): a one-task VM boot replayed through the model
//! trained on `datasets/traces/train` shows no task boundary, and the held-out sessions show
//! theirs.

use std::path::PathBuf;

use vmt_model::corpus::load_trace;
use vmt_model::profile::BundleParams;
use vmt_model::scheduler::{Scheduler, SchedulerParams, Strategy};

fn traces(dir: &str) -> Vec<(String, vmt_formats::trace::Trace)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../datasets/traces")
        .join(dir);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "vmtrace"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, load_trace(&p).unwrap())
        })
        .collect()
}

#[test]
fn a_real_vm_boot_shows_no_boundary_and_real_sessions_show_theirs() {
    let bundle = BundleParams::new(4096)
        .check()
        .unwrap()
        .fit(&traces("train"), |_| {})
        .unwrap();
    for (name, t) in traces("test") {
        let mut s =
            Scheduler::new(&bundle, Strategy::Markov, SchedulerParams::new(16 << 10)).unwrap();
        for r in &t.records {
            s.on_read(r.offset, r.len as u64, r.t_us);
        }
        let found = s.belief().unwrap().boundaries();
        // Task segments after the session's mount (`boot`, all common reads).
        let tasks = t.segments().filter(|s| s.task != "boot").count() as u32;
        // Sessions (`session-N`, `walk-N`) by their segments, not their names.
        if tasks > 1 {
            assert!(
                found >= 1 && found < tasks,
                "{name}: {found} boundaries, {tasks} tasks"
            );
        } else {
            assert_eq!(found, 0, "{name}: a one-task trace");
        }
    }
}
