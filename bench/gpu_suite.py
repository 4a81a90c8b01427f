"""The GPU benchmark suite: tiletune, tuned, against torch eager, torch.compile and Triton's autotuner.

For each case, in one run on one GPU, side by side: tiletune (tuned for `--tune-seconds` per
workload into a fresh DB, then called through `tiletune.load`), torch eager (cuBLAS for GEMM,
SDPA for attention, its backend recorded), `torch.compile(mode="max-autotune-no-cudagraphs")`
of the eager code, and reference Triton kernels tuned with `triton.autotune`
(`bench/reference_kernels.py`: the tiled matmul and row kernels, and the tutorial-structured
TMA, TMA + warp-specialized and persistent TMA matmuls and tutorial 06's attention, launched by
`bench/triton_references.py`; the `triton` column is the fastest of them, each one's time kept in
`triton_variants`). Every output is checked against an fp32 reference before it is timed.

Cases: GEMM fp16 and bf16 at square 1024-8192 and LLM shapes (M in {16, 128, 4096} against
N/K in {4096, 14336}), matmul + bias + GELU, softmax, layernorm, rmsnorm, attention (causal too). Reported:
TFLOP/s or GB/s, ratios against each baseline, % of the measured copy bandwidth (memory-bound
ops) and of cuBLAS's fp16 8192^3 rate (GEMM), tuning wall time. Results go to
`bench/results/<date>-<device>.json` (merged with an earlier partial run of that day, by case)
and the README's table between the gpu-suite markers.

    python bench/gpu_suite.py [--quick] [--cases gemm-fp16 memory ...] [--tune-seconds 20]
                              [--baselines eager compile triton] [--skip-done] [--no-readme]

A device call is limited to 10 minutes: run the suite in parts (`--cases gemm-fp16`, then
`--cases gemm-bf16 epilogue`, then `--cases memory attention`), each merging into the day's file;
`--skip-done` skips cases that file already holds. Without a GPU it says so and exits 0.

One timing mode per row: every column of a case is timed the same way (the same timer,
`tiletune.search.measurement.timing`: events around each call after an L2 flush, or CUDA graphs of
many calls for small ones, chosen once per row from eager's estimate), over the same rotating
input sets. torch.compile runs without Inductor's CUDA graphs ("max-autotune-no-cudagraphs"):
those copy the inputs into static buffers on every replay, inside the timed region, so they
would time a copy the other columns do not pay. If a column cannot be captured in a graph, the
whole row is timed again with events. The cuBLAS ceiling is recorded with the SM clocks read
before and after it.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

os.environ.setdefault("TRITON_INTERPRET", "0")  # kernels run on the GPU, never in the interpreter
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # the sibling modules (PYTHONSAFEPATH keeps the script's folder off the path)

import gpu_report  # noqa: E402

RESULTS = BENCH / "results"
README = BENCH.parent / "README.md"
TOLERANCE = {"float16": 2e-2, "bfloat16": 3e-2, "float32": 1e-3}  # ||out - ref|| / ||ref|| against fp32
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class Case:
    """One workload of the suite."""

    id: str
    kind: str  # gemm, epilogue, memory, attention
    op: str  # the tiletune built-in
    dtype: str
    dims: dict = field(hash=False)
    quick: bool = False


def all_cases() -> list[Case]:
    """Every case, in the order they run."""
    cases = []
    for dtype, short in (("float16", "fp16"), ("bfloat16", "bf16")):
        for n in (1024, 2048, 4096, 8192):
            cases.append(Case(f"gemm-{short}-{n}x{n}x{n}", "gemm", "matmul", dtype, {"M": n, "N": n, "K": n},
                              quick=n == 4096))
        for m in (16, 128, 4096):
            for n, k in ((4096, 4096), (14336, 4096), (4096, 14336)):
                if m == n == k:
                    continue  # the square 4096 case already
                cases.append(Case(f"gemm-{short}-{m}x{n}x{k}", "gemm", "matmul", dtype, {"M": m, "N": n, "K": k},
                                  quick=short == "fp16" and m == 16 and n == 14336))
    for dtype, short, m, n, k in (("float16", "fp16", 4096, 4096, 4096), ("float16", "fp16", 128, 14336, 4096),
                                  ("float16", "fp16", 4096, 14336, 4096), ("bfloat16", "bf16", 4096, 4096, 4096)):
        cases.append(Case(f"epilogue-{short}-{m}x{n}x{k}", "epilogue", "matmul_bias_gelu", dtype,
                          {"M": m, "N": n, "K": k}, quick=(m, n, short) == (4096, 4096, "fp16")))
    for op in ("softmax", "layernorm", "rmsnorm"):
        cases.append(Case(f"memory-{op}-fp16-8192x4096", "memory", op, "float16", {"N": 8192, "D": 4096}, quick=True))
        cases.append(Case(f"memory-{op}-fp32-4096x4096", "memory", op, "float32", {"N": 4096, "D": 4096}))
    cases.append(Case("attention-fp16-4x16x2048x64", "attention", "attention", "float16",
                      {"B": 4, "H": 16, "S": 2048, "D": 64}, quick=True))
    cases.append(Case("attention-fp16-2x16x4096x128", "attention", "attention", "float16",
                      {"B": 2, "H": 16, "S": 4096, "D": 128}))
    cases.append(Case("attention-causal-fp16-4x16x2048x64", "attention", "causal_attention", "float16",
                      {"B": 4, "H": 16, "S": 2048, "D": 64}, quick=True))
    return cases


def select(cases: list[Case], filters: list[str] | None, quick: bool) -> list[Case]:
    """The cases whose id contains any filter (all without filters), quick ones with --quick."""
    return [c for c in cases if (not filters or any(f in c.id for f in filters)) and (c.quick or not quick)]


# ---------------------------------------------------------------------------------------------
# the work of each case


def make_inputs(case: Case, seed: int) -> list[torch.Tensor]:
    """Random inputs in the tiletune operator's call order (never zeros: they time differently)."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    dtype, d = DTYPES[case.dtype], case.dims

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(shape, generator=gen, device="cuda", dtype=torch.float32) * scale).to(dtype)

    if case.kind in ("gemm", "epilogue"):
        inputs = [randn(d["M"], d["K"]), randn(d["K"], d["N"], scale=d["K"] ** -0.5)]
        return inputs + [randn(d["N"])] if case.kind == "epilogue" else inputs
    if case.kind == "attention":
        return [randn(d["B"], d["H"], d["S"], d["D"]) for _ in range(3)]
    x = randn(d["N"], d["D"])
    return {"softmax": [x], "layernorm": [x, randn(d["D"]), randn(d["D"])], "rmsnorm": [x, randn(d["D"])]}[case.op]


