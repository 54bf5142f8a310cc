#!/usr/bin/env bash
# Benchmarks, whole process, release build (hyperfine):
#   `kaws cluster init` with 1 and with 20 primaries;
#   `kaws cluster reencrypt --rotate` with 20 primaries (target: under 100 ms);
#   `kaws audit` over 10,000 commits, cold and warm (see below)
#   (target on a 2-core machine: under 40 ms with 20 primaries)
# Usage: scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || {
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get install -y -qq hyperfine >/dev/null
}
source scripts/lib.sh bench
# A debugging setting that makes every internal error capture a backtrace.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

# 20 administrators a1..a20; a1 is the operator.
for i in $(seq 1 20); do
  fpr=$(new_key "a$i" 1y)
  [[ $i == 1 ]] && (umask 077; gpg_batch --export-secret-keys "$fpr" > "$work/a1.key")
done
export KAWS_SECRET_KEY="$work/a1.key"
repo="$work/repo"
"$kaws" init "$repo" --admin a1 >/dev/null 2>&1
for i in $(seq 2 20); do "$kaws" --repo "$repo" key add "a$i" "$work/a$i.asc" >/dev/null; done
base=$(git -C "$repo" rev-parse HEAD)
# Each run starts from the same commit: a rewind this clone accepts (kaws
# refuses a rewound branch otherwise), done outside the timed command.
cat > "$work/rewind" <<REWIND
#!/bin/sh
git -C "$repo" reset -q --hard "\$1" && "$kaws" --repo "$repo" trust --accept-rewind >/dev/null 2>&1
REWIND
chmod +x "$work/rewind"

primaries() { for i in $(seq 1 "$1"); do printf -- ' --primary a%s' "$i"; done; }
for n in 1 20; do
  echo "== kaws cluster init with $n primaries"
  hyperfine -N --warmup 3 --runs 30 --style basic \
    --prepare "$work/rewind $base" \
    "$kaws --repo $repo cluster init bench --domain example.com --region eu-west-1 $(primaries "$n")"
done

# kaws cluster reencrypt --rotate on a cluster with 20 primaries (target: under 100 ms).
"$work/rewind" "$base"
"$kaws" --repo "$repo" cluster init bench --domain example.com --region eu-west-1 $(primaries 20) >/dev/null
with_cluster=$(git -C "$repo" rev-parse HEAD)
echo "== kaws cluster reencrypt --rotate with 20 primaries"
hyperfine -N --warmup 2 --runs 20 --style basic \
  --prepare "$work/rewind $with_cluster" \
  "$kaws --repo $repo cluster reencrypt bench $(primaries 20) --rotate"

# kaws audit over 10,000 commits with 200 administrator-set changes, cold
# (no cache) and warm; and the fail-closed check inside an ordinary command.
# Targets: cold under 2 s, warm under 50 ms, ordinary command under 20 ms warm.
cargo build --locked --release --quiet --example gen_history
gen_dir="${CARGO_TARGET_DIR:-target}"
[[ $gen_dir == /* ]] || gen_dir="$PWD/$gen_dir"
gen="$gen_dir/release/examples/gen_history"
"$work/rewind" "$base"
"$gen" "$repo" "$work/a1.key" 10000 200
echo "== kaws audit, cold (10,000 commits, 200 administrator-set changes)"
hyperfine -N --runs 5 --style basic --prepare "rm -f $repo/.git/kaws/audit.json" "$kaws --repo $repo audit"
echo "== kaws audit, warm"
hyperfine -N --warmup 2 --runs 30 --style basic "$kaws --repo $repo audit"
echo "== kaws key list (the fail-closed check inside an ordinary command), warm"
hyperfine -N --warmup 2 --runs 30 --style basic "$kaws --repo $repo key list"
