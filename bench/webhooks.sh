#!/usr/bin/env bash
# Load on the Cortex XDR webhook: accepted deliveries per second and the latency of the
# acknowledgement, measured by wrk from a second process against `pivotwatch serve`
# with workers off (acknowledging means storing the write-up row and its job).
#
# bench/webhooks.sh [sqlite|postgres]   (postgres uses $PIVOTWATCH_TEST_DATABASE_URL)
# Needs wrk (Debian package `wrk`) and python3. Prints wrk's report.
set -euo pipefail
backend="${1:-sqlite}"
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${PIVOTWATCH_BIN:-$here/target/release/pivotwatch}"
work="$(mktemp -d)"
trap 'kill "${server:-0}" 2>/dev/null || true; cat "$work/server.log" >&2; rm -rf "$work"' EXIT
secret="bench-secret-0123456789abcdef"
port=18089

# 20,000 distinct cases, each signed now (valid for the 300-second window).
python3 - "$work/requests.lua" "$secret" <<'PY'
import hashlib, hmac, json, sys, time, random
out, secret = sys.argv[1], sys.argv[2].encode()
run = random.randrange(1 << 30)
ts = str(int(time.time()))
lines = ["requests = {}"]
for n in range(20000):
    body = json.dumps({"reply": {"incident": {"incident_id": f"bench-{run}-{n}",
        "modification_time": 1733300000000, "severity": "high", "status": "new",
        "description": "load test case", "hosts": ["10.20.1.10"]}}})
    sig = hmac.new(secret, f"{ts}.{body}".encode(), hashlib.sha256).hexdigest()
    lines.append(f"requests[{n + 1}] = wrk.format('POST', '/v1/webhooks/xdr', "
                 f"{{['Content-Type']='application/json', ['X-Pivotwatch-Timestamp']='{ts}', "
                 f"['X-Pivotwatch-Signature']='v1={sig}'}}, {json.dumps(body)})")
lines.append("local i = 0")
lines.append("request = function() i = i % #requests + 1; return requests[i] end")
open(out, "w").write("\n".join(lines) + "\n")
PY

export PIVOTWATCH_DATA_DIR="$work/data" PIVOTWATCH_WEBHOOKS_XDR_SECRET="$secret"
export PIVOTWATCH_SERVER_WORKERS=0 PIVOTWATCH_SERVER_RATE_LIMIT_PER_MINUTE=1000000
unset PIVOTWATCH_XDR_URL PIVOTWATCH_LLM_BASE_URL PIVOTWATCH_QDRANT_URL
if [ "$backend" = postgres ]; then
  export PIVOTWATCH_DATABASE_URL="${PIVOTWATCH_TEST_DATABASE_URL:?set PIVOTWATCH_TEST_DATABASE_URL}"
else
  unset PIVOTWATCH_DATABASE_URL
fi
mkdir -p "$work/data"
"$bin" simulate --out "$work/sim" --devices 10 --days 2 >/dev/null
"$bin" replay load --data-dir "$work/data" --inventory "$work/sim/inventory.csv" --flows "$work/sim/conn.log" >/dev/null
"$bin" serve --listen "127.0.0.1:$port" 2>"$work/server.log" &
server=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
echo "== $backend: wrk -t1 -c16 -d5s (distinct signed cases; answers by status below)"
wrk -t1 -c16 -d5s --latency -s "$work/requests.lua" "http://127.0.0.1:$port"
curl -s "http://127.0.0.1:$port/metrics" | grep '^pivotwatch_http_requests_total{route="/v1/webhooks/xdr"'
