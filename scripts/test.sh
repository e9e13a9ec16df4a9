#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
#   1. system packages (Postgres, Redis) when missing   scripts/install-deps.sh
#   2. cargo fmt --check and clippy -D warnings
#   3. every Rust test: unit tests and the system tests, which start real
#      Postgres and Redis servers and the real binaries (services/testkit)
#   4. the offline Kubernetes checks                     scripts/check-k8s.sh
# The long runs (a 5-minute soak, longer fuzzing) are scripts/long-tests.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
bash scripts/install-deps.sh

step "pinned tools (helm, kubernetes-validate, checkov, schemathesis) into .tools/"
bash scripts/install-tools.sh

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
# The system tests run the binaries, so build them all first.
cargo build --workspace --bins --locked

step "rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  # Each system test starts its own Postgres and Redis; 4 at a time suits 2 cores.
  cargo nextest run --workspace --locked --test-threads "${TEST_THREADS:-4}" --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast -- --test-threads "${TEST_THREADS:-4}"
fi

step "benchmark smoke (a tiny run that keeps the benchmark working; not a measurement)"
BENCH_OUT=target/bench/smoke-report.json ./target/debug/sparkle-bench --smoke

step "kubernetes checks"
bash scripts/check-k8s.sh
