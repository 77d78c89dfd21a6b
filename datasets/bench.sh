#!/usr/bin/env bash
# The benchmark of issue 6: vmt against what users would use instead, on real bandwidth-capped
# links between network namespaces, replaying held-out traces of the appliance. Run as root.
#
#   datasets/bench.sh [--quick|--full] [--out DIR]
#
# --quick (default): one task and one session (2 s think), no vmt-run fetch, N = 1 4, 400 Mbit/s
#          links; under 5 minutes, for development.
# --full: every held-out task run, boot session and the first two walks (sessions with 0 and 5 s
#          think), N = 1 2 4 8 16, 100 Mbit/s links;
#          over an hour: on 2026-11-28 (12 held-out task runs, 17 replays per strategy) the
#          strategies phase alone took 32 minutes (results/full-urgent-n1/); crowd ~20 before.
# Env: WORK (default datasets/work, holds appliance.img), RATE, SEED_RATE (tc rates, e.g.
# 100mbit), BURST (tbf bucket, default 256kb: what an idle link passes at once), THINK (full
# 5s, quick 2s), NS (crowd sizes, e.g. "1 2 4"), TASKS and SESSIONS (names of held-out
# traces in traces/test, e.g. TASKS="git-5" SESSIONS="session-8 walk-16"; default full: every
# held-out task run, the held-out boot sessions and the first two held-out walks; quick: the
# first held-out git run and the last boot session; record.sh's counts are RUNS, BOOT_SESSIONS
# and WALKS, never these), STRATEGIES (of phase strategies, default all; sshfs and aria2 also gate the crowd's
# baselines), CROWD (vmt runs of the crowd phase as STRATEGY:MODE, default "markov:swarm
# markov:cs oracle:swarm"), SEED_ARGS (extra `vmt-run seed` options), PHASES (default
# "strategies crowd"), KEEP=1 keeps the scratch dir, PREFIX (of the namespaces' names, default
# vmtb; the script's pid follows it, so runs never collide), ORIGIN (vmt, the default: the
# origin is `vmt-run seed`; nginx: no vmt seeder runs, nginx in the seeder's namespace serves
# the image and the torrent, made by `vmt-run torrent`, names it as a web seed (BEP 19): the
# vmt clients fetch what no peer has from it; crowd phase only). Each crowd's origin bytes
# (nginx's access log, or the seeder's bytes in the clients' reports) and the load average
# while it ran go to raw/crowd-*.origin and summary.txt.
#
# Topology: a hub namespace with a bridge; the seeder (10.247.0.1; with ORIGIN=nginx the web
# server, on port 80) and clients 1..N
# (10.247.0.1+i) each in a namespace joined to the hub by a veth pair, tbf-capped in both
# directions (seeder uplink SEED_RATE). Peers run inside their namespaces; replays run in the
# root namespace against the mounts (FUSE and sshfs mounts are visible machine-wide).
#
# Phases, each replay one CSV row (vmt-bench add):
#   strategies  one client: local image (cold), full (vmt-run fetch, then run), aria2 (stock
#               BitTorrent client, then run), sshfs (network storage), and vmt-run mount with
#               demand, stream, profile, markov, oracle; every held-out trace, sessions also
#               with THINK at task boundaries.
#   crowd       N clients start together, each replays a held-out session with THINK:
#               markov and oracle in swarm mode, markov in client-server mode (--no-upload);
#               sshfs and aria2 at the smallest and largest N (quick: the largest).
# Output (default datasets/results/<mode>): results.csv, summary.txt, strategies.svg, crowd.svg,
# raw/ (every replay report and mount report). Each row of a vmt-run mount carries the bytes it
# fetched and its miss latency (from the mount's report); full and aria2 rows the download's
# bytes. summary.txt starts with the exact command, the commit and the links; the RTT that
# miss latency is measured against is curl's TCP connect time to the tracker, once per run.
# Everything it creates (namespaces, mounts, processes) is removed at the end and on failure.
set -euo pipefail
# The whole script is one block, read before it runs: a run takes up to an hour, and bash
# reads a plain script as it goes, so editing it meanwhile would run the edit's bytes.
{
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
mode=quick
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) mode=quick ;;
    --full) mode=full ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,42p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root (namespaces, tc, FUSE)" >&2; exit 1; }
