"""What ``requests.Session()`` mounts while ``install()`` is active, and its config.

``install()`` (``_install``) rebinds ``requests.sessions.HTTPAdapter`` to
:class:`_InstalledAdapter` and records the config here.  The layers that
``install()`` itself builds on (the SDK rebinding, the urllib3 front door)
read the installed adapter and config from here, so none of them imports the
installer.
"""

from __future__ import annotations

from typing import Any, Optional

from ._adapter import AzGuardAdapter
from ._config import GuardConfig

__all__ = ["_InstalledAdapter", "installed_config", "set_installed_config"]

# Written only by _install, under its lock; read without one (a reference).
_config: Optional[GuardConfig] = None


def installed_config() -> Optional[GuardConfig]:
    """The config of the active ``install()``, or None."""
    return _config


def set_installed_config(config: Optional[GuardConfig]) -> None:
    """``install()`` and ``uninstall()`` only: the config new Sessions take."""
    global _config
    _config = config


class _InstalledAdapter(AzGuardAdapter):
    """What ``requests.Session()`` mounts while ``install()`` is active.

    ``Session.__init__`` calls ``HTTPAdapter()`` with no arguments, so the
    installed config is taken here; an explicit ``config`` still wins.  A
    module-level class so sessions holding it stay picklable.
    """

    _azguard_repr_name = "AzGuardAdapter (installed)"

    def __init__(self, config: Optional[GuardConfig] = None, **kwargs: Any) -> None:
        if config is None:
            config = _config
        super().__init__(config, **kwargs)
