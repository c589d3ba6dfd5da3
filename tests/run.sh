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
# The cloud SDKs' integration tests, on both lines (botocore pins urllib3 per
# Python version and resolves on both; the pins keep each line's versions).
.venv-latest/bin/python -m pip install -q --disable-pip-version-check -e ".[sdk]" "urllib3>=2,<3"
.venv-legacy/bin/python -m pip install -q --disable-pip-version-check -e ".[sdk]" "requests==2.31.0" "urllib3>=1.26,<2"

echo "== docs: mkdocs build --strict (latest line)"
.venv-latest/bin/python -m pip install -q --disable-pip-version-check -e ".[docs]"
NO_MKDOCS_2_WARNING=1 .venv-latest/bin/mkdocs build --strict --quiet -d "$(mktemp -d)" || status=1

echo "== ruff and mypy (latest line)"
.venv-latest/bin/ruff check requests_azguard tests benchmarks examples || status=1
.venv-latest/bin/ruff format --check requests_azguard || status=1
.venv-latest/bin/mypy --strict requests_azguard || status=1

# The package as users get it: sdist and wheel built by `python -m build`,
# the wheel (not editable) installed in a fresh venv, and the suite run
# against it from outside the checkout, so neither pytest nor the
# interpreters the tests start can import the checkout instead.
echo "== build sdist and wheel, install the wheel in a fresh venv"
dist="$(mktemp -d)"
.venv-latest/bin/python -m pip install -q --disable-pip-version-check build
.venv-latest/bin/python -m build -q -o "$dist" . >/dev/null || status=1
ls "$dist"/requests_azguard-*.tar.gz "$dist"/requests_azguard-*-py3-none-any.whl || status=1
rm -rf .venv-wheel
"$PY" -m venv .venv-wheel
wheel="$(ls "$dist"/requests_azguard-*.whl | head -1)"
.venv-wheel/bin/python -m pip install -q --disable-pip-version-check "$wheel[test,all,sdk]" "urllib3>=2,<3" || status=1
(cd "$dist" && "$OLDPWD/.venv-wheel/bin/python" -c \
  'import requests_azguard as a, sys; assert "site-packages" in a.__file__, a.__file__; print("installed:", a.__file__)') || status=1

for line in latest legacy; do
  v=".venv-$line"
  echo "== pytest on the $line line: $($v/bin/python -c 'import requests, urllib3; print("requests", requests.__version__, "urllib3", urllib3.__version__)')"
  "$v/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=1
done

echo "== pytest against the installed wheel (.venv-wheel), from outside the checkout"
# The kernel chaos scenarios exercise the same code as on the latest line and
# take minutes; the wheel run is about what the wheel ships, so it skips them.
repo="$PWD"
(cd "$dist" && REQUESTS_AZGUARD_WHEEL=1 "$repo/.venv-wheel/bin/pytest" -q -p no:cacheprovider \
  -c "$repo/pyproject.toml" --rootdir "$repo" -m "not chaos" "$@" "$repo/tests") || status=1
# Downstream: requests' own suite with AzGuardAdapter as HTTPAdapter (latest
# line, default configuration); only for the whole suite, not `run.sh -k x`.
if [ $# -eq 0 ]; then
  bash tests/downstream/requests_suite.sh || status=1
fi
exit $status
