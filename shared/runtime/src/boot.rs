//! `vmt-run boot`: a VM started on the mounted image while the image streams.
//!
//! [`run`] mounts the image with [`mount::serve`] and, as the mount's session, starts
//! `qemu-system-x86_64` on the served file. When qemu exits (the guest powered off; with
//! `-no-reboot` a reboot exits too) or the cancellation token fires (Ctrl-C, SIGTERM: qemu is
//! stopped first, SIGTERM then SIGKILL), the session ends and the mount is unmounted, so no
//! mount is left behind and nothing holds the image when it goes.
//!
//! # The drive
//! `-drive file=IMAGE,format=raw,if=virtio,cache=none,aio=threads`:
//! - `cache=none` opens the image with `O_DIRECT`: the guest's reads reach the mount as the
//!   guest issues them, not widened by the host's readahead (which would demand pieces the
//!   guest never reads and hide the guest's own access order from the planner), and the data
//!   is not cached twice (the guest has its own page cache).
//! - `aio=threads` hands each request to a qemu worker thread. A read of a missing piece
//!   blocks in the FUSE mount until the piece arrives; on a worker thread only that request
//!   waits, while the vCPUs and qemu's main loop go on (Linux native AIO submits synchronously
//!   on a FUSE file and would stall the whole VM).
//!
//! The guest's writes reach the mount like any write: they go to its copy-on-write overlay in
//! the data directory; the pristine pieces stay as the swarm has them.
//!
//! # Booting
//! The image must boot by itself (a bootloader in its boot sector, e.g. EXTLINUX, or a
//! partition table with one). For an image without one, [`KernelBoot::FromImage`] copies
//! `/boot/vmlinuz-*` and its `initrd.img-*` out of the image through a read-only loop mount
//! of the served file (ext4) and boots them with `-kernel`/`-initrd`, and
//! [`KernelBoot::Files`] boots given files.

use std::cell::RefCell;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;
use vmt_appliance::ext4::{ApplianceError, LoopMount};

use crate::mount::{self, MountError, MountEvent, MountIo};
use crate::{RuntimeParams, Status};

/// The kernel command line of a direct kernel boot when none is given: the image's own
/// filesystem as root (a virtio disk, unpartitioned), the console on the serial port.
pub const DEFAULT_APPEND: &str = "root=/dev/vda rw console=ttyS0";
/// How long qemu may take to exit after SIGTERM before it is killed: it flushes nothing of
/// ours (the overlay is the mount's), so a few seconds is plenty.
const QEMU_STOP_WAIT: Duration = Duration::from_secs(10);
/// How long after qemu died of a signal we wait to see the same Ctrl-C reach us: a terminal's
/// Ctrl-C signals qemu and vmt-run together, and either may notice first.
const SIGNAL_GRACE: Duration = Duration::from_millis(300);
/// What qemu prints when a signal stops it (it then exits 0, like a power-off).
const QEMU_SIGNALLED: &str = "terminating on signal";
/// What qemu prints when KVM cannot run the guest's code; qemu then pauses the VM for ever.
/// (Nested KVM without unrestricted-guest support fails so on EXTLINUX's real-mode code.)
const KVM_FAILED: &str = "KVM internal error";

/// How the kernel is found.
#[derive(Clone, Debug, Default)]
pub enum KernelBoot {
    /// The image boots by itself: the firmware runs its bootloader.
    #[default]
    Bootloader,
    /// `/boot/vmlinuz-*` and `/boot/initrd.img-*` copied out of the image (ext4).
    FromImage {
        /// Kernel command line [default: [`DEFAULT_APPEND`]].
        append: Option<String>,
    },
    /// Given files.
    Files {
        /// The kernel.
        kernel: PathBuf,
        /// Its initramfs, if any.
        initrd: Option<PathBuf>,
        /// Kernel command line [default: [`DEFAULT_APPEND`]].
        append: Option<String>,
    },
}

