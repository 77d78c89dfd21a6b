#!/usr/bin/env bash
# Crowd runs of issue 15 with headless clients: N clients in one `vmt-run replay-client`
# process (each its own engine, peer id, port, storage; the mount's read path below FUSE),
# against one `vmt-run seed` of work/appliance.img on loopback, links limited by the engines'
# token buckets and time-dilated. Run as root or not; no namespaces, no FUSE.
#
#   datasets/scale.sh [--out DIR] [--summarize]
#
# --summarize: no runs; rewrite DIR/summary.txt from the JSON Lines already there. (Every run
# rewrites it too, with a row for every headless-MODE-nN.jsonl in DIR, not only its own.)
# Env: WORK (holds appliance.img; default datasets/work), NS (default "1 32 64 128"), MODES
# (default "swarm cs"), RATE and SEED_RATE (the undilated links in Mbit/s, per client both ways
# and the seeder's uplink: default 100 and 100, as bench.sh --full), DILATION (K, default 10:
# engines run at RATE/K, gaps and think times K times longer), DILATION_N1 (K of the N=1 runs,
# default DILATION), THINK (default 5s), RECHOKE (the choke rotation period of the seeder and
# the clients, undilated seconds; default 10, the engine's), STRATEGY (default markov),
# PEERS_PER_CLIENT (default 8), TRACES (names in traces/test; default every walk-* and
# session-*), PORT (the seeder's, default 45000), SEED_ARGS (more `vmt-run seed` flags, e.g.
# "--inject --upload-slots 8"),
# CLIENT_ARGS (more `vmt-run replay-client` flags, e.g. "--urgent"),
# KEEP=1 keeps the scratch dir, BUILD=0 uses target/release/vmt-run as it is.
# Traces and bundle: the repository's, or, on a rebuilt image, ones recorded for it into WORK
# (dataset-for-image.sh, as bench.sh does).
#
# N=1 runs every trace once, one after another (so the N=1 mean is over the same mix of traces
# as a crowd's); a crowd of N starts together, client i replaying trace i mod T.
# Disk: the clients' sparse storage is in $TMPDIR (default /tmp) and grows with the markov
# strategy's background fill, up to RATE/K per client for the run's wall time, each removed
# when its client ends: N=32 at K=10 peaked at 8.3 GB; allow about 35 GB for N=128.
# Time (K=10, walks of ~30 s): N=1 about 5 min per trace, a swarm crowd 7-8 min; a cs crowd
# is bound by the seeder (N=32 at K=1 took 5 min, so about 50 min at K=10).
# Output (default datasets/results/scale): headless-MODE-nN.jsonl (datasets/README.md has the
# fields), summary.txt (the command, the commit, a row per run with its CPU use; a run whose
# machine was busy >= 90% on average, or in 5% of its seconds, is marked SATURATED and its
# figures are not evidence).
set -euo pipefail
# The whole script is one block, read before it runs: a run takes up to an hour, and bash
# reads a plain script as it goes, so editing it meanwhile would run the edit's bytes.
{
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=
summarize=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift ;;
    --summarize) summarize=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "scale.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
cmdline=
for v in WORK NS MODES RATE SEED_RATE DILATION DILATION_N1 THINK RECHOKE STRATEGY PEERS_PER_CLIENT TRACES PORT SEED_ARGS CLIENT_ARGS KEEP BUILD; do
  if [ -n "${!v+x}" ]; then cmdline+="$v=$(printf '%q' "${!v}") "; fi
