"""``install()``/``uninstall()``: guard every ``requests.Session`` created afterwards.

``requests.Session.__init__`` mounts ``HTTPAdapter()`` looked up in the
``requests.sessions`` module namespace *at call time*; module-level
``requests.get()`` and friends build such a Session per call.  Rebinding that
one name is therefore enough to guard all of them, and it is the only name
touched: ``requests.adapters.HTTPAdapter`` stays the original class, so
``AzGuardAdapter`` (a subclass of it) cannot recurse, and third-party
subclasses of ``HTTPAdapter`` keep their base.

The patch is recorded exactly (module, name, what was there, what we put
there) and ``uninstall()`` puts back what was there only while the name still
holds our class; if something else rebound it after us, it is left in place
and :class:`InstallConflictError` names the current occupant.
"""

from __future__ import annotations

import os
import threading
import warnings
from types import ModuleType, TracebackType
from typing import Any, List, NamedTuple, Optional, Type

from ._config import GuardConfig, describe_env
from ._errors import AzGuardError, ConfigError
from ._installed import _InstalledAdapter, installed_config, set_installed_config
from ._sdk import SdkPatches

__all__ = [
    "InstallConflictError",
    "Installation",
    "install",
    "installed_config",
    "is_installed",
    "sdk_modules_reached",
    "uninstall",
]

# The one name Session.__init__ resolves when it mounts its default adapters.
_TARGET_MODULE = "requests.sessions"
_TARGET_NAME = "HTTPAdapter"


class InstallConflictError(AzGuardError, RuntimeError):
    """Something else rebound ``requests.sessions.HTTPAdapter`` after ``install()``."""


class _Patch(NamedTuple):
    module: ModuleType
    name: str
    original: Any
    replacement: Any


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.patch: Optional[_Patch] = None
        # The installed config itself is kept by _installed, which the
        # adapter and the urllib3 front door read.
        # The SDK rebindings (see _sdk), when the install reaches SDKs.
        self.sdk: Optional[SdkPatches] = None
        # Bumped on every patch, so a handle from an earlier install() cannot
        # undo a later one.
        self.generation = 0
        self.fork_hook = False


_state = _State()


def _reset_lock_after_fork() -> None:
    # A fork taken while another thread held the lock would leave the child
    # unable to ever install or uninstall.
    _state.lock = threading.RLock()


def _config_from_env() -> GuardConfig:
    # AZGUARD_AUTO has no GuardConfig field, and GuardConfig.from_env() turns a
    # set AZGUARD_AUTO into a bogus field name; validate it, then leave it out.
    raw = os.environ.get("AZGUARD_AUTO")
    if raw is None:
        return GuardConfig.from_env()
    describe_env({"AZGUARD_AUTO": raw})
    return GuardConfig.from_env({k: v for k, v in os.environ.items() if k != "AZGUARD_AUTO"})