# The exact command, with every knob the caller set (before the defaults fill the rest).
cmdline=
for v in WORK RATE SEED_RATE BURST THINK NS TASKS SESSIONS STRATEGIES CROWD SEED_ARGS PHASES KEEP PREFIX ORIGIN; do
  if [ -n "${!v+x}" ]; then cmdline+="$v=$(printf '%q' "${!v}") "; fi
done
cmdline+="datasets/bench.sh --$mode${out:+ --out $(printf '%q' "$out")}"
# The commit measured, taken now: the results written at the end change the tree.
commit=$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo '?')
# Changes to tracked files count, but not earlier results (datasets/results).
if [ "$commit" != '?' ] && [ -n "$(cd "$root" && git status --porcelain --untracked-files=no -- . ':!datasets/results' 2>/dev/null)" ]; then
  commit="$commit + uncommitted changes"
fi
# TASKS and SESSIONS default to names found in traces/test once the traces are known (below).
if [ "$mode" = full ]; then
  RATE=${RATE:-100mbit}; SEED_RATE=${SEED_RATE:-100mbit}; NS=${NS:-1 2 4 8 16}
  THINK=${THINK:-5s}
  STRATEGIES=${STRATEGIES:-full aria2 sshfs demand stream profile markov oracle}
  SESSION_THINKS="0s $THINK"   # sessions replayed without and with think time
else
  RATE=${RATE:-400mbit}; SEED_RATE=${SEED_RATE:-400mbit}; NS=${NS:-1 4}
  THINK=${THINK:-2s}
  STRATEGIES=${STRATEGIES:-aria2 sshfs demand stream profile markov oracle}
  SESSION_THINKS=$THINK
fi
PHASES=${PHASES:-strategies crowd}
BURST=${BURST:-256kb}
for ph in $PHASES; do
  case "$ph" in strategies|crowd) ;; *) echo "bench.sh: unknown phase '$ph' in PHASES (strategies, crowd)" >&2; exit 2 ;; esac
done
[ -n "${PHASES// /}" ] || { echo "bench.sh: PHASES is empty (strategies, crowd)" >&2; exit 2; }
CROWD=${CROWD:-markov:swarm markov:cs oracle:swarm}
ORIGIN=${ORIGIN:-vmt}
case "$ORIGIN" in vmt|nginx) ;; *) echo "bench.sh: unknown ORIGIN '$ORIGIN' (vmt, nginx)" >&2; exit 2 ;; esac
# Phase strategies measures against a vmt seeder (vmt-run fetch, the single-client mounts).
case " $PHASES " in
  *" strategies "*) [ "$ORIGIN" = vmt ] || { echo "bench.sh: ORIGIN=nginx measures the crowd phase only (PHASES=crowd)" >&2; exit 2; } ;;
esac
has() { case " $STRATEGIES " in *" $1 "*) return 0 ;; esac; return 1; }
has_phase() { case " $PHASES " in *" $1 "*) return 0 ;; esac; return 1; }
work=${WORK:-$here/work}
out=${out:-$here/results/$mode}
image=$work/appliance.img
bin=$root/target/release
say() { printf '[bench %s] %s\n' "$(date -u +%T)" "$*" >&2; }

# --- packages and binaries ------------------------------------------------------------------
need=()
for pair in aria2c:aria2 sshfs:sshfs sshd:openssh-server opentracker:opentracker \
            transmission-create:transmission-cli tc:iproute2 fusermount3:fuse3 curl:curl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
(cd "$root" && cargo build --release -q -p vmt-run -p vmt-record -p vmt-train -p vmt-bench)

# --- image, traces, bundle: the traces must belong to this image ----------------------------
[ -f "$image" ] || "$here/build-appliance.sh" "$work"
# shellcheck source=datasets/dataset-for-image.sh
. "$here/dataset-for-image.sh"

