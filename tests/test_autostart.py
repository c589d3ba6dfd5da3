"""AZGUARD_AUTO: legacy programs guarded with no code change, in real interpreters.

Each test starts a fresh interpreter of this environment, which runs the
``requests_azguard_autostart.pth`` line that ``pip install (-e) .`` shipped
into site-packages.  Guarding is proven by socket options read back with
getsockopt inside the program (printed as JSON), not by class names alone.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import site
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pytest
from servers import Action, HTTPTestServer

import requests_azguard
from requests_azguard import _autostart, _config, _install
from requests_azguard._config import describe_env
from requests_azguard._errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
LINUX = hasattr(socket, "TCP_KEEPIDLE")
BOUND = 60  # seconds: a stuck child fails the test instead of hanging CI

# The legacy program: plain requests, no mention of requests_azguard.  It
# reports, for each way of making a request, the keepalive options of the
# socket that carried it, read back once it is idle in its pool.
LEGACY = """
import json, multiprocessing, socket, sys, threading

BEFORE = sorted(m for m in sys.modules if m.split(".")[0] in ("requests", "requests_azguard"))

import requests
from pooled import pooled_sockets  # the tests' helper, copied beside this program

URL = sys.argv[1]
CHECKS = sys.argv[2].split(",")


def read_back(sock):
    out = {"SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}
    if hasattr(socket, "TCP_KEEPIDLE"):
        out["TCP_KEEPIDLE"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
    return out


def via_get():
    # requests.get closes its Session on return: look at the socket from a
    # response hook, once the body is read and the connection is pooled.
    seen = []

    def grab(r, **kwargs):
        r.content
        seen.extend(read_back(s) for s in pooled_sockets(r.connection))

    requests.get(URL, timeout=10, hooks={"response": grab})
    return seen[0] if len(seen) == 1 else {"error": repr(seen)}


def via_session():
    s = requests.Session()
    s.get(URL, timeout=10)
    socks = pooled_sockets(s.get_adapter(URL))
    return read_back(socks[0]) if len(socks) == 1 else {"error": repr(socks)}


def via_threads():
    results = [None] * 4

    def work(i):
        results[i] = via_get()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def child(queue):
    queue.put(via_get())


def via_process(method):
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue,))
    proc.start()
    try:
        return queue.get(timeout=30)
    finally:
        proc.join(30)


if __name__ == "__main__":
    out = {
        "before": BEFORE,
        "loader": type(requests.__spec__.loader).__name__,
        "adapter": type(requests.Session().get_adapter(URL)).__name__,
    }
    for check in CHECKS:
        if check == "get":
            out[check] = via_get()
        elif check == "session":
            out[check] = via_session()
        elif check == "threads":
            out[check] = via_threads()
        else:
            out[check] = via_process(check)
    print(json.dumps(out))
"""

ALL_CHECKS = ["get", "session", "threads", "fork", "spawn", "forkserver"]
GUARDED = {"SO_KEEPALIVE": 1, **({"TCP_KEEPIDLE": 17} if LINUX else {})}


def clean_env(**extra: str) -> Dict[str, str]:
    """This environment without any AZGUARD_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZGUARD_")}
    env.update(extra)
    return env


