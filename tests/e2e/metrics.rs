//! Issue 14 part 6: `GET /metrics` of a real mount, parsed as Prometheus would parse it
//! (`prometheus-parse`), before and after reads: the counters move as the reads say.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use vmt_tests::{content, wait_until, CliSeeder, MountProc, Paused};

const LIMIT: Duration = Duration::from_secs(60);
/// 8 MiB of 256 KiB pieces.
const IMAGE: usize = 8 << 20;
/// The read that stalls: 3 MiB in (piece 12).
const STALL_OFFSET: u64 = 3 << 20;
/// How long the seeder is held back while the read waits: the stall is at least this long.
const HOLD: Duration = Duration::from_millis(1500);

/// A scrape: `(name, sorted "k=v" labels)` to value; histograms as `(le, count)`, by name.
struct Metrics {
    values: HashMap<(String, String), f64>,
    histograms: HashMap<String, Vec<(f64, f64)>>,
    content_type: String,
}

impl Metrics {
    fn get(&self, name: &str, labels: &str) -> f64 {
        *self
            .values
            .get(&(name.to_string(), labels.to_string()))
            .unwrap_or_else(|| panic!("{name}{{{labels}}} is exported"))
    }
}

/// `GET /metrics` on `addr`, parsed.
fn scrape(addr: &str) -> Metrics {
    let mut sock = TcpStream::connect(addr).expect("connect to the status server");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    sock.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_string();
    let parsed = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parses");
    let mut values = HashMap::new();
    let mut histograms = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => {
                values.insert((s.metric, labels.join(",")), v);
            }
            Value::Histogram(h) => {
                let mut b: Vec<(f64, f64)> = h.iter().map(|c| (c.less_than, c.count)).collect();
                b.sort_by(|x, y| x.0.total_cmp(&y.0));
                histograms.insert(s.metric, b);
            }
            Value::Summary(_) => panic!("no summaries are exported"),
        }
    }
    Metrics {
        values,
        histograms,
        content_type,
    }
}

#[test]
fn r14_6_metrics_parse_and_move_with_reads_and_a_stall() {
    let dir = tempfile::Builder::new()
        .prefix("d4-metrics-")
        .tempdir()
        .unwrap();
    let data = content(14, IMAGE);
    let image = dir.path().join("app.img");
    std::fs::write(&image, &data).unwrap();
    let seeder = CliSeeder::start(&image, &dir.path().join("app.torrent"), &[]);
    // Held before the mount dials it: nothing arrives until the test lets it go.
    let resume = Paused::stop(seeder.proc.child.id());

    let mut mount = MountProc::start(
        dir.path(),
        "mount",
        &seeder.torrent,
        &["--peer", &seeder.addr, "--strategy", "demand"],
    );
    let served = mount.served.clone();
    let status = mount.status_addr.clone();

    let before = scrape(&status);
    assert!(
        before.content_type.starts_with("text/plain; version=0.0.4"),
        "the text exposition format: {:?}",
        before.content_type
    );
    assert_eq!(before.get("vmt_blocks_present", ""), 0.0);
    assert_eq!(before.get("vmt_blocks", ""), (IMAGE / 16384) as f64);
    assert_eq!(before.get("vmt_pieces", ""), (IMAGE / (256 << 10)) as f64);
    assert_eq!(before.get("vmt_reads_total", "result=miss"), 0.0);
    assert_eq!(before.get("vmt_stall_seconds_count", ""), 0.0);
    assert_eq!(before.get("vmt_downloaded_bytes_total", "source=peer"), 0.0);
    assert_eq!(
        before.get("vmt_downloaded_bytes_total", "source=origin"),
        0.0
    );

    // A read parks on a missing block while the seeder is held back.
    let reader = {
        let served = served.clone();
        std::thread::spawn(move || {
            let f = std::fs::File::open(served).unwrap();
            let mut buf = vec![0u8; 4096];
            f.read_exact_at(&mut buf, STALL_OFFSET).map(|()| buf)
        })
    };
    wait_until("the read to park", LIMIT, || {
        scrape(&status).get("vmt_reads_parked", "") >= 1.0
    });
    let parked = scrape(&status);
    assert_eq!(parked.get("vmt_reads_total", "result=miss"), 1.0);
    assert_eq!(
        parked.get("vmt_stall_seconds_count", ""),
        0.0,
        "still waiting"
    );
    std::thread::sleep(HOLD);
    drop(resume);
    let got = reader.join().unwrap().expect("the parked read is answered");
    assert_eq!(got, data[STALL_OFFSET as usize..][..4096]);

    // Read everything: more reads, present pieces up to all of them.
    let f = std::fs::File::open(&served).unwrap();
    let mut all = vec![0u8; IMAGE];
    f.read_exact_at(&mut all, 0).unwrap();
    assert!(all == data, "the mount serves the image");
    let after = scrape(&status);

    let moved = |name: &str, labels: &str| (before.get(name, labels), after.get(name, labels));
    let (b, a) = moved("vmt_reads_total", "result=miss");
    assert!(a >= 1.0 && a > b, "misses went up: {b} -> {a}");
    let (b, a) = moved("vmt_reads_total", "result=hit");
    assert!(a >= b, "hits never go down: {b} -> {a}");
    assert!(
        after.get("vmt_reads_total", "result=hit") + after.get("vmt_reads_total", "result=miss")
            > 1.0,
        "the whole-image read counts too"
    );
    let (b, a) = moved("vmt_downloaded_bytes_total", "source=peer");
    assert!(a >= IMAGE as f64 && a > b, "peer bytes: {b} -> {a}");
    let (_, a) = moved("vmt_useful_bytes_total", "");
    assert_eq!(a, IMAGE as f64, "every byte made a block present once");
    assert_eq!(
        after.get("vmt_downloaded_bytes_total", "source=origin"),
        0.0
    );
    assert_eq!(
        after.get("vmt_pieces_present", ""),
        (IMAGE / (256 << 10)) as f64
    );
    assert_eq!(after.get("vmt_blocks_present", ""), (IMAGE / 16384) as f64);
    assert!(after.get("vmt_peers_connected", "") >= 1.0);

    // The stall: counted once it ended, at least as long as the seeder was held.
    let count = after.get("vmt_stall_seconds_count", "");
    assert!(count >= 1.0, "the stall is counted: {count}");
    let sum = after.get("vmt_stall_seconds_sum", "");
    assert!(sum >= HOLD.as_secs_f64(), "stall time {sum} s");
    let buckets = &after.histograms["vmt_stall_seconds"];
    assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY));
    assert_eq!(buckets.last().map(|b| b.1), Some(count));
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    let below_hold = buckets
        .iter()
        .filter(|b| b.0 <= HOLD.as_secs_f64())
        .map(|b| b.1)
        .fold(0.0, f64::max);
    assert!(
        below_hold < count,
        "the long stall is in a bucket above {HOLD:?}: {buckets:?}"
    );

    let exit = mount.proc.sigterm();
    assert!(exit.success(), "the mount stops cleanly: {exit:?}");
}