def _describe(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if module and name:
        return f"{module}.{name}"
    return repr(obj)


def _current(patch: _Patch) -> Any:
    return patch.module.__dict__.get(patch.name)


class Installation:
    """The handle ``install()`` returns; also a context manager.

    ``uninstall()`` on a handle undoes only what that ``install()`` call did:
    the patch if it made it, or the config swap if it replaced the config of
    an install that was already active.  ``requests_azguard.uninstall()``
    undoes the patch whoever made it.
    """

    def __init__(
        self,
        config: GuardConfig,
        generation: int,
        made_patch: bool,
        previous_config: Optional[GuardConfig],
    ) -> None:
        self.config = config
        self._generation = generation
        self._made_patch = made_patch
        self._previous_config = previous_config
        self._done = False

    @property
    def active(self) -> bool:
        """Whether the install this handle belongs to is still in place."""
        with _state.lock:
            return _state.patch is not None and _state.generation == self._generation

    def uninstall(self) -> bool:
        """Undo this handle's ``install()``; ``True`` if something was undone."""
        with _state.lock:
            if self._done or not self.active:
                self._done = True
                return False
            if self._made_patch:
                undone = _uninstall_locked()
            elif self._previous_config is not None and installed_config() is self.config:
                set_installed_config(self._previous_config)
                undone = True
            else:
                undone = False
            self._done = True
            return undone

    def __enter__(self) -> Installation:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.uninstall()

    def __repr__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"<requests_azguard install ({state}) config={self.config!r}>"


def _sdks_from_env() -> bool:
    return os.environ.get("AZGUARD_AUTO", "").strip().lower() != "requests"


def install(config: Optional[GuardConfig] = None, *, sdks: Optional[bool] = None) -> Installation:
    """Guard every ``requests.Session`` created from now on, ``requests.get()`` included,
    and the urllib3 pool managers SDKs build (botocore, kubernetes; see ``_sdk``).

    :param config: the :class:`GuardConfig` for those sessions; ``None`` reads
        ``AZGUARD_*`` once, now (a bad value raises ``ConfigError`` and nothing
        is patched).
    :param sdks: also rebind the names SDKs look up; ``None`` means yes unless
        ``AZGUARD_AUTO=requests``.  The install that patches decides; a later
        call while installed does not change the scope.

    Idempotent: while installed, ``install()`` patches nothing more.  With an
    explicit ``config`` it replaces the active one for sessions created
    afterwards (an explicit argument wins over the environment-derived config
    of ``AZGUARD_AUTO``); its handle puts the previous config back.
    """
    if config is not None and not isinstance(config, GuardConfig):
        raise ConfigError("config", config, "a requests_azguard.GuardConfig or None")
    import requests.sessions

    with _state.lock:
        patch = _state.patch
        if patch is not None:
            previous = installed_config()
            assert previous is not None
            current = _current(patch)
            if current is not patch.replacement:
                warnings.warn(
                    f"requests_azguard.install(): already installed, but "
                    f"{_TARGET_MODULE}.{_TARGET_NAME} is now {_describe(current)}, "
                    "rebound after requests-azguard; new Sessions are not guarded "
                    "and it was left in place",
                    RuntimeWarning,
                    stacklevel=2,
                )
            if _state.sdk is not None:
                # An SDK module imported while the first install was running
                # (mid-import then) is patched now.
                _state.sdk.refresh()
            if config is not None and config != previous:
                set_installed_config(config)
                return Installation(config, _state.generation, False, previous)
            return Installation(previous, _state.generation, False, None)

        if config is None:
            config = _config_from_env()
        module = requests.sessions
        original = module.__dict__[_TARGET_NAME]
        if not _state.fork_hook:
            from . import _fork  # the one place that resets state after fork

            _fork.on_fork(_reset_lock_after_fork)
            _state.fork_hook = True
        set_installed_config(config)
        _state.generation += 1
        _state.patch = _Patch(module, _TARGET_NAME, original, _InstalledAdapter)
        setattr(module, _TARGET_NAME, _InstalledAdapter)
        if sdks if sdks is not None else _sdks_from_env():
            _state.sdk = SdkPatches()
            _state.sdk.apply()
        return Installation(config, _state.generation, True, None)


def _uninstall_locked() -> bool:
    patch = _state.patch
    if patch is None:
        return False
    current = _current(patch)
    if current is not patch.replacement:
        raise InstallConflictError(
            f"requests_azguard.uninstall(): {_TARGET_MODULE}.{_TARGET_NAME} is now "
            f"{_describe(current)}, rebound after requests-azguard installed; it was left "
            f"in place rather than clobbered (requests-azguard would restore "
            f"{_describe(patch.original)}). Undo that patch first, then call uninstall() again."
        )
    sdk = _state.sdk
    conflicts = sdk.conflicts() if sdk is not None else []
    if conflicts:
        # Checked before anything is undone: all names go back or none.
        raise InstallConflictError(
            "requests_azguard.uninstall(): " + "; ".join(conflicts) + ", rebound after "
            "requests-azguard installed; nothing was undone rather than clobber it. "
            "Undo that patch first, then call uninstall() again."
        )
    if sdk is not None:
        sdk.undo()
        _state.sdk = None
    setattr(patch.module, patch.name, patch.original)
    _state.patch = None
    set_installed_config(None)
    return True


def uninstall() -> bool:
    """Put back exactly what ``install()`` replaced; ``True`` if it was installed.

    Raises :class:`InstallConflictError` (and changes nothing) when something
    else rebound ``requests.sessions.HTTPAdapter`` after ``install()``.
    Sessions created while installed keep their guarded adapters.
    """
    with _state.lock:
        return _uninstall_locked()


def sdk_modules_reached() -> List[str]:
    """The SDK modules whose names the active install rebound."""
    with _state.lock:
        return [] if _state.sdk is None else _state.sdk.reached()


def is_installed() -> bool:
    """Whether ``install()`` is in effect (its patch recorded and not undone)."""
    with _state.lock:
        return _state.patch is not None
