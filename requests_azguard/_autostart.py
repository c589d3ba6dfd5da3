"""The ``AZGUARD_AUTO`` start-up hook, run by ``requests_azguard_autostart.pth``.

Every interpreter of the environment runs the ``.pth`` line at start-up.  With
``AZGUARD_AUTO`` unset or empty it costs one environment lookup and imports
nothing.  Otherwise the line loads this file *by path*, without importing the
``requests_azguard`` package (whose ``__init__`` imports requests), and calls
:func:`start`.

:func:`start` does not import requests either: it puts a finder at the front
of ``sys.meta_path`` that lets ``requests`` import normally and, once the
package has finished executing, calls ``requests_azguard.install()``.  So a
program that never imports requests pays almost nothing, and one that does is
guarded from its first Session on.  With ``AZGUARD_AUTO=1`` the same finder
also watches the SDK modules that build urllib3 pools themselves
(``_WITH_SDKS``): a boto3 program never imports requests, and is guarded from
its first client on; ``AZGUARD_AUTO=requests`` watches requests only.

Nothing here may crash or block an interpreter: every failure becomes one line
on stderr saying requests is NOT guarded, and the program runs on.  Only the
standard library's already-loaded ``os`` and ``sys`` are imported, and
``_import_hook`` (shared with ``_sdk``) is loaded by path the way the ``.pth``
line loads this file.
"""

from __future__ import annotations

import os
import sys

# typing is not imported at run time: start-up must not pay for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Mapping, Optional, Sequence

__all__ = ["PTH_NAME", "RequestsHook", "start"]

#: The file name the ``.pth`` line ships under in site-packages; it sorts
#: after setuptools' ``__editable__.*.pth`` so an editable install's finder is
#: in place when the line runs.
PTH_NAME = "requests_azguard_autostart.pth"

# Same spellings as requests_azguard._config._parse_bool (a test keeps them in
# step); duplicated because importing _config would import requests.
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_BOOL_ACCEPTED = "1 or 0 (also true/false, yes/no, on/off)"
_AUTO_ACCEPTED = _BOOL_ACCEPTED + ", or requests"
# The modules whose import arms the guard.  ``AZGUARD_AUTO=1`` also watches
# the SDK modules that build urllib3 pool managers (a boto3-only program may
# never import requests); ``AZGUARD_AUTO=requests`` watches requests alone.
_REQUESTS_ONLY = ("requests",)
# (_sdk.TARGETS lists the same modules; a test keeps them in step.)  When one
# of them imports another, the outer one's wrapped loader installs again after
# it finished, which patches the names it had not bound yet.
_WITH_SDKS = (
    "requests",
    "botocore.httpsession",
    "kubernetes.client.rest",
    "azure.core.pipeline.transport._requests_basic",
)
_NOT_GUARDED = "requests is NOT guarded"


# Lines already written: site can run a .pth line twice in one interpreter
# (CPython 3.11 venvs process their site-packages twice), and one clear line
# must stay one line.
_said: set[str] = set()


def _write(line: str, text: str) -> None:
    """Write ``text`` to stderr once per ``line``; never raises."""
    stream = sys.stderr
    if stream is None or line in _said:  # pythonw and daemons may have no stderr
        return
    _said.add(line)
    try:
        stream.write(text)
        stream.flush()
    except Exception:
        pass


def _say(line: str) -> None:
    """One stderr line saying the guard is not on, and why."""
    _write(line, f"azguard: {line}; {_NOT_GUARDED}\n")


def _note(line: str) -> None:
    """One stderr line that is a warning, not a failure (the guard is on)."""
    _write(line, f"azguard: {line}\n")


def _install() -> None:
    """Install the guard; any failure is one stderr line, never an exception."""
    try:
        from requests_azguard._errors import ConfigError, UnknownVariableWarning
    except Exception as exc:
        _say(f"cannot import requests_azguard ({type(exc).__name__}: {exc})")
        return
    try:
        import warnings

        from requests_azguard._config import unknown_env_messages
        from requests_azguard._install import install

        # A misspelt variable is said once here, in the hook's own words;
        # the same finding as a Python warning from install() would be twice.
        for line in unknown_env_messages():
            _note(line)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnknownVariableWarning)
            install()
    except ConfigError as exc:
        # str(ConfigError) is "AZGUARD_X='value' is invalid: expected ...".
        _say(str(exc))
    except Exception as exc:
        _say(f"AZGUARD_AUTO start-up hook failed ({type(exc).__name__}: {exc})")