def eager_fn(case: Case) -> Callable[..., torch.Tensor]:
    """The torch eager implementation (what torch.compile compiles too)."""
    F = torch.nn.functional
    if case.kind == "gemm":
        return lambda a, b: a @ b
    if case.kind == "epilogue":
        return lambda a, b, bias: F.gelu(a @ b + bias)
    if case.kind == "attention":
        causal = case.op == "causal_attention"
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if case.op == "softmax":
        return lambda x: torch.softmax(x, dim=-1)
    if case.op == "layernorm":
        return lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b, eps=1e-5)
    return lambda x, w: F.rms_norm(x, x.shape[-1:], w, eps=1e-6)


def reference(case: Case, inputs: list[torch.Tensor]) -> torch.Tensor:
    """The fp32 result the outputs are checked against."""
    return eager_fn(case)(*[x.float() for x in inputs])


def triton_fns(case: Case) -> dict[str, Callable[..., torch.Tensor]]:
    """The reference Triton kernels of a case, by variant name (the `triton` column is the
    fastest of them that computes the right result)."""
    import reference_kernels as ref
    import triton_references

    fns: dict[str, Callable[..., torch.Tensor]] = {}
    if case.kind == "gemm":
        fns["autotune"] = lambda a, b: ref.matmul(a, b)
    elif case.kind == "epilogue":
        fns["autotune"] = lambda a, b, bias: ref.matmul(a, b, bias, gelu=True)
    elif case.op in ("softmax", "layernorm", "rmsnorm"):
        fns["autotune"] = {"softmax": ref.softmax, "layernorm": ref.layernorm, "rmsnorm": ref.rmsnorm}[case.op]
    fns.update(triton_references.variants(case.kind, case.op))
    return fns


