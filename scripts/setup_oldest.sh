#!/usr/bin/env bash
# Create .venv-oldest (if missing): tiletune at the oldest end of its supported range, torch 2.11
# with the Triton it pins (3.6), beside .venv at the newest end. kernels/triton_versions.py says
# what differs between the two.
#
# No CPU-only build of torch 2.11 is on PyPI: its Linux wheel is a CUDA build whose `import torch`
# needs the nvidia-* libraries even where no GPU is present, so they come along (about 4 GB on
# disk, about a minute to install here). Only this test environment pays for them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-oldest
TORCH_OLDEST=2.11.0
TRITON_OLDEST=3.6.0
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH_OLDEST')" 2>/dev/null; then
    "${PIP[@]}" install "torch==$TORCH_OLDEST" "triton==$TRITON_OLDEST"
fi
"${PIP[@]}" install "setuptools>=68,<82" "triton==$TRITON_OLDEST"  # torch 2.11 asks for setuptools < 82
# the same strict editable install as scripts/setup.sh (it shares build/'s link tree with .venv);
# torch and triton stay pinned so that resolving tiletune's own range cannot move them
lock=()
if command -v flock >/dev/null 2>&1; then lock=(flock /tmp/tiletune-setup.lock); fi
"${lock[@]}" "${PIP[@]}" install --no-build-isolation --config-settings editable_mode=strict \
    -e ".[test]" "torch==$TORCH_OLDEST" "triton==$TRITON_OLDEST"
"$VENV/bin/python" -c "import torch, triton; assert triton.__version__.startswith('${TRITON_OLDEST%.*}'), triton.__version__; assert torch.__version__.startswith('$TORCH_OLDEST'), torch.__version__"
