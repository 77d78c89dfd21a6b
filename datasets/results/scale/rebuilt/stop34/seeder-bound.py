#!/usr/bin/env python3
"""What one seeder's uplink allows a crowd of these traces, whatever the engine (stop 34).

    seeder-bound.py [--rate BYTES_PER_S] [--think S] TRACE.vmtrace...

Each trace is replayed as the headless clients do (its recorded gaps, THINK before the first
read of each task after the first), its reads rounded out to 16 KiB blocks. Peers can hold
only what the seeder sent, so the seeder must send every block some trace reads before its
first reader needs it.

1. Lateness bound. Sending the union of all traces' blocks in order of need (earliest
   deadline first, which minimises the largest lateness) at RATE, the largest lateness is a
   lower bound on the worst client's stall in any crowd of these traces from this seeder, at
   any N; per trace alone, the same bound at N=1.
2. An ideal crowd. A replay in which the seeder sends, one unit at a time, the unsent unit
   whose reader needs it first (its need moved by that reader's stall so far), every client
   has a unit the moment it is sent (peers infinitely fast, every future read known), and a
   read waits until its units are sent. Units are 16 KiB blocks or whole 256 KiB pieces (a
   crowd trades whole pieces). It gives the mean completion of one client per trace, against
   each trace alone: what the crowd costs before any engine does anything.
Needs `vmt-record` (target/release or PATH).
"""
import argparse, os, shutil, subprocess

BLOCK, PIECE = 16384, 262144
ap = argparse.ArgumentParser()
ap.add_argument("--rate", type=float, default=12.5e6)
ap.add_argument("--think", type=float, default=5.0)
ap.add_argument("traces", nargs="+")
a = ap.parse_args()
tool = "target/release/vmt-record" if os.path.exists("target/release/vmt-record") else shutil.which("vmt-record")


def reads_of(path):
    """[(t_us, (offset, len))] of the trace's reads, think time added."""
    out = subprocess.run([tool, "export", path], check=True, capture_output=True, text=True).stdout
    reads, task, shift = [], None, 0.0
    for line in out.splitlines():
        if line.startswith("#") or line.startswith("t_us"):
            continue
        t, op, off, ln, tk = line.split(",")[:5]
        if op != "R":
            continue
        if task is not None and tk != task:
            shift += a.think * 1e6
        task = tk
        reads.append((int(t) + shift, (int(off), int(ln))))
    return reads


def units(r, unit):
    off, ln = r
    return range(off // unit, (off + ln - 1) // unit + 1)


def first_needs(reads, unit):
    need = {}
    for t, r in reads:
        for u in units(r, unit):
            need.setdefault(u, t)
    return need


def lateness(times, unit):
    times = sorted(times)
    return max([0.0] + [(i + 1) * unit / a.rate - t / 1e6 for i, t in enumerate(times)])


def ideal(traces, unit):
    """Mean completion and stall (s) of the ideal crowd, one client per trace."""
    cs = []
    for reads in traces:
        order = sorted(first_needs(reads, unit).items(), key=lambda x: x[1])
        cs.append({"reads": reads, "k": 0, "stall": 0.0, "order": order, "ptr": 0})
    sent, t, dt = {}, 0.0, unit / a.rate * 1e6
    while any(c["k"] < len(c["reads"]) for c in cs):
        best = None
        for c in cs:
            while c["ptr"] < len(c["order"]) and c["order"][c["ptr"]][0] in sent:
                c["ptr"] += 1
            if c["ptr"] < len(c["order"]):
                u, base = c["order"][c["ptr"]]
                lag = c["stall"]
                if c["k"] < len(c["reads"]):
                    lag = max(lag, t - c["reads"][c["k"]][0])
                if best is None or base + lag < best[0]:
                    best = (base + lag, u)
        t += dt
        if best is not None:
            sent[best[1]] = t
        for c in cs:
            while c["k"] < len(c["reads"]):
                T, r = c["reads"][c["k"]]
                if T + c["stall"] > t or any(u not in sent for u in units(r, unit)):
                    break
                c["stall"] = max([T + c["stall"]] + [sent[u] for u in units(r, unit)]) - T
                c["k"] += 1
    done = [c["reads"][-1][0] / 1e6 + c["stall"] / 1e6 for c in cs]
    return sum(done) / len(cs), sum(c["stall"] for c in cs) / len(cs) / 1e6


traces = {os.path.basename(p).split(".")[0]: reads_of(p) for p in a.traces}
print(f"seeder {a.rate / 1e6:.1f} MB/s, think {a.think:g} s")
print(f"\n1. Lateness bound, 16 KiB blocks")
print(f"{'trace':12} {'MB read':>8} {'MB by 1 s':>9} {'bound s':>8}")
union = {}
for name, reads in traces.items():
    need = first_needs(reads, BLOCK)
    for u, t in need.items():
        union[u] = min(union.get(u, t), t)
    early = sum(1 for t in need.values() if t <= 1e6) * BLOCK / 1e6
    print(f"{name:12} {len(need) * BLOCK / 1e6:8.1f} {early:9.1f} {lateness(need.values(), BLOCK):8.2f}")
early = sum(1 for t in union.values() if t <= 1e6) * BLOCK / 1e6
print(f"{'union':12} {len(union) * BLOCK / 1e6:8.1f} {early:9.1f} {lateness(union.values(), BLOCK):8.2f}")
print(f"the union's first second is {early / (a.rate / 1e6):.1f} s of the seeder's uplink")
print(f"\n2. Ideal crowd, one client per trace: mean completion / stall (s)")
for label, unit in (("16 KiB blocks", BLOCK), ("256 KiB pieces", PIECE)):
    alone = [ideal([r], unit) for r in traces.values()]
    a_c = sum(x[0] for x in alone) / len(alone)
    a_s = sum(x[1] for x in alone) / len(alone)
    c_c, c_s = ideal(list(traces.values()), unit)
    print(f"{label:15} alone {a_c:6.2f} / {a_s:5.2f}   crowd {c_c:6.2f} / {c_s:5.2f}   crowd / alone {c_c / a_c:.3f}")
