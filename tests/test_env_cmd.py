"""``azguard env``: effective configuration with sources; exit 2 on a bad value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from requests_azguard._config import ENV_VARS
from requests_azguard.tools import env as env_cmd


def run_main(capsys: pytest.CaptureFixture[str], environ: Dict[str, str], *argv: str) -> tuple:
    code = env_cmd.main(list(argv), environ=environ)
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> Dict[str, List[str]]:
    table = {}
    for line in out.splitlines():
        if not line.startswith("AZGUARD_"):
            continue  # the libraries reached, after the table
        parts = line.split()
        table[parts[0]] = parts[1:]
    return table


def test_defaults_and_sources(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, {})
    assert code == 0 and err == ""
    table = rows(out)
    assert set(table) == set(ENV_VARS)
    assert table["AZGUARD_FALLBACK"] == ["raise", "(default)"]  # not "off"
    assert table["AZGUARD_KEEPALIVE_IDLE"] == ["30s", "(default)"]
    assert table["AZGUARD_USER_TIMEOUT"] == ["30s", "(default)"]
    assert table["AZGUARD_DEFAULT_TIMEOUT"] == ["off", "(default)"]
    assert table["AZGUARD_METRICS_ADDR"] == ["127.0.0.1", "(default)"]


def test_values_from_the_environment_name_their_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {
        "AZGUARD_FALLBACK": "503",
        "AZGUARD_KEEPALIVE_IDLE": "2m",
        "AZGUARD_USER_TIMEOUT": "off",
        "AZGUARD_DEFAULT_TIMEOUT": "5,60",
        "AZGUARD_BREAKER_STATUSES": "503, 502",
        "AZGUARD_MAX_IDLE": "  ",  # blank keeps the default
    }
    code, out, _ = run_main(capsys, env)
    assert code == 0
    table = rows(out)
    assert table["AZGUARD_FALLBACK"] == ["503", "(AZGUARD_FALLBACK)"]
    assert table["AZGUARD_KEEPALIVE_IDLE"] == ["120s", "(AZGUARD_KEEPALIVE_IDLE)"]
    assert table["AZGUARD_USER_TIMEOUT"] == ["off", "(AZGUARD_USER_TIMEOUT)"]
    assert table["AZGUARD_DEFAULT_TIMEOUT"] == ["5,60", "(AZGUARD_DEFAULT_TIMEOUT)"]
    assert table["AZGUARD_BREAKER_STATUSES"] == ["502,503", "(AZGUARD_BREAKER_STATUSES)"]
    assert table["AZGUARD_MAX_IDLE"] == ["60s", "(default)"]


def test_json_is_one_machine_readable_object(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"AZGUARD_REDIS_URL": "redis://user:s3cret@127.0.0.1:6379/0", "AZGUARD_RETRIES": "1"}
    code, out, _ = run_main(capsys, env, "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == set(ENV_VARS)
    assert data["AZGUARD_RETRIES"] == {
        "field": "retries",
        "value": 1,
        "shown": "1",
        "source": "AZGUARD_RETRIES",
    }
    assert data["AZGUARD_FALLBACK"]["value"] is None
    assert data["AZGUARD_FALLBACK"]["shown"] == "raise"
    assert data["AZGUARD_BREAKER_STATUSES"]["value"] == [502, 503, 504]
    assert "s3cret" not in out
    assert data["AZGUARD_REDIS_URL"]["value"] == "redis://user:***@127.0.0.1:6379/0"


def test_bad_value_exits_2_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, {"AZGUARD_RETRIES": "many"})
    assert code == 2 and out == ""
    assert "AZGUARD_RETRIES" in err and "'many'" in err and "whole number" in err


def commands() -> List[List[str]]:
    found = [[sys.executable, "-m", "requests_azguard", "env"]]
    script = Path(sys.executable).parent / "azguard"
    if script.exists():  # the console script of this very installation
        found.append([str(script), "env"])
    return found


@pytest.mark.parametrize("command", commands(), ids=lambda c: Path(c[0]).name)
def test_bad_keepalive_idle_exits_2_naming_the_variable(command: List[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZGUARD_")}
    env["AZGUARD_KEEPALIVE_IDLE"] = "abc"
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one clear line, no traceback
    assert "AZGUARD_KEEPALIVE_IDLE" in lines[0] and "'abc'" in lines[0]
    assert "duration" in lines[0]


def test_good_environment_in_a_subprocess() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZGUARD_")}
    env["AZGUARD_KEEPALIVE_IDLE"] = "45s"
    proc = subprocess.run(
        [sys.executable, "-m", "requests_azguard", "env", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["AZGUARD_KEEPALIVE_IDLE"]["value"] == 45.0
    assert data["AZGUARD_KEEPALIVE_IDLE"]["source"] == "AZGUARD_KEEPALIVE_IDLE"


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """`azguard env --json | head`: the reader is gone before the output is."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # every write of the child now fails with EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "from requests_azguard.tools.cli import console_main; console_main()",
             "env", "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert b"Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 141
