#!/usr/bin/env bash
# Writes the shipped model's evaluation pool, models/default/eval/held-out.txt: the first
# 256 KiB of the default corpus's held-out split (50 per mille, the split the default model was
# trained with, so the model never saw this text). Needs the corpus of scripts/corpus/fetch.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
corpus="${BLYAN_CORPUS_DIR:-${BLYAN_CACHE:-$HOME/.cache/blyan}/corpus/text}"
mkdir -p models/default/eval
cargo run --quiet --profile test -p blyan-moe --example eval_pool -- \
  "$corpus" 50 262144 models/default/eval/held-out.txt
