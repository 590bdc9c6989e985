# Source this file: it points cargo at the project's libtorch and shared build cache.
#
# The Python virtual environment (torch==2.11.0, the libtorch that tch 0.24 links) and the cargo
# target directory live together under $BLYAN_CACHE, outside any clone: the libtorch path is
# baked into cached build-script output and into each binary's rpath, so it must not move when
# the project is cloned again. RocksDB's and libtorch's C++ builds are then paid once per machine.
export BLYAN_CACHE="${BLYAN_CACHE:-$HOME/.cache/blyan}"
export BLYAN_VENV="${BLYAN_VENV:-$BLYAN_CACHE/venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BLYAN_CACHE/target}"
export VIRTUAL_ENV="$BLYAN_VENV"
case ":$PATH:" in
  *":$BLYAN_VENV/bin:"*) ;;
  *) export PATH="$BLYAN_VENV/bin:$PATH" ;;
esac
export LIBTORCH_USE_PYTORCH=1
