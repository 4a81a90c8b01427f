#!/usr/bin/env bash
# Fill bench/wheels (git-ignored) with the wheels bench/gpu_quick.sh installs on the lent GPU
# machine, whose image (Python 3.12, torch, Triton, numpy, scipy, click, pytest, ...) lacks
# xgboost and sqlite-utils and which has no network. xgboost-cpu, not xgboost: the full wheel
# (with its NCCL) is over the 64 MiB that a device call carries. Each name is pinned to what this
# checkout is tested with, and listed with the needs the image does not have (--no-deps: the
# image's own numpy and scipy stay).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=bench/wheels
rm -rf "$DEST"
mkdir -p "$DEST"
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "xgboost-cpu>=2.0" "sqlite-utils>=3.36" sqlite-fts4 click-default-group "click>=8.3.1"
du -sh "$DEST"
ls "$DEST"
# what a device call carries: the working tree (tracked and untracked-not-ignored files) and the wheels
tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
wheels=$(du -sb "$DEST" | cut -f1)
total=$(( tree + wheels ))
echo "a device call carrying $DEST sends $(( total / 1048576 )) MiB of the 64 MiB allowed"
if [ "$total" -ge $(( 64 * 1048576 )) ]; then
    echo "over the 64 MiB a device call carries: leave a wheel out or ignore large files" >&2
    exit 1
fi
