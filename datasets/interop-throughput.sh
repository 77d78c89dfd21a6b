#!/usr/bin/env bash
# Whole-image download throughput of vmt against stock BitTorrent clients, from each kind of
# seeder (issue 14): every client downloads a random SIZE-byte image from one seeder over an
# uncapped veth pair between two network namespaces. Run as root.
#
#   datasets/interop-throughput.sh [--out DIR]
#
# Env: SIZE (default 1G; any `head -c` size), REPS (default 3), SEEDERS (default "vmt
# transmission rqbit"), CLIENTS (default "vmt aria2 transmission rqbit"), TR_ENCRYPTION
# (Transmission's "encryption" setting for both its seeder and its client: 0 tolerated,
# 1 preferred = its default, 2 required; default 1), TIMEOUT (seconds per download, default
# 1800), KEEP=1 keeps the scratch dir, PREFIX (namespace/veth/temp-dir prefix, default a4;
# at most 12 characters), NET (the /24 of the veth pair, default 10.41.4), PORT_BASE (first of
# the fixed ports, default 41000; uses PORT_BASE+1 to +92), BUILD=0 skips the build, VMT_BIN
# (the vmt-run binary, default target/release/vmt-run; e.g. an older build to compare).
#
# Topology: namespace $PREFIX-s (seeder and opentracker, $NET.1) and $PREFIX-c (client,
# $NET.2), joined by the veth pair ${PREFIX}s/${PREFIX}c with no qdisc limit. One seeder runs at a time; the
# repetitions are interleaved (rep 1: every seeder x every client, then rep 2, ...), so a slow
# phase of the shared machine hits every pair alike; each download gets a fresh seeder and tracker. Peers find each other through opentracker;
# vmt-run fetch is also given the seeder with --peer. Each download starts a fresh client
# process with an empty directory, is timed from its start until the client has all bytes
# (aria2c, vmt-run fetch and rqbit_peer exit then; Transmission is polled every 0.2 s), and is
# compared byte for byte with the image.
#
# rqbit is a stock librqbit 9.1 Session (shared/swarm/examples/rqbit_peer.rs), built here.
# Output (default datasets/results/interop): results.csv (rep,seeder,client,seconds,MB/s),
# summary.txt (the command, commit, load, medians per pair, vmt / best stock client per seeder).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=$root/datasets/results/interop
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "interop-throughput.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "interop-throughput.sh: run as root (namespaces)" >&2; exit 1; }
cmdline=
for v in SIZE REPS SEEDERS CLIENTS TR_ENCRYPTION TIMEOUT KEEP PREFIX NET PORT_BASE VMT_BIN; do
  if [ -n "${!v+x}" ]; then cmdline+="$v=$(printf '%q' "${!v}") "; fi
done
cmdline+="datasets/interop-throughput.sh${out:+ --out $(printf '%q' "$out")}"
SIZE=${SIZE:-1G}; REPS=${REPS:-3}; TIMEOUT=${TIMEOUT:-1800}
SEEDERS=${SEEDERS:-vmt transmission rqbit}; CLIENTS=${CLIENTS:-vmt aria2 transmission rqbit}
TR_ENCRYPTION=${TR_ENCRYPTION:-1}
commit=$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo '?')
if [ "$commit" != '?' ] && [ -n "$(cd "$root" && git status --porcelain --untracked-files=no -- . ':!datasets/results' 2>/dev/null)" ]; then
  commit="$commit + uncommitted changes"
fi

P=${PREFIX:-a4}; NET=${NET:-10.41.4}; PB=${PORT_BASE:-41000}
SIP=$NET.1; CIP=$NET.2
TRK_PORT=$((PB + 69)); TRK=$SIP:$TRK_PORT
VMT_SEED=$SIP:$((PB + 1)); TR_SEED_PORT=$((PB + 2)); RQ_SEED=$SIP:$((PB + 3))
TR_CLIENT_PORT=$((PB + 12)); A2_PORT=$((PB + 13)); RQ_CLIENT=$CIP:$((PB + 14))
TR_SEED_RPC=$((PB + 91)); TR_CLIENT_RPC=$((PB + 92))
S="nsenter --net=/run/netns/$P-s"; C="nsenter --net=/run/netns/$P-c"

if [ "${BUILD:-1}" = 1 ]; then
echo "building vmt-run and rqbit_peer (release)" >&2
(cd "$root" && nice -n 15 cargo build --release -q -p vmt-run \
  && nice -n 15 cargo build --release -q -p vmt-swarm --example rqbit_peer)
fi
VMT=${VMT_BIN:-$root/target/release/vmt-run}
RQBIT=$root/target/release/examples/rqbit_peer

