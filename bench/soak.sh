#!/usr/bin/env bash
# Soak (issue 18): `framehub serve` under a steady load plus about 100
# connects/disconnects per second for MINUTES (default 30); the daemon's
# resident memory and open descriptors are sampled every 30 s into
# $OUT/samples.csv, and the first, last and largest are printed at the end.
#
#   FH=target/release/framehub MINUTES=30 bench/soak.sh
#
# Steady load: 50 simulated nodes at 40 frames/s each (2,000 frames/s).
# Churn: one simulated node at 100 frames/s that reconnects after every
# frame (about 100 connections opened and closed per second; the figure
# measured is printed from /metrics).
set -euo pipefail
cd "$(dirname "$0")/.."
FH=${FH:-target/release/framehub}
MINUTES=${MINUTES:-30}
OUT=${OUT:-$(mktemp -d /tmp/framehub-soak.XXXXXX)}
mkdir -p "$OUT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
APORT=$(free_port)

"$FH" serve --listen 127.0.0.1:"$PORT" --token secret --out "$OUT/frames.ndjson" \
    --admin 127.0.0.1:"$APORT" 2>"$OUT/serve.log" &
SERVE=$!
trap 'kill $SERVE $STEADY $CHURN 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$APORT/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done

"$FH" send --to 127.0.0.1:"$PORT" --token secret --simulate 50 --rate 40 \
    --duration "${MINUTES}m" >/dev/null 2>"$OUT/steady.log" &
STEADY=$!
"$FH" send --to 127.0.0.1:"$PORT" --token secret --simulate 1 --rate 100 \
    --disconnect-after 1 --duration "${MINUTES}m" >/dev/null 2>"$OUT/churn.log" &
CHURN=$!

metric() { curl -fs "http://127.0.0.1:$APORT/metrics" | awk -v m="$1" 'index($1, m) == 1 && (length($1) == length(m) || substr($1, length(m) + 1, 1) == "{") { s += $2 } END { printf "%d", s }'; }
echo "elapsed_s,rss_kib,fds,connections_opened,frames_written" >"$OUT/samples.csv"
start=$(date +%s)
end=$((start + MINUTES * 60))
while :; do
    now=$(date +%s)
    rss=$(awk '/^VmRSS:/ { print $2 }' /proc/$SERVE/status)
    fds=$(ls /proc/$SERVE/fd | wc -l)
    opened=$(metric framehub_connections_accepted_total)
    written=$(metric framehub_sink_records_written_total)
    echo "$((now - start)),$rss,$fds,$opened,$written" | tee -a "$OUT/samples.csv"
    [ "$now" -ge "$end" ] && break
    sleep 30
done
wait $STEADY $CHURN || true
python3 - "$OUT/samples.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
first, last = rows[0], rows[-1]
# The first minute is warm-up (queues, arenas and the allocator grow to
# their working size); flat means no growth after it.
warm = [r for r in rows if int(r["elapsed_s"]) >= 60] or rows
span = int(last["elapsed_s"]) - int(first["elapsed_s"]) or 1
rate = (int(last["connections_opened"]) - int(first["connections_opened"])) / span
print(f"samples {len(rows)} over {span} s; connections opened {rate:.0f}/s; records written {last['frames_written']}")
for key in ("rss_kib", "fds"):
    vals = [int(r[key]) for r in warm]
    print(f"{key}: at 1 min {vals[0]}, last {vals[-1]}, min {min(vals)}, max {max(vals)}")
EOF
echo "samples: $OUT/samples.csv"
