#!/usr/bin/env bash
# The main job, end to end, with a throwaway OpenPGP key: create a kaws
# repository and list its administrators. Nothing outside a temporary
# directory is touched; the gpg-agent it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh quickstart

fpr=$(new_key operator 1d)
gpg_batch --export-secret-keys "$fpr" > "$work/operator.key"
chmod 600 "$work/operator.key"
export KAWS_SECRET_KEY="$work/operator.key"

set -x
"$kaws" init "$work/repo" --admin operator
"$kaws" --repo "$work/repo" key list
git -C "$work/repo" verify-commit HEAD
git -C "$work/repo" log --format='%h %G? %s'
