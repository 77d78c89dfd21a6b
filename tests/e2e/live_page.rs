//! Issue 16 item 2: `vmt-run mount --status`'s live page, in a real browser.
//!
//! Headless chromium, driven through chromedriver (WebDriver) by fantoccini, opens the page of a
//! real mount streaming from a `vmt-run seed`, and reads the page's DOM: the map's cells, the
//! reads waiting, the ended stalls, the peers. Everything asserted must change on the page
//! while the test watches, so a page that stops updating fails.
//!
//! Chromium and chromedriver come from Debian (`.ci/run` installs `chromium chromium-driver`).
//! Without them the test says so and passes, unless `CI` or `VMT_BROWSER_TEST` is set: then it
//! fails.

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use vmt_tests::{content, free_port, wait_until, CliSeeder, MountProc, Paused};

const LIMIT: Duration = Duration::from_secs(60);
/// 16 MiB of 256 KiB pieces: 64 cells on the map.
const IMAGE: usize = 16 << 20;
const PIECES: usize = 64;
/// Slow enough that the map fills over several seconds (16 MiB at 2 MiB/s: 8 s) for the test
/// to see it grow.
const DOWNLOAD_LIMIT: &str = "2MiB/s";
/// The read that stalls: block 320 (piece 20).
const STALL_OFFSET: u64 = 5 << 20;
const STALL_BLOCK: u32 = (STALL_OFFSET / 16384) as u32;

/// `name` on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// chromedriver in a process group of its own; the group (chromedriver and the chromium it
/// started) is killed on drop, so a failing test leaves no browser behind.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(chromedriver: &Path) -> Driver {
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let addr = format!("127.0.0.1:{port}");
        wait_until("chromedriver to listen", LIMIT, || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        Driver {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group of our own child (it leads the group).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css))
        .await
        .expect("query the page")
        .len()
}

/// The `data-blocks` of the rows `css`, as block numbers.
async fn row_blocks(c: &Client, css: &str) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for row in c.find_all(Locator::Css(css)).await.expect("query the page") {
        let blocks = row.attr("data-blocks").await.unwrap().unwrap_or_default();
        out.push(blocks.split(',').filter_map(|b| b.parse().ok()).collect());
    }
    out
}

async fn attr(c: &Client, css: &str, name: &str) -> Option<String> {
    let el = c.find(Locator::Css(css)).await.ok()?;
    el.attr(name).await.ok().flatten()
}

