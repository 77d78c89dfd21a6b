//! `vmt-run`: start an appliance from the swarm. Glue over `vmt_runtime`: parse flags, build
//! the tokio runtime, bind the sockets, turn signals into a clean shutdown, draw progress,
//! print errors once.
//!
//! Subcommands: `seed` (serve an image: `vmt_runtime::seed`), `torrent` (write its .torrent
//! only: `vmt_runtime::make_torrent`), `fetch` (download it whole, the
//! `full` strategy: `vmt_runtime::fetch`), `mount` (serve it through FUSE while it streams:
//! `vmt_runtime::mount`), `boot` (a VM on such a mount: `vmt_runtime::boot`), `replay-client` (headless
//! clients: `vmt_runtime::crowd`, in `replay_client`), `demo` (the whole
//! pipeline: `vmt_runtime::demo`).

mod replay_client;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;
use vmt_formats::stdout;
use vmt_formats::units::{self, Rate, Size};
use vmt_runtime::fetch::{FetchEvent, FetchParams};
use vmt_runtime::make_torrent::{self, TorrentEvent, TorrentParams};
use vmt_runtime::mount::{MountEvent, MountIo};
use vmt_runtime::peer_addr::PeerAddr;
use vmt_runtime::seed::{SeedEvent, SeedParams};
use vmt_runtime::totals::Totals;
use vmt_swarm::Engine;

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
    /// Write an image's .torrent without seeding it: the bytes `seed` would write for the same
    /// options, e.g. for a swarm whose only origin is a web server (--web-seed).
    Torrent(TorrentArgs),
    /// Download a whole image from the swarm, resuming a previous run.
    Fetch(FetchArgs),
    /// Mount an image from the swarm: the file appears at once, full size; reads of missing
    /// pieces wait for them while the profile-driven plan prefetches what comes next.
    #[command(mut_arg("mountpoint", |a| a.required(true)))]
    Mount(MountArgs),
    /// Boot a VM from the swarm: mount the image as `mount` does, start qemu-system-x86_64 on
    /// the mounted file (KVM when /dev/kvm is usable, else TCG), and unmount when the VM
    /// powers off or on Ctrl-C. The image must boot by itself (a bootloader), unless
    /// --kernel-from-image or --kernel is given. Exit status: 0 when the VM powered off, 130
    /// when interrupted, 1 when qemu or the mount failed.
    Boot(BootArgs),
    /// Headless clients for crowd experiments: N clients in this process, each the mount's
    /// streaming core (engine, planner, belief, filesystem core) without FUSE, replaying a
    /// trace in process against seeders, with rate limits and time dilation; writes each
    /// client's completion, stall and bytes per source as JSON Lines.
    ReplayClient(replay_client::ReplayClientArgs),
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
    /// The image's .torrent (as written by `vmt-run seed`); with --magnet, where the torrent
    /// fetched from peers is kept [default: the info hash + ".torrent" in the current
    /// directory].
    #[arg(long, value_name = "T", required_unless_present = "magnet")]
    torrent: Option<PathBuf>,
    #[command(flatten)]
    magnet: MagnetArgs,
    /// Profile bundle from `vmt-train fit` (needed by the profile and markov strategies).
    #[arg(long, value_name = "BUNDLE.vmtp")]
    bundle: Option<PathBuf>,
    /// Where the image file appears (an empty directory) [boot: default a temp dir].
    #[arg(long, value_name = "DIR")]
    mountpoint: Option<PathBuf>,
    /// A peer to download from, as HOST:PORT (a name or an IP address; repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    peer: Vec<PeerAddr>,
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
    /// Serve the live status as JSON over HTTP: on 127.0.0.1 given a port alone, else on
    /// ADDR:PORT. It has no authentication and shows peer addresses; an address other hosts
    /// can reach is warned about.
    #[arg(long, value_name = "[ADDR:]PORT")]
    status: Option<vmt_runtime::StatusAddr>,
    /// Never upload (client-server setting).
    #[arg(long)]
    no_upload: bool,
    /// Urgent requests: a read that misses asks vmt peers for its blocks urgently
    /// (`vmt_urgent`), even those that choke this mount, and they send them before their other
    /// uploads; the mount serves such requests the same way. Measured only in a crowd of
    /// an injecting seeder (`seed --inject --urgent`), so off by default; a seeder that does
    /// not inject ignores them.
    #[arg(long)]
    urgent: bool,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    dht: DhtArgs,
    #[command(flatten)]
    encryption: EncryptionArgs,
    #[command(flatten)]
    web_seeds: WebSeedArgs,
    /// How much of the prefetch plan the engine is handed at a time: enough to keep the link
    /// busy, little enough that what the belief revises was not yet requested.
    #[arg(long, value_name = "SIZE", default_value = "8MiB")]
    window: Size,
    /// FUSE worker threads.
    #[arg(long, value_name = "N", default_value_t = 4)]
    threads: usize,
    /// Let other users read the image (a VMM or loop device running as another user); they
    /// can never write it. Without it only you (and root) can use the mount.
    #[arg(long)]
    allow_other: bool,
    /// Fail a read with an I/O error once it has waited this long for missing pieces (e.g.
    /// 30s) [default: wait as long as it takes, like a hard NFS mount].
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    read_timeout: Option<Duration>,
}

