#!/usr/bin/env bash
# MQTT hub benchmark (issue 3): Moat against Mosquitto 2.0, same machine, same device
# certificates, same load generator (`moat-device`, its load subcommands), in one run.
#
#   bench/mqtt.sh                 # everything, ~6-8 minutes on 2 cores
#   KEEP=1 bench/mqtt.sh          # keep the work directory (certificates, logs, JSON)
#   SKIP_BUILD=1 bench/mqtt.sh    # use the release binaries already in target/release
#   MOAT_BIN=/tmp/moat-old SKIP_BUILD=1 ONLY=handshake bench/mqtt.sh   # another hub binary
#   CONN=300 ONLY=durability bench/mqtt.sh  # QoS 1 to persistent sessions: Moat sync vs
#                                 # periodic vs Mosquitto (persistence on), ~3 minutes
#   ONLY=handshake bench/mqtt.sh  # just the handshake runs (both brokers + the bare rustls
#                                 # baseline server), ~3 minutes
#
# Tunables (environment): CONN (idle connections for the memory slope, default 15000),
# STAGE1 (first memory stage, 5000), DUR (seconds measured per run, 8), WARM (2),
# CONC (handshakes in flight, 64), PAIRS (self-loop devices, 100), RATE (msgs/s per
# publisher for the latency runs, 100), REVOKED (revoked serials inserted, 1000000).
#
# Output: human lines on stderr, one JSON object per run in $WORK/results.jsonl, and a
# Markdown summary (with Moat/Mosquitto ratios) on stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
CONN=${CONN:-15000}
STAGE1=${STAGE1:-5000}
DUR=${DUR:-8}
WARM=${WARM:-2}
CONC=${CONC:-64}
PAIRS=${PAIRS:-100}
RATE=${RATE:-100}
REVOKED=${REVOKED:-1000000}
NREV=100
MOAT_PORT=${MOAT_PORT:-18884}
MOSQ_PORT=${MOSQ_PORT:-18883}
BASE_PORT=${BASE_PORT:-18885}
SRC=127.0.0.1-32
MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}

ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d /tmp/moat-bench.XXXXXX)
RESULTS=$WORK/results.jsonl
MOAT_PID= MOSQ_PID= BASE_PID=
cleanup() {
  [ -n "$MOAT_PID" ] && kill "$MOAT_PID" 2>/dev/null || true
  [ -n "$MOSQ_PID" ] && kill "$MOSQ_PID" 2>/dev/null || true
  [ -n "$BASE_PID" ] && kill "$BASE_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "work dir kept: $WORK" >&2; fi
}
trap cleanup EXIT
log() { echo "== $*" >&2; }

if [ -z "${SKIP_BUILD:-}" ]; then
  log "building (release)"
  (cd "$ROOT" && cargo build --release -q -p moat -p moat-device)
fi
# MOAT_BIN: another hub binary (e.g. one built from an earlier commit, for a before/after run).
MOAT=${MOAT_BIN:-$ROOT/target/release/moat}
LOAD=$ROOT/target/release/moat-device
HUB=$WORK/hub
DEV=$WORK/devices

start_moat() {
  rm -f "$HUB/hub.json"
  "$MOAT" --data-dir "$HUB" serve --api-listen 127.0.0.1:0 --crl-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --ota-listen 127.0.0.1:0 \
    --mqtt-listen 127.0.0.1:$MOAT_PORT --no-mqtt-plain >>"$WORK/moat.log" 2>&1 &
  MOAT_PID=$!
  # hub.json is written before the MQTT verifier has loaded the revoked set: wait for the
  # MQTT listener itself.
  for _ in $(seq 1 600); do
    [ -s "$HUB/hub.json" ] && (exec 3<>/dev/tcp/127.0.0.1/$MOAT_PORT) 2>/dev/null && return 0
    kill -0 "$MOAT_PID" 2>/dev/null || { tail -20 "$WORK/moat.log" >&2; return 1; }
    sleep 0.1
  done
  echo "moat did not start" >&2; return 1
}
stop_moat() { kill "$MOAT_PID"; wait "$MOAT_PID" 2>/dev/null || true; MOAT_PID=; }

