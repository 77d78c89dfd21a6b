//! `vmt-run replay-client`: flags to [`vmt_runtime::crowd`], a progress bar, the results file.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;
use vmt_formats::units::{self, Rate, Size};
use vmt_runtime::crowd::{self, CrowdEvent, CrowdParams, DEFAULT_PEERS_PER_CLIENT};
use vmt_runtime::peer_addr::PeerAddr;

/// Flags of `vmt-run replay-client`.
#[derive(Args)]
pub(crate) struct ReplayClientArgs {
    /// The image's .torrent.
    #[arg(long, value_name = "T")]
    torrent: PathBuf,
    /// Profile bundle from `vmt-train fit` (profile and markov strategies).
    #[arg(long, value_name = "BUNDLE.vmtp")]
    bundle: Option<PathBuf>,
    /// Traces to replay (repeatable); client i replays the i-th modulo their count.
    #[arg(long = "trace", value_name = "FILE", required = true)]
    traces: Vec<PathBuf>,
    /// Clients in this process, each with its own engine, peer id, port and storage.
    #[arg(long, value_name = "N", default_value_t = 1)]
    clients: usize,
    /// A seeder every client dials, as HOST:PORT (repeatable).
    #[arg(long, value_name = "HOST:PORT", required = true)]
    peer: Vec<PeerAddr>,
    /// Strategy of every client [default: markov with --bundle, else stream].
    #[arg(long, value_name = "S")]
    strategy: Option<vmt_model::scheduler::Strategy>,
    /// Clients never upload (client-server setting); without it they form a swarm.
    #[arg(long)]
    no_upload: bool,
    /// Clients ask and serve urgent requests (`vmt-run mount --urgent`).
    #[arg(long)]
    urgent: bool,
    /// The link each client stands for, both directions (100Mbit, 10MiB/s); its engine runs at
    /// RATE / --dilation [default: unlimited].
    #[arg(long, value_name = "RATE")]
    link_rate: Option<Rate>,
    /// The seeder's upload limit as it was started (only written to the results).
    #[arg(long, value_name = "RATE")]
    seed_rate: Option<Rate>,
    /// Time dilation K: link rates divided by K, the traces' compute gaps and think times
    /// multiplied by K, so N clients fit on few cores; results are given undilated too.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    dilation: u32,
    /// How often each client's choker moves an upload slot (undilated: its engine rotates
    /// every DURATION x --dilation); give the seeder's `--rechoke` the same, dilated.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = units::parse_duration)]
    rechoke: Duration,
    /// With --urgent: urgent blocks a client queues for its peers before it answers the next
    /// asker busy, so that one goes to another holder (`vmt-swarm`'s `busy.rs`).
    #[arg(long, value_name = "BLOCKS", default_value_t = vmt_runtime::DEFAULT_BUSY_BACKLOG, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    busy_backlog: usize,
    /// Idle time at each task boundary of a session trace (undilated).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = units::parse_duration)]
    think: Duration,
    /// Other clients each client dials (they dial back), besides the seeders.
    #[arg(long, value_name = "K", default_value_t = DEFAULT_PEERS_PER_CLIENT)]
    peers_per_client: usize,
    /// Delay between two clients' starts (undilated) [default: all at once, a flash crowd].
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = units::parse_duration)]
    stagger: Duration,
    /// Address the clients listen on (ports chosen by the system).
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Where the clients' sparse storage goes [default: a temp dir]; each client's is removed
    /// when it finishes.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The original image: compare every read's bytes with it (a client with a difference is
    /// not verified).
    #[arg(long, value_name = "IMG")]
    check_image: Option<PathBuf>,
    /// How much of the prefetch plan each engine is handed at a time.
    #[arg(long, value_name = "SIZE", default_value = "8MiB")]
    window: Size,
    /// Results as JSON Lines: a line per client, then one for the run (datasets/README.md).
    #[arg(long, value_name = "FILE.jsonl")]
    out: PathBuf,
}

/// Runs the crowd and writes the results.
pub(crate) async fn replay_client(a: ReplayClientArgs, cancel: CancellationToken) -> Result<()> {
    let temp;
    let dir = match a.dir {
        Some(d) => d,
        None => {
            temp = tempfile::Builder::new()
                .prefix("vmt-crowd-")
                .tempdir()
                .context("temp dir")?;
            temp.path().to_path_buf()
        }
    };
    let mut params = CrowdParams::new(
        a.torrent,
        a.traces,
        a.clients,
        vmt_runtime::peer_addr::resolve_all(&a.peer)?,
        dir,
    );
    params.strategy = a
        .strategy
        .unwrap_or(vmt_runtime::mount::default_strategy(a.bundle.is_some()));
    params.bundle = a.bundle;
    params.upload = !a.no_upload;
    params.urgent = a.urgent;
    params.link_rate = a.link_rate.map(Rate::bytes_per_s);
    params.seed_rate = a.seed_rate.map(Rate::bytes_per_s);
    params.dilation = a.dilation;
    params.think = a.think;
    params.rechoke = a.rechoke;
    params.busy_backlog = a.busy_backlog;
    params.peers_per_client = a.peers_per_client;
    params.stagger = a.stagger;
    params.bind = a.bind;
    params.check_image = a.check_image;
    params.window_bytes = a.window.bytes();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let bar = ProgressBar::new(a.clients as u64);
    bar.set_style(
        ProgressStyle::with_template("clients {bar:30} {pos}/{len} done | {msg}")
            .expect("valid template"),
    );
    bar.set_message("starting engines");
    let k = a.dilation;
    let (clients, run) = crowd::run(params, command, cancel, |ev| match ev {
        CrowdEvent::Started { clients } => {
            bar.set_message(format!("{clients} replaying (dilation {k})"))
        }
        CrowdEvent::Done(c) => {
            bar.inc(1);
            let line = format!(
                "client {} {}: completion {:.2} s, stall {:.2} s, from seeder {}, peers {}{}",
                c.id,
                c.trace,
                c.completion_s,
                c.stall_s,
                indicatif::HumanBytes(c.from_seeder),
                indicatif::HumanBytes(c.from_peers),
                c.error
                    .as_deref()
                    .map_or(String::new(), |e| format!("; failed: {e}"))
            );
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
    })
    .await?;
    bar.finish_and_clear();
    let mut out = Vec::new();
    for c in &clients {
        serde_json::to_writer(&mut out, c)?;
        out.push(b'\n');
    }
    serde_json::to_writer(&mut out, &run)?;
    out.push(b'\n');
    let mut f =
        std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    f.write_all(&out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "{} clients ({}): mean completion {:.2} s, mean stall {:.2} s (undilated); seeder sent {} ({:.2} images); CPU {:.1} s over {:.1} s wall ({:.0}% of {} cores), machine busy {:.0}% (saturated {:.0}% of the time, peak {:.0}%){}",
        run.n,
        run.mode,
        run.mean_completion_s,
        run.mean_stall_s,
        indicatif::HumanBytes(run.seeder_bytes),
        run.seeder_bytes as f64 / run.image_bytes.max(1) as f64,
        run.cpu_s,
        run.wall_s,
        run.cpu_frac * 100.0,
        run.cores,
        run.machine_busy * 100.0,
        run.saturated_share * 100.0,
        run.busy_peak * 100.0,
        if run.saturated { " (SATURATED: rejected)" } else { "" }
    );
    if run.failed > 0 {
        anyhow::bail!(
            "{} of {} clients failed or were not verified",
            run.failed,
            run.n
        );
    }
    Ok(())
}
