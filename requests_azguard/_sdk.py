"""Which names SDKs look up to build urllib3 pool managers, and rebinding them.

``install()`` guards ``requests`` by rebinding one name; SDKs that go to
urllib3 directly are reached the same way, one name each, listed in
:data:`TARGETS` as data:

* botocore (boto3): ``botocore.httpsession`` does ``from urllib3 import
  PoolManager, proxy_from_url`` at import and calls those names; both are
  rebound in that module.  botocore then assigns its own pool classes to the
  manager, which the front door turns into guarded subclasses of them.
* kubernetes: ``kubernetes.client.rest`` does ``import urllib3`` and calls
  ``urllib3.PoolManager(...)``/``urllib3.ProxyManager(...)``; its module-level
  name ``urllib3`` is rebound to a view of urllib3 whose three manager names
  are the guarded ones and everything else is urllib3's own.  urllib3 itself
  is never changed.
* azure-core: its default ``RequestsTransport`` builds a ``requests.Session``
  but then mounts its own ``BiggerBlockSizeHTTPAdapter`` (an ``HTTPAdapter``
  subclass) over the session's default adapters, so the requests patch alone
  does not reach it.  That name, looked up in
  ``azure.core.pipeline.transport._requests_basic`` when a session is set up,
  is rebound to a subclass of it and of the installed guarded adapter (its
  own overrides first, then the guard's, then requests'), built with the
  arguments azure-core gives (its ``max_retries`` kept).

A module already imported is patched at once (``install()`` called late
still reaches a botocore imported before it); one not yet imported is patched
right after it executes, by a finder at the front of ``sys.meta_path`` that
wraps its loader.  Every rebinding is recorded (module, name, what was there,
what was put there); :func:`unpatch_all` puts back what was there only if
each name still holds what was put, and otherwise changes nothing.
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ._import_hook import AfterExec, find_real_spec

__all__ = [
    "TARGETS",
    "Rebinding",
    "SdkPatches",
    "reach_report",
]


class Target(NamedTuple):
    library: str  # the distribution, for `azguard env`
    module: str
    name: str
    build: Callable[[Any], Any]  # what was there -> what to put there


def _front(name: str) -> Callable[[Any], Any]:
    def build(original: Any) -> Any:
        from ._urllib3 import REPLACEMENTS

        return REPLACEMENTS[name]

    return build


class Urllib3View(types.ModuleType):
    """urllib3 as one SDK module sees it: the guarded managers, the rest urllib3's."""

    def __init__(self, real: types.ModuleType) -> None:
        super().__init__(real.__name__, real.__doc__)
        from ._urllib3 import REPLACEMENTS

        self.__dict__["azguard_real"] = real
        self.__dict__.update(REPLACEMENTS)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["azguard_real"], name)

    def __repr__(self) -> str:
        return f"<requests_azguard view of {self.__dict__['azguard_real']!r}>"


def _view(original: Any) -> Any:
    return Urllib3View(original)


def _guarded_adapter(original: Any) -> Any:
    from ._installed import _InstalledAdapter

    if not isinstance(original, type) or issubclass(original, _InstalledAdapter):
        return original
    return type(
        f"Guarded{original.__name__}",
        (original, _InstalledAdapter),
        {"__module__": __name__, "__qualname__": f"Guarded{original.__name__}"},
    )


#: Every name rebound, per library.  A name the installed version of a module
#: does not have is skipped (and reported by `azguard env`).
TARGETS: Tuple[Target, ...] = (
    Target("botocore", "botocore.httpsession", "PoolManager", _front("PoolManager")),
    Target("botocore", "botocore.httpsession", "ProxyManager", _front("ProxyManager")),
    Target("botocore", "botocore.httpsession", "proxy_from_url", _front("proxy_from_url")),
    Target("kubernetes", "kubernetes.client.rest", "urllib3", _view),
    Target(
        "azure-core",
        "azure.core.pipeline.transport._requests_basic",
        "BiggerBlockSizeHTTPAdapter",
        _guarded_adapter,
    ),
)

_MODULES: Tuple[str, ...] = tuple(dict.fromkeys(t.module for t in TARGETS))


class Rebinding(NamedTuple):
    module: types.ModuleType
    name: str
    original: Any
    replacement: Any

    @property
    def current(self) -> Any:
        return self.module.__dict__.get(self.name)


def _describe(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return repr(obj)
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return f"{module}.{name}" if module and name else repr(obj)


class SdkPatches:
    """The SDK rebindings of one ``install()``, and the finder for later imports."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.rebindings: List[Rebinding] = []
        self.hook: Optional[_ImportHook] = None
        self.active = False

    def apply(self) -> None:
        """Patch what is imported; arm the finder for the rest."""
        with self.lock:
            self.active = True
            pending = []
            for module_name in _MODULES:
                module = sys.modules.get(module_name)
                if module is not None:
                    self.patch_module(module)
                else:
                    pending.append(module_name)
            if pending:
                self.hook = _ImportHook(self, pending)
                sys.meta_path.insert(0, self.hook)

    def refresh(self) -> None:
        """Patch any target module imported since (its finder may have missed it)."""
        with self.lock:
            for module_name in _MODULES:
                module = sys.modules.get(module_name)
                if module is not None:
                    self.patch_module(module)

    def patch_module(self, module: types.ModuleType) -> None:
        with self.lock:
            if not self.active:
                return
            for target in TARGETS:
                if target.module != module.__name__ or target.name not in module.__dict__:
                    continue
                if any(r.module is module and r.name == target.name for r in self.rebindings):
                    continue
                original = module.__dict__[target.name]
                replacement = target.build(original)
                if replacement is original:
                    continue
                setattr(module, target.name, replacement)
                self.rebindings.append(Rebinding(module, target.name, original, replacement))

    def conflicts(self) -> List[str]:
        """One line per rebound name that something else rebound after us."""
        with self.lock:
            return [
                f"{r.module.__name__}.{r.name} is now {_describe(r.current)}"
                for r in self.rebindings
                if r.current is not r.replacement
            ]

    def undo(self) -> None:
        """Put every name back (call :meth:`conflicts` first)."""
        with self.lock:
            self.active = False
            if self.hook is not None:
                self.hook.remove()
                self.hook = None
            for r in reversed(self.rebindings):
                setattr(r.module, r.name, r.original)
            self.rebindings = []

    def reached(self) -> List[str]:
        with self.lock:
            return sorted({r.module.__name__ for r in self.rebindings})


class _ImportHook:
    """A meta-path finder that patches the listed modules once they execute."""

    def __init__(self, patches: SdkPatches, modules: Sequence[str]) -> None:
        self.patches = patches
        self.modules = frozenset(modules)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self.modules:
            return None
        spec = find_real_spec(fullname, path, target, _ImportHook)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = AfterExec(spec.loader, self.patches.patch_module)
        return spec

    def remove(self) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


def reach_report() -> Dict[str, str]:
    """For `azguard env`: each library the guard can reach and how, without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    out: Dict[str, str] = {}
    for dist, how in (
        ("requests", "requests.sessions.HTTPAdapter"),
        ("botocore", "botocore.httpsession.PoolManager, proxy_from_url"),
        ("kubernetes", "kubernetes.client.rest.urllib3"),
        (
            "azure-core",
            "azure.core.pipeline.transport._requests_basic.BiggerBlockSizeHTTPAdapter",
        ),
    ):
        try:
            found = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
            continue
        out[dist] = f"{found}: {how}"
    return out
