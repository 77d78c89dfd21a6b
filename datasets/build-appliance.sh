#!/usr/bin/env bash
# Builds a real appliance image: Debian bookworm (debootstrap --variant=minbase) plus the tools
# the recorded tasks use, packed into a raw ext4 image with mkfs.ext4 -d. Run as root.
# Idempotent: an existing root tree or image is reused unless --force is given.
#
# The image also boots as a VM (task vmboot, tasks/run.sh vmboot): linux-image-amd64 with an
# initrd holding virtio_pci, virtio_blk and ext4 (MODULES=list), and /sbin/vmt-boot
# (tasks/vmt-boot) as init, which does a little of what a boot does and powers off. The image
# boots by itself: EXTLINUX sits in the filesystem's boot sector, which is the disk's sector 0
# (the image is one unpartitioned ext4 filesystem), so a BIOS (qemu's SeaBIOS) boots it and
# EXTLINUX loads /boot/vmlinuz-* and its initrd as /boot/extlinux/extlinux.conf says. A VM
# started with -kernel/-initrd (direct kernel boot) works as well.
#
#   datasets/build-appliance.sh [--force] [WORKDIR]     (default WORKDIR: datasets/work)
#
# The Debian mirror is taken from this machine's apt sources (override with MIRROR=...).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
work=${1:-$here/work}
root=$work/rootfs
image=$work/appliance.img
mkdir -p "$work"

[ "$(id -u)" = 0 ] || { echo "build-appliance.sh: run as root" >&2; exit 1; }

mirror=${MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
[ -n "$mirror" ] || { echo "build-appliance.sh: no Debian mirror found; set MIRROR" >&2; exit 1; }

command -v debootstrap >/dev/null && command -v mkfs.ext4 >/dev/null &&
  command -v extlinux >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap e2fsprogs extlinux >/dev/null
}

packages="python3 perl gcc libc6-dev make git sqlite3 vim-tiny nano less man-db manpages
grep sed gawk findutils coreutils bash procps file bzip2 xz-utils gzip tar ca-certificates
linux-image-amd64"

if [ "$force" = 1 ]; then rm -rf "$root" "$image"; fi
# A root tree from before the kernel was added (no /boot/vmlinuz-*) is rebuilt too.
if [ ! -f "$root/.vmt-complete" ] || ! compgen -G "$root/boot/vmlinuz-*" >/dev/null; then
  rm -rf "$root"
  echo "debootstrap bookworm (minbase) into $root"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  echo "installing: $(echo $packages)"
  # The initrd (made by initramfs-tools when the kernel is installed) needs only what finds
  # the root filesystem of a qemu VM with a virtio disk; dependencies (crc32c, ...) follow.
  install -d "$root/etc/initramfs-tools/conf.d"
  printf '%s\n' virtio_pci virtio_blk ext4 > "$root/etc/initramfs-tools/modules"
  echo MODULES=list > "$root/etc/initramfs-tools/conf.d/vmt"
  # Kernel modules no VM of this appliance loads (graphics, sound, radio, media, InfiniBand,
  # staging) are left out, as minimal images leave out docs; about 150 MiB less.
  install -d "$root/etc/dpkg/dpkg.cfg.d"
  printf 'path-exclude=/lib/modules/*/kernel/%s/*\n' drivers/gpu sound drivers/net/wireless \
    net/wireless net/mac80211 drivers/media drivers/infiniband drivers/staging \
    drivers/bluetooth net/bluetooth > "$root/etc/dpkg/dpkg.cfg.d/vmt-no-modules"
  mount -t proc proc "$root/proc"
  trap 'umount "$root/proc" 2>/dev/null || true' EXIT
  # --force-confold keeps the modules list written above (a conffile of initramfs-tools).
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confold $packages >"$work/apt.log" 2>&1 ||
    { tail -20 "$work/apt.log" >&2; exit 1; }
  ls "$root"/boot/vmlinuz-* "$root"/boot/initrd.img-* >/dev/null ||
    { echo "build-appliance.sh: no kernel or initrd in /boot" >&2; exit 1; }
  chroot "$root" mandb -q >/dev/null 2>&1 || true
  chroot "$root" apt-get clean
  umount "$root/proc"; trap - EXIT
  # A user's home with some work to do: sources and data the tasks use.
  install -d "$root/home/user/src" "$root/home/user/data"
  cp -r "$here/tasks/payload/." "$root/home/user/"
  touch "$root/.vmt-complete"
fi
# The VM's init, kept in step with tasks/vmt-boot (a changed script makes a new image).
if ! cmp -s "$here/tasks/vmt-boot" "$root/sbin/vmt-boot"; then
  install -m 755 "$here/tasks/vmt-boot" "$root/sbin/vmt-boot"
  touch "$root/.vmt-complete"
fi

# The bootloader's configuration (EXTLINUX itself is installed into the packed image below).
# The command line is fixed; a run's seed reaches /sbin/vmt-boot through qemu's fw_cfg.
kver=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1); kver=${kver##*/vmlinuz-}
conf=$(mktemp); trap 'rm -f "$conf"' EXIT
cat >"$conf" <<CONF
DEFAULT vmt
PROMPT 0
TIMEOUT 0
LABEL vmt
  LINUX /boot/vmlinuz-$kver
  INITRD /boot/initrd.img-$kver
  APPEND root=/dev/vda rw console=ttyS0 init=/sbin/vmt-boot quiet panic=1
CONF
if ! cmp -s "$conf" "$root/boot/extlinux/extlinux.conf"; then
  install -D -m 644 "$conf" "$root/boot/extlinux/extlinux.conf"
  touch "$root/.vmt-complete"
fi

if [ ! -f "$image" ] || [ "$root/.vmt-complete" -nt "$image" ]; then
  used_mib=$(du -sm "$root" | awk '{print $1}')
  size_mib=$(( used_mib * 13 / 10 + 256 ))   # room for the tasks' writes and ext4 metadata
  echo "mkfs.ext4 -d: $used_mib MiB of files into a $size_mib MiB image"
  mkfs.ext4 -q -F -b 4096 -E lazy_itable_init=0,lazy_journal_init=0 -L appliance \
    -d "$root" "$image.tmp" "${size_mib}M"
  # EXTLINUX needs the filesystem mounted: it writes ldlinux.sys/.c32 beside extlinux.conf
  # and the boot sector that finds them. The root tree is not touched.
  mnt=$(mktemp -d); trap 'umount "$mnt" 2>/dev/null || true; rmdir "$mnt"; rm -f "$conf"' EXIT
  mount -o loop "$image.tmp" "$mnt"
  extlinux --install "$mnt/boot/extlinux" 2>&1 | sed 's/^/extlinux: /'
  umount "$mnt"
  mv "$image.tmp" "$image"
fi
ls -l "$image"
sha256sum "$image" | tee "$work/appliance.sha256"
