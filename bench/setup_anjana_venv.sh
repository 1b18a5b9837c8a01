#!/usr/bin/env bash
# Create the separate virtualenv that bench/bench_kanon.py uses to run anjana.
# Usage: bench/setup_anjana_venv.sh [VENV_DIR]
# Default VENV_DIR: $ANJANA_VENV or ~/.cache/opencity/anjana-venv (outside the repo).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-${ANJANA_VENV:-$HOME/.cache/opencity/anjana-venv}}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
if command -v uv >/dev/null; then
    uv venv -p "$python" "$venv"
    uv pip install -p "$venv/bin/python" -r "$here/requirements-anjana.txt"
else
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -r "$here/requirements-anjana.txt"
fi
"$venv/bin/python" -c "import anjana, numpy; print('anjana ready, numpy', numpy.__version__)"
echo "$venv"
