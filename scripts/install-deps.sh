#!/usr/bin/env bash
# Installs the system packages the project runs and tests against, when missing:
# PostgreSQL (server + client tools, pgbench), Redis (redis-benchmark) and wrk,
# from Debian/Ubuntu packages.
# Idempotent; uses sudo when not root. Nothing is started here.
set -euo pipefail

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql postgresql-contrib)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
# The benchmark's HTTP load generator (redis-benchmark and pgbench come with the servers).
command -v wrk >/dev/null 2>&1 || need+=(wrk)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root or sudo to install ${need[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "install-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian packages start system-wide servers; the project runs its own
# instances on their own ports, so leave the system ones alone.
