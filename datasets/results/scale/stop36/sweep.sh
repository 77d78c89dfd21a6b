#!/bin/bash
# The simulator's N=128 crowd of stop35/dataset (the crowd scale.sh runs: 100 Mbit/s links,
# think 5 s, an injecting seeder of 8 slots, urgent requests), one setting changed at a time.
# Run from the repository root after `cargo build --release`: bash datasets/results/scale/stop36/sweep.sh
set -euo pipefail
D=datasets/results/scale/stop35/dataset
out=$(mktemp -d)
sim() { # NAME [flags...]; CR, SR, SS override the client rate, seeder rate and seeder slots
  local name=$1; shift
  target/release/vmt-train swarm-sim --bundle $D/appliance.vmtp --traces $D/*.vmtrace \
    --clients 128 --strategy markov --client-rate "${CR:-100Mbit}" --seeder-rate "${SR:-100Mbit}" \
    --think 5s --max-peers 128 --inject --seeder-slots "${SS:-8}" --urgent "$@" >"$out/$name.json"
  python3 -c "
import json, sys
o = json.load(open(sys.argv[2]))
print(f\"{sys.argv[1]:16s} {o['mean_completion_s']:7.2f} {o['p95_completion_s']:7.2f} {o['mean_stall_s']:7.2f} {o['seeder_per_image']:6.3f}\")" "$name" "$out/$name.json"
}
echo "setting           mean_s   p95_s stall_s seeder/img"
sim base; sim base-s2 --seed 2; sim base-s3 --seed 3
SR=10Gbit sim seeder-10g; CR=10Gbit sim clients-10g; SR=10Gbit SS=128 sim seeder-all-10g
SS=4 sim seeder-4; SS=16 sim seeder-16
sim piece-64k --piece-size 64KiB; sim piece-128k --piece-size 128KiB; sim piece-512k --piece-size 512KiB
sim rechoke-2s --rechoke 2s; sim rc2-s2 --rechoke 2s --seed 2; sim rc5 --rechoke 5s; sim rc1 --rechoke 1s
sim busy-2 --busy-backlog 2; sim busy-4 --busy-backlog 4; sim busy-4-s2 --busy-backlog 4 --seed 2
sim busy-8 --busy-backlog 8; sim busy-8-s2 --busy-backlog 8 --seed 2; sim busy-16 --busy-backlog 16
sim busy-128 --busy-backlog 128
sim busy-8-rc2 --busy-backlog 8 --rechoke 2s; sim b8rc2-s2 --busy-backlog 8 --rechoke 2s --seed 2
sim b8rc2-s3 --busy-backlog 8 --rechoke 2s --seed 3; sim b8rc1 --busy-backlog 8 --rechoke 1s
rm -r "$out"
