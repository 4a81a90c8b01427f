"""Record a sweep: measure every config of some workloads' spaces and keep them as a replay file.

A sweep recorded on a GPU lets search strategies be compared on real measurements anywhere
(`search/measurement/sweep_recording.py`, `bench/search_efficiency.py --sweep FILE`). The default workloads are
the benchmarks' (`bench/search_efficiency.py`): matmul at three shapes, matmul_bias_relu, softmax and layernorm.
The committed `bench/data/sweep-sim-h100.jsonl` is `--sample 600` of them over the whole current space (the
Hopper knobs included); `bench/train_prior.py --record` records the cold-start prior's sweep of other workloads.

    python bench/record_sweep.py --device cuda [--out bench/data/sweep-<device>.jsonl]
    python bench/record_sweep.py --device sim-h100 --workload "add N=64,D=64 float32" --sample 5

Every config of each space is measured unless `--sample N` (the default config plus N sampled
ones). `--time-limit S` stops after S seconds with the file saved; running the same command
again resumes it (configs already in the file are not measured again), so a sweep longer than
one lease of a GPU is recorded in several runs.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

from tiletune.cli import parse_shape  # noqa: E402
from tiletune.errors import TiletuneError, UsageError  # noqa: E402
from tiletune.kernels.task import TaskSpec  # noqa: E402

DEFAULT_WORKLOADS = [
    "matmul M=512,N=512,K=512 float16",
    "matmul M=4096,N=4096,K=4096 float16",
    "matmul M=128,N=4096,K=4096 float16",
    "matmul_bias_relu M=1024,N=1024,K=1024 float16",
    "softmax N=4096,D=1024 float32",
    "layernorm N=4096,D=1024 float32",
]
DATA = Path(__file__).resolve().parent / "data"


def parse_workload(text: str) -> TaskSpec:
    """`"OP SHAPE [DTYPE]"`, e.g. `"matmul M=512,N=512,K=512 float16"`, as a spec."""
    parts = text.split()
    if len(parts) not in (2, 3):
        raise UsageError(f"workload {text!r}: expected 'OP SHAPE [DTYPE]', e.g. 'matmul M=512,N=512,K=512 float16'")
    spec = TaskSpec.make(parts[0], parse_shape(parts[1]), parts[2] if len(parts) == 3 else None)
    spec.build()  # an unknown operator, dim or dtype fails here, before anything is measured
    return spec


def default_out(device_name: str) -> Path:
    """bench/data/sweep-<device>.jsonl, the device name made file-safe."""
    return DATA / f"sweep-{re.sub(r'[^A-Za-z0-9]+', '-', device_name).strip('-').lower()}.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="sim-h100", help="cuda, or a simulated device (sim-h100)")
    parser.add_argument("--workload", action="append", default=None, metavar="'OP SHAPE [DTYPE]'",
                        help="a workload to sweep (repeatable; default: matmul x3, matmul_bias_relu, softmax, layernorm)")
    parser.add_argument("--sample", type=int, default=None, help="default config + N sampled ones (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="sweep file (default bench/data/sweep-<device>.jsonl)")
    parser.add_argument("--workers", type=int, default=None, help="compile worker processes")
    parser.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds (resumable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and of the inputs")
    parser.add_argument("--budget-ms", type=float, default=100.0,
                        help="timing budget per config on a GPU (the median's CI usually closes sooner)")
    args = parser.parse_args(argv)
    try:
        return record(args)
    except TiletuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def record(args: argparse.Namespace) -> int:
    from tiletune.search.measurement.sweep_recording import record_sweep

    specs = [parse_workload(w) for w in (args.workload or DEFAULT_WORKLOADS)]
    if args.sample is not None and args.sample < 0:
        raise UsageError(f"--sample must be >= 0, got {args.sample}")
    gpu_pool = None
    if args.device == "cuda":
        from tiletune.search.execution.workers import COMPILE_ENV, WorkerPool
        from tiletune.search.measurement.measurers import CudaMeasurer

        gpu_pool = WorkerPool(1, env=COMPILE_ENV, name="sweep-gpu")
        try:
            measurer = CudaMeasurer(gpu_pool, budget_ms=args.budget_ms, seed=args.seed)
        except BaseException:
            gpu_pool.close()
            raise
    else:
        from tiletune.search.measurement.measurers import SimMeasurer

        measurer = SimMeasurer(args.device)
    from tiletune.search.measurement.sweep_recording import sweep_configs

    out = args.out or default_out(measurer.device.name)
    wanted = {spec: len(sweep_configs(spec, args.sample, args.seed)) for spec in specs}  # listing a space is not free
    total = sum(wanted.values())
    print(f"recording {len(specs)} workloads on {measurer.device.name} ({measurer.kind}) into {out}: "
          + ("every config" if args.sample is None else f"the default + {args.sample} sampled configs")
          + f", {total} in all (configs already in the file are kept)", flush=True)
    start = time.monotonic()

    def progress(spec: TaskSpec, done: int, total: int) -> None:
        print(f"  {str(spec):48s} {done:5d}/{total:<5d} {time.monotonic() - start:7.1f} s", flush=True)

    try:
        sweep = record_sweep(specs, out, sample=args.sample, seed=args.seed, workers=args.workers,
                             measurer=measurer, on_progress=progress, resume=True, time_limit=args.time_limit)
    finally:
        if gpu_pool is not None:
            gpu_pool.close()
    missing = 0
    for spec in specs:
        entries = sweep.entries(spec)
        missing += wanted[spec] - len(entries)
        ok = [e for e in entries.values() if e.status == "ok"]
        best = min((e.latency_us for e in ok), default=None)
        print(f"{str(spec):48s} {len(entries):5d} configs, {len(ok):5d} ok"
              + (f", best {best:.2f} us" if best is not None else ""))
    print(f"wrote {out} in {time.monotonic() - start:.0f} s"
          + (f"; {missing} configs left: run the same command again to resume" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
