"""``azguard run -- CMD ...``: validate, set AZGUARD_AUTO=1, become the program."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from requests_azguard._config import describe_env
from requests_azguard._errors import ConfigError
from requests_azguard.tools import cli
from requests_azguard.tools import run as run_cmd

BOUND = 60


def clean_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZGUARD_")}
    env.update(extra)
    return env


def azguard_run(
    args: List[str], env: Dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "requests_azguard", "run", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=BOUND,
    )


def test_exit_code_argv_and_pid_are_the_programs(tmp_path: Path) -> None:
    code = (
        "import json, os, sys; "
        "print(json.dumps({'pid': os.getpid(), 'argv': sys.argv[1:], "
        "'auto': os.environ.get('AZGUARD_AUTO'), 'idle': os.environ.get('AZGUARD_MAX_IDLE')})); "
        "sys.exit(7)"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "requests_azguard",
            "run",
            "--",
            sys.executable,
            "-c",
            code,
            "-h",
            "--",
            "x y",
        ],
        env=clean_env(AZGUARD_AUTO="0", AZGUARD_MAX_IDLE="5s"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=BOUND)
    assert proc.returncode == 7, err
    seen = json.loads(out)
    # exec, not a wrapper process: signals and the pid reach the program itself.
    assert seen["pid"] == proc.pid
    assert seen["argv"] == ["-h", "--", "x y"]
    # run is the explicit request: it wins over AZGUARD_AUTO=0; the rest passes through.
    assert seen["auto"] == "1"
    assert seen["idle"] == "5s"


def test_children_of_the_program_are_guarded_too(tmp_path: Path) -> None:
    grandchild = (
        "import requests; print(type(requests.Session().get_adapter('http://x/')).__name__)"
    )
    program = (
        f"import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c', {grandchild!r}]))"
    )
    proc = azguard_run(["--", sys.executable, "-c", program], clean_env(), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "_InstalledAdapter\n"
    # The control: the same program outside azguard run.
    plain = subprocess.run(
        [sys.executable, "-c", program],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=BOUND,
    )
    assert plain.stdout == "HTTPAdapter\n"


def test_bad_value_exits_2_with_one_line_and_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    program = f"open({str(marker)!r}, 'w').close()"
    env = clean_env(AZGUARD_KEEPALIVE_IDLE="soon")
    proc = azguard_run(["--", sys.executable, "-c", program], env, tmp_path)
    assert proc.returncode == 2
    with pytest.raises(ConfigError) as info:
        describe_env({"AZGUARD_KEEPALIVE_IDLE": "soon"})
    assert proc.stderr == f"azguard run: {info.value}\n"
    assert proc.stdout == ""
    assert not marker.exists()


def test_command_not_found_and_not_executable(tmp_path: Path) -> None:
    missing = azguard_run(["--", "azguard-no-such-command"], clean_env(), tmp_path)
    assert missing.returncode == 127
    assert missing.stderr == "azguard run: command not found: azguard-no-such-command\n"
    plain_file = tmp_path / "data.txt"
    plain_file.write_text("not a program")
    denied = azguard_run(["--", str(plain_file)], clean_env(), tmp_path)
    assert denied.returncode == 126
    assert "not an executable file" in denied.stderr


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cmd.main([]) == 2
    assert run_cmd.main(["--"]) == 2
    assert "missing the command" in capsys.readouterr().err
    assert cli.main(["run"]) == 2


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run_cmd.main(["-h"])
    assert info.value.code == 0
    assert "azguard run" in capsys.readouterr().out


def test_child_environ_validates_and_sets_auto() -> None:
    env = run_cmd.child_environ({"PATH": "/bin", "AZGUARD_AUTO": "maybe", "AZGUARD_RETRIES": "2"})
    assert env == {"PATH": "/bin", "AZGUARD_AUTO": "1", "AZGUARD_RETRIES": "2"}
    with pytest.raises(ConfigError, match="AZGUARD_RETRIES"):
        run_cmd.child_environ({"AZGUARD_RETRIES": "many"})