def _load_import_hook() -> ModuleType:
    """``_import_hook``, read from its file beside this one.

    Importing it would import the package first, and the package imports
    requests; so, like this file, it is loaded by path.  It is not put in
    ``sys.modules``: the package imports its own copy when it needs it.
    """
    import importlib.util

    name = "requests_azguard._import_hook"
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_import_hook.py")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RequestsHook:
    """A meta-path finder that arms ``install()`` for when requests (or, with
    ``AZGUARD_AUTO=1``, an SDK module that builds urllib3 pool managers) is
    imported, whichever comes first."""

    def __init__(self, watched: Sequence[str] = _REQUESTS_ONLY) -> None:
        self.watched = frozenset(watched)
        self.hooks = _load_import_hook()

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]] = None, target: Any = None
    ) -> Any:
        if fullname not in self.watched:
            return None
        spec = self.hooks.find_real_spec(fullname, path, target, RequestsHook)
        if spec is None:
            return None
        try:
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = self.hooks.AfterExec(spec.loader, self._imported)
            else:
                _say(f"{fullname} has a loader the start-up hook cannot wrap")
                self.remove()
        except Exception as exc:
            _say(f"AZGUARD_AUTO start-up hook failed ({type(exc).__name__}: {exc})")
        return spec

    def _imported(self, module: Any) -> None:
        # Only after the module imported cleanly: a failed import may be retried.
        self.remove()
        package = sys.modules.get("requests_azguard")
        spec = getattr(package, "__spec__", None)
        if package is not None and getattr(spec, "_initializing", False):
            # The program imported requests_azguard first and it is importing
            # requests: installing now would re-enter the half-initialised
            # package.  Its __init__ runs the install as its last step.
            package._azguard_autostart_pending = _install  # type: ignore[attr-defined]
            return
        _install()

    def remove(self) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


def _is_azguard_cli() -> bool:
    """True in the ``azguard`` console script and ``python -m requests_azguard``."""
    argv = getattr(sys, "argv", None) or [""]
    name = os.path.basename(str(argv[0])).lower()
    if name in ("azguard", "azguard.exe", "azguard-script.py"):
        return True
    # sys.orig_argv is 3.10+; during start-up sys.argv[0] is only "-m".
    orig = list(getattr(sys, "orig_argv", None) or ())
    pairs = zip(orig, orig[1:])
    return any(a == "-m" and b == "requests_azguard" for a, b in pairs)


def start(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Arm the guard if ``AZGUARD_AUTO`` is true; ``True`` if armed or installed.

    Never raises.  An invalid ``AZGUARD_AUTO`` is one stderr line; invalid
    values of the other variables are reported the same way when requests is
    imported, since checking them needs the package (and so requests).
    """
    try:
        raw = (os.environ if environ is None else environ).get("AZGUARD_AUTO", "")
        text = raw.strip().lower()
        if not text or text in _FALSE:
            return False
        if _is_azguard_cli():
            # The azguard command validates and reports the configuration
            # itself (`azguard env`, `azguard run`): saying it here too would
            # print every finding twice.
            return False
        if text not in _TRUE and text != "requests":
            _say(f"AZGUARD_AUTO={raw!r} is invalid: expected {_AUTO_ACCEPTED}")
            return False
        watched = _REQUESTS_ONLY if text == "requests" else _WITH_SDKS
        if any(name in sys.modules for name in watched):
            # Imported by an earlier .pth or sitecustomize: install right away.
            _install()
            return True
        if not any(isinstance(f, RequestsHook) for f in sys.meta_path):
            sys.meta_path.insert(0, RequestsHook(watched))
        return True
    except Exception as exc:
        _say(f"AZGUARD_AUTO start-up hook failed ({type(exc).__name__}: {exc})")
        return False