/// The VM to start on the mounted image.
#[derive(Clone, Debug)]
pub struct BootParams {
    /// The qemu binary.
    pub qemu: PathBuf,
    /// Guest memory, as qemu's `-m` takes it (`1G`, `512M`).
    pub memory: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Use emulation (TCG) even when KVM is usable.
    pub force_tcg: bool,
    /// Write the serial console here instead of the terminal.
    pub console: Option<PathBuf>,
    /// How the kernel is found.
    pub kernel: KernelBoot,
    /// More qemu arguments, appended as given (e.g. `-nic user`).
    pub extra: Vec<OsString>,
}

impl Default for BootParams {
    fn default() -> BootParams {
        BootParams {
            qemu: "qemu-system-x86_64".into(),
            memory: "1G".into(),
            cpus: 1,
            force_tcg: false,
            console: None,
            kernel: KernelBoot::Bootloader,
            extra: Vec::new(),
        }
    }
}

/// How the VM's instructions run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// Emulation, and why.
    Tcg {
        /// Why not KVM.
        why: String,
    },
}

impl Accel {
    /// KVM when `/dev/kvm` opens read-write (what qemu needs), else TCG.
    pub fn detect(force_tcg: bool) -> Accel {
        if force_tcg {
            return Accel::Tcg {
                why: "asked for".into(),
            };
        }
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
        {
            Ok(_) => Accel::Kvm,
            Err(e) => Accel::Tcg {
                why: format!("/dev/kvm: {e}"),
            },
        }
    }

    fn args(&self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg { .. } => &["-accel", "tcg"],
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Accel::Kvm => f.write_str("KVM"),
            Accel::Tcg { why } => write!(f, "TCG emulation: {why}"),
        }
    }
}

/// How the VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootEnd {
    /// qemu exited by itself with status 0: the guest powered off (or rebooted).
    PoweredOff,
    /// We stopped qemu: the cancellation token fired (Ctrl-C, SIGTERM).
    Interrupted,
    /// Someone else stopped qemu with a signal.
    Killed {
        /// What qemu said, or the signal.
        how: String,
    },
    /// KVM could not run the guest's code (qemu paused the VM; we stopped it).
    KvmFailed,
    /// qemu failed: it could not start the VM, or stopped with an error.
    Failed {
        /// Its exit code.
        code: Option<i32>,
    },
}

impl fmt::Display for BootEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootEnd::PoweredOff => f.write_str("the VM powered off"),
            BootEnd::Interrupted => f.write_str("interrupted: the VM was stopped"),
            BootEnd::Killed { how } => write!(f, "the VM was stopped from outside ({how})"),
            BootEnd::KvmFailed => f.write_str(
                "KVM could not run the VM (\"KVM internal error\" above; --tcg emulates it)",
            ),
            BootEnd::Failed { code: Some(c) } => write!(f, "qemu failed with exit status {c}"),
            BootEnd::Failed { code: None } => f.write_str("qemu failed"),
        }
    }
}

/// What a boot did.
#[derive(Debug)]
pub struct BootReport {
    /// How the VM ended.
    pub end: BootEnd,
    /// How it ran.
    pub accel: Accel,
    /// Seconds from qemu's start to its exit.
    pub vm_s: f64,
    /// The mount's final status (also written to the report file).
    pub status: Status,
}

/// What a boot reports as it goes.
#[derive(Debug)]
#[non_exhaustive]
pub enum BootEvent<'a> {
    /// The mount's events (serving, live status).
    Mount(MountEvent<'a>),
    /// A direct kernel boot found its kernel.
    Kernel {
        /// The kernel, as copied or given.
        kernel: &'a Path,
        /// The initramfs.
        initrd: Option<&'a Path>,
    },
    /// qemu started.
    Started {
        /// How the VM runs.
        accel: &'a Accel,
        /// qemu's pid.
        pid: u32,
    },
}

