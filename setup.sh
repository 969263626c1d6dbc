#!/usr/bin/env bash
# One-step set-up into the current Python environment (make and activate a venv first if you like).
# torch is installed first and pinned: the CPU build 2.13.0 avoids pulling a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet "torch==2.13.0"
"$PY" -m pip install --quiet -e ".[dev]"
echo "set-up done: try 'python cli.py --help'"
