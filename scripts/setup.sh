#!/usr/bin/env bash
# One-command setup: a Python 3.11 virtualenv with r2genkg installed (editable) + dev tools.
#
# The venv lives OUTSIDE the clone, keyed by a hash of pyproject.toml and venv_layout below, and
# .venv in the repo is a symlink to it. A second clone (or CI on the same machine) reuses it; a
# change to pyproject.toml makes a fresh one, and so does bumping venv_layout (do that when a change
# to this script changes what a venv holds). Override the location with R2GENKG_VENV.
#
# --check: install nothing; exit 0 when .venv is the complete venv of today's dependency files,
# else 1 with the reason on stderr (a few ms: scripts/with_venv asks this before every command).
set -euo pipefail
cd "$(dirname "$0")/.."

venv_layout=2
deps_hash=$( (cat pyproject.toml; echo "venv_layout=$venv_layout") | sha256sum | cut -c1-16)
cache_root="${R2GENKG_CACHE:-$HOME/.cache/r2genkg}"
venv="${R2GENKG_VENV:-$cache_root/venv-$deps_hash}"

if [[ "${1:-}" == "--check" ]]; then
    if [[ ! -e .venv ]]; then
        echo "setup: no .venv yet" >&2; exit 1
    elif [[ "$(readlink .venv)" != "$venv" ]]; then
        echo "setup: .venv is $(readlink .venv || echo 'not a link'), the dependency files want $venv" >&2; exit 1
    elif [[ ! -f "$venv/.r2genkg-complete" ]]; then
        echo "setup: $venv was not set up completely" >&2; exit 1
    fi
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: scripts/setup.sh [--check]" >&2; exit 2
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" - <<'PY' || { echo "setup: Python 3.11 or 3.12 is required" >&2; exit 1; }
import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)
PY

if [[ -f "$venv/.r2genkg-complete" ]]; then
    echo "setup: reusing $venv"
else
    echo "setup: creating $venv (first run downloads torch & co., several GB)"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    # deps first (cached by pip), then the project itself without deps
    "$venv/bin/python" -m pip install --progress-bar off -e ".[dev]"
    touch "$venv/.r2genkg-complete"
    # keep the cache bounded: drop all but the 3 newest keyed venvs
    ls -1dt "$cache_root"/venv-* 2>/dev/null | tail -n +4 | xargs -r rm -rf
fi
# Always re-point the editable install at *this* clone (cheap, no network).
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
    || "$venv/bin/python" -m pip install -q --no-deps -e .

ln -sfn "$venv" .venv
echo "setup: done. Try: scripts/r2genkg --help"
