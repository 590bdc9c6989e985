#!/usr/bin/env bash
# Installs what is missing (idempotent), builds the release binaries and starts the node on its
# embedded defaults (RocksDB store and embedded ledger under ./data, HTTP on 127.0.0.1:8700).
# Extra arguments go to `blyan-node` (e.g. `--listen 0.0.0.0:8700`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --run
source scripts/env.sh
scripts/link-target.sh
cargo build --locked --release --bins
exec target/release/blyan-node "$@"
