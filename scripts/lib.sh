# Shared by scripts/quickstart.sh and scripts/bench.sh (sourced, not run).
# Builds kaws (release, or the dev profile when the caller set
# kaws_profile=dev) and makes a throwaway gpg home under $work,
# removed (and its gpg-agent stopped) when the calling script exits.

src="$PWD"
scripts/setup.sh
# KAWS_BIN: an already built kaws to use instead of building a release one.
if [[ -n "${KAWS_BIN:-}" ]]; then
  kaws="$KAWS_BIN"
else
  profile="${kaws_profile:-release}"
  cargo build --locked --profile "$profile" --quiet
  target_dir="${CARGO_TARGET_DIR:-target}"
  [[ $target_dir == /* ]] || target_dir="$PWD/$target_dir"
  out_dir=$profile
  [[ $profile != dev ]] || out_dir=debug
  kaws="$target_dir/$out_dir/kaws"
fi

work=$(mktemp -d "/tmp/kaws-${1:-run}.XXXXXX")
export GNUPGHOME="$work/gnupg"
mkdir -m 700 "$GNUPGHOME"
cleanup() { gpgconf --kill all 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

gpg_batch() { gpg --batch --quiet --pinentry-mode loopback --passphrase '' "$@"; }

# new_key NAME EXPIRY: an ed25519 signing key with a cv25519 encryption
# subkey; exports NAME.asc (public) into $work and prints the fingerprint.
new_key() {
  gpg_batch --quick-gen-key "$1 <$1@example.org>" ed25519 sign "$2"
  local fpr
  fpr=$(gpg --with-colons --list-keys "$1@example.org" | awk -F: '/^fpr/ {print $10; exit}')
  gpg_batch --quick-add-key "$fpr" cv25519 encr "$2"
  gpg_batch --armor --export "$fpr" > "$work/$1.asc"
  echo "$fpr"
}

# start_emulator [LATENCY_MS]: moto on loopback behind the recording proxy
# (tests/fixtures/awsproxy.py); exports AWS_ENDPOINT_URL and test
# credentials, and sets $calls to the proxy's log. Stopped on exit.
# KAWS_STRICT=all (or a list, see tests/fixtures/strict.py) makes the proxy
# play what real AWS does and moto does not.
start_emulator() {
  local cache="${KAWS_CACHE:-$HOME/.cache/kaws}" moto_port proxy_port
  moto_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  proxy_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  calls="$work/calls-$proxy_port.jsonl"
  MOTO_ENABLE_AMI_VALIDATION=true MOTO_AMIS_PATH="$src/tests/fixtures/amis.json" \
    "$cache/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
  pids+=($!)
  "$cache/bin/kaws-python" "$src/tests/fixtures/awsproxy.py" --port "$proxy_port" \
    --upstream "http://127.0.0.1:$moto_port" --log "$calls" --latency-ms "${1:-0}" \
    --strict "${KAWS_STRICT:-}" --window-ms "${KAWS_STRICT_WINDOW_MS:-1000}" &
  pids+=($!)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$moto_port") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null && break
    sleep 0.1
  done
  export AWS_ENDPOINT_URL="http://127.0.0.1:$proxy_port" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
  # The emulator itself, past the proxy: what a benchmark does beside kaws is not counted.
  export KAWS_BENCH_MOTO="http://127.0.0.1:$moto_port"
  export AWS_REGION=eu-west-1 KAWS_AWS_POLL_MS=200
  # Real AWS settles within about 2 minutes; the proxy's windows are short.
  [[ -z "${KAWS_STRICT:-}" ]] || export KAWS_AWS_SETTLE_MS="${KAWS_AWS_SETTLE_MS:-5000}"
  unset AWS_PROFILE
}
stop_emulators() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; pids=(); }
pids=()
trap 'stop_emulators; cleanup' EXIT
