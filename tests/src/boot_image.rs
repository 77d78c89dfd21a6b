//! A small image that boots by itself, for `vmt-run boot`'s tests: a raw ext4 filesystem
//! (`mkfs.ext4 -d`) with EXTLINUX in its boot sector, a Debian kernel, an initramfs of
//! busybox and the kernel's virtio and ext4 modules, and an init on the disk that reads data
//! files, checks their SHA-256, writes a file, prints [`BOOT_OK`] and powers off.
//!
//! It needs, as `.ci/run` installs them: `extlinux`, `syslinux-common`, `busybox-static`,
//! `e2fsprogs`, `dpkg`, and a Debian kernel package (`linux-image-*-amd64_*.deb`) in
//! [`KERNEL_DEBS`] or named by `VMT_TEST_KERNEL_DEB`: it is unpacked with `dpkg-deb -x`, never
//! installed, so building needs no network. Built once per kernel and recipe, it is cached
//! beside the test binaries with its SHA-256 and rebuilt when it does not verify.

use std::path::{Path, PathBuf};
use std::process::Command;

use vmt_formats::image::ImageId;

/// What the disk's init prints once it has read its files and found them intact.
pub const BOOT_OK: &str = "VMT-BOOT-OK";
/// What it prints when the files read back wrong.
pub const BOOT_BAD: &str = "VMT-BOOT-BAD";
/// Where `.ci/run` puts the kernel package.
pub const KERNEL_DEBS: &str = "/var/cache/vmt-tests";
/// Bumped whenever the recipe below changes, so a cached image of an older recipe is rebuilt.
const RECIPE: u32 = 4;
/// Image size: kernel (8 MiB), initramfs (4 MiB), data and room to spare.
const IMAGE_MIB: u64 = 64;
/// The kernel command line: the initramfs finds the disk itself; a panic ends the VM at once.
pub const APPEND: &str = "console=ttyS0 quiet panic=-1";
/// The data files the init reads: enough pieces that the boot waits on the swarm.
const DATA_FILES: usize = 4;
const DATA_LEN: usize = 2 << 20;
/// The modules the initramfs loads, dependencies first (from their `depends=`; the kernel
/// package has no `modules.dep`, `depmod` makes it on install).
const MODULES: &[&str] = &[
    "lib/crc16",
    "fs/mbcache",
    "fs/jbd2/jbd2",
    "crypto/crc32c_generic",
    "fs/ext4/ext4",
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "drivers/block/virtio_blk",
];

/// The bootable image, built (or taken from the cache) once per test process.
pub fn boot_image() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_or_reuse).clone()
}

fn build_or_reuse() -> PathBuf {
    let deb = kernel_deb();
    let name = deb
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".deb"))
        .expect("a .deb file name")
        .to_owned();
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).unwrap();
    let image = cache.join(format!("boot-r{RECIPE}-{name}.img"));
    let sum = image.with_extension("img.sha256");
    if let (Ok(want), true) = (std::fs::read_to_string(&sum), image.exists()) {
        let have = ImageId::of_file(&image, |_| {}).map(|id| id.sha256_hex());
        if have.as_deref().ok() == Some(want.trim()) {
            return image;
        }
        eprintln!(
            "boot image {}: does not verify, rebuilding",
            image.display()
        );
    }
    let _ = std::fs::remove_file(&sum);
    let tmp = tempfile::Builder::new()
        .prefix("vmt-boot-image")
        .tempdir()
        .unwrap();
    let built = tmp.path().join("boot.img");
    build(&deb, tmp.path(), &built);
    let id = ImageId::of_file(&built, |_| {}).unwrap();
    std::fs::copy(&built, image.with_extension("img.part")).unwrap();
    std::fs::rename(image.with_extension("img.part"), &image).unwrap();
    std::fs::write(&sum, id.sha256_hex()).unwrap();
    image
}

