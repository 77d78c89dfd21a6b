//! `vmt-run`: start an appliance from the swarm. Glue over `vmt` (the `shared` crate): parse
//! flags, build the tokio runtime, turn signals into a clean shutdown, draw progress, print
//! errors once.
//!
//! Subcommands: `seed` (serve an image), `fetch` (download it whole: the `full` strategy).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;
use vmt_formats::units::{self, Rate};
use vmt_swarm::{Engine, EngineConfig, Storage, SwarmStats, Torrent};

#[derive(Parser)]
#[command(
    name = "vmt-run",
    version,
    about = "Start virtual appliances on demand from a BitTorrent swarm",
    after_help = vmt_formats::units::HELP
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve an image to the swarm (creates its .torrent unless --torrent is given).
    Seed(SeedArgs),
    /// Download a whole image from the swarm, resuming a previous run.
    Fetch(FetchArgs),
    /// Mount an image from the swarm: the file appears at once, full size; reads of missing
    /// pieces wait for them while the profile-driven plan prefetches what comes next.
    Mount(MountArgs),
    /// The whole pipeline on a built-in demo appliance, in one process and a temp dir: build
    /// the image (mkfs.ext4 -d), record tasks, train a bundle, seed it with a bandwidth cap,
    /// mount a client and run a session through it live, then compare demand, profile and
    /// markov against full on a held-out session. Needs root (FUSE and loop mounts).
    Demo {
        /// Keep the demo's files in this directory instead of a removed temp dir.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
}

#[derive(Args)]
struct MountArgs {
    /// The image's .torrent (as written by `vmt-run seed`).
    #[arg(long, value_name = "T")]
    torrent: PathBuf,
    /// Profile bundle from `vmt-train fit` (needed by the profile and markov strategies).
    #[arg(long, value_name = "BUNDLE.vmtp")]
    bundle: Option<PathBuf>,
    /// Where the image file appears (an empty directory).
    #[arg(long, value_name = "DIR")]
    mountpoint: PathBuf,
    /// A peer to download from (repeatable).
    #[arg(long, value_name = "ADDR")]
    peer: Vec<SocketAddr>,
    /// Accept peers on this address (other clients can then fetch from us).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Local piece store and copy-on-write overlay [default: T's name + ".vmt-data" beside T].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Prefetch strategy: markov (belief over profiles, switching), profile (one fixed
    /// profile), stream (demand + rarest first), demand (no prefetch), oracle (a trace's own
    /// first-access order) [default: markov with --bundle, else stream].
    #[arg(long, value_name = "S")]
    strategy: Option<vmt_model::scheduler::Strategy>,
    /// For --strategy profile: the profile to follow (name or index) [default: the most likely
    /// first task].
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// For --strategy oracle: the trace whose first-access order is the plan.
    #[arg(long, value_name = "TRACE")]
    oracle_trace: Option<PathBuf>,
    /// Write the report (reads, misses, stalls, bytes per peer, profile switches) here as JSON
    /// on exit.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Serve the live status as JSON over HTTP on this address.
    #[arg(long, value_name = "ADDR")]
    status: Option<SocketAddr>,
    /// Never upload (client-server setting).
    #[arg(long)]
    no_upload: bool,
    /// Download limit, in bits (100Mbit) or bytes (10MiB/s; a bare number) per second;
    /// unlimited when absent.
    #[arg(long, value_name = "RATE")]
    download_limit: Option<Rate>,
    /// Upload limit, in bits (100Mbit) or bytes (10MiB/s; a bare number) per second;
    /// unlimited when absent.
    #[arg(long, value_name = "RATE")]
    upload_limit: Option<Rate>,
    /// Pieces handed to the engine as the plan at a time.
    #[arg(long, value_name = "N", default_value_t = 32)]
    window: usize,
    /// FUSE worker threads.
    #[arg(long, value_name = "N", default_value_t = 4)]
    threads: usize,
}

