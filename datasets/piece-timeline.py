#!/usr/bin/env python3
"""How pieces entered and crossed a headless crowd: for each piece given, when the injecting
seeder was first asked for it, whom it admitted, how often it declined, when the clients
verified it (10%/50%/90% of them, and why they fetched it), and when the crowd's long waits
(parked-read warnings, 5 s dilated) for it began. Seconds (dilated) from the seeder's first
decision.

Usage: a crowd kept and traced,
  VMT_LOG=warn,vmt_swarm::connection=trace,vmt_swarm::download=trace KEEP=1 ... datasets/scale.sh ...
then  datasets/piece-timeline.py /tmp/vmt-scale.XXXX PIECE...
(tracing costs the crowd CPU: such a run's completion figures are not evidence).
"""
import re,sys,collections,glob
from datetime import datetime
# 16 KiB blocks per piece, as the rebuilt image's torrent has 256 KiB pieces (a warning names
# blocks, the trace pieces). Another piece size needs another value here.
BLOCKS_PER_PIECE=16
d=sys.argv[1]; pieces=[int(x) for x in sys.argv[2:]]
seed_logs=glob.glob(d+"/seed-k*.log")
if len(seed_logs)!=1: sys.exit(f"{d}: expected one seed-k*.log (one dilation), found {seed_logs}")
ts=lambda s: datetime.fromisoformat(s).timestamp()
seed=collections.defaultdict(list); ver=collections.defaultdict(list); t0=None
for l in open(seed_logs[0]):
    m=re.match(r"(\S+)Z TRACE .*?vmt_swarm::connection: injector piece=(\d+) begin=(\d+) conn=(\d+) urgent=(\w+) choking=(\w+) admitted=(\w+) served=(\w+)",l)
    if not m: continue
    t=ts(m.group(1)); t0=t if t0 is None else min(t0,t)
    p=int(m.group(2))
    if p in pieces: seed[p].append((t,int(m.group(4)),m.group(5)=="true",m.group(7)=="true",m.group(8)=="true",int(m.group(3))))
waits=collections.defaultdict(list)
for l in open(d+"/clients.log"):
    m=re.match(r"(\S+)Z TRACE .*?vmt_swarm::download: piece verified piece=(\d+) reason=(\w+)(?: first=(\w+))?",l)
    if m:
        p=int(m.group(2))
        # A second completion of a piece at one client (a duplicate copy) is not a holder more.
        if p in pieces and m.group(4)!="false": ver[p].append((ts(m.group(1)),m.group(3)))
        continue
    m=re.match(r"(\S+)Z\s+WARN client\{id=(\d+)\}.*from block (\d+) to",l)
    if m and int(m.group(3))//BLOCKS_PER_PIECE in pieces:
        waits[int(m.group(3))//BLOCKS_PER_PIECE].append(ts(m.group(1))-5)
for p in pieces:
    s=seed[p]; v=sorted(ver[p])
    adm=[x for x in s if x[3] and x[5]==0]; srv=[x for x in s if x[4] and not x[3] and x[5]==0]; dec=[x for x in s if not x[4]]
    print(f"piece {p}: seeder first ask {min(x[0] for x in s)-t0:.1f}" if s else f"piece {p}: never asked of the seeder")
    print(f"  admits(begin 0) at", [round(x[0]-t0,1) for x in adm][:5], "conns", [x[1] for x in adm][:5], "urgent", [x[2] for x in adm][:5])
    print(f"  second-ask serves", len(srv), [round(x[0]-t0,1) for x in srv][:5], " declines", len(dec), "first", [round(x[0]-t0,1) for x in dec][:3])
    if v:
        reasons=collections.Counter(r for _,r in v)
        q=[round(v[int(i*(len(v)-1))][0]-t0,1) for i in (0,0.1,0.5,0.9,1)]
        print(f"  verified at {len(v)} clients; first/10%/50%/90%/last", q, dict(reasons))
    w=sorted(waits[p])
    if w: print(f"  long waits ({len(w)}) started", round(w[0]-t0,1), "to", round(w[-1]-t0,1))
