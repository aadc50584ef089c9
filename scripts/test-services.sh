# Sourced by scripts/test.sh: installs (from Debian packages, when absent) and starts
# PostgreSQL and MariaDB on 127.0.0.1, in a temporary directory, for the monitor tests.
# Exports TEST_PG_URL and TEST_MYSQL_URL (superuser URLs; the tests create their own
# databases and read-only users). Everything is stopped and removed on exit.

services_dir="$(mktemp -d -t quota-proxy-services.XXXXXX)"
chmod 755 "$services_dir"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

stop_services() {
  if [ -n "${PG_CTL:-}" ] && [ -d "$services_dir/pg" ]; then
    runuser -u postgres -- "$PG_CTL" -D "$services_dir/pg" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ -f "$services_dir/mysql/mariadb.pid" ]; then
    kill "$(cat "$services_dir/mysql/mariadb.pid")" 2>/dev/null || true
    sleep 1
  fi
  rm -rf "$services_dir"
}
trap stop_services EXIT

start_postgres() {
  local bindir
  bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    apt_install postgresql
    bindir="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  fi
  PG_CTL="$bindir/pg_ctl"
  local port; port="$(free_port)"
  # Tests trade durability for speed; PG_DURABLE=1 (benchmarks) keeps PostgreSQL's defaults:
  # fsync on, synchronous_commit on.
  local durability="-c fsync=off"
  if [ -n "${PG_DURABLE:-}" ]; then durability="-c fsync=on -c synchronous_commit=on"; fi
  mkdir -p "$services_dir/pg"
  chown postgres "$services_dir/pg"
  runuser -u postgres -- "$bindir/initdb" -D "$services_dir/pg" -A trust -U postgres >/dev/null
  runuser -u postgres -- "$PG_CTL" -D "$services_dir/pg" -l "$services_dir/pg/log" -w \
    -o "-p $port -k $services_dir/pg -c listen_addresses=127.0.0.1 -c max_connections=200 $durability" start >/dev/null
  export TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "PostgreSQL on 127.0.0.1:$port"
}

start_mariadb() {
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    apt_install mariadb-server
  fi
  local daemon; daemon="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
  local port; port="$(free_port)"
  local d="$services_dir/mysql"
  mkdir -p "$d/data"
  mariadb-install-db --no-defaults --datadir="$d/data" --user=root \
    --auth-root-authentication-method=normal >/dev/null 2>&1
  "$daemon" --no-defaults --datadir="$d/data" --user=root --port="$port" \
    --bind-address=127.0.0.1 --socket="$d/mysql.sock" --pid-file="$d/mariadb.pid" \
    --skip-log-bin --skip-name-resolve --innodb-flush-log-at-trx-commit=0 \
    ${MARIADB_EXTRA_ARGS:-} >"$d/log" 2>&1 &
  for _ in $(seq 1 100); do
    if mariadb-admin --no-defaults -h 127.0.0.1 -P "$port" -u root ping >/dev/null 2>&1; then
      export TEST_MYSQL_URL="mysql://root@127.0.0.1:$port/"
      echo "MariaDB on 127.0.0.1:$port"
      return 0
    fi
    sleep 0.2
  done
  echo "MariaDB did not start:"; tail -20 "$d/log"; return 1
}
