#!/usr/bin/env bash
# Cluster benchmark (issue 16): three Moat nodes on one PostgreSQL database and a NATS server
# behind HAProxy (scripts/cluster), Mosquitto 2.0 as the single-node reference, the same
# load generator (moat-device) and device certificates for all, in one run.
#
#   bench/cluster.sh --database postgres://USER:PASS@HOST/postgres   # a server URL: the run
#                                     # creates (and drops) its own database there
#   SKIP_BUILD=1 KEEP=1 bench/cluster.sh --database …
#
# Runs (each a JSON line in $WORK/results.jsonl, a summary on stdout):
#   fan-in latency at a fixed rate (PAIRS publishers × RATE msgs/s → one subscriber) and at
#   full speed, QoS 0 and 1: publishers and subscriber on one node (same-node), subscriber
#   on another node (cross-node), and Mosquitto;
#   revocation → connection closed, NREV devices connected to node 2, revoked through node
#   1's API (cross-node), and through node 2's (same node);
#   handshakes + CONNACK through HAProxy (three nodes) against one node directly.
# Tunables: PAIRS (50), RATE (100), DUR (8), WARM (2), NREV (100), CONN (3000), CONC (64).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

server=${MOAT_TEST_DATABASE_URL:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --database) server=$2; shift 2 ;;
    *) echo "bench/cluster.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$server" ] || { echo "bench/cluster.sh: give --database postgres://…/postgres (a server the run may create a database on)" >&2; exit 2; }

PAIRS=${PAIRS:-50}
RATE=${RATE:-100}
DUR=${DUR:-8}
WARM=${WARM:-2}
NREV=${NREV:-100}
CONN=${CONN:-3000}
CONC=${CONC:-64}
MOSQ_PORT=${MOSQ_PORT:-18893}
NATS_PORT=${NATS_PORT:-14222}
DB=moat_bench_cluster

ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d /tmp/moat-cluster-bench.XXXXXX)
RESULTS=$WORK/results.jsonl
C=$WORK/cluster
MOSQ_PID=
log() { echo "== $*" >&2; }
cleanup() {
  [ -n "$MOSQ_PID" ] && kill "$MOSQ_PID" 2>/dev/null || true
  "$ROOT/scripts/cluster" down --dir "$C" >/dev/null 2>&1 || true
  psql "$server" -X -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "work dir kept: $WORK" >&2; fi
}
trap cleanup EXIT

if [ -z "${SKIP_BUILD:-}" ]; then
  log "building (release)"
  (cd "$ROOT" && cargo build --release -q -p moat -p moat-device)
fi
MOAT=$ROOT/target/release/moat
LOAD=$ROOT/target/release/moat-device

psql "$server" -X -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
log "three nodes, NATS, HAProxy (scripts/cluster)"
MOAT_BIN=$MOAT "$ROOT/scripts/cluster" up --database "${server%/*}/$DB" --dir "$C" --nats-port "$NATS_PORT" >&2
N1=127.0.0.1:20183
N2=127.0.0.1:20283
LB=127.0.0.1:8883
PID1=$(cat "$C/node1.pid")
PID2=$(cat "$C/node2.pid")

DEV=$WORK/devices
NDEV=$((PAIRS + NREV + CONN))
log "enrolling $NDEV devices through node 1"
"$LOAD" enroll --hub-data-dir "$C/node1" --count "$NDEV" --out "$DEV" --concurrency 16 >/dev/null
"$MOAT" --data-dir "$C/node1" app create sink --subscribe 'devices/+/load' --out "$DEV" >/dev/null
SINK_IDX=$NDEV

log "Mosquitto (single-node reference)"
start_mosquitto "$WORK/mosquitto" "$MOSQ_PORT" "$C/node1/ca-bundle.pem"

