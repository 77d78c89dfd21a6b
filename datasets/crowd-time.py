#!/usr/bin/env python3
"""Where a flash crowd spends its time (issue 15): per crowd run of bench.sh and per N, the
mean over clients of completion and stall (from the replay reports), the stall of the first
task alone, the misses and their latency (from the mount reports: count, total, p50, p99,
max), and the bytes each client downloaded, took from the seeder and uploaded (MB = 10^6).

If misses stay as many while their latency grows with N, demanded blocks wait in queues (the
uploaders' and the links'); if misses grow, prefetch no longer keeps ahead.

    datasets/crowd-time.py datasets/results/full [--seeder 10.247.0.1]
"""
import argparse
import collections
import glob
import json
import os
import re
import statistics

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("results", help="a bench.sh output directory (with raw/)")
ap.add_argument("--seeder", default="10.247.0.1", help="the seeder's address in bench.sh's topology")
a = ap.parse_args()

name = re.compile(r"crowd-(?P<strategy>[a-z0-9]+)-(?P<mode>[a-z]+)-n(?P<n>\d+)-c\d+-.*\.json$")
runs = collections.defaultdict(lambda: collections.defaultdict(list))
for path in sorted(glob.glob(os.path.join(a.results, "raw", "crowd-*.json"))):
    m = name.search(os.path.basename(path))
    mount_path = path[: -len(".json")] + ".mount.json"
    if not m or path.endswith(".mount.json") or not os.path.exists(mount_path):
        continue  # not a vmt mount (sshfs, aria2) or not a replay report
    replay = json.load(open(path))
    mount = json.load(open(mount_path))
    stalls = mount["stalls"]
    from_seeder = sum(p["downloaded"] for p in mount["peers"] if p["addr"].startswith(a.seeder + ":"))
    runs[(m["strategy"], m["mode"])][int(m["n"])].append({
        "completion_s": replay["completion_s"],
        "stall_s": replay["stall_s"],
        "first_task_stall_s": replay["segments"][0]["stall_s"] if replay["segments"] else 0.0,
        "misses": mount["read_misses"],
        "miss_total_s": stalls["total_s"],
        "miss_p50_s": stalls["p50_s"],
        "miss_p99_s": stalls["p99_s"],
        "miss_max_s": stalls["max_s"],
        "down_MB": mount["downloaded"] / 1e6,
        "from_seeder_MB": from_seeder / 1e6,
        "up_MB": mount["uploaded"] / 1e6,
    })

cols = ["completion_s", "stall_s", "first_task_stall_s", "misses", "miss_total_s", "miss_p50_s",
        "miss_p99_s", "miss_max_s", "down_MB", "from_seeder_MB", "up_MB"]
print("mean over clients; " + a.results)
for (strategy, mode), by_n in sorted(runs.items()):
    print(f"\n{strategy} {mode}")
    print(f"{'N':>4} " + " ".join(f"{c:>18}" for c in cols))
    for n in sorted(by_n):
        rows = by_n[n]
        print(f"{n:>4} " + " ".join(f"{statistics.mean(r[c] for r in rows):>18.3f}" for c in cols))
