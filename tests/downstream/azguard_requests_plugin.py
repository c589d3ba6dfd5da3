"""pytest plugin: run requests' own test suite with AzGuardAdapter as HTTPAdapter.

Loaded with ``-p azguard_requests_plugin`` by ``tests/downstream/requests_suite.sh``.
Before any of requests' test modules is imported, every name requests and its
tests look ``HTTPAdapter`` up under is rebound to ``AzGuardAdapter``, so each
Session the tests build (``requests.get()`` included) and each
``HTTPAdapter()`` they construct is the guard, under the default configuration
(no ``AZGUARD_*`` set: breaker on).

The run cannot silently test plain requests: the transport call of the
original HTTPAdapter counts whether it ran for an AzGuardAdapter, and the
session fails when none did or when any plain HTTPAdapter got through.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Generator, List

import pytest
import requests
import requests.adapters
import requests.sessions

import requests_azguard
from requests_azguard import AzGuardAdapter, GuardConfig
from requests_azguard._instrument import NoopInstrumentation

#: Tests deselected, by node id prefix, each with its reason.  Only tests that
#: need the internet belong here; every other difference must show as a failure.
DESELECTED: Dict[str, str] = {
    # TARPIT = http://10.255.255.1 must swallow SYNs so that connect() times
    # out.  Without the internet nothing does (unroutable, or, on the build
    # machine, a gateway that answers 404 at once), so plain requests fails
    # these too; deselecting them also keeps the run on loopback.
    "tests/test_requests.py::TestTimeout::test_connect_timeout": "needs the internet: "
    "the tar-pit 10.255.255.1 must swallow SYNs so that connect() times out",
    "tests/test_requests.py::TestTimeout::test_total_timeout_connect": "needs the internet: "
    "the tar-pit 10.255.255.1 must swallow SYNs so that connect() times out",
    # It resolves a public name to show that a DNS failure is a ConnectionError:
    # that asks the machine's resolver, off loopback; the guard's DNS failures
    # are covered by our own tests (tests/test_policy.py) without leaving it.
    "tests/test_requests.py::TestRequests::test_errors[http://doesnotexist.google.com-": (
        "needs the internet: resolves a public DNS name"
    ),
}

_ORIGINAL = requests.adapters.HTTPAdapter
_ORIGINAL_SEND = _ORIGINAL.send
_counts = {"guarded": 0, "plain": 0}
_plain_types: List[str] = []
_current_test = ["(collection)"]
#: What the breakers saw, in order: failed transport calls and transitions,
#: each with the test it happened in (shown when a breaker opened).
_trail: List[str] = []
_opened: List[str] = []
_circuit_open_failures: List[str] = []


def _counting_send(self: Any, *args: Any, **kwargs: Any) -> Any:
    # Runs as AzGuardAdapter's super().send(): the real transport.
    if isinstance(self, AzGuardAdapter):
        _counts["guarded"] += 1
    else:
        _counts["plain"] += 1
        _plain_types.append(type(self).__qualname__)
    try:
        response = _ORIGINAL_SEND(self, *args, **kwargs)
    except BaseException as exc:
        _trail.append(f"{_current_test[0]}: transport raised {type(exc).__name__}: {exc}")
        raise
    if response.status_code >= 500:
        _trail.append(f"{_current_test[0]}: transport got status {response.status_code}")
    return response


class _BreakerWatch(NoopInstrumentation):
    def breaker_transition(self, host: str, old: str, new: str) -> None:
        line = f"{_current_test[0]}: breaker {host} {old} -> {new}"
        _trail.append(line)
        if new == "open":
            _opened.append(line)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and "CircuitOpenError" in report.longreprtext:
        _circuit_open_failures.append(report.nodeid)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--azguard-fresh-breakers",
        action="store_true",
        help="diagnostic only: reset every breaker before each test, to see the "
        "differences a tripped breaker would otherwise hide (CI runs without it)",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    _current_test[0] = item.nodeid
    if item.config.getoption("azguard_fresh_breakers"):
        requests_azguard.reset_breakers()
    yield


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    leaked = sorted(k for k in os.environ if k.startswith("AZGUARD_"))
    if leaked:
        raise pytest.UsageError(
            f"the downstream run must use the default configuration; unset {', '.join(leaked)}"
        )
    cfg = GuardConfig.from_env()
    assert cfg == GuardConfig() and cfg.breaker, cfg
    # Every name requests' code and tests look the class up under; test
    # modules are imported later, at collection, so their
    # ``from requests.adapters import HTTPAdapter`` gets the guard too.
    requests.adapters.HTTPAdapter = AzGuardAdapter  # type: ignore[misc,assignment]
    requests.sessions.HTTPAdapter = AzGuardAdapter  # type: ignore[assignment]
    _ORIGINAL.send = _counting_send  # type: ignore[method-assign]
    requests_azguard.add_instrumentation(_BreakerWatch())


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    keep: List[pytest.Item] = []
    drop: List[pytest.Item] = []
    for item in items:
        (drop if any(item.nodeid.startswith(p) for p in DESELECTED) else keep).append(item)
    missing = [p for p in DESELECTED if not any(i.nodeid.startswith(p) for i in drop)]
    if missing and not (
        config.option.keyword or config.option.markexpr or config.args != ["tests"]
    ):
        # A renamed test upstream must not leave a stale entry behind silently.
        raise pytest.UsageError(f"deselection list names tests that no longer exist: {missing}")
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    module = __import__("tests.test_requests", fromlist=["HTTPAdapter"])
    if getattr(module, "HTTPAdapter", AzGuardAdapter) is not AzGuardAdapter:
        raise pytest.UsageError("tests.test_requests imported the plain HTTPAdapter")


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"azguard downstream: requests {requests.__version__} with "
        f"requests.adapters.HTTPAdapter = {requests_azguard.__name__}.AzGuardAdapter "
        f"{requests_azguard.__version__}, default configuration (breaker on)"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    tr = terminalreporter
    tr.section("azguard downstream")
    for prefix, reason in DESELECTED.items():
        tr.write_line(f"deselected {prefix}: {reason}")
    tr.write_line(
        f"transport calls: {_counts['guarded']} through AzGuardAdapter, "
        f"{_counts['plain']} through a plain HTTPAdapter {sorted(set(_plain_types))}"
    )
    if _counts["guarded"] == 0 or _counts["plain"]:
        tr.write_line("FAILED: this run did not test (only) the guard", red=True, bold=True)
    tr.write_line(
        f"breaker openings: {len(_opened)}; tests failed with CircuitOpenError: "
        f"{len(set(_circuit_open_failures))}"
    )
    if _opened:
        tr.write_line("what the breakers saw (failed transport calls and transitions):")
        for line in _trail:
            tr.write_line(f"  {line}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _counts["guarded"] == 0 or _counts["plain"]:
        # Make the run fail: it did not test the guard (or not only the guard).
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
