#!/usr/bin/env bash
# Installs the Blyan binaries into PREFIX so they run without this clone: PREFIX/bin holds
# blyan-node, blyan-miner and blyan-validator with the relative rpath `$ORIGIN/../lib`,
# PREFIX/lib the libtorch libraries they link (copied from the torch wheel, each with the rpath
# `$ORIGIN`), PREFIX/share/blyan the shipped default model and the config files. The install can
# then be moved anywhere. It holds libtorch's CPU libraries only: a GPU node runs from the clone.
#
#   scripts/install.sh PREFIX            builds the release binaries first
#   scripts/install.sh PREFIX --from DIR installs the binaries already built in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 ]]; then
  echo "usage: scripts/install.sh PREFIX [--from DIR]" >&2
  exit 2
fi
prefix=$1
shift
from=
if [[ ${1:-} == --from ]]; then
  from=${2:?--from needs a directory}
fi
if [[ -z $from ]]; then
  scripts/setup.sh --run
  source scripts/env.sh
  scripts/link-target.sh
  cargo build --locked --release --bins
  from=target/release
fi
command -v patchelf >/dev/null || { echo "install: patchelf is missing (scripts/setup.sh installs it)" >&2; exit 1; }

mkdir -p "$prefix/bin" "$prefix/lib" "$prefix/share/blyan/config"
binaries=()
for name in blyan-node blyan-miner blyan-validator; do
  if [[ -x $from/$name ]]; then
    install -m 0755 "$from/$name" "$prefix/bin/$name"
    binaries+=("$prefix/bin/$name")
  fi
done
if [[ ${#binaries[@]} -eq 0 ]]; then
  echo "install: no blyan binary in $from" >&2
  exit 1
fi

# Every library a binary resolves outside the system's directories (the torch wheel's, with
# what they load in turn: ldd lists the whole closure).
declare -A copied=()
for binary in "${binaries[@]}"; do
  while read -r path; do
    name=$(basename "$path")
    if [[ -z ${copied[$name]:-} ]]; then
      cp -L "$path" "$prefix/lib/$name"
      chmod u+w "$prefix/lib/$name"
      patchelf --set-rpath '$ORIGIN' "$prefix/lib/$name"
      copied[$name]=1
    fi
  done < <(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// && $3 !~ /^\/(usr\/)?lib(64)?\// { print $3 }')
  patchelf --set-rpath '$ORIGIN/../lib' "$binary"
done

rm -rf "$prefix/share/blyan/models"
mkdir -p "$prefix/share/blyan/models"
# -L: the model's blocks.txt is a link to the list blyan-chain builds in; the install gets a copy.
cp -RL models/default "$prefix/share/blyan/models/default"
# The shipped defaults live in the crates that compile them in (config/ links to them).
install -m 0644 crates/blyan-node-core/config/node.yaml crates/blyan-ledger/config/tokenomics.yaml \
  "$prefix/share/blyan/config/"
echo "install: ${#binaries[@]} binaries and ${#copied[@]} libraries in $prefix" >&2
