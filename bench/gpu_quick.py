"""The one prepared device run (`bench/gpu_quick.sh` calls it): a short tuning and a measurement
per case against its baselines, in about 8 minutes in all, writing the results JSON after every
case so that a run cut short keeps what it measured.

Cases (`quick_cases`): GEMM fp16 and bf16 on six shapes (4096^3, 8192^3, M in {16, 128, 4096} x
N=14336, K=4096, and M=16 x N=4096, K=14336: the LLM up- and down-projections) against cuBLAS;
matmul + bias + GELU against eager; softmax, layernorm and rmsnorm as % of the copy bandwidth
measured in the same run; attention (plain and causal) against SDPA; fp16 first and bf16 GEMM
last, so that a run cut short still has every headline. Before the cases, the cuBLAS kernel (and
its cluster) of every published cuBLAS calibration figure is profiled (`cublas_kernels.py`).
torch.compile is measured only for the
memory-bound ops (its max-autotune GEMM compiles do not fit), and the Triton references of GEMM
are the tutorial TMA, TMA + warp-specialized and persistent TMA kernels.

How configs are chosen, per case (`shortlist`, then the tuner): up to `SAMPLED` legal configs
of the case's space are ranked by the simulated H200 on tile facts and a pre-compile estimate
of registers and shared memory; the best `SHORTLIST` are measured on the GPU first, then the
XGBoost-guided search (`model` strategy) goes on from what they measured until the case's
tuning seconds run out. Each case has a planned time (`plan`); a case whose plan no longer fits
the remaining time is recorded as skipped, not started.

    python bench/gpu_quick.py --plan              # the cases, budgets and shortlists, no GPU needed
    python bench/gpu_quick.py --dry-run           # the plan, then fail fast unless a GPU is visible
    python bench/gpu_quick.py --seconds 330       # measure (on a GPU), within 330 s
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # the sibling modules

import gpu_report  # noqa: E402

# Seconds of tuning and of measuring the baselines (a first estimate; the run checks the clock).
TUNE_SECONDS = {"gemm": 5.0, "epilogue": 8.0, "memory": 4.0, "attention": 7.0}
MEASURE_SECONDS = {"gemm": 6.0, "epilogue": 14.0, "memory": 10.0, "attention": 8.0}
# The first case of a kind and dtype also compiles its Triton references (autotune: one compile
# per config and variant) and, for the memory ops, torch.compile's kernels.
FIRST_OF_GROUP_SECONDS = {"gemm": 25.0, "epilogue": 20.0, "memory": 10.0, "attention": 25.0}
BASELINES = {"gemm": ("eager", "triton"), "epilogue": ("eager", "triton"),
             "memory": ("eager", "compile", "triton"), "attention": ("eager", "triton")}
# The tutorial-structured references only for GEMM: the TMA, warp-specialized and persistent TMA
# kernels are the bar; the plain tutorial and the 12-config autotune matmul cost compiles the
# 8 minutes do not have.
TRITON_VARIANTS = {"gemm": ("tma", "tma_ws", "persistent_tma")}
STARTUP_SECONDS = 30.0  # CUDA init, the ceilings (copy, cuBLAS 8192^3), the cuBLAS kernel probe, worker pools
SAMPLED = 128
SHORTLIST = 8
GEMM_SHAPES = ((4096, 4096, 4096), (8192, 8192, 8192), (16, 14336, 4096), (128, 14336, 4096),
               (4096, 14336, 4096), (16, 4096, 14336))


@dataclass(frozen=True)
class PlannedCase:
    """One case of the quick run with its time and its baselines."""

    id: str
    kind: str
    op: str
    dtype: str
    dims: dict
    baselines: tuple[str, ...]
    tune_seconds: float
    planned_seconds: float


def quick_cases() -> list[PlannedCase]:
    """The quick run's cases, in the order they run: fp16 GEMM, then one case or more of every
    other headline (epilogue, memory-bound, attention), bf16 GEMM last, so that a run cut short
    still has every headline ratio."""
    raw = []
    for m, n, k in GEMM_SHAPES:
        raw.append((f"gemm-fp16-{m}x{n}x{k}", "gemm", "matmul", "float16", {"M": m, "N": n, "K": k}))
    raw.append(("epilogue-fp16-4096x4096x4096", "epilogue", "matmul_bias_gelu", "float16",
                {"M": 4096, "N": 4096, "K": 4096}))
    for op in ("softmax", "layernorm", "rmsnorm"):
        raw.append((f"memory-{op}-fp16-8192x4096", "memory", op, "float16", {"N": 8192, "D": 4096}))
    raw.append(("attention-fp16-4x16x2048x64", "attention", "attention", "float16", {"B": 4, "H": 16, "S": 2048, "D": 64}))
    raw.append(("attention-causal-fp16-4x16x2048x64", "attention", "causal_attention", "float16",
                {"B": 4, "H": 16, "S": 2048, "D": 64}))
    for m, n, k in GEMM_SHAPES:
        raw.append((f"gemm-bf16-{m}x{n}x{k}", "gemm", "matmul", "bfloat16", {"M": m, "N": n, "K": k}))
    cases, seen = [], set()
    for id_, kind, op, dtype, dims in raw:
        first = (kind, dtype) not in seen
        seen.add((kind, dtype))
        planned = TUNE_SECONDS[kind] + MEASURE_SECONDS[kind] + (FIRST_OF_GROUP_SECONDS[kind] if first else 0.0)
        cases.append(PlannedCase(id_, kind, op, dtype, dims, BASELINES[kind], TUNE_SECONDS[kind], planned))
    return cases


def planned_seconds(cases: list[PlannedCase]) -> float:
    """The run's planned wall time: start-up and every case."""
    return STARTUP_SECONDS + sum(c.planned_seconds for c in cases)


