#!/usr/bin/env bash
# One-step set-up into the current Python environment (make and activate a venv first if you like).
#
#   bash setup.sh          keep the torch (2.1 or newer) this Python already has; without one, install
#                          torch 2.13.0 from the package index pip is configured with
#   bash setup.sh --cpu    without a torch, install torch 2.13.0's CPU build from PyTorch's CPU wheel
#                          index (https://download.pytorch.org/whl/cpu)
#
# On PyPI, torch 2.13.0 for Linux x86_64 is the CUDA build: a 527 MB wheel that pulls several GB of
# NVIDIA libraries. A machine with an NVIDIA GPU wants it; one without may not (--cpu). A torch that
# is already installed is never replaced, downgraded or upgraded here.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
CPU_INDEX=https://download.pytorch.org/whl/cpu
torch_from=()
case "${1:-}" in
  "") ;;
  --cpu) torch_from=(--index-url "$CPU_INDEX") ;;
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "error: unknown option $1; use --cpu or nothing (see bash setup.sh --help)" >&2; exit 2 ;;
esac
"$PY" -m pip install --quiet --upgrade pip
have=$("$PY" - <<'EOF'
try:
    import torch
except Exception:
    print("")
else:
    major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    print(torch.__version__ if (major, minor) >= (2, 1) else "")
EOF
)
if [ -n "$have" ]; then
  echo "keeping the installed torch $have"
else
  echo "installing torch 2.13.0${torch_from:+ (CPU build, from $CPU_INDEX)}"
  "$PY" -m pip install --quiet "torch==2.13.0" ${torch_from[@]+"${torch_from[@]}"}  # bash 3.2 (macOS) safe
fi
# pyproject.toml asks for torch>=2.1, which the torch above satisfies: pip installs no other torch.
"$PY" -m pip install --quiet -e ".[dev]"
echo "set-up done: try 'python cli.py --help'"
