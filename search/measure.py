"""Measuring candidates: the steps run in worker processes, and the measurers.

A candidate goes through three steps, each in a worker so that a crash or a hang costs one
worker, never the tuner:

1. `compile_step` (a compiling worker): lower, AOT-compile for sm_90, read registers, spills
   and shared memory, and compute the tile facts;
2. `verify_step` (an interpreting worker): run the kernel on CPU tensors at small dims, in a
   NaN-filled output, against the reference evaluator;
3. a `Measurer`: `sim-<gpu>` answers from the analytic model in-process; `cuda` times the
   kernel on the GPU in a worker (`time_step`).

Every step returns plain data (dicts) so that results cross process boundaries and land in
the DB as JSON.
"""
from __future__ import annotations

import functools
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Sequence

from tiletune.errors import CompileError, TiletuneError, UsageError
from tiletune.schedules.config import Config
from tiletune.search import faults, step_cache
from tiletune.search.sim_realtime import measurement_seconds
from tiletune.search.simulator import SIMULATED_GPUS, DoesNotFit, KernelFacts, simulate
from tiletune.tuning_db import Device

if TYPE_CHECKING:  # the simulated measurer runs without torch (in a Ray actor, say)
    from tiletune.search.task import TaskSpec


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one candidate: a status of `tuning_db.STATUSES`, and its figures."""

    config: Config
    status: str
    reason: str = ""
    latency_us: float | None = None
    latency_min_us: float | None = None
    latency_spread: float | None = None
    repeats: int = 0
    facts: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# worker steps (module-level functions: they are pickled by name into worker processes)


def _out_of_memory_is_a_status(step):
    """Report a step that runs out of memory as a `runtime_error` saying so: a bare MemoryError
    would reach the tuner as an anonymous worker error."""

    @functools.wraps(step)  # keeps the name, so the step still pickles by reference
    def run(*args: object) -> dict:
        try:
            return step(*args)
        except Exception as error:
            torch = sys.modules.get("torch")
            if not (isinstance(error, MemoryError)
                    or (torch is not None and isinstance(error, torch.cuda.OutOfMemoryError))):
                raise
            return {"status": "runtime_error", "reason": f"out of memory: {type(error).__name__}: {error}"}

    return run


@_out_of_memory_is_a_status
def compile_step(spec: TaskSpec, config_json: str) -> dict:
    """Lower and AOT-compile one config; returns {"usage": ..., "tile": ...} or a failure."""
    from tiletune.kernels.compile import aot_compile
    from tiletune.kernels.runtime import load_module

    task = spec.build()
    config = task.space.from_json(config_json)
    faults.inject("compile", config)
    src = task.source(config)
    constants, aligned = task.specialization(src)
    signature = dict(src.signature)
    signature.update({name: "constexpr" for name in constants})
    cached = step_cache.key("compile", [src.text, signature, src.constexprs, constants, sorted(aligned),
                                        src.num_warps, src.num_stages])
    compiled = step_cache.get(cached)
    if compiled is None:
        fn = getattr(load_module(src), src.kernel_name)
        try:
            usage = aot_compile(
                fn, signature, {**src.constexprs, **constants},
                num_warps=src.num_warps, num_stages=src.num_stages, aligned=aligned,
            )
            compiled = {"status": "ok", "usage": usage.to_dict()}
        except TiletuneError as error:
            compiled = {"status": "compile_error", "reason": str(error)}
        step_cache.put(cached, compiled)
    if compiled["status"] != "ok":
        return compiled
    facts = task.facts(config)
    return {"status": "ok", "usage": compiled["usage"], "tile": facts.to_dict(), "dot_dtype": facts.dot_dtype}


@_out_of_memory_is_a_status
def verify_step(spec: TaskSpec, config_json: str, seed: int) -> dict:
    """Run one config through Triton's interpreter at small dims against the reference."""
    from tiletune.kernels.verify import check_candidate, verification_dims

    task = spec.build()
    config = task.space.from_json(config_json)
    wrong = faults.inject("verify", config)
    if wrong:
        return {"status": "wrong_result", "reason": wrong}
    src = task.source(config, for_interpreter=True)
    schedule = task.resolve(config)
    dtypes = [t.dtype for t in (*task.graph.inputs, task.graph.output)]
    cached = step_cache.key("verify", [src.text, task.graph.structural_hash(), dtypes,
                                       verification_dims(task.graph, task.dims, schedule), seed])
    answer = step_cache.get(cached)
    if answer is None:
        verdict = check_candidate(task.graph, src, task.dims, schedule, seed)
        answer = {"status": "ok", "worst": verdict.worst} if verdict.ok else {"status": "wrong_result", "reason": verdict.reason}
        step_cache.put(cached, answer)
    return answer