#[derive(Args)]
struct BootArgs {
    #[command(flatten)]
    mount: MountArgs,
    /// Guest memory, as qemu's -m takes it (512M, 2G).
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    memory: String,
    /// Virtual CPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: u32,
    /// Emulate (TCG) even when KVM is usable.
    #[arg(long)]
    tcg: bool,
    /// Write the serial console to FILE instead of the terminal (there, Ctrl-A X quits qemu).
    #[arg(long, value_name = "FILE")]
    console: Option<PathBuf>,
    /// For an image without a bootloader: boot /boot/vmlinuz-* and its initrd.img-* from the
    /// image (ext4; read through a read-only loop mount of the mounted file).
    #[arg(long, conflicts_with = "kernel")]
    kernel_from_image: bool,
    /// For an image without a bootloader: boot this kernel.
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// The initramfs of --kernel.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line of --kernel or --kernel-from-image
    /// [default: "root=/dev/vda rw console=ttyS0"].
    #[arg(long, value_name = "CMDLINE")]
    append: Option<String>,
    /// The qemu binary.
    #[arg(long, value_name = "FILE", default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// More qemu arguments, after `--` (e.g. -- -nic user).
    #[arg(last = true, value_name = "QEMU ARGS")]
    qemu_args: Vec<std::ffi::OsString>,
}

/// Peer discovery through the DHT (BEP 5): off unless asked.
#[derive(Args)]
struct DhtArgs {
    /// Find peers through the mainline DHT (BEP 5), and announce our listening port there.
    /// With --dht-bootstrap, a private DHT of your own nodes (see the README).
    #[arg(long)]
    dht: bool,
    /// UDP port of the DHT node [default: any free port].
    #[arg(long, value_name = "PORT", requires = "dht")]
    dht_port: Option<u16>,
    /// A DHT node to join through, as HOST:PORT (repeatable), in place of the public routers:
    /// for a private DHT.
    #[arg(long, value_name = "HOST:PORT", requires = "dht")]
    dht_bootstrap: Vec<String>,
}

impl DhtArgs {
    fn config(self) -> Option<vmt_swarm::DhtConfig> {
        self.dht.then(|| vmt_swarm::DhtConfig {
            port: self.dht_port.unwrap_or(0),
            bootstrap: self.dht_bootstrap,
        })
    }
}

/// Starting from a magnet link instead of a .torrent.
#[derive(Args)]
struct MagnetArgs {
    /// Start from a magnet link (BEP 9: xt=urn:btih: in hex or base32, dn, tr, x.pe) instead of
    /// a .torrent: the info dictionary (and a vmt seeder's block-hash table) is fetched from
    /// the link's peers (x.pe), the --peers and the trackers (tr, --tracker), verified, and
    /// kept as --torrent, so a restart needs no peer for it. Quote the link in a shell.
    #[arg(long, value_name = "LINK")]
    magnet: Option<vmt_swarm::Magnet>,
    /// With --magnet: also ask this tracker for peers (repeatable).
    #[arg(long = "tracker", value_name = "URL", requires = "magnet")]
    trackers: Vec<String>,
    /// With --magnet: give up when no peer sent the metadata within this long [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration, requires = "magnet")]
    metadata_timeout: Option<Duration>,
}

