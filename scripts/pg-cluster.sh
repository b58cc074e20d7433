#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL cluster of its own, then drops
# the cluster:
#
#   scripts/pg-cluster.sh [-o name=value]... command [args...]
#
# The cluster lives in a fresh temporary directory and listens only on a Unix
# socket there, so any number of these run at once on one machine (the tests
# of two checkouts, a benchmark beside the tests) without sharing a port, a
# cluster name or /etc/postgresql. As root, the server runs as the postgres
# user (PostgreSQL refuses root). -o sets a server setting, as postgres -c
# does (fsync=off for the tests, fsync=on for benchmarks).
#
# The command gets PGHOST, PGPORT, PGUSER and PGDATABASE, which libpq and the
# test suites read, and SC_TEST_PG_CTL, a pg_ctl command line for tests that
# crash and restart the server. It exits
# with the command's status; a cluster that cannot start exits 2 before the
# command runs.
set -euo pipefail

settings=()
while getopts "o:" opt; do
  case $opt in
    o) settings+=(-c "$OPTARG") ;;
    *) echo "usage: $0 [-o name=value]... command [args...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
(($#)) || { echo "usage: $0 [-o name=value]... command [args...]" >&2; exit 2; }

bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -1)
if [[ -z $bin || ! -x $bin/initdb ]]; then
  echo "pg-cluster: no PostgreSQL server programs under /usr/lib/postgresql" \
    "(scripts/install-deps.sh installs them)" >&2
  exit 2
fi
dir=$(mktemp -d /tmp/sc-pg.XXXXXX)
as_owner=()
if [[ $(id -u) -eq 0 ]]; then
  chown postgres: "$dir"
  as_owner=(runuser -u postgres --)
fi

# shellcheck disable=SC2317 # called by the EXIT trap
stop() {
  "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop \
    >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT

if ! "${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust \
  -E UTF8 --no-sync >"$dir/initdb.log" 2>&1; then
  cat "$dir/initdb.log" >&2
  exit 2
fi
# No TCP: the socket's directory is this cluster's own, so the port number
# only names the socket file. The settings go into postgresql.conf, so a
# plain "pg_ctl start" (a test restarting the server) keeps them.
{
  echo "listen_addresses = ''"
  echo "unix_socket_directories = '$dir'"
  echo "port = 5432"
  for ((i = 1; i < ${#settings[@]}; i += 2)); do
    echo "${settings[i]%%=*} = '${settings[i]#*=}'"
  done
} >>"$dir/data/postgresql.conf"
pg_ctl=("${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w
  -t 60)
if ! "${pg_ctl[@]}" start >/dev/null; then
  cat "$dir/server.log" >&2
  exit 2
fi

export PGHOST=$dir PGPORT=5432 PGUSER=postgres PGDATABASE=postgres
# A pg_ctl command line for this cluster ("$SC_TEST_PG_CTL stop -m
# immediate", then "$SC_TEST_PG_CTL start"): with it, check_pg also
# crashes and restarts the server.
SC_TEST_PG_CTL=$(printf '%q ' "${pg_ctl[@]}")
export SC_TEST_PG_CTL
set +e
"$@"
status=$?
set -e
exit $status
