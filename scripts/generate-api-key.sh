#!/usr/bin/env bash
# Creates API keys with the seed guide's flags, by calling the quota-proxy CLI on the same
# database the server uses (a running server picks the new keys up at once).
#
#   ./scripts/generate-api-key.sh --prefix roc --quota 1000 --expires 2026-12-31
#   ./scripts/generate-api-key.sh --prefix roc --quota 1000 --count 5 --output api-keys.json
#
# Extra flags (--name, --data-dir, --db, --config) are passed through.
# QUOTA_PROXY_BIN picks the binary; otherwise target/release/quota-proxy, else cargo run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

for a in "$@"; do
  case "$a" in -h|--help) usage; exit 0 ;; esac
done

if [[ -n "${QUOTA_PROXY_BIN:-}" ]]; then
  exec "$QUOTA_PROXY_BIN" keys create "$@"
elif [[ -x "$here/target/release/quota-proxy" ]]; then
  exec "$here/target/release/quota-proxy" keys create "$@"
else
  exec cargo run --manifest-path "$here/Cargo.toml" --release --quiet -- keys create "$@"
fi
