//! The embedded demo (`vmt-run demo`): the whole pipeline in one process and a temp dir.
//!
//! 1. build a small ext4 appliance with `mkfs.ext4 -d` ([`build_demo`]);
//! 2. record runs of its four tasks, with varied inputs, and two sessions, through FUSE;
//! 3. train a bundle on the runs and the first session;
//! 4. seed the image on loopback with an upload cap, mount a `markov` client, and run a live
//!    session of tasks (a loop mount of the served image, think time between tasks);
//! 5. replay the held-out session through fresh `demand`, `profile` and `markov` mounts, and
//!    time `full` (download everything, then replay locally), for a comparison table.
//!
//! Everything is measured for real on one machine; only the link is a rate limit.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Runtime, RuntimeParams, Status};
use vmt_appliance::ext4::{build_demo, DemoAppliance, LoopMount};
use vmt_appliance::replay::{replay, ReplayParams};
use vmt_formats::image::ImageId;
use vmt_formats::trace::{Trace, TraceKind};
use vmt_fs::{Recording, RecordingParams};
use vmt_model::profile::{Bundle, BundleParams};
use vmt_model::scheduler::Strategy;
use vmt_swarm::{Engine, EngineConfig, Storage, Torrent};

/// Upload cap of the demo seeder: 8 MiB/s (67 Mbit/s), so the 96 MiB image takes ~12 s to fetch whole.
pub const DEMO_RATE: u64 = 8 << 20;
/// Think time between the tasks of a session.
pub const DEMO_THINK: Duration = Duration::from_secs(2);
const PIECE: u32 = 256 << 10;
/// The two sessions: the first is trained on, the second held out for the table.
const SESSIONS: [&[&str]; 2] = [
    &["shell", "python", "database", "compile"],
    &["shell", "compile", "python", "database"],
];

/// One row of the comparison table.
#[derive(Clone, Debug)]
pub struct DemoRow {
    /// Strategy.
    pub strategy: Strategy,
    /// Time to finish the session, seconds.
    pub completion_s: f64,
    /// Completion minus the session's own duration and think time, seconds.
    pub stall_s: f64,
}

/// What the demo reports as it goes.
pub trait DemoUi: Send + Sync {
    /// A step starts or finishes.
    fn step(&self, line: &str);
    /// Live status of the mounted client during the live session.
    fn live(&self, status: &Status, task: &str);
}

/// Why the demo failed.
pub type DemoError = Box<dyn std::error::Error + Send + Sync>;

fn pick(files: &[String], run: u64) -> Vec<String> {
    // Vary inputs per run: skip a seeded ~15% of the task's own files (the first nine files
    // are the boot set every task reads).
    files
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < 9 || (i.wrapping_mul(2_654_435_761) as u64 ^ run) % 7 != 0)
        .map(|(_, f)| f.clone())
        .collect()
}

fn record_runs(
    app: &DemoAppliance,
    id: ImageId,
    dir: &Path,
    ui: &dyn DemoUi,
) -> Result<Vec<(String, Trace)>, DemoError> {
    let out = dir.join("traces");
    let mut traces = Vec::new();
    let params = |label: &str, kind| RecordingParams {
        image: app.image.clone(),
        image_id: id,
        out_dir: out.clone(),
        label: label.to_string(),
        kind,
        first_task: label.to_string(),
        mountpoint: None,
        threads: 4,
        access: vmt_fs::Access::Owner,
    };
    for task in &app.tasks {
        for run in 1..=3 {
            let rec = Recording::start(params(task.name, TraceKind::Task))?;
            let lm = LoopMount::new(rec.served_path(), &dir.join("loop"))?;
            lm.read_files(&pick(&task.files, run))?;
            lm.unmount()?;
            let path = rec.trace_path().display().to_string();
            traces.push((path, rec.finish()?));
        }
        ui.step(&format!("recorded 3 runs of task {}", task.name));
    }
    for (i, order) in SESSIONS.iter().enumerate() {
        let mut p = params("session", TraceKind::Session);
        p.first_task = order[0].to_string();
        let rec = Recording::start(p)?;
        let lm = LoopMount::new(rec.served_path(), &dir.join("loop"))?;
        for (k, name) in order.iter().enumerate() {
            rec.mark(name)?;
            let task = app
                .tasks
                .iter()
                .find(|t| t.name == *name)
                .expect("known task");
            lm.read_files(&pick(&task.files, 10 + i as u64 * 5 + k as u64))?;
        }
        lm.unmount()?;
        let path = rec.trace_path().display().to_string();
        traces.push((path, rec.finish()?));
        ui.step(&format!(
            "recorded session {}: {}",
            i + 1,
            order.join(" → ")
        ));
    }
    Ok(traces)
}

