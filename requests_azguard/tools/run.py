"""``azguard run -- CMD ARGS...``: run a legacy program with the guard enabled.

Like ``opentelemetry-instrument`` and ``ddtrace-run``: the configuration is
validated here, ``AZGUARD_AUTO=1`` is put in the environment, and the process
becomes ``CMD`` (``exec``), so the exit status, signals and the process id are
the program's own.  Every Python interpreter of this environment that the
program or its children start reads ``AZGUARD_AUTO`` through the
``requests_azguard_autostart.pth`` start-up hook.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

from .._config import describe_env, unknown_env_messages
from .._errors import ConfigError

__all__ = ["EXIT_CANNOT_EXECUTE", "EXIT_CONFIG", "EXIT_NOT_FOUND", "child_environ", "main"]

EXIT_CONFIG = 2
# The shell's conventions for a command that cannot be run.
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

_EPILOG = (
    "The program runs with AZGUARD_AUTO=1 added to its environment (AZGUARD_AUTO=requests, "
    "if set, is kept: requests only, no SDK); every other "
    "AZGUARD_* variable is passed through after validation. Only Python interpreters "
    "that have requests-azguard installed (and do not run with -S) are guarded."
)


def child_environ(environ: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The program's environment: ``environ`` with ``AZGUARD_AUTO=1``, validated.

    Raises ``ConfigError`` on the first bad ``AZGUARD_*`` value or unknown
    ``AZGUARD_*`` name (a misspelt setting would silently not apply).
    """
    env = dict(os.environ if environ is None else environ)
    if env.get("AZGUARD_AUTO", "").strip().lower() != "requests":
        # run is the explicit request: it wins over AZGUARD_AUTO=0, but a
        # narrower scope the user chose is kept.
        env["AZGUARD_AUTO"] = "1"
    describe_env(env)
    unknown = unknown_env_messages(env)
    if unknown:
        raise UnknownVariableError(unknown)
    return env


class UnknownVariableError(ConfigError):
    """``azguard run`` refuses unknown ``AZGUARD_*`` names, like bad values."""

    def __init__(self, lines: List[str]) -> None:
        ValueError.__init__(self, "; ".join(lines))
        self.name = "AZGUARD_*"
        self.value = None
        self.accepted = "known variable names (azguard env --help)"
        self.lines = lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="azguard run",
        usage="azguard run [-h] -- CMD [ARGS...]",
        description="Run a program (and its child processes) with the guard enabled.",
        epilog=_EPILOG,
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the program and its arguments")
    args = parser.parse_args(argv)
    command: List[str] = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.print_usage(sys.stderr)
        print(
            "azguard run: missing the command to run, e.g. azguard run -- python app.py",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        env = child_environ()
    except UnknownVariableError as exc:
        for line in exc.lines:
            print(f"azguard run: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"azguard run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    executable = shutil.which(command[0], path=env.get("PATH"))
    if executable is None:
        if os.path.dirname(command[0]) and os.path.exists(command[0]):
            print(
                f"azguard run: cannot execute {command[0]}: not an executable file", file=sys.stderr
            )
            return EXIT_CANNOT_EXECUTE
        print(f"azguard run: command not found: {command[0]}", file=sys.stderr)
        return EXIT_NOT_FOUND
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name != "posix":
        # No real exec on Windows: wait for the child and hand back its status.
        return subprocess.run([executable, *command[1:]], env=env, check=False).returncode
    try:
        os.execve(executable, command, env)
    except OSError as exc:
        print(f"azguard run: cannot execute {command[0]}: {exc}", file=sys.stderr)
        return EXIT_CANNOT_EXECUTE
    raise AssertionError("unreachable: execve returned")  # pragma: no cover
