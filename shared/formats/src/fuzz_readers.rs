//! Issue 12's fuzz targets for this crate's readers: trace files, CSV and blkparse text. Each
//! runs for a bounded time (see [`crate::fuzz`]); no input may panic, every refusal names the
//! file, and no input may take more memory than its size justifies.

use std::path::Path;

use crate::fuzz::{fuzz, scratch_dir, sealed, Target};
use crate::image::ImageId;
use crate::text::{read_text_from, MAX_TEXT_LEN};
use crate::trace::{Op, Record, Trace, TraceKind};

/// Memory a reader may take for `len` input bytes: the bytes themselves, what decoding them
/// can fairly make (a record of a few encoded bytes is 32 in memory, a vector doubles as it
/// grows) and a fixed margin for buffers and a first allocation of a claimed length.
fn bound(len: usize) -> usize {
    64 * len + (4 << 20)
}

fn sample(kind: TraceKind, records: u64) -> Trace {
    let tasks: Vec<String> = match kind {
        TraceKind::Task => vec!["boot".into()],
        TraceKind::Session => vec!["boot".into(), "edit, 2%".into(), "build".into()],
    };
    let n = tasks.len() as u64;
    Trace {
        image: ImageId {
            size: 64 << 20,
            sha256: [5; 32],
        },
        kind,
        label: "boot".into(),
        run: 3,
        start_unix_us: 1_700_000_000_000_000,
        recorder: "fuzz".into(),
        tasks,
        records: (0..records)
            .map(|i| Record {
                t_us: i * 250,
                op: if i % 7 == 0 { Op::Write } else { Op::Read },
                offset: (i * 7919 % 16000) * 4096,
                len: 4096 << (i % 4),
                task: (i * n / records.max(1)) as u16,
            })
            .collect(),
    }
}

fn seeds() -> Vec<Trace> {
    vec![
        sample(TraceKind::Task, 40),
        sample(TraceKind::Session, 60),
        sample(TraceKind::Task, 0),
    ]
}

/// Trace files as `vmt-record show` and `vmt-train fit` read them, mutated anywhere (mostly
/// refused by magic, length or checksum) and mutated behind a checksum made to match (so the
/// decoder and the trace's own checks see the damage).
#[test]
fn r12_fuzz_trace_files() {
    let dir = scratch_dir();
    let path = dir.path().join("fuzz.vmtrace");
    let files: Vec<Vec<u8>> = seeds()
        .iter()
        .map(|t| {
            t.save(&path).unwrap();
            std::fs::read(&path).unwrap()
        })
        .collect();
    for (name, reseal) in [("trace", false), ("trace-sealed", true)] {
        let target = Target {
            name,
            seeds: &files,
            memory: &bound,
        };
        let prepare = |b: Vec<u8>| if reseal { sealed(b) } else { b };
        let outcome = fuzz(target, prepare, |input| {
            std::fs::write(&path, input).unwrap();
            match Trace::load(&path) {
                Ok(t) => {
                    t.validate().expect("a loaded trace is valid");
                    Ok(())
                }
                Err(e) => {
                    let message = e.to_string();
                    assert!(message.contains("fuzz.vmtrace"), "unnamed: {message}");
                    Err(message)
                }
            }
        });
        assert!(outcome.inputs > 100, "{outcome:?}");
    }
}

/// Fuzzes a text reader: bounded text reading, then `parse`, whose traces must be valid.
fn fuzz_text(
    name: &str,
    seeds: Vec<String>,
    path: &Path,
    parse: impl Fn(&str) -> Result<Trace, crate::trace::TraceError>,
) {
    let files: Vec<Vec<u8>> = seeds.into_iter().map(String::into_bytes).collect();
    let target = Target {
        name,
        seeds: &files,
        memory: &bound,
    };
    let outcome = fuzz(
        target,
        |b| b,
        |input| {
            let text = read_text_from(path, "trace text", &mut &input[..], MAX_TEXT_LEN)
                .map_err(|e| e.to_string())?;
            let trace = parse(&text).map_err(|e| e.to_string())?;
            trace.validate().expect("an imported trace is valid");
            Ok(())
        },
    );
    assert!(outcome.accepted > 0, "{outcome:?}");
}

/// The CSV interchange form, read as `vmt-record import` and `vmt-train fit` read it.
#[test]
fn r12_fuzz_csv() {
    let path = Path::new("fuzz.csv");
    let csv = seeds().iter().map(Trace::to_csv).collect();
    fuzz_text("csv", csv, path, |text| Trace::from_csv(path, text, None));
}

/// blkparse's default text output, as `vmt-record import --format blkparse` reads it.
#[test]
fn r12_fuzz_blkparse() {
    let mut text = String::new();
    for i in 0..40u64 {
        let (sector, sectors) = (i * 4099 % 100_000, 8 << (i % 3));
        for (j, action) in ["Q", "G", "D", "C"].iter().enumerate() {
            text.push_str(&format!(
                "  8,0    {}   {}   {}.{:09}   697  {action}  {} {sector} + {sectors} [qemu]\n",
                i % 4,
                i * 4 + j as u64,
                i / 10,
                (i % 10) * 100_000 + j as u64 * 1000,
                if i % 5 == 0 { "WS" } else { "R" }
            ));
        }
    }
    text.push_str("CPU0 (8,0):\n Reads Queued:           1,        4KiB\n");
    let image = ImageId::size_only(64 << 20);
    let path = Path::new("fuzz.blktrace");
    fuzz_text("blkparse", vec![text], path, |text| {
        Trace::from_blkparse(path, text, image, "vm")
    });
}
