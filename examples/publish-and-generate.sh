#!/usr/bin/env bash
# End to end on one machine: build a tiny Hugging Face Mixtral checkpoint (random weights, from
# code: no download), publish it to a fresh node data dir with `blyan-miner upload` (one signed
# block per expert, INT8 experts if you pass --int8), verify the chain with `blyan-validator`,
# re-upload to show the differential skip, then run the model from the chain with
# `blyan-node generate`, and export it back to a checkpoint. Last, the same checkpoint goes to a
# running node over HTTP (`blyan-miner upload --node`), which serves it at once.
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
# A key file is never overwritten: a re-run in the same WORK_DIR keeps its key.
[ -f "$work/miner.key" ] || $bin/blyan-miner keygen --out "$work/miner.key"
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

echo "== upload to a running node (it starts on the untrained seed model)"
port=8791
$bin/blyan-node --data-dir "$work/node" --listen "127.0.0.1:$port" 2>"$work/node.log" &
node_pid=$!
trap 'kill $node_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$port/model"; echo
$bin/blyan-miner upload --checkpoint "$work/fixture/checkpoint" --key "$work/miner.key" \
  "${quantize[@]}" --node "http://127.0.0.1:$port"
curl -fsS "http://127.0.0.1:$port/model"; echo
curl -fsS "http://127.0.0.1:$port/chat" -H 'content-type: application/json' \
  -d '{"messages": [{"role": "user", "content": "The experts of the chain"}], "max_tokens": 24, "temperature": 0}'
echo