log "starting moat (data dir $HUB)"
mkdir -p "$HUB"
start_moat

NDEV=$((CONN + NREV))
log "enrolling $NDEV devices through the admin API"
"$LOAD" enroll --hub-data-dir "$HUB" --count "$NDEV" --out "$DEV" --concurrency 16 >>"$RESULTS"

# Fan-in and fan-out need identities wider than a device's own subtree (devices/{id}/#):
#   fan-in:  devices dev-000100..199 publish to devices/{id}/load; the application "sink"
#            (subscribe devices/+/load) receives them all;
#   fan-out: the application "src" (publish bcast/load) publishes; devices dev-000200..299,
#            given the policy "bcast" (subscribe bcast/load), receive every message.
# Mosquitto (no ACL file) allows the same topics to the same certificates.
log "application identities and ACL policy for fan-in / fan-out"
"$MOAT" --data-dir "$HUB" app create sink --subscribe 'devices/+/load' --out "$DEV" >/dev/null
"$MOAT" --data-dir "$HUB" app create src --publish 'bcast/load' --out "$DEV" >/dev/null
"$MOAT" --data-dir "$HUB" acl create bcast --subscribe 'bcast/load' >/dev/null
for i in $(seq 200 $((200 + PAIRS - 1))); do
  "$MOAT" --data-dir "$HUB" acl assign bcast --device "$(printf 'dev-%06d' "$i")" >/dev/null
done
# Sorted directory order: dev-000000 … dev-0NNNNN, then sink, then src.
SINK_IDX=$NDEV
SRC_IDX=$((NDEV + 1))

log "Mosquitto: test CA and server certificate (openssl, P-256), device CA = moat's bundle"
M=$WORK/mosquitto
start_mosquitto "$M" "$MOSQ_PORT" "$HUB/ca-bundle.pem"

# The handshake baseline: a bare rustls mutual-TLS server (moat-device baseline-server: same
# provider, protocol versions, ALPN and webpki client verification over the same device CA
# bundle as the hub, a task per connection, a fixed CONNACK, no MQTT or registry), with
# Mosquitto's server certificate. Two worker threads, like the hub's runtime on 2 cores.
"$LOAD" --threads 2 baseline-server --listen 127.0.0.1:$BASE_PORT --cert "$M/server.pem" \
  --key "$M/server.key" --client-ca "$HUB/ca-bundle.pem" >>"$WORK/baseline.log" 2>&1 &
BASE_PID=$!
sleep 0.3
kill -0 "$BASE_PID" || { cat "$WORK/baseline.log" >&2; exit 1; }

# target NAME → generator flags
target() {
  case $1 in
    moat) echo "--label moat --addr 127.0.0.1:$MOAT_PORT --ca $HUB/ca-bundle.pem --watch-pid $MOAT_PID" ;;
    mosquitto) echo "--label mosquitto --addr 127.0.0.1:$MOSQ_PORT --ca $M/ca.pem --watch-pid $MOSQ_PID" ;;
    baseline) echo "--label baseline --addr 127.0.0.1:$BASE_PORT --ca $M/ca.pem --watch-pid $BASE_PID" ;;
  esac
}
common="--devices $DEV --src $SRC"
run() { # label-of-run broker args...
  local name=$1 broker=$2; shift 2
  log "$name [$broker]"
  # shellcheck disable=SC2046
  if "$LOAD" "$@" $(target "$broker") $common >"$WORK/out.json" 2>>"$WORK/load.log"; then
    jq -c --arg run "$name" '. + {run: $run}' "$WORK/out.json" >>"$RESULTS"
  else
    echo "{\"run\":\"$name\",\"label\":\"$broker\",\"failed\":true}" >>"$RESULTS"
    tail -2 "$WORK/load.log" >&2
  fi
  tail -n 3 "$WORK/load.log" | grep -v "^moat-device:" >&2 || true
}

