#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs unit and
# integration tests (real gpg, git and openssl as peers).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="${KAWS_CACHE:-$HOME/.cache/kaws}/bin:$PATH"
cargo test --locked "$@"
