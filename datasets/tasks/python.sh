# Run a Python data script (csv, statistics, json, datetime, collections).
python3 /home/user/bin/stats.py "$SEED" $((2000 + SEED * 700 % 6000)) >/tmp/stats-$SEED.json
python3 -c "import json,sys; d=json.load(open('/tmp/stats-$SEED.json')); print(sorted(d))" >/dev/null
