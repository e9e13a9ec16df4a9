#!/usr/bin/env bash
# The long-running tests, kept out of the regular suite (which runs a short
# version of each): a 5-minute soak of mixed reads and writes, a long
# property-test campaign over every decoder, and a deeper schemathesis run.
#   SOAK_SECS (300), PROPTEST_CASES (20000), SCHEMATHESIS_EXAMPLES (300)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/install-deps.sh
bash scripts/install-tools.sh
cargo build --workspace --bins --locked
export SOAK_SECS=${SOAK_SECS:-300}
export PROPTEST_CASES=${PROPTEST_CASES:-20000}
export SCHEMATHESIS_EXAMPLES=${SCHEMATHESIS_EXAMPLES:-300}
echo "==> property tests (PROPTEST_CASES=$PROPTEST_CASES)"
cargo test --locked -p community-shared -p query-api -p command-api --lib -- fuzz
echo "==> soak (${SOAK_SECS}s) and schemathesis ($SCHEMATHESIS_EXAMPLES examples per operation)"
cargo test --locked -p projector --test faults -- --nocapture --test-threads 1 soak schema_fuzz
