//! Real ext4 appliance images for the demo and tests: files generated from a seed, packed with
//! `mkfs.ext4 -d`, and tasks that loop-mount the image and read their file sets.
//!
//! The demo appliance has blocks every task needs (a "kernel", a C library, `/etc`), a few
//! task-specific file sets of clearly different content, and filler no task reads, so a task
//! touches a small share of the image as in real appliances.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why an appliance could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    /// A file operation failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A generated image would be too small to measure anything.
    #[error("a generated image of {size} bytes is too small to measure: give at least {min} bytes (e.g. 512MiB)")]
    ImageTooSmall {
        /// The size asked for.
        size: u64,
        /// The least accepted.
        min: u64,
    },
    /// The demo lacks something it needs before it starts (root, FUSE, mkfs.ext4).
    #[error("the demo needs {0}; nothing was built")]
    DemoNeeds(&'static str),
    /// An external tool is missing or failed.
    #[error("{tool}: {message}")]
    Tool {
        /// The command.
        tool: &'static str,
        /// What happened.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ApplianceError + '_ {
    move |source| ApplianceError::Io {
        path: path.to_owned(),
        error: source,
    }
}

/// Runs `cmd`, turning a missing binary or a failure into a clear error.
pub fn run_tool(tool: &'static str, cmd: &mut Command) -> Result<String, ApplianceError> {
    let out = cmd.output().map_err(|e| ApplianceError::Tool {
        tool,
        message: if e.kind() == std::io::ErrorKind::NotFound {
            format!("not installed ({e}); on Debian: apt-get install -y e2fsprogs fuse3 mount")
        } else {
            e.to_string()
        },
    })?;
    if !out.status.success() {
        return Err(ApplianceError::Tool {
            tool,
            message: format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Checks, before anything is built, what the demos need: root (they loop-mount the image they
/// build, which only root may do, and mount FUSE), `/dev/fuse`, and `mkfs.ext4` on `PATH`.
/// Without it a user waited for the image to be built and then read `Permission denied`.
pub fn check_demo_prerequisites() -> Result<(), ApplianceError> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(ApplianceError::DemoNeeds(
            "root: it mounts FUSE filesystems and loop devices (run it as root, e.g. with sudo)",
        ));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(ApplianceError::DemoNeeds(
            "FUSE, but /dev/fuse is missing (apt-get install -y fuse3, or modprobe fuse)",
        ));
    }
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    if !on_path("mkfs.ext4") {
        return Err(ApplianceError::DemoNeeds(
            "mkfs.ext4, which is not on PATH (apt-get install -y e2fsprogs)",
        ));
    }
    Ok(())
}

/// Packs directory `root` into a fresh ext4 image of `size_mib` MiB with 4 KiB blocks.
pub fn make_ext4(root: &Path, image: &Path, size_mib: u64) -> Result<(), ApplianceError> {
    let _ = std::fs::remove_file(image);
    run_tool(
        "mkfs.ext4",
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-b",
                "4096",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
            ])
            .arg("-d")
            .arg(root)
            .arg(image)
            .arg(format!("{size_mib}M")),
    )?;
    Ok(())
}

/// A task of the demo appliance: the files it reads, in order.
#[derive(Clone, Debug)]
pub struct DemoTask {
    /// Task label.
    pub name: &'static str,
    /// Paths inside the image, absolute from its root.
    pub files: Vec<String>,
}

/// A built demo appliance.
#[derive(Clone, Debug)]
pub struct DemoAppliance {
    /// The raw ext4 image.
    pub image: PathBuf,
    /// Its tasks.
    pub tasks: Vec<DemoTask>,
}

/// Builds the demo appliance in `dir` (`dir/root` holds the files, `dir/demo.img` the image).
pub fn build_demo(dir: &Path) -> Result<DemoAppliance, ApplianceError> {
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    let mut seed = 1u64;
    let mut write = |rel: &str, len: usize| -> Result<String, ApplianceError> {
        let path = root.join(rel.trim_start_matches('/'));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut f = std::fs::File::create(&path).map_err(io_err(&path))?;
        seed += 1;
        f.write_all(&crate::content::bytes(seed, len))
            .map_err(io_err(&path))?;
        Ok(rel.to_string())
    };
    let mut common = vec![
        write("/boot/vmlinuz", 3 << 20)?,
        write("/lib/libc.so.6", 1536 << 10)?,
        write("/lib/ld-linux.so.2", 200 << 10)?,
    ];
    for name in ["passwd", "group", "hosts", "fstab", "profile", "os-release"] {
        common.push(write(&format!("/etc/{name}"), 2 << 10)?);
    }
    let task = |name: &'static str, files: Vec<String>| DemoTask {
        name,
        files: common.iter().cloned().chain(files).collect(),
    };
    let mut shell = vec![write("/bin/bash", 1200 << 10)?];
    for i in 0..20 {
        shell.push(write(&format!("/usr/share/terminfo/t{i}"), 3 << 10)?);
    }
    let mut python = vec![write("/usr/bin/python3", 5 << 20)?];
    for i in 0..40 {
        python.push(write(
            &format!("/usr/lib/python3/mod{i}.py"),
            (20 + i % 7 * 8) << 10,
        )?);
    }
    let mut compile = vec![
        write("/usr/lib/gcc/cc1", 7 << 20)?,
        write("/usr/bin/as", 700 << 10)?,
    ];
    for i in 0..60 {
        compile.push(write(&format!("/usr/include/h{i}.h"), 8 << 10)?);
    }
    let mut database = vec![write("/usr/bin/sqlite3", 1500 << 10)?];
    database.push(write("/var/lib/db/data.db", 5 << 20)?);
    for i in 0..16 {
        database.push(write(&format!("/var/lib/db/idx{i}"), 32 << 10)?);
    }
    for i in 0..12 {
        write(&format!("/usr/share/filler/f{i}"), 4 << 20)?;
    }
    let tasks = vec![
        task("shell", shell),
        task("python", python),
        task("compile", compile),
        task("database", database),
    ];
    let image = dir.join("demo.img");
    make_ext4(&root, &image, 96)?;
    Ok(DemoAppliance { image, tasks })
}

/// A read-only loop mount of an image file; unmounted (and its loop device freed) on drop.
pub struct LoopMount {
    dir: PathBuf,
    mounted: bool,
}

impl LoopMount {
    /// Mounts `image` read-only at `dir` (created if missing). Needs root.
    pub fn new(image: &Path, dir: &Path) -> Result<LoopMount, ApplianceError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        run_tool(
            "mount",
            Command::new("mount")
                .args(["-t", "ext4", "-o", "loop,ro,noload"])
                .arg(image)
                .arg(dir),
        )?;
        Ok(LoopMount {
            dir: dir.to_owned(),
            mounted: true,
        })
    }

    /// The mount's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads every file of `files` (paths from the image root) to the end.
    pub fn read_files(&self, files: &[String]) -> Result<u64, ApplianceError> {
        let mut total = 0;
        for rel in files {
            let path = self.dir.join(rel.trim_start_matches('/'));
            total += std::fs::read(&path).map_err(io_err(&path))?.len() as u64;
        }
        Ok(total)
    }

    /// Unmounts now, reporting failure.
    pub fn unmount(mut self) -> Result<(), ApplianceError> {
        self.mounted = false;
        run_tool("umount", Command::new("umount").arg(&self.dir)).map(|_| ())
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
