#!/usr/bin/env bash
# Issue 15: the swarm simulator (vmt-train swarm-sim) at the benchmark's crowd sizes, for
# validation, and at N = 100, 300, 1000 for prediction; then the validation table against real
# crowd runs (bench.sh's results.csv) and the prediction table.
#
#   datasets/scale-sim.sh [--real RESULTS.csv (default results/crowd-mounts)] [--out DIR]
#
# Env: NS (validation sizes, default "1 2 4 8 16"), PREDICT (default "1 100 300 1000"; either
# may be empty), TRACES (default bench.sh --full's crowd sessions, which results/crowd-mounts
# replayed), RATE / SEED_RATE (default 100Mbit), THINK (5s), QUANTUM (rate recomputation step
# for the large runs, default 1ms), SIM_ARGS (more swarm-sim flags for every run, e.g.
# "--inject --seeder-slots 8": the seeder of `vmt-run seed --inject --upload-slots 8`),
# SWARM_ARGS (flags for the swarm-mode runs only, e.g. "--urgent": clients that share ask each
# other urgently, as `replay-client --urgent` does; client-server runs stay plain), BUNDLE.
# Output in DIR (default datasets/results/scale): sim-*.json (one per run; a crowd run in
# rounds also has sim-*-roundR.json), tables.txt (validation and prediction), prediction.csv,
# command.txt, scale.svg.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
real=$here/results/crowd-mounts/results.csv
out=$here/results/scale
while [ $# -gt 0 ]; do
  case "$1" in
    --real) real=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "scale-sim.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
NS=${NS-1 2 4 8 16}
PREDICT=${PREDICT-1 100 300 1000}
RATE=${RATE:-100Mbit}; SEED_RATE=${SEED_RATE:-100Mbit}; THINK=${THINK:-5s}; QUANTUM=${QUANTUM:-1ms}
# bench.sh --full's crowd sessions: the held-out boot sessions and the first two walks.
TRACES=${TRACES:-$(cd "$here/traces/test" && { ls session-*.vmtrace | sort -V; ls walk-*.vmtrace | sort -V | head -2; } | sed "s|^|$here/traces/test/|" | tr '\n' ' ')}
bin=$root/target/release/vmt-train
mkdir -p "$out"
sim() {  # sim STRATEGY MODE N QUANTUM
  local extra=(--no-upload); [ "$2" = swarm ] && read -ra extra <<< "${SWARM_ARGS:-}"
  local f="$out/sim-$1-$2-$3.json"
  "$bin" swarm-sim --bundle "${BUNDLE:-$here/appliance.vmtp}" --gap-scale "${GAP_SCALE:-1}" --traces $TRACES --clients "$3" \
    --strategy "$1" "${extra[@]}" --client-rate "$RATE" --seeder-rate "$SEED_RATE" \
    --think "$THINK" --quantum "$4" ${SIM_ARGS:-} --out "$f" >/dev/null
  echo "$f"
}
# simr STRATEGY MODE N QUANTUM: a crowd smaller than the trace list runs in rounds as bench.sh's
# does (round r: client i replays trace (i + r*N) mod T, until every trace has been replayed),
# so every N averages the same mix of traces and N/N1 compares like with like; a single
# simulation would replay only the first N traces. Completion and stall: mean over every
# client of every round; seeder_bytes: the sum over rounds (what bench.sh's origin counts);
# seeder_per_image: one round's mean (what one crowd of N costs).
simr() {
  local traces=($TRACES) parts=() off i sel
  local t=${#traces[@]}
  if [ "$3" -ge "$t" ]; then sim "$@" >/dev/null; return; fi
  for ((off = 0; off < t; off += $3)); do
    sel=()
    for ((i = 0; i < $3; i++)); do sel+=("${traces[$(((i + off) % t))]}"); done
    parts+=("$(TRACES="${sel[*]}" sim "$1" "$2" "$3" "$4")")
    mv "${parts[-1]}" "${parts[-1]%.json}-round$((off / $3)).json"
    parts[-1]="${parts[-1]%.json}-round$((off / $3)).json"
  done
  python3 - "$out/sim-$1-$2-$3.json" "${parts[@]}" <<'PY'
import json, sys
runs = [json.load(open(f)) for f in sys.argv[2:]]
s = [r["summary"] for r in runs]
mean = lambda k: sum(x[k] for x in s) / len(s)
summary = dict(s[0], finished=sum(x["finished"] for x in s), wall_s=sum(x["wall_s"] for x in s),
               p95_completion_s=max(x["p95_completion_s"] for x in s),
               seeder_bytes=sum(x["seeder_bytes"] for x in s),
               **{k: mean(k) for k in ("mean_completion_s", "mean_stall_s", "seeder_per_image")},
               rounds=[f for f in sys.argv[2:]])
json.dump({"summary": summary, "runs": [r["summary"] for r in runs]}, open(sys.argv[1], "w"), indent=1)
PY
}
echo "${BUNDLE:+BUNDLE=$BUNDLE }${SIM_ARGS:+SIM_ARGS=\"$SIM_ARGS\" }${SWARM_ARGS:+SWARM_ARGS=\"$SWARM_ARGS\" }NS=\"$NS\" PREDICT=\"$PREDICT\" RATE=$RATE SEED_RATE=$SEED_RATE THINK=$THINK QUANTUM=$QUANTUM TRACES=\"$TRACES\" datasets/scale-sim.sh --real $real --out $out" > "$out/command.txt"
for n in $NS; do
  for sm in markov:swarm markov:cs oracle:swarm; do simr "${sm%%:*}" "${sm#*:}" "$n" 0s; done
done
for n in $PREDICT; do
  for sm in markov:swarm markov:cs demand:cs; do
    q=$QUANTUM; [ "$n" -le 16 ] && q=0s
    simr "${sm%%:*}" "${sm#*:}" "$n" "$q"
  done
done
"$here/scale-table.py" --real "$real" --sim "$out" --ns "$NS" --predict "$PREDICT" --out "$out"
# scale.svg: completion and seeder bytes vs N (needs `cargo build --release -p vmt-bench`).
if [ -x "$root/target/release/vmt-bench" ]; then
  "$root/target/release/vmt-bench" scale-plot --csv "$out/prediction.csv" --out "$out"
fi
