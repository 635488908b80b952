#!/usr/bin/env bash
# Web console benchmark (issue 6): how long the device list takes to render with 10,000
# devices (the issue's "10,000 devices stay fast"), on a fresh hub with its default SQLite
# registry. Devices are created through the admin API (`moat-device enroll`, hub-made keys);
# a session is opened by posting the admin token to /console/login; each page is then
# fetched ROUNDS times over one kept-alive HTTPS connection (curl), and the server-side
# time per page is reported as p50 / p99 / max in milliseconds (curl's time_starttransfer
# minus time_pretransfer: request sent → first byte; the page is rendered whole before the
# first byte).
#
#   bench/console.sh                   # 10000 devices, 200 rounds per page
#   DEVICES=50000 ROUNDS=100 bench/console.sh
#   SKIP_BUILD=1 bench/console.sh      # use the release binaries already built
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
DEVICES=${DEVICES:-10000}
ROUNDS=${ROUNDS:-200}
if [ -z "${SKIP_BUILD:-}" ]; then
  echo "bench/console.sh: building (release)" >&2
  (cd "$ROOT" && cargo build --release -q -p moat -p moat-device)
fi
WORK=$(mktemp -d /tmp/moat-console-bench.XXXXXX)
HUB=
trap 'if [ -n "$HUB" ]; then kill $HUB 2>/dev/null; wait $HUB 2>/dev/null; fi; rm -rf "$WORK"' EXIT
start_hub "$WORK" "$BIN"
API=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin_url"])' "$WORK/data/hub.json")
mkdir -p "$WORK/creds"
t0=$(date +%s%N)
"$BIN/moat-device" enroll --hub-data-dir "$WORK/data" --count "$DEVICES" --prefix dev- --out "$WORK/creds" >/dev/null
echo "bench/console.sh: $DEVICES devices created in $(( ($(date +%s%N) - t0) / 1000000 )) ms" >&2
rm -rf "$WORK/creds"
CA="$WORK/data/ca-bundle.pem"
JAR="$WORK/cookies"
curl -sS --cacert "$CA" -c "$JAR" -o /dev/null -w '%{http_code}\n' \
  --data-urlencode "token=$(cat "$WORK/data/admin.token")" "$API/console/login" | grep -q 303 ||
  { echo "bench/console.sh: sign-in failed" >&2; exit 1; }
echo "bench/console.sh: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

last=$(( (DEVICES + 49) / 50 ))
printf '%-44s %8s %8s %8s %10s\n' page p50_ms p99_ms max_ms bytes
for path in "/console/devices" "/console/devices?page=$((last / 2))" "/console/devices?page=$last" \
            "/console/devices?q=dev-00042" "/console/devices?q=zzz-no-match" \
            "/console/devices?state=revoked" "/console/devices/dev-$(printf %06d $((DEVICES / 2)))" "/console"; do
  urls=()
  for _ in $(seq "$ROUNDS"); do urls+=(-o /dev/null "$API$path"); done
  # One curl process, one kept-alive connection, ROUNDS requests.
  curl -sS --cacert "$CA" -b "$JAR" \
       -w '%{http_code} %{time_pretransfer} %{time_starttransfer} %{size_download}\n' "${urls[@]}" |
    python3 -c '
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
bad = [r for r in rows if r[0] != "200"]
if bad:
    sys.exit(f"non-200 answers: {str(bad[:3])[:300]}")
ms = sorted((float(r[2]) - float(r[1])) * 1000 for r in rows)
p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
print(f"{sys.argv[1]:<44} {p(0.5):8.2f} {p(0.99):8.2f} {ms[-1]:8.2f} {rows[0][3]:>10}")
' "$path"
done
echo "bench/console.sh: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
