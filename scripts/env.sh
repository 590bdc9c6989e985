# Source this file: it points cargo at the project's libtorch and its build cache.
#
# The Python virtual environment (torch==2.11.0, the libtorch that tch 0.24 links) is the
# project-local, git-ignored `.venv`. The cargo target directory lives outside the clone, under
# $BLYAN_CACHE, so RocksDB's and libtorch's C++ builds are paid once per machine; it is keyed by the
# clone's absolute path because the venv's libtorch path is baked into build-script output and
# into each binary's rpath, and two clones must never share those.
BLYAN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BLYAN_ROOT
export BLYAN_CACHE="${BLYAN_CACHE:-$HOME/.cache/blyan}"
export BLYAN_VENV="${BLYAN_VENV:-$BLYAN_ROOT/.venv}"
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  CARGO_TARGET_DIR="$BLYAN_CACHE/target-$(printf '%s' "$BLYAN_ROOT" | sha256sum | cut -c1-12)"
  export CARGO_TARGET_DIR
fi
export VIRTUAL_ENV="$BLYAN_VENV"
case ":$PATH:" in
  *":$BLYAN_VENV/bin:"*) ;;
  *) export PATH="$BLYAN_VENV/bin:$PATH" ;;
esac
export LIBTORCH_USE_PYTORCH=1