# The held-out traces to replay: names in traces/test (record.sh decides how many there are).
held_out() {  # held_out GLOB: names of traces/test/GLOB.vmtrace, sorted by run number
  ls "$traces/test/" | sed -n "s/^\($1\)\.vmtrace\$/\1/p" | sort -t- -k2,2n
}
if [ -z "${TASKS+x}" ]; then
  if [ "$mode" = full ]; then
    TASKS=$(held_out '[a-z]*-[0-9]*' | grep -v '^\(session\|walk\)-' | sort | paste -sd' ')
  else
    TASKS=$(held_out 'git-[0-9]*' | head -1)
  fi
fi
if [ -z "${SESSIONS:-}" ]; then
  if [ "$mode" = full ]; then
    SESSIONS=$( (held_out 'session-[0-9]*'; held_out 'walk-[0-9]*' | head -2) | paste -sd' ')
  else
    SESSIONS=$(held_out 'session-[0-9]*' | tail -1)
  fi
fi
for name in $TASKS $SESSIONS; do
  [ -f "$traces/test/$name.vmtrace" ] || {
    echo "bench.sh: no held-out trace '$name' in $traces/test; TASKS and SESSIONS name traces there: $(held_out '.*' | paste -sd' ')" >&2
    exit 2
  }
done
[ -n "${SESSIONS// /}" ] || { echo "bench.sh: no held-out session in $traces/test" >&2; exit 2; }

# --- scratch, cleanup -----------------------------------------------------------------------
W=$(mktemp -d "$work/bench.XXXXXX"); chmod 755 "$W"
tag=${PREFIX:-vmtb}$$
hub=$tag-hub
nmax=0; for n in $NS; do [ "$n" -gt "$nmax" ] && nmax=$n; done
namespaces=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e +o pipefail   # best effort from here: every step runs even if one fails
  say "cleaning up"
  # Processes inside our namespaces (seeder, clients, sshd, tracker), then our own children.
  for ns in "${namespaces[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$p" 2>/dev/null || true; done
  done
  for p in $(jobs -p); do kill -TERM "$p" 2>/dev/null || true; done
  local end=$((SECONDS + 15))
  while [ $SECONDS -lt $end ]; do
    local alive=0
    for ns in "${namespaces[@]}"; do [ -n "$(ip netns pids "$ns" 2>/dev/null)" ] && alive=1; done
    [ $alive = 0 ] && break; sleep 0.2
  done
  for ns in "${namespaces[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  done
  # Mounts under the scratch dir (vmt-run FUSE, sshfs).
  grep -F " $W/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do
    fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [ "$rc" != 0 ] && [ -s "${csv:-}" ]; then
    rm -rf "$out.partial"; mkdir -p "$out.partial" && cp -r "$csv" "$W/raw" "$out.partial/"
    say "failed (exit $rc): the rows measured so far are in $out.partial"
  fi
  if [ "${KEEP:-0}" = 1 ]; then say "scratch kept in $W"; else rm -rf "$W"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- network --------------------------------------------------------------------------------
# Run a command in a namespace's network only. Not `ip netns exec`: it also gives the command a
# mount namespace of its own, so the FUSE and sshfs mounts made there would be invisible here.
inns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }
ip_of() { echo "10.247.0.$(($1 + 1))"; }     # 0 = seeder, 1.. = clients
ns_of() { echo "$tag-p$1"; }
say "network: seeder + $nmax clients, links $RATE, seeder uplink $SEED_RATE"
ip netns add "$hub"; namespaces+=("$hub")
inns "$hub" ip link add br0 type bridge
inns "$hub" ip link set br0 up
for i in $(seq 0 "$nmax"); do
  ns=$(ns_of "$i"); up=$RATE; [ "$i" = 0 ] && up=$SEED_RATE
  ip netns add "$ns"; namespaces+=("$ns")
  ip link add v0 netns "$ns" type veth peer name "h$i" netns "$hub"
  inns "$hub" ip link set "h$i" master br0
  inns "$hub" ip link set "h$i" up
  inns "$ns" ip addr add "$(ip_of "$i")/24" dev v0
  inns "$ns" ip link set v0 up
  inns "$ns" ip link set lo up
  inns "$ns" tc qdisc add dev v0 root tbf rate "$up" burst "$BURST" latency 50ms
  inns "$hub" tc qdisc add dev "h$i" root tbf rate "$RATE" burst "$BURST" latency 50ms
