#!/usr/bin/env bash
# The main job: set up, then autotune the built-in matmul (M=N=K=512, float16) into the
# default tuning DB (./tiletune.db), on the GPU if there is one, else on the simulated H100.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/tiletune autotune matmul --shape M=512,N=512,K=512 --dtype float16 --trials 24 --device auto "$@"
.venv/bin/tiletune show matmul --shape M=512,N=512,K=512 --dtype float16
