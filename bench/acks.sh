#!/usr/bin/env bash
# Acknowledged delivery (issue 14), the figures of BENCHMARKS.md's
# "Acknowledged delivery": `framehub serve` with a file sink (fsync =
# "always") loaded through the library's Client, with [listener.ack]
# mode = "durable" and without acks on the same load; the send-to-ack
# latency at 10,000 frames/s; the client's memory per unacknowledged MiB.
# Usage: bench/acks.sh [path/to/framehub]   (default target/release/framehub)
set -euo pipefail
FH=${1:-target/release/framehub}
CONNS=${CONNS:-16}
FRAMES=${FRAMES:-50000}
SIZE=${SIZE:-200}
ROUNDS=${ROUNDS:-3}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# serve MODE: starts serve with acks MODE ("durable" or "off"), fsync always.
serve() {
  local mode=$1 port
  port=$(free_port)
  rm -f "$dir"/frames.ndjson "$dir"/.frames.ndjson.acks
  cat > "$dir/serve.toml" <<TOML
[[listener]]
bind = "127.0.0.1:$port"
[listener.auth]
token = "secret"
[listener.queue]
overflow = "block"
[listener.ack]
mode = "$mode"
[[sink]]
type = "file"
path = "$dir/frames.ndjson"
fsync = "always"
TOML
  "$FH" serve --config "$dir/serve.toml" --quiet --no-admin 2>"$dir/serve.log" &
  SERVE=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.05
  done
  PORT=$port
}

stop() { kill -TERM "$SERVE"; wait "$SERVE" || true; }

for round in $(seq "$ROUNDS"); do
  for mode in durable off; do
    serve "$mode"
    ack=(); [ "$mode" = durable ] && ack=(--ack)
    echo "round $round, acks $mode:"
    echo "  $FH bench --to 127.0.0.1:PORT --client ${ack[*]} --conns $CONNS --frames $FRAMES --size $SIZE --token secret"
    "$FH" bench --to "127.0.0.1:$PORT" --client "${ack[@]}" --conns "$CONNS" --frames "$FRAMES" \
      --size "$SIZE" --token secret | sed 's/^/  /'
    stop
    echo "  records in the file: $(wc -l < "$dir/frames.ndjson")"
  done
done

serve durable
echo "ack latency at 10,000 frames/s (10 clients x 1,000/s, 20 s):"
echo "  $FH bench --to 127.0.0.1:PORT --client --ack --conns 10 --rate 1000 --frames 20000 --size $SIZE --token secret"
"$FH" bench --to "127.0.0.1:$PORT" --client --ack --conns 10 --rate 1000 --frames 20000 \
  --size "$SIZE" --token secret | sed 's/^/  /'
stop

echo "client outbox memory:"
for unacked in 16MiB 64MiB; do
  echo "  $FH bench --outbox-memory --size $SIZE --max-unacked $unacked"
  "$FH" bench --outbox-memory --size "$SIZE" --max-unacked "$unacked" | sed 's/^/  /'
done