pubsub="pubsub --duration $DUR --warmup $WARM"
selfloop="--publishers $PAIRS --subscribers $PAIRS --pub-topic devices/{id}/load --sub-filter devices/{id}/load"
fanin="--publishers $PAIRS --pub-offset 100 --subscribers 1 --sub-offset $SINK_IDX --pub-topic devices/{id}/load --sub-filter devices/+/load"
fanout="--publishers 1 --pub-offset $SRC_IDX --subscribers $PAIRS --sub-offset 200 --pub-topic bcast/load --sub-filter bcast/load"
if [ "${ONLY:-}" = durability ]; then
  # QoS 1 to persistent sessions (the generator's clients use session expiry 1 h), so every
  # queued message is durable state: Moat with [mqtt] durability = "sync", then "periodic"
  # (each on a restarted hub), then Mosquitto with persistence on (its default autosave).
  # Each line: the generator's report (published/s, delivered/s, delivery latency,
  # publish→PUBACK latency); for Moat also the writer's batches (one transaction = one fsync
  # on SQLite) and changes per second over the run, from /metrics.
  metric() {
    curl -s "$(jq -r .metrics_url "$HUB/hub.json")/metrics" | awk -v m="$1" '$1 == m { print $2 }'
  }
  persist="pubsub --duration $DUR --warmup $WARM --qos 1 --session-expiry 3600"
  for mode in sync periodic; do
    stop_moat
    printf '[mqtt]\ndurability = "%s"\n' "$mode" >"$HUB/moat.toml"
    start_moat
    sleep 2
    for shape in selfloop fanin; do
      if [ $shape = selfloop ]; then flags=$selfloop; else flags=$fanin; fi
      b0=$(metric moat_mqtt_state_batches_written_total); c0=$(metric moat_mqtt_state_changes_written_total)
      t0=$(date +%s.%N)
      # shellcheck disable=SC2086
      run "$shape-persistent-q1-$mode" moat $persist $flags
      t1=$(date +%s.%N)
      b1=$(metric moat_mqtt_state_batches_written_total); c1=$(metric moat_mqtt_state_changes_written_total)
      awk -v b="$((b1 - b0))" -v c="$((c1 - c0))" -v t="$(echo "$t1 - $t0" | bc)" -v n="$shape-$mode" \
        'BEGIN { printf "%s: %.0f batches/s (fsyncs), %.0f changes/s, %.1f changes per batch\n", n, b / t, c / t, (b ? c / b : 0) }' | tee -a "$WORK/durability.txt" >&2
    done
  done
  kill "$MOSQ_PID"; wait "$MOSQ_PID" 2>/dev/null || true
  printf 'persistence true\npersistence_location %s/\n' "$M" >>"$M/mosquitto.conf"
  "$MOSQUITTO" -c "$M/mosquitto.conf" >>"$WORK/mosquitto.log" 2>&1 &
  MOSQ_PID=$!
  sleep 0.5
  for shape in selfloop fanin; do
    if [ $shape = selfloop ]; then flags=$selfloop; else flags=$fanin; fi
    # shellcheck disable=SC2086
    run "$shape-persistent-q1" mosquitto $persist $flags
  done
  grep -h 'pubsub\[' "$WORK/load.log" | grep -v 'connections up' >&2
  cat "$WORK/durability.txt"
  jq -c '{run: .run, label: .label, published_per_s: .published_per_s, delivered_per_s: .delivered_per_s, latency_p99_ms: .latency.p99_ms, puback_p50_ms: .puback_latency.p50_ms, puback_p99_ms: .puback_latency.p99_ms, cpu: .cpu}' "$RESULTS" | grep persistent
  exit 0
