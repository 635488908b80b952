#!/usr/bin/env bash
# EST enrollment benchmark (issue 4): enrollments per second end to end — TLS, station
# authentication, CSR check, allow-list claim, signing, device + certificate + audit stored —
# on a fresh hub with its default SQLite registry (synchronous=FULL), driven by
# `moat-device est` (crate moat-device) with a station certificate. CSRs are made before the
# clock starts.
#
#   bench/est.sh                                   # 20000 enrollments, 32 clients, kept-alive
#   bench/est.sh --concurrency 8                   # any `moat-device est` option
#   bench/est.sh --count 10000 --new-connections   # a full mutual-TLS handshake per enrollment
#   SKIP_BUILD=1 bench/est.sh                      # use the release binaries already built
#
# Binaries come from $CARGO_TARGET_DIR (default: target/) /release. Output: a human line on
# stderr, one JSON object on stdout (rate, latency, the hub's and the generator's CPU).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
if [ -z "${SKIP_BUILD:-}" ]; then
  echo "bench/est.sh: building (release)" >&2
  (cd "$ROOT" && cargo build --release -q -p moat -p moat-device)
fi
WORK=$(mktemp -d /tmp/moat-est-bench.XXXXXX)
HUB=
trap 'if [ -n "$HUB" ]; then kill $HUB 2>/dev/null; wait $HUB 2>/dev/null; fi; rm -rf "$WORK"' EXIT
start_hub "$WORK" "$BIN"
echo "bench/est.sh: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--count 20000 --concurrency 32)
"$BIN/moat-device" est --hub-data-dir "$WORK/data" "${args[@]}"
echo "bench/est.sh: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
