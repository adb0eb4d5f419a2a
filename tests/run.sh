#!/usr/bin/env bash
# Creates the virtual environment, installs the project with its test tools,
# then runs the linters, the type checker and the test suite.
# Usage: tests/run.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${HPO_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade pip
# Install torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[dev]"

# docker-compose validates the compose files without an engine (tests/deploy);
# pgbouncer runs in front of the test Postgres (tests/workers/test_connections.py).
apt_install() {  # apt_install COMMAND PACKAGE
    if ! command -v "$1" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$1" ] && [ "$(id -u)" = "0" ] \
        && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y -qq "$2" >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$2" >/dev/null 2>&1; } \
            || echo "warning: could not install $2" >&2
    fi
}
apt_install docker-compose docker-compose
apt_install pgbouncer pgbouncer

# The tests start hundreds of Python processes (servers, workers, CLI calls):
# compiled once here, they read the project's bytecode instead of each compiling
# its sources again (also where PYTHONDONTWRITEBYTECODE is set).
"$PY" -m compileall -q -j 0 hpo service storage workers migrations tests benchmarks >/dev/null

"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy"
# Two test processes (pytest-xdist; a file's tests stay together): the suite
# spends much of its time waiting on the servers and workers it starts.
# HPO_TEST_PROCESSES=0 (or -n 0) runs it in one.
exec "$VENV/bin/pytest" -n "${HPO_TEST_PROCESSES:-2}" --dist loadfile "$@"
