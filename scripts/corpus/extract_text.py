#!/usr/bin/env python3
"""Turns unpacked Debian documentation packages into plain-text training files.

Usage: extract_text.py UNPACKED_ROOT OUT_DIR

UNPACKED_ROOT holds one directory per package (as `dpkg-deb -x` leaves it). For each package
the prose is taken as the package ships it: reST sources as they are, HTML with its tags,
scripts and styles removed, gzip'd text decompressed. Files are written under OUT_DIR/<package>/
in sorted order with normalised line ends; nothing else is changed, so the same packages give
the same bytes.
"""
import gzip
import html.parser
import pathlib
import re
import sys


class _Text(html.parser.HTMLParser):
    SKIP = {"script", "style", "head", "nav"}
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt", "dd",
             "table", "ul", "ol", "blockquote", "section", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def html_to_text(source: str) -> str:
    parser = _Text()
    parser.feed(source)
    text = "".join(parser.parts)
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.splitlines()]
    # Keep prose: paragraphs of at least six words (menus, syntax diagrams and table cells
    # are one or two words a line).
    paragraphs = "\n".join(lines).split("\n\n")
    kept = [p.strip() for p in paragraphs if len(p.split()) >= 6]
    return "\n\n".join(kept) + "\n"


def sources(package_root: pathlib.Path):
    """(relative name, text) of every prose file of one unpacked package, sorted. A package
    that ships its reST sources gives those, not the HTML built from them."""
    has_sources = any(package_root.rglob("_sources"))
    for path in sorted(p for p in package_root.rglob("*") if p.is_file()):
        name = path.relative_to(package_root).as_posix()
        if "/copyright" in name or name.endswith("changelog.Debian.gz"):
            continue
        if name.endswith(".rst.txt"):
            yield name, path.read_text(encoding="utf-8", errors="strict")
        elif name.endswith(".html") and not has_sources:
            yield name + ".txt", html_to_text(path.read_text(encoding="utf-8", errors="replace"))
        elif name.endswith(".gz") and "jargon" in name:
            yield name[:-3] + ".txt", gzip.decompress(path.read_bytes()).decode("utf-8", "replace")


def main():
    root, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    total = 0
    for package_root in sorted(p for p in root.iterdir() if p.is_dir()):
        for name, text in sources(package_root):
            text = text.replace("\r\n", "\n")
            if len(text.strip()) < 200:
                continue
            target = out / package_root.name / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            total += len(text.encode("utf-8"))
    print(f"{total} bytes of text in {out}")


if __name__ == "__main__":
    main()
