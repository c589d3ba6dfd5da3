#!/usr/bin/env bash
# The test command (README): sets up both supported lines in their own venvs
# and runs lint, types and the whole suite on each.
#   latest: newest requests with urllib3 2.x
#   legacy: requests 2.31 with urllib3 1.26.x
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k config`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
status=0

setup() {  # name, pins...
  local venv=".venv-$1"; shift
  if [ ! -x "$venv/bin/python" ]; then
    "$PY" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,all]" "$@"
}

setup latest "requests" "urllib3>=2,<3"
setup legacy "requests==2.31.0" "urllib3>=1.26,<2"

echo "== ruff and mypy (latest line)"
.venv-latest/bin/ruff check requests_azguard tests benchmarks examples || status=1
.venv-latest/bin/ruff format --check requests_azguard || status=1
.venv-latest/bin/mypy --strict requests_azguard || status=1

for line in latest legacy; do
  v=".venv-$line"
  echo "== pytest on the $line line: $($v/bin/python -c 'import requests, urllib3; print("requests", requests.__version__, "urllib3", urllib3.__version__)')"
  "$v/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=1
done

# Downstream: requests' own suite with AzGuardAdapter as HTTPAdapter (latest
# line, default configuration); only for the whole suite, not `run.sh -k x`.
if [ $# -eq 0 ]; then
  bash tests/downstream/requests_suite.sh || status=1
fi
exit $status
