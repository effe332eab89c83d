#!/usr/bin/env bash
# Instructions per frame on the hot path, counted by valgrind's callgrind: a
# figure that does not move with the machine's load (wall-clock figures on 2
# shared cores move by 10-30% between runs; these move by well under 1%).
#
#   bench/callgrind.sh                  # every case, 8 conns x 20,000 frames of 200 B
#   CASES="lines scan" bench/callgrind.sh    # only some cases
#   FRAMES=5000 bench/callgrind.sh      # shorter (the per-frame figures barely change)
#
# Each case runs `framehub bench --inproc` (hub and load generator in one
# process, default config) under callgrind, then reads inclusive counts per
# function with callgrind_annotate and divides them by the frames delivered:
#   task        the connection task (connection::serve): everything a
#               connection does per frame, read syscalls and delivery included
#   read        Core::handle_read: decode of a read, per-frame checks, the
#               envelope (JSON scan), batch building
#   envelope    json::scan_envelope alone (node protocol only)
#   deliver     route + queue: the delivery code of the task (dedup, the
#               queue's lock, push, waking the consumer)
#   whole       every instruction of the process (generator and consumer too)
# Case `scan` is the envelope scan alone (crates/framehub/benches/json_count.rs: the same
# 200-byte frames, no sockets, no runtime): seconds instead of a minute, for iterating on
# crates/framehub/src/json.rs; its `envelope` column is the one to compare with `lines`.
# The callgrind outputs stay in $OUT/<case>.callgrind for callgrind_annotate.
#
# Cases `serve` and `serve-frame` count the daemon's sink path instead: `framehub serve`
# under callgrind with a file sink (records, or `format = "frame"`), fed by `framehub bench
# --to` (not under callgrind) with 8 conns x 5,000 frames, then per record written:
#   encode      the records' encoding (`sink::encode`, in the fan-in's tasks since issue 16;
#               before it, `sink::Encoder::encode` on the sink thread)
#   sink thread `sink::run` (inlined into the thread's entry): what the one sink thread does
#               per record (the kernel's work in its writes is not counted by callgrind)
#   whole       every instruction of the serve process
#   SERVE_FH=path/to/older/framehub CASES=serve bench/callgrind.sh    # the same for another build
#
# Needs: valgrind (installed from the OS packages when missing), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-8}
FRAMES=${FRAMES:-20000}           # per connection
SIZE=${SIZE:-200}
TOKEN=${TOKEN:-secret}
OUT=${OUT:-target/callgrind}
CASES=${CASES:-"lines json length cobs scan"}
mkdir -p "$OUT"

if ! command -v valgrind >/dev/null; then
  echo "valgrind missing: installing it from the OS packages" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y valgrind >/dev/null; else sudo apt-get install -y valgrind >/dev/null; fi
fi
[ "${BUILD:-1}" = 1 ] && cargo build --release --quiet -p framehub-cli
FH=${FH:-target/release/framehub}