/// The `.torrent` a command works from, and the peers a magnet link names: `--torrent` as
/// given, or the torrent of `--magnet`, fetched from peers and kept at `--torrent` (else at
/// `default`).
async fn torrent_source(
    torrent: Option<PathBuf>,
    m: MagnetArgs,
    peers: &[PeerAddr],
    encryption: vmt_swarm::Encryption,
    default: impl FnOnce(&vmt_swarm::Magnet) -> PathBuf,
    cancel: &CancellationToken,
) -> Result<(PathBuf, Vec<PeerAddr>)> {
    use vmt_runtime::magnet::{resolve, MagnetParams, DEFAULT_METADATA_TIMEOUT};
    let Some(magnet) = m.magnet else {
        let torrent = torrent.context("give --torrent T or --magnet LINK")?;
        return Ok((torrent, Vec::new()));
    };
    let path = torrent.unwrap_or_else(|| default(&magnet));
    let resolved = resolve(
        MagnetParams {
            peers: peers.to_vec(),
            trackers: m.trackers,
            torrent: path,
            timeout: m.metadata_timeout.unwrap_or(DEFAULT_METADATA_TIMEOUT),
            encryption,
            magnet,
        },
        cancel.clone(),
    )
    .await?;
    match resolved.fetched_in {
        Some(t) => eprintln!(
            "metadata fetched from peers in {:.3} s, verified, kept in {}",
            t.as_secs_f64(),
            resolved.torrent.display()
        ),
        None => eprintln!(
            "using {}, kept from an earlier run of this magnet link",
            resolved.torrent.display()
        ),
    }
    Ok((resolved.torrent, resolved.peers))
}

/// Message Stream Encryption (the obfuscated handshake Transmission and libtorrent dial).
#[derive(Args)]
struct EncryptionArgs {
    /// plaintext: dial the plain BitTorrent handshake; prefer: dial MSE offering RC4 and
    /// plaintext, and select plaintext when a peer offers it (two vmt peers then pay no RC4;
    /// Transmission and libtorrent get RC4); require: MSE with RC4 only, plain handshakes
    /// refused. Incoming MSE is answered in every mode; a peer that hangs up on one handshake
    /// is dialed once in the other (not with require).
    #[arg(long, value_name = "MODE", default_value_t = vmt_swarm::Encryption::Prefer)]
    encryption: vmt_swarm::Encryption,
}

/// The web seeds (BEP 19 HTTP origins) of a downloading client.
#[derive(Args)]
struct WebSeedArgs {
    /// Also fetch from this HTTP(S) URL of the image, with Range requests (repeatable; the
    /// torrent's own web seeds are used anyway). Peers come first: the web seed serves what no
    /// peer has, or demanded blocks peers are too slow for. A URL ending in / gets the
    /// torrent's name.
    #[arg(long = "web-seed", value_name = "URL")]
    urls: Vec<String>,
    /// Most the web seeds together may send, in bits (100Mbit) or bytes (10MiB/s; a bare
    /// number) per second; unlimited when absent.
    #[arg(long = "web-seed-limit", value_name = "RATE")]
    limit: Option<Rate>,
}

