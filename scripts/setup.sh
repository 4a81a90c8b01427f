#!/usr/bin/env bash
# Create .venv (if missing) and install tiletune with its test tools (and Ray, for the Ray
# executor and its tests) into it.
# On a machine without an NVIDIA GPU, torch is pinned to the CPU build (an unpinned torch
# pulls several GB of CUDA packages that nothing here would use).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "${PIP[@]}" install torch
    else
        "${PIP[@]}" install "torch==2.13.0"
    fi
fi
"${PIP[@]}" install -e ".[test,plot,ray]"
