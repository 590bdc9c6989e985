#!/usr/bin/env bash
# Packages every library crate as `cargo publish` would (`cargo package --no-verify`: manifests
# rewritten with versions for path dependencies, publish-time checks, the file list), then checks
# that each package is self-contained: every file its sources embed (`include_str!`,
# `include_bytes!`, refinery's `embed_migrations!`) and its build script are inside the package.
# A library path built from `CARGO_MANIFEST_DIR` that leaves the package (a run-time default
# pointing into the repository, which a crates.io user does not have) is listed as a warning;
# tests and benches may read the repository. Compiling the packages (`cargo package` without
# `--no-verify`) would rebuild RocksDB and every libtorch user from scratch, so this reads.
#
#   scripts/package.sh            all crates under crates/
#   scripts/package.sh -p NAME... only these
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
if [ $# -eq 0 ]; then
  for dir in crates/*/; do
    set -- "$@" -p "$(basename "$dir")"
  done
fi
# Offline after `cargo fetch`: the packages resolve to what the workspace's lock file holds, which
# is then in the local index cache (online, each package would update the index again).
cargo fetch --locked
# --allow-dirty: the check is about what a package holds, so it runs on a working tree too.
cargo package --locked --offline --no-verify --allow-dirty "$@"
names=()
while [ $# -gt 0 ]; do
  [ "$1" = -p ] && names+=("$2") && shift
  shift
done
version=$(cargo metadata --format-version 1 --no-deps --offline |
  python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "blyan-chain"))')
crates=()
for name in "${names[@]}"; do
  crates+=("$CARGO_TARGET_DIR/package/$name-$version.crate")
done
python3 - "${crates[@]}" <<'PY'
import pathlib, re, sys, tarfile, tempfile

EMBED = re.compile(r'\b(include_str|include_bytes)!\(\s*"([^"]+)"\s*\)')
MIGRATIONS = re.compile(r'\bembed_migrations!\(\s*"([^"]+)"\s*\)')
REACH = re.compile(r'CARGO_MANIFEST_DIR[^;]*\.\./')
problems = []
warnings = []
for crate in sys.argv[1:]:
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(crate) as archive:
        archive.extractall(tmp, filter="data")
        (root,) = pathlib.Path(tmp).iterdir()
        problems_before = len(problems)
        manifest = (root / "Cargo.toml").read_text()
        build = re.search(r'^build = "([^"]+)"', manifest, re.M)
        if build and not (root / build.group(1)).is_file():
            problems.append(f"{root.name}: build script {build.group(1)} is not in the package")
        for source in root.rglob("*.rs"):
            relative = source.relative_to(root)
            text = source.read_text()
            for kind, path in EMBED.findall(text):
                target = (source.parent / path).resolve()
                if not target.is_relative_to(root.resolve()) or not target.is_file():
                    problems.append(f"{root.name}/{relative}: {kind}!(\"{path}\") is not in the package")
            for path in MIGRATIONS.findall(text):
                if not (root / path).is_dir():
                    problems.append(f"{root.name}/{relative}: embed_migrations!(\"{path}\") is not in the package")
            # Library code only: a unit-test module (from its `#[cfg(test)]` on) may read the repository.
            library = text.split("#[cfg(test)]", 1)[0]
            if relative.parts[0] not in ("tests", "benches") and REACH.search(library):
                warnings.append(f"{root.name}/{relative}: a path from CARGO_MANIFEST_DIR leaves the package")
        if len(problems) == problems_before:
            print(f"package: {root.name} is self-contained", file=sys.stderr)
for warning in warnings:
    print(f"package: warning: {warning}", file=sys.stderr)
if problems:
    print("package: " + "\npackage: ".join(problems), file=sys.stderr)
    sys.exit(1)
PY
