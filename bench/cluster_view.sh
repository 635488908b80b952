#!/usr/bin/env bash
# Admission on a cluster node with and without the in-memory admission view (issue 16's
# "CONNECT admission with no registry round trip on the hot path"): one node of a cluster
# (scripts/cluster --nodes 1, PostgreSQL, NATS), 3,000 devices, handshakes + CONNACK with 4 in
# flight, first connections then the same devices again, `[cluster] admission_view` true then
# false. Release binaries in target/release; a local PostgreSQL with the postgres user.
#
#   bench/cluster_view.sh
set -euo pipefail
cd "$(dirname "$0")/.."
L=./target/release/moat-device
for view in true false; do
  su postgres -c "psql -q -c 'DROP DATABASE IF EXISTS moat_view WITH (FORCE)' -c 'CREATE DATABASE moat_view'" 2>/dev/null
  rm -rf /tmp/vb
  ADMISSION_VIEW=$view scripts/cluster up --nodes 1 --database postgres://postgres:moat@127.0.0.1:5432/moat_view --dir /tmp/vb --nats-port 14444 >/dev/null
  $L enroll --hub-data-dir /tmp/vb/node1 --count 3000 --out /tmp/vb/dev --concurrency 16 >/dev/null 2>&1
  PID=$(cat /tmp/vb/node1.pid)
  for pass in first again; do
    $L connect --addr 127.0.0.1:20183 --ca /tmp/vb/node1/ca-bundle.pem --devices /tmp/vb/dev --src 127.0.0.1-32 --count 3000 --concurrency 4 --duration 8 --warmup 2 --watch-pid "$PID" --label "view=$view $pass" 2>/dev/null \
      | jq -c '{label: .label, per_s: .handshakes_per_s, p99: .latency.p99_ms, cpu: .cpu, errors: .errors}'
  done
  scripts/cluster down --dir /tmp/vb >/dev/null
  sleep 1
done
cut -d' ' -f1-3 /proc/loadavg