def sdpa_backend(case: Case, inputs: list[torch.Tensor]) -> str:
    """Which SDPA kernel torch dispatches the eager attention to, read off a profile of one call."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        eager_fn(case)(*inputs)
        torch.cuda.synchronize()
    names = " ".join(e.name.lower() for e in prof.events())
    for backend, marks in (("cudnn", ("cudnn",)), ("flash", ("flash",)), ("efficient", ("fmha", "efficient", "mem_eff"))):
        if any(m in names for m in marks):
            return backend
    return "math"


def flops_and_bytes(case: Case, inputs: list[torch.Tensor], out: torch.Tensor) -> tuple[float, float]:
    """Useful FLOPs, and the fewest bytes moved (each input read once, the output written once)."""
    d = case.dims
    nbytes = float(sum(x.nbytes for x in inputs) + out.nbytes)
    if case.kind in ("gemm", "epilogue"):
        return 2.0 * d["M"] * d["N"] * d["K"], nbytes
    if case.kind == "attention":
        causal = 0.5 if case.op == "causal_attention" else 1.0  # the useful half of the scores
        return 4.0 * d["B"] * d["H"] * d["S"] * d["S"] * d["D"] * causal, nbytes
    return float(out.numel()), nbytes


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out = out.float()
    if not torch.isfinite(out).all():
        return math.inf
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref))


class Tuning:
    """tiletune's side: worker pools, the GPU measurer and a DB shared by every case of a run."""

    def __init__(self, db: Path, workers: int) -> None:
        from tiletune.search.backends import LocalBackend

        self.db = db
        self.backend = LocalBackend(workers)
        self.measurer = self.backend.measurers("cuda")[0]
        # task -> Strategy, or None for the tuner's default (the model strategy)
        self.strategy: Callable | None = None

    def tune(self, case: Case, seconds: float):
        """Tune `case` for `seconds` of wall time; returns the tuner's report."""
        from tiletune.kernels.task import Task, TaskSpec
        from tiletune.search.tuner import Budget, Tuner
        from tiletune.tuning_db import TuningDB

        with TuningDB(self.db) as database:
            task = Task(TaskSpec.make(case.op, case.dims, case.dtype))
            tuner = Tuner(task, self.measurer, database,
                          strategy=self.strategy(task) if self.strategy else "model")
            return tuner.run(Budget(trials=1_000_000, seconds=seconds, batch_size=8), self.backend)

    def close(self) -> None:
        self.backend.close()


