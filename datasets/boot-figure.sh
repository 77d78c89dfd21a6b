#!/usr/bin/env bash
# Issue 5's VM boot figure: how long the appliance takes to boot under qemu (TCG) from the
# local image, and from a vmt-run mount fed by one seeder at RATE (demand and markov). The boot
# is task vmboot itself (tasks/run.sh vmboot: read the kernel and initrd from the image, boot
# with /sbin/vmt-boot as init, power off), timed whole, from the first read to power-off.
# Run as root, on an idle machine: TCG boots are CPU-bound.
#
#   datasets/boot-figure.sh        (env: WORK=datasets/work, RATE=12500000 bytes/s (100 Mbit/s),
#                                   REPS=2, SEED=5 (the held-out vmboot run), OUT=results/boot)
#
# The seeder and the client talk over loopback; RATE is the seeder's own upload limit (a token
# bucket), not a tc link as in bench.sh. The local image is a copy (the boot writes to its
# root filesystem), read with a cold page cache. Writes: OUT/boot.csv and OUT/summary.txt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=${WORK:-$here/work}
image=$work/appliance.img
rate=${RATE:-12500000}
reps=${REPS:-2}
seed=${SEED:-5}
out=${OUT:-$here/results/boot}
bin=$root/target/release
[ "$(id -u)" = 0 ] || { echo "boot-figure.sh: run as root (FUSE, loop mounts)" >&2; exit 1; }
[ -f "$image" ] || { echo "boot-figure.sh: no $image; run datasets/build-appliance.sh" >&2; exit 1; }
(cd "$root" && cargo build --release -q -p vmt-run)
say() { printf '[boot %s] %s\n' "$(date -u +%T)" "$*" >&2; }

W=$(mktemp -d "$work/boot.XXXXXX")
cleanup() {
  local rc=$?
  [ "$rc" = 0 ] || tail -20 "$W/boot.log" "$W/client.log" 2>/dev/null >&2 || true
  [ -f "$W/client.pid" ] && kill -TERM "$(cat "$W/client.pid")" 2>/dev/null || true
  [ -f "$W/seed.pid" ] && kill -TERM "$(cat "$W/seed.pid")" 2>/dev/null || true
  sleep 1
  umount -l "$W/mnt" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
"$bin/vmt-run" seed --image "$image" --listen "127.0.0.1:$port" --upload-limit "$rate" \
  --torrent-out "$W/app.torrent" >"$W/seed.log" 2>&1 &
echo $! > "$W/seed.pid"
for _ in $(seq 600); do [ -s "$W/app.torrent" ] && break; sleep 0.5; done
[ -s "$W/app.torrent" ] || { cat "$W/seed.log" >&2; exit 1; }

mkdir -p "$out"
csv=$out/boot.csv
echo "source,rep,boot_s,misses,stall_s" > "$csv"
boot() {  # boot FILE: prints the seconds from start to power-off
  local t0 t1
  sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(date +%s.%N)
  VMT_IMAGE=$1 bash "$here/tasks/run.sh" vmboot "$seed" 2>>"$W/boot.log"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
for rep in $(seq 1 "$reps"); do
  say "rep $rep: local image"
  cp "$image" "$W/local.img"
  s=$(boot "$W/local.img")
  echo "local,$rep,$s,," >> "$csv"
  rm -f "$W/local.img"
  for strategy in demand markov; do
    say "rep $rep: vmt-run mount, $strategy"
    rm -rf "$W/mnt" "$W/data"; mkdir -p "$W/mnt"
    "$bin/vmt-run" mount --torrent "$W/app.torrent" --bundle "$here/appliance.vmtp" \
      --mountpoint "$W/mnt" --data "$W/data" --strategy "$strategy" \
      --peer "127.0.0.1:$port" --report "$W/report.json" >"$W/client.log" 2>&1 &
    echo $! > "$W/client.pid"
    for _ in $(seq 600); do [ -s "$W/mnt/appliance.img" ] && break; sleep 0.1; done
    s=$(boot "$W/mnt/appliance.img")
    kill -TERM "$(cat "$W/client.pid")"
    wait "$(cat "$W/client.pid")" || true
    rm -f "$W/client.pid"
    read -r misses stall < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["read_misses"], r["stalls"]["total_s"])' "$W/report.json")
    echo "$strategy,$rep,$s,$misses,$stall" >> "$csv"
  done
done

{
  echo "VM boot under qemu (TCG), task vmboot seed $seed, $(nproc) cores; vmt-run: one seeder on"
  echo "loopback at $rate bytes/s; $(date -u '+%F %H:%M') UTC, commit $(git -C "$root" rev-parse --short HEAD)"
  echo "command: datasets/boot-figure.sh (REPS=$reps)"
  echo
  awk -F, 'NR > 1 { n[$1]++; t[$1] += $3; m[$1] += $4; st[$1] += $5 }
    END {
      printf "%-8s %10s %8s %9s\n", "source", "boot (s)", "misses", "stall (s)"
      split("local demand markov", order, " ")
      for (k = 1; k <= 3; k++) { s = order[k]; if (n[s])
        printf "%-8s %10.2f %8.0f %9.2f\n", s, t[s] / n[s], m[s] / n[s], st[s] / n[s] }
      if (n["local"] && n["markov"])
        printf "\nmarkov / local boot time: %.3f (goal <= 1.05)\n", (t["markov"] / n["markov"]) / (t["local"] / n["local"])
      if (n["local"] && n["demand"])
        printf "demand / local boot time: %.3f\n", (t["demand"] / n["demand"]) / (t["local"] / n["local"])
    }' "$csv"
} | tee "$out/summary.txt"