done
seeder=$(ip_of 0)

# wait_for SECONDS CMD...: poll CMD until it succeeds, or fail.
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt "$end" ] || { say "timeout waiting for: $*"; return 1; }
    sleep 0.05
  done
}
listening() { inns "$1" ss -ltnH "sport = :$2" | grep -q .; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'; }

# --- servers in the seeder's namespace ------------------------------------------------------
imgdir=$(dirname "$(readlink -f "$image")")
imgname=$(basename "$(readlink -f "$image")")
web_seed=
if [ "$ORIGIN" = nginx ]; then
  # nginx from the distribution as a plain HTTP origin; its access log counts the origin's
  # bytes ($bytes_sent: headers included, what the link carried).
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || {
    say "installing nginx"; apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx; }
  web_seed=http://$seeder/$imgname
  mkdir -p "$W/nginx"
  cat > "$W/nginx/nginx.conf" <<NGINX
daemon off;
master_process off;
worker_processes 1;
user root;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 1024; }
http {
  log_format origin '\$remote_addr \$status \$bytes_sent "\$http_range" \$request_time';
  access_log $W/nginx/access.log origin;
  client_body_temp_path $W/nginx/body;
  proxy_temp_path $W/nginx/proxy;
  fastcgi_temp_path $W/nginx/fastcgi;
  uwsgi_temp_path $W/nginx/uwsgi;
  scgi_temp_path $W/nginx/scgi;
  sendfile on;
  server {
    listen $seeder:80;
    root $imgdir;
  }
}
NGINX
  say "origin: nginx serving $web_seed; vmt-run torrent (hashing the image)"
  inns "$(ns_of 0)" nginx -p "$W/nginx" -c "$W/nginx/nginx.conf" >"$W/nginx/stderr.log" 2>&1 &
  wait_for 30 listening "$(ns_of 0)" 80
  "$bin/vmt-run" torrent --image "$image" --out "$W/app.torrent" --web-seed "$web_seed" \
    >"$W/torrent.log" 2>&1
else
  say "seeder: vmt-run seed (hashing the image)"
  inns "$(ns_of 0)" "$bin/vmt-run" seed --image "$image" --listen "$seeder:6881" \
    --torrent-out "$W/app.torrent" ${SEED_ARGS:-} >"$W/seed.log" 2>&1 &
  wait_for 300 listening "$(ns_of 0)" 6881
  # It binds first, then hashes (SHA-1 per piece, SHA-256 per 16 KiB block for the block-hash
  # table, SHA-256 of the image) and writes the .torrent atomically.
  wait_for 300 test -s "$W/app.torrent"
fi

mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$W/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$W/id"
cp "$W/id.pub" "$W/authorized_keys"
cat > "$W/sshd_config" <<EOF
ListenAddress $seeder
Port 22
HostKey $W/host_key
PermitRootLogin prohibit-password
AuthorizedKeysFile $W/authorized_keys
StrictModes no
UsePAM no
PidFile none
# N clients connect at once: the default MaxStartups (10:30:100) drops some of them.
MaxStartups 200
MaxSessions 200
Subsystem sftp internal-sftp
EOF
inns "$(ns_of 0)" /usr/sbin/sshd -D -f "$W/sshd_config" -E "$W/sshd.log" &
wait_for 30 listening "$(ns_of 0)" 22

