#!/usr/bin/env bash
# Start the local servers the integration tests use, on loopback only: PostgreSQL (and Redis when asked),
# and provide Debian's chromium for the browser tests (`browser`: a package, no server).
# Installs them from Debian's packages when they are missing and this runs as root. Idempotent.
set -euo pipefail

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # port name
  for _ in $(seq 1 30); do listening "$1" && return 0; sleep 1; done
  echo "services: $2 is not reachable on 127.0.0.1:$1" >&2
  return 1
}

apt_install() {  # package...; refreshes the package lists once when they are stale or absent
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

start_postgres() {
  listening 5432 && return 0
  if ! command -v pg_ctlcluster >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "services: PostgreSQL missing; install the 'postgresql' package" >&2; return 1; }
    apt_install postgresql
    version=$(ls /etc/postgresql | sort -V | tail -1)
    # Tests connect as postgres from loopback without a password, like the CI machine's server.
    sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/' "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  version=$(ls /etc/postgresql | sort -V | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for 5432 PostgreSQL
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null
}

start_redis() {
  listening 6379 && return 0
  if ! command -v redis-server >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "services: Redis missing; install the 'redis-server' package" >&2; return 1; }
    apt_install redis-server
  fi
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_for 6379 Redis
}

start_browser() {
  [ -x /usr/bin/chromium ] && return 0
  [ "$(id -u)" = 0 ] || { echo "services: chromium missing; install Debian's 'chromium' package" >&2; return 1; }
  apt_install chromium
}

for service in "${@:-postgres}"; do
  "start_$service"
done
