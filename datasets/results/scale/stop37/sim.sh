#!/bin/bash
# The simulator's N=128 crowd of stop35/dataset (scale.sh's crowd: 100 Mbit/s links, think 5 s,
# an injecting seeder of 8 slots, urgent requests), with where each client's stall went.
# Run from the repository root after `cargo build --release`:
#   bash datasets/results/scale/stop37/sim.sh > datasets/results/scale/stop37/sim.txt
set -euo pipefail
D=datasets/results/scale/stop35/dataset
sim() { # NAME [flags...]
  local name=$1; shift
  target/release/vmt-train swarm-sim --bundle $D/appliance.vmtp --traces $D/*.vmtrace \
    --clients 128 --strategy markov --think 5s --max-peers 128 --inject --seeder-slots 8 \
    --urgent "$@" | python3 -c "
import json, sys
o = json.load(sys.stdin); w = o['mean_waits_s']
print(f\"{sys.argv[1]:22s} {o['mean_completion_s']:6.2f} {o['p95_completion_s']:6.2f} {o['mean_stall_s']:6.2f} {o['seeder_per_image']:6.3f}\"
      f\" | {w['racing']:5.2f} {w['at_peers']:5.2f} {w['turned_away']:5.2f} {w['on_its_way']:5.2f} {w['seeder']:5.2f}\")" "$name"
}
echo "setting                  mean    p95  stall seeder | racing at_peers turned_away on_its_way seeder (s/client)"
for s in 1 2 3; do sim "engine (df, busy 8) s$s" --seed $s; done
for s in 1 2 3; do sim "before (busy 32) s$s" --no-demand-first --busy-backlog 32 --seed $s; done
sim "busy 8 only" --no-demand-first --busy-backlog 8
sim "demand first, busy 32" --busy-backlog 32