# Stock BitTorrent: opentracker + an aria2c seeder, with a torrent made by transmission-create.
say "stock torrent: transmission-create (hashing the image)"
mkdir -p "$W/trk"
transmission-create -s 256 -t "http://$seeder:6969/announce" -o "$W/stock.torrent" "$(readlink -f "$image")" >/dev/null
transmission-show "$W/stock.torrent" | awk '$1=="Hash:"{print $2}' > "$W/trk/whitelist.txt"
inns "$(ns_of 0)" opentracker -i "$seeder" -p 6969 -P 6969 -d "$W/trk" -w whitelist.txt >"$W/trk.log" 2>&1 &
wait_for 30 listening "$(ns_of 0)" 6969
A2="aria2c --enable-dht=false --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=false \
  --summary-interval=0 --console-log-level=warn --file-allocation=none --bt-tracker-interval=5"
inns "$(ns_of 0)" $A2 --dir="$imgdir" --bt-seed-unverified=true --seed-ratio=0.0 \
  --listen-port=6882 "$W/stock.torrent" >"$W/aria2-seed.log" 2>&1 &
wait_for 60 listening "$(ns_of 0)" 6882

# Round trip client 1 -> seeder on the idle links, the summary's unit of miss latency with one
# block's transfer: the median of 15 TCP connects (curl's time_connect) to the tracker.
rtt_ms=$(for _ in $(seq 15); do
    inns "$(ns_of 1)" curl -s -o /dev/null --max-time 2 -w '%{time_connect}\n' "http://$seeder:6969/" || true
  done | awk '$1 > 0 {print $1 * 1000}' | sort -g | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]}')
say "RTT client 1 -> seeder: ${rtt_ms:-not measured (the summary uses its default)} ms"

csv=$W/results.csv
mkdir -p "$W/raw"
"$bin/vmt-bench" init --csv "$csv"
image_bytes=$(stat -L -c %s "$image")
# add_row JSON PHASE STRATEGY MODE N CLIENT SETUP_S [--mount-report FILE | --fetched BYTES]
add_row() {
  "$bin/vmt-bench" add --csv "$csv" --replay "$1" --phase "$2" --strategy "$3" --mode "$4" \
    --n "$5" --client "$6" --setup-s "$7" "${@:8}"
}
# replay TRACE FILE THINK JSON [--cold]
replay() {
  timeout 600 "$bin/vmt-record" replay --trace "$traces/test/$1.vmtrace" --file "$2" \
    --think "$3" --json ${5:-} >"$4"
}
task_of() {  # the task the profile strategy follows: the trace's label, for sessions the first after boot
  case "$1" in
    session-*|walk-*) "$bin/vmt-record" export "$traces/test/$1.vmtrace" | awk -F, '$1 ~ /^[0-9]+$/ && $5 != "" && $5 != "boot" {print $5; exit}' ;;
    *) echo "${1%-*}" ;;
  esac
}

