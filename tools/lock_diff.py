"""Print every installed distribution whose version differs from requirements.lock.

`make check-latest` runs it in a scratch venv built from pyproject's ranges alone, so its output is the
drift a fresh `pip install arvid-ray` would get today compared with what CI verified. Exit 0 always:
drift is information; the tests run before it say whether the drift breaks us.

    python tools/lock_diff.py requirements.lock
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str) -> dict[str, str]:
    pins = {}
    with open(path) as f:
        for line in f:
            m = PIN.match(line.strip())
            if m:
                pins[canonical(m.group(1))] = m.group(2)
    return pins


def main(path: str) -> int:
    pins = read_lock(path)
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
    rows = []
    for name, locked in sorted(pins.items()):
        have = installed.get(name)
        if have is not None and have.split("+")[0] != locked.split("+")[0]:
            rows.append((name, locked, have))
    extra = sorted(n for n in installed if n not in pins and n not in ("pip", "setuptools", "wheel", "arvid-ray"))
    print(f"{len(rows)} of {len(pins)} locked packages differ from {path} in this environment:")
    for name, locked, have in rows:
        print(f"  {name:32s} lock {locked:14s} here {have}")
    if extra:
        print(f"{len(extra)} installed here but not in the lock: {', '.join(extra)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "requirements.lock"))