def _estimated_usage(tile: dict, cfg: dict, item: int) -> dict:
    """Registers and shared memory of a config before any compile: the fp32 accumulator plus
    ~64 registers of addresses per thread, and every pipeline stage's operand tiles."""
    warps = int(cfg.get("num_warps", 4))
    stages = int(cfg.get("num_stages", 1))
    m, n, k = int(tile["tile_m"]), int(tile["tile_n"]), int(tile["tile_k"])
    registers = min(255, m * n // (32 * warps) + 64)
    shared = stages * (m + n) * k * item if tile.get("uses_tensor_cores") else 0
    return {"num_warps": warps, "num_stages": stages, "registers": registers, "spill_bytes": 0, "shared_bytes": shared}


def shortlist(case: PlannedCase, k: int = SHORTLIST, sampled: int = SAMPLED, seed: int = 0) -> list[tuple[dict, float]]:
    """The `k` configs of `case` the simulated H200 ranks fastest among `sampled` legal ones
    (and the default config), as (config dict, simulated microseconds), fastest first."""
    from tiletune.kernels.target import H200
    from tiletune.kernels.task import Task, TaskSpec
    from tiletune.search.measurement.simulator import DoesNotFit, KernelFacts, simulate
    from tiletune.tensorexpr import dtypes as dt

    task = Task(TaskSpec.make(case.op, case.dims, case.dtype))
    configs = [task.space.default()] + task.space.sample(random.Random(seed), sampled, exclude=[task.space.default()])
    ranked = []
    for config in configs:
        facts = task.facts(config)
        tile = facts.to_dict()
        usage = _estimated_usage(tile, config.as_dict(), dt.itemsize(case.dtype))
        try:
            latency = simulate(KernelFacts.from_facts(tile, usage, facts.dot_dtype), H200).latency_us
        except DoesNotFit:
            continue
        ranked.append((latency, config))
    ranked.sort(key=lambda pair: pair[0])
    return [(config.as_dict(), latency) for latency, config in ranked[:k]]


class ShortlistFirst:
    """The shortlist in its order, then the inner strategy (which learns from what the
    shortlist measured)."""

    name = "shortlist-then-model"

    def __init__(self, shortlist_configs: list, then) -> None:
        self.shortlist = list(shortlist_configs)
        self.then = then

    @property
    def prior(self):
        return self.then.prior

    @prior.setter
    def prior(self, rows) -> None:  # the tuner hands transfer rows to a strategy that has them
        self.then.prior = rows

    def propose(self, space, history, n: int) -> list:
        picks = [c for c in self.shortlist if c not in history.tried and space.is_legal(c)][:n]
        if len(picks) < n:
            # ask for n: the inner strategy does not know the picks are taken
            picks += [c for c in self.then.propose(space, history, n) if c not in picks][: n - len(picks)]
        return picks


def plan_json(cases: list[PlannedCase], with_shortlists: bool) -> dict:
    """The plan as data: what `--plan` prints and the test checks."""
    rows = []
    for case in cases:
        row = {"id": case.id, "kind": case.kind, "op": case.op, "dtype": case.dtype, "dims": case.dims,
               "baselines": list(case.baselines), "tune_seconds": case.tune_seconds,
               "planned_seconds": case.planned_seconds}
        if with_shortlists:
            row["shortlist"] = [{"config": c, "sim_us": us} for c, us in shortlist(case)]
        rows.append(row)
    return {"cases": rows, "planned_seconds": planned_seconds(cases), "startup_seconds": STARTUP_SECONDS}


def run_cases(cases: list[PlannedCase], measure: Callable[[PlannedCase], dict], write: Callable[[list[dict]], None],
              deadline: float, clock: Callable[[], float] = time.monotonic) -> list[dict]:
    """Measure each case whose plan still fits before `deadline` (by `clock`), writing every row
    so far after each case; a case that fails is recorded with its failure, and the rest go on."""
    rows: list[dict] = []
    for case in cases:
        left = deadline - clock()
        if case.planned_seconds > left:
            rows.append({"id": case.id, "kind": case.kind, "op": case.op, "dtype": case.dtype, "dims": case.dims,
                         "us": {}, "failures": {"run": f"skipped: {left:.0f} s left, {case.planned_seconds:.0f} s planned"},
                         "skipped": True})
        else:
            started = clock()
            try:
                row = measure(case)
            except Exception as error:  # noqa: BLE001 - one case failing must not end the run
                traceback.print_exc(limit=5)
                row = {"id": case.id, "kind": case.kind, "op": case.op, "dtype": case.dtype, "dims": case.dims,
                       "us": {}, "failures": {"run": f"{type(error).__name__}: {error}"}}
            row["wall_seconds"] = clock() - started
            rows.append(row)
        write(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", action="store_true", help="print the plan (cases, budgets, shortlists) as JSON")
    parser.add_argument("--dry-run", action="store_true", help="the plan, then fail unless a GPU is visible")
    parser.add_argument("--seconds", type=float, default=330.0, help="wall time for the cases, start-up included")
    parser.add_argument("--cases", nargs="+", default=None, help="only the cases whose id contains one of these")
    parser.add_argument("--results", type=Path, default=None, help="default bench/results/<date>-<device>.json")
    parser.add_argument("--workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    args = parser.parse_args(argv)
    started = time.monotonic()
    cases = [c for c in quick_cases() if not args.cases or any(f in c.id for f in args.cases)]
    if args.plan:
        print(json.dumps(plan_json(cases, with_shortlists=True), indent=1))
        return 0
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_quick: no CUDA GPU is visible (torch {torch.__version__}, torch.cuda.is_available() is False): "
              "this run measures on a GPU only; `--plan` shows what it would do", file=sys.stderr)
        return 3
    print(f"gpu_quick: {len(cases)} cases planned in {planned_seconds(cases):.0f} s of {args.seconds:.0f} s on "
          f"{torch.cuda.get_device_name()}", flush=True)
    if args.dry_run:
        return 0
    return measure_all(cases, args, deadline=started + args.seconds)


def measure_all(cases: list[PlannedCase], args: argparse.Namespace, deadline: float) -> int:
    """Tune and measure `cases` on the GPU (gpu_suite's row measurement), writing the JSON."""
    import torch

    import gpu_suite
    from tiletune.search.measurement.timing import CudaTimer, TimingPolicy, clock_facts
    from tiletune.search.strategies import make_strategy
    from tiletune.schedules.config import Config

    device = torch.cuda.get_device_name()
    date = datetime.date.today().isoformat()
    path = args.results or gpu_suite.results_path(device, date)
    timer = CudaTimer(TimingPolicy(budget_ms=200.0))
    copy_gbps, ceiling_tflops, ceiling_clocks = gpu_suite.ceilings(timer)
    print(f"copy {copy_gbps:.0f} GB/s, cuBLAS fp16 8192^3 {ceiling_tflops:.0f} TFLOP/s", flush=True)
    import cublas_kernels

    cublas = cublas_kernels.probe()  # a few seconds: which kernel (and cluster) each calibration GEMM runs
    print("cuBLAS kernels: " + "; ".join(f"{k}: {v.get('cluster') or v.get('error', 'no cluster')}"
                                         for k, v in cublas.items()), flush=True)
    db = Path(os.environ.get("TMPDIR", "/tmp")) / f"tiletune-gpu-quick-{os.getpid()}.db"
    tuning = gpu_suite.Tuning(db, args.workers)
    extra = {"date": date, "run": "gpu_quick", "ceiling_clocks": ceiling_clocks, "cublas_kernels": cublas,
             "config_choice": f"sim-h200 ranks {SAMPLED} sampled configs on pre-compile estimates; the best "
                              f"{SHORTLIST} are measured first, then the model strategy"}

    def measure(case: PlannedCase) -> dict:
        suite_case = gpu_suite.Case(case.id, case.kind, case.op, case.dtype, case.dims)
        picks = [Config.from_dict(c) for c, _ in shortlist(case)]
        tuning.strategy = lambda task: ShortlistFirst(
            picks, make_strategy("model", lambda cfg: task.facts(cfg).to_dict(), 0))
        options = argparse.Namespace(tune_seconds=case.tune_seconds, baselines=list(case.baselines),
                                     triton_variants=TRITON_VARIANTS.get(case.kind))
        row = gpu_suite.run_case(suite_case, options, timer, tuning)
        row["shortlist"] = [c.as_dict() for c in picks]
        gpu_suite.print_case(row)
        return row

    def write(rows: list[dict]) -> None:
        measured = [r for r in rows if not r.get("skipped")]
        result = gpu_report.build_result(device, gpu_suite.versions(), measured, copy_gbps, ceiling_tflops,
                                         {**extra, "clocks": clock_facts(),
                                          "skipped": [r["id"] for r in rows if r.get("skipped")]})
        gpu_report.write_json(path, result)

    try:
        rows = run_cases(cases, measure, write, deadline)
    finally:
        tuning.close()
    print(f"wrote {path}")
    result = json.loads(path.read_text())
    print(gpu_report.headline(result))
    return 0 if any(r.get("us", {}).get("tiletune") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