/// `target/vmt-boot-image`: beside the profile directories, kept by `cargo build`.
fn cache_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<exe>
    exe.ancestors()
        .nth(3)
        .expect("the test binary lives in target/<profile>/deps")
        .join("vmt-boot-image")
}

/// The kernel package: `VMT_TEST_KERNEL_DEB`, else the newest in [`KERNEL_DEBS`].
fn kernel_deb() -> PathBuf {
    if let Some(p) = std::env::var_os("VMT_TEST_KERNEL_DEB") {
        return p.into();
    }
    let mut debs: Vec<PathBuf> = std::fs::read_dir(KERNEL_DEBS)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-image-") && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no Debian kernel package in {KERNEL_DEBS} (nor VMT_TEST_KERNEL_DEB): as .ci/run does, \
             mkdir -p {KERNEL_DEBS} && cd {KERNEL_DEBS} && apt-get download $(apt-cache depends \
             linux-image-amd64 | awk '/Depends: linux-image-/ {{print $2; exit}}')"
        )
    })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (see .ci/run for the packages)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A static busybox: the initramfs has no C library.
fn busybox() -> Vec<u8> {
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox: apt-get install busybox-static");
    let bytes = std::fs::read(path).unwrap();
    assert!(
        !has_interpreter(&bytes),
        "{path} is linked dynamically: apt-get install busybox-static"
    );
    bytes
}

/// Whether an ELF64 file names a dynamic loader (a `PT_INTERP` program header).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}

/// The data file `i` the init reads.
fn data(i: usize) -> Vec<u8> {
    crate::content(1000 + i as u64, DATA_LEN)
}