struct Seeder {
    engine: Engine,
    addr: SocketAddr,
}

async fn start_seeder(image: &Path, torrent: &Torrent) -> Result<Seeder, DemoError> {
    let storage = Storage::open_seed(image, torrent, false)?;
    let listener = Engine::bind("127.0.0.1:0".parse()?).await?;
    let addr = listener.local_addr()?;
    let engine = Engine::start(
        torrent.clone(),
        storage,
        Some(listener),
        EngineConfig {
            upload_limit: Some(DEMO_RATE),
            ..Default::default()
        },
    );
    Ok(Seeder { engine, addr })
}

fn client_params(
    dir: &Path,
    name: &str,
    torrent: &Path,
    bundle: &Path,
    strategy: Strategy,
    profile: Option<String>,
    seeder: SocketAddr,
) -> Result<RuntimeParams, DemoError> {
    let mountpoint = dir.join(format!("{name}-mnt"));
    std::fs::create_dir_all(&mountpoint)?;
    Ok(RuntimeParams {
        dht: None,
        encryption: vmt_swarm::Encryption::default(),
        torrent: torrent.to_owned(),
        bundle: Some(bundle.to_owned()),
        strategy,
        profile,
        oracle_trace: None,
        mountpoint,
        data_dir: dir.join(format!("{name}-data")),
        peers: vec![seeder],
        upload: false,
        urgent: false,
        download_limit: None,
        upload_limit: None,
        web_seeds: Vec::new(),
        web_seed_limit: None,
        rechoke_interval: crate::DEFAULT_RECHOKE,
        busy_backlog: crate::DEFAULT_BUSY_BACKLOG,
        dial_from: None,
        window_bytes: crate::DEFAULT_WINDOW,
        threads: 4,
        access: vmt_fs::Access::Owner,
        read_timeout: None,
    })
}

