# Contributors' recipes. A fresh machine needs none of these: see README.md.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Install what is missing (Debian packages, the torch wheel).
setup:
    scripts/setup.sh

# Build the release binaries and start the node on its defaults.
start *ARGS:
    scripts/start.sh {{ARGS}}

# Install the release binaries, the libtorch libraries they link and the shipped model into
# PREFIX (bin/, lib/, share/blyan/), relocatable: `$ORIGIN` rpaths, no reference to this clone.
install PREFIX:
    scripts/install.sh {{PREFIX}}

# The whole test suite (what CI runs, with fmt and clippy).
test *ARGS:
    scripts/test.sh {{ARGS}}

# Reproduce the shipped default model (models/default): corpus, training, pinned blocks.
train-default:
    scripts/train-default.sh

# Package every library crate as `cargo publish` would and check each is self-contained.
package:
    scripts/package.sh

# What CI runs.
ci:
    .ci/run

lint:
    source scripts/env.sh && cargo fmt --all -- --check && cargo clippy --workspace --all-targets --profile test -- -D warnings

# Criterion benches (release profile; the first run builds RocksDB's C++ again, ~20 min).
bench *ARGS:
    source scripts/env.sh && cargo bench {{ARGS}}
