#!/usr/bin/env bash
# The one prepared run for a lent GPU (an H200 with Python 3.12, torch 2.11, Triton 3.6 and no
# network), within 8 minutes (GPU_QUICK_SECONDS): install what the device image lacks from carried
# wheels and tiletune itself without network, run the GPU tests (`pytest -m gpu`, at most
# GPU_QUICK_PYTEST_SECONDS), then measure with bench/gpu_quick.py in the time left, which writes
# bench/results/<date>-<device>.json after every case (copied to $OUT when it is set).
#
#   bash bench/fetch_device_wheels.sh     # here, once: fills bench/wheels (git-ignored, ~6 MB)
#   device run: carry ["bench/wheels"], command "bash bench/gpu_quick.sh", timeout_s 560
#   bash bench/gpu_quick.sh --dry-run     # anywhere: checks the install plan and the cases,
#                                         # then fails fast unless a CUDA GPU is visible
set -euo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
TOTAL=${GPU_QUICK_SECONDS:-480}
PYTEST_SECONDS=${GPU_QUICK_PYTEST_SECONDS:-90}
PYTHON=${PYTHON:-python3}
SITE=${GPU_QUICK_SITE:-/tmp/tiletune-site}
WHEELS=${GPU_QUICK_WHEELS:-bench/wheels}
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; fi
log() { echo "gpu_quick: $*" >&2; }

# 1. what the image lacks (xgboost-cpu: the full xgboost wheel is over the carry limit)
missing=$("$PYTHON" -c 'import importlib.util as u; print(" ".join(m for m in ("xgboost", "sqlite_utils") if u.find_spec(m) is None))')
if [ -n "$missing" ] && ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    log "$PYTHON lacks: $missing, and $WHEELS holds no wheels: run bash bench/fetch_device_wheels.sh here and carry bench/wheels"
    exit 2
fi
if [ "$DRY" = 1 ]; then
    log "dry run: would install ${missing:-nothing} from $WHEELS and tiletune into $SITE (no network)"
else
    mkdir -p "$SITE"
    if [ -n "$missing" ]; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$SITE" "$WHEELS"/*.whl
    fi
    # tiletune itself, built here from the checkout: no build environment, no index
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --disable-pip-version-check --target "$SITE" .
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    "$PYTHON" -c "import tiletune, xgboost, sqlite_utils, triton, torch; print('gpu_quick: torch', torch.__version__, 'triton', triton.__version__)"
fi

# 2. the plan, and a clear stop where there is no GPU
"$PYTHON" bench/gpu_quick.py --dry-run
if [ "$DRY" = 1 ]; then
    exit 0
fi

# 3. the GPU tests, bounded so that the measurements keep their time
LOG=${OUT:-/tmp}/gpu-tests.log
set +e
timeout "$PYTEST_SECONDS" "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests >"$LOG" 2>&1
tests_rc=$?
set -e
tail -n 15 "$LOG"
if [ "$tests_rc" != 0 ]; then log "GPU tests exited $tests_rc (124: out of time); measuring anyway, see $LOG"; fi

# 4. the measurements, in the time left (the driver skips cases whose plan no longer fits)
LEFT=$(( TOTAL - (SECONDS - START) ))
if [ "$LEFT" -lt 60 ]; then LEFT=60; fi  # at least the ceilings and a case or two
RESULTS=$("$PYTHON" -c 'import datetime, re, torch; d = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name()).strip("-").lower(); print(f"bench/results/{datetime.date.today().isoformat()}-{d}.json")')
set +e
timeout $(( LEFT + 30 )) "$PYTHON" bench/gpu_quick.py --seconds "$LEFT" --results "$RESULTS"
rc=$?
set -e
if [ -n "${OUT:-}" ] && [ -f "$RESULTS" ]; then cp "$RESULTS" "$OUT/"; fi
log "done in $(( SECONDS - START )) s: $RESULTS (exit $rc, GPU tests exit $tests_rc)"
exit "$rc"
