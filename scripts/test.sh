#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (Debian packages,
# the Python and Node clients the tests drive), checks format and lints, runs every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '\n== %s\n' "$*"; }

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if [ $apt_updated -eq 0 ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

log "toolchain"
command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 1; }
cargo --version

log "test clients"
if ! command -v python3 >/dev/null; then apt_install python3 python3-pip; fi
if ! python3 -c 'import requests, openai, anthropic, openapi_spec_validator, schemathesis' 2>/dev/null; then
  # The seed's client and the SDKs; the OpenAPI validator and the contract fuzzer.
  python3 -m pip install --quiet requests openai anthropic openapi-spec-validator schemathesis
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
if [ ! -d tests/clients/node_modules/axios ] || [ ! -d tests/clients/node_modules/openai ] \
  || [ ! -d tests/clients/node_modules/@anthropic-ai/sdk ]; then
  (cd tests/clients && npm ci --no-audit --no-fund --silent)
fi
# The coding agents the protocol tests run offline (Claude Code, Codex CLI), pinned.
if [ ! -x tests/agents/node_modules/.bin/claude ] || [ ! -x tests/agents/node_modules/.bin/codex ]; then
  (cd tests/agents && npm ci --no-audit --no-fund --silent)
fi

log "browser (Chromium, ChromeDriver, CJK fonts)"
apt_install chromium chromium-driver fonts-noto-cjk
command -v chromedriver >/dev/null || { echo "chromedriver missing after install"; exit 1; }
chromium --version || true

log "database servers (PostgreSQL, MariaDB)"
# shellcheck source=scripts/test-services.sh
. "$(dirname "${BASH_SOURCE[0]}")/test-services.sh"
start_postgres
start_mariadb

log "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings

log "tests"
cargo test --quiet "$@"

log "the quota, gateway and monitor suites again, on PostgreSQL"
# Everything in PostgreSQL (a fresh database per test); the two tests that break the SQLite
# file on purpose stay SQLite-only.
QP_TEST_STORE=postgres cargo test --quiet --test api -- \
  quota_api:: gateway:: concurrency:: idempotency:: admin_api:: lifecycle:: monitor:: errors:: billing:: \
  channels:: request_log::concurrent_quota_adds users:: \
  --skip errors::store_unreachable_is_503_and_charges_nothing \
  --skip users::owners_of_existing_keys_become_users_with_their_ids_and_names \
  --skip monitor::monitor_agrees_on_every_backend_and_with_the_data
