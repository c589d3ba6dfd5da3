"""``azguard env``: the effective configuration, each value with its source."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Mapping, Optional

from .._config import describe_env, unknown_env_vars
from .._errors import ConfigError
from .env_doc import help_epilog, show

__all__ = ["main"]


def main(argv: Optional[List[str]] = None, environ: Optional[Mapping[str, str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="azguard env",
        description="The effective configuration, each value with its source "
        "(default or the variable that set it). Exit status 2 on a bad value.",
        epilog=help_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    unknown = unknown_env_vars(env)
    try:
        items = describe_env(env)
    except ConfigError as exc:
        print(f"azguard env: {exc}", file=sys.stderr)
        return 2
    redis = next(i for i in items if i.variable == "AZGUARD_REDIS_URL")
    if redis.value is not None:
        from .._config import _redact_url

        items = [i._replace(value=_redact_url(i.value)) if i is redis else i for i in items]
    auto = next(i for i in items if i.variable == "AZGUARD_AUTO").value
    reach = _reach(auto)
    if args.json:
        out = {
            i.variable: {
                "field": i.field or None,
                "value": _jsonable(i.value),
                "shown": show(i.value, i.variable),
                "source": i.source,
            }
            for i in items
        }
        for name, close in unknown:
            out[name] = {
                "field": None,
                "value": None,
                "shown": "ignored",
                "source": "unknown",
                "did_you_mean": close,
            }
        out["AZGUARD_AUTO"]["reaches"] = reach
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    width = max(len(i.variable) for i in items)
    for i in items:
        print(f"{i.variable.ljust(width)}  {show(i.value, i.variable):<22}  ({i.source})")
    if unknown:
        print()
        print("unknown variables (ignored):")
        for name, close in unknown:
            hint = f"did you mean {close}?" if close else "no known variable is close"
            print(f"  {name}: {hint}")
    scope = "AZGUARD_AUTO=requests" if auto == "requests" else "install() / AZGUARD_AUTO=1"
    print(f"\nlibraries reached by {scope}:")
    for library, how in reach.items():
        print(f"  {library:<11} {how}")
    return 0


def _reach(auto: Any) -> Dict[str, str]:
    """Each library the guard reaches and how, or why not (nothing is imported)."""
    from .._sdk import reach_report

    report = reach_report()
    if auto == "requests":
        for library in ("botocore", "kubernetes", "azure-core"):
            if report[library] != "not installed":
                report[library] = "not reached (AZGUARD_AUTO=requests)"
    return report


def _jsonable(value: Any) -> Any:
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    return value