fi

for b in moat baseline mosquitto; do
  run handshake "$b" connect --count "$CONN" --concurrency "$CONC" --duration "$DUR" --warmup "$WARM"
  run handshake-c4 "$b" connect --count "$CONN" --concurrency 4 --duration "$DUR" --warmup "$WARM"
done
# The two Moat runs above are each device's first connections since the hub started (the
# first ever activates it: a write, and an event that drops it from the admission view);
# this one is reconnections, admitted from the in-memory admission view.
run handshake-c4-reconnect moat connect --count "$CONN" --concurrency 4 --duration "$DUR" --warmup "$WARM"
if [ "${ONLY:-}" = handshake ]; then
  python3 "$ROOT/bench/mqtt_summary.py" "$RESULTS"
  exit 0
fi
sleep 2
for qos in 0 1; do
  for b in moat mosquitto; do
    run "selfloop-max-q$qos" "$b" $pubsub $selfloop --qos $qos
    run "selfloop-rate-q$qos" "$b" $pubsub $selfloop --qos $qos --rate "$RATE"
    run "fanin-max-q$qos" "$b" $pubsub $fanin --qos $qos
    run "fanin-rate-q$qos" "$b" $pubsub $fanin --qos $qos --rate "$RATE"
    run "fanout-max-q$qos" "$b" $pubsub $fanout --qos $qos
    run "fanout-rate-q$qos" "$b" $pubsub $fanout --qos $qos --rate $((RATE * 2))
  done
done
for b in moat mosquitto; do
  run idle-memory "$b" hold --stages "$STAGE1,$CONN" --concurrency "$CONC" --settle 3
  sleep 2
done

log "revocation → disconnect, $NREV devices (moat only: Mosquitto has no live revocation)"
"$LOAD" revoke $(target moat) $common --hub-data-dir "$HUB" --offset "$CONN" --count $NREV \
  >"$WORK/out.json" 2>>"$WORK/load.log" && jq -c '. + {run: "revoke"}' "$WORK/out.json" >>"$RESULTS"
tail -n 3 "$WORK/load.log" >&2

# Both sides of this comparison run on a freshly restarted hub: a hub that has served the
# runs above is in another state (registry, allocator) and its rate differs by ±25 %.
stop_moat
start_moat
sleep 3
run handshake-before-revoked moat connect --count "$CONN" --concurrency "$CONC" --duration "$DUR" --warmup "$WARM"
log "inserting $REVOKED revoked serials into the registry (hub stopped), restarting"
stop_moat
CA_NAME=$(sqlite3 "$HUB/moat.db" "SELECT ca_name FROM certificates WHERE device_id IS NOT NULL LIMIT 1")
NOW_US=$(( $(date +%s) * 1000000 ))
sqlite3 "$HUB/moat.db" <<SQL
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $REVOKED)
INSERT INTO certificates (serial, ca_name, device_id, subject, not_before, not_after,
  fingerprint, spki_sha256, source, der, created_at, revoked_at, revocation_reason)
SELECT printf('7b%030x', x), '$CA_NAME', NULL, 'CN=bench-revoked-' || x, $NOW_US, $NOW_US,
  printf('bench%059x', x), printf('bench%059x', x), 'issued', x'00', $NOW_US, $NOW_US,
  'key_compromise' FROM c;
SQL
start_moat
sleep 3 # settle after start-up (hub.json is written once the revoked set is loaded)
echo "{\"run\":\"restart-with-revoked\",\"label\":\"moat\",\"revoked\":$REVOKED,\"rss_bytes\":$(awk '/VmRSS/{print $2*1024}' /proc/$MOAT_PID/status)}" >>"$RESULTS"
run handshake-with-revoked moat connect --count "$CONN" --concurrency "$CONC" --duration "$DUR" --warmup "$WARM"

python3 "$ROOT/bench/mqtt_summary.py" "$RESULTS"
