#!/usr/bin/env bash
# Create .venv-oldest (if missing): tiletune at the oldest end of its supported range, Triton 3.6
# (what torch 2.11 pins), beside .venv at the newest end. kernels/triton_versions.py says what
# differs between the two.
#
# torch is the CPU build of torch 2.13 here, not torch 2.11: PyPI's torch 2.11 Linux wheels are
# CUDA builds whose `import torch` needs several GB of nvidia-* libraries, and no CPU build of
# 2.11 is on PyPI. tiletune uses torch for tensors and the reference evaluator only; what changes
# with the version is Triton (the interpreter, the compiler, tl.* features), which is 3.6 here.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-oldest
TRITON_OLDEST=3.6.0
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "${PIP[@]}" install "torch==2.13.0"
fi
"${PIP[@]}" install "setuptools>=68" "triton==$TRITON_OLDEST"
# the same strict editable install as scripts/setup.sh (it shares build/'s link tree with .venv);
# triton stays pinned so that resolving tiletune's own range cannot move it
lock=()
if command -v flock >/dev/null 2>&1; then lock=(flock /tmp/tiletune-setup.lock); fi
"${lock[@]}" "${PIP[@]}" install --no-build-isolation --config-settings editable_mode=strict \
    -e ".[test]" "triton==$TRITON_OLDEST"
"$VENV/bin/python" -c "import triton; assert triton.__version__.startswith('${TRITON_OLDEST%.*}'), triton.__version__"
