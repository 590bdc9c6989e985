#!/usr/bin/env bash
# Three nodes of one network on this machine, ports apart: A starts alone, B and C join through
# A (`--peer`), find each other through A (Kademlia) and sync A's chain. The three share one
# config whose only Proof-of-Learning validator is A's key, so a certificate A writes is valid
# on B and C too (a network's nodes must agree on `pol.validators`). The script waits until each
# node sees the other two, prints each node's peers and chain tips, and stops the nodes (or
# keeps them running with --keep; stop them with Ctrl-C).
#
# Usage: examples/three-nodes.sh [WORK_DIR] [--keep]
# On three machines: the same, each node on its own machine with `--p2p-listen
# /ip4/0.0.0.0/udp/4801/quic-v1 --p2p-listen /ip4/0.0.0.0/tcp/4801` and B and C given
# `--peer /ip4/<A's IP>/udp/4801/quic-v1/p2p/<A's peer id>` (docs/network.md).
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d)}"
keep="${2:-}"
if [ -z "${BLYAN_NODE_BIN:-}" ]; then
  scripts/setup.sh
  source scripts/env.sh
  scripts/link-target.sh
  cargo build --locked --release --bins
  bin=target/release
else
  bin="$(dirname "$BLYAN_NODE_BIN")"
fi
mkdir -p "$work/A" "$work/B" "$work/C"

# A's key, made before A starts, so the shared config can name it as the validator (keygen
# prints the key's address; a re-run keeps the key and the address it wrote down).
if [ ! -f "$work/A/node.key" ]; then
  "$bin/blyan-miner" keygen --out "$work/A/node.key" >"$work/A/address.txt"
fi
validator=$(cat "$work/A/address.txt")
cat >"$work/network.yaml" <<YAML
pol:
  validators:
    - {address: "$validator", stake: 1}
YAML

pids=()
stop() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT

start() {  # name http-port p2p-port [peer]
  local name=$1 http=$2 p2p=$3 peer=${4:-}
  local args=(--config "$work/network.yaml" --data-dir "$work/$name" --listen "127.0.0.1:$http"
    --p2p-listen "/ip4/127.0.0.1/udp/$p2p/quic-v1" --p2p-listen "/ip4/127.0.0.1/tcp/$p2p")
  [ -n "$peer" ] && args+=(--peer "$peer")
  "$bin/blyan-node" "${args[@]}" 2>"$work/$name.log" &
  pids+=($!)
}

wait_for() {  # what command...
  local what=$1; shift
  for _ in $(seq 1 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for $what (logs in $work)" >&2; exit 1
}

start A 8711 4811
wait_for "node A's network" test -s "$work/A/p2p-addresses.txt"
a_peer=$(grep quic-v1 "$work/A/p2p-addresses.txt" | head -1)
echo "== A listens on $a_peer"
start B 8712 4812 "$a_peer"
start C 8713 4813 "$a_peer"

connected() {  # http-port: at least two connected peers
  curl -sf "http://127.0.0.1:$1/p2p/peers" |
    python3 -c 'import json,sys; sys.exit(0 if sum(p["connected"] for p in json.load(sys.stdin)["peers"]) >= 2 else 1)'
}
for port in 8711 8712 8713; do wait_for "node on :$port to see both others" connected "$port"; done

for node in "A 8711" "B 8712" "C 8713"; do
  set -- $node
  echo "== $1: peers"
  curl -sf "http://127.0.0.1:$2/p2p/peers" | python3 -c '
import json, sys
status = json.load(sys.stdin)
print("  me", status["peer_id"])
for peer in status["peers"]:
    rtt = peer.get("rtt_ms")
    print("  ", peer["peer_id"][-12:], peer.get("address"), "connected" if peer["connected"] else "gone",
          "" if rtt is None else f"{rtt:.2f} ms")'
  for chain in A B D; do
    printf '  chain %s tip: ' "$chain"
    curl -sf "http://127.0.0.1:$2/chain/$chain" | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["tip_height"], c["tip_hash"][:18])'
  done
done

if [ "$keep" = "--keep" ]; then
  echo "== running: http://127.0.0.1:8711 (A), :8712 (B), :8713 (C); Ctrl-C stops them"
  wait
fi
