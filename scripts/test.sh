#!/usr/bin/env bash
# Set up, then run the test suite (GPU tests skip without CUDA; run them with -m gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
