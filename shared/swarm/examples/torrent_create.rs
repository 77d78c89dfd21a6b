//! Time to make the torrent of an image: vmt's one pass (SHA-1 per piece, SHA-256 per block and
//! of the image) against the two passes it replaced (librqbit's `create_torrent`, then the
//! image's SHA-256).
//!
//! ```text
//! cargo run --release -p vmt-swarm --example torrent_create -- IMAGE [PIECE_KIB=256] [--cold] [--baseline] [--id-cached] [--out FILE]
//! ```
//! `--cold` evicts the image from the page cache first (`POSIX_FADV_DONTNEED`, this file only);
//! `--baseline` times the old way instead. The identity cache is a fresh temporary one, so the
//! image's SHA-256 is computed (as on a first `vmt-run seed`), unless `--id-cached` fills it
//! first (as `vmt-record` does when the author records traces): then neither way recomputes it.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

use vmt_swarm::Torrent;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let out = args
        .iter()
        .position(|a| a == "--out")
        .map(|i| PathBuf::from(&args[i + 1]));
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--out"))
        .map(|(_, a)| a)
        .collect();
    let image = PathBuf::from(positional.first().ok_or("usage: IMAGE [PIECE_KIB]")?);
    let piece = positional.get(1).map_or(Ok(256), |p| p.parse::<u32>())? * 1024;
    let ids = tempfile::tempdir()?;
    std::env::set_var("XDG_CACHE_HOME", ids.path());
    if flag("--id-cached") {
        vmt_formats::image::IdCache::user().identify(&image, |_| {})?;
    }
    if flag("--cold") {
        let file = std::fs::File::open(&image)?;
        // SAFETY: posix_fadvise only reads its integer arguments; the fd is open for the call.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise");
    }
    let len = std::fs::metadata(&image)?.len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let (bytes, what) = if flag("--baseline") {
        let _runtime = rt.enter();
        let spawner = librqbit::spawn_utils::BlockingSpawner::new(1);
        let options = librqbit::CreateTorrentOptions {
            piece_length: Some(piece),
            ..Default::default()
        };
        let created = rt.block_on(librqbit::create_torrent(&image, options, &spawner))?;
        vmt_formats::image::IdCache::user().identify(&image, |_| {})?;
        (
            created.as_bytes()?.to_vec(),
            "librqbit create_torrent + image SHA-256",
        )
    } else {
        let t = rt.block_on(Torrent::create(&image, piece, Vec::new()))?;
        (t.as_bytes().to_vec(), "vmt one pass")
    };
    let (secs, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu_start);
    println!(
        "{what}: {:.2} s ({cpu:.2} s CPU) for {:.2} GB ({:.0} MB/s), {} KiB pieces, .torrent {} bytes",
        secs,
        len as f64 / 1e9,
        len as f64 / 1e6 / secs,
        piece / 1024,
        bytes.len()
    );
    if let Some(out) = out {
        std::fs::write(out, bytes)?;
    }
    Ok(())
}

/// User + system CPU time of this process (all threads) so far: on a shared machine, what
/// the work costs regardless of how much of the CPUs it got.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
