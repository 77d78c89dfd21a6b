#!/usr/bin/env bash
# What limits the headless N=128 crowd, asked of the simulator: the crowd of results/scale/quiet
# (6 held-out traces, 100 Mbit/s, think 5 s, 16 neighbours, markov swarm), one setting changed.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
out=datasets/results/scale/limits
T=datasets/traces/test
traces="$T/session-7.vmtrace $T/session-8.vmtrace $T/walk-13.vmtrace $T/walk-14.vmtrace $T/walk-15.vmtrace $T/walk-16.vmtrace"
row() {  # row NAME ARGS...
  local name=$1; shift
  target/release/vmt-train swarm-sim --bundle datasets/appliance.vmtp --traces $traces --clients 128 \
    --strategy markov --think 5s --max-peers "${PEERS:-16}" --quantum 1ms "$@" --out "$out/$name.json" >/dev/null
  python3 - "$out/$name.json" "$name" "${PEERS:+--max-peers $PEERS }$*" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
print(f"{sys.argv[2]:24} {s['mean_completion_s']:7.2f} {s['p95_completion_s']:7.2f} {s['mean_stall_s']:7.2f} {s['seeder_per_image']:7.2f}   {sys.argv[3]}")
PY
}
{
  echo "What limits the N=128 crowd (simulator; N=1 of these traces: 30.22 s mean completion, 1.64 s stall)"
  echo "command: bash datasets/results/scale/limits/run.sh (commit $(git rev-parse --short HEAD))"
  echo
  printf '%-24s %7s %7s %7s %7s   %s\n' run mean p95 stall seeder/img "setting changed"
  row baseline
  row seeder-10gbit --seeder-rate 10Gbit
  row clients-10gbit --client-rate 10Gbit
  row seeder-16-slots --seeder-slots 16
  row seeder-all-10gbit --seeder-slots 128 --seeder-rate 10Gbit
  row seeder-all-1gbit --seeder-slots 128 --seeder-rate 1Gbit
  row rechoke-2s --rechoke 2s
  PEERS=100 row neighbours-100
} | tee "$out/limits.txt"
