# Shared by scripts/quickstart.sh and scripts/bench.sh (sourced, not run).
# Builds kaws in release mode and makes a throwaway gpg home under $work,
# removed (and its gpg-agent stopped) when the calling script exits.

scripts/setup.sh
cargo build --locked --release --quiet
kaws="$PWD/${CARGO_TARGET_DIR:-target}/release/kaws"

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