def run(
    argv: List[str], env: Mapping[str, str], cwd: Optional[Path] = None, timeout: float = BOUND
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def run_legacy(
    tmp_path: Path, url: str, checks: List[str], env: Mapping[str, str], via_run: bool = False
) -> Dict[str, Any]:
    script = tmp_path / "legacy.py"
    script.write_text(LEGACY)
    shutil.copy(Path(__file__).with_name("pooled.py"), tmp_path)
    argv = [sys.executable, str(script), url, ",".join(checks)]
    if via_run:
        argv = [sys.executable, "-m", "requests_azguard", "run", "--", *argv]
    proc = run(argv, env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result: Dict[str, Any] = json.loads(proc.stdout)
    result["stderr"] = proc.stderr
    return result


def options_of(result: Dict[str, Any]) -> List[Dict[str, int]]:
    """Every socket reading in a legacy-program result, flattened."""
    readings: List[Dict[str, int]] = []
    for check in ALL_CHECKS:
        value = result.get(check)
        if value is not None:
            readings.extend(value if isinstance(value, list) else [value])
    return readings


# -- the .pth is really shipped --------------------------------------------


def _shipped_pth() -> Optional[Path]:
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    for d in dirs:
        path = Path(d, _autostart.PTH_NAME)
        if path.is_file():
            return path
    return None


def test_pth_is_installed_and_current() -> None:
    shipped = _shipped_pth()
    assert shipped is not None, (
        f"{_autostart.PTH_NAME} is not in this interpreter's site-packages: "
        "`pip install -e .` (or `pip install .`) did not ship it"
    )
    assert shipped.read_text() == (REPO / _autostart.PTH_NAME).read_text(), (
        f"{shipped} is stale: re-run `pip install -e .`"
    )
    # site runs .pth lines only when they start with "import".
    assert shipped.read_text().startswith("import ")
    assert shipped.read_text().count("\n") == 1


# -- legacy programs -----------------------------------------------------------


def test_legacy_program_is_guarded_under_auto(tmp_path: Path, server: HTTPTestServer) -> None:
    env = clean_env(AZGUARD_AUTO="1", AZGUARD_KEEPALIVE_IDLE="17")
    result = run_legacy(tmp_path, server.url, ALL_CHECKS, env)
    assert result["stderr"] == ""
    # requests is imported by the program, not by the hook, and the hook
    # leaves requests' own loader in place.
    assert result["before"] == ["requests_azguard._autostart"]
    assert result["loader"] == "SourceFileLoader"
    assert result["adapter"] == "_InstalledAdapter"
    readings = options_of(result)
    assert len(readings) == 9
    assert all(r == GUARDED for r in readings), result


def test_legacy_program_is_guarded_under_azguard_run(
    tmp_path: Path, server: HTTPTestServer
) -> None:
    env = clean_env(AZGUARD_KEEPALIVE_IDLE="17")
    result = run_legacy(tmp_path, server.url, ALL_CHECKS, env, via_run=True)
    assert result["stderr"] == ""
    assert result["before"] == ["requests_azguard._autostart"]
    readings = options_of(result)
    assert len(readings) == 9
    assert all(r == GUARDED for r in readings), result


def test_legacy_program_is_unguarded_without_either(tmp_path: Path, server: HTTPTestServer) -> None:
    env = clean_env(AZGUARD_KEEPALIVE_IDLE="17")
    result = run_legacy(tmp_path, server.url, ALL_CHECKS, env)
    assert result["before"] == []
    assert result["adapter"] == "HTTPAdapter"
    readings = options_of(result)
    assert len(readings) == 9
    assert all(r["SO_KEEPALIVE"] == 0 for r in readings), result


@pytest.mark.parametrize(
    ("value", "loaded"),
    [
        ("0", []),  # the .pth line itself knows the "off" spellings: nothing is imported
        ("off", []),
        (" False ", []),
        ("", []),  # empty counts as unset, as everywhere in AZGUARD_*
        ("  ", []),
    ],
)
def test_auto_off_values_leave_requests_alone(
    tmp_path: Path, server: HTTPTestServer, value: str, loaded: List[str]
) -> None:
    result = run_legacy(tmp_path, server.url, ["get"], clean_env(AZGUARD_AUTO=value))
    assert result["stderr"] == ""
    assert result["before"] == loaded
    assert result["adapter"] == "HTTPAdapter"
    assert result["get"]["SO_KEEPALIVE"] == 0


# -- bad values: one line, program runs unguarded ---------------------------


def _error_for(variable: str, value: str) -> str:
    with pytest.raises(ConfigError) as info:
        describe_env({variable: value})
    return f"azguard: {info.value}; requests is NOT guarded\n"


def test_bad_auto_value_is_one_line_and_program_runs(
    tmp_path: Path, server: HTTPTestServer
) -> None:
    result = run_legacy(tmp_path, server.url, ["get"], clean_env(AZGUARD_AUTO="maybe"))
    assert result["stderr"] == _error_for("AZGUARD_AUTO", "maybe")
    assert result["get"]["SO_KEEPALIVE"] == 0


def test_bad_setting_is_one_line_and_program_runs(tmp_path: Path, server: HTTPTestServer) -> None:
    env = clean_env(AZGUARD_AUTO="1", AZGUARD_KEEPALIVE_IDLE="soon")
    result = run_legacy(tmp_path, server.url, ["get", "session"], env)
    assert result["stderr"] == _error_for("AZGUARD_KEEPALIVE_IDLE", "soon")
    assert result["adapter"] == "HTTPAdapter"
    assert result["get"]["SO_KEEPALIVE"] == 0
    assert result["session"]["SO_KEEPALIVE"] == 0


def test_pth_line_survives_a_missing_package(tmp_path: Path) -> None:
    """Left-over .pth, package gone: one line, the interpreter still runs."""
    line = (REPO / _autostart.PTH_NAME).read_text()
    code = f"exec({line!r}); print('still running')"
    # -S: no site-packages, so requests_azguard cannot be found.
    proc = run([sys.executable, "-S", "-c", code], clean_env(AZGUARD_AUTO="1"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "still running\n"
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("azguard: AZGUARD_AUTO start-up hook failed (ImportError")
    assert proc.stderr.endswith("requests is NOT guarded\n")


def test_unexpected_install_failure_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(config: Any = None) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(_install, "install", broken)
    _autostart._install()
    err = capsys.readouterr().err
    assert err == (
        "azguard: AZGUARD_AUTO start-up hook failed (RuntimeError: boom); requests is NOT guarded\n"
    )


def test_say_never_raises_on_a_broken_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    class Closed(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError("closed")

    monkeypatch.setattr(sys, "stderr", Closed())
    _autostart._say("x")
    monkeypatch.setattr(sys, "stderr", None)
    _autostart._say("x")


def test_start_installs_at_once_when_requests_is_already_imported() -> None:
    assert "requests" in sys.modules
    try:
        assert _autostart.start({"AZGUARD_AUTO": "yes"}) is True
        assert _install.is_installed()
        assert not any(isinstance(f, _autostart.RequestsHook) for f in sys.meta_path)
    finally:
        requests_azguard.uninstall()


def test_boolean_spellings_match_the_config_parser() -> None:
    assert _autostart._TRUE == _config._TRUE
    assert _autostart._FALSE == _config._FALSE
    with pytest.raises(ConfigError) as info:
        describe_env({"AZGUARD_AUTO": "x"})
    assert info.value.accepted == _autostart._AUTO_ACCEPTED


# -- start-up cost ---------------------------------------------------------------


def _imported(importtime_stderr: str) -> List[str]:
    names = []
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.append(line.rsplit("|", 1)[1].strip())
    return names


def _ours(names: List[str]) -> List[str]:
    return [n for n in names if n.split(".")[0] in ("requests", "requests_azguard")]


def test_importtime_unset_imports_neither_requests_nor_the_package(tmp_path: Path) -> None:
    env = clean_env()
    quiet = run([sys.executable, "-X", "importtime", "-c", "pass"], env, cwd=tmp_path)
    assert quiet.returncode == 0
    names = _imported(quiet.stderr)
    assert names, "no -X importtime output to inspect"
    assert _ours(names) == []
    # The control: the same parsing does see requests when it is imported.
    loud = run([sys.executable, "-X", "importtime", "-c", "import requests"], env, cwd=tmp_path)
    assert "requests" in _ours(_imported(loud.stderr))


def test_auto_set_still_imports_nothing_until_the_program_does(tmp_path: Path) -> None:
    code = (
        "import json, sys; print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('requests', 'requests_azguard', 'urllib3'))))"
    )
    unset = run([sys.executable, "-c", code], clean_env(), cwd=tmp_path)
    assert json.loads(unset.stdout) == []
    armed = run([sys.executable, "-c", code], clean_env(AZGUARD_AUTO="1"), cwd=tmp_path)
    assert armed.stderr == ""
    assert json.loads(armed.stdout) == ["requests_azguard._autostart"]


# -- AZGUARD_DEFAULT_TIMEOUT end to end ---------------------------------------

NO_TIMEOUT = """
import sys, time
import requests
started = time.monotonic()
try:
    requests.get(sys.argv[1])  # no timeout: a legacy script's habit
    print("answered")
except requests.RequestException as exc:
    print(type(exc).__name__, "Read timed out" in str(exc), time.monotonic() - started)
"""


def test_default_timeout_ends_a_request_to_a_silent_server(tmp_path: Path) -> None:
    script = tmp_path / "no_timeout.py"
    script.write_text(textwrap.dedent(NO_TIMEOUT))
    with HTTPTestServer(lambda req: Action(kind="silence")) as srv:
        env = clean_env(AZGUARD_AUTO="1", AZGUARD_DEFAULT_TIMEOUT="0.3", AZGUARD_RETRIES="0")
        proc = run([sys.executable, str(script), srv.url], env)
        assert proc.returncode == 0, proc.stderr
        _kind, read_timed_out, elapsed = proc.stdout.split()
        assert read_timed_out == "True", proc.stdout
        assert float(elapsed) >= 0.3
        assert srv.accepted == 1
        # The control: unguarded, the same program is still waiting when killed.
        with pytest.raises(subprocess.TimeoutExpired):
            run([sys.executable, str(script), srv.url], clean_env(), timeout=1.5)


@pytest.mark.parametrize(("value", "hooks", "lines"), [("1", 1, 0), ("maybe", 0, 1)])
def test_pth_line_run_twice_arms_once_and_says_once(
    tmp_path: Path, value: str, hooks: int, lines: int
) -> None:
    """site may run a .pth line twice (CPython 3.11 venvs do)."""
    line = (REPO / _autostart.PTH_NAME).read_text()
    code = (
        f"exec({line!r}); exec({line!r}); import sys; "
        "print(sum(type(f).__name__ == 'RequestsHook' for f in sys.meta_path))"
    )
    proc = run([sys.executable, "-c", code], clean_env(AZGUARD_AUTO=value), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == hooks
    assert proc.stderr.count("\n") == lines


def test_program_importing_the_package_first_is_guarded_too() -> None:
    """requests_azguard imports requests itself: the hook must not re-enter the
    half-initialised package, and the guard must still be installed."""
    import os
    import subprocess
    import sys

    code = (
        "import requests_azguard, requests\n"
        "from requests_azguard import AzGuardAdapter\n"
        "print(isinstance(requests.Session().adapters['http://'], AzGuardAdapter))\n"
    )
    env = {**os.environ, "AZGUARD_AUTO": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "NOT guarded" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "True"
    env.pop("AZGUARD_AUTO")
    plain = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert plain.stdout.strip() == "False"
