#!/usr/bin/env bash
# Benchmark of `kaws cluster apply` against the AWS emulator behind a proxy
# that adds a fixed latency to every call (default 50 ms): wall time, call
# count, and the longest chain of calls that ran one after another (the
# sequential rounds), against the depth of the resource graph (from the
# warm-up plan's `depends_on`). KAWS_STRICT=all plays real AWS's behaviours
# (tests/fixtures/strict.py): NotFound and pending windows, IAM propagation,
# throttling. Targets (issue 14): rounds <= depth + 1; wall <= 1.15x the
# chain's own time; 100 nodes make <= 1.1x the calls of 3.
#
# Each run gets a fresh emulator, warmed by a `kaws cluster plan` (moto loads
# each service's backend on its first request, a cost of the emulator, not
# of kaws), then times the whole `kaws cluster apply --yes` process. The
# figures are the median run of RUNS (default 3); the breakdown says where
# the wall time went: before the first call (start, repository checks),
# calls in flight, gaps with no call in flight, after the last call (the
# signed commit of the outputs). "chain time" is how long the chain's calls
# took, latency and the emulator's own work together: the floor for any
# client, so wall / chain time is what kaws itself adds. (The emulator is
# one Python process: calls in flight at once share one core, so a call on
# the chain takes longer the more calls run beside it.)
# Usage: scripts/bench-apply.sh [LATENCY_MS] [RUNS]
#   KAWS_BENCH_LOG=DIR keeps each run's call log (JSON lines) in DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh bench-apply
latency="${1:-50}"
runs="${2:-3}"
fpr=$(new_key operator 1d)
(umask 077; gpg_batch --export-secret-keys "$fpr" > "$work/operator.key")
export KAWS_SECRET_KEY="$work/operator.key"
"$kaws" init "$work/repo" --admin operator >/dev/null 2>&1
cd "$work/repo"
for nodes in 3 100; do
  "$kaws" cluster init "n$nodes" --domain example.com --region eu-west-1 --admin-cidr 203.0.113.0/24 \
    --nodes "$nodes" >/dev/null 2>&1
done
base=$(git rev-parse HEAD)

: > "$work/results"
for nodes in 3 100; do
  for run in $(seq 1 "$runs"); do
    git reset -q --hard "$base"
    "$kaws" trust --accept-rewind >/dev/null 2>&1 # a rewind this clone accepts
    start_emulator "$latency"
    "$kaws" --output json cluster plan "n$nodes" > "$work/plan-$nodes.json"
    : > "$calls"
    t0=$(date +%s.%N)
    if ! "$kaws" cluster apply "n$nodes" --yes >"$work/apply.log" 2>&1; then
      cat "$work/apply.log" >&2
      exit 1
    fi
    t1=$(date +%s.%N)
    stop_emulators
    log="${KAWS_BENCH_LOG:-$work}/apply-$nodes-$run.jsonl"
    cp "$calls" "$log"
    echo "$nodes $t0 $t1 $log $work/plan-$nodes.json" >> "$work/results"
  done
done

"${KAWS_CACHE:-$HOME/.cache/kaws}/bin/kaws-python" - "$work/results" "$latency" <<'PY'
import json, statistics, sys
results, lat = sys.argv[1], int(sys.argv[2]) / 1000

def measure(log, t0, t1):
    calls = sorted((json.loads(l) for l in open(log)), key=lambda c: c["end"])
    # Longest chain: calls that ran strictly one after another (each starting
    # after the previous ended), the critical path the run actually followed.
    # Ties go to the chain that took longest, whose calls' own time (the
    # latency plus the emulator's work) is then the run's critical path.
    best, took = [], []
    for i, c in enumerate(calls):
        prev = max(((best[j], took[j]) for j in range(i) if calls[j]["end"] <= c["start"]), default=(0, 0.0))
        best.append(1 + prev[0])
        took.append(prev[1] + c["end"] - c["start"])
    chain, path = max(zip(best, took), default=(0, 0.0))
    # Time with at least one call in flight.
    busy, edge = 0.0, t0
    for c in sorted(calls, key=lambda c: c["start"]):
        s, e = max(c["start"], edge), c["end"]
        if e > s:
            busy += e - s
            edge = e
    first = min(c["start"] for c in calls) - t0
    after = t1 - max(c["end"] for c in calls)
    mean = statistics.mean(c["end"] - c["start"] for c in calls)
    wall = t1 - t0
    return dict(wall=wall, calls=len(calls), chain=chain, ratio=wall / (chain * lat), path=path, first=first,
                busy=busy, idle=wall - first - busy - after, after=after, mean=mean)

def depth(plan):
    """Resources on the longest dependency path of the plan's graph."""
    deps = {r["resource"]: r["depends_on"] for r in json.load(open(plan))}
    memo = {}
    def d(k):
        if k not in memo:
            memo[k] = 1 + max((d(x) for x in deps.get(k, []) if x in deps), default=0)
        return memo[k]
    return max(d(k) for k in deps)

runs, depths = {}, {}
for line in open(results):
    nodes, t0, t1, log, plan = line.split()
    runs.setdefault(int(nodes), []).append(measure(log, float(t0), float(t1)))
    depths[int(nodes)] = depth(plan)
print(f"latency {lat * 1000:.0f} ms per call; median of {len(next(iter(runs.values())))} runs; times in seconds")
print(f"{'nodes':<6} {'wall':>6} {'calls':>6} {'chain':>6} {'chain*lat':>10} {'ratio':>6}"
      f" | {'to 1st call':>11} {'in calls':>9} {'gaps':>6} {'after':>6} {'mean call':>9}"
      f" | {'chain time':>10} {'wall/chain time':>15}")
for nodes, rs in sorted(runs.items()):
    m = sorted(rs, key=lambda r: r["wall"])[len(rs) // 2]
    print(f"{nodes:<6} {m['wall']:6.2f} {m['calls']:6d} {m['chain']:6d} {m['chain'] * lat:10.2f} {m['ratio']:6.2f}"
          f" | {m['first']:11.3f} {m['busy']:9.3f} {m['idle']:6.3f} {m['after']:6.3f} {m['mean']:9.3f}"
          f" | {m['path']:10.3f} {m['wall'] / m['path']:15.2f}")
for nodes, rs in sorted(runs.items()):
    m = sorted(rs, key=lambda r: r["wall"])[len(rs) // 2]
    print(f"{nodes} nodes: rounds {m['chain']} against graph depth {depths[nodes]} (target <= {depths[nodes] + 1});"
          f" wall / chain time {m['wall'] / m['path']:.2f} (target <= 1.15)")
small, big = (sorted(rs, key=lambda r: r["wall"])[len(rs) // 2]["calls"] for rs in (runs[3], runs[100]))
print(f"calls, 100 nodes / 3 nodes: {big / small:.2f} (target <= 1.1)")
PY
