"""Running code right after a module's own loader has executed it.

Two meta-path finders use this: the ``AZGUARD_AUTO`` start-up hook
(``_autostart``: install the guard once requests is imported) and the SDK
rebinding (``_sdk``: patch an SDK module once it is imported).  The start-up
hook loads this file by path, before the package exists, so it imports
nothing but ``sys``.
"""

from __future__ import annotations

import sys

# typing is not imported at run time: start-up must not pay for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

__all__ = ["AfterExec", "find_real_spec"]


class AfterExec:
    """Wraps a module's own loader: runs it, then calls ``then(module)``.

    ``then`` runs only once the module executed cleanly: a failed import
    may be retried.
    """

    def __init__(self, loader: Any, then: Callable[[Any], None]) -> None:
        self.loader = loader
        self.then = then

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        # Put the real loader back first so the module's __loader__/__spec__
        # look exactly as if nothing had intervened (resources, reload, pickling).
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self.loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self.loader
        self.loader.exec_module(module)
        self.then(module)


def find_real_spec(fullname: str, path: Any, target: Any, skip: type) -> Any:
    """The spec the other finders on ``sys.meta_path`` give (not ``skip``'s)."""
    for finder in list(sys.meta_path):
        if isinstance(finder, skip):
            continue
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        spec = find(fullname, path, target)
        if spec is not None:
            return spec
    return None