done
cmdline+="datasets/scale.sh${out:+ --out $(printf '%q' "$out")}"
if [ $summarize = 1 ]; then cmdline+=" --summarize"; fi
commit=$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo '?')
NS=${NS:-1 32 64 128}; MODES=${MODES:-swarm cs}; RATE=${RATE:-100}; SEED_RATE=${SEED_RATE:-100}
DILATION=${DILATION:-10}; DILATION_N1=${DILATION_N1:-$DILATION}; THINK=${THINK:-5s}
RECHOKE=${RECHOKE:-10}
STRATEGY=${STRATEGY:-markov}; PEERS_PER_CLIENT=${PEERS_PER_CLIENT:-8}; PORT=${PORT:-45000}
work=${WORK:-$here/work}; image=$work/appliance.img
out=${out:-$here/results/scale}
bin=$root/target/release
say() { printf '[scale %s] %s\n' "$(date -u +%T)" "$*" >&2; }
[ $summarize = 1 ] || [ -f "$image" ] || { echo "scale.sh: no image at $image (set WORK)" >&2; exit 1; }
[ $summarize = 1 ] || [ "${BUILD:-1}" = 0 ] || (cd "$root" && cargo build --release -q --bins -p vmt-run -p vmt-record -p vmt-train)
traces=$here/traces bundle=$here/appliance.vmtp
# shellcheck source=datasets/dataset-for-image.sh
[ $summarize = 1 ] || . "$here/dataset-for-image.sh"
traces=$traces/test
if [ -z "${TRACES:-}" ]; then
  TRACES=$(cd "$traces" && ls walk-*.vmtrace session-*.vmtrace | sed 's/\.vmtrace$//' | sort -V | tr '\n' ' ')
