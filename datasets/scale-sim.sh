#!/usr/bin/env bash
# Issue 15: the swarm simulator (vmt-train swarm-sim) at the benchmark's crowd sizes, for
# validation, and at N = 100, 300, 1000 for prediction; then the validation table against real
# crowd runs (bench.sh's results.csv) and the prediction table.
#
#   datasets/scale-sim.sh [--real RESULTS.csv] [--out DIR]
#
# Env: NS (validation sizes, default "1 2 4 8 16"), PREDICT (default "1 100 300 1000"),
# TRACES (default the held-out sessions), RATE / SEED_RATE (default 100Mbit), THINK (5s),
# QUANTUM (rate recomputation step for the large runs, default 1ms).
# Output in DIR (default datasets/results/scale): sim-*.json (one per run), validation.txt,
# prediction.csv, prediction.txt, command.txt, scale.svg.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
real=$here/results/full/results.csv
out=$here/results/scale
while [ $# -gt 0 ]; do
  case "$1" in
    --real) real=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "scale-sim.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
NS=${NS:-1 2 4 8 16}
PREDICT=${PREDICT:-1 100 300 1000}
RATE=${RATE:-100Mbit}; SEED_RATE=${SEED_RATE:-100Mbit}; THINK=${THINK:-5s}; QUANTUM=${QUANTUM:-1ms}
TRACES=${TRACES:-$(ls "$here"/traces/test/session-*.vmtrace | head -2 | tr '\n' ' ')}
bin=$root/target/release/vmt-train
mkdir -p "$out"
sim() {  # sim STRATEGY MODE N QUANTUM
  local extra=(); [ "$2" = cs ] && extra=(--no-upload)
  local f="$out/sim-$1-$2-$3.json"
  "$bin" swarm-sim --bundle "${BUNDLE:-$here/appliance.vmtp}" --gap-scale "${GAP_SCALE:-1}" --traces $TRACES --clients "$3" \
    --strategy "$1" "${extra[@]}" --client-rate "$RATE" --seeder-rate "$SEED_RATE" \
    --think "$THINK" --quantum "$4" --out "$f" >/dev/null
  echo "$f"
}
# sim1 STRATEGY MODE: N=1 is each trace alone, averaged (as scale.sh's N=1 and bench.sh's
# per-trace baselines are), so N/N1 compares the same mix of traces; a single simulation
# would replay only the first trace.
sim1() {
  local parts=() t
  for t in $TRACES; do
    parts+=("$(TRACES=$t sim "$1" "$2" 1 0s)")
    mv "${parts[-1]}" "${parts[-1]%.json}-$(basename "$t" .vmtrace).json"
    parts[-1]="${parts[-1]%.json}-$(basename "$t" .vmtrace).json"
  done
  python3 - "$out/sim-$1-$2-1.json" "${parts[@]}" <<'PY'
import json, sys
runs = [json.load(open(f)) for f in sys.argv[2:]]
s = [r["summary"] for r in runs]
mean = lambda k: sum(x[k] for x in s) / len(s)
summary = dict(s[0], finished=sum(x["finished"] for x in s), wall_s=sum(x["wall_s"] for x in s),
               p95_completion_s=max(x["p95_completion_s"] for x in s),
               **{k: mean(k) for k in ("mean_completion_s", "mean_stall_s", "seeder_bytes", "seeder_per_image")},
               traces=[f for f in sys.argv[2:]])
json.dump({"summary": summary, "runs": [r["summary"] for r in runs]}, open(sys.argv[1], "w"), indent=1)
PY
}
echo "NS=\"$NS\" PREDICT=\"$PREDICT\" RATE=$RATE SEED_RATE=$SEED_RATE THINK=$THINK QUANTUM=$QUANTUM TRACES=\"$TRACES\" datasets/scale-sim.sh --real $real --out $out" > "$out/command.txt"
for n in $NS; do
  for sm in markov:swarm markov:cs oracle:swarm; do sim "${sm%%:*}" "${sm#*:}" "$n" 0s >/dev/null; done
done
for n in $PREDICT; do
  for sm in markov:swarm markov:cs demand:cs; do
    q=$QUANTUM; [ "$n" -le 16 ] && q=0s
    if [ "$n" = 1 ]; then sim1 "${sm%%:*}" "${sm#*:}"; else sim "${sm%%:*}" "${sm#*:}" "$n" "$q" >/dev/null; fi
  done
done
"$here/scale-table.py" --real "$real" --sim "$out" --ns "$NS" --predict "$PREDICT" --out "$out"
# scale.svg: completion and seeder bytes vs N (needs `cargo build --release -p vmt-bench`).
if [ -x "$root/target/release/vmt-bench" ]; then
  "$root/target/release/vmt-bench" scale-plot --csv "$out/prediction.csv" --out "$out"
fi
