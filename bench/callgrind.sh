#!/usr/bin/env bash
# Instructions per frame on the hot path, counted by valgrind's callgrind: a
# figure that does not move with the machine's load (wall-clock figures on 2
# shared cores move by 10-30% between runs; these move by well under 1%).
#
#   bench/callgrind.sh                  # every framing, 8 conns x 20,000 frames of 200 B
#   CASES="lines" bench/callgrind.sh    # only some cases
#   FRAMES=5000 bench/callgrind.sh      # shorter (the per-frame figures barely change)
#
# Each case runs `framehub bench --inproc` (hub and load generator in one
# process, default config) under callgrind, then reads inclusive counts per
# function with callgrind_annotate and divides them by the frames delivered:
#   read path   Core::handle_read: decode of a read, per-frame checks, the
#               envelope (JSON scan), batch building (the connection task's
#               per-frame work before delivery)
#   envelope    json::scan_envelope alone (node protocol only)
#   deliver     deliver::*: route + queue (dedup, the queue's lock, push)
#   whole       every instruction of the process (generator and consumer too)
# The callgrind outputs stay in $OUT/<case>.callgrind for callgrind_annotate.
#
# Needs: valgrind (installed from the OS packages when missing), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-8}
FRAMES=${FRAMES:-20000}           # per connection
SIZE=${SIZE:-200}
TOKEN=${TOKEN:-secret}
OUT=${OUT:-target/callgrind}
CASES=${CASES:-"lines json length cobs"}
mkdir -p "$OUT"

if ! command -v valgrind >/dev/null; then
  echo "valgrind missing: installing it from the OS packages" >&2
  if [ "$(id -u)" = 0 ]; then apt-get install -y valgrind >/dev/null; else sudo apt-get install -y valgrind >/dev/null; fi
fi
[ "${BUILD:-1}" = 1 ] && cargo build --release --quiet -p framehub-cli
FH=${FH:-target/release/framehub}

for case in $CASES; do
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
print(f"{'case':<8} {'frames':>9} {'read path':>10} {'envelope':>9} {'deliver':>8} {'whole':>8}   (instructions per frame)")
for case in cases:
    run = json.load(open(os.path.join(out, f"{case}.json")))
    frames = run["frames_sent"] - run["drops"]
    incl = {}
    total = 0
    for line in open(os.path.join(out, f"{case}.annotate")):
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S.*?)(?: \[[^\]]*\])?$", line)
        if not m:
            continue
        n, name = int(m.group(1).replace(",", "")), m.group(2)
        if "PROGRAM TOTALS" in line:
            total = n
        # A symbol can appear once per object file/inlining context: keep the largest.
        incl[name] = max(incl.get(name, 0), n)
    m = re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", open(os.path.join(out, f"{case}.annotate")).read())
    total = int(m.group(1).replace(",", "")) if m else total
    def find(pat):
        return max((n for name, n in incl.items() if re.search(pat, name)), default=0)
    read = find(r"proto::Core::handle_read$")
    env = find(r"json::scan_envelope$")
    deliver = sum(n for name, n in incl.items() if re.search(r"connection::deliver::[^:]+$", name) and "{{closure}}" not in name)
    deliver = find(r"connection::deliver::.*deliver[^:]*$")
    per = lambda n: f"{n / frames:,.0f}" if n else "-"
    print(f"{case:<8} {frames:>9,} {per(read):>10} {per(env):>9} {per(deliver):>8} {per(total):>8}")
PY