for case in $CASES; do
  if [ "$case" = scan ]; then
    scan=$(cargo build --release --quiet -p framehub --bench json_count --message-format=json |
      python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "json_count" and m.get("executable"):
        print(m["executable"])')
    echo "== scan" >&2
    rounds=$((CONNS * FRAMES / 5))
    valgrind --tool=callgrind --callgrind-out-file="$OUT/scan.callgrind" "$scan" "$rounds" \
      >"$OUT/scan.out" 2>"$OUT/scan.log"
    python3 -c 'import json, sys; print(json.dumps({"frames_sent": json.load(open(sys.argv[1]))["frames"], "drops": 0}))' \
      "$OUT/scan.out" >"$OUT/scan.json"
    callgrind_annotate --inclusive=yes --threshold=100 "$OUT/scan.callgrind" >"$OUT/scan.annotate" 2>/dev/null
    continue
  fi
  if [ "$case" = serve ] || [ "$case" = serve-frame ]; then
    SFH=${SERVE_FH:-$FH}
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    rm -f "$OUT/$case.ndjson"
    cfg=()
    if [ "$case" = serve-frame ]; then
      printf '[[sink]]\ntype = "file"\npath = "%s"\nformat = "frame"\n' "$OUT/$case.ndjson" >"$OUT/$case.toml"
      cfg=(--config "$OUT/$case.toml")
    else
      cfg=(--out "$OUT/$case.ndjson")
    fi
    echo "== $case ($SFH)" >&2
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$case.callgrind" \
      "$SFH" serve "${cfg[@]}" --listen 127.0.0.1:"$port" --token "$TOKEN" --no-admin --quiet \
      2>"$OUT/$case.log" &
    vg=$!
    for _ in $(seq 600); do
      python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$port" 2>/dev/null && break
      sleep 0.1
    done
    n=$((CONNS * ${SERVE_FRAMES:-5000}))
    "$FH" bench --to 127.0.0.1:"$port" --token "$TOKEN" --conns "$CONNS" --frames "${SERVE_FRAMES:-5000}" --size "$SIZE" >/dev/null 2>>"$OUT/$case.log"
    for _ in $(seq 1200); do
      [ "$(wc -l <"$OUT/$case.ndjson" 2>/dev/null || echo 0)" -ge "$n" ] && break
      sleep 0.1
    done
    kill -TERM "$vg"; wait "$vg" || true
    python3 -c 'import json, sys; print(json.dumps({"frames_sent": int(sys.argv[1]), "drops": int(sys.argv[1]) - int(sys.argv[2])}))' \
      "$n" "$(wc -l <"$OUT/$case.ndjson")" >"$OUT/$case.json"
    callgrind_annotate --inclusive=yes --threshold=100 "$OUT/$case.callgrind" >"$OUT/$case.annotate" 2>/dev/null
    continue
  fi
  case $case in
    lines) args=(--token "$TOKEN") ;;           # the node protocol on NDJSON lines
    json) args=(--framing json --token "$TOKEN") ;; # the node protocol, one JSON value after another
    length|cobs) args=(--framing "$case") ;;    # raw binary framings (no envelope)
    *) echo "unknown case $case" >&2; exit 2 ;;
  esac
  echo "== $case" >&2
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$case.callgrind" \
    "$FH" bench --inproc "${args[@]}" --conns "$CONNS" --frames "$FRAMES" --size "$SIZE" --json \
    >"$OUT/$case.json" 2>"$OUT/$case.log"
  callgrind_annotate --inclusive=yes --threshold=100 "$OUT/$case.callgrind" >"$OUT/$case.annotate" 2>/dev/null
done

python3 - "$OUT" $CASES <<'PY'
import json, os, re, sys
out, cases = sys.argv[1], sys.argv[2:]
hub = [c for c in cases if not c.startswith("serve")]
serve = [c for c in cases if c.startswith("serve")]
def load(case):
    run = json.load(open(os.path.join(out, f"{case}.json")))
    text = open(os.path.join(out, f"{case}.annotate")).read()
    # Lines: "COUNT (PCT)  FILE:FUNCTION [OBJECT]". A function appears once with its object
    # (the code compiled in it) and once per source file inlined into it; the entry with the
    # absolute source path sums them, so the largest count is the function's inclusive cost.
    rows = [(int(n.replace(",", "")), f) for n, f in re.findall(r"^\s*([\d,]+) \([^)]*\)\s+(.*)$", text, re.M)]
    def incl(pat):
        return max((n for n, f in rows if re.search(pat, f)), default=0)
    return run["frames_sent"] - run["drops"], incl
if serve:
    print(f"{'case':<12} {'records':>9} {'encode':>7} {'sink thread':>12} {'whole':>7}   (instructions per record written)")
    for case in serve:
        frames, incl = load(case)
        per = lambda n: f"{n / frames:,.0f}" if n and frames else "-"
        enc = incl(r":framehub::sink::(Encoder::)?encode( \[|$)")
        # `sink::run` is inlined into the thread's entry: the part of it that comes from sink.rs.
        thread = max(incl(r":framehub::sink::run( \[|$)"),
                     incl(r"sink\.rs:std::sys::backtrace::__rust_begin_short_backtrace$"))
        print(f"{case:<12} {frames:>9,} {per(enc):>7} {per(thread):>12} {per(incl(r'PROGRAM TOTALS')):>7}")
if hub:
    print(f"{'case':<8} {'frames':>9} {'task':>7} {'read':>7} {'envelope':>9} {'deliver':>8} {'whole':>7}   (instructions per frame)")
for case in hub:
    frames, incl = load(case)
    total = incl(r"PROGRAM TOTALS")
    task = incl(r":framehub::connection::serve::\{\{closure\}\}( \[|$)")
    read = incl(r":framehub::connection::proto::Core::handle_read( \[|$)")
    env = incl(r":framehub::json::scan_envelope( \[|$)")
    # Route + queue: the delivery code inlined into the task (queue push, dedup, wake-ups).
    deliver = incl(r"connection/deliver\.rs:framehub::connection::serve::\{\{closure\}\}")
    per = lambda n: f"{n / frames:,.0f}" if n else "-"
    print(f"{case:<8} {frames:>9,} {per(task):>7} {per(read):>7} {per(env):>9} {per(deliver):>8} {per(total):>7}")
PY