/// Why a boot failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// The mount failed (boxed: it is large, and rare).
    #[error(transparent)]
    Mount(Box<MountError>),
    /// qemu could not be started.
    #[error("cannot start {}: {source}{hint}", qemu.display())]
    Qemu {
        /// The binary.
        qemu: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
        /// What to install.
        hint: &'static str,
    },
    /// The console file could not be created.
    #[error("console {}: {source}", path.display())]
    Console {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel could not be taken from the image.
    #[error("no kernel to boot: {0}")]
    Kernel(String),
    /// The loop mount for the kernel failed.
    #[error("reading the kernel from the image: {0}")]
    Appliance(#[from] ApplianceError),
}

impl From<MountError> for BootError {
    fn from(e: MountError) -> BootError {
        BootError::Mount(Box::new(e))
    }
}

/// Mounts the image, boots it, unmounts when the VM has ended; see the module doc.
pub async fn run(
    params: RuntimeParams,
    io: MountIo,
    boot: BootParams,
    cancel: CancellationToken,
    on: impl FnMut(BootEvent<'_>),
) -> Result<BootReport, BootError> {
    // Checked before mounting, so a missing qemu fails before any network work.
    check_qemu(&boot.qemu)?;
    let accel = Accel::detect(boot.force_tcg);
    // The mount's status loop and the session report from one task, never at once.
    let on = RefCell::new(on);
    let (status, vm) = mount::serve(
        params,
        io,
        |ev| (on.borrow_mut())(BootEvent::Mount(ev)),
        |image| session(image, &boot, &accel, &cancel, &on),
    )
    .await?;
    let (end, vm_s) = vm?;
    Ok(BootReport {
        end,
        accel,
        vm_s,
        status,
    })
}

/// Fails early, with what to install, when `qemu` cannot run.
fn check_qemu(qemu: &Path) -> Result<(), BootError> {
    std::process::Command::new(qemu)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(drop)
        .map_err(|source| BootError::Qemu {
            qemu: qemu.to_owned(),
            hint: if source.kind() == std::io::ErrorKind::NotFound {
                " (on Debian: apt-get install qemu-system-x86)"
            } else {
                ""
            },
            source,
        })
}

/// The mount's session: runs the VM on `image` until it ends or `cancel` fires; returns how
/// it ended and how long it ran.
async fn session(
    image: PathBuf,
    boot: &BootParams,
    accel: &Accel,
    cancel: &CancellationToken,
    on: &RefCell<impl FnMut(BootEvent<'_>)>,
) -> Result<(BootEnd, f64), BootError> {
    // The kernel copied out of the image; kept until qemu has read it.
    let mut kernel_dir = None;
    let kernel = match &boot.kernel {
        KernelBoot::Bootloader => None,
        KernelBoot::FromImage { append } => {
            let tmp = tempfile::Builder::new()
                .prefix("vmt-boot-kernel")
                .tempdir()
                .map_err(|e| BootError::Kernel(format!("a temp dir: {e}")))?;
            let (img, dir) = (image.clone(), tmp.path().to_owned());
            kernel_dir = Some(tmp);
            let (k, i) = tokio::task::spawn_blocking(move || kernel_from_image(&img, &dir))
                .await
                .map_err(|e| BootError::Kernel(e.to_string()))??;
            Some((k, i, append.clone()))
        }
        KernelBoot::Files {
            kernel,
            initrd,
            append,
        } => Some((kernel.clone(), initrd.clone(), append.clone())),
    };
    if let Some((k, i, _)) = &kernel {
        (on.borrow_mut())(BootEvent::Kernel {
            kernel: k,
            initrd: i.as_deref(),
        });
    }
    let mut cmd = tokio::process::Command::new(&boot.qemu);
    cmd.args(qemu_args(&image, boot, accel, kernel.as_ref()));
    match &boot.console {
        // The terminal: qemu's stdio is the serial console (Ctrl-A X quits qemu).
        None => cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit()),
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|source| BootError::Console {
                path: path.clone(),
                source,
            })?;
            cmd.stdin(Stdio::null()).stdout(file)
        }
    };
    // Passed through line by line, watching for qemu saying a signal stopped it.
    cmd.stderr(Stdio::piped()).kill_on_drop(true);
    // SAFETY: between fork and exec the closure only makes one async-signal-safe syscall.
    // qemu gets SIGTERM when the thread that started it dies, so a `kill -9` of vmt-run leaves
    // no VM running on a vanished mount. (The thread is the one driving the session, which
    // lives as long as the runtime: the binary's main thread, or a runtime worker.)
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| BootError::Qemu {
        qemu: boot.qemu.clone(),
        source,
        hint: "",
    })?;
    let started = Instant::now();
    let signalled = Arc::new(AtomicBool::new(false));
    let kvm_failed = CancellationToken::new();
    let stderr = child.stderr.take().map(|err| {
        let (signalled, kvm_failed) = (signalled.clone(), kvm_failed.clone());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains(QEMU_SIGNALLED) {
                    signalled.store(true, Ordering::Relaxed);
                }
                if line.contains(KVM_FAILED) {
                    kvm_failed.cancel();
                }
                eprintln!("{line}");
            }
        })
    });
    (on.borrow_mut())(BootEvent::Started {
        accel,
        pid: child.id().unwrap_or(0),
    });
    let exit = tokio::select! {
        s = child.wait() => s,
        _ = cancel.cancelled() => stop(&mut child).await,
        _ = kvm_failed.cancelled() => {
            // Let qemu finish printing the guest's registers first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop(&mut child).await
        }
    };
    let vm_s = started.elapsed().as_secs_f64();
    if let Some(task) = stderr {
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    drop(kernel_dir);
    let exit = exit.map_err(|source| BootError::Qemu {
        qemu: boot.qemu.clone(),
        source,
        hint: "",
    })?;
    let by_signal = signalled.load(Ordering::Relaxed) || exit.signal().is_some();
    if by_signal && !cancel.is_cancelled() {
        // A terminal's Ctrl-C reaches qemu and us together.
        let _ = tokio::time::timeout(SIGNAL_GRACE, cancel.cancelled()).await;
    }
    let end = if kvm_failed.is_cancelled() && !cancel.is_cancelled() {
        BootEnd::KvmFailed
    } else {
        ended(exit, by_signal, cancel.is_cancelled())
    };
    Ok((end, vm_s))
}

