# Sourced by the benchmark scripts (not run on its own).

# start_hub WORK BIN [serve options…]: starts `BIN/moat serve` on a fresh data dir WORK/data
# with every listener on a loopback ephemeral port (no plain MQTT), its log in WORK/hub.log;
# sets HUB to its pid and returns once it has written hub.json (it is up).
start_hub() {
  local work=$1 bin=$2
  shift 2
  "$bin/moat" --data-dir "$work/data" serve --api-listen 127.0.0.1:0 --crl-listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 --ota-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 \
    --no-mqtt-plain "$@" >"$work/hub.log" 2>&1 &
  HUB=$!
  for _ in $(seq 200); do
    [ -f "$work/data/hub.json" ] && return 0
    kill -0 "$HUB" 2>/dev/null || { cat "$work/hub.log" >&2; return 1; }
    sleep 0.1
  done
  echo "the hub did not start within 20 s; its log: $work/hub.log" >&2
  return 1
}