/// Polls `cond` on the page every 100 ms until true, failing after `limit`.
macro_rules! wait_page {
    ($what:expr, $limit:expr, $cond:expr) => {{
        let start = Instant::now();
        loop {
            if $cond {
                break;
            }
            assert!(start.elapsed() < $limit, "timed out waiting for {}", $what);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

#[test]
fn r16_2_the_live_page_shows_the_map_filling_and_a_stall_in_a_browser() {
    let (chromium, chromedriver) = match (on_path("chromium"), on_path("chromedriver")) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            let must =
                std::env::var_os("CI").is_some() || std::env::var_os("VMT_BROWSER_TEST").is_some();
            assert!(
                !must,
                "chromium and chromedriver are needed for the browser test (Debian: apt-get install chromium chromium-driver; .ci/run installs them)"
            );
            eprintln!(
                "SKIPPED r16_2 browser test: chromium or chromedriver not installed (apt-get install chromium chromium-driver); set CI or VMT_BROWSER_TEST to make this a failure"
            );
            return;
        }
    };
    let dir = tempfile::Builder::new()
        .prefix("h16b-live-")
        .tempdir()
        .unwrap();
    let data = content(16, IMAGE);
    let image = dir.path().join("app.img");
    std::fs::write(&image, &data).unwrap();
    let seeder = CliSeeder::start(&image, &dir.path().join("app.torrent"), &[]);
    // Paused before the mount dials it: nothing arrives until the test says so.
    let paused = Paused::stop(seeder.proc.child.id());

    let mut mount = MountProc::start(
        dir.path(),
        "mount",
        &seeder.torrent,
        &["--peer", &seeder.addr, "--download-limit", DOWNLOAD_LIMIT],
    );
    let served = mount.served.clone();
    let status_addr = mount.status_addr.clone();

    let driver = Driver::start(&chromedriver);
    let profile = dir.path().join("chromium-profile");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let page = format!("http://{status_addr}/");
    let seeder_addr = seeder.addr.clone();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", profile.display())],
            }),
        );
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a WebDriver session with headless chromium");
        c.goto(&page).await.expect("open the live page");

        // The page connects and draws the whole map, empty: the seeder sends nothing yet.
        wait_page!("the page to go live", LIMIT, {
            c.find(Locator::Id("conn"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                == "live"
                && attr(&c, "#map", "data-cells").await.as_deref() == Some("64")
        });
        assert_eq!(count(&c, "#map i").await, PIECES);
        assert_eq!(count(&c, "#map i.present").await, 0);
        assert_eq!(count(&c, "#parked tr.stall").await, 0);

        // (2) A read parks: the page shows it with its block, its age grows, its piece shows
        // as demanded.
        let reader = {
            let served = served.clone();
            std::thread::spawn(move || {
                let f = std::fs::File::open(served).unwrap();
                let mut buf = vec![0u8; 4096];
                f.read_exact_at(&mut buf, STALL_OFFSET).map(|()| buf)
            })
        };
        wait_page!("the stall on the page", LIMIT, {
            row_blocks(&c, "#parked tr.stall")
                .await
                .iter()
                .any(|b| b.contains(&STALL_BLOCK))
        });
        assert!(
            count(&c, "#map i.demanded").await >= 1,
            "the waited-for piece shows as demanded"
        );
        let age = |c: &Client| {
            let c = c.clone();
            async move {
                attr(&c, "#parked tr.stall", "data-age")
                    .await
                    .and_then(|a| a.parse::<f64>().ok())
                    .unwrap_or(0.0)
            }
        };
        let first_age = age(&c).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let later_age = age(&c).await;
        assert!(
            later_age >= first_age + 0.5,
            "the stall's age moves on the page: {first_age} then {later_age}"
        );

        // Answered: the read returns the right bytes, the stall leaves the list and is among
        // the ended ones.
        drop(paused);
        let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
            .await
            .unwrap()
            .expect("the parked read is answered");
        assert_eq!(got, data[STALL_OFFSET as usize..][..4096]);
        wait_page!("the stall to end on the page", LIMIT, {
            count(&c, "#parked tr.stall").await == 0
                && row_blocks(&c, "#recent tr.ended")
                    .await
                    .iter()
                    .any(|b| b.contains(&STALL_BLOCK))
        });

        // (1) The map fills while the test watches, to every piece.
        let mut seen = Vec::new();
        let start = Instant::now();
        loop {
            let present = count(&c, "#map i.present").await;
            if seen.last() != Some(&present) {
                seen.push(present);
            }
            if present == PIECES {
                break;
            }
            assert!(start.elapsed() < LIMIT, "the map stopped at {seen:?}");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "the map only fills: {seen:?}"
        );
        let between: BTreeSet<_> = seen.iter().filter(|&&n| n > 1 && n < PIECES).collect();
        assert!(
            between.len() >= 3,
            "the page showed the map filling, not just its end: {seen:?}"
        );
        assert_eq!(
            c.find(Locator::Id("count-present"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            PIECES.to_string()
        );
        // Each cell names its source; the peers table shows the seeder.
        let title = attr(&c, "#map i.present:last-child", "title")
            .await
            .unwrap_or_default();
        assert!(
            title.contains(&format!("from peer {seeder_addr}")),
            "a present cell names its source: {title:?}"
        );
        let peers = c
            .find(Locator::Id("peers"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(peers.contains(&seeder_addr), "the peers table: {peers:?}");
        c.close().await.expect("close the browser session");
    });
    let status = mount.proc.sigterm();
    assert!(status.success(), "vmt-run mount: {status:?}");
    drop(driver);
}