/// How the VM ended, from qemu's exit.
fn ended(exit: ExitStatus, by_signal: bool, cancelled: bool) -> BootEnd {
    if cancelled {
        BootEnd::Interrupted
    } else if by_signal {
        BootEnd::Killed {
            how: match exit.signal() {
                Some(s) => format!("signal {s}"),
                None => QEMU_SIGNALLED.into(),
            },
        }
    } else if exit.success() {
        BootEnd::PoweredOff
    } else {
        BootEnd::Failed { code: exit.code() }
    }
}

/// Stops qemu: SIGTERM (it exits cleanly and gives the terminal back), SIGKILL if it does not
/// exit within [`QEMU_STOP_WAIT`].
async fn stop(child: &mut tokio::process::Child) -> std::io::Result<ExitStatus> {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on our own child's pid, not yet reaped (`id` is Some); no memory is
        // involved.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    match tokio::time::timeout(QEMU_STOP_WAIT, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            tracing::warn!("qemu ignored SIGTERM for {QEMU_STOP_WAIT:?}; killing it");
            child.kill().await?;
            child.wait().await
        }
    }
}

/// qemu's arguments for booting `image`.
fn qemu_args(
    image: &Path,
    boot: &BootParams,
    accel: &Accel,
    kernel: Option<&(PathBuf, Option<PathBuf>, Option<String>)>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |a: &str| args.push(a.into());
    push("-name");
    push("vmt-boot");
    for a in accel.args() {
        push(a);
    }
    push("-m");
    push(&boot.memory);
    push("-smp");
    push(&boot.cpus.to_string());
    // No display, the serial port and qemu's monitor on stdio; exit instead of rebooting, so a
    // guest's reboot ends the session as a power-off does; no network unless asked for.
    for a in ["-nographic", "-no-reboot", "-nic", "none", "-drive"] {
        push(a);
    }
    let mut drive = OsString::from("file=");
    drive.push(escape_option(image.as_os_str()));
    drive.push(",format=raw,if=virtio,cache=none,aio=threads");
    args.push(drive);
    if let Some((k, initrd, append)) = kernel {
        args.push("-kernel".into());
        args.push(k.into());
        if let Some(i) = initrd {
            args.push("-initrd".into());
            args.push(i.into());
        }
        args.push("-append".into());
        args.push(append.as_deref().unwrap_or(DEFAULT_APPEND).into());
    }
    args.extend(boot.extra.iter().cloned());
    args
}

