#!/usr/bin/env bash
# python-env.sh — create/refresh the repo's Python venv (.venv/) for test tooling.
#
# Creates .venv/ in the repo root if missing (or broken), and (re)installs the
# pinned packages of scripts/requirements-test.txt whenever that file changed
# since the last install (a sha256 stamp is kept in .venv/). Safe to run again
# and again; a no-op when everything is up to date.
#
# Usage: scripts/python-env.sh        # prints the venv path on stdout
# Env:   PYTHON  interpreter to build the venv with (default: python3, >= 3.11)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
REQS="$ROOT/scripts/requirements-test.txt"
STAMP="$VENV/.requirements-test.sha256"
PYTHON="${PYTHON:-python3}"

if ! "$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed, got " + sys.version' >&2
    echo "python-env: creating $VENV" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi

want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]]; then
    echo "python-env: installing $REQS" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS" >&2
    "$VENV/bin/python" -m pip check >&2
    echo "$want" >"$STAMP"
fi

echo "$VENV"
