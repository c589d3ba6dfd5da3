"""The ``azguard`` command: a thin dispatcher to one module per sub-command.

Each sub-command lives in the module named after it and owns its argument
parsing, so ``azguard env`` does not pay for importing the drill.
"""

from __future__ import annotations

import importlib
import sys
from typing import Dict, List, Optional, Tuple

__all__ = ["main"]

# name -> (module, one-line summary)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "env": ("requests_azguard.tools.env", "effective configuration and where each value came from"),
    "doctor": (
        "requests_azguard.tools.doctor",
        "one guarded request, with socket and kernel diagnosis",
    ),
    "drill": (
        "requests_azguard.tools.drill",
        "the migration drill: plain requests vs guarded, side by side",
    ),
    "run": (
        "requests_azguard.tools.run",
        "run a program (and its children) with the guard enabled",
    ),
}

EXIT_USAGE = 2


def _usage() -> str:
    lines = ["usage: azguard COMMAND [ARGS...]", "", "commands:"]
    width = max(len(name) for name in COMMANDS)
    for name, (_, summary) in COMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {summary}")
    lines.append("")
    lines.append("options:")
    lines.append("  -h, --help  show this help and exit")
    lines.append("  --version   print the version and exit")
    lines.append("")
    lines.append("Run 'azguard COMMAND --help' for a command's options.")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else EXIT_USAGE
    if args[0] == "--version":
        from .. import __version__

        print(f"azguard {__version__}")
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(
            f"azguard: unknown command {args[0]!r}; expected one of: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    module = importlib.import_module(entry[0])
    code: int = module.main(args[1:])
    return code


def console_main() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # `azguard env --json | head`: the reader left; that is not an error
        # worth a traceback.  Point stdout at devnull so the interpreter's
        # own flush at exit does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141  # 128 + SIGPIPE, as a shell reports it
    sys.exit(code)
