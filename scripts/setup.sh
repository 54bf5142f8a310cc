#!/usr/bin/env bash
# Installs, idempotently, everything kaws' build and tests need on a fresh
# Debian 12 / Ubuntu machine. Safe to run again: it installs only what is
# missing.
set -euo pipefail

packages=(
  build-essential pkg-config        # C toolchain for -sys crates
  libclang1-14 libclang-common-14-dev # bindgen, for sequoia's OpenSSL backend
  libssl-dev                        # sequoia's crypto backend (supports OCB)
  capnproto                         # sequoia-gpg-agent's IPC schema compiler
  git gnupg gpg-agent openssl       # the independent peers the tests use
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
