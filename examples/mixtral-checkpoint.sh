#!/usr/bin/env bash
# The walk-through of examples/mixtral-checkpoint.md, on the tiny fixture: a Hugging Face
# Mixtral-layout checkpoint (sharded bf16 safetensors with model.safetensors.index.json, as
# `save_pretrained` writes Mixtral-8x7B), an encrypted keystore, `upload` with a description,
# `export` with its record of expert versions, a partial `upload --experts`, and the refusal of
# a stale copy. Prints the disk use and wall time of each step, the figures the .md scales.
#
# Usage: examples/mixtral-checkpoint.sh [WORK_DIR]
#   BIN=DIR   where blyan-miner is (default: target/release, built here)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
if [ -z "${BIN:-}" ]; then
  scripts/setup.sh
  source scripts/env.sh
  scripts/link-target.sh
  cargo build --locked --release --bins
  BIN=target/release
fi
python="${BLYAN_VENV:-.venv}/bin/python"
miner="$BIN/blyan-miner"

# Wall time of a command, in seconds, on stderr.
timed() {
  local start end
  start=$(date +%s%N)
  "$@"
  end=$(date +%s%N)
  echo "   took $(((end - start) / 1000000)) ms" >&2
}

echo "== 1. a Mixtral-layout checkpoint: the tiny fixture, re-saved as sharded bf16"
HF_HUB_OFFLINE=1 "$python" scripts/fixtures/make_tiny_mixtral.py --out "$work/fixture" >/dev/null
HF_HUB_OFFLINE=1 "$python" - "$work/fixture/checkpoint" "$work/mixtral" <<'PY'
import shutil, sys, torch
from transformers import MixtralForCausalLM
source, out = sys.argv[1], sys.argv[2]
model = MixtralForCausalLM.from_pretrained(source, torch_dtype=torch.bfloat16)
# Small shards so the tiny model has the layout of a big one: model-0000N-of-0000M.safetensors
# and model.safetensors.index.json mapping every tensor to its shard.
model.save_pretrained(out, max_shard_size="500KB", safe_serialization=True)
for name in ("tokenizer.json", "generation_config.json"):
    shutil.copy(f"{source}/{name}", f"{out}/{name}")
PY
ls -l "$work/mixtral"
du -sb "$work/mixtral"

echo "== 2. an encrypted keystore (password from the environment, never the command line)"
export BLYAN_KEYSTORE_PASSWORD="${BLYAN_KEYSTORE_PASSWORD:-walk-through password}"
[ -f "$work/miner.json" ] || "$miner" keygen --keystore --out "$work/miner.json"

echo "== 3. upload into a fresh data directory"
timed "$miner" upload --checkpoint "$work/mixtral" --key "$work/miner.json" \
  --description "tiny Mixtral-layout fixture (bf16)" --data-dir "$work/data"
du -sb "$work/data/chain"
echo "== 3b. the same upload again: every block is already current"
timed "$miner" upload --checkpoint "$work/mixtral" --key "$work/miner.json" \
  --description "tiny Mixtral-layout fixture (bf16)" --data-dir "$work/data"

echo "== 4. export, with the record of the expert versions"
rm -rf "$work/export"
timed "$miner" export --data-dir "$work/data" --out "$work/export"
du -sb "$work/export"
head -c 400 "$work/export/fetched-from.json"; echo

echo "== 5. someone improves two experts: here, the same checkpoint quantized, those two only"
timed "$miner" upload --checkpoint "$work/mixtral" --key "$work/miner.json" --quantize int8 \
  --experts layer0.expert1,layer3.expert7 --data-dir "$work/data"

echo "== 6. the export is now stale for those two: refused, nothing written"
if "$miner" upload --checkpoint "$work/export" --key "$work/miner.json" --data-dir "$work/data"; then
  echo "a stale upload was accepted" >&2
  exit 1
fi
echo "== 6b. publishing only the experts it still descends from is fine"
timed "$miner" upload --checkpoint "$work/export" --key "$work/miner.json" \
  --experts 'layer1.*' --data-dir "$work/data"
