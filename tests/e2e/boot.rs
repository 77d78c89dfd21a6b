//! `vmt-run boot`: a real VM (qemu, TCG) booted through its own bootloader from a FUSE mount
//! fed by a loopback `vmt-run seed`; see `vmt_tests::boot_image` for the image.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmt_formats::image::ImageId;
use vmt_tests::boot_image::{boot_image, APPEND, BOOT_BAD, BOOT_OK};
use vmt_tests::{bin, run_with_timeout, wait_until, CliSeeder, Proc};

/// A TCG boot of the test image takes 10-30 s on a busy 2-core machine.
const BOOT_LIMIT: Duration = Duration::from_secs(180);

/// `vmt-run boot` with the flags every test gives: emulation (KVM, where it works, is not
/// what CI has), the console and the report in `dir`.
fn boot_cmd(dir: &Path, seeder: &CliSeeder) -> Command {
    let mut cmd = Command::new(bin("vmt-run"));
    cmd.arg("boot")
        .arg("--tcg")
        .args(["--memory", "256M", "--strategy", "stream", "--peer"])
        .arg(&seeder.addr)
        .arg("--torrent")
        .arg(&seeder.torrent)
        .arg("--mountpoint")
        .arg(dir.join("mnt"))
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--console")
        .arg(dir.join("console.log"))
        .arg("--report")
        .arg(dir.join("report.json"));
    cmd
}

/// Nothing of this test left mounted, nor a qemu on its mount.
fn assert_nothing_left(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let d = dir.to_str().unwrap();
    assert!(!mounts.contains(d), "a mount is left behind:\n{mounts}");
    if let Some(cmdline) = qemu_on(dir) {
        panic!("qemu still runs: {cmdline}");
    }
}

/// The command line of a qemu running on a file under `dir`, if one runs.
fn qemu_on(dir: &Path) -> Option<String> {
    let d = dir.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .find(|c| c.contains("qemu") && c.contains(d))
}

fn console(dir: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(dir.join("console.log")).unwrap_or_default())
        .replace('\r', "")
}

#[test]
fn boot_from_a_loopback_swarm_powers_off_and_leaves_no_mount() {
    let image = boot_image();
    let before = ImageId::of_file(&image, |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mnt")).unwrap();
    // 100 Mbit/s: the guest's reads wait on the swarm, as over a real link.
    let seeder = CliSeeder::start(
        &image,
        &dir.path().join("boot.torrent"),
        &["--upload-limit", "100Mbit"],
    );
    let started = Instant::now();
    let out = run_with_timeout(&mut boot_cmd(dir.path(), &seeder), BOOT_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console = console(dir.path());
    assert!(
        out.status.success(),
        "{}\nstderr:\n{stderr}\nconsole:\n{console}",
        out.status
    );
    assert!(
        console.contains(BOOT_OK) && !console.contains(BOOT_BAD),
        "no {BOOT_OK} on the console:\n{console}"
    );
    assert!(stderr.contains("vm: the VM powered off"), "{stderr}");
    assert_nothing_left(dir.path());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["unmount"], "clean", "{report}");
    let reads = report["read_hits"].as_u64().unwrap() + report["read_misses"].as_u64().unwrap();
    assert!(reads > 0, "{report}");
    // The guest's reads were served by the swarm (the boot needs the kernel, the initramfs
    // and 8 MiB of data), and its writes went to the overlay, not to the seeder's image.
    assert!(
        report["downloaded"].as_u64().unwrap() > 16 << 20,
        "{report}"
    );
    assert!(report["overlay_blocks"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(ImageId::of_file(&image, |_| {}).unwrap(), before);
    eprintln!(
        "booted in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        stderr.lines().rev().take(2).collect::<Vec<_>>().join(" | ")
    );
}

#[test]
fn kernel_from_image_boots_without_the_bootloader() {
    let image = boot_image();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mnt")).unwrap();
    let seeder = CliSeeder::start(&image, &dir.path().join("boot.torrent"), &[]);
    let out = run_with_timeout(
        boot_cmd(dir.path(), &seeder).args(["--kernel-from-image", "--append", APPEND]),
        BOOT_LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console = console(dir.path());
    assert!(out.status.success(), "{stderr}\nconsole:\n{console}");
    assert!(stderr.contains("direct kernel boot"), "{stderr}");
    // The kernel came from the image through a loop mount of the served file, and qemu
    // started it itself: EXTLINUX never ran.
    assert!(console.contains(BOOT_OK), "{console}");
    assert!(!console.contains("SYSLINUX"), "{console}");
    assert_nothing_left(dir.path());
}

#[test]
fn ctrl_c_mid_boot_stops_the_vm_and_unmounts() {
    let image = boot_image();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mnt")).unwrap();
    // Slow enough that the boot is still reading when the signal comes.
    let seeder = CliSeeder::start(
        &image,
        &dir.path().join("boot.torrent"),
        &["--upload-limit", "8Mbit"],
    );
    let stderr_path = dir.path().join("stderr.log");
    let mut proc = Proc::spawn(
        boot_cmd(dir.path(), &seeder)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap()),
    );
    proc.mountpoint = Some(dir.path().join("mnt"));
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    wait_until("qemu to start", BOOT_LIMIT, || {
        stderr().contains("booting with")
    });
    // Mid-boot: the firmware and bootloader are reading the disk.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!console(dir.path()).contains(BOOT_OK), "booted too soon");
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe { libc::kill(proc.child.id() as i32, libc::SIGINT) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = proc.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "vmt-run boot ignored SIGINT:\n{}",
            stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = stderr();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_nothing_left(dir.path());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["unmount"], "clean", "{report}");
}