# --- client side: a vmt-run mount in client i's namespace -----------------------------------
# mount_start I STRATEGY MODE TRACE N: starts it in the background, prints nothing; the image
# appears at $W/c$I/mnt/$imgname. MODE swarm: listens and knows every other client of the N.
mount_start() {
  local i=$1 strategy=$2 md=$3 trace=$4 n=$5 d=$W/c$1
  rm -rf "$d"; mkdir -p "$d/mnt" "$d/data"
  local args=(--torrent "$W/app.torrent" --bundle "$bundle" --mountpoint "$d/mnt" --data "$d/data"
              --strategy "$strategy" --report "$d/report.json")
  # With ORIGIN=nginx the torrent's web seed is the origin, and no vmt seeder runs.
  if [ "$ORIGIN" = vmt ]; then args+=(--peer "$seeder:6881"); fi
  if [ "$md" = swarm ]; then
    args+=(--listen "$(ip_of "$i"):6881")
    for j in $(seq 1 "$n"); do [ "$j" = "$i" ] || args+=(--peer "$(ip_of "$j"):6881"); done
  else
    args+=(--no-upload)
  fi
  case "$strategy" in
    profile) args+=(--profile "$(task_of "$trace")") ;;
    oracle) args+=(--oracle-trace "$traces/test/$trace.vmtrace") ;;
  esac
  # nsenter execs vmt-run, so $! is the mount's own PID (a shell function would give a subshell's).
  nsenter --net="/run/netns/$(ns_of "$i")" "$bin/vmt-run" mount "${args[@]}" >"$d/mount.log" 2>&1 &
  echo $! > "$d/pid"
}
mount_stop() {  # mount_stop I TAG: SIGTERM, wait for the report, keep it as raw/TAG.mount.json
  local d=$W/c$1 pid
  pid=$(cat "$d/pid")
  kill -TERM "$pid" 2>/dev/null || true
  local end=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then say "mount $1 did not stop in 30 s: killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  fusermount3 -u -z "$d/mnt" 2>/dev/null || true
  [ -f "$d/report.json" ] && cp "$d/report.json" "$W/raw/$2.mount.json"
  cp "$d/mount.log" "$W/raw/$2.mount.log" 2>/dev/null || true
  rm -rf "$d"
}
sshfs_start() {  # sshfs_start I: the seeder's image directory at $W/c$I/mnt
  local d=$W/c$1
  rm -rf "$d"; mkdir -p "$d/mnt"
  inns "$(ns_of "$1")" timeout 60 sshfs -o ro,IdentityFile="$W/id",StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null,BatchMode=yes,LogLevel=ERROR "root@$seeder:$imgdir" "$d/mnt"
}
sshfs_stop() { fusermount3 -u -z "$W/c$1/mnt" 2>/dev/null || true; rm -rf "$W/c$1"; }
aria2_get() {  # aria2_get I: whole image into $W/c$I/dl with the stock client; prints seconds
  local d=$W/c$1 t0
  rm -rf "$d"; mkdir -p "$d/dl"
  t0=$(now)
  inns "$(ns_of "$1")" timeout 900 $A2 --dir="$d/dl" --seed-time=0 \
    --listen-port=6882 "$W/stock.torrent" >"$d/aria2.log" 2>&1
  since "$t0"
}

# one_client I STRATEGY MODE TRACE THINK N PHASE: setup + replay + row, for client I.
one_client() {
  local i=$1 st=$2 md=$3 trace=$4 think=$5 n=$6 phase=$7 t0 setup file
  local tagname="$phase-$st-$md-n$n-c$i-$trace-think$think"
  local json=$W/raw/$tagname.json extra=()
  case "$st" in
    sshfs)
      t0=$(now); sshfs_start "$i"; file=$W/c$i/mnt/$imgname
      wait_for 30 test -s "$file"; setup=$(since "$t0")
      replay "$trace" "$file" "$think" "$json"
      sshfs_stop "$i" ;;
    aria2)
      setup=$(aria2_get "$i"); file=$W/c$i/dl/$imgname
      replay "$trace" "$file" "$think" "$json"
      rm -rf "$W/c$i"; extra=(--fetched "$image_bytes") ;;
    *)
      t0=$(now); mount_start "$i" "$st" "$md" "$trace" "$n"; file=$W/c$i/mnt/$imgname
      wait_for 60 test -s "$file"; setup=$(since "$t0")
      replay "$trace" "$file" "$think" "$json"
      mount_stop "$i" "$tagname"
      # Bytes fetched and miss latency; a mount that wrote no report leaves them empty.
      if [ -f "$W/raw/$tagname.mount.json" ]; then extra=(--mount-report "$W/raw/$tagname.mount.json")
      else say "no mount report for $tagname: its fetched and miss cells stay empty"; fi ;;
  esac
  add_row "$json" "$phase" "$st" "$md" "$n" "$i" "$setup" "${extra[@]}"
}

# --- phase 1: strategies, one client ---------------------------------------------------------
if has_phase strategies; then
runs=()   # "trace think"
for t in $TASKS; do runs+=("$t 0s"); done
for s in $SESSIONS; do for th in $SESSION_THINKS; do runs+=("$s $th"); done; done
say "phase strategies: ${#runs[@]} replays per strategy"
for r in "${runs[@]}"; do
  set -- $r
  replay "$1" "$image" "$2" "$W/raw/strategies-local-$1-think$2.json" --cold
  add_row "$W/raw/strategies-local-$1-think$2.json" strategies local local 1 0 0
