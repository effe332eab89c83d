#!/usr/bin/env bash
# Does a tap subscriber that never reads slow ingest? Runs `framehub serve`
# with a file sink on /dev/null and a tap, then `framehub bench --to` against
# it for SECS seconds, alternating runs with no tap subscriber and with one
# subscriber that connects and never reads. Prints per run the frames/s the
# bench sent and the frames/s the daemon received in the steady middle of
# the run (from /metrics, seconds 2 to SECS-2: the kernel's socket buffers
# make the sender's own figure optimistic), and what the daemon received,
# wrote and dropped in that run.
#
#   bench/tap.sh                       # defaults below
#   ROUNDS=5 CONNS=64 SECS=10 OVERFLOW=block bench/tap.sh
#
# OVERFLOW=block (default) makes the receiver queues push back on the
# sockets, so anything that slows the sink thread slows ingest and shows in
# frames/s; OVERFLOW=drop-oldest shows it as drops instead.
# Needs: the Rust toolchain, python3, curl. Run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
SECS=${SECS:-10}
SIZE=${SIZE:-200}
TOKEN=${TOKEN:-secret}
OVERFLOW=${OVERFLOW:-block}
OUT=${OUT:-target/tap-bench}
mkdir -p "$OUT"

cargo build --release --quiet -p framehub-cli
FH=target/release/framehub

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

PORT=$(free_port); TAP=$(free_port); ADMIN=$(free_port)
cat > "$OUT/tap.toml" <<EOF
[[listener]]
bind = "127.0.0.1:$PORT"
[listener.auth]
token = "$TOKEN"
[listener.queue]
overflow = "$OVERFLOW"

[[sink]]
type = "file"
path = "/dev/null"

[[sink]]
type = "tap"
bind = "127.0.0.1:$TAP"
EOF
$FH serve --config "$OUT/tap.toml" --admin 127.0.0.1:"$ADMIN" --quiet --log-format json 2>"$OUT/serve.log" & SERVE=$!
PIDS+=($SERVE)
wait_port "$PORT"; wait_port "$ADMIN"

metric() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s+=$2} END {printf "%d\n", s}'; }

run() { # $1: label
  local r0 w0 d0 l0
  r0=$(metric framehub_frames_received_total); w0=$(metric 'framehub_sink_records_written_total{sink="file"}')
  d0=$(metric framehub_frames_dropped_total); l0=$(metric framehub_tap_records_dropped_total)
  $FH bench --to 127.0.0.1:"$PORT" --token "$TOKEN" --conns "$CONNS" --duration "${SECS}s" --size "$SIZE" --json 2>/dev/null > "$OUT/run.json" &
  local bench=$!
  sleep 2
  local m1 t1 m2 t2
  m1=$(metric framehub_frames_received_total); t1=$(date +%s.%N)
  sleep $((SECS - 4))
  m2=$(metric framehub_frames_received_total); t2=$(date +%s.%N)
  wait "$bench"
  sleep 1
  local r w d l
  r=$(( $(metric framehub_frames_received_total) - r0 )); w=$(( $(metric 'framehub_sink_records_written_total{sink="file"}') - w0 ))
  d=$(( $(metric framehub_frames_dropped_total) - d0 )); l=$(( $(metric framehub_tap_records_dropped_total) - l0 ))
  local fps rx
  fps=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["sent_fps"]))' "$OUT/run.json")
  rx=$(python3 -c 'import sys; m1,t1,m2,t2=map(float,sys.argv[1:]); print(round((m2-m1)/(t2-t1)))' "$m1" "$t1" "$m2" "$t2")
  printf '%-24s %10s %12s %10s %10s %8s %12s\n' "$1" "$fps" "$rx" "$r" "$w" "$d" "$l"
}

echo "# $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $CONNS conns for ${SECS}s, $SIZE B frames, overflow $OVERFLOW"
printf '%-24s %10s %12s %10s %10s %8s %12s\n' run "sent/s" "received/s" received written dropped tap_dropped
stuck_run() {
  python3 -c "import socket,time; s=socket.create_connection(('127.0.0.1',$TAP)); time.sleep(3600)" & STUCK=$!
  PIDS+=($STUCK)
  sleep 0.5
  run "subscriber never reads"
  kill "$STUCK"; wait "$STUCK" 2>/dev/null || true
  sleep 0.5
}
# The order alternates between rounds, so a drift of the machine does not
# count against one case.
for round in $(seq "$ROUNDS"); do
  if (( round % 2 )); then run "no subscriber"; stuck_run; else stuck_run; run "no subscriber"; fi
done
kill -TERM "$SERVE"; wait "$SERVE" || true