/// The rate limits of a downloading client.
#[derive(Args)]
struct Limits {
    /// Download limit, in bits (100Mbit) or bytes (10MiB/s; a bare number) per second;
    /// unlimited when absent.
    #[arg(long, value_name = "RATE")]
    download_limit: Option<Rate>,
    /// Upload limit, in bits (100Mbit) or bytes (10MiB/s; a bare number) per second;
    /// unlimited when absent.
    #[arg(long, value_name = "RATE")]
    upload_limit: Option<Rate>,
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
    #[arg(long, value_name = "T",
          conflicts_with_all = ["torrent_out", "piece_size", "tracker", "web_seed"])]
    torrent: Option<PathBuf>,
    /// Where to write the created .torrent [default: IMG.torrent].
    #[arg(long, value_name = "T")]
    torrent_out: Option<PathBuf>,
    #[command(flatten)]
    new_torrent: NewTorrentArgs,
    /// Upload limit, in bits (100Mbit) or bytes (10MiB/s; a bare number) per second;
    /// unlimited when absent.
    #[arg(long, value_name = "RATE")]
    upload_limit: Option<Rate>,
    /// Peers uploaded to at once (rotating among interested peers).
    #[arg(long, value_name = "N", default_value_t = 4)]
    upload_slots: usize,
    /// How often one upload slot moves to the peer waiting longest. A time-dilated crowd
    /// (`replay-client --dilation K`) needs K times the default, as `datasets/scale.sh` gives.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = units::parse_duration)]
    rechoke: Duration,
    /// Inject each piece into the crowd once, for a flash crowd of vmt clients: a request for
    /// a piece that another sharing vmt client holds, or is being sent, is declined (it fetches
    /// it from that peer), and those clients ask this seeder only for blocks they read or
    /// are about to read, never background fill. Stock clients and --no-upload clients are
    /// served as always. The pieces nobody reads then never leave this seeder.
    #[arg(long)]
    inject: bool,
    /// Serve urgent requests: a vmt client (run with --urgent) asks for the blocks its reader
    /// waits for with `vmt_urgent`, and they go before the seeder's other uploads; a client the
    /// seeder chokes may ask too, up to 512 KiB queued at a time. Only with --inject: a plain seeder would send each client its own copy of every
    /// block it waits for, and a crowd stalls on those copies.
    #[arg(long)]
    urgent: bool,
    /// Also dial this peer, as HOST:PORT (repeatable): for leechers that cannot dial us, e.g.
    /// Transmission, which never dials 127.0.0.0/8 addresses.
    #[arg(long, value_name = "HOST:PORT")]
    peer: Vec<PeerAddr>,
    #[command(flatten)]
    dht: DhtArgs,
    #[command(flatten)]
    encryption: EncryptionArgs,
}

/// What goes into a created torrent (`seed` without --torrent, and `torrent`).
#[derive(Args)]
struct NewTorrentArgs {
    /// Piece size of the created torrent: a power of two from 16KiB to 16MiB.
    #[arg(long, value_name = "SIZE", default_value = "256KiB", value_parser = units::parse_size_u32)]
    piece_size: u32,
    /// Announce URL to put in the created torrent (repeatable); a seeder announces to it.
    #[arg(long, value_name = "URL")]
    tracker: Vec<String>,
    /// HTTP(S) URL of the image to put in the created torrent as a web seed (BEP 19
    /// `url-list`; repeatable): clients fetch from it what no peer has. A URL ending in / is a
    /// directory: clients append the image's name.
    #[arg(long, value_name = "URL")]
    web_seed: Vec<String>,
}

#[derive(Args)]
struct TorrentArgs {
    /// The image file to hash (read-only).
    #[arg(long, value_name = "IMG")]
    image: PathBuf,
    /// Where to write the .torrent [default: IMG.torrent].
    #[arg(long, value_name = "T")]
    out: Option<PathBuf>,
    #[command(flatten)]
    new_torrent: NewTorrentArgs,
}

