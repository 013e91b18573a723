"""Which pinned requirements this Python lacks: `./run.sh test` and `lint` install requirements-dev.txt when so.

    python -m ops.requirements FILE...    # prints each missing or differing `name==version`; exit 1 if any

Exact pins only (`name==version`); comments and other lines are skipped.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

_PIN = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s#;]+)")


def unmet(path: Path) -> list[str]:
    """`name==version` of every pin in `path` that is not installed at exactly that version."""
    unmet = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if not match:
            continue
        name, version = match[1], match[2]
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            unmet.append(f"{name}=={version}")
    return unmet


if __name__ == "__main__":
    missing = [pin for name in sys.argv[1:] for pin in unmet(Path(name))]
    print("\n".join(missing))
    sys.exit(1 if missing else 0)
