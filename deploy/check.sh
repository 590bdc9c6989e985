#!/usr/bin/env bash
# Checks the deployment files: the systemd unit passes `systemd-analyze verify` against a real
# install (made with scripts/install.sh from binaries already built in FROM, default
# target/release), and the container image builds when a container builder is running here
# (otherwise this says so and skips it).
#
#   deploy/check.sh [FROM]
set -euo pipefail
cd "$(dirname "$0")/.."
from=${1:-target/release}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scripts/install.sh "$work/opt" --from "$from"
printf 'data_dir: %s\n' "$work/data" > "$work/node.yaml"
sed -e "s|/opt/blyan|$work/opt|g" -e "s|/etc/blyan/node.yaml|$work/node.yaml|" \
  deploy/blyan-node.service > "$work/blyan-node.service"
command -v systemd-analyze >/dev/null || { echo "check: systemd-analyze is missing" >&2; exit 1; }
systemd-analyze verify --man=no "$work/blyan-node.service"
echo "check: the systemd unit verifies" >&2
if docker info >/dev/null 2>&1; then
  docker build -f deploy/Containerfile -t blyan-node:check .
  echo "check: the container image builds" >&2
else
  echo "check: no container builder is running here: the image build was skipped" >&2
fi
