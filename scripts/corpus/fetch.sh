#!/usr/bin/env bash
# Fetches the default model's training text from Debian's package archive and turns it into plain
# text under $BLYAN_CACHE/corpus/text (idempotent: a finished corpus is kept).
#
# The packages and versions are pinned below; each is downloaded with `apt-get download` (no root,
# nothing installed), checked against its pinned SHA-256, unpacked with `dpkg-deb -x`, and its prose
# extracted by extract_text.py. Licences: python3.11-doc (PSF), sqlite3-doc (public domain),
# postgresql-doc-15 (PostgreSQL licence), jargon-text (public domain).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh

PACKAGES=(
  "python3.11-doc=3.11.2-6+deb12u9"
  "sqlite3-doc=3.40.1-2+deb12u2"
  "postgresql-doc-15=15.20-0+deb12u1"
  "jargon-text=4.4.7-4.1"
)
CORPUS="$BLYAN_CACHE/corpus"
TEXT="$CORPUS/text"
if [ -f "$CORPUS/READY" ]; then
  echo "$TEXT"
  exit 0
fi
mkdir -p "$CORPUS/debs"
rm -rf "$CORPUS/unpacked" "$TEXT"
(
  cd "$CORPUS/debs"
  for pinned in "${PACKAGES[@]}"; do
    name="${pinned%%=*}"
    ls "${name}"_*.deb >/dev/null 2>&1 || apt-get download -q "$pinned" >&2 \
      || { echo "fetch: $pinned is not in the archive any more; run apt-get update, or pin the current version" >&2; exit 1; }
  done
  sha256sum -c "$BLYAN_ROOT/scripts/corpus/debs.sha256" >&2
)
for deb in "$CORPUS"/debs/*.deb; do
  name="$(basename "$deb")"
  mkdir -p "$CORPUS/unpacked/${name%%_*}"
  dpkg-deb -x "$deb" "$CORPUS/unpacked/${name%%_*}"
done
python3 scripts/corpus/extract_text.py "$CORPUS/unpacked" "$TEXT" >&2
touch "$CORPUS/READY"
echo "$TEXT"
