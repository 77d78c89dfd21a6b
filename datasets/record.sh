#!/usr/bin/env bash
# Records the dataset: RUNS runs of each task with varied inputs (seeds), and SESSIONS
# multi-task sessions whose task order follows a fixed Markov chain (below), on the appliance
# image built by build-appliance.sh. The last run of each task and the last two sessions go to
# traces/test (held out from training); the rest to traces/train. Run as root.
#
# Task vmboot boots the image as a VM under qemu (TCG, no KVM needed): `tasks/run.sh vmboot`.
#
#   datasets/record.sh            (env: RUNS=5 SESSIONS=8 SESSION_LEN=5 WORK=datasets/work)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${WORK:-$here/work}
image=$work/appliance.img
runs=${RUNS:-5}
sessions=${SESSIONS:-8}
session_len=${SESSION_LEN:-5}
tasks="shell python compile git search sqlite man perl vmboot"
vmt_record=${VMT_RECORD:-$here/../target/release/vmt-record}
[ -x "$vmt_record" ] || (cd "$here/.." && cargo build --release -p vmt-record)
[ -f "$image" ] || "$here/build-appliance.sh" "$work"
sha=$(awk '{print $1}' "$work/appliance.sha256")
command -v qemu-system-x86_64 >/dev/null || {   # for vmboot
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
}
rm -rf "$here/traces/train" "$here/traces/test"
mkdir -p "$here/traces/train" "$here/traces/test"

for task in $tasks; do
  for seed in $(seq 1 "$runs"); do
    dest=$here/traces/train; [ "$seed" = "$runs" ] && dest=$here/traces/test
    how=(oneshot "$task"); [ "$task" = vmboot ] && how=(vmboot)
    "$vmt_record" run --image "$image" --image-sha256 "$sha" --task "$task" --out "$dest" -- \
      bash "$here/tasks/run.sh" "${how[@]}" "$seed"
  done
done

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
for s in $(seq 1 "$sessions"); do
  dest=$here/traces/train; [ "$s" -gt $((sessions - 2)) ] && dest=$here/traces/test
  RANDOM=$((s * 7919))
  "$vmt_record" session --image "$image" --image-sha256 "$sha" --out "$dest" \
    --mountpoint "$served" --name session --first-task boot &
  rec=$!
  until [ -e "$served/.vmt-control" ]; do sleep 0.1; done
  bash "$here/tasks/run.sh" mount "$served/appliance.img" "$lower"
  task=shell
  for i in $(seq 1 "$session_len"); do
    "$vmt_record" mark --mountpoint "$served" "$task"
    bash "$here/tasks/run.sh" task "$lower" "$task" $((100 * s + i))
    set -- ${next[$task]}
    shift $((RANDOM % $#)); task=$1
  done
  bash "$here/tasks/run.sh" umount "$lower"
  "$vmt_record" stop --mountpoint "$served"
  wait "$rec"
done
"$vmt_record" show "$here"/traces/*/*.vmtrace