#[derive(Args)]
struct SeedArgs {
    /// The image file to serve (read-only).
    #[arg(long, value_name = "IMG")]
    image: PathBuf,
    /// Address to accept peers on, e.g. 0.0.0.0:6881.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Use this existing .torrent instead of creating one; the image is verified against it.
    #[arg(long, value_name = "T", conflicts_with_all = ["torrent_out", "piece_size", "tracker"])]
    torrent: Option<PathBuf>,
    /// Piece size of the created torrent: a power of two from 16KiB to 16MiB.
    #[arg(long, value_name = "SIZE", default_value = "256KiB", value_parser = units::parse_size_u32)]
    piece_size: u32,
    /// Where to write the created .torrent [default: IMG.torrent].
    #[arg(long, value_name = "T")]
    torrent_out: Option<PathBuf>,
    /// Announce URL to put in the created torrent (repeatable); the seeder announces to it.
    #[arg(long, value_name = "URL")]
    tracker: Vec<String>,
    /// Upload limit, in bits (100Mbit) or bytes (10MiB/s; a bare number) per second;
    /// unlimited when absent.
    #[arg(long, value_name = "RATE")]
    upload_limit: Option<Rate>,
    /// Peers uploaded to at once (rotating among interested peers).
    #[arg(long, value_name = "N", default_value_t = 4)]
    upload_slots: usize,
    /// Also dial this peer (repeatable): for leechers that cannot dial us, e.g. Transmission,
    /// which never dials 127.0.0.0/8 addresses.
    #[arg(long, value_name = "ADDR")]
    peer: Vec<SocketAddr>,
}

#[derive(Args)]
struct FetchArgs {
    /// The image's .torrent.
    #[arg(long, value_name = "T")]
    torrent: PathBuf,
    /// A peer to download from (repeatable); optional when the torrent has trackers.
    #[arg(long, value_name = "ADDR")]
    peer: Vec<SocketAddr>,
    /// The image file to write (sparse); its piece bitmap is kept in FILE.vmtbits so an
    /// interrupted fetch resumes.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Accept peers on this address too (other clients can then fetch from us).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Keep seeding after the download completes, until Ctrl-C.
    #[arg(long, conflicts_with = "no_upload")]
    seed: bool,
    /// Never upload (client-server setting): all bytes come from seeders.
    #[arg(long)]
    no_upload: bool,
    /// Download limit, in bits (100Mbit) or bytes (10MiB/s; a bare number) per second;
    /// unlimited when absent.
    #[arg(long, value_name = "RATE")]
    download_limit: Option<Rate>,
    /// Upload limit, in bits (100Mbit) or bytes (10MiB/s; a bare number) per second;
    /// unlimited when absent.
    #[arg(long, value_name = "RATE")]
    upload_limit: Option<Rate>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Two workers: peer I/O is light; hashing and disk writes happen inline per piece.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmt-run: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let cancel = shutdown_on_signals();
        match cli.cmd {
            Cmd::Seed(a) => seed(a, cancel).await,
            Cmd::Fetch(a) => fetch(a, cancel).await,
            Cmd::Mount(a) => mount(a, cancel).await,
            Cmd::Demo { keep } => demo(keep, cancel).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmt-run: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The first Ctrl-C or SIGTERM cancels the token (clean shutdown, bitmap persisted); a second
/// one exits at once.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        for round in 0..2 {
            match term.as_mut() {
                Some(term) => tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                },
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            if round == 0 {
                eprintln!("vmt-run: stopping (signal again to force)");
                t.cancel();
            }
        }
        std::process::exit(130);
    });
    token
}

