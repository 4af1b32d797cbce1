#!/usr/bin/env bash
# Runs flipdns as a candidate of benches/load/peers.sh (see README "Benchmarks"):
# the peers' zone, with `app` served as a blue/green service instead of a static record.
#   peers.sh --candidate 'benches/load/flipdns-candidate.sh {PORT} {ZONE}' --candidate-name flipdns
# A third argument `ledger-off` turns the straggler ledger off, to measure what it costs.
# FLIPDNS_BIN overrides the binary (default: target/release/flipdns of this checkout).
# WORKERS (exported by peers.sh: 1 pinned, the cores unpinned) sets `[server] workers`;
# UDP_BATCH sets `[server] udp_batch` (default 32).
set -euo pipefail
port=$1
zone=$2
ledger=true
[ "${3:-}" = ledger-off ] && ledger=false
here=$(cd "$(dirname "$0")" && pwd)
bin=${FLIPDNS_BIN:-$here/../../target/release/flipdns}
dir=$(mktemp -d "${TMPDIR:-/tmp}/flipdns-candidate.XXXXXX")
grep -v '^app ' "$zone" > "$dir/svc.example.zone"
cat > "$dir/flipdns.toml" <<CONFIG
[server]
listen = ["127.0.0.1:$port"]
admin_socket = "$dir/flipdns.sock"
state_file = "$dir/state.json"
workers = ${WORKERS:-1}
udp_batch = ${UDP_BATCH:-32}

[ledger]
enabled = $ledger

[[zone]]
origin = "svc.example."
file = "svc.example.zone"

[[service]]
name = "app"
blue = ["10.0.0.1", "10.0.0.2"]
green = ["10.0.1.1", "10.0.1.2"]
live = "blue"
ttl = 30
cutover_ttl = 5
settle = "1m"
CONFIG
exec "$bin" serve --config "$dir/flipdns.toml"
