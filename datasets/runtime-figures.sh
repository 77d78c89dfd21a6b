#!/usr/bin/env bash
# Issue-5 figures: held-out traces replayed through a real vmt-run mount fed by one seeder on
# loopback at 100 Mbit/s (the seeder's upload limit), for 256 KiB and 64 KiB pieces.
#
#   datasets/runtime-figures.sh [OUT_DIR]      (default: datasets/results/runtime)
#
# Needs root (FUSE), the appliance image (datasets/build-appliance.sh) and the held-out traces.
# Writes runs.csv (one row per replay) and summary.txt (the ratios).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$here/..
out=${1:-$here/results/runtime}
image=${IMAGE:-$here/work/appliance.img}
rate=${RATE:-12500000}          # bytes/s: 100 Mbit/s
think=${THINK:-5s}
strategies=${STRATEGIES:-"demand stream profile markov oracle"}
pieces=${PIECES:-"256KiB 64KiB"}
bin=$root/target/release
[ "$(id -u)" = 0 ] || { echo "runtime-figures.sh: run as root (FUSE mounts)" >&2; exit 1; }
[ -f "$image" ] || { echo "no $image: run datasets/build-appliance.sh" >&2; exit 1; }
(cd "$root" && cargo build --release -q -p vmt-run -p vmt-record -p vmt-train)
mkdir -p "$out"
work=$(mktemp -d /tmp/vmt-figures-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for m in "$work"/*/mnt; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  rm -rf "$work"
}
trap cleanup EXIT

bundle=$work/train.vmtp
"$bin/vmt-train" fit --traces "$here/traces/train" --out "$bundle" >/dev/null
port=$((20000 + RANDOM % 20000))
echo "piece,trace,kind,strategy,completion_s,trace_s,think_s,stall_s,stalls,stall_p50_s,stall_p99_s,downloaded" > "$out/runs.csv"

# The first task after boot, for the profile strategy.
first_task() { "$bin/vmt-record" export "$1" | awk -F, '!/^#/ && NF==5 && $5!="boot" && $1!="t_us" {print $5; exit}'; }

for piece in $pieces; do
  port=$((port + 1))
  sdir=$work/seed-$piece; mkdir -p "$sdir"
  "$bin/vmt-run" seed --image "$image" --listen "127.0.0.1:$port" --piece-size "$piece" \
    --torrent-out "$sdir/app.torrent" --upload-limit "$rate" >"$sdir/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 600); do
    [ -f "$sdir/app.torrent" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  for trace in "$here"/traces/test/*.vmtrace; do
    name=$(basename "$trace" .vmtrace)
    kind=task; think_arg=0s
    case $name in session-*) kind=session; think_arg=$think;; esac
    # The local raw image: the reference every runtime is measured against.
    sync; "$bin/vmt-record" replay --trace "$trace" --file "$image" --think "$think_arg" --cold --json >"$work/r.json"
    python3 - "$piece" "$name" "$kind" raw "$work/r.json" "" >>"$out/runs.csv" <<'EOF'
import json, sys
piece, name, kind, strategy, replay, report = sys.argv[1:7]
r = json.load(open(replay))
st = json.load(open(report)) if report else {"stalls": {"count": 0, "p50_s": 0, "p99_s": 0}, "downloaded": 0}
print(",".join(map(str, [piece, name, kind, strategy, r["completion_s"], r["trace_s"], r["think_s"], r["stall_s"],
                         st["stalls"]["count"], st["stalls"]["p50_s"], st["stalls"]["p99_s"], st["downloaded"]])))
EOF
    for strategy in $strategies; do
      c=$work/$piece-$name-$strategy; mkdir -p "$c/mnt"
      extra=()
      case $strategy in
        # VMTorrent picks one profile up front: the task's own, or a session's first task.
        profile)
          if [ "$kind" = task ]; then p=${name%-*}; else p=$(first_task "$trace"); fi
          extra=(--bundle "$bundle" --profile "$p");;
        markov) extra=(--bundle "$bundle");;
        oracle) extra=(--oracle-trace "$trace");;
      esac
      "$bin/vmt-run" mount --torrent "$sdir/app.torrent" --mountpoint "$c/mnt" --data "$c/data" \
        --peer "127.0.0.1:$port" --strategy "$strategy" --no-upload --report "$c/report.json" \
        "${extra[@]}" >"$c/log" 2>&1 &
      mp=$!; pids+=($mp)
      for _ in $(seq 300); do [ -e "$c/mnt/$(basename "$image")" ] && break; sleep 0.1; done
      if ! [ -e "$c/mnt/$(basename "$image")" ]; then cat "$c/log" >&2; exit 1; fi
      "$bin/vmt-record" replay --trace "$trace" --file "$c/mnt/$(basename "$image")" --think "$think_arg" --json >"$c/replay.json"
      kill -TERM "$mp"; wait "$mp" || true
      python3 - "$piece" "$name" "$kind" "$strategy" "$c/replay.json" "$c/report.json" >>"$out/runs.csv" <<'EOF'
import json, sys
piece, name, kind, strategy, replay, report = sys.argv[1:7]
r = json.load(open(replay)); st = json.load(open(report))
print(",".join(map(str, [piece, name, kind, strategy, r["completion_s"], r["trace_s"], r["think_s"], r["stall_s"],
                         st["stalls"]["count"], st["stalls"]["p50_s"], st["stalls"]["p99_s"], st["downloaded"]])))
EOF
      rm -rf "$c/data"
      echo "$piece $name $strategy: $(tail -1 "$out/runs.csv" | cut -d, -f5,8)" >&2
    done
  done
done

python3 - "$out/runs.csv" "$rate" > "$out/summary.txt" <<'EOF'
import csv, sys, statistics as S
rows = list(csv.DictReader(open(sys.argv[1]))); rate = float(sys.argv[2])
def mean(piece, kind, strategy, col):
    v = [float(r[col]) for r in rows if r["piece"] == piece and r["kind"] == kind and r["strategy"] == strategy]
    return S.mean(v) if v else float("nan")
def ratio(a, b):
    return "n/a (denominator 0)" if b == 0 else f"{a / b:.3f}"
import datetime
print(f"command: datasets/runtime-figures.sh   (run {datetime.date.today()}; stall = completion - trace - think, so the raw row shows local read time)")
print(f"held-out traces replayed through vmt-run mounts; one seeder on loopback at {rate*8/1e6:.0f} Mbit/s; sessions with think time")
for piece in dict.fromkeys(r["piece"] for r in rows):
    size = {"256KiB": 256 << 10, "64KiB": 64 << 10}.get(piece, 0)
    piece_s = size / rate
    print(f"\n== {piece} pieces (one piece takes {piece_s*1e3:.1f} ms at this rate)")
    for kind in ("session", "task"):
        print(f"  {kind}s: mean completion / mean stall (s)")
        for s in ("raw", "demand", "stream", "profile", "markov", "oracle"):
            print(f"    {s:<8} {mean(piece, kind, s, 'completion_s'):8.3f} {mean(piece, kind, s, 'stall_s'):8.3f}")
    ms, os_, ds = (mean(piece, "session", s, "stall_s") for s in ("markov", "oracle", "demand"))
    print(f"  sessions: markov stall / oracle stall = {ratio(ms, os_)} (goal <= 1.5; markov {ms:.3f} s, oracle {os_:.3f} s)")
    print(f"  sessions: markov stall / demand stall = {ratio(ms, ds)} (goal <= 0.1)")
    mc, oc, rc = (mean(piece, "task", s, "completion_s") for s in ("markov", "oracle", "raw"))
    print(f"  cold tasks: markov completion / oracle completion = {ratio(mc, oc)} (goal <= 1.1)")
    print(f"  cold tasks: markov completion / local raw image = {ratio(mc, rc)}")
    lat = [r for r in rows if r["piece"] == piece and r["strategy"] in ("demand", "markov") and int(r["stalls"]) > 0]
    if lat:
        p50 = S.median(float(r["stall_p50_s"]) for r in lat); p99 = max(float(r["stall_p99_s"]) for r in lat)
        print(f"  miss latency (FUSE read to reply), demand+markov runs: median of run medians {p50*1e3:.1f} ms "
              f"({(p50-piece_s)*1e3:+.1f} ms beyond one piece time), worst run p99 {p99*1e3:.1f} ms ({(p99-piece_s)*1e3:+.1f} ms beyond)")
EOF
cat "$out/summary.txt"
