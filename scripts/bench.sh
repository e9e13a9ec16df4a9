#!/usr/bin/env bash
# The benchmark (docs/benchmarks.md): builds release binaries, then measures the
# system beside the raw Redis, prepared-SQL and pgbench ceilings of this machine
# in the same run, prints a table and writes target/bench/report.json.
# Knobs: BENCH_POSTS (100000), BENCH_AUTHORS (10000), BENCH_SECS (10),
# BENCH_CONNECTIONS (50), BENCH_ROUNDS (3), BENCH_OUT, and
# BENCH_QUERY_API_WORKERS (query-api's WORKER_THREADS; unset: one per CPU).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/install-deps.sh
cargo build --release --workspace --bins --locked
exec ./target/release/sparkle-bench "$@"
