"""Print how a `pip freeze` differs from constraints.txt: the releases `make test-latest` runs that `make` does not pin.

Usage: compare_pins.py CONSTRAINTS FREEZE. Informational: it always exits 0 (the suite decides what passes).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def _pins(path: Path) -> dict[str, str]:
    """`name==version` lines by normalized name (PEP 503); comments, editables and other lines are skipped."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def main(constraints: str, freeze: str) -> None:
    pinned, latest = _pins(Path(constraints)), _pins(Path(freeze))
    moved = [
        f"  {n}: {pinned[n]} -> {latest[n]}" for n in sorted(pinned.keys() & latest.keys()) if pinned[n] != latest[n]
    ]
    added = [f"  {n}: {latest[n]}" for n in sorted(latest.keys() - pinned.keys())]
    dropped = [f"  {n}: {pinned[n]}" for n in sorted(pinned.keys() - latest.keys())]
    if not (moved or added or dropped):
        print(f"{freeze}: the same releases as {constraints}")
    for title, lines in (("newer or other than", moved), ("not in", added), ("only in", dropped)):
        if lines:
            print(f"{freeze}: {len(lines)} packages {title} {constraints}:", *lines, sep="\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
