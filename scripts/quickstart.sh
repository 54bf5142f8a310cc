#!/usr/bin/env bash
# The main job, end to end, with a throwaway OpenPGP key: create a kaws
# repository and list its administrators. Nothing outside a temporary
# directory is touched; the gpg-agent it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --locked --release --quiet
kaws="$PWD/${CARGO_TARGET_DIR:-target}/release/kaws"

work=$(mktemp -d /tmp/kaws-quickstart.XXXXXX)
export GNUPGHOME="$work/gnupg"
mkdir -m 700 "$GNUPGHOME"
cleanup() { gpgconf --kill all 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

gpg_batch() { gpg --batch --quiet --pinentry-mode loopback --passphrase '' "$@"; }
gpg_batch --quick-gen-key 'Quickstart Operator <operator@example.org>' ed25519 sign 1d
fpr=$(gpg --with-colons --list-keys operator@example.org | awk -F: '/^fpr/ {print $10; exit}')
gpg_batch --quick-add-key "$fpr" cv25519 encr 1d
gpg_batch --export-secret-keys "$fpr" > "$work/operator.key"
chmod 600 "$work/operator.key"
export KAWS_SECRET_KEY="$work/operator.key"

set -x
"$kaws" init "$work/repo" --admin operator
"$kaws" --repo "$work/repo" key list
git -C "$work/repo" verify-commit HEAD
git -C "$work/repo" log --format='%h %G? %s'
