#!/usr/bin/env python3
"""Summarize a generated sales table: the 'python data script' task."""
import csv, collections, datetime, io, json, random, statistics, sys

seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
rng = random.Random(seed)
regions = ["north", "south", "east", "west", "central"]
buf = io.StringIO()
w = csv.writer(buf)
w.writerow(["date", "region", "units", "price"])
start = datetime.date(2024, 1, 1)
for _ in range(rows):
    day = start + datetime.timedelta(days=rng.randrange(365))
    w.writerow([day.isoformat(), rng.choice(regions), rng.randrange(1, 50), round(rng.uniform(1, 99), 2)])
buf.seek(0)
by_region = collections.defaultdict(list)
for row in csv.DictReader(buf):
    by_region[row["region"]].append(int(row["units"]) * float(row["price"]))
report = {r: {"n": len(v), "mean": statistics.mean(v), "stdev": statistics.pstdev(v)} for r, v in by_region.items()}
json.dump(report, sys.stdout, indent=1, sort_keys=True)
print()