CA=$C/node1/ca-bundle.pem
common="--devices $DEV --src 127.0.0.1-32"
run() { # name label args...
  local name=$1 label=$2; shift 2
  log "$name [$label]"
  # shellcheck disable=SC2068
  if "$LOAD" "$@" --label "$label" $common >"$WORK/out.json" 2>>"$WORK/load.log"; then
    jq -c --arg run "$name" '. + {run: $run}' "$WORK/out.json" >>"$RESULTS"
  else
    echo "{\"run\":\"$name\",\"label\":\"$label\",\"failed\":true}" >>"$RESULTS"
    tail -3 "$WORK/load.log" >&2
  fi
  # What an overloaded run left queued drains before the next one measures.
  sleep 3
}
fanin="pubsub --duration $DUR --warmup $WARM --publishers $PAIRS --subscribers 1 --sub-offset $SINK_IDX --pub-topic devices/{id}/load --sub-filter devices/+/load"
echo "{\"run\":\"load-before\",\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$RESULTS"
for qos in 0 1; do
  for rate in "$RATE" 0; do
    tag=$([ "$rate" = 0 ] && echo max || echo rate)
    # shellcheck disable=SC2086
    run "fanin-$tag-q$qos" same-node $fanin --qos "$qos" --rate "$rate" --addr $N1 --ca "$CA" --watch-pid "$PID1"
    # shellcheck disable=SC2086
    run "fanin-$tag-q$qos" cross-node $fanin --qos "$qos" --rate "$rate" --addr $N1 --sub-addr $N2 --ca "$CA" --watch-pid "$PID1"
    # shellcheck disable=SC2086
    run "fanin-$tag-q$qos" mosquitto $fanin --qos "$qos" --rate "$rate" --addr 127.0.0.1:$MOSQ_PORT --ca "$WORK/mosquitto/ca.pem" --watch-pid "$MOSQ_PID"
  done
done

half=$((NREV / 2))
run revoke cross-node revoke --addr $N2 --ca "$CA" --hub-data-dir "$C/node1" --offset "$PAIRS" --count "$half" --watch-pid "$PID2"
run revoke same-node revoke --addr $N2 --ca "$CA" --hub-data-dir "$C/node2" --offset $((PAIRS + half)) --count $((NREV - half)) --watch-pid "$PID2"

first=$((PAIRS + NREV))
run handshake one-node connect --addr $N1 --ca "$CA" --offset "$first" --count "$CONN" --concurrency "$CONC" --duration "$DUR" --warmup "$WARM" --watch-pid "$PID1"
run handshake haproxy-3-nodes connect --addr $LB --ca "$CA" --offset "$first" --count "$CONN" --concurrency "$CONC" --duration "$DUR" --warmup "$WARM" --watch-pid "$PID1"
echo "{\"run\":\"load-after\",\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$RESULTS"

# Summary.
jq -r 'select(.kind == "pubsub") | [.run, .label, (.delivered_per_s|floor), .latency.p50_ms, .latency.p99_ms] | @tsv' "$RESULTS" |
  awk 'BEGIN { print "| run | where | delivered/s | latency p50 ms | p99 ms |"; print "|---|---|---|---|---|" } { printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }'
echo
jq -r 'select(.kind == "revoke") | [.label, .revocations, .request_to_close.p50_ms, .request_to_close.p99_ms, .response_to_close.p99_ms, (.not_closed|length), (.reconnects_accepted|length)] | @tsv' "$RESULTS" |
  awk 'BEGIN { print "| revocation | n | request→closed p50 ms | p99 ms | response→closed p99 ms | not closed | reconnects accepted |"; print "|---|---|---|---|---|---|---|" } { printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7 }'
echo
jq -r 'select(.kind == "connect") | [.label, (.handshakes_per_s|floor), .latency.p99_ms, .errors] | @tsv' "$RESULTS" |
  awk 'BEGIN { print "| handshakes + CONNACK | /s | p99 ms | errors |"; print "|---|---|---|---|" } { printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }'
jq -r 'select(.loadavg) | "\(.run): load average \(.loadavg)"' "$RESULTS"
