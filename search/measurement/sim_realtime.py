"""Simulated real time: how long measuring one candidate on a real GPU would take.

With `--sim-realtime`, the `sim-<gpu>` measurer sleeps for `measurement_seconds(...)` after
simulating each candidate, so throughput and scaling over many measurement workers can be
studied on a machine without GPUs (the sleeping workers need no CPU). The figure follows what
`time_step` (the CUDA measurer) does for one candidate:

- a fixed `OVERHEAD_S` = 0.5 s: loading the compiled module, the check of the kernel on the GPU
  at small dims against the reference, allocating the inputs at full dims and synchronising
  (the part of a real measurement that does not depend on the kernel; typical of a Triton
  candidate in a fresh measurement worker);
- `WARMUP_RUNS` = 3 untimed and `TIMED_RUNS` = 50 timed launches, each preceded by a 100 MiB
  L2 flush (`FLUSH_BYTES`, written at the GPU's HBM bandwidth), so each run costs the kernel's
  simulated latency plus the flush.

A candidate the model refuses (it does not fit the SM) fails at launch: only the overhead.
"""
from __future__ import annotations

from tiletune.kernels.target import GPUTarget

OVERHEAD_S = 0.5
WARMUP_RUNS = 3
TIMED_RUNS = 50
FLUSH_BYTES = 100 * 1024 * 1024


def measurement_seconds(gpu: GPUTarget, latency_us: float | None) -> float:
    """Wall time of measuring one candidate of `latency_us` (None: it failed at launch) on `gpu`."""
    if latency_us is None:
        return OVERHEAD_S
    flush_us = FLUSH_BYTES / (gpu.hbm_gbps * 1e3)  # GB/s -> bytes per microsecond
    return OVERHEAD_S + (WARMUP_RUNS + TIMED_RUNS) * (latency_us + flush_us) * 1e-6
