#!/usr/bin/env bash
# The oldest end of the supported range (torch 2.11, Triton 3.6; see scripts/setup_oldest.sh): set up
# .venv-oldest, then run the subset that depends on the Triton version: the interpreter (every
# kernel family and built-in checked against the reference evaluator), the AOT sm_90 compile
# (kernels/compile.py, the Hopper knobs, SASS), the version facts, and the CLI end to end.
# Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_oldest.sh
.venv-oldest/bin/python -c "import triton, torch; print(f'oldest end: Triton {triton.__version__}, torch {torch.__version__}')"
.venv-oldest/bin/python -m pytest -q -p no:cacheprovider tests/kernels tests/cli "$@"
