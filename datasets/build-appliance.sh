#!/usr/bin/env bash
# Builds a real appliance image: Debian bookworm (debootstrap --variant=minbase) plus the tools
# the recorded tasks use, packed into a raw ext4 image with mkfs.ext4 -d. Run as root.
# Idempotent: an existing root tree or image is reused unless --force is given.
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

command -v debootstrap >/dev/null && command -v mkfs.ext4 >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap e2fsprogs >/dev/null
}

packages="python3 perl gcc libc6-dev make git sqlite3 vim-tiny nano less man-db manpages
grep sed gawk findutils coreutils bash procps file bzip2 xz-utils gzip tar ca-certificates"

if [ "$force" = 1 ]; then rm -rf "$root" "$image"; fi
if [ ! -f "$root/.vmt-complete" ]; then
  rm -rf "$root"
  echo "debootstrap bookworm (minbase) into $root"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  echo "installing: $(echo $packages)"
  mount -t proc proc "$root/proc"
  trap 'umount "$root/proc" 2>/dev/null || true' EXIT
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $packages >"$work/apt.log" 2>&1 || { tail -20 "$work/apt.log" >&2; exit 1; }
  chroot "$root" mandb -q >/dev/null 2>&1 || true
  chroot "$root" apt-get clean
  umount "$root/proc"; trap - EXIT
  # A user's home with some work to do: sources and data the tasks use.
  install -d "$root/home/user/src" "$root/home/user/data"
  cp -r "$here/tasks/payload/." "$root/home/user/"
  touch "$root/.vmt-complete"
fi

if [ ! -f "$image" ] || [ "$root/.vmt-complete" -nt "$image" ]; then
  used_mib=$(du -sm "$root" | awk '{print $1}')
  size_mib=$(( used_mib * 13 / 10 + 256 ))   # room for the tasks' writes and ext4 metadata
  echo "mkfs.ext4 -d: $used_mib MiB of files into a $size_mib MiB image"
  mkfs.ext4 -q -F -b 4096 -E lazy_itable_init=0,lazy_journal_init=0 -L appliance \
    -d "$root" "$image.tmp" "${size_mib}M"
  mv "$image.tmp" "$image"
fi
ls -l "$image"
sha256sum "$image" | tee "$work/appliance.sha256"