async fn seed(a: SeedArgs, cancel: CancellationToken) -> Result<()> {
    if !a.image.is_file() {
        bail!("{}: no such image file", a.image.display());
    }
    // Bind first: a busy port fails at once, before minutes of hashing.
    let listener = Engine::bind(a.listen).await?;
    let (torrent, verify) = match &a.torrent {
        Some(t) => (Torrent::load(t)?, true),
        None => {
            let piece = a.piece_size;
            eprintln!(
                "hashing {} into {} pieces...",
                a.image.display(),
                indicatif::HumanBytes(piece as u64)
            );
            let t = Torrent::create(&a.image, piece, a.tracker.clone()).await?;
            let out = a
                .torrent_out
                .clone()
                .unwrap_or_else(|| with_suffix(&a.image, ".torrent"));
            t.save(&out)?;
            eprintln!("wrote {}", out.display());
            (t, false)
        }
    };
    let (t2, img) = (torrent.clone(), a.image.clone());
    let storage = tokio::task::spawn_blocking(move || Storage::open_seed(&img, &t2, verify))
        .await
        .context("verifying the image")??;
    let config = EngineConfig {
        peers: a.peer.clone(),
        upload_limit: a.upload_limit.map(Rate::bytes_per_s),
        upload_slots: a.upload_slots,
        ..Default::default()
    };
    let engine = Engine::start(torrent, storage, Some(listener), config);
    eprintln!(
        "seeding {} ({} pieces, info hash {}) on {}",
        engine.torrent().name(),
        engine.torrent().piece_count(),
        engine.torrent().info_hash().as_string(),
        a.listen
    );
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let st = engine.stats();
        bar.set_message(format!(
            "uploaded {} to {} peer(s)",
            indicatif::HumanBytes(st.uploaded),
            st.connected
        ));
        bar.tick();
    }
    bar.finish_and_clear();
    engine.shutdown().await?;
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

async fn fetch(a: FetchArgs, cancel: CancellationToken) -> Result<()> {
    let torrent = Torrent::load(&a.torrent)?;
    if a.peer.is_empty() && torrent.trackers().is_empty() {
        bail!("no peers: give --peer ADDR (the torrent has no trackers)");
    }
    let listener = match a.listen {
        Some(addr) => Some(Engine::bind(addr).await?),
        None => None,
    };
    let bits = with_suffix(&a.out, ".vmtbits");
    let (t2, out, b2) = (torrent.clone(), a.out.clone(), bits.clone());
    let (storage, resume) =
        tokio::task::spawn_blocking(move || Storage::open_download(&out, &t2, &b2))
            .await
            .context("opening the output")??;
    let resumed = resume.recorded + resume.rehashed_ok;
    if resumed > 0 || resume.rehashed > 0 {
        eprintln!(
            "resumed {resumed} pieces from {} ({} recorded, {} of {} unrecorded re-hashed ok)",
            a.out.display(),
            resume.recorded,
            resume.rehashed_ok,
            resume.rehashed
        );
    }
    let config = EngineConfig {
        peers: a.peer.clone(),
        upload: !a.no_upload,
        download_limit: a.download_limit.map(Rate::bytes_per_s),
        upload_limit: a.upload_limit.map(Rate::bytes_per_s),
        ..Default::default()
    };
    let engine = Engine::start(torrent, storage, listener, config);
    let total = engine.torrent().total_length();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} | {msg}",
        )
        .expect("valid template"),
    );
    // Without a terminal the bar is hidden: print a status line now and then instead, so a
    // log still shows "no reachable peer".
    let plain = bar.is_hidden();
    let mut ticks = 0u32;
    let interrupted = loop {
        if engine.is_complete() {
            break false;
        }
        tokio::select! {
            _ = cancel.cancelled() => break true,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let st = engine.stats();
        bar.set_position(st.have_bytes);
        bar.set_message(status(&st));
        ticks += 1;
        if plain && ticks % 25 == 0 {
            eprintln!(
                "status: {}/{} pieces | {}",
                st.pieces.have,
                st.total_pieces,
                status(&st)
            );
        }
    };
    bar.finish_and_clear();
    if interrupted {
        engine.shutdown().await?;
        let st = engine.stats();
        bail!(
            "interrupted with {}/{} pieces; progress saved in {}, run again to resume",
            st.pieces.have,
            st.total_pieces,
            bits.display()
        );
    }
    engine.flush()?;
    let st = engine.stats();
    println!(
        "done: {} verified in {}; downloaded {} bytes ({} wasted), uploaded {} bytes",
        total,
        a.out.display(),
        st.downloaded,
        st.wasted,
        st.uploaded
    );
    if a.seed {
        eprintln!("seeding until Ctrl-C");
        cancel.cancelled().await;
    }
    engine.shutdown().await?;
    Ok(())
}

