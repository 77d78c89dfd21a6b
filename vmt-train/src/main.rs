//! `vmt-train`: turn recorded traces into a profile bundle, show it, and evaluate it.
//!
//! Glue over `vmt_model::train`: this file parses flags into checked parameters, calls one
//! library function per subcommand, draws its progress bars, prints the report it returns,
//! and maps an error to one line (`{:#}`: each cause once) and exit code 1.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use vmt_formats::stdout;
use vmt_formats::units::{self, Rate, Size};
use vmt_model::cluster::ClusterParams;
use vmt_model::curve::CurveParams;
use vmt_model::evaluate::EvalParams;
use vmt_model::granularity::Granularity;
use vmt_model::markov::BeliefParams;
use vmt_model::profile::BundleParams;
use vmt_model::scheduler::{PlanOrder, Strategy};
use vmt_model::simulate::LinkParams;
use vmt_model::swarm_sim::{Arrival, SwarmParams};
use vmt_model::synth::SynthParams;
use vmt_model::train::{self, CorpusParams, Progress};

/// Train schedule profiles from traces, inspect them, and evaluate them in a simulator.
#[derive(Parser)]
#[command(name = "vmt-train", version, about, after_help = units::HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cluster traces into profiles, learn the Markov model, and write a bundle (.vmtp).
    ///
    /// Each task trace, and each task segment of a session trace, is a run; runs are clustered
    /// by the blocks they read (Jaccard), each cluster becomes a profile (blocks above the
    /// support cutoff, in expected first-access order), and transitions between profiles are
    /// learned from sessions and from task runs recorded back to back.
    #[command(after_help = units::HELP)]
    Fit {
        /// Trace files (.vmtrace or .csv) or directories holding them; all of one image.
        #[arg(long, num_args = 1.., required = true, value_name = "DIR_OR_FILE")]
        traces: Vec<PathBuf>,
        /// Where to write the bundle.
        #[arg(long, value_name = "BUNDLE.vmtp")]
        out: PathBuf,
        /// Block size profiles are kept in (a power of two, at least 512 bytes), e.g. 4KiB.
        #[arg(long, value_name = "SIZE", default_value = "4KiB", value_parser = units::parse_size_u32)]
        block_size: u32,
        /// Number of profiles: `auto` chooses from the data (silhouette; never merges clearly
        /// different block sets), or a number for k-means with that many.
        #[arg(long, default_value = "auto", value_parser = parse_profiles)]
        profiles: ProfilesArg,
        /// A block is in a profile when at least this share of the profile's runs read it
        /// (VMTorrent used 0.25).
        #[arg(long, default_value_t = 0.25)]
        support: f64,
    },
    /// Print a bundle: profiles, their sizes and members, common blocks, transitions.
    Show {
        /// The bundle file.
        bundle: PathBuf,
    },
    /// Simulate strategies on traces over a link and report completion and stall times.
    ///
    /// One client fetches over a link of the given bandwidth while each trace's reads arrive
    /// after their recorded gaps (compute time), at the granularity of the mount being
    /// predicted: whole pieces for a stock torrent, or blocks verified on their own with a
    /// block-hash table (--block-table). A read that misses waits one round trip (--rtt) and
    /// then for its missing units (demand preempts prefetch). Strategies: full (whole image
    /// first), demand (no prefetch), stream (demand + background fill), profile (demand + the
    /// single profile closest to the trace, fixed), markov (demand + belief-weighted profiles,
    /// switching on task boundaries), oracle (prefetch in the trace's own first-access order:
    /// the lower bound). stream, profile and markov then complete the pieces they started and
    /// fill the rest; demand and oracle fetch nothing more. Tables show completion/stall seconds
    /// per trace, then means, bytes fetched per byte read, markov's ratios to the other
    /// strategies (each with the difference in seconds; a ratio to a strategy that stalled under
    /// 10 ms, as the oracle often does with --think, is printed n/a), and how often the
    /// belief's top profile was the trace's task.
    ///
    /// With --curve: the piece-size curve instead (see --curve).
    #[command(after_help = units::HELP)]
    Eval {
        /// The bundle to evaluate. With --cv it only supplies the fit settings (default: the
        /// fit defaults) and is never used for figures.
        #[arg(long, value_name = "BUNDLE.vmtp", required_unless_present = "cv")]
        bundle: Option<PathBuf>,
        /// Trace files or directories to replay.
        #[arg(long, num_args = 1.., required = true, value_name = "DIR_OR_FILE")]
        traces: Vec<PathBuf>,
        /// Link bandwidth in bits (100Mbit, 1Gbit) or bytes (12.5MB/s, 10MiB/s) per second.
        #[arg(long, value_name = "RATE", default_value = "100Mbit")]
        bandwidth: Rate,
        /// Piece size of the torrent, e.g. 256KiB (= 262144 bytes; 256KB is 256000).
        #[arg(long, value_name = "SIZE", default_value = "256KiB", value_parser = units::parse_size_u32)]
        piece_size: u32,
        /// The torrent has a block-hash table: the mount verifies blocks of this size on their
        /// own, so a read that misses waits only for the blocks it covers [default when given
        /// without a value: 16KiB, BitTorrent's request unit]. Without it the mount fetches
        /// whole pieces (a stock torrent).
        #[arg(
            long,
            value_name = "BLOCK",
            num_args = 0..=1,
            default_missing_value = "16KiB",
            value_parser = units::parse_size_u32
        )]
        block_table: Option<u32>,
        /// Round trip of each demanded fetch before its bytes arrive (e.g. 500us, 20ms). The
        /// default is what a miss cost beyond its bytes on the benchmark's mounts; give the
        /// path's round trip for a WAN.
        #[arg(long, default_value = "500us", value_parser = units::parse_duration_us)]
        rtt: u64,
        /// Idle time inserted at each task boundary of a session trace (e.g. 5s, 500ms).
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = units::parse_duration_us)]
        think: u64,
        /// Leave-one-run-out: refit without each trace before replaying it, so no figure
        /// comes from training data.
        #[arg(long)]
        cv: bool,
        /// Strategies to run, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "full,demand,stream,profile,markov,oracle"
        )]
        strategies: Vec<Strategy>,
        /// Measure inference accuracy after this many reads of each task, comma-separated
        /// (reads of blocks common to most tasks, such as boot, are not counted).
        #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
        accuracy_after: Vec<usize>,
        /// Idle gap between reads taken as a task boundary by the online belief (e.g. 1s,
        /// 500ms).
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = units::parse_duration_us)]
        boundary_gap: u64,
        /// How markov orders its plan: benefit (expected benefit per unit under the belief,
        /// hedged while it is unsure) or merge (the earlier belief-weighted merge of the
        /// profiles' orders, for comparison).
        #[arg(long, default_value = "benefit")]
        planner: PlanOrder,
        /// With --planner benefit: weight of the bonus for units that tell the likely profiles
        /// apart.
        #[arg(long, default_value_t = 0.5)]
        bonus: f64,
        /// Lead added to first-access times in the plan's urgency 1 / (t + lead).
        #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = units::parse_duration_us)]
        lead: u64,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Recommend a piece size: replay demand, markov and oracle at every piece size from
        /// 16KiB to 4MiB (powers of two), each as a stock torrent and with a block table (of
        /// --block-table's size, default 16KiB), and print mean stall and bytes fetched / bytes
        /// read per strategy, the share of markov's bytes in complete pieces (what a client
        /// can share with peers), and each configuration's costs (pieces, hash bytes in the
        /// .torrent and block table, bitfield and HAVE bytes per peer). The recommendation is
        /// the configuration with the fewest pieces where markov stalls within 5% (or 10 ms)
        /// of the best and holds at least half of what it fetched in complete pieces.
        /// --piece-size and --strategies are not used.
        #[arg(long)]
        curve: bool,
    },
    /// Write synthetic traces (task runs and sessions of a generated image) to a directory.
    #[command(after_help = units::HELP)]
    Synth {
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
        /// Image size, e.g. 64MiB or 1GB.
        #[arg(long, value_name = "SIZE", default_value = "64MiB")]
        image_size: Size,
        /// Number of distinct tasks.
        #[arg(long, default_value_t = 4)]
        tasks: usize,
        /// Runs of each task.
        #[arg(long, default_value_t = 4)]
        runs: u32,
        /// Multi-task sessions.
        #[arg(long, default_value_t = 4)]
        sessions: u32,
        /// Tasks per session.
        #[arg(long, default_value_t = 4)]
        session_len: usize,
        /// Compute pause between a task's files (e.g. 20ms, 1s).
        #[arg(long, value_name = "DURATION", default_value = "20ms", value_parser = units::parse_duration_us)]
        compute: u64,
        /// Layout seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write CSV instead of .vmtrace.
        #[arg(long)]
        csv: bool,
    },
    /// Simulate a crowd of clients starting the image from one seeder and each other.
    ///
    /// N clients (client i replays the i-th trace, round robin) each drive their own planner
    /// with their trace's reads, as `vmt-run mount` would; they fetch over symmetric links from
    /// the seeder and, unless --no-upload, from each other: whole verified pieces, 4 upload
    /// slots per uploader rotating every 10 s, demand before plan before rarest first, flows
    /// sharing links max-min fairly. Prints a JSON summary (mean and p95 completion, mean stall
    /// and where it went, seeder bytes); --out writes it with every client's figures.
    #[command(after_help = units::HELP)]
    SwarmSim {
        /// The bundle (for profile and markov).
        #[arg(long, value_name = "BUNDLE.vmtp")]
        bundle: Option<PathBuf>,
        /// Trace files or directories to replay.
        #[arg(long, num_args = 1.., required = true, value_name = "DIR_OR_FILE")]
        traces: Vec<PathBuf>,
        /// Clients.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Strategy of every client.
        #[arg(long, default_value = "markov")]
        strategy: Strategy,
        /// Client-server: clients upload nothing (`vmt-run mount --no-upload`).
        #[arg(long)]
        no_upload: bool,
        /// Arrivals: flash (all at once) or poisson:RATE (clients per second).
        #[arg(long, default_value = "flash", value_parser = parse_arrival)]
        arrival: Arrival,
        /// Each client's link, both ways.
        #[arg(long, value_name = "RATE", default_value = "100Mbit")]
        client_rate: Rate,
        /// The seeder's uplink.
        #[arg(long, value_name = "RATE", default_value = "100Mbit")]
        seeder_rate: Rate,
        /// Upload slots of the seeder.
        #[arg(long, default_value_t = 4)]
        seeder_slots: usize,
        /// The seeder injects each piece once (`vmt-run seed --inject`): it declines pieces a
        /// client holds or that it sends to another, and clients ask it only for what they
        /// read or plan to read.
        #[arg(long)]
        inject: bool,
        /// Clients ask a holder that chokes them for what a read waits for, outside its upload
        /// slots (`vmt-run mount --urgent`).
        #[arg(long)]
        urgent: bool,
        /// With --urgent: urgent blocks a client queues before it turns the next asker away
        /// (`vmt_busy`; the engine's 8); 0: never.
        #[arg(long, value_name = "BLOCKS", default_value_t = vmt_model::swarm_sim::BUSY_BACKLOG)]
        busy_backlog: u32,
        /// With --urgent: blocks a read waited for are not announced alone (no
        /// `vmt_have_block`: an engine before it), so only whole pieces are traded.
        #[arg(long)]
        no_have_block: bool,
        /// Blocks of a planned or background request still to come when a read misses (the
        /// engine's request window, 2 at its smallest): the read's blocks wait behind them and
        /// the client asks for nothing else meanwhile. 0: they are preempted at once and other
        /// requests go on (the model before).
        #[arg(long, value_name = "BLOCKS", default_value_t = vmt_model::swarm_sim::QUEUE)]
        queue: u32,
        /// With --urgent: holders send the blocks a read waits for alike with their other
        /// uploads (the engine before stop 37), not before them.
        #[arg(long)]
        no_demand_first: bool,
        /// Other clients each client knows; in bigger crowds a ring of this many neighbours
        /// (half each side) stands for the tracker's subset. `vmt-run replay-client
        /// --peers-per-client K` dials K and is dialed by K, so K=8 there is 16 here.
        #[arg(long, default_value_t = 128)]
        max_peers: usize,
        /// Period of every uploader's choker rotation (the engine's `--rechoke`).
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = units::parse_duration_us)]
        rechoke: u64,
        /// Idle time at each task boundary of a session.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = units::parse_duration_us)]
        think: u64,
        /// Round trip of each demanded request.
        #[arg(long, default_value = "500us", value_parser = units::parse_duration_us)]
        rtt: u64,
        /// Factor on the traces' recorded gaps between reads (not on think time); bench.sh
        /// replays reads back to back, which about 0.1 stands for.
        #[arg(long, default_value_t = 1.0)]
        gap_scale: f64,
        /// Piece size of the torrent.
        #[arg(long, value_name = "SIZE", default_value = "256KiB", value_parser = units::parse_size_u32)]
        piece_size: u32,
        /// Verified block size (the block-hash table); vmt's torrents have one.
        #[arg(long, value_name = "BLOCK", default_value = "16KiB", value_parser = units::parse_size_u32)]
        block: u32,
        /// Shortest time between rate recomputations (0 = exact; 1ms keeps 1,000 clients fast).
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = units::parse_duration_us)]
        quantum: u64,
        /// Seed of arrivals and piece rotations.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the summary and every client's figures here (JSON).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Benchmark: fit synthetic traces in memory, print fit time and peak memory (VmHWM).
    #[command(hide = true, after_help = units::HELP)]
    BenchFit {
        /// Number of traces.
        #[arg(long, default_value_t = 1000)]
        traces: usize,
        /// Image size, e.g. 1GiB.
        #[arg(long, value_name = "SIZE", default_value = "1GiB")]
        image_size: Size,
        /// Distinct tasks.
        #[arg(long, default_value_t = 16)]
        tasks: usize,
    },
}

