#!/usr/bin/env bash
# End to end on one machine: build a tiny Hugging Face Mixtral checkpoint (random weights, from
# code: no download), publish it to a fresh node data dir with `blyan-miner upload` (one signed
# block per expert, INT8 experts if you pass --int8), verify the chain with `blyan-validator`,
# re-upload to show the differential skip, then run the model from the chain with
# `blyan-node generate`, and export it back to a checkpoint.
#
# Usage: examples/publish-and-generate.sh [WORK_DIR] [--int8]
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d)}"
quantize=()
[ "${2:-}" = "--int8" ] && quantize=(--quantize int8)
scripts/setup.sh
source scripts/env.sh
scripts/link-target.sh
cargo build --locked --release --bins
bin=target/release

python scripts/fixtures/make_tiny_mixtral.py --out "$work/fixture" >/dev/null
$bin/blyan-miner keygen --out "$work/miner.key"
$bin/blyan-miner upload --checkpoint "$work/fixture/checkpoint" --key "$work/miner.key" \
  "${quantize[@]}" --data-dir "$work/data"
echo "== re-upload: unchanged experts are skipped"
$bin/blyan-miner upload --checkpoint "$work/fixture/checkpoint" --key "$work/miner.key" \
  "${quantize[@]}" --data-dir "$work/data"
$bin/blyan-validator verify --store "$work/data/chain"
echo "== generate (greedy)"
$bin/blyan-node --data-dir "$work/data" generate --prompt "The experts of the chain" \
  --max-tokens 24 --temperature 0
$bin/blyan-miner export --data-dir "$work/data" --out "$work/exported"
echo "== exported checkpoint: $work/exported"
ls -l "$work/exported"
