#!/usr/bin/env bash
# TLS against plaintext in one run, with the release build:
#  1. frames/s delivered by an in-process hub (`framehub bench --inproc`),
#     ROUNDS rounds alternating plaintext and TLS (order flipped each
#     round), median of each;
#  2. handshakes/s and memory per idle connection: a `framehub serve` per
#     case (a fresh process each, so neither inherits the other's heap),
#     IDLE connections opened one after the other with `--idle-conns`
#     (with TLS each makes its own full handshake), RSS from /proc.
# Certificates: the OpenSSL commands of docs/tls.md, in $OUT/pki.
#
#   bench/tls.sh                                   # defaults below
#   ROUNDS=5 CONNS=64 FRAMES=100000 IDLE=5000 bench/tls.sh
# Needs: the Rust toolchain, openssl, jq, python3. Run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
FRAMES=${FRAMES:-100000}
SIZE=${SIZE:-200}
IDLE=${IDLE:-5000}
TOKEN=${TOKEN:-secret}
OUT=${OUT:-target/tls-bench}
mkdir -p "$OUT/pki"

cargo build --release --quiet -p framehub-cli
FH=$PWD/target/release/framehub

# The docs' commands, run as written.
awk '/^```sh$/{f=1;next} /^```$/{if(f)exit} f' docs/tls.md > "$OUT/pki/make.sh"
(cd "$OUT/pki" && sh -e make.sh 2>/dev/null)
PKI=$PWD/$OUT/pki

median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

echo "# $(nproc) cores, $(uname -sr), load $(cut -d' ' -f1 /proc/loadavg) at start"
echo "# frames/s: $CONNS connections x $FRAMES frames of $SIZE B, lines + node protocol (token), in-process hub"
: > "$OUT/plain.fps"; : > "$OUT/tls.fps"
run() {
    local kind=$1; shift
    local fps
    fps=$($FH bench --inproc --conns "$CONNS" --frames "$FRAMES" --size "$SIZE" --token "$TOKEN" --json "$@" 2>>"$OUT/bench.log" | jq -r '.delivered_fps')
    echo "$fps" >> "$OUT/$kind.fps"
    printf 'round %s %-6s %.0f frames/s\n' "$r" "$kind" "$fps"
}
TLS_ARGS=(--tls-ca "$PKI/ca.pem" --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key")
for r in $(seq "$ROUNDS"); do
    if (( r % 2 )); then run plain; run tls "${TLS_ARGS[@]}"; else run tls "${TLS_ARGS[@]}"; run plain; fi
done
P=$(median < "$OUT/plain.fps"); T=$(median < "$OUT/tls.fps")
printf 'median  plain %.0f  tls %.0f  tls/plain %.1f%%\n' "$P" "$T" "$(echo "$T * 100 / $P" | bc -l)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
idle() {
    local kind=$1 port tls_table="" pid
    port=$(free_port)
    if [ "$kind" = tls ]; then
        printf -v tls_table '[listener.tls]\ncert = "%s/server.pem"\nkey = "%s/server.key"\n' "$PKI" "$PKI"
    fi
    cat > "$OUT/$kind.toml" <<EOF
[[listener]]
bind = "127.0.0.1:$port"
max_connections = $((IDLE + 100))
[listener.auth]
token = "$TOKEN"
$tls_table
EOF
    $FH serve --config "$OUT/$kind.toml" --admin 127.0.0.1:0 --out /dev/null --quiet 2>"$OUT/$kind.log" & pid=$!
    wait_port "$port"
    local extra=()
    [ "$kind" = tls ] && extra=(--tls-ca "$PKI/ca.pem")
    $FH bench --to 127.0.0.1:"$port" --idle-conns "$IDLE" --server-pid "$pid" --token "$TOKEN" --json "${extra[@]}" \
        | jq -r --arg k "$kind" '"\($k) idle: \(.conns) connections, \(.accept_rate|floor)/s opened, \((.bytes_per_conn/1024*100|floor)/100) KiB each (RSS \(.rss_before_kib) -> \(.rss_after_kib) KiB)"'
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
ulimit -n $((IDLE * 2 + 1000)) 2>/dev/null || true
echo "# idle: $IDLE connections opened one after the other, each authenticated; one server process per case"
idle plain
idle tls