async fn mount(a: MountArgs, cancel: CancellationToken) -> Result<()> {
    use vmt_model::scheduler::Strategy;
    use vmt_runtime::{Runtime, RuntimeParams};
    let strategy = a.strategy.unwrap_or(if a.bundle.is_some() {
        Strategy::Markov
    } else {
        Strategy::Stream
    });
    let data = a
        .data
        .clone()
        .unwrap_or_else(|| with_suffix(&a.torrent, ".vmt-data"));
    let listener = match a.listen {
        Some(addr) => Some(Engine::bind(addr).await?),
        None => None,
    };
    let status_listener = match a.status {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("status address {addr}"))?,
        ),
        None => None,
    };
    if a.peer.is_empty() && a.listen.is_none() {
        bail!("no peers: give --peer ADDR (or --listen for peers to dial us)");
    }
    let runtime = Runtime::start(
        RuntimeParams {
            torrent: a.torrent.clone(),
            bundle: a.bundle.clone(),
            strategy,
            profile: a.profile.clone(),
            oracle_trace: a.oracle_trace.clone(),
            mountpoint: a.mountpoint.clone(),
            data_dir: data,
            peers: a.peer.clone(),
            upload: !a.no_upload,
            download_limit: a.download_limit.map(Rate::bytes_per_s),
            upload_limit: a.upload_limit.map(Rate::bytes_per_s),
            window: a.window,
            threads: a.threads,
        },
        listener,
    )
    .await?;
    let runtime = std::sync::Arc::new(runtime);
    eprintln!(
        "serving {} ({strategy}); Ctrl-C to unmount",
        runtime.served_path().display()
    );
    if let Some(l) = status_listener {
        // Weak: shutting down needs the runtime back from every holder.
        let rt = std::sync::Arc::downgrade(&runtime);
        tokio::spawn(vmt_runtime::serve_status(
            l,
            move || rt.upgrade().map(|r| r.status()),
            cancel.clone(),
        ));
    }
    let bars = indicatif::MultiProgress::new();
    let pieces = bars.add(ProgressBar::new(runtime.status().pieces_total as u64));
    pieces.set_style(
        ProgressStyle::with_template("pieces {bar:30} {pos}/{len} | {msg}")
            .expect("valid template"),
    );
    let belief = bars.add(ProgressBar::new_spinner());
    let reads = bars.add(ProgressBar::new_spinner());
    let plain = pieces.is_hidden();
    let mut ticks = 0u32;
    while !cancel.is_cancelled() {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let st = runtime.status();
        pieces.set_position(st.pieces_present as u64);
        pieces.set_message(format!(
            "{} in flight | {}",
            st.pieces_in_flight, st.peer_status
        ));
        belief.set_message(match &st.profile {
            Some((name, b)) => format!(
                "profile {name} (belief {b:.2}), {} switches",
                st.profile_switches.len().saturating_sub(1)
            ),
            None => format!("strategy {}", st.strategy),
        });
        reads.set_message(format!(
            "reads {} hit / {} missed, {} waiting | stalls {} totalling {:.2} s",
            st.read_hits, st.read_misses, st.parked_now, st.stalls.count, st.stalls.total_s
        ));
        ticks += 1;
        if plain && ticks % 25 == 0 {
            eprintln!(
                "status: {}/{} pieces, {} | {} misses, stalls {:.2} s",
                st.pieces_present,
                st.pieces_total,
                st.peer_status,
                st.read_misses,
                st.stalls.total_s
            );
        }
    }
    bars.clear().ok();
    // A status request in progress may hold the runtime for a moment.
    let mut runtime = runtime;
    let runtime = loop {
        match std::sync::Arc::try_unwrap(runtime) {
            Ok(r) => break r,
            Err(shared) => {
                runtime = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let report = runtime.shutdown().await?;
    if let Some(path) = &a.report {
        let json = serde_json::to_vec_pretty(&report)?;
        vmt_formats::envelope::write_atomically(path, &json)
            .with_context(|| format!("writing the report {}", path.display()))?;
    }
    eprintln!(
        "unmounted: {} reads ({} waited), {} stalls totalling {:.2} s, downloaded {}, uploaded {}",
        report.read_hits + report.read_misses,
        report.read_misses,
        report.stalls.count,
        report.stalls.total_s,
        indicatif::HumanBytes(report.downloaded),
        indicatif::HumanBytes(report.uploaded)
    );
    Ok(())
}

/// Draws the demo's steps and live status.
struct DemoBars {
    steps: ProgressBar,
    live: ProgressBar,
    pieces: ProgressBar,
}

impl vmt_runtime::demo::DemoUi for DemoBars {
    fn step(&self, line: &str) {
        // Without a terminal the bars are hidden; the steps still belong in the log.
        if self.steps.is_hidden() {
            eprintln!("• {line}");
        } else {
            self.steps.println(format!("• {line}"));
        }
    }

    fn live(&self, st: &vmt_runtime::Status, task: &str) {
        self.pieces.set_length(st.pieces_total as u64);
        self.pieces.set_position(st.pieces_present as u64);
        self.pieces
            .set_message(format!("{} in flight", st.pieces_in_flight));
        let profile = st
            .profile
            .as_ref()
            .map_or_else(String::new, |(p, b)| format!(" | belief: {p} {b:.2}"));
        self.live.set_message(format!(
            "task: {task}{profile} | reads {} hit / {} waited | stalls {:.2} s",
            st.read_hits, st.read_misses, st.stalls.total_s
        ));
    }
}

async fn demo(keep: Option<PathBuf>, cancel: CancellationToken) -> Result<()> {
    let temp;
    let dir = match keep {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
        None => {
            temp = vmt_runtime::demo::default_dir().context("creating a temp dir")?;
            temp.path().to_owned()
        }
    };
    let bars = indicatif::MultiProgress::new();
    let steps = bars.add(ProgressBar::new_spinner());
    steps.enable_steady_tick(Duration::from_millis(120));
    steps.set_message("vmt demo");
    let pieces = bars.add(ProgressBar::new(1));
    pieces.set_style(
        ProgressStyle::with_template("  pieces {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    let live = bars.add(ProgressBar::new_spinner());
    live.set_style(ProgressStyle::with_template("  {msg}").expect("valid template"));
    let ui = DemoBars {
        steps,
        live,
        pieces,
    };
    let started = std::time::Instant::now();
    let rows = tokio::select! {
        r = vmt_runtime::demo::run(&dir, &ui) => r.map_err(|e| anyhow::anyhow!("{e}"))?,
        _ = cancel.cancelled() => bail!("interrupted"),
    };
    bars.clear().ok();
    let full = rows
        .iter()
        .find(|r| r.strategy == vmt_model::scheduler::Strategy::Full)
        .map_or(f64::NAN, |r| r.completion_s);
    println!(
        "\nheld-out session ({} s think between tasks), {} Mbit/s seeder:\n",
        vmt_runtime::demo::DEMO_THINK.as_secs(),
        vmt_runtime::demo::DEMO_RATE * 8 / 1_000_000
    );
    println!(
        "{:<10} {:>14} {:>10} {:>12}",
        "strategy", "completion s", "stall s", "vs full"
    );
    for r in &rows {
        println!(
            "{:<10} {:>14.2} {:>10.2} {:>11.2}x",
            r.strategy.name(),
            r.completion_s,
            r.stall_s,
            full / r.completion_s
        );
    }
    println!(
        "\n(demo finished in {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn status(st: &SwarmStats) -> String {
    format!(
        "{} in flight, {}, up {}",
        st.pieces.in_flight,
        st.peer_status(),
        indicatif::HumanBytes(st.uploaded)
    )
}
