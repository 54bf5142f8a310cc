#!/usr/bin/env bash
# The main job so far, end to end, with a throwaway OpenPGP key: a kaws
# repository, a cluster's PKI sealed to the operator, an administrator's
# credentials and kubeconfig, the rendered user-data, and the audit of the
# history. (Provisioning on a local AWS emulator joins with `cluster apply`.)
# Nothing outside a temporary directory is touched; the gpg-agent it starts
# is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh quickstart

fpr=$(new_key operator 1d)
gpg_batch --export-secret-keys "$fpr" > "$work/operator.key"
chmod 600 "$work/operator.key"
export KAWS_SECRET_KEY="$work/operator.key"

set -x
"$kaws" init "$work/repo" --admin operator
cd "$work/repo"
"$kaws" key list
"$kaws" cluster init demo --domain example.com --region eu-west-1 --admin-cidr 203.0.113.0/24 --masters 3
"$kaws" cluster certs demo --expiring-within 30
"$kaws" admin create demo operator
"$kaws" admin sign demo operator --days 7
"$kaws" admin install demo operator --kubeconfig "$work/kubeconfig"
kubectl --kubeconfig "$work/kubeconfig" config get-contexts
"$kaws" cluster render demo --role master --index 0 --out "$work/master-0.user-data"
"$kaws" cluster render demo --role node | head -20
"$kaws" audit
git verify-commit HEAD
git log --format='%h %G? %s'
