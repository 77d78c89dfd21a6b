#!/usr/bin/env python3
"""How much of one seeder's uplink the six traces' reads need, and when (stop 34).

    seeder-bound.py [--rate BYTES_PER_S] [--think S] TRACE.vmtrace...

Each trace is replayed as the headless clients do (its recorded gaps, THINK before the first
read of each task after the first; no stall), its reads rounded out to 16 KiB blocks. The
seeder must send a block before its first reader needs it; peers hold only what it sent.
Sending the union of all traces' blocks in order of need (earliest deadline first, optimal
for the largest lateness) at RATE, the largest lateness is a lower bound on the worst
client's stall in a crowd of these traces from this seeder, at any N; per trace alone, the
same bound for that trace at N=1. Needs `vmt-record` (target/release or PATH).
"""
import argparse, os, shutil, subprocess

B = 16384
ap = argparse.ArgumentParser()
ap.add_argument("--rate", type=float, default=12.5e6)
ap.add_argument("--think", type=float, default=5.0)
ap.add_argument("traces", nargs="+")
a = ap.parse_args()
tool = "target/release/vmt-record" if os.path.exists("target/release/vmt-record") else shutil.which("vmt-record")


def first_needs(path):
    """Block -> first time (µs) the trace reads it."""
    out = subprocess.run([tool, "export", path], check=True, capture_output=True, text=True).stdout
    need, task, shift = {}, None, 0.0
    for line in out.splitlines():
        if line.startswith("#") or line.startswith("t_us"):
            continue
        t, op, off, ln, tk = line.split(",")[:5]
        if op != "R":
            continue
        if task is not None and tk != task:
            shift += a.think * 1e6
        task = tk
        off, ln = int(off), int(ln)
        for b in range(off // B, (off + ln - 1) // B + 1):
            need.setdefault(b, int(t) + shift)
    return need


def lateness(times):
    times = sorted(times)
    return max([0.0] + [(i + 1) * B / a.rate - t / 1e6 for i, t in enumerate(times)])


union = {}
print(f"seeder {a.rate / 1e6:.1f} MB/s, think {a.think:g} s, 16 KiB blocks")
print(f"{'trace':12} {'MB read':>8} {'MB by 1 s':>9} {'alone: bound s':>14}")
for p in a.traces:
    need = first_needs(p)
    for b, t in need.items():
        union[b] = min(union.get(b, t), t)
    early = sum(1 for t in need.values() if t <= 1e6) * B / 1e6
    print(f"{os.path.basename(p).split('.')[0]:12} {len(need) * B / 1e6:8.1f} {early:9.1f} {lateness(need.values()):14.2f}")
early = sum(1 for t in union.values() if t <= 1e6) * B / 1e6
print(f"{'union':12} {len(union) * B / 1e6:8.1f} {early:9.1f} {lateness(union.values()):14.2f}")
print(f"the union's first second is {early / (a.rate / 1e6):.1f} s of the seeder's uplink")