def run_case(case: Case, args: argparse.Namespace, timer, tuning: Tuning) -> dict:
    """Tune, check and time every implementation of one case."""
    import tiletune as tt

    row: dict = {"id": case.id, "kind": case.kind, "op": case.op, "dtype": case.dtype, "dims": case.dims,
                 "us": {}, "spread": {}, "timing_mode": {}, "errors": {}, "failures": {}, "setup_seconds": {}}
    inputs = make_inputs(case, seed=0)
    ref = reference(case, inputs)
    impls: dict[str, Callable[..., torch.Tensor] | None] = {}
    start = time.monotonic()
    try:
        report = tuning.tune(case, args.tune_seconds)
    except Exception as error:  # the baselines are still worth measuring
        report = None
        row["failures"]["tiletune"] = f"tuning failed: {type(error).__name__}: {error}"
        traceback.print_exc(limit=3)
    row["tuning_seconds"] = time.monotonic() - start
    row["tuning_trials"] = report.trials if report else 0
    row["tiletune_config"] = report.best_config.as_dict() if report and report.best_config else None
    if report is not None and report.best_config is not None:
        loaded = tt.load(case.op, db=tuning.db)
        row["tiletune_selection"] = loaded.selection(*inputs).origin  # "tuned", unless the DB lost it
        impls["tiletune"] = lambda *xs: loaded(*xs)
    elif report is not None:
        row["failures"]["tiletune"] = f"no config measured ok in {report.trials} trials: {dict(report.reasons)}"
    for name in args.baselines:
        if name == "eager":
            impls[name] = eager_fn(case)
        elif name == "compile":
            torch._dynamo.reset()  # a fresh compile per case, never the recompile limit's eager fallback
            impls[name] = torch.compile(eager_fn(case), mode="max-autotune-no-cudagraphs", dynamic=False)
        elif name == "triton":
            wanted = getattr(args, "triton_variants", None)  # None: every reference of the case
            for variant, fn in triton_fns(case).items():
                if wanted is None or variant in wanted:
                    impls[f"triton:{variant}"] = fn
    if case.kind == "attention":
        try:
            row["sdpa_backend"] = sdpa_backend(case, inputs)
        except Exception as error:  # noqa: BLE001 - a missing profiler must not cost the row
            row["sdpa_backend"] = f"unknown ({type(error).__name__})"
    checked: dict[str, Callable[..., torch.Tensor]] = {}
    flops = nbytes = None
    for name, fn in impls.items():
        try:
            started = time.monotonic()
            out = fn(*inputs)  # the first call compiles or autotunes
            torch.cuda.synchronize()
            row["setup_seconds"][name] = time.monotonic() - started
            err = relative_error(out, ref)
            row["errors"][name] = err if math.isfinite(err) else None  # JSON has no infinity
            if not err <= TOLERANCE[case.dtype]:
                row["failures"][name] = f"wrong result: relative error {err:.2e} > {TOLERANCE[case.dtype]:.0e}"
                continue
            if flops is None:
                flops, nbytes = flops_and_bytes(case, inputs, out)
            checked[name] = fn
        except Exception as error:  # one implementation failing must not end the suite
            row["failures"][name] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            traceback.print_exc(limit=3)
    if checked:
        sets = [inputs] + [make_inputs(case, seed=s) for s in range(1, timer.sets_for(int(nbytes)))]
        time_row(row, checked, sets, timer)
    variants = {name.split(":", 1)[1]: us for name, us in row["us"].items() if name.startswith("triton:")}
    if variants:
        row["triton_variants"] = variants
        fastest = min((us, v) for v, us in variants.items() if us)
        row["us"]["triton"], row["triton_variant"] = fastest
    elif "triton" in args.baselines:
        row["failures"]["triton"] = "no reference kernel for this op computed the right result"
    for name in [n for n in row["us"] if n.startswith("triton:")]:
        del row["us"][name]  # the report's columns are the baselines; the variants stay beside them
    row["us"].setdefault("tiletune", None)
    row["flops"], row["bytes"] = flops or 0.0, nbytes or 0.0
    return row


def time_row(row: dict, fns: dict[str, Callable[..., torch.Tensor]], sets: list[list[torch.Tensor]], timer) -> None:
    """Time every implementation of a row in one mode: CUDA graphs when the first one (eager,
    where measured) is small enough for them, else events; events for all if any one cannot be
    captured in a graph."""
    first = fns.get("eager") or next(iter(fns.values()))
    graphs = timer.estimate_us(lambda: first(*sets[0])) < timer.policy.graph_below_us
    for attempt in ((True, False) if graphs else (False,)):
        timings = {}
        try:
            for name, fn in fns.items():
                timings[name] = timer.time([lambda fn=fn, xs=xs: fn(*xs) for xs in sets], graphs=attempt)
        except Exception as error:  # noqa: BLE001 - a capture that fails: the row falls back to events
            if not attempt:
                raise
            row["timing_fallback"] = f"{name} could not be graph-captured ({type(error).__name__}); events for all"
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            continue
        break
    row["row_timing"] = "graph" if attempt else "events"
    for name, timing in timings.items():
        row["us"][name], row["spread"][name], row["timing_mode"][name] = (
            timing.median_us, timing.iqr_rel, f"{timing.mode}/{timing.l2}")