@_out_of_memory_is_a_status
def time_step(spec: TaskSpec, config_json: str, seed: int, repeats: int) -> dict:
    """Verify one config on the GPU at small dims, then time it at full dims (CUDA events, an
    L2 flush before every repetition, median and spread over `repeats`)."""
    import torch

    from tiletune.kernels import runtime
    from tiletune.kernels.verify import check, make_inputs, verification_dims
    from tiletune.tensorexpr.reference import torch_dtype

    task = spec.build()
    config = task.space.from_json(config_json)
    wrong = faults.inject("measure", config)
    if wrong:
        return {"status": "wrong_result", "reason": wrong}
    src = task.source(config)
    small = verification_dims(task.graph, task.dims, task.resolve(config))
    verdict = check(task.graph, src, small, seed, device="cuda")
    if not verdict.ok:
        return {"status": "wrong_result", "reason": f"on the GPU: {verdict.reason}"}
    inputs = make_inputs(task.graph, task.dims, seed, device="cuda")
    out = torch.empty(task.graph.shape_of(task.graph.output, task.dims),
                      dtype=torch_dtype(task.graph.output.dtype), device="cuda")
    # Flush about twice the L2 (50 MiB on H100) so each repetition starts cold, as a real
    # call in a model does; a far larger flush would dominate small kernels (triton#3943).
    flush = torch.empty(100 * 1024 * 1024, dtype=torch.int8, device="cuda")
    run = lambda: runtime.launch(src, inputs, out, task.dims)  # noqa: E731
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000.0)
    return {"status": "ok", **latency_stats(times)}


def compile_batch(spec: TaskSpec, batch: Sequence[Config], pool, timeout: float
                  ) -> tuple[dict[Config, Outcome], list[tuple[Config, dict]]]:
    """Compile `batch` in parallel in a compiling worker pool: the failures as outcomes (a
    hang is a timeout, a dead worker a compile error), and the rest with their compile facts."""
    failed: dict[Config, Outcome] = {}
    compiled: list[tuple[Config, dict]] = []
    results = pool.map(compile_step, [(spec, c.to_json()) for c in batch], timeout=timeout)
    for config, res in zip(batch, results):
        if res.status == "timeout":
            failed[config] = Outcome(config, "timeout", f"compile exceeded {timeout:.0f} s")
        elif res.status != "ok":
            failed[config] = Outcome(config, "compile_error", f"compile worker {res.status}: {res.reason}")
        elif res.value["status"] != "ok":
            failed[config] = Outcome(config, res.value["status"], res.value["reason"])
        else:
            compiled.append((config, {k: v for k, v in res.value.items() if k != "status"}))
    return failed, compiled


def latency_stats(times_us: Sequence[float]) -> dict:
    """Median, minimum and relative spread ((p80 - p20) / median) of repeated timings."""
    ordered = sorted(times_us)
    median = statistics.median(ordered)
    q = statistics.quantiles(ordered, n=5) if len(ordered) >= 2 else [median] * 4
    return {
        "latency_us": median,
        "latency_min_us": ordered[0],
        "latency_spread": (q[3] - q[0]) / median if median > 0 else 0.0,
        "repeats": len(ordered),
    }


# ---------------------------------------------------------------------------------------------
# measurers


class Measurer(Protocol):
    """Turns compiled, verified candidates into latencies.

    `kind` is what records say measured them ("cuda", "sim-h100"); `device` keys the records.
    `measure` gets each candidate's compile facts (`usage`, `tile`) and returns one `Outcome`
    per candidate, in order; it never raises for a bad candidate.
    """

    kind: str
    device: Device

    def measure(self, spec: TaskSpec, candidates: Sequence[tuple[Config, dict]]) -> list[Outcome]:
        """Latencies (or failures) of `candidates`, in order."""
        ...


