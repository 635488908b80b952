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

# start_mosquitto DIR PORT CLIENT_CA: Mosquitto 2.0 with mutual TLS on 127.0.0.1:PORT, the
# reference broker of the benchmarks: a test CA and a server certificate for localhost made
# with openssl (P-256) in DIR (DIR/ca.pem is what clients trust), device certificates
# checked against CLIENT_CA (the hub's bundle: the same device certificates work on both),
# no persistence, the same queue and in-flight limits as the hub's defaults. Sets MOSQ_PID;
# its log is DIR/mosquitto.log.
start_mosquitto() {
  local dir=$1 port=$2 client_ca=$3 bin=${MOSQUITTO:-/usr/sbin/mosquitto}
  mkdir -p "$dir"
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=bench mosquitto CA" -days 2 -out "$dir/ca.pem" 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/server.key" 2>/dev/null
  openssl req -new -key "$dir/server.key" -subj "/CN=localhost" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$dir/ext.cnf"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/ext.cnf" -out "$dir/server.pem" 2>/dev/null
  cat >"$dir/mosquitto.conf" <<CONF
user root
persistence false
log_dest stderr
log_type error
log_type warning
max_queued_messages 1000
max_inflight_messages 32
set_tcp_nodelay true
listener $port 127.0.0.1
cafile $client_ca
certfile $dir/server.pem
keyfile $dir/server.key
require_certificate true
use_identity_as_username true
max_connections -1
CONF
  "$bin" -c "$dir/mosquitto.conf" >>"$dir/mosquitto.log" 2>&1 &
  MOSQ_PID=$!
  sleep 0.5
  kill -0 "$MOSQ_PID" || { cat "$dir/mosquitto.log" >&2; return 1; }
  "$bin" -h 2>&1 | head -1 >&2 || true
}
