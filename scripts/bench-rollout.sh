#!/usr/bin/env bash
# Benchmark of a rotation's rollout (issue 16): `kaws cluster apply` of each
# phase (--rotate, --promote, --finish-rotation) on a 3-master, 100-node
# cluster in the AWS emulator, behind the recording proxy that adds a fixed
# latency to every call (default 50 ms). Per phase: wall time, the calls
# kaws makes (by kind: parameter writes, the wait's polls, the instance
# refresh), and how long after the last instance reported apply returned.
#
# The instances are a SIMULATION (bench-rollout-agents.py, beside this
# script): no instance runs here (the boot harness runs 3 masters and 2
# nodes for real, tests/boot.rs); the simulation reports on each instance's
# behalf as the agents would, on a compressed schedule: master i reports
# AGENT_S seconds after master i-1 (the refresh agent, one master at a
# time), and once kaws starts the node group's instance refresh, the nodes
# report in batches of 10 (MaxHealthyPercentage 110 of 100 nodes) every
# BATCH_S seconds; then it marks the refresh done (the proxy answers the
# instance refresh API, which moto lacks). So the wall time is the
# schedule plus what kaws adds; the call counts are kaws' own.
#
# On real AWS the schedule dominates: a master's refresh waits for its
# agent's timer (1 min) and its restarts (about 30 s each for etcd and the
# API server), about 5 minutes for 3 masters; 100 nodes are replaced 10 at a
# time, each batch waiting for its instances to boot and join plus the
# 300 s warmup, about 10 x 8 minutes per phase.
# Usage: scripts/bench-rollout.sh [LATENCY_MS] [AGENT_S] [BATCH_S]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh bench-rollout
latency="${1:-50}"
export AGENT_S="${2:-2}" BATCH_S="${3:-1}"
fpr=$(new_key operator 1d)
(umask 077; gpg_batch --export-secret-keys "$fpr" > "$work/operator.key")
export KAWS_SECRET_KEY="$work/operator.key"
"$kaws" init "$work/repo" --admin operator >/dev/null 2>&1
cd "$work/repo"
"$kaws" cluster init big --domain example.com --region eu-west-1 --admin-cidr 203.0.113.0/24 \
  --masters 3 --nodes 100 >/dev/null 2>&1
start_emulator "$latency"
"$kaws" cluster apply big --yes --no-wait >"$work/apply.log" 2>&1 || { cat "$work/apply.log" >&2; exit 1; }
py="${KAWS_CACHE:-$HOME/.cache/kaws}/bin/kaws-python"
# Every instance reports the generation it booted with.
"$py" "$src/scripts/bench-rollout-agents.py" settle big
: > "$work/results"
for step in rotate promote finish-rotation; do
  args=("--$step")
  [[ $step != rotate ]] || args+=(--primary operator)
  "$kaws" cluster reencrypt big "${args[@]}" >/dev/null 2>&1
  : > "$calls"
  "$py" "$src/scripts/bench-rollout-agents.py" play big "$calls" "$work/agents-$step.json" &
  agents=$!
  t0=$(date +%s.%N)
  "$kaws" cluster apply big --yes --wait-minutes 30 >"$work/apply.log" 2>&1 || { cat "$work/apply.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  wait "$agents"
  cp "$calls" "$work/calls-$step.jsonl"
  echo "$step $t0 $t1 $work/calls-$step.jsonl $work/agents-$step.json" >> "$work/results"
done
"$py" - "$work/results" "$latency" <<'PY'
import collections, json, sys
print(f"3 masters, 100 nodes; latency {int(sys.argv[2])} ms per call; the instances are simulated (see the script)")
print(f"{'phase':<18} {'wall s':>7} {'calls':>6} {'writes':>7} {'polls':>6} {'refresh':>8} {'other':>6} {'last report -> done s':>22}")
for line in open(sys.argv[1]):
    phase, t0, t1, log, agents = line.split()
    calls = [json.loads(l) for l in open(log)]
    by = collections.Counter(c["action"] for c in calls)
    writes = by["PutParameter"]
    polls = by["DescribeInstances"] + by["GetParameter"]
    refresh = by["StartInstanceRefresh"] + by["DescribeInstanceRefreshes"]
    last = json.load(open(agents))["last_report"]
    print(f"{phase:<18} {float(t1) - float(t0):7.1f} {len(calls):6d} {writes:7d} {polls:6d} {refresh:8d}"
          f" {len(calls) - writes - polls - refresh:6d} {float(t1) - last:22.1f}")
PY
