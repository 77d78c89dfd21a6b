#!/usr/bin/env python3
"""Issue 15's validation against headless crowds: for every headless run in DIR (scale.sh's
headless-MODE-nN.jsonl), the simulator (vmt-train swarm-sim) on the same setup, side by side.

    datasets/headless-vs-sim.py DIR [--bundle B] [--traces-dir D] [--sim-args ARGS] [--max-peers M] [--out FILE]

Same setup means: the run's traces in its command's order (client i replays trace i mod T in
both), its undilated links (the run's rates times its dilation), its think time, its strategy
and mode, and its mesh (`--peers-per-client K` dials K clients and is dialed by K, which is the
simulator's ring of 2K neighbours). N=1 runs each trace alone, one after another, so its sim
is one single-client simulation per trace, averaged. Completion and stall are means over
clients in undilated seconds; seeder bytes are the seeder's upload over the image size.
A cell is flagged * when the simulator is more than 15% off. --sim-args: more swarm-sim flags
for what the run's seeder did differently (e.g. "--inject --seeder-slots 8" for a seeder run
with SEED_ARGS="--inject --upload-slots 8"). --max-peers: the simulator's neighbours instead of
the ring of 2K (peer exchange joins a real crowd of N <= 128 into one mesh: its clients report
N connected peers, so `--max-peers 128` is that topology).
"""
import argparse, glob, json, os, re, shlex, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--bundle", default=os.path.join(here, "appliance.vmtp"))
ap.add_argument("--traces-dir", default=os.path.join(here, "traces", "test"))
ap.add_argument("--bin", default=os.path.join(here, "..", "target", "release", "vmt-train"))
ap.add_argument("--sim-args", default="")
ap.add_argument("--max-peers", type=int)
ap.add_argument("--out")
a = ap.parse_args()


def sim(traces, clients, run):
    args = [a.bin, "swarm-sim", "--bundle", a.bundle, "--traces", *traces, "--clients", str(clients),
            "--strategy", run["strategy"], "--client-rate", str(run["client_rate"] * run["dilation"]),
            "--seeder-rate", str(run["seed_rate"] * run["dilation"]), "--think", f"{run['think_s']}s",
            "--max-peers", str(a.max_peers or 2 * run["peers_per_client"])]
    if run["mode"] == "cs":
        args.append("--no-upload")
    args += shlex.split(a.sim_args)
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def off(s, r):
    if not r:
        return "    -  "
    d = (s - r) / r * 100
    return f"{d:+6.0f}%" + ("*" if abs(d) > 15 else " ")


rows = []
files = sorted(glob.glob(os.path.join(a.dir, "headless-*-n*.jsonl")),
               key=lambda f: (f.split("-")[-2], int(re.search(r"-n(\d+)\.jsonl$", f).group(1))))
for f in files:
    lines = [json.loads(l) for l in open(f)]
    clients = [l for l in lines if l["kind"] == "client"]
    runs = [l for l in lines if l["kind"] == "run"]
    if not clients or not runs:
        continue
    run = runs[0]
    n = run["n"]
    real_c = sum(c["completion_s"] for c in clients) / len(clients)
    real_s = sum(c["stall_s"] for c in clients) / len(clients)
    real_b = sum(r["seeder_bytes"] for r in runs) / len(runs) / run["image_bytes"]
    saturated = any(r["saturated"] for r in runs)
    if n == 1:
        sims = [sim([os.path.join(a.traces_dir, c["trace"] + ".vmtrace")], 1, r) for c, r in zip(clients, runs)]
        sim_c = sum(s["mean_completion_s"] for s in sims) / len(sims)
        sim_s = sum(s["mean_stall_s"] for s in sims) / len(sims)
        sim_b = sum(s["seeder_per_image"] for s in sims) / len(sims)
    else:
        cmd = shlex.split(run["command"])
        traces = [os.path.join(a.traces_dir, os.path.basename(cmd[i + 1]))
                  for i, w in enumerate(cmd) if w == "--trace"]
        s = sim(traces, n, run)
        sim_c, sim_s, sim_b = s["mean_completion_s"], s["mean_stall_s"], s["seeder_per_image"]
    rows.append(f"{run['strategy'] + ' ' + run['mode']:13} {n:4} {run['dilation']:3} | {real_c:8.2f} {sim_c:7.2f} {off(sim_c, real_c)} | "
                f"{real_s:8.2f} {sim_s:7.2f} {off(sim_s, real_s)} | {real_b:8.2f} {sim_b:7.2f} {off(sim_b, real_b)}"
                + ("  SATURATED" if saturated else ""))

text = "\n".join([
    "Validation: simulator vs headless crowds (vmt-run replay-client), mean over clients, undilated seconds",
    f"headless: {a.dir}; command: datasets/headless-vs-sim.py {' '.join(sys.argv[1:])}", "",
    f"{'run':13} {'N':>4} {'K':>3} | {'compl real':>8} {'sim':>7} {'diff':>8} | {'stall real':>8} {'sim':>7} {'diff':>8} | {'seeder/img':>8} {'sim':>7} {'diff':>8}",
    *rows, "", "* more than 15% off. K: the run's dilation. SATURATED runs are not evidence."]) + "\n"
print(text, end="")
if a.out:
    open(a.out, "w").write(text)
