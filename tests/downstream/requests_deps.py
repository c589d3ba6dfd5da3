"""Print what requests' tests need, one requirement a line.

Usage: ``python requests_deps.py SDIST/pyproject.toml``.  The source is the
sdist's ``[dependency-groups] test`` (what requests' own CI installs), minus
requests and pytest themselves (pinned to the latest line by the caller);
requests' ``[socks]`` extra becomes PySocks.
"""

from __future__ import annotations

import sys
from typing import List

# requests 2.34's group, for a Python without tomllib (< 3.11) or an sdist
# without dependency groups.
FALLBACK = ["pytest-httpbin==2.1.0", "httpbin~=0.10.0", "pytest-mock", "pytest-xdist", "trustme"]
SOCKS = "PySocks>=1.5.6,!=1.5.7"


def _name(requirement: str) -> str:
    for i, ch in enumerate(requirement):
        if not (ch.isalnum() or ch in "-_."):
            return requirement[:i].lower()
    return requirement.lower()


def requirements(pyproject: str) -> List[str]:
    try:
        import tomllib

        with open(pyproject, "rb") as f:
            group = tomllib.load(f)["dependency-groups"]["test"]
    except (ImportError, KeyError, OSError):
        group = FALLBACK
    deps = [d for d in group if isinstance(d, str) and _name(d) not in ("requests", "pytest")]
    return [*deps, SOCKS]


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1])))