done
# Whole-image downloads, each once, then every replay on the local copy.
replay_copy() {  # replay_copy STRATEGY FILE SETUP_S FETCHED: every run on a downloaded copy, then drop it
  local r
  for r in "${runs[@]}"; do
    set -- "$1" "$2" "$3" "$4" $r
    replay "$5" "$2" "$6" "$W/raw/strategies-$1-$5-think$6.json"
    add_row "$W/raw/strategies-$1-$5-think$6.json" strategies "$1" swarm 1 1 "$3" --fetched "$4"
  done
  rm -rf "$W/c1"
}
if has full; then
say "full: vmt-run fetch"
mkdir -p "$W/c1"; t0=$(now)
inns "$(ns_of 1)" timeout 900 "$bin/vmt-run" fetch --torrent "$W/app.torrent" \
  --peer "$seeder:6881" --out "$W/c1/full.img" >"$W/raw/full-fetch.log" 2>&1
full_s=$(since "$t0")
# What the fetch downloaded, from its report line ("downloaded N bytes"), else the image size.
full_bytes=$(sed -n 's/.*; downloaded \([0-9][0-9]*\) bytes.*/\1/p' "$W/raw/full-fetch.log" | tail -n 1)
replay_copy full "$W/c1/full.img" "$full_s" "${full_bytes:-$image_bytes}"
fi
if has aria2; then
say "full: aria2c"
a2_s=$(aria2_get 1)
replay_copy aria2 "$W/c1/dl/$imgname" "$a2_s" "$image_bytes"   # aria2 reports no byte count: the image
fi
for st in sshfs demand stream profile markov oracle; do
  has "$st" || continue
  say "strategy $st"
  md=swarm; [ "$st" = sshfs ] && md=server
  for r in "${runs[@]}"; do
    set -- $r
    one_client 1 "$st" "$md" "$1" "$2" 1 strategies
  done
done

fi

# --- phase 2: flash crowd --------------------------------------------------------------------
set -- $SESSIONS; nsess=$#; sess=("$@")
# crowd STRATEGY MODE N: N clients together, client i replays session (i-1) mod S. Fewer
# clients than sessions run in rounds until every session is replayed, so that every N
# averages the same mix of sessions (they differ in length and think time) and the
# N=16 / N=1 ratio compares like with like.
crowd() {
  say "crowd $1 $2 N=$3"
  local pids=() i off failed=0 name=crowd-$1-$2-n$3 log0 sampler
  log0=$(origin_log_bytes)
  # The load average every 5 s while the crowd runs: the machine may be shared.
  (while :; do echo "$(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)"; sleep 5; done) >"$W/raw/$name.load" &
  sampler=$!
  for ((off = 0; off == 0 || off < nsess; off += $3)); do
    pids=()
    for i in $(seq 1 "$3"); do
      one_client "$i" "$1" "$2" "${sess[$(((i - 1 + off) % nsess))]}" "$THINK" "$3" crowd &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
  done
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  # Origin bytes are counted for vmt mounts (their reports) and nginx; sshfs and aria2 crowds
  # have neither.
  if [ "$ORIGIN" = nginx ] || compgen -G "$W/raw/$name-c*.mount.json" >/dev/null; then
    origin_row "$name" "$log0"
  fi
  # A failed client (its row is missing) is reported, not fatal: the other runs still count.
  [ $failed = 0 ] || { say "crowd $1 $2 N=$3: a client failed"; echo "crowd $1 $2 N=$3" >> "$W/failed"; }
}
# Bytes nginx has sent so far (0 without nginx).
origin_log_bytes() {
  if [ -f "$W/nginx/access.log" ]; then awk '{s += $3} END {printf "%d\n", s}' "$W/nginx/access.log"
  else echo 0; fi
}
# origin_row NAME LOG0: the origin's bytes in crowd NAME, two ways (nginx's log since LOG0;
# the clients' own counts: web seed payload, or payload from the vmt seeder), over the image
# size, and the load average while it ran, into raw/NAME.origin.
origin_row() {
  local name=$1 log_bytes requests clients bytes ratio load
  log_bytes=$(( $(origin_log_bytes) - $2 ))
  requests=0; [ -f "$W/nginx/access.log" ] && requests=$(wc -l < "$W/nginx/access.log")
  if [ "$ORIGIN" = nginx ]; then
    clients=$(cat "$W/raw/$name"-c*.mount.json 2>/dev/null | jq -s 'map(.origin_downloaded) | add // 0')
    bytes=$log_bytes
  else
    clients=$(cat "$W/raw/$name"-c*.mount.json 2>/dev/null \
      | jq -s --arg s "$seeder:" 'map(.peers[] | select(.addr | startswith($s)) | .downloaded) | add // 0')
    bytes=$clients
  fi
  ratio=$(awk -v b="$bytes" -v i="$image_bytes" 'BEGIN { printf "%.3f", b / i }')
  load=$(awk '{a += $2; if ($2 > m) m = $2} END {if (NR) printf "mean %.2f, max %.2f (1-min, %d samples)", a / NR, m, NR}' "$W/raw/$name.load")
  {
    echo "origin=$ORIGIN${web_seed:+ $web_seed}"
    echo "origin_bytes=$bytes"
    echo "image_bytes=$image_bytes"
    echo "origin_over_image=$ratio"
    echo "nginx_log_bytes=$log_bytes"
    echo "nginx_requests_total=$requests"
    echo "clients_origin_bytes=$clients"
    echo "load_average=$load"
  } > "$W/raw/$name.origin"
  say "$name: origin ($ORIGIN) sent $bytes bytes = $ratio x the image (clients counted $clients); load $load"
}
nmin=$nmax; for n in $NS; do [ "$n" -lt "$nmin" ] && nmin=$n; done
for n in $NS; do
  has_phase crowd || break
  for sm in $CROWD; do crowd "${sm%%:*}" "${sm#*:}" "$n"; done
  # The baselines at the largest N (quick) or the smallest and largest (full).
  if [ "$n" = "$nmax" ] || { [ "$mode" = full ] && [ "$n" = "$nmin" ]; }; then
    if has sshfs; then crowd sshfs server "$n"; fi
    if has aria2; then crowd aria2 swarm "$n"; fi
  fi
