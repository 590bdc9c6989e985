#!/usr/bin/env bash
# Makes ./target point at the shared build cache ($CARGO_TARGET_DIR), so that
# `target/release/blyan-node` works from the clone. Leaves a real ./target directory alone.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
mkdir -p "$CARGO_TARGET_DIR"
if [ -L target ] || [ ! -e target ]; then
  ln -sfn "$CARGO_TARGET_DIR" target
fi
