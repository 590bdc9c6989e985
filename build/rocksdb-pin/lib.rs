//! Workspace-only and empty: this package's manifest pins the features of RocksDB's build-time
//! dependencies (bindgen's `regex` and `syn`) to those a whole-workspace build enables.
//!
//! Cargo unifies build-time features over the packages one command selects, so without the pin
//! `cargo test -p blyan-chain` would build bindgen, and then RocksDB's C++, a second time with
//! other features than `cargo test --workspace`. Every workspace crate that links RocksDB names
//! this package as a dev-dependency (test, bench and `clippy --all-targets` builds), and the
//! binaries, which are never published, as a build-dependency (every build). A dev-dependency
//! with a path and no version is dropped by `cargo package`, so the published crates force
//! nothing on their users. A library-only `cargo check -p <crate>` has no dev-dependencies: add
//! `--all-targets` (or `-p blyan-rocksdb-pin`) to reuse the shared RocksDB build.
