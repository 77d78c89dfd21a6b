#!/usr/bin/env bash
# Runs appliance tasks in a chroot on a loop mount of an image file (typically the file served
# by vmt-record or vmt-run). Run as root.
#
#   run.sh mount IMAGE DIR          loop-mount IMAGE read-write at DIR, with /proc and /dev
#   run.sh task DIR TASK SEED       run tasks/TASK.sh in the chroot DIR with inputs from SEED
#   run.sh umount DIR               undo `mount`
#   run.sh oneshot TASK SEED        mount "$VMT_IMAGE" in a temp dir, run TASK, unmount
#   run.sh vmboot SEED              boot "$VMT_IMAGE" as a VM (qemu, TCG) through its own
#                                   bootloader (EXTLINUX: SeaBIOS reads its boot sector, then
#                                   the kernel and initrd from /boot), the seed passed by
#                                   fw_cfg to /sbin/vmt-boot; fails unless the console shows
#                                   VMT-BOOT-OK
# Env for vmboot: VMBOOT_TIMEOUT (seconds, default 300), VMBOOT_LOG (keep the console here).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

do_mount() {
  mkdir -p "$2"
  mount -t ext4 -o loop "$1" "$2"
  mount -t proc proc "$2/proc"
  mount --bind /dev "$2/dev"
}
do_umount() {
  umount "$1/dev" 2>/dev/null || true
  umount "$1/proc" 2>/dev/null || true
  umount "$1"
}
do_task() {
  [ -f "$here/$2.sh" ] || { echo "run.sh: no task $2" >&2; exit 2; }
  chroot "$1" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/home/user LANG=C.UTF-8 \
    TERM=dumb SEED="$3" /bin/bash -e -s < "$here/$2.sh"
}

case "${1:-}" in
  mount) do_mount "$2" "$3" ;;
  umount) do_umount "$2" ;;
  task) do_task "$2" "$3" "$4" ;;
  oneshot)
    dir=$(mktemp -d /tmp/vmt-task-XXXXXX)
    trap 'do_umount "$dir" 2>/dev/null || true; rmdir "$dir"' EXIT
    do_mount "${VMT_IMAGE:?set by vmt-record run}" "$dir"
    do_task "$dir" "$2" "$3"
    ;;
  vmboot)
    image=${VMT_IMAGE:?set by vmt-record run}
    seed=${2:?run.sh vmboot SEED}
    command -v qemu-system-x86_64 >/dev/null || {
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
    }
    tmp=$(mktemp -d /tmp/vmt-vmboot-XXXXXX)
    trap 'rm -rf "$tmp"' EXIT
    log=${VMBOOT_LOG:-$tmp/console.log}
    start=$(date +%s.%N)
    # cache=none: the guest's reads (and the firmware's and bootloader's) reach the image file as
    # issued (O_DIRECT), not read ahead.
    timeout --kill-after=10 "${VMBOOT_TIMEOUT:-300}" qemu-system-x86_64 -accel tcg -smp 1 -m 512 \
      -nographic -no-reboot -nic none -fw_cfg "name=opt/vmt.seed,string=$seed" \
      -drive "file=$image,format=raw,if=virtio,cache=none" </dev/null >"$log" 2>&1 || true
    end=$(date +%s.%N)
    tr -d '\r' <"$log" | grep -a 'VMT-BOOT-' >&2 || true
    if ! grep -aq 'VMT-BOOT-OK' "$log"; then
      echo "run.sh vmboot: no VMT-BOOT-OK on the console; its last lines:" >&2
      tr -d '\r' <"$log" | tail -30 >&2
      exit 1
    fi
    echo "run.sh vmboot: seed $seed booted and powered off in $(awk "BEGIN {printf \"%.1f\", $end - $start}") s" >&2
    ;;
  *) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