W=$(mktemp -d "/tmp/$P-interop-XXXXXX"); chmod 755 "$W"
PIDS=()
stop() { # pid...: SIGTERM, then wait until gone
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
}
cleanup() {
  stop "${PIDS[@]}" 2>/dev/null || true
  # Every process still in our namespaces too: a download runs in a subshell ($(download ..)),
  # so a Transmission client it started is not in PIDS, and would outlive an interrupted run.
  local ns
  for ns in "$P-s" "$P-c"; do
    # shellcheck disable=SC2046
    stop $(ip netns pids "$ns" 2>/dev/null) 2>/dev/null || true
  done
  ip netns del "$P-s" 2>/dev/null || true
  ip netns del "$P-c" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

ip netns add "$P-s"; ip netns add "$P-c"
ip link add "${P}s" type veth peer name "${P}c"
ip link set "${P}s" netns "$P-s"; ip link set "${P}c" netns "$P-c"
ip netns exec "$P-s" sh -c "ip addr add $SIP/24 dev ${P}s && ip link set ${P}s up && ip link set lo up"
ip netns exec "$P-c" sh -c "ip addr add $CIP/24 dev ${P}c && ip link set ${P}c up && ip link set lo up"

mkdir -p "$W"/{seed,trk}
echo "writing a $SIZE random image" >&2
head -c "$SIZE" /dev/urandom > "$W/seed/image.img"
IMG=$W/seed/image.img
# The torrent all seeders serve: vmt's own (Transmission, aria2c and librqbit read it as stock).
$VMT seed --image "$IMG" --listen 127.0.0.1:0 --tracker "http://$TRK/announce" \
  --torrent-out "$W/image.torrent" >"$W/create.log" 2>&1 &
cp_pid=$!
until [ -s "$W/image.torrent" ]; do sleep 0.2; kill -0 $cp_pid 2>/dev/null || break; done
sleep 0.5; stop $cp_pid
TORRENT=$W/image.torrent
IH=$(transmission-show "$TORRENT" | awk '$1=="Hash:"{print $2}')
ENC=$(sed 's/../%&/g' <<<"$IH")
echo "$IH" > "$W/trk/whitelist.txt"

start_tracker() {
  $S opentracker -i $SIP -p $TRK_PORT -P $TRK_PORT -d "$W/trk" -w whitelist.txt >"$W/trk/log" 2>&1 &
  TRK_PID=$!; PIDS+=($TRK_PID)
  until $S curl -fs -o /dev/null "http://$TRK/scrape?info_hash=$ENC"; do sleep 0.1; done
}
seeded() { # waits until the tracker lists a seeder
  local end=$((SECONDS + 300))
  until $S curl -fs "http://$TRK/scrape?info_hash=$ENC" | grep -aq '8:completei[1-9]'; do
    [ $SECONDS -lt $end ] || { echo "no seeder in the tracker" >&2; return 1; }; sleep 0.2
  done
}
tr_settings() { # dir bind-ip peer-port rpc-port download-dir
  mkdir -p "$1"
  cat > "$1/settings.json" <<EOF
{ "bind-address-ipv4": "$2", "bind-address-ipv6": "::1", "peer-port": $3,
  "rpc-bind-address": "127.0.0.1", "rpc-port": $4, "rpc-whitelist": "127.0.0.1",
  "rpc-authentication-required": false, "download-dir": "$5", "encryption": $TR_ENCRYPTION,
  "dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
  "port-forwarding-enabled": false, "ratio-limit-enabled": false, "speed-limit-up-enabled": false,
  "speed-limit-down-enabled": false, "peer-limit-per-torrent": 50 }
EOF
}
tr_done() { # ns rpc-port: whether the torrent is complete
  $1 transmission-remote "127.0.0.1:$2" -t "$IH" -i 2>/dev/null | grep -q 'Percent Done: 100%'
}

SEED_PID=
start_seeder() {
  case $1 in
    vmt)
      $S "$VMT" seed --image "$IMG" --torrent "$TORRENT" --listen "$VMT_SEED" >"$W/seed-vmt.log" 2>&1 &
      SEED_PID=$! ;;
    transmission)
      rm -rf "$W/tr-seed"; tr_settings "$W/tr-seed" $SIP $TR_SEED_PORT $TR_SEED_RPC "$W/seed"
      $S transmission-daemon -f -g "$W/tr-seed" -e "$W/tr-seed/log" >"$W/tr-seed/stderr" 2>&1 &
      SEED_PID=$!
      until $S transmission-remote 127.0.0.1:$TR_SEED_RPC -si >/dev/null 2>&1; do sleep 0.1; done
      $S transmission-remote 127.0.0.1:$TR_SEED_RPC -a "$TORRENT" >/dev/null
      local end=$((SECONDS + 600))
      until tr_done "$S" $TR_SEED_RPC; do
        [ $SECONDS -lt $end ] || { echo "transmission seeder never verified" >&2; return 1; }; sleep 0.2
      done ;;
    rqbit)
      $S "$RQBIT" seed --torrent "$TORRENT" --dir "$W/seed" --listen "$RQ_SEED" >"$W/seed-rqbit.log" 2>&1 &
      SEED_PID=$! ;;
  esac
  PIDS+=($SEED_PID)
  seeded
}