#[derive(Args)]
struct FetchArgs {
    /// The image's .torrent; with --magnet, where the torrent fetched from peers is kept
    /// [default: OUT.torrent].
    #[arg(long, value_name = "T", required_unless_present = "magnet")]
    torrent: Option<PathBuf>,
    #[command(flatten)]
    magnet: MagnetArgs,
    /// A peer to download from, as HOST:PORT (a name or an IP address; repeatable); optional
    /// when the torrent has trackers.
    #[arg(long, value_name = "HOST:PORT")]
    peer: Vec<PeerAddr>,
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
    /// No peer exchange (BEP 11): neither tell peers of each other nor dial peers they tell
    /// of, e.g. in a swarm whose membership is given.
    #[arg(long)]
    no_pex: bool,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    dht: DhtArgs,
    #[command(flatten)]
    encryption: EncryptionArgs,
    #[command(flatten)]
    web_seeds: WebSeedArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            // VMT_LOG in every vmt tool; RUST_LOG as well, as Rust programs usually read it.
            tracing_subscriber::EnvFilter::try_from_env("VMT_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: in a log file or a pipe they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Two workers: peer I/O is light; hashing and disk writes happen inline per piece.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmt-run: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let cancel = shutdown_on_signals();
        match cli.cmd {
            Cmd::Seed(a) => seed(a, cancel).await,
            Cmd::Torrent(a) => torrent(a, cancel).await,
            Cmd::Fetch(a) => fetch(a, cancel).await,
            Cmd::Mount(a) => mount(a, cancel).await,
            Cmd::Boot(a) => boot(a, cancel).await,
            Cmd::ReplayClient(a) => replay_client::replay_client(a, cancel).await,
            Cmd::Demo { keep } => demo(keep, cancel).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmt-run: error: {e:#}");
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

/// Binds `addr` if given, with an error naming it.
async fn bind(addr: Option<SocketAddr>) -> Result<Option<tokio::net::TcpListener>> {
    Ok(match addr {
        Some(addr) => Some(Engine::bind(addr).await?),
        None => None,
    })
}

/// Prints every `every`-th status line when there is no terminal to draw bars on, so a log
/// still shows progress and "no reachable peer".
struct PlainLog {
    enabled: bool,
    ticks: u32,
}

impl PlainLog {
    fn new(bar: &ProgressBar) -> PlainLog {
        PlainLog {
            enabled: bar.is_hidden(),
            ticks: 0,
        }
    }

    fn tick(&mut self, line: impl FnOnce() -> String) {
        self.ticks += 1;
        if self.enabled && self.ticks % 25 == 0 {
            eprintln!("status: {}", line());
        }
    }
}

/// A mount's progress in one line, for a log.
/// The status as one log line. Ended stalls only: a read still waiting shows in "waiting"
/// (before, a log said "stalls 0.00 s" while a read had waited for a minute).
fn status_line(st: &vmt_runtime::Status) -> String {
    let oldest = st.oldest_parked.as_ref().map_or_else(String::new, |o| {
        format!(
            " (longest {:.0} s, {} blocks missing)",
            o.waited_s, o.missing
        )
    });
    format!(
        "{}/{} pieces, {} | {} misses, {} waiting{oldest}, stalls {:.2} s",
        st.pieces_present,
        st.pieces_total,
        st.peer_status,
        st.read_misses,
        st.parked_now,
        st.stalls.total_s
    )
}

/// `vmt-run torrent`: hash with a bar, write, and print what a user shares next.
async fn torrent(a: TorrentArgs, cancel: CancellationToken) -> Result<()> {
    let params = TorrentParams {
        piece_size: a.new_torrent.piece_size,
        out: a.out,
        trackers: a.new_torrent.tracker,
        web_seeds: a.new_torrent.web_seed,
        ..TorrentParams::new(a.image)
    }
    .check()?;
    let bar = ProgressBar::new(0);
    let t = make_torrent::make(&params, &cancel, |ev| match ev {
        TorrentEvent::Hashing { total, .. } => {
            bar.set_length(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message("hashing");
            bar.suspend(|| eprintln!("{ev}"));
        }
        TorrentEvent::Hashed { done, .. } => bar.set_position(done),
        _ => {
            bar.finish_and_clear();
            eprintln!("{ev}");
        }
    })
    .await?;
    let mut out = format!(
        "{}: {} pieces, info hash {}, {} web seed(s), {} tracker(s)\n",
        params.out().display(),
        t.piece_count(),
        t.info_hash().as_string(),
        t.web_seeds().len(),
        t.trackers().len()
    );
    // Without a tracker a magnet link finds nobody (but through --dht).
    if !t.trackers().is_empty() {
        out += &format!("magnet link: {}\n", t.magnet_link(None));
    }
    Ok(stdout::print(&out)?)
}

async fn seed(a: SeedArgs, cancel: CancellationToken) -> Result<()> {
    let params = SeedParams {
        torrent: a.torrent,
        piece_size: a.new_torrent.piece_size,
        torrent_out: a.torrent_out,
        trackers: a.new_torrent.tracker,
        web_seeds: a.new_torrent.web_seed,
        upload_limit: a.upload_limit,
        upload_slots: a.upload_slots,
        inject: a.inject,
        urgent: a.urgent,
        rechoke_interval: a.rechoke,
        peers: a.peer,
        dht: a.dht.config(),
        encryption: a.encryption.encryption,
        ..SeedParams::new(a.image)
    }
    .check()?;
    // Bind first: a busy port fails at once, before minutes of hashing.
    let listener = Engine::bind(a.listen).await?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
    let mut seeding_since = None;
    let stats = vmt_runtime::seed::run(params, listener, cancel, |ev| match ev {
        SeedEvent::Progress(_) | SeedEvent::Torrent(TorrentEvent::Hashed { .. }) => {
            bar.set_message(ev.to_string());
            bar.tick();
        }
        _ => {
            if let SeedEvent::Seeding { .. } = ev {
                seeding_since = Some(std::time::Instant::now());
            }
            bar.suspend(|| eprintln!("{ev}"))
        }
    })
    .await?;
    bar.finish_and_clear();
    let elapsed = seeding_since.map_or(Duration::ZERO, |t| t.elapsed());
    Ok(stdout::print(&format!(
        "seeded: {}\n",
        Totals::of(&stats, elapsed)
    ))?)
}

async fn fetch(a: FetchArgs, cancel: CancellationToken) -> Result<()> {
    let out = a.out.clone();
    let (torrent, link_peers) = torrent_source(
        a.torrent,
        a.magnet,
        &a.peer,
        a.encryption.encryption,
        |_| vmt_runtime::magnet::torrent_beside(&out),
        &cancel,
    )
    .await?;
    let params = FetchParams {
        peers: [a.peer, link_peers].concat(),
        seed_after: a.seed,
        upload: !a.no_upload,
        pex: !a.no_pex,
        download_limit: a.limits.download_limit,
        upload_limit: a.limits.upload_limit,
        dht: a.dht.config(),
        encryption: a.encryption.encryption,
        web_seeds: a.web_seeds.urls,
        web_seed_limit: a.web_seeds.limit,
        ..FetchParams::new(torrent, a.out)
    }
    .check()?;
    let listener = bind(a.listen).await?;
    let bar = ProgressBar::new(params.torrent().total_length());
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} | {msg}",
        )
        .expect("valid template"),
    );
    let mut log = PlainLog::new(&bar);
    let seed_after = params.seed_after();
    let started = std::time::Instant::now();
    // The report is printed from the callback; a failure to print is returned after it.
    let mut printed = Ok(());
    let result = vmt_runtime::fetch::run(params, listener, cancel, |ev| match ev {
        FetchEvent::Progress(st) => {
            bar.set_position(st.have_bytes);
            bar.set_message(ev.to_string());
            log.tick(|| format!("{}/{} pieces | {ev}", st.pieces.have, st.total_pieces));
        }
        FetchEvent::Done(report) => {
            bar.finish_and_clear();
            printed = stdout::print(&format!("{report}\n"));
        }
        FetchEvent::Seeding => eprintln!("seeding until Ctrl-C"),
        _ => bar.suspend(|| eprintln!("{ev}")),
    })
    .await;
    bar.finish_and_clear();
    let report = result?;
    printed?;
    if seed_after {
        stdout::print(&format!(
            "fetched and seeded: {}\n",
            Totals::of(&report.stats, started.elapsed())
        ))?;
    }
    Ok(())
}

async fn mount(a: MountArgs, cancel: CancellationToken) -> Result<()> {
    let mountpoint = a.mountpoint.clone().context("--mountpoint is required")?;
    let (params, io) = mount_setup(a, mountpoint.clone(), &cancel).await?;
    let bars = indicatif::MultiProgress::new();
    let pieces = bars.add(ProgressBar::new(0));
    pieces.set_style(
        ProgressStyle::with_template("pieces {bar:30} {pos}/{len} | {msg}")
            .expect("valid template"),
    );
    let belief = bars.add(ProgressBar::new_spinner());
    let reads = bars.add(ProgressBar::new_spinner());
    let mut log = PlainLog::new(&pieces);
    let report = vmt_runtime::mount::run(params, io, cancel, |ev| match ev {
        MountEvent::Serving { path, strategy } => {
            eprintln!("serving {} ({strategy}); Ctrl-C to unmount", path.display())
        }
        MountEvent::Status(st) => {
            pieces.set_length(st.pieces_total as u64);
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
            let oldest = st.oldest_parked.as_ref().map_or_else(String::new, |o| {
                format!(
                    " (longest {:.0} s, {} blocks missing)",
                    o.waited_s, o.missing
                )
            });
            reads.set_message(format!(
                "reads {} hit / {} missed, {} waiting{oldest} | stalls {} totalling {:.2} s",
                st.read_hits, st.read_misses, st.parked_now, st.stalls.count, st.stalls.total_s
            ));
            log.tick(|| status_line(st));
        }
        _ => {}
    })
    .await;
    bars.clear().ok();
    let report = report?;
    let how = match report.unmount.as_deref() {
        Some("lazy") => "the image was still open (a loop device, a VM, a reader): detached \
            lazily, its holders get I/O errors from now on; "
            .to_string(),
        Some("gone") => "the mount was already gone; ".to_string(),
        Some(failed) if failed.starts_with("failed") => format!("unmount {failed}; "),
        _ => "unmounted: ".to_string(),
    };
    if report.fuse_left_behind && report.unmount.as_deref() == Some("clean") {
        eprintln!(
            "vmt-run: the filesystem was still in use from another mount namespace; it ends now"
        );
    }
    let failed = match report.stalls.failed_at_shutdown {
        0 => String::new(),
        n => format!(" ({n} still waiting, answered EIO at shutdown)"),
    };
    eprintln!(
        "{how}{} reads ({} waited), {} stalls{failed} totalling {:.2} s, downloaded {}, uploaded {}",
        report.read_hits + report.read_misses,
        report.read_misses,
        report.stalls.count,
        report.stalls.total_s,
        indicatif::HumanBytes(report.downloaded),
        indicatif::HumanBytes(report.uploaded)
    );
    if let Some(failed) = report.unmount.filter(|u| u.starts_with("failed")) {
        bail!(
            "{} may still be mounted: unmount {failed}",
            mountpoint.display()
        );
    }
    // Issue 12, item 5: the report is written; the exit status still says the download failed.
    if let Some(failure) = report.failure {
        bail!("{failure}");
    }
    Ok(())
}

/// The runtime's params and sockets from `mount`'s flags (shared by `boot`), the image
/// appearing in `mountpoint`.
async fn mount_setup(
    a: MountArgs,
    mountpoint: PathBuf,
    cancel: &CancellationToken,
) -> Result<(vmt_runtime::RuntimeParams, MountIo)> {
    use vmt_runtime::mount::{default_data_dir, default_strategy};
    let (torrent, link_peers) = torrent_source(
        a.torrent,
        a.magnet,
        &a.peer,
        a.encryption.encryption,
        vmt_runtime::magnet::default_torrent_path,
        cancel,
    )
    .await?;
    let params = vmt_runtime::RuntimeParams {
        strategy: a.strategy.unwrap_or(default_strategy(a.bundle.is_some())),
        data_dir: a.data.unwrap_or_else(|| default_data_dir(&torrent)),
        peers: vmt_runtime::peer_addr::resolve_all(&[a.peer, link_peers].concat())?,
        dht: a.dht.config(),
        encryption: a.encryption.encryption,
        torrent,
        bundle: a.bundle,
        profile: a.profile,
        oracle_trace: a.oracle_trace,
        mountpoint,
        upload: !a.no_upload,
        urgent: a.urgent,
        download_limit: a.limits.download_limit.map(Rate::bytes_per_s),
        upload_limit: a.limits.upload_limit.map(Rate::bytes_per_s),
        web_seeds: a.web_seeds.urls,
        web_seed_limit: a.web_seeds.limit.map(Rate::bytes_per_s),
        rechoke_interval: vmt_runtime::DEFAULT_RECHOKE,
        busy_backlog: vmt_runtime::DEFAULT_BUSY_BACKLOG,
        dial_from: None,
        window_bytes: a.window.bytes(),
        threads: a.threads,
        access: if a.allow_other {
            vmt_runtime::Access::Everyone
        } else {
            vmt_runtime::Access::Owner
        },
        read_timeout: a.read_timeout,
    };
    let status = match a.status {
        Some(addr) => {
            if let Some(warning) = addr.exposure_warning() {
                eprintln!("vmt-run: warning: {warning}");
            }
            Some(
                tokio::net::TcpListener::bind(addr.0)
                    .await
                    .with_context(|| format!("status address {addr}"))?,
            )
        }
        None => None,
    };
    let io = MountIo {
        listener: bind(a.listen).await?,
        status,
        report: a.report,
    };
    Ok((params, io))
}

async fn boot(a: BootArgs, cancel: CancellationToken) -> Result<()> {
    use vmt_runtime::boot::{BootEnd, BootEvent, BootParams, KernelBoot};
    // A mountpoint of our own unless given; removed after the unmount.
    let temp_mnt = match &a.mount.mountpoint {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("vmt-boot-")
                .tempdir()
                .context("a temp mountpoint")?,
        ),
    };
    let mountpoint = match (&a.mount.mountpoint, &temp_mnt) {
        (Some(m), _) => m.clone(),
        (None, Some(t)) => t.path().to_owned(),
        (None, None) => unreachable!("a temp mountpoint is made when none is given"),
    };
    let kernel = match (a.kernel, a.kernel_from_image) {
        (Some(kernel), _) => KernelBoot::Files {
            kernel,
            initrd: a.initrd,
            append: a.append,
        },
        (None, true) => KernelBoot::FromImage { append: a.append },
        (None, false) if a.append.is_some() => {
            bail!("--append needs --kernel or --kernel-from-image")
        }
        (None, false) => KernelBoot::Bootloader,
    };
    let console = a.console.clone();
    let params = BootParams {
        qemu: a.qemu,
        memory: a.memory,
        cpus: a.cpus,
        force_tcg: a.tcg,
        console: a.console,
        kernel,
        extra: a.qemu_args,
    };
    let (runtime, io) = mount_setup(a.mount, mountpoint, &cancel).await?;
    // With the console on the terminal, the VM owns it: no progress lines.
    let mut log = PlainLog {
        enabled: console.is_some(),
        ticks: 0,
    };
    let report = vmt_runtime::boot::run(runtime, io, params, cancel, |ev| match ev {
        BootEvent::Mount(MountEvent::Serving { path, strategy }) => {
            eprintln!("serving {} ({strategy})", path.display())
        }
        BootEvent::Kernel { kernel, initrd } => eprintln!(
            "direct kernel boot: {}{}",
            kernel.display(),
            initrd.map_or_else(String::new, |i| format!(" with {}", i.display()))
        ),
        BootEvent::Started { accel, pid } => eprintln!(
            "booting with {accel} (qemu pid {pid}); console: {}",
            console.as_ref().map_or_else(
                || "here (Ctrl-A X quits qemu)".to_string(),
                |c| c.display().to_string()
            )
        ),
        BootEvent::Mount(MountEvent::Status(st)) => log.tick(|| status_line(st)),
        _ => {}
    })
    .await;
    drop(temp_mnt);
    let report = report?;
    let st = &report.status;
    eprintln!(
        "vm: {} after {:.1} s ({})",
        report.end, report.vm_s, report.accel
    );
    eprintln!(
        "mount: {}: {} reads ({} waited), {} stalls totalling {:.2} s; downloaded {} ({} of {} \
         pieces), uploaded {}; {} writes, {} blocks in the overlay",
        match st.unmount.as_deref() {
            Some("clean") => "unmounted".to_string(),
            Some(other) => format!("unmount: {other}"),
            None => "not mounted".to_string(),
        },
        st.read_hits + st.read_misses,
        st.read_misses,
        st.stalls.count,
        st.stalls.total_s,
        indicatif::HumanBytes(st.downloaded),
        st.pieces_present,
        st.pieces_total,
        indicatif::HumanBytes(st.uploaded),
        st.writes,
        st.overlay_blocks,
    );
    if let Some(failure) = &st.failure {
        bail!("{failure}");
    }
    match report.end {
        BootEnd::PoweredOff => Ok(()),
        // Everything is stopped and unmounted: only the exit status is left to say.
        BootEnd::Interrupted => std::process::exit(130),
        end => bail!("{end}"),
    }
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
    vmt_appliance::ext4::check_demo_prerequisites()?;
    let dir = vmt_runtime::demo::Workdir::new(keep).map_err(|e| anyhow::anyhow!("{e}"))?;
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
        r = vmt_runtime::demo::run(dir.path(), &ui) => r.map_err(|e| anyhow::anyhow!("{e}"))?,
        _ = cancel.cancelled() => bail!("interrupted"),
    };
    bars.clear().ok();
    stdout::print(&format!(
        "\n{}\n(demo finished in {:.0} s)\n",
        vmt_runtime::demo::table(&rows),
        started.elapsed().as_secs_f64()
    ))?;
    Ok(())
}
