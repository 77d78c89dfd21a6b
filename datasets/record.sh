#!/usr/bin/env bash
# Records the dataset on the appliance image built by build-appliance.sh. Run as root.
#
# Three kinds of traces, each run of them numbered in order (compile-5.vmtrace is run 5, with
# run=5 in its header):
#   task runs  RUNS runs of each task (seeds 1..RUNS), vmboot included (`tasks/run.sh vmboot`
#              boots the image as a VM under qemu/TCG through its own bootloader).
#   session-N  BOOT_SESSIONS sessions that start with `boot` (the loop mount of the image) and
#              `shell`, then follow the chain below for BOOT_SESSION_LEN tasks, back to back
#              (no idle time between tasks).
#   walk-N     WALKS random-start sessions: the first task is uniform over the eight chroot
#              tasks (each block of eight walks starts with every task once, in a random order),
#              then the chain below, 3 or 4 tasks in all (equally likely). Between tasks the
#              recording idles for a think time drawn uniformly from 0.5-8.0 s (0.1 s steps):
#              real idle time, in the trace's gaps. The loop mount's reads carry the first
#              task's label, as in a task run.
# Held out in traces/test (never trained on): the last run of each task, the last
# BOOT_SESSIONS_TEST session-N and the last WALKS_TEST walk-N; the rest go to traces/train.
# Every draw comes from bash's RANDOM with fixed seeds, so the same script records the same
# task orders, inputs and think times.
#
#   datasets/record.sh   (env: WORK=datasets/work, holds appliance.img; RUNS=5,
#                         BOOT_SESSIONS=8 BOOT_SESSIONS_TEST=2 BOOT_SESSION_LEN=5,
#                         WALKS=16 WALKS_TEST=4; KINDS="runs boot walks" records only those;
#                         TRACES=datasets/traces is where train/ and test/ go, replaced)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${WORK:-$here/work}
image=$work/appliance.img
traces=${TRACES:-$here/traces}
runs=${RUNS:-5}
boot_sessions=${BOOT_SESSIONS:-8}
boot_test=${BOOT_SESSIONS_TEST:-2}
boot_len=${BOOT_SESSION_LEN:-5}
walks=${WALKS:-16}
walks_test=${WALKS_TEST:-4}
kinds=${KINDS:-runs boot walks}
tasks="shell python compile git search sqlite man perl vmboot"
chroot_tasks="shell python compile git search sqlite man perl"
for v in runs boot_sessions boot_test boot_len walks walks_test; do
  case "${!v}" in ''|*[!0-9]*) echo "record.sh: $v must be a count, not '${!v}'" >&2; exit 2 ;; esac
done
for k in $kinds; do
  case "$k" in runs|boot|walks) ;; *) echo "record.sh: unknown kind '$k' in KINDS (runs, boot, walks)" >&2; exit 2 ;; esac
done
say() { printf '[record %s] %s\n' "$(date -u +%T)" "$*" >&2; }
vmt_record=${VMT_RECORD:-$here/../target/release/vmt-record}
[ -x "$vmt_record" ] || (cd "$here/.." && cargo build --release -p vmt-record)
[ -f "$image" ] || "$here/build-appliance.sh" "$work"
sha=$(awk '{print $1}' "$work/appliance.sha256")
command -v qemu-system-x86_64 >/dev/null || {   # for vmboot
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
}
# Everything is recorded into one directory, so that run numbers count up across train and
# test, then the held-out runs move to test/.
all=$traces/all
rm -rf "$traces/train" "$traces/test" "$all"
mkdir -p "$traces/train" "$traces/test" "$all"
say "image $sha; kinds: $kinds"

# hold_out NAME FIRST LAST: NAME-FIRST..NAME-LAST go to test/.
hold_out() {
  local n
  for n in $(seq "$2" "$3"); do mv "$all/$1-$n.vmtrace" "$traces/test/"; done
}

