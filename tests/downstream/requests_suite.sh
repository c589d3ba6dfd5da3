#!/usr/bin/env bash
# Downstream compatibility: requests' own test suite with AzGuardAdapter in
# place of requests.adapters.HTTPAdapter, default configuration (breaker on),
# offline, on the latest line (the requests and urllib3 of .venv-latest).
#
# Like urllib3's CI running requests' and botocore's suites.  Steps:
#  1. The sdist of .venv-latest's requests from PyPI (its tests/ are not in
#     the wheel), into a temporary directory.
#  2. .venv-downstream: the package (editable) with exactly the requests,
#     urllib3, pybreaker and pytest versions of .venv-latest, plus what
#     requests' tests need (the sdist's "test" dependency group, read by
#     requests_deps.py).  A venv of its own because httpbin pulls in
#     brotlicffi, which changes urllib3's Accept-Encoding, and
#     pytest-httpbin/pytest-mock would load into our suite as plugins:
#     .venv-latest stays as the README describes it.
#  3. pytest on its tests/ with -p azguard_requests_plugin (next to this
#     script), which swaps the adapter before the test modules are imported,
#     deselects the tests that need the internet (reasons in the plugin) and
#     fails the run if no request went through the guard.
# Exit status: pytest's.  Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
PY="${PYTHON:-python3}"
latest="$root/.venv-latest/bin/python"
venv="$root/.venv-downstream"
if [ ! -x "$latest" ]; then
  echo "requests_suite.sh: $latest missing; run bash tests/run.sh first" >&2
  exit 2
fi
pins=$("$latest" - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{d}=={version(d)}" for d in ("requests", "urllib3", "pybreaker", "pytest")))
EOF
)
requests_version=$("$latest" -c 'import requests; print(requests.__version__)')

if [ ! -x "$venv/bin/python" ]; then
  "$PY" -m venv "$venv"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
  --no-binary :all: -d "$work" "requests==$requests_version" 2> >(grep -v "^WARNING: Location" >&2)
tar -xzf "$work"/requests-*.tar.gz -C "$work"
src="$work/requests-$requests_version"

mapfile -t test_deps < <("$venv/bin/python" "$here/requests_deps.py" "$src/pyproject.toml")
# shellcheck disable=SC2086  # $pins is a list of requirement specifiers
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e . $pins "${test_deps[@]}" \
  2> >(grep -v "^WARNING: Location" >&2)

echo "== requests $requests_version's own suite with AzGuardAdapter ($pins)"
cd "$src"
# The default configuration: no AZGUARD_* at all (CI sets AZGUARD_REQUIRE_CHAOS).
unset $(env | sed -n 's/^\(AZGUARD_[A-Za-z0-9_]*\)=.*/\1/p') 2>/dev/null || true
status=0
PYTHONPATH="$here" "$venv/bin/python" -m pytest -q -p no:cacheprovider --tb=short -rfE \
  -p azguard_requests_plugin -W ignore::DeprecationWarning tests "$@" || status=$?
echo "== requests' suite step: ${SECONDS}s, exit status $status"
exit $status
