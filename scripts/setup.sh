#!/usr/bin/env bash
# Installs what Blyan needs on a Debian 12 machine with Rust and python3, idempotently:
# Debian packages (libclang for RocksDB's bindings, PostgreSQL for the ledger tests, patchelf for
# `scripts/install.sh`, systemd-analyze for the deployment check, Chromium for
# the page test), and a Python virtual environment holding the torch==2.11.0 wheel (libtorch).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

TORCH_VERSION=2.11.0
# `--run`: only what building and running the node needs (scripts/start.sh, scripts/install.sh);
# PostgreSQL, Chromium and the Python test packages are for the test suite.
APT_PACKAGES=(libclang-dev clang postgresql chromium chromium-driver patchelf systemd)
REQUIREMENTS=scripts/requirements.txt
if [ "${1:-}" = "--run" ]; then
  APT_PACKAGES=(libclang-dev clang patchelf)
  REQUIREMENTS=/dev/null
fi

missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$BLYAN_CACHE"
if [ ! -x "$BLYAN_VENV/bin/python" ]; then
  echo "setup: creating the Python environment in $BLYAN_VENV" >&2
  python3 -m venv "$BLYAN_VENV"
fi
python_packages=("torch==$TORCH_VERSION" -r "$REQUIREMENTS")
if ! "$BLYAN_VENV/bin/python" - <<PY 2>/dev/null
import importlib.metadata as m, sys
want = {"torch": "$TORCH_VERSION"}
for line in open("$REQUIREMENTS"):
    line = line.split("#")[0].strip()
    if line:
        name, _, version = line.partition("==")
        want[name] = version
for name, version in want.items():
    if m.version(name).split("+")[0] != version:
        sys.exit(1)
PY
then
  echo "setup: installing Python packages (torch $TORCH_VERSION is ~4.7 GB)" >&2
  "$BLYAN_VENV/bin/python" -m pip install -q --upgrade pip
  "$BLYAN_VENV/bin/python" -m pip install -q "${python_packages[@]}"
fi
echo "setup: ready (cache: $BLYAN_CACHE)" >&2