fi
W=$(mktemp -d "${TMPDIR:-/tmp}/vmt-scale.XXXXXX")
seed_pid=
cleanup() {
  [ -n "$seed_pid" ] && kill "$seed_pid" 2>/dev/null && wait "$seed_pid" 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then say "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
mkdir -p "$out"
# Bytes per second of R Mbit/s dilated by K.
bps() { echo $(( $1 * 1000000 / 8 / $2 )); }

# One seeder per dilation (its uplink is SEED_RATE / K), restarted when K changes.
seed_k=
seeder() {
  [ "$seed_k" = "$1" ] && return
  if [ -n "$seed_pid" ]; then kill "$seed_pid"; wait "$seed_pid" 2>/dev/null || true; fi
  local torrent=(--torrent-out "$W/app.torrent")
  [ -s "$W/app.torrent" ] && torrent=(--torrent "$W/app.torrent")
  say "seeder at $(bps "$SEED_RATE" "$1") B/s (K=$1; hashing the image)"
  "$bin/vmt-run" seed --image "$image" --listen "127.0.0.1:$PORT" "${torrent[@]}" \
    --upload-limit "$(bps "$SEED_RATE" "$1")" --rechoke "$((RECHOKE * $1))s" ${SEED_ARGS:-} >"$W/seed-k$1.log" 2>&1 &
  seed_pid=$!
  local end=$((SECONDS + 600))
  until [ -s "$W/app.torrent" ] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    kill -0 "$seed_pid" 2>/dev/null || { cat "$W/seed-k$1.log" >&2; exit 1; }
    [ $SECONDS -lt $end ] || { say "the seeder did not come up"; exit 1; }
    sleep 0.2
  done
  seed_k=$1
}

# crowd MODE N K TRACE...: one replay-client run, appended to headless-MODE-nN.jsonl.
crowd() {
  local mode=$1 n=$2 k=$3; shift 3
  local args=() t
  for t in "$@"; do args+=(--trace "$traces/$t.vmtrace"); done
  [ "$mode" = cs ] && args+=(--no-upload)
  seeder "$k"
  say "$mode N=$n K=$k: $*"
  "$bin/vmt-run" replay-client --torrent "$W/app.torrent" --bundle "$bundle" \
    --strategy "$STRATEGY" "${args[@]}" --clients "$n" --peer "127.0.0.1:$PORT" \
    --link-rate "$(bps "$RATE" 1)" --seed-rate "$(bps "$SEED_RATE" "$k")" --dilation "$k" \
    --think "$THINK" --rechoke "${RECHOKE}s" --peers-per-client "$PEERS_PER_CLIENT" --dir "$W/clients" \
    --out "$W/run.jsonl" ${CLIENT_ARGS:-} 2>>"$W/clients.log" || say "$mode N=$n: some client failed (see its lines)"
  cat "$W/run.jsonl" >> "$out/headless-$mode-n$n.jsonl"
  echo "$(uptime)" >> "$W/load.txt"
}

touch "$W/load.txt"
for mode in $MODES; do
  [ $summarize = 1 ] && break
  for n in $NS; do
    rm -f "$out/headless-$mode-n$n.jsonl"
    if [ "$n" = 1 ]; then
      for t in $TRACES; do crowd "$mode" 1 "$DILATION_N1" "$t"; done
    else
      # shellcheck disable=SC2086
      crowd "$mode" "$n" "$DILATION" $TRACES
    fi
  done
done

# summary.txt: per run and per N, from the JSON Lines (python3: json is all it needs).
{
  echo "command: $cmdline"
  echo "commit: $commit; $(nproc) cores; finished $(date -u +%FT%TZ)"
  echo "links (undilated): clients ${RATE} Mbit/s both ways, seeder ${SEED_RATE} Mbit/s up; think $THINK; rechoke ${RECHOKE}s; strategy $STRATEGY; traces: $TRACES"
  python3 - "$out" $MODES -- $NS <<'PY'
import glob, json, os, re, sys
out = sys.argv[1]; i = sys.argv.index('--'); modes = sys.argv[2:i]; ns = sys.argv[i + 1:]
# Every run in DIR, not only this invocation's: rerunning one N keeps the others' rows.
for f in glob.glob(f"{out}/headless-*-n*.jsonl"):
    m = re.fullmatch(r"headless-(\w+)-n(\d+)\.jsonl", os.path.basename(f))
    if m:
        modes += [m[1]] if m[1] not in modes else []
        ns += [m[2]] if m[2] not in ns else []
ns.sort(key=int)
def load(mode, n):
    try:
        lines = [json.loads(l) for l in open(f"{out}/headless-{mode}-n{n}.jsonl")]
    except FileNotFoundError:
        return [], []
    return [l for l in lines if l["kind"] == "client"], [l for l in lines if l["kind"] == "run"]
print("mode  N    K  mean_compl_s  p95_compl_s  mean_stall_s  N/N1  seeder/image  peers_share  cpu_s  cpu%  busy%  sat%  load1  verdict")
for mode in modes:
    base = {c["trace"]: c["completion_s"] for c in load(mode, 1)[0]}
    for n in ns:
        cs, runs = load(mode, n)
        if not cs:
            continue
        comp = sorted(c["completion_s"] for c in cs)
        mean = sum(comp) / len(comp)
        p95 = comp[min(len(comp) - 1, int(round(0.95 * (len(comp) - 1))))]
        stall = sum(c["stall_s"] for c in cs) / len(cs)
        # N/N1: each client against the N=1 run of its own trace, so the mix of traces cancels.
        rel = [c["completion_s"] / base[c["trace"]] for c in cs if base.get(c["trace"])]
        ratio = sum(rel) / len(rel) if rel else float("nan")
        image = runs[0]["image_bytes"]
        seeder = sum(r["seeder_bytes"] for r in runs) / (1 if n != "1" else len(runs))
        down = sum(c["downloaded"] for c in cs)
        peers = sum(c["from_peers"] for c in cs) / down if down else 0
        cpu = sum(r["cpu_s"] for r in runs); wall = sum(r["wall_s"] for r in runs)
        cores = runs[0]["cores"]
        busy = sum(r["machine_busy"] * r["wall_s"] for r in runs) / wall
        sat = any(r["saturated"] for r in runs)
        # Lines written before the per-second windows have no saturated share.
        shares = [r["saturated_share"] for r in runs if "saturated_share" in r]
        sat_pct = f"{100 * max(shares):4.0f}" if shares else "   -"
        failed = sum(r["failed"] for r in runs)
        verdict = ("SATURATED" if sat else "ok") + (f", {failed} failed" if failed else "")
        print(f"{mode:5} {n:>4} {runs[0]['dilation']:>2} {mean:13.2f} {p95:12.2f} {stall:13.2f} {ratio:5.2f} {seeder / image:13.2f} {peers:12.2f} {cpu:6.0f} {100 * cpu / wall / cores:4.0f} {100 * busy:5.0f} {sat_pct} {runs[-1]['load1_end']:6.1f}  {verdict}")
print("seeder/image at N=1: per run (each trace alone). cpu%: the clients' process over the run's wall time and all cores; busy%: the whole machine (/proc/stat); sat%: the share of the run's seconds it was >= 90% busy (SATURATED from 5%).")
PY
  if [ -s "$W/load.txt" ]; then echo "load at the end of each run:"; cat "$W/load.txt"; fi
} > "$out/summary.txt"
cat "$out/summary.txt"
exit
}
