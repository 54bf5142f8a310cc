#!/usr/bin/env bash
# Benchmarks, whole process, release build (hyperfine):
#   `kaws cluster init` with 1 and with 20 primaries
#   (target on a 2-core machine: under 40 ms with 20 primaries)
# Usage: scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || {
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get install -y -qq hyperfine >/dev/null
}
source scripts/lib.sh bench

# 20 administrators a1..a20; a1 is the operator.
for i in $(seq 1 20); do
  fpr=$(new_key "a$i" 1y)
  [[ $i == 1 ]] && gpg_batch --export-secret-keys "$fpr" > "$work/a1.key"
done
export KAWS_SECRET_KEY="$work/a1.key"
repo="$work/repo"
"$kaws" init "$repo" --admin a1 >/dev/null 2>&1
for i in $(seq 2 20); do "$kaws" --repo "$repo" key add "a$i" "$work/a$i.asc" >/dev/null; done
base=$(git -C "$repo" rev-parse HEAD)

primaries() { for i in $(seq 1 "$1"); do printf -- ' --primary a%s' "$i"; done; }
for n in 1 20; do
  echo "== kaws cluster init with $n primaries"
  hyperfine -N --warmup 3 --runs 30 --style basic \
    --prepare "git -C $repo reset -q --hard $base" \
    "$kaws --repo $repo cluster init bench --domain example.com --region eu-west-1 $(primaries "$n")"
done