/// Runs the demo in `dir` (see the module doc) and returns the comparison table.
pub async fn run(dir: &Path, ui: &(dyn DemoUi + 'static)) -> Result<Vec<DemoRow>, DemoError> {
    let app = {
        let d = dir.to_owned();
        tokio::task::spawn_blocking(move || build_demo(&d)).await??
    };
    let id = ImageId::of_file(&app.image, |_| {})?;
    ui.step(&format!(
        "built a {} MiB ext4 appliance with mkfs.ext4 -d ({} tasks)",
        id.size >> 20,
        app.tasks.len()
    ));
    let traces = {
        let (app, d) = (app.clone(), dir.to_owned());
        // The UI is only borrowed here: record synchronously on this thread's blocking pool.
        tokio::task::block_in_place(|| record_runs(&app, id, &d, ui))?
    };
    let (held_out, training) = traces.split_last().expect("two sessions recorded");
    let bundle_path = dir.join("demo.vmtp");
    let bundle: Bundle = BundleParams::new(4096).check()?.fit(training, |_| {})?;
    bundle.save(&bundle_path)?;
    ui.step(&format!(
        "trained {} profiles ({}) on {} traces",
        bundle.profiles.len(),
        bundle
            .profiles
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        training.len()
    ));
    let torrent = Torrent::create(&app.image, PIECE, Vec::new()).await?;
    let torrent_path = dir.join("demo.torrent");
    torrent.save(&torrent_path)?;
    let seeder = start_seeder(&app.image, &torrent).await?;
    ui.step(&format!(
        "seeding on {} at {} Mbit/s",
        seeder.addr,
        DEMO_RATE * 8 / 1_000_000
    ));

    // The live session: a user runs tasks on the appliance while it streams.
    let live = Runtime::start(
        client_params(
            dir,
            "live",
            &torrent_path,
            &bundle_path,
            Strategy::Markov,
            None,
            seeder.addr,
        )?,
        None,
    )
    .await?;
    let served = live.served_path().to_owned();
    let (tx, mut rx) = tokio::sync::watch::channel(String::from("mount"));
    let session = {
        let (app, loop_dir) = (app.clone(), dir.join("live-loop"));
        tokio::task::spawn_blocking(move || -> Result<(), DemoError> {
            let lm = LoopMount::new(&served, &loop_dir)?;
            for (k, name) in SESSIONS[1].iter().enumerate() {
                if k > 0 {
                    let _ = tx.send(format!("think before {name}"));
                    std::thread::sleep(DEMO_THINK);
                }
                let _ = tx.send(name.to_string());
                let task = app
                    .tasks
                    .iter()
                    .find(|t| t.name == *name)
                    .expect("known task");
                lm.read_files(&task.files)?;
            }
            lm.unmount()?;
            Ok(())
        })
    };
    let started = Instant::now();
    tokio::pin!(session);
    let result = loop {
        tokio::select! {
            r = &mut session => break r,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let task = rx.borrow_and_update().clone();
                ui.live(&live.status(), &task);
            }
        }
    };
    result??;
    let st = live.shutdown().await?;
    ui.step(&format!(
        "live session done in {:.1} s: {} reads, {} waited ({:.2} s of stalls), {} profile switches",
        started.elapsed().as_secs_f64(),
        st.read_hits + st.read_misses,
        st.read_misses,
        st.stalls.total_s,
        st.profile_switches.len().saturating_sub(1)
    ));

    // The table: the held-out session replayed through fresh clients.
    let trace = &held_out.1;
    let think = ReplayParams {
        think: DEMO_THINK,
        ..ReplayParams::default()
    };
    let mut rows = Vec::new();
    let first_task = trace.segments().next().map(|s| s.task.to_string());
    for strategy in [Strategy::Demand, Strategy::Profile, Strategy::Markov] {
        let profile = (strategy == Strategy::Profile)
            .then(|| {
                first_task.clone().and_then(|t| {
                    bundle
                        .profiles
                        .iter()
                        .find(|p| p.majority_label() == t)
                        .map(|p| p.name.clone())
                })
            })
            .flatten();
        let rt = Runtime::start(
            client_params(
                dir,
                strategy.name(),
                &torrent_path,
                &bundle_path,
                strategy,
                profile,
                seeder.addr,
            )?,
            None,
        )
        .await?;
        let (t, f) = (trace.clone(), rt.served_path().to_owned());
        let rep = tokio::task::spawn_blocking(move || replay(&t, &f, think)).await??;
        rt.shutdown().await?;
        ui.step(&format!(
            "replayed the held-out session with {strategy}: {:.2} s ({:.2} s stalled)",
            rep.completion_s, rep.stall_s
        ));
        rows.push(DemoRow {
            strategy,
            completion_s: rep.completion_s,
            stall_s: rep.stall_s,
        });
    }
    // full: fetch everything over the same link, then run locally.
    let start = Instant::now();
    let out = dir.join("full.img");
    let (storage, _) = Storage::open_download(&out, &torrent, &dir.join("full.vmtbits"))?;
    let fetcher = Engine::start(
        torrent.clone(),
        storage,
        None,
        EngineConfig {
            peers: vec![seeder.addr],
            upload: false,
            ..Default::default()
        },
    );
    fetcher.wait_complete().await?;
    fetcher.shutdown().await?;
    let download_s = start.elapsed().as_secs_f64();
    let (t, f) = (trace.clone(), out.clone());
    let local = tokio::task::spawn_blocking(move || replay(&t, &f, think)).await??;
    ui.step(&format!(
        "full download took {download_s:.2} s, then the session ran locally"
    ));
    rows.insert(
        0,
        DemoRow {
            strategy: Strategy::Full,
            completion_s: download_s + local.completion_s,
            stall_s: download_s + local.stall_s,
        },
    );
    seeder.engine.shutdown().await?;
    Ok(rows)
}

/// Where the demo keeps its files when the caller has no preference.
pub fn default_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("vmt-demo-").tempdir()
}

/// The demo's working directory: the one asked for (created, and kept afterwards), or a temp
/// dir removed when this is dropped.
pub struct Workdir {
    path: std::path::PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Workdir {
    /// `keep` (created if missing), or a fresh temp dir.
    pub fn new(keep: Option<std::path::PathBuf>) -> Result<Workdir, DemoError> {
        match keep {
            Some(path) => {
                std::fs::create_dir_all(&path)
                    .map_err(|e| format!("creating {}: {e}", path.display()))?;
                Ok(Workdir { path, _temp: None })
            }
            None => {
                let temp = default_dir().map_err(|e| format!("creating a temp dir: {e}"))?;
                Ok(Workdir {
                    path: temp.path().to_owned(),
                    _temp: Some(temp),
                })
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The comparison table the demo ends with: each strategy's completion and stall time on the
/// held-out session, and its speed-up over `full`.
pub fn table(rows: &[DemoRow]) -> String {
    let full = rows
        .iter()
        .find(|r| r.strategy == Strategy::Full)
        .map_or(f64::NAN, |r| r.completion_s);
    let mut out = format!(
        "held-out session ({} s think between tasks), {} Mbit/s seeder:\n\n{:<10} {:>14} {:>10} {:>12}\n",
        DEMO_THINK.as_secs(),
        DEMO_RATE * 8 / 1_000_000,
        "strategy",
        "completion s",
        "stall s",
        "vs full"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<10} {:>14.2} {:>10.2} {:>11.2}x\n",
            r.strategy.name(),
            r.completion_s,
            r.stall_s,
            full / r.completion_s
        ));
    }
    out
}
