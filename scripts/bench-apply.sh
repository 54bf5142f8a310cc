#!/usr/bin/env bash
# Benchmark of `kaws cluster apply` against the AWS emulator behind a proxy
# that adds a fixed latency to every call (default 50 ms): wall time, call
# count, and the longest chain of calls that ran one after another.
# Targets: wall time within 1.5x of (longest chain x latency); a 100-node
# cluster makes at most 2x the calls of a 3-node one.
# Usage: scripts/bench-apply.sh [LATENCY_MS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh bench-apply
latency="${1:-50}"
fpr=$(new_key operator 1d)
gpg_batch --export-secret-keys "$fpr" > "$work/operator.key"
export KAWS_SECRET_KEY="$work/operator.key"
"$kaws" init "$work/repo" --admin operator >/dev/null 2>&1
cd "$work/repo"
printf '%-7s %10s %7s %7s %14s %7s\n' nodes wall_s calls chain chain_x_lat_s ratio
for nodes in 3 100; do
  "$kaws" cluster init "n$nodes" --domain example.com --region eu-west-1 --admin-cidr 203.0.113.0/24 \
    --nodes "$nodes" >/dev/null 2>&1
  start_emulator "$latency"
  t0=$(date +%s.%N)
  "$kaws" cluster apply "n$nodes" --yes >/dev/null 2>&1
  t1=$(date +%s.%N)
  "${KAWS_CACHE:-$HOME/.cache/kaws}/bin/kaws-python" - "$calls" "$t0" "$t1" "$latency" "$nodes" <<'PY'
import json, sys
log, t0, t1, lat, nodes = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
calls = sorted((json.loads(l) for l in open(log)), key=lambda c: c["end"])
# Longest chain: calls that ran strictly one after another (each starting
# after the previous ended), the critical path the run actually followed.
best = []
for i, c in enumerate(calls):
    prev = [best[j] for j in range(i) if calls[j]["end"] <= c["start"]]
    best.append(1 + max(prev, default=0))
chain = max(best, default=0)
wall = t1 - t0
print(f"{nodes:<7} {wall:10.2f} {len(calls):7d} {chain:7d} {chain * lat / 1000:14.2f} {wall / (chain * lat / 1000):7.2f}")
PY
  stop_emulators
done
