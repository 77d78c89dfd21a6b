#!/usr/bin/env bash
# Issue 5's VM boot figure, measured with `vmt-run boot` itself (issue 16): how long the
# appliance takes to boot under qemu (TCG) through its own bootloader, from a local copy of the
# image and from `vmt-run boot` fed by one seeder at RATE (demand and markov). Every boot is
# task vmboot's (seed SEED, passed by fw_cfg to /sbin/vmt-boot, which prints VMT-BOOT-OK and
# powers off) with the same VM: TCG, 1 CPU, 512 MiB, the disk as virtio with cache=none.
# Run as root, on an idle machine: TCG boots are CPU-bound.
#
#   datasets/boot-figure.sh     (env: WORK=datasets/work, IMAGE=WORK/appliance.img,
#                                SCRATCH=WORK (temp files; the local copy needs the image's
#                                size), BUNDLE=datasets/appliance.vmtp, RATE=12500000 bytes/s
#                                (100 Mbit/s), REPS=2, SEED=5 (the held-out vmboot run),
#                                SOURCES="local demand markov", OUT=results/boot,
#                                DROP_CACHES=1: drop the page cache before each boot)
#
# local: `tasks/run.sh vmboot` on a copy of the image (the boot writes to its root filesystem),
# with a cold page cache; boot_s is qemu's start to its exit. demand, markov: one
# `vmt-run boot` command on a fresh data directory; boot_s is the whole command (mount, boot,
# unmount), vm_s qemu's start to its exit as vmt-run reports it, misses and stall_s from its
# --report. The seeder and the client talk over loopback; RATE is the seeder's own upload
# limit (a token bucket), not a tc link as in bench.sh. Writes OUT/boot.csv, OUT/summary.txt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=${WORK:-$here/work}
image=${IMAGE:-$work/appliance.img}
scratch=${SCRATCH:-$work}
bundle=${BUNDLE:-$here/appliance.vmtp}
rate=${RATE:-12500000}
reps=${REPS:-2}
seed=${SEED:-5}
sources=${SOURCES:-local demand markov}
out=${OUT:-$here/results/boot}
bin=$root/target/release
[ "$(id -u)" = 0 ] || { echo "boot-figure.sh: run as root (FUSE, loop mounts)" >&2; exit 1; }
[ -f "$image" ] || { echo "boot-figure.sh: no $image; run datasets/build-appliance.sh" >&2; exit 1; }
(cd "$root" && cargo build --release -q -p vmt-run)
drop_caches() { [ "${DROP_CACHES:-1}" = 0 ] || { sync; echo 3 > /proc/sys/vm/drop_caches; }; }
say() { printf '[boot %s] %s\n' "$(date -u +%T)" "$*" >&2; }

W=$(mktemp -d "$scratch/boot.XXXXXX")
cleanup() {
  local rc=$?
  [ "$rc" = 0 ] || tail -20 "$W/boot.log" "$W/client.log" "$W/console.log" 2>/dev/null >&2 || true
  [ -f "$W/seed.pid" ] && kill -TERM "$(cat "$W/seed.pid")" 2>/dev/null || true
  sleep 1
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
echo "source,rep,boot_s,vm_s,misses,stall_s" > "$csv"
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
for rep in $(seq 1 "$reps"); do
  for source in $sources; do
    drop_caches
    if [ "$source" = local ]; then
      say "rep $rep: local image"
      cp "$image" "$W/local.img"
      drop_caches
      t0=$(date +%s.%N)
      VMT_IMAGE=$W/local.img bash "$here/tasks/run.sh" vmboot "$seed" 2>>"$W/boot.log"
      t1=$(date +%s.%N)
      rm -f "$W/local.img"
      s=$(elapsed "$t0" "$t1")
      echo "local,$rep,$s,$s,," >> "$csv"
      continue
    fi
    say "rep $rep: vmt-run boot, $source"
    rm -rf "$W/data" "$W/report.json"
    t0=$(date +%s.%N)
    # The VM of run.sh vmboot: TCG (as the local boot), 1 CPU, 512 MiB, seed by fw_cfg.
    "$bin/vmt-run" boot --torrent "$W/app.torrent" --bundle "$bundle" --strategy "$source" \
      --peer "127.0.0.1:$port" --data "$W/data" --report "$W/report.json" \
      --tcg --cpus 1 --memory 512M --console "$W/console.log" \
      -- -fw_cfg "name=opt/vmt.seed,string=$seed" </dev/null >"$W/client.log" 2>&1
    t1=$(date +%s.%N)
    grep -aq 'VMT-BOOT-OK' "$W/console.log" || {
      echo "boot-figure.sh: no VMT-BOOT-OK on the console of vmt-run boot ($source)" >&2
      exit 1
    }
    vm=$(sed -n 's/^vm: the VM powered off after \([0-9.]*\) s.*/\1/p' "$W/client.log")
    read -r misses stall < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["read_misses"], r["stalls"]["total_s"])' "$W/report.json")
    echo "$source,$rep,$(elapsed "$t0" "$t1"),$vm,$misses,$stall" >> "$csv"
  done
done

{
  echo "VM boot under qemu (TCG) through EXTLINUX, task vmboot seed $seed, $(nproc) cores; vmt-run"
  echo "boot: one seeder on loopback at $rate bytes/s; $(date -u '+%F %H:%M') UTC, commit $(git -C "$root" rev-parse --short HEAD)"
  echo "command: datasets/boot-figure.sh (REPS=$reps SOURCES=\"$sources\")"
  echo
  awk -F, 'NR > 1 { n[$1]++; t[$1] += $3; v[$1] += $4; m[$1] += $5; st[$1] += $6 }
    END {
      printf "%-8s %10s %8s %8s %9s\n", "source", "boot (s)", "vm (s)", "misses", "stall (s)"
      split("local demand markov", order, " ")
      for (k = 1; k <= 3; k++) { s = order[k]; if (n[s])
        printf "%-8s %10.2f %8.2f %8.0f %9.2f\n", s, t[s] / n[s], v[s] / n[s], m[s] / n[s], st[s] / n[s] }
      if (n["local"] && n["markov"])
        printf "\nmarkov / local boot time: %.3f (goal <= 1.05)\n", (t["markov"] / n["markov"]) / (t["local"] / n["local"])
      if (n["local"] && n["demand"])
        printf "demand / local boot time: %.3f\n", (t["demand"] / n["demand"]) / (t["local"] / n["local"])
    }' "$csv"
} | tee "$out/summary.txt"