fn build(deb: &Path, dir: &Path, image: &Path) {
    let kernel = dir.join("kernel");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&kernel));
    let modules = kernel.join("lib/modules");
    let version = std::fs::read_dir(&modules)
        .unwrap()
        .next()
        .expect("the package has /lib/modules/VERSION")
        .unwrap()
        .file_name();
    let modules = modules.join(&version).join("kernel");
    let version = version.to_string_lossy().into_owned();
    let busybox = busybox();

    // The initramfs: load the modules, mount the disk, hand over to its init.
    let mut initrd = Cpio::default();
    for d in ["dev", "proc", "sys", "bin", "lib", "newroot"] {
        initrd.dir(d);
    }
    initrd.console();
    initrd.file("bin/busybox", &busybox, 0o755);
    let mut insmod = String::new();
    for m in MODULES {
        let name = m.rsplit('/').next().unwrap();
        let ko = std::fs::read(modules.join(format!("{m}.ko")))
            .unwrap_or_else(|e| panic!("module {m}.ko in {}: {e}", deb.display()));
        initrd.file(&format!("lib/{name}.ko"), &ko, 0o644);
        insmod.push_str(&format!(
            "$B insmod /lib/{name}.ko || echo \"initramfs: insmod {name} failed\"\n"
        ));
    }
    let init = format!(
        "#!/bin/busybox sh\n\
         B=/bin/busybox\n\
         $B mount -t devtmpfs dev /dev\n\
         $B mount -t proc proc /proc\n\
         $B mount -t sysfs sys /sys\n\
         {insmod}\
         n=0; while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do $B sleep 0.1; n=$((n+1)); done\n\
         $B mount -t ext4 /dev/vda /newroot || {{ echo '{BOOT_BAD} no root'; $B poweroff -f; }}\n\
         $B umount /proc /sys\n\
         $B mount --move /dev /newroot/dev\n\
         exec $B switch_root /newroot /sbin/init\n"
    );
    initrd.file("init", init.as_bytes(), 0o755);

    // The disk: busybox, the init, the data, the kernel, the bootloader's config.
    let want = sha2_of(&(0..DATA_FILES).map(data).collect::<Vec<_>>());
    let files: String = (0..DATA_FILES).map(|i| format!(" /data/{i}.bin")).collect();
    let disk_init = format!(
        "#!/bin/busybox sh\n\
         B=/bin/busybox\n\
         sum=$($B cat{files} | $B sha256sum | $B cut -d' ' -f1)\n\
         echo \"booted at $($B cut -d' ' -f1 /proc/uptime 2>/dev/null)\" > /written\n\
         $B sync\n\
         if [ \"$sum\" = {want} ]; then echo \"{BOOT_OK} sum=$sum\"; else echo \"{BOOT_BAD} sum=$sum\"; fi\n\
         $B poweroff -f\n"
    );
    let mut disk: Vec<(String, Vec<u8>, u32)> = vec![
        ("bin/busybox".into(), busybox, 0o755),
        ("sbin/init".into(), disk_init.into_bytes(), 0o755),
        // Named as Debian names them, for `vmt-run boot --kernel-from-image`.
        (
            format!("boot/vmlinuz-{version}"),
            std::fs::read(kernel.join(format!("boot/vmlinuz-{version}"))).unwrap(),
            0o644,
        ),
        (
            format!("boot/initrd.img-{version}"),
            gzip(&initrd.finish(), dir),
            0o644,
        ),
        (
            "boot/extlinux/extlinux.conf".into(),
            format!(
                "DEFAULT vmt\nPROMPT 0\nTIMEOUT 0\nLABEL vmt\n  LINUX /boot/vmlinuz-{version}\n  \
                 INITRD /boot/initrd.img-{version}\n  APPEND {APPEND}\n"
            )
            .into_bytes(),
            0o644,
        ),
    ];
    for i in 0..DATA_FILES {
        disk.push((format!("data/{i}.bin"), data(i), 0o644));
    }
    let root = dir.join("root");
    for d in ["dev", "proc", "sys"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (rel, bytes, mode) in &disk {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(*mode)).unwrap();
    }
    vmt_appliance::ext4::make_ext4(&root, image, IMAGE_MIB).expect("mkfs.ext4 -d");
    // EXTLINUX writes ldlinux.sys where the filesystem is mounted, and its boot code into the
    // filesystem's boot sector: sector 0 of this unpartitioned disk, where SeaBIOS looks.
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    run(Command::new("mount")
        .args(["-t", "ext4", "-o", "loop"])
        .arg(image)
        .arg(&mnt));
    let installed = Command::new("extlinux")
        .arg("--install")
        .arg(mnt.join("boot/extlinux"))
        .output();
    run(Command::new("umount").arg(&mnt));
    let installed = installed.expect("extlinux: apt-get install extlinux syslinux-common");
    assert!(
        installed.status.success(),
        "extlinux --install: {}",
        String::from_utf8_lossy(&installed.stderr)
    );
}

/// `data` compressed with gzip. Besides being smaller, a compressed initramfs has no 4 KiB
/// runs of zeros, which `mkfs.ext4 -d` stores as holes, and EXTLINUX fails on a file with holes
/// ("Loading /boot/initrd.img failed: I/O error").
fn gzip(data: &[u8], dir: &Path) -> Vec<u8> {
    let raw = dir.join("initrd.cpio");
    std::fs::write(&raw, data).unwrap();
    run(Command::new("gzip").args(["-n", "-6", "-f"]).arg(&raw));
    std::fs::read(dir.join("initrd.cpio.gz")).unwrap()
}

/// SHA-256 (hex) of `parts` concatenated, as `sha256sum` prints it.
fn sha2_of(parts: &[Vec<u8>]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data");
    std::fs::write(&f, parts.concat()).unwrap();
    ImageId::of_file(&f, |_| {}).unwrap().sha256_hex()
}

/// An uncompressed `newc` cpio archive, the initramfs format the kernel unpacks.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, data: &[u8], perm: u32) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    /// `/dev/console` (char 5:1): the kernel opens it for init's stdio before init runs.
    fn console(&mut self) {
        self.entry("dev/console", 0o020600, (5, 1), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}
