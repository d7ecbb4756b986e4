#!/usr/bin/env bash
# A private PostgreSQL cluster for the tests (tests/support/postgres.rs reads GITAMP_TEST_POSTGRES).
#
#   scripts/postgres-env.sh install   Debian's postgresql package if missing (its own cluster
#                                     is not started: service starts are denied meanwhile)
#   scripts/postgres-env.sh start     initdb + pg_ctl start under target/, prints the export line
#   scripts/postgres-env.sh stop      pg_ctl stop (fast)
#
# The cluster runs as the `postgres` user (initdb refuses root), with its own data directory,
# port and unix-socket directory under $CARGO_TARGET_DIR (default target/; /tmp/gitamp-pg-test
# when the `postgres` user cannot reach that, e.g. a clone under /root), listening on
# loopback only, trust authentication (loopback, throwaway data). Usage from a shell:
#   scripts/postgres-env.sh install && eval "$(scripts/postgres-env.sh start)"
#   ... cargo test ...; scripts/postgres-env.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-$PWD/target}"
# GITAMP_TEST_POSTGRES_ROOT (exported by `start`) keeps later calls on the same cluster.
root="${GITAMP_TEST_POSTGRES_ROOT:-$target/pg-test}"
# The `postgres` user must reach it: a clone under /root (mode 0700) cannot host it.
if [ "$(id -u)" = 0 ] && [ -z "${GITAMP_TEST_POSTGRES_ROOT:-}" ] &&
  ! runuser -u postgres -- test -x "$target" 2>/dev/null; then
  root="/tmp/gitamp-pg-test"
fi
data="$root/data"
sockets="$root/run"
# Below the ephemeral range (32768-60999 on Linux): a port in it can be held by an outgoing
# connection (even one in TIME-WAIT), and the cluster then cannot start or restart.
port="${GITAMP_TEST_POSTGRES_PORT:-15432}"

bindir() {
  local d
  d="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  if [ -z "$d" ] || [ ! -x "$d/initdb" ]; then
    echo "postgres-env: no PostgreSQL server under /usr/lib/postgresql (run: $0 install)" >&2
    exit 1
  fi
  echo "$d"
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "${1:-}" in
  install)
    if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
      exit 0
    fi
    echo "installing Debian package: postgresql (its own cluster is not started)"
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod +x "$policy"
    fi
    apt-get update -qq
    # create_main_cluster=false: the package makes no cluster of its own.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/gitamp-tests.conf
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
    ;;
  start)
    bin="$(bindir)"
    mkdir -p "$root"
    if [ "$(id -u)" = 0 ]; then
      chown postgres:postgres "$root"
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
      as_postgres "$bin/initdb" -D "$data" -U postgres -A trust --no-sync -E UTF8 >"$root/initdb.log" 2>&1 ||
        { cat "$root/initdb.log" >&2; exit 1; }
    fi
    as_postgres mkdir -p "$sockets"
    # Already running (a previous run that was not stopped): restart it clean.
    as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1 &&
      as_postgres "$bin/pg_ctl" -D "$data" stop -m fast >/dev/null
    # fsync off: a test cluster, thrown away; max_connections for three replicas plus tests.
    as_postgres "$bin/pg_ctl" -D "$data" -l "$root/postgres.log" -w -t 60 start -o \
      "-p $port -k $sockets -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >/dev/null ||
      { tail -20 "$root/postgres.log" >&2; exit 1; }
    echo "export GITAMP_TEST_POSTGRES=postgres://postgres@127.0.0.1:$port/postgres"
    echo "export GITAMP_TEST_POSTGRES_BIN=$bin"
    echo "export GITAMP_TEST_POSTGRES_DATA=$data"
    echo "export GITAMP_TEST_POSTGRES_ROOT=$root"
    ;;
  stop)
    if [ -f "$data/postmaster.pid" ]; then
      as_postgres "$(bindir)/pg_ctl" -D "$data" stop -m fast >/dev/null || true
    fi
    ;;
  *)
    echo "usage: $0 install|start|stop" >&2
    exit 2
    ;;
esac
