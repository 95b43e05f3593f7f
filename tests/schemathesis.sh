#!/usr/bin/env bash
# Property-based check of the leader's HTTP API against its own OpenAPI document (schemathesis, from PyPI):
# every answer must match the documented status codes, content types and schemas, and no input may cause a 5xx.
# Usage: tests/schemathesis.sh [seconds]     (installs schemathesis with pip when missing; loopback only)
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-60}"

command -v schemathesis >/dev/null 2>&1 || python3 -m pip install --quiet schemathesis
cargo build --quiet -p config-leader
leader="$PWD/target/debug/config-leader"

work="$(mktemp -d)"
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
"$leader" init --topology single-node --out "$work" >/dev/null
conf="$work/config-leader/conf/config-leader.json"
sed -i 's/REPLACE_ME/replaced.example/g' "$work/config-leader/conf/platform.yml"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$leader" --config "$conf" --ip 127.0.0.1 --port "$port" serve >"$work/leader.log" 2>&1 &
pid=$!
key="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["adminKey"])' "$conf")"
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done

echo "== schemathesis against http://127.0.0.1:$port (budget ${budget}s)"
schemathesis run "http://127.0.0.1:$port/openapi.json" \
  --header "authorization: $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-time "$budget" --workers 2 --suppress-health-check all
