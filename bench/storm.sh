#!/usr/bin/env bash
# Reconnect storm (issue 15): N devices connected over mutual TLS, the hub killed with SIGKILL
# and started again on the same port, every device reconnecting at once (moat-device storm:
# exponential backoff with full jitter). Prints the storm's JSON report and the hub's peak
# descriptors and resident memory during it. The short version is a test
# (crates/moat/tests/hostile.rs); this one uses release binaries.
#
#   bench/storm.sh                 # 10,000 devices
#   N=20000 SKIP_BUILD=1 bench/storm.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-10000}
PORT=${PORT:-18894}
ulimit -n "$(ulimit -Hn)"
if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p moat -p moat-device)
fi
MOAT=$ROOT/target/release/moat
LOAD=$ROOT/target/release/moat-device
WORK=$(mktemp -d /tmp/moat-storm.XXXXXX)
HUB=$WORK/hub
PID=
cleanup() { [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
start() {
  rm -f "$HUB/hub.json"
  "$MOAT" --data-dir "$HUB" serve --api-listen 127.0.0.1:0 --crl-listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 --ota-listen 127.0.0.1:0 --no-mqtt-plain \
    --mqtt-listen "127.0.0.1:$PORT" >>"$WORK/hub.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do
    [ -s "$HUB/hub.json" ] && return 0
    sleep 0.05
  done
  echo "hub did not start" >&2; exit 1
}
mkdir -p "$HUB"
start
"$LOAD" enroll --hub-data-dir "$HUB" --count "$N" --out "$WORK/devices" --concurrency 16 >/dev/null
"$LOAD" storm --addr "127.0.0.1:$PORT" --ca "$HUB/ca-bundle.pem" --devices "$WORK/devices" \
  --src 127.0.0.1-16 --deadline 120 --label moat >"$WORK/storm.json" 2>"$WORK/storm.log" &
STORM=$!
until grep -q "storm: $N connected" "$WORK/storm.log"; do
  kill -0 "$STORM" 2>/dev/null || { cat "$WORK/storm.log" >&2; exit 1; }
  sleep 0.2
done
echo "== $N connected; kill -9 and restart (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
start
fds=0 rss=0
while kill -0 "$STORM" 2>/dev/null; do
  f=$(ls "/proc/$PID/fd" 2>/dev/null | wc -l)
  r=$(awk '/^VmRSS/ { print $2 }' "/proc/$PID/status" 2>/dev/null || echo 0)
  [ "$f" -gt "$fds" ] && fds=$f
  [ "${r:-0}" -gt "$rss" ] && rss=$r
  sleep 0.1
done
wait "$STORM"
grep '^storm:' "$WORK/storm.log" >&2
echo "hub peak: $fds descriptors, $((rss / 1024)) MiB resident" >&2
cat "$WORK/storm.json"