def ceilings(timer) -> tuple[float, float, dict]:
    """Measured copy bandwidth (GB/s, bytes read + written), cuBLAS fp16 8192^3 TFLOP/s, and the
    clocks read before and after each (a throttled or idle-clocked card shows there)."""
    src = torch.randn(2**28, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    copy = timer.time(lambda: dst.copy_(src), graphs=False)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    mm = timer.time(lambda: a @ b, graphs=False)
    clocks = {"copy": {k: copy.facts.get(k) for k in ("clocks_before", "clocks_after")},
              "cublas": {k: mm.facts.get(k) for k in ("clocks_before", "clocks_after")}}
    return 2 * src.nbytes / copy.median_us / 1e3, 2 * 8192**3 / mm.median_us / 1e6, clocks


def versions() -> dict[str, str]:
    import triton

    from tiletune._version import __version__

    return {"tiletune": __version__, "torch": torch.__version__, "triton": triton.__version__,
            "cuda": str(torch.version.cuda), "python": platform.python_version()}


def results_path(device: str, date: str) -> Path:
    return RESULTS / f"{date}-{re.sub(r'[^A-Za-z0-9]+', '-', device).strip('-').lower()}.json"


def print_case(row: dict) -> None:
    mine = row["us"].get("tiletune")
    cells = []
    for name in ("tiletune", *gpu_report.BASELINES):
        us = row["us"].get(name)
        if us:
            cells.append(f"{name} {us:9.1f} us" + (f" ({us / mine:4.2f}x)" if mine and name != "tiletune" else ""))
        elif name in row["failures"]:
            cells.append(f"{name} failed")
    print(f"{row['id']:36s} " + "  ".join(cells) + f"  tuned {row.get('tuning_seconds', 0):.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few shapes of each kind")
    parser.add_argument("--cases", nargs="+", default=None, help="run the cases whose id contains any of these")
    parser.add_argument("--tune-seconds", type=float, default=20.0, help="tiletune's tuning budget per workload")
    parser.add_argument("--baselines", nargs="+", default=list(gpu_report.BASELINES),
                        choices=list(gpu_report.BASELINES), help="baselines to measure")
    parser.add_argument("--workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)),
                        help="compile worker processes for tuning")
    parser.add_argument("--budget-ms", type=float, default=400.0, help="timing budget per implementation")
    parser.add_argument("--skip-done", action="store_true", help="skip cases today's results file already holds")
    parser.add_argument("--no-readme", action="store_true", help="do not update the README table")
    parser.add_argument("--results", type=Path, default=None,
                        help="results file (default bench/results/<date>-<device>.json)")
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    args = parser.parse_args(argv)
    cases = select(all_cases(), args.cases, args.quick)
    if args.list:
        print("\n".join(c.id for c in cases))
        return 0
    if not torch.cuda.is_available():
        print("no CUDA GPU visible: the GPU suite measures nothing here (run it on a machine with one)")
        return 0
    if not cases:
        print(f"no case matches {args.cases}; --list shows them")
        return 2

    from tiletune.search.measurement.timing import CudaTimer, TimingPolicy, clock_facts

    device = torch.cuda.get_device_name()
    path = args.results or results_path(device, datetime.date.today().isoformat())
    earlier = gpu_report.load_result(path)
    done = {c["id"] for c in earlier["cases"]} if earlier else set()
    if args.skip_done:
        cases = [c for c in cases if c.id not in done]
    timer = CudaTimer(TimingPolicy(budget_ms=args.budget_ms))
    copy_gbps, ceiling_tflops, ceiling_clocks = ceilings(timer)
    print(f"{device}: copy {copy_gbps:.0f} GB/s, cuBLAS fp16 8192^3 {ceiling_tflops:.0f} TFLOP/s; "
          f"{len(cases)} cases, {args.tune_seconds:.0f} s of tuning each", flush=True)
    rows: list[dict] = []
    db = Path(tempfile.mkdtemp(prefix="tiletune-gpu-suite-")) / "suite.db"
    tuning = Tuning(db, args.workers)
    result: dict | None = None
    try:
        for case in cases:
            rows.append(run_case(case, args, timer, tuning))
            print_case(rows[-1])
            merged = gpu_report.merge_cases(earlier["cases"] if earlier else [], rows)
            result = gpu_report.build_result(device, versions(), merged, copy_gbps, ceiling_tflops,
                                             {"clocks": clock_facts(), "ceiling_clocks": ceiling_clocks,
                                              "date": datetime.date.today().isoformat()})
            gpu_report.write_json(path, result)  # after every case: a run cut short keeps what it measured
    finally:
        tuning.close()
    if result is None:
        print("nothing measured")
        return 0
    print(f"\nwrote {path}")
    shown = path.resolve()
    table = gpu_report.markdown_table(
        result, str(shown.relative_to(BENCH.parent)) if shown.is_relative_to(BENCH.parent) else str(path))
    print(table)
    if not args.no_readme:
        README.write_text(gpu_report.update_readme(README.read_text(), table))
        print(f"updated the table in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