/// A value inside a qemu option list: commas are doubled.
fn escape_option(value: &std::ffi::OsStr) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// Copies the newest `/boot/vmlinuz-*` and its `/boot/initrd.img-*` out of `image` (ext4,
/// loop-mounted read-only) into `dir`.
fn kernel_from_image(image: &Path, dir: &Path) -> Result<(PathBuf, Option<PathBuf>), BootError> {
    let mnt = LoopMount::new(image, &dir.join("image"))?;
    let boot = mnt.dir().join("boot");
    let mut versions: Vec<String> = std::fs::read_dir(&boot)
        .map_err(|e| BootError::Kernel(format!("{}: {e}", boot.display())))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_owned)
        })
        .collect();
    versions.sort_by(|a, b| version_order(a, b));
    let version = versions
        .pop()
        .ok_or_else(|| BootError::Kernel("the image has no /boot/vmlinuz-*".into()))?;
    let copy = |from: PathBuf, to: &str| {
        let to = dir.join(to);
        std::fs::copy(&from, &to)
            .map(|_| to)
            .map_err(|e| BootError::Kernel(format!("{}: {e}", from.display())))
    };
    let kernel = copy(boot.join(format!("vmlinuz-{version}")), "vmlinuz")?;
    let initrd_in = boot.join(format!("initrd.img-{version}"));
    let initrd = if initrd_in.exists() {
        Some(copy(initrd_in, "initrd.img")?)
    } else {
        None
    };
    mnt.unmount()?;
    Ok((kernel, initrd))
}

/// Orders kernel versions with their numbers as numbers (`6.1.0-10` after `6.1.0-9`).
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<Result<u64, &str>> {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .map(|p| p.parse::<u64>().map_err(|_| p))
            .collect()
    }
    parts(a).cmp(&parts(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_in_the_image_path_are_doubled() {
        assert_eq!(
            escape_option(std::ffi::OsStr::new("/m/a,b.img")),
            OsString::from("/m/a,,b.img")
        );
    }

    #[test]
    fn the_drive_suits_a_fuse_backed_file() {
        let boot = BootParams::default();
        let args = qemu_args(Path::new("/m/app.img"), &boot, &Accel::Kvm, None);
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert!(args.contains(&"file=/m/app.img,format=raw,if=virtio,cache=none,aio=threads"));
        assert!(args.contains(&"-no-reboot"));
        assert!(!args.contains(&"-kernel"));
        let k = (PathBuf::from("/k"), None, None);
        let tcg = Accel::Tcg { why: "test".into() };
        let args = qemu_args(Path::new("/m/app.img"), &boot, &tcg, Some(&k));
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        let at = args.iter().position(|a| *a == "-append").unwrap();
        assert_eq!(args[at + 1], DEFAULT_APPEND);
        assert!(!args.contains(&"-initrd"));
        assert!(args.windows(2).any(|w| w == ["-accel", "tcg"]));
    }

    #[test]
    fn kernel_versions_order_by_number() {
        let mut v = vec!["6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64"];
        v.sort_by(|a, b| version_order(a, b));
        assert_eq!(v, ["5.10.0-30-amd64", "6.1.0-9-amd64", "6.1.0-10-amd64"]);
    }

    #[test]
    fn a_signal_we_sent_is_an_interruption_not_a_power_off() {
        let ok = ExitStatus::from_raw(0);
        assert_eq!(ended(ok, false, false), BootEnd::PoweredOff);
        assert_eq!(ended(ok, true, true), BootEnd::Interrupted);
        assert!(matches!(ended(ok, true, false), BootEnd::Killed { .. }));
        assert_eq!(
            ended(ExitStatus::from_raw(1 << 8), false, false),
            BootEnd::Failed { code: Some(1) }
        );
    }
}