if [[ " $kinds " == *" runs "* ]]; then
  for task in $tasks; do
    for seed in $(seq 1 "$runs"); do
      how=(oneshot "$task"); [ "$task" = vmboot ] && how=(vmboot)
      "$vmt_record" run --image "$image" --image-sha256 "$sha" --task "$task" --out "$all" -- \
        bash "$here/tasks/run.sh" "${how[@]}" "$seed"
    done
    hold_out "$task" "$runs" "$runs"
  done
  say "task runs done"
fi

# Task-to-task transitions users follow (each word equally likely).
declare -A next=(
  [shell]="python compile compile git search man"
  [python]="sqlite sqlite shell perl"
  [compile]="git git shell man"
  [git]="compile search shell"
  [search]="man perl shell"
  [sqlite]="python python shell"
  [man]="shell search compile"
  [perl]="search python shell"
)
served=$work/served
lower=$work/session-root
mkdir -p "$served" "$lower"

# session NAME FIRST_LABEL LEN FIRST_TASK SEED_BASE THINK(0|1): one session trace; the task
# order and think times come from RANDOM (seeded by the caller) and are left in $order.
session() {
  local name=$1 label=$2 len=$3 task=$4 base=$5 think=$6 i t
  "$vmt_record" session --image "$image" --image-sha256 "$sha" --out "$all" \
    --mountpoint "$served" --name "$name" --first-task "$label" &
  local rec=$!
  until [ -e "$served/.vmt-control" ]; do
    kill -0 "$rec" 2>/dev/null || { echo "record.sh: vmt-record session exited early" >&2; exit 1; }
    sleep 0.1
  done
  bash "$here/tasks/run.sh" mount "$served/appliance.img" "$lower"
  order=
  for i in $(seq 1 "$len"); do
    if [ "$i" -gt 1 ] || [ "$task" != "$label" ]; then
      if [ "$i" -gt 1 ] && [ "$think" = 1 ]; then
        t=$((5 + RANDOM % 76))   # tenths of a second: 0.5-8.0 s
        order+=" (think $((t / 10)).$((t % 10)) s)"
        sleep "$((t / 10)).$((t % 10))"
      fi
      "$vmt_record" mark --mountpoint "$served" "$task"
    fi
    order+=" $task"
    bash "$here/tasks/run.sh" task "$lower" "$task" $((base + i))
    set -- ${next[$task]}
    shift $((RANDOM % $#)); task=$1
  done
  bash "$here/tasks/run.sh" umount "$lower"
  "$vmt_record" stop --mountpoint "$served"
  wait "$rec"
}

if [[ " $kinds " == *" boot "* ]]; then
  for s in $(seq 1 "$boot_sessions"); do
    RANDOM=$((s * 7919))
    session session boot "$boot_len" shell $((100 * s)) 0
    say "session-$s: boot$order"
  done
  hold_out session $((boot_sessions - boot_test + 1)) "$boot_sessions"
fi

if [[ " $kinds " == *" walks "* ]]; then
  # First tasks: blocks of the eight chroot tasks, each block shuffled.
  RANDOM=4099
  firsts=()
  while [ ${#firsts[@]} -lt "$walks" ]; do
    block=($chroot_tasks)
    for ((i = ${#block[@]} - 1; i > 0; i--)); do
      j=$((RANDOM % (i + 1))); t=${block[i]}; block[i]=${block[j]}; block[j]=$t
    done
    firsts+=("${block[@]}")
  done
  for s in $(seq 1 "$walks"); do
    RANDOM=$((s * 104729 + 17))
    first=${firsts[s - 1]}
    session walk "$first" $((3 + RANDOM % 2)) "$first" $((10000 + 100 * s)) 1
    say "walk-$s:$order"
  done
  hold_out walk $((walks - walks_test + 1)) "$walks"
fi

mv "$all"/*.vmtrace "$traces/train/" 2>/dev/null || true
rmdir "$all" 2>/dev/null || { echo "record.sh: left in $all:" >&2; ls "$all" >&2; exit 1; }
"$vmt_record" show "$traces"/*/*.vmtrace
say "done"