#[derive(Clone, Copy, Debug)]
enum ProfilesArg {
    Auto,
    Fixed(usize),
}

fn parse_profiles(s: &str) -> Result<ProfilesArg, String> {
    if s == "auto" {
        return Ok(ProfilesArg::Auto);
    }
    match s.parse::<usize>() {
        Ok(0) => Err("the number of profiles must be at least 1".into()),
        Ok(k) => Ok(ProfilesArg::Fixed(k)),
        Err(_) => Err(format!("{s:?} is neither `auto` nor a number")),
    }
}

fn parse_arrival(s: &str) -> Result<Arrival, String> {
    match s.split_once(':') {
        None if s == "flash" => Ok(Arrival::Flash),
        Some(("poisson", rate)) => match rate.parse::<f64>() {
            Ok(r) if r > 0.0 && r.is_finite() => Ok(Arrival::Poisson(r)),
            _ => Err(format!("poisson rate {rate:?} is not a positive number")),
        },
        _ => Err(format!("unknown arrival {s:?} (flash, poisson:RATE)")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmt-train: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let progress = &mut Bars::default();
    match cli.command {
        Command::Fit {
            traces,
            out,
            block_size,
            profiles,
            support,
        } => {
            let profiles = match profiles {
                ProfilesArg::Auto => None,
                ProfilesArg::Fixed(k) => Some(k),
            };
            let params = BundleParams::new(block_size)
                .support(support)
                .cluster(ClusterParams::new().profiles(profiles))
                .check()?;
            stdout::print(&train::fit(&traces, &out, &params, progress)?.to_string())?;
        }
        Command::Show { bundle } => stdout::print(&train::show(&bundle)?.to_string())?,
        Command::Eval {
            bundle,
            traces,
            bandwidth,
            piece_size,
            block_table,
            rtt,
            think,
            cv,
            strategies,
            accuracy_after,
            boundary_gap,
            planner,
            bonus,
            lead,
            json,
            curve,
        } => {
            // The curve sets its own piece sizes and checks its block size per point.
            let granularity = Granularity::new(piece_size, if curve { None } else { block_table })?;
            let link = LinkParams {
                bits_per_s: bandwidth.bits_per_s() as f64,
                think_us: think,
                rtt_us: rtt,
            };
            let mut params = EvalParams::new(link, granularity);
            params.scheduler.belief = BeliefParams {
                gap_us: boundary_gap,
                ..BeliefParams::default()
            };
            params.scheduler.order = planner;
            params.scheduler.bonus = bonus;
            params.scheduler.lead_us = lead;
            params.strategies = strategies;
            params.probe_reads = accuracy_after;
            let bundle = bundle.as_deref();
            if curve {
                let mut c = CurveParams::new(params);
                c.block_size = block_table.unwrap_or(c.block_size);
                let report = train::eval_curve(bundle, &traces, cv, &c, progress)?;
                if json {
                    stdout::print(&format!(
                        "{}\n",
                        serde_json::to_string_pretty(&report.to_json())?
                    ))?;
                } else {
                    stdout::print(&report.to_string())?;
                }
            } else {
                let report = train::eval(bundle, &traces, cv, &params, progress)?;
                if json {
                    stdout::print(&format!(
                        "{}\n",
                        serde_json::to_string_pretty(&report.to_json())?
                    ))?;
                } else {
                    stdout::print(&report.to_string())?;
                }
            }
        }
        Command::Synth {
            out,
            image_size,
            tasks,
            runs,
            sessions,
            session_len,
            compute,
            seed,
            csv,
        } => {
            let params = CorpusParams {
                image: SynthParams::new(image_size.bytes(), tasks)
                    .seed(seed)
                    .compute_us(compute),
                runs,
                sessions,
                session_len,
                csv,
            }
            .check()?;
            stdout::print(&params.write(&out)?.to_string())?;
        }
        Command::SwarmSim {
            bundle,
            traces,
            clients,
            strategy,
            no_upload,
            arrival,
            client_rate,
            seeder_rate,
            seeder_slots,
            inject,
            urgent,
            busy_backlog,
            no_have_block,
            queue,
            no_demand_first,
            max_peers,
            rechoke,
            think,
            rtt,
            gap_scale,
            piece_size,
            block,
            quantum,
            seed,
            out,
        } => {
            let granularity = Granularity::new(piece_size, Some(block))?;
            let mut params = SwarmParams::new(client_rate.bits_per_s() as f64);
            params.seeder_bits_per_s = seeder_rate.bits_per_s() as f64;
            params.seeder_slots = seeder_slots;
            params.inject = inject;
            params.urgent = urgent;
            params.busy_backlog = busy_backlog;
            params.have_block = !no_have_block;
            params.queue = queue;
            params.demand_first = !no_demand_first;
            params.max_peers = max_peers;
            params.rechoke_us = rechoke as f64;
            params.upload = !no_upload;
            params.arrival = arrival;
            params.think_us = think;
            params.rtt_us = rtt;
            params.gap_scale = gap_scale;
            params.quantum_us = quantum as f64;
            params.seed = seed;
            let started = std::time::Instant::now();
            let o = train::swarm_sim(
                bundle.as_deref(),
                &traces,
                strategy,
                clients,
                &granularity,
                &params,
                progress,
            )?;
            let s = |us: f64| us / 1e6;
            let w = o.mean_waits;
            let summary = serde_json::json!({
                "clients": clients,
                "strategy": strategy.name(),
                "mode": if no_upload { "cs" } else { "swarm" },
                "finished": o.finished,
                "mean_completion_s": s(o.mean_completion_us),
                "p95_completion_s": s(o.p95_completion_us),
                "mean_stall_s": s(o.mean_stall_us),
                "mean_waits_s": {
                    "racing": s(w.racing_us as f64),
                    "at_peers": s(w.at_peers_us as f64),
                    "turned_away": s(w.turned_away_us as f64),
                    "on_its_way": s(w.on_its_way_us as f64),
                    "seeder": s(w.seeder_us as f64),
                },
                "seeder_bytes": o.seeder_bytes,
                "seeder_per_image": o.seeder_bytes as f64 / o.image_bytes.max(1) as f64,
                "image_bytes": o.image_bytes,
                "events": o.events,
                "recomputes": o.recomputes,
                "wall_s": started.elapsed().as_secs_f64(),
            });
            stdout::print(&format!("{}\n", serde_json::to_string_pretty(&summary)?))?;
            if let Some(path) = out {
                let full =
                    serde_json::json!({ "summary": summary, "params": params, "outcome": o });
                std::fs::write(&path, serde_json::to_string_pretty(&full)?)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            }
        }
        Command::BenchFit {
            traces,
            image_size,
            tasks,
        } => stdout::print(&train::bench_fit(traces, image_size.bytes(), tasks)?.to_string())?,
    }
    Ok(())
}

/// Progress on stderr: a bar per phase of known length, a spinner otherwise; nothing when
/// stderr is not a terminal. Warnings always.
#[derive(Default)]
struct Bars(Option<ProgressBar>);

impl Progress for Bars {
    fn start(&mut self, what: &str, len: u64) {
        let bar = if !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else if len == 0 {
            let spinner = ProgressBar::new_spinner();
            spinner.enable_steady_tick(Duration::from_millis(120));
            spinner
        } else {
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template("{msg:12} [{bar:30}] {pos}/{len} {elapsed}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_message(what.to_string());
            bar
        };
        self.0 = Some(bar);
    }

    fn step(&mut self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }

    fn stage(&mut self, stage: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(stage.to_string());
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }

    fn warn(&mut self, message: &str) {
        let line = || eprintln!("vmt-train: warning: {message}");
        match &self.0 {
            Some(bar) => bar.suspend(line),
            None => line(),
        }
    }
}
