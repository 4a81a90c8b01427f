#!/usr/bin/env bash
# Create .venv (if missing) and install tiletune with its test tools (and Ray, for the Ray
# executor and its tests; Optuna and nevergrad, for bench/search_vs_peers.py and its test) into it.
# On a machine without an NVIDIA GPU, torch is pinned to the CPU build (an unpinned torch
# pulls several GB of CUDA packages that nothing here would use).
#
# tiletune is installed editable in setuptools' strict mode: build/__editable__.tiletune-*/ is a
# tree of links (tiletune/kernels/lower.py -> kernels/lower.py, ...) on the venv's path, which
# editors and static tools (pyright, jedi) follow from `tiletune.kernels.lower` to the checkout's
# file; the default editable mode maps the folders with an import hook that they cannot see.
# Strict mode links the files that exist when it runs, so this script re-runs the install every
# time (a few seconds, no build environment): run it again after adding a module.
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
"${PIP[@]}" install "setuptools>=68"  # the build backend, used in place: no isolated build environment
"${PIP[@]}" install --no-build-isolation --config-settings editable_mode=strict -e ".[test,plot,ray,bench]"
