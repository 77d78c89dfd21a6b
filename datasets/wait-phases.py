#!/usr/bin/env python3
"""Where a crowd's readers wait, block by block, from a headless crowd traced with
VMT_LOG=warn,vmt_swarm::waits=trace (KEEP=1 datasets/scale.sh ...; its clients.log).

For each block a reader waited for at a client (`me`, its listen port): from the demand that
named it to the first request for it (finding a source), from then to the last request before
it arrived (asked again elsewhere: a decline, a choke, a slow peer), and from that request to
the arrival (the source's queue, the transfer, our downlink's queue). Times are as logged
(dilated by the run's K).

With --long SECONDS (as logged), the same split for the blocks that waited at least that
long: in a crowd the time goes mostly to a tail of long waits, so say what they were.

usage: wait-phases.py CLIENTS_LOG [SEEDER_PORT] [--long SECONDS]
"""
import collections
import re
import sys
from datetime import datetime

LINE = re.compile(r"(\S+)Z TRACE vmt_swarm::waits: (demand|request|arrival) me=(\d+) (.*)")
# The four hops of a request answered by another client, where both ends logged them.
HOP = re.compile(r"(\S+)Z TRACE vmt_swarm::waits: (request|request sent|urgent in|upload|arrival)"
                 r" me=(\d+) block=(\d+) (?:peer=\S+ )?(?:to|from)=(\d+)")
FIELD = re.compile(r"(\w+)=(\S+)")


def ts(s):
    return datetime.fromisoformat(s).timestamp()


def main():
    args = sys.argv[1:]
    long_s = None
    if "--long" in args:
        i = args.index("--long")
        long_s = float(args[i + 1])
        del args[i:i + 2]
    log = args[0]
    seeder = args[1] if len(args) > 1 else "45000"
    events = collections.defaultdict(list)  # (me, block) -> [(t, kind, peer, urgent)]
    for line in open(log):
        m = LINE.match(line)
        if not m:
            continue
        t, kind, me, rest = ts(m.group(1)), m.group(2), m.group(3), m.group(4)
        f = dict(FIELD.findall(rest))
        if kind == "demand":
            for b in range(int(f["start"]), int(f["end"])):
                events[(me, b)].append((t, 0, None, None))
        else:
            events[(me, int(f["block"]))].append(
                (t, 1 if kind == "request" else 2, f["peer"], f.get("urgent") == "true"))
    rows = []  # (total, find, redirect, serve, requests, from_seeder, first_to_seeder)
    unanswered = 0
    for ev in events.values():
        ev.sort(key=lambda e: (e[0], e[1]))
        demand = None
        reqs = []
        for t, kind, peer, urgent in ev:
            if kind == 0:
                if demand is None:
                    demand, reqs = t, []
            elif kind == 1:
                if demand is not None:
                    reqs.append((t, peer, urgent))
            else:
                if demand is None or not reqs:
                    continue
                to_peer = [r for r in reqs if r[1] == peer] or reqs
                last = to_peer[-1][0]
                first = reqs[0][0]
                rows.append((t - demand, first - demand, last - first, t - last, len(reqs),
                             peer.endswith(":" + seeder), reqs[0][1].endswith(":" + seeder),
                             to_peer[-1][2]))
                demand, reqs = None, []
        if demand is not None and reqs:
            unanswered += 1
    if not rows:
        sys.exit("no demanded block with a request and an arrival: was the log traced?")
    print(f"{len(rows)} waited-for blocks answered ({unanswered} asked and never answered over the wire)")
    split(rows, seeder)
    if long_s is not None:
        longs = [r for r in rows if r[0] >= long_s]
        tot = sum(r[0] for r in rows)
        print(f"\nwaits of {long_s} s or more: {len(longs)} blocks, "
              f"{100 * sum(r[0] for r in longs) / tot:.1f}% of the time waited")
        if longs:
            split(longs, seeder)
    hops(log, seeder)


