#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (idempotent), then `cargo test` over the
# workspace. Extra arguments go to `cargo test` (e.g. `-p blyan-chain`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
scripts/link-target.sh
if [ $# -eq 0 ]; then
  set -- --workspace
fi
cargo test --locked "$@"