class SimMeasurer:
    """The simulated device: deterministic latencies from the analytic model of one GPU.

    Every record it writes says `sim-<gpu>` in its measurer and device, so simulated figures
    are never mistaken for real ones.
    """

    def __init__(self, kind: str = "sim-h100", *, realtime: bool = False, isolated: bool = False) -> None:
        if kind not in SIMULATED_GPUS:
            raise UsageError(f"unknown simulated device '{kind}'; known: {', '.join(SIMULATED_GPUS)}")
        import triton

        faults.rules()  # a bad TILETUNE_FAULTS fails here, before anything is recorded
        self.kind = kind
        self.realtime = realtime  # sleep as long as measuring on the real GPU would take
        self.isolated = isolated  # runs in a worker of its own (a Ray actor), not in the tuner
        self.gpu = SIMULATED_GPUS[kind]
        self.device = Device.make(kind, "sm90", triton.__version__)

    def measure(self, spec: TaskSpec, candidates: Sequence[tuple[Config, dict]]) -> list[Outcome]:
        """Simulated latency of each candidate from its tile facts and compile facts."""
        outcomes = []
        for config, facts in candidates:
            tile, usage = facts["tile"], facts["usage"]
            kf = KernelFacts(
                programs=int(tile["programs"]), flops_per_program=tile["flops_per_program"],
                bytes_per_program=tile["bytes_per_program"], unique_bytes=tile["unique_bytes"],
                uses_tensor_cores=bool(tile["uses_tensor_cores"]),
                dot_dtype=facts["dot_dtype"] if tile["uses_tensor_cores"] else "none",
                tile_m=int(tile["tile_m"]), tile_n=int(tile["tile_n"]), tile_k=int(tile["tile_k"]),
                k_iterations=int(tile["k_iterations"]), num_warps=int(usage["num_warps"]),
                num_stages=int(usage["num_stages"]), registers=int(usage["registers"]),
                spill_bytes=int(usage["spill_bytes"]), shared_bytes=int(usage["shared_bytes"]),
            )
            try:
                wrong = faults.inject("measure", config, in_process=not self.isolated)
                result = simulate(kf, self.gpu)
            except DoesNotFit as error:
                outcomes.append(Outcome(config, "compile_error", f"does not fit {self.gpu.name}: {error}", facts=facts))
                continue
            except CompileError as error:
                outcomes.append(Outcome(config, "compile_error", str(error), facts=facts))
                continue
            except MemoryError as error:
                outcomes.append(Outcome(config, "runtime_error", f"out of memory: MemoryError: {error}", facts=facts))
                continue
            if wrong:
                outcomes.append(Outcome(config, "wrong_result", wrong, facts=facts))
                continue
            sim = {"limiter": result.limiter, "occupancy": result.occupancy, "waves": result.waves}
            outcomes.append(Outcome(
                config, "ok", latency_us=result.latency_us, latency_min_us=result.latency_us,
                latency_spread=0.0, repeats=1, facts={**facts, "sim": sim},
            ))
        if self.realtime:
            time.sleep(sum(measurement_seconds(self.gpu, o.latency_us) for o in outcomes))
        return outcomes


class CudaMeasurer:
    """Times candidates on this machine's GPU, each in a worker process with a time limit."""

    def __init__(self, pool, *, repeats: int = 50, timeout: float = 60.0, seed: int = 0) -> None:
        import torch
        import triton

        if not torch.cuda.is_available():
            raise UsageError("--device cuda needs a CUDA GPU, and none is visible; use --device sim-h100")
        faults.rules()  # a bad TILETUNE_FAULTS fails here, before anything is recorded
        major, minor = torch.cuda.get_device_capability()
        self.kind = "cuda"
        self.device = Device.make(torch.cuda.get_device_name(), f"sm{major}{minor}", triton.__version__)
        self.pool, self.repeats, self.timeout, self.seed = pool, repeats, timeout, seed

    def measure(self, spec: TaskSpec, candidates: Sequence[tuple[Config, dict]]) -> list[Outcome]:
        """Real latencies, measured one candidate at a time (never two kernels on one GPU at once)."""
        outcomes = []
        for config, facts in candidates:
            result = self.pool.run(time_step, spec, config.to_json(), self.seed, self.repeats, timeout=self.timeout)
            if result.status == "ok" and result.value["status"] == "ok":
                v = result.value
                outcomes.append(Outcome(config, "ok", "", v["latency_us"], v["latency_min_us"],
                                        v["latency_spread"], v["repeats"], facts))
            elif result.status == "ok":
                outcomes.append(Outcome(config, result.value["status"], result.value["reason"], facts=facts))
            else:
                status = "timeout" if result.status == "timeout" else "runtime_error"
                outcomes.append(Outcome(config, status, result.reason, facts=facts))
        return outcomes

