#!/usr/bin/env bash
# Runs the whole system locally, in the foreground; Ctrl-C stops everything.
#
#   Postgres     127.0.0.1:55432  (db "sparkle", user "postgres", trust auth)
#   Redis        127.0.0.1:56379
#   command-api  http://127.0.0.1:8080/api/v1/community   admin :9090
#   query-api    http://127.0.0.1:8081/api/v1/community   admin :9091
#   projector                                               admin :9092
#
# Installs Postgres and Redis from Debian packages when missing, builds the
# binaries, runs the migrations, then starts the three services. Data lives
# in .local/ (or SPARKLE_STATE_DIR) and survives restarts; delete it to start over.
# Environment: PG_PORT, REDIS_PORT, PROFILE=release, AUTH_JWT_SECRET, LOG_FORMAT.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PG_PORT=${PG_PORT:-55432}
REDIS_PORT=${REDIS_PORT:-56379}
PROFILE=${PROFILE:-debug}
export AUTH_JWT_SECRET=${AUTH_JWT_SECRET:-local-dev-secret-change-me}
export LOG_FORMAT=${LOG_FORMAT:-text}
export RUST_LOG=${RUST_LOG:-info}
STATE=${SPARKLE_STATE_DIR:-$ROOT/.local}
log() { printf '[run-local] %s\n' "$*" >&2; }

bash scripts/install-deps.sh

log "building ($PROFILE)"
if [ "$PROFILE" = release ]; then cargo build --release --workspace --bins --locked; else cargo build --workspace --bins --locked; fi
BIN="$ROOT/target/$PROFILE"

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
mkdir -p "$STATE"
# Postgres refuses to run as root: as root, run it as the postgres user with
# its data where that user can reach it.
if [ "$(id -u)" -eq 0 ]; then
  PGDATA=${SPARKLE_PGDATA:-/var/lib/sparkle-community-dev/pg}
  AS_PG=(runuser -u postgres --)
else
  PGDATA="$STATE/pg"
  AS_PG=()
fi
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  log "initialising Postgres in $PGDATA"
  mkdir -p "$PGDATA"
  [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$(dirname "$PGDATA")"
  "${AS_PG[@]}" "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
fi

pids=()
cleanup() {
  log "stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"${AS_PG[@]}" "$PGBIN/postgres" -D "$PGDATA" -p "$PG_PORT" -c listen_addresses=127.0.0.1 \
  -c unix_socket_directories="$PGDATA" >"$STATE/postgres.log" 2>&1 &
pids+=($!)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$STATE" --save 60 1000 \
  --appendonly no >"$STATE/redis.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
  sleep 0.2
done
psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'sparkle'" | grep -q 1 \
  || psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE sparkle" >/dev/null

export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/sparkle"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
log "migrating"
"$BIN/command-api" migrate

HTTP_ADDR=127.0.0.1:8080 ADMIN_ADDR=127.0.0.1:9090 "$BIN/command-api" &
pids+=($!)
HTTP_ADDR=127.0.0.1:8081 ADMIN_ADDR=127.0.0.1:9091 "$BIN/query-api" &
pids+=($!)
ADMIN_ADDR=127.0.0.1:9092 "$BIN/projector" &
pids+=($!)

cat >&2 <<MSG

Sparkle Community is running (Ctrl-C stops it):
  commands  http://127.0.0.1:8080/api/v1/community   (OpenAPI: /api/v1/community/openapi.json)
  queries   http://127.0.0.1:8081/api/v1/community   (OpenAPI: /api/v1/community/openapi.json)
  admin     :9090 command-api, :9091 query-api, :9092 projector (/livez /readyz /metrics)

Try:
  TOKEN=\$(scripts/dev-token.sh)
  curl -s -XPOST localhost:8080/api/v1/community/posts -H "authorization: Bearer \$TOKEN" \\
       -H 'content-type: application/json' -d '{"content":"hello"}'
  curl -s localhost:8081/api/v1/community/feed
MSG
wait -n "${pids[@]}"
log "a process exited; stopping the rest"
