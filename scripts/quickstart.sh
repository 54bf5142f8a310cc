#!/usr/bin/env bash
# The main job, end to end, with a throwaway OpenPGP key: a kaws
# repository, a cluster's PKI sealed to the operator, an administrator's
# credentials, the rendered user-data, then the cluster's whole AWS
# footprint planned, applied, summarised and destroyed, and the audit of the
# history. With no AWS account configured (no AWS_PROFILE, no
# AWS_ACCESS_KEY_ID), AWS is a local emulator (moto) on loopback; see the
# README for the same flow on a real account. Nothing outside a temporary
# directory is touched; the gpg-agent and emulator it starts are stopped.
#
# usage: scripts/quickstart.sh [CLUSTER]   (the cluster's name; default demo)
# KAWS_BIN=FILE uses an already built kaws (CI passes the tests' build);
# otherwise a debug build, the fastest cold (`cargo install --path .` makes
# the optimised one to keep). KAWS_REQUIRE_BOOT=1 makes a skipped simulated
# boot a failure (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
cluster="${1:-demo}"
kaws_profile=dev
source scripts/lib.sh quickstart

fpr=$(new_key operator 1d)
(umask 077; gpg_batch --export-secret-keys "$fpr" > "$work/operator.key")
chmod 600 "$work/operator.key"
export KAWS_SECRET_KEY="$work/operator.key"

set -x
"$kaws" init "$work/repo" --admin operator
cd "$work/repo"
"$kaws" key list
"$kaws" cluster init "$cluster" --domain example.com --region eu-west-1 --admin-cidr 203.0.113.0/24 --masters 3
"$kaws" cluster certs "$cluster" --expiring-within 30
"$kaws" admin create "$cluster" operator
"$kaws" admin sign "$cluster" operator --days 7
"$kaws" admin install "$cluster" operator --kubeconfig "$work/kubeconfig"
kubectl --kubeconfig "$work/kubeconfig" config get-contexts
"$kaws" cluster render "$cluster" --role master --index 0 --out "$work/master-0.user-data"
"$kaws" cluster render "$cluster" --role node | head -20
{ set +x; } 2>/dev/null
emulated=""
if [[ -z "${AWS_PROFILE:-}${AWS_ACCESS_KEY_ID:-}" ]]; then
  echo "quickstart: no AWS account configured; using the local AWS emulator" >&2
  start_emulator
  emulated=1
fi
set -x
"$kaws" cluster plan "$cluster"
"$kaws" cluster apply "$cluster" --yes
"$kaws" cluster plan "$cluster"
cat "clusters/$cluster/"outputs.toml
"$kaws" admin install "$cluster" operator --kubeconfig "$work/kubeconfig"
kubectl --kubeconfig "$work/kubeconfig" config view -o jsonpath='{.clusters[0].cluster.server} {.clusters[0].cluster.tls-server-name}{"\n"}'
"$kaws" cluster destroy "$cluster" --yes
{ set +x; } 2>/dev/null
# The cluster's life after apply, simulated: the boot harness applies the
# cluster into a fresh emulator inside a network namespace of its own,
# then runs every master's and node's real user-data at the same moment,
# each instance in its own namespace with its private IP, with real etcd,
# SSM and the AWS CLI, and named simulations of what cannot run here
# (kubeadm, the kubelet, the API server, dnf, systemd, the load balancer).
if [[ -n "$emulated" && $(id -u) -eq 0 ]] && command -v unshare >/dev/null && command -v ip >/dev/null; then
  mkdir "$work/boot"
  set -x
  unshare --net -- "${KAWS_CACHE:-$HOME/.cache/kaws}/bin/kaws-python" "$src/tests/fixtures/boot/harness.py" concurrent \
    --work "$work/boot" --repo "$work/repo" --kaws "$kaws" --secret-key "$work/operator.key" --cluster "$cluster"
  { set +x; } 2>/dev/null
  python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print("simulated boot: etcd members", ", ".join(r["members"])); print("simulated boot: nodes registered", len(r["nodes"]))' "$work/boot/report.json"
  { grep -h "kaws-bootstrap" "$work"/boot/instances/*/disk/var/upper/log/kaws-bootstrap.log | grep -v "waiting" | sort | uniq -c | head -20; } || true
else
  echo "quickstart: the simulated boot needs root (network namespaces) and the emulator; skipped" >&2
  [[ -z "${KAWS_REQUIRE_BOOT:-}" ]] || { echo "quickstart: KAWS_REQUIRE_BOOT is set: failing" >&2; exit 1; }
fi
set -x
"$kaws" audit
git verify-commit HEAD
git log --format='%h %G? %s'
