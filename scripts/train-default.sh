#!/usr/bin/env bash
# Reproduces the shipped default model (models/default): fetches the pinned Debian documentation
# corpus, trains models/default/config.json from a seeded random initialisation with the settings
# recorded in models/default/provenance.json, and writes the pinned blocks with `blyan-miner ship`.
# Resumes an interrupted run from its saved state. Rebuild the node afterwards: blyan-chain builds
# the new block hashes in (models/default/blocks.txt is a link to the crate's
# genesis/pinned-blocks.txt, so `ship` writes that file).
#
# Environment: BLYAN_TRAIN_STEPS (default 4000), BLYAN_TRAIN_THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
scripts/link-target.sh

STEPS="${BLYAN_TRAIN_STEPS:-4000}"
THREADS="${BLYAN_TRAIN_THREADS:-2}"
SEED=1
corpus="$(scripts/corpus/fetch.sh)"
cargo build --locked --release -p blyan-miner
miner=target/release/blyan-miner
out="$BLYAN_CACHE/train-default"
log="$out.jsonl"
args=(--corpus "$corpus" --init models/default/config.json --steps "$STEPS" --seed "$SEED"
  --threads "$THREADS" --positions 128 --batch-size 16 --eval-every 250 --eval-tokens 16384
  --out "$out" --json)
if [ -f "$out/train-state/trainer.json" ]; then
  args+=(--resume "$out/train-state")
fi
started=$(date +%s)
"$miner" train "${args[@]}" | tee -a "$log"
seconds=$(( $(date +%s) - started ))
description="Blyan default model: 4 layers x 8 experts (top-2), byte-level, trained ${STEPS} steps on Debian documentation (see models/default/PROVENANCE.md)"
"$miner" ship --checkpoint "$out" --out models/default --description "$description"
python3 scripts/corpus/provenance.py --log "$log" --steps "$STEPS" --seed "$SEED" \
  --threads "$THREADS" --wall-seconds "$seconds" --description "$description" \
  > models/default/provenance.json
echo "train-default: wrote models/default (rebuild the node to pin the new blocks)"
