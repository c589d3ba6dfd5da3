"""Misspelt AZGUARD_* names are warned about, once, wherever they are read;
the variables' documentation is generated from the config's specification."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Dict

import pytest
from servers import HTTPTestServer
from test_autostart import GUARDED, clean_env, run, run_legacy

import requests_azguard as az
from requests_azguard._config import _SPEC, ENV_VARS, unknown_env_vars
from requests_azguard.tools import env as env_cmd
from requests_azguard.tools import env_doc
from requests_azguard.tools import run as run_cmd

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("AZGUARD_RETRYS", "AZGUARD_RETRIES"),
        ("AZGUARD_ACKTIMEOUT", "AZGUARD_ACK_TIMEOUT"),
        ("AZGUARD_KEEPALIVE_IDEL", "AZGUARD_KEEPALIVE_IDLE"),
        ("azguard_retries", "AZGUARD_RETRIES"),
        ("AZGUARD_BREAKER_FAILMAX", "AZGUARD_BREAKER_FAIL_MAX"),
    ],
)
def test_from_env_warns_with_the_closest_name(name: str, closest: str) -> None:
    with pytest.warns(az.UnknownVariableWarning) as caught:
        cfg = az.GuardConfig.from_env({name: "2s"})
    assert cfg == az.GuardConfig()  # ignored, not applied
    (warning,) = caught.list
    assert str(warning.message) == (
        f"{name} is not a known variable and is ignored; did you mean {closest}?"
    )
    assert warning.filename == __file__  # points at the caller


def test_unrelated_name_gets_no_guess() -> None:
    assert unknown_env_vars({"AZGUARD_ZZZZZZZZZZZZZZZZZ": "1"}) == [
        ("AZGUARD_ZZZZZZZZZZZZZZZZZ", None)
    ]


def test_known_names_and_other_prefixes_are_quiet() -> None:
    env: Dict[str, str] = {v: "" for v in ENV_VARS}
    env.update(AZGUARD_REQUIRE_CHAOS="1", XAZGUARD_RETRYS="1", PATH="/bin")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        az.GuardConfig.from_env(env)
    assert unknown_env_vars(env) == []


def test_the_warning_can_be_filtered() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=az.UnknownVariableWarning)
        az.GuardConfig.from_env({"AZGUARD_RETRYS": "0"})
    assert caught == []
    assert issubclass(az.UnknownVariableWarning, UserWarning)


def test_env_lists_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    code = env_cmd.main([], environ={"AZGUARD_RETRYS": "0"})
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "unknown variables (ignored):\n  AZGUARD_RETRYS: did you mean AZGUARD_RETRIES?" in out
    code = env_cmd.main(["--json"], environ={"AZGUARD_RETRYS": "0"})
    data = json.loads(capsys.readouterr().out)
    assert data["AZGUARD_RETRYS"]["source"] == "unknown"
    assert data["AZGUARD_RETRYS"]["did_you_mean"] == "AZGUARD_RETRIES"
    assert set(data) == {*ENV_VARS, "AZGUARD_RETRYS"}


def test_run_refuses_unknown_names_with_exit_2(tmp_path: Path) -> None:
    env = clean_env(AZGUARD_ACKTIMEOUT="2s")
    proc = run([str(BIN / "azguard"), "run", "--", sys.executable, "-c", "print(1)"], env)
    assert proc.returncode == run_cmd.EXIT_CONFIG == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        "azguard run: AZGUARD_ACKTIMEOUT is not a known variable and is ignored; "
        "did you mean AZGUARD_ACK_TIMEOUT?\n"
    )


def test_hook_says_it_once_and_still_guards(tmp_path: Path, server: HTTPTestServer) -> None:
    env = clean_env(AZGUARD_AUTO="1", AZGUARD_KEEPALIVE_IDLE="17", AZGUARD_RETRYS="0")
    result = run_legacy(tmp_path, server.url, ["get", "session"], env)
    assert result["stderr"] == (
        "azguard: AZGUARD_RETRYS is not a known variable and is ignored; "
        "did you mean AZGUARD_RETRIES?\n"
    )
    assert result["get"] == GUARDED and result["session"] == GUARDED


@pytest.mark.parametrize("how", ["script", "module"])
def test_bad_auto_is_reported_once_by_env(how: str) -> None:
    argv = [str(BIN / "azguard")] if how == "script" else [sys.executable, "-m", "requests_azguard"]
    proc = run([*argv, "env"], clean_env(AZGUARD_AUTO="maybe"))
    assert proc.returncode == 2
    assert proc.stderr.count("AZGUARD_AUTO='maybe' is invalid") == 1, proc.stderr
    assert proc.stderr.count("\n") == 1


def test_env_help_is_generated_from_the_spec() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "requests_azguard", "env", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert "``" not in proc.stdout
    for var in _SPEC:
        assert var.variable in proc.stdout
        assert var.accepted in proc.stdout
        assert env_doc.MEANINGS[var.variable] in proc.stdout


def test_every_variable_has_a_meaning() -> None:
    assert set(env_doc.MEANINGS) == set(ENV_VARS)


@pytest.mark.parametrize("page", ["README.md", "docs/configuration.md"])
def test_configuration_tables_are_generated(page: str) -> None:
    path = REPO / page
    text = path.read_text()
    assert env_doc.rewrite(text) == text, (
        f"{page} drifted from the config spec: python -m requests_azguard.tools.env_doc {page}"
    )
    for var in ENV_VARS:
        assert f"| `{var}` |" in text
