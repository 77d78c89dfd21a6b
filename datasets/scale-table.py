#!/usr/bin/env python3
"""Issue 15's tables from result files: the simulator (vmt-train swarm-sim --out JSON) against
real crowd runs (bench.sh's results.csv), and the prediction to N = 1,000.

    datasets/scale-table.py --real results.csv --sim DIR [--ns "1 2 4 8 16"]
                            [--predict "1 100 300 1000"] [--out DIR]

Real seeder bytes: the origin's bytes bench.sh counted for the crowd (raw/crowd-*.origin beside
results.csv, every round of a crowd smaller than its session list); without that file, the sum of
what the clients fetched in client-server mode and "-" in swarm mode. The simulator's are summed
over the same rounds (scale-sim.sh). A cell is flagged * when the simulator is more than 15% off.
"""
import argparse, csv, json, os
from collections import defaultdict

ap = argparse.ArgumentParser()
ap.add_argument("--real", required=True)
ap.add_argument("--sim", required=True)
ap.add_argument("--ns", default="1 2 4 8 16")
ap.add_argument("--predict", default="1 100 300 1000")
ap.add_argument("--out")
a = ap.parse_args()

real = defaultdict(list)
for r in csv.DictReader(open(a.real)):
    if r["phase"] == "crowd":
        real[(r["strategy"], r["mode"], int(r["n"]))].append(r)

def origin_bytes(strategy, mode, n):
    f = os.path.join(os.path.dirname(os.path.abspath(a.real)), "raw", f"crowd-{strategy}-{mode}-n{n}.origin")
    if not os.path.exists(f):
        return None
    kv = dict(l.strip().split("=", 1) for l in open(f) if "=" in l)
    return int(kv["origin_bytes"]) / 1e6 if "origin_bytes" in kv else None

def sim(strategy, mode, n):
    f = os.path.join(a.sim, f"sim-{strategy}-{mode}-{n}.json")
    return json.load(open(f))["summary"] if os.path.exists(f) else None

def off(s, r):
    if r is None or s is None or r == 0:
        return "   -  "
    d = (s - r) / r * 100
    return f"{d:+5.0f}%" + ("*" if abs(d) > 15 else " ")

lines = ["Validation: simulator vs real crowd (mean over clients; seconds, MB = 10^6 bytes)",
         f"real: {a.real}", "",
         f"{'run':16} {'N':>3} | {'compl real':>10} {'sim':>6} {'diff':>7} | {'stall real':>10} {'sim':>6} {'diff':>7} | {'seeder MB real':>14} {'sim':>6} {'diff':>7}"]
for strategy, mode in [("markov", "swarm"), ("markov", "cs"), ("oracle", "swarm")]:
    for n in map(int, a.ns.split()):
        rows, s = real.get((strategy, mode, n)), sim(strategy, mode, n)
        if not rows or not s:
            continue
        rc = sum(float(r["completion_s"]) for r in rows) / len(rows)
        rs = sum(float(r["stall_s"]) for r in rows) / len(rows)
        rb = origin_bytes(strategy, mode, n)
        if rb is None and mode == "cs":
            rb = sum(float(r["fetched"] or 0) for r in rows) / 1e6
        sb = s["seeder_bytes"] / 1e6
        lines.append(f"{strategy + ' ' + mode:16} {n:3} | {rc:10.2f} {s['mean_completion_s']:6.2f} {off(s['mean_completion_s'], rc)} | "
                     f"{rs:10.2f} {s['mean_stall_s']:6.2f} {off(s['mean_stall_s'], rs)} | "
                     f"{('-' if rb is None else f'{rb:.0f}'):>14} {sb:6.0f} {off(sb, rb)}")
lines += ["", "* more than 15% off. Stall differences are relative to small numbers at small N."]

pred = ["", "Prediction (simulator): mean / p95 completion (s), mean stall (s), seeder bytes / image",
        f"{'run':16} {'N':>5} {'mean':>7} {'p95':>7} {'stall':>7} {'seeder/img':>10} {'wall s':>7}"]
csvrows = []
for strategy, mode in [("markov", "swarm"), ("markov", "cs"), ("demand", "cs")]:
    for n in map(int, a.predict.split()):
        s = sim(strategy, mode, n)
        if not s:
            continue
        pred.append(f"{strategy + ' ' + mode:16} {n:5} {s['mean_completion_s']:7.2f} {s['p95_completion_s']:7.2f} "
                    f"{s['mean_stall_s']:7.2f} {s['seeder_per_image']:10.2f} {s['wall_s']:7.1f}")
        csvrows.append([strategy, mode, n, s["mean_completion_s"], s["p95_completion_s"], s["mean_stall_s"],
                        s["seeder_bytes"], s["seeder_per_image"], s["finished"], s["wall_s"]])
def get(st, mo, n):
    s = sim(st, mo, n)
    return s["mean_completion_s"] if s else None
m1, m1000 = get("markov", "swarm", 1), get("markov", "swarm", 1000)
if m1 and m1000:
    pred.append(f"\nmarkov swarm N=1000 / N=1 mean completion: {m1000 / m1:.2f} (goal <= 1.3)")
for n in (100, 1000):
    dn, mn = get("demand", "cs", n), get("markov", "swarm", n)
    if dn and mn:
        pred.append(f"sshfs-like (demand, client-server) / markov swarm at N={n}, mean completion: {dn / mn:.2f}")
        s1, s2 = sim("demand", "cs", n), sim("markov", "swarm", n)
        pred.append(f"  and mean stall: {s1['mean_stall_s']:.2f} s / {s2['mean_stall_s']:.2f} s = "
                    f"{s1['mean_stall_s'] / max(s2['mean_stall_s'], 1e-6):.1f}")
text = "\n".join(lines + pred) + "\n"
print(text, end="")
if a.out:
    open(os.path.join(a.out, "tables.txt"), "w").write(text)
    with open(os.path.join(a.out, "prediction.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["strategy", "mode", "n", "mean_completion_s", "p95_completion_s", "mean_stall_s",
                    "seeder_bytes", "seeder_per_image", "finished", "wall_s"])
        w.writerows(csvrows)
