#!/usr/bin/env bash
# Sourced by the other scripts: installs a pinned uv into .tools/ (from PyPI, with the
# machine's python3) and syncs .venv exactly to uv.lock, server extra included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV_VERSION="0.13.9"
if [ ! -x .tools/bin/uv ] || [ "$(.tools/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    echo "bootstrap: installing uv $UV_VERSION into .tools/" >&2
    python3 -m venv .tools
    .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
UV="$PWD/.tools/bin/uv"
export UV_PROJECT_ENVIRONMENT="$PWD/.venv"
"$UV" sync --frozen --extra server --quiet
