#!/usr/bin/env bash
# Runs appliance tasks in a chroot on a loop mount of an image file (typically the file served
# by vmt-record or vmt-run). Run as root.
#
#   run.sh mount IMAGE DIR          loop-mount IMAGE read-write at DIR, with /proc and /dev
#   run.sh task DIR TASK SEED       run tasks/TASK.sh in the chroot DIR with inputs from SEED
#   run.sh umount DIR               undo `mount`
#   run.sh oneshot TASK SEED        mount "$VMT_IMAGE" in a temp dir, run TASK, unmount
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
  *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
