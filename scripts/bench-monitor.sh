#!/usr/bin/env bash
# Runs the monitor benchmark: starts MariaDB (as the test command does) and times the
# monitor over a generated New API table. BENCH_ROWS (10000000) and BENCH_RUNS (5) adjust it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
apt_install() {
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
# A production-like buffer pool: the default 128 MB would measure the disk, not the queries.
export MARIADB_EXTRA_ARGS="${MARIADB_EXTRA_ARGS:---innodb-buffer-pool-size=4G}"
. scripts/test-services.sh
start_mariadb
cargo bench --bench monitor_query