done

# --- results ---------------------------------------------------------------------------------
mkdir -p "$out"
rm -rf "$out/raw"
cp -r "$W/raw" "$out/raw"
# Every range the origin served (client, status, bytes, range, seconds): where its bytes went.
[ -f "$W/nginx/access.log" ] && cp "$W/nginx/access.log" "$out/raw/nginx-access.log"
cp "$csv" "$out/results.csv"
header="vmt benchmark: $cmdline
date: $(date -u +'%Y-%m-%d %H:%M UTC'); commit $commit
links: $RATE each way per client, seeder uplink $SEED_RATE (tc tbf, burst $BURST); RTT ${rtt_ms:-?} ms; think $THINK; $(nproc) cores
held-out traces: ${TASKS:-(no tasks)} ${SESSIONS}; bundle $(basename "$bundle") (trained on traces/train)
phases: $PHASES; failed runs (rows missing): $(if [ -s "$W/failed" ]; then paste -sd';' "$W/failed"; else echo none; fi)
origin: $(if [ "$ORIGIN" = nginx ]; then echo "nginx web seed $web_seed, no vmt seeder"; else echo "vmt-run seed"; fi)
$(for f in "$W"/raw/crowd-*.origin; do [ -f "$f" ] || continue
  printf '%s: origin bytes / image %s (%s bytes; clients counted %s); load average %s\n' \
    "$(basename "$f" .origin)" "$(sed -n 's/^origin_over_image=//p' "$f")" \
    "$(sed -n 's/^origin_bytes=//p' "$f")" "$(sed -n 's/^clients_origin_bytes=//p' "$f")" \
    "$(sed -n 's/^load_average=//p' "$f")"; done)

"
"$bin/vmt-bench" report --csv "$out/results.csv" --out "$out" --header "$header" \
  --link-rate "$RATE" --seed-rate "$SEED_RATE" ${rtt_ms:+--rtt-ms "$rtt_ms"}
say "results in $out"
exit
}