# Downloads with client $2 from seeder $1; prints the seconds taken, or FAIL.
download() {
  local seeder=$1 client=$2 dir=$W/dl t0 t1 pid peer
  rm -rf "$dir"; mkdir -p "$dir"
  case $seeder in vmt) peer=$VMT_SEED ;; transmission) peer=$SIP:$TR_SEED_PORT ;; rqbit) peer=$RQ_SEED ;; esac
  t0=$(date +%s.%N)
  case $client in
    vmt)
      timeout "$TIMEOUT" $C "$VMT" fetch --torrent "$TORRENT" --peer "$peer" --out "$dir/image.img" \
        >"$W/last-client.log" 2>&1 || { echo FAIL; return; } ;;
    aria2)
      timeout "$TIMEOUT" $C aria2c --enable-dht=false --enable-dht6=false --bt-enable-lpd=false \
        --enable-peer-exchange=false --summary-interval=0 --seed-time=0 --listen-port=$A2_PORT \
        --file-allocation=none --console-log-level=warn --dir="$dir" "$TORRENT" \
        >"$W/last-client.log" 2>&1 || { echo FAIL; return; } ;;
    transmission)
      tr_settings "$dir/tr" $CIP $TR_CLIENT_PORT $TR_CLIENT_RPC "$dir"
      $C transmission-daemon -f -g "$dir/tr" -e "$dir/tr/log" >"$W/last-client.log" 2>&1 &
      pid=$!; PIDS+=($pid)
      until $C transmission-remote 127.0.0.1:$TR_CLIENT_RPC -si >/dev/null 2>&1; do sleep 0.1; done
      t0=$(date +%s.%N)
      $C transmission-remote 127.0.0.1:$TR_CLIENT_RPC -a "$TORRENT" >/dev/null
      local end=$((SECONDS + TIMEOUT)) ok=1
      until tr_done "$C" $TR_CLIENT_RPC; do
        [ $SECONDS -lt $end ] || { ok=0; break; }; sleep 0.2
      done
      t1=$(date +%s.%N)
      stop $pid
      [ $ok = 1 ] || { echo FAIL; return; } ;;
    rqbit)
      timeout "$TIMEOUT" $C "$RQBIT" fetch --torrent "$TORRENT" --dir "$dir" --listen "$RQ_CLIENT" \
        --peer "$peer" >"$W/last-client.log" 2>&1 || { echo FAIL; return; } ;;
  esac
  [ -n "${t1:-}" ] || t1=$(date +%s.%N)
  cmp -s "$IMG" "$dir/image.img" || { echo "FAIL(bytes differ)"; return; }
  echo "$t1 - $t0" | bc -l | xargs printf '%.1f\n'
}

mkdir -p "$out"
csv=$out/results.csv
echo "rep,seeder,client,seconds,mb_per_s,load1" > "$csv"
bytes=$(stat -c %s "$IMG")
for rep in $(seq 1 "$REPS"); do
  for seeder in $SEEDERS; do
    for client in $CLIENTS; do
      # A fresh tracker and seeder per download: Transmission refuses a peer address it saw
      # complete ("both seeds"), and every client runs from the same address.
      start_tracker
      start_seeder "$seeder"
      secs=$(download "$seeder" "$client")
      load=$(cut -d' ' -f1 /proc/loadavg)
      if [[ $secs == FAIL* ]]; then
        mbs=; cp "$W/last-client.log" "$out/fail-$rep-$seeder-$client.log" 2>/dev/null || true
      else
        mbs=$(echo "$bytes / $secs / 1000000" | bc -l | xargs printf '%.1f')
      fi
      echo "rep $rep: $seeder -> $client: $secs s ($mbs MB/s, load $load)" >&2
      echo "$rep,$seeder,$client,$secs,$mbs,$load" >> "$csv"
      stop "$SEED_PID" "$TRK_PID"
    done
  done
done

{
  echo "command: $cmdline"
  echo "commit: $commit"
  echo "size: $bytes bytes; reps: $REPS (interleaved); link: veth, uncapped; $(nproc) cores"
  echo "date: $(date -u +%FT%TZ); load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "median seconds (MB/s) per seeder x client; runs; vmt / best stock client (throughput)"
  for seeder in $SEEDERS; do
    line="$seeder:"; best=; vmt=
    for client in $CLIENTS; do
      med=$(awk -F, -v s="$seeder" -v c="$client" '$2==s && $3==c && $4 !~ /FAIL/ {print $4}' "$csv" \
        | sort -n | awk '{a[NR]=$1} END {if (NR) print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
      runs=$(awk -F, -v s="$seeder" -v c="$client" '$2==s && $3==c {printf "%s ", $4}' "$csv")
      if [ -n "$med" ]; then
        line+=" $client $med s ($(echo "$bytes / $med / 1000000" | bc -l | xargs printf '%.1f') MB/s) [$runs];"
        if [ "$client" = vmt ]; then vmt=$med
        elif [ -z "$best" ] || (( $(echo "$med < $best" | bc -l) )); then best=$med; fi
      else
        line+=" $client FAIL [$runs];"
      fi
    done
    if [ -n "$vmt" ] && [ -n "$best" ]; then
      line+=" vmt/best = $(echo "$best / $vmt" | bc -l | xargs printf '%.2f')"
    fi
    echo "$line"
  done
} > "$out/summary.txt"
cat "$out/summary.txt"