def split(rows, seeder):
    """Where `rows`' time went: finding a source, asking again, being served; by source."""
    n = len(rows)

    def q(xs, p):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(p * len(xs)))]

    tot = sum(r[0] for r in rows)
    print(f"time waited, summed: {tot:.1f} s (as logged)")
    for name, k in (("finding a source", 1), ("asked again elsewhere", 2), ("served", 3)):
        xs = [r[k] for r in rows]
        print(f"  {name:22} {100 * sum(xs) / tot:5.1f}%   p50 {q(xs, .5) * 1000:7.1f} ms"
              f"   p90 {q(xs, .9) * 1000:7.1f} ms   p99 {q(xs, .99) * 1000:7.1f} ms")
    xs = [r[0] for r in rows]
    print(f"  {'total':22} {100.0:5.1f}%   p50 {q(xs, .5) * 1000:7.1f} ms"
          f"   p90 {q(xs, .9) * 1000:7.1f} ms   p99 {q(xs, .99) * 1000:7.1f} ms")
    for label, sel in (("arrived from the seeder", lambda r: r[5]),
                       ("arrived from a peer", lambda r: not r[5]),
                       ("last asked urgently (the peer chokes us)", lambda r: r[7]),
                       ("last asked as a plain request (unchoked)", lambda r: not r[7])):
        rs = [r for r in rows if sel(r)]
        if rs:
            print(f"{label}: {len(rs)} blocks, {100 * sum(r[0] for r in rs) / tot:.1f}% of the"
                  f" time; served p50 {q([r[3] for r in rs], .5) * 1000:.1f} ms,"
                  f" p90 {q([r[3] for r in rs], .9) * 1000:.1f} ms")
    multi = [r for r in rows if r[4] > 1]
    print(f"asked more than once: {len(multi)} blocks ({100 * len(multi) / n:.1f}%),"
          f" {100 * sum(r[0] for r in multi) / tot:.1f}% of the time;"
          f" first asked of the seeder: {sum(1 for r in rows if r[6])}")
    hist = collections.Counter(min(r[4], 5) for r in rows)
    print("requests per block:", dict(sorted(hist.items())))


def hops(log, seeder):
    """Splits "served" for blocks another client answered: the requester's outbox (queued to
    written), the way to the holder (written to read there: the TCP stream behind our uploads
    to it, and its download rate limit), the holder (read to sent: its outbox and upload rate
    limit), and the way back (sent to read here: the stream behind its other uploads to us,
    and our download rate limit)."""
    times = collections.defaultdict(list)  # (kind, requester, holder, block) -> [t]
    for line in open(log):
        m = HOP.match(line)
        if not m:
            continue
        t, kind, me, block, other = ts(m.group(1)), m.group(2), m.group(3), m.group(4), m.group(5)
        if kind in ("request", "request sent", "arrival"):
            times[(kind, me, other, block)].append(t)
        else:  # logged by the holder: `me` is the holder, `other` the requester
            times[(kind, other, me, block)].append(t)
    if not any(k[0] == "urgent in" for k in times):
        return
    phases = []
    for (kind, req, holder, block), arrivals in times.items():
        if kind != "arrival" or holder == seeder:
            continue
        for t_arr in arrivals:
            def last(k):
                xs = [t for t in times.get((k, req, holder, block), ()) if t <= t_arr]
                return max(xs) if xs else None
            t_q, t_s, t_in, t_up = (last("request"), last("request sent"), last("urgent in"),
                                    last("upload"))
            if None in (t_q, t_s, t_in, t_up) or not t_q <= t_s <= t_in <= t_up:
                continue
            phases.append((t_s - t_q, t_in - t_s, t_up - t_in, t_arr - t_up))
    if not phases:
        return
    contention(times)
    tot = sum(sum(p) for p in phases)
    print(f"{len(phases)} urgent blocks from another client, all four hops logged:")
    for k, name in enumerate(("our outbox", "to the holder", "at the holder", "back to us")):
        xs = sorted(p[k] for p in phases)
        q = lambda f: xs[min(len(xs) - 1, int(f * len(xs)))] * 1000
        print(f"  {name:14} {100 * sum(xs) / tot:5.1f}%   p50 {q(.5):7.1f} ms   p90 {q(.9):7.1f} ms"
              f"   p99 {q(.99):7.1f} ms")


def contention(times):
    """How many urgent requests a holder had taken in and not yet sent when another came: the
    queue a reader's block joins there."""
    spans = collections.defaultdict(list)  # holder -> [(in, sent)]
    for (kind, req, holder, block), ins in times.items():
        if kind != "urgent in":
            continue
        ups = sorted(times.get(("upload", req, holder, block), ()))
        for t_in in ins:
            sent = next((u for u in ups if u >= t_in), None)
            if sent is not None:
                spans[holder].append((t_in, sent))
    depth = []
    for xs in spans.values():
        # A sweep: sends before arrivals at the same instant; the count before an arrival is
        # what was taken in and still unsent when it came.
        events = sorted([(a, 1) for a, _ in xs] + [(b, 0) for _, b in xs])
        open_now = 0
        for _, is_in in events:
            if is_in:
                depth.append(open_now)
                open_now += 1
            else:
                open_now -= 1
    if depth:
        depth.sort()
        q = lambda f: depth[min(len(depth) - 1, int(f * len(depth)))]
        print(f"urgent requests ahead at the holder when one came: p50 {q(.5)}, p90 {q(.9)},"
              f" p99 {q(.99)}, max {depth[-1]} (over {len(spans)} holders)")


if __name__ == "__main__":
    main()
