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
    host: str = ""  # the machine that measured it, where not this one (a Ray actor's node)


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
def time_step(spec: TaskSpec, config_json: str, seed: int, repeats: int, budget_ms: float = 400.0) -> dict:
    """Verify one config on the GPU at small dims, then time it at full dims by the method of
    `search.timing` (events, a flushed L2, CUDA graphs for small kernels, at least `repeats`
    repetitions and more until the median is stable or `budget_ms` is spent)."""
    import torch

    from tiletune.kernels import runtime
    from tiletune.kernels.verify import check, make_inputs, verification_dims
    from tiletune.search.timing import CudaTimer, TimingPolicy
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
    timer = CudaTimer(TimingPolicy(min_repeats=max(3, repeats), max_repeats=max(3, repeats, 2000), budget_ms=budget_ms))
    out_shape = task.graph.shape_of(task.graph.output, task.dims)
    out_dtype = torch_dtype(task.graph.output.dtype)
    launch = runtime.launcher(src, True)
    dims = tuple(task.dims.values())
    calls = []
    # Small kernels are timed in CUDA graphs, where no flush can run between calls: rotating
    # over input sets larger than the L2 together keeps each call's inputs cold instead.
    sets = None
    while sets is None or len(calls) < sets:
        inputs = make_inputs(task.graph, task.dims, seed + len(calls), device="cuda")
        out = torch.empty(out_shape, dtype=out_dtype, device="cuda")
        calls.append(lambda inputs=inputs, out=out: launch(*inputs, out, *dims))
        if sets is None:
            sets = timer.sets_for(sum(x.nbytes for x in inputs) + out.nbytes)
    timing = timer.time(calls)
    return {"status": "ok", **timing.record_fields(), "timing": timing.to_dict()}

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
                # absent from facts recorded before the Hopper knobs: their old behaviour
                persistent=bool(tile.get("persistent", 0)), tma=bool(tile.get("tma", 0)),
                warp_specialized=bool(tile.get("warp_specialized", 0)),
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
    """Times candidates on this machine's GPU, each in a worker process with a time limit.

    A candidate that beats the best this measurer has seen for its workload is timed a second
    time before it is accepted, and recorded with the slower of its two medians: one lucky
    measurement must not crown a config (helion#1187). Both medians stay in its facts.
    """

    def __init__(self, pool, *, repeats: int = 10, budget_ms: float = 400.0, timeout: float = 60.0,
                 seed: int = 0) -> None:
        import torch
        import triton

        if not torch.cuda.is_available():
            raise UsageError("--device cuda needs a CUDA GPU, and none is visible; use --device sim-h100")
        faults.rules()  # a bad TILETUNE_FAULTS fails here, before anything is recorded
        major, minor = torch.cuda.get_device_capability()
        self.kind = "cuda"
        self.device = Device.make(torch.cuda.get_device_name(), f"sm{major}{minor}", triton.__version__)
        self.pool, self.repeats, self.budget_ms, self.timeout, self.seed = pool, repeats, budget_ms, timeout, seed
        self._best: dict[TaskSpec, float] = {}  # best accepted median per workload

    def measure(self, spec: TaskSpec, candidates: Sequence[tuple[Config, dict]]) -> list[Outcome]:
        """Real latencies, measured one candidate at a time (never two kernels on one GPU at once)."""
        outcomes = []
        for config, facts in candidates:
            outcome = self._time(spec, config, facts)
            best = self._best.get(spec)
            if outcome.status == "ok" and best is not None and outcome.latency_us < best:
                outcome = confirm_best(outcome, self._time(spec, config, facts))
            if outcome.status == "ok" and (best is None or outcome.latency_us < best):
                self._best[spec] = outcome.latency_us
            outcomes.append(outcome)
        return outcomes

    def _time(self, spec: TaskSpec, config: Config, facts: dict) -> Outcome:
        result = self.pool.run(time_step, spec, config.to_json(), self.seed, self.repeats, self.budget_ms,
                               timeout=self.timeout)
        if result.status == "ok" and result.value["status"] == "ok":
            v = result.value
            return Outcome(config, "ok", "", v["latency_us"], v["latency_min_us"], v["latency_spread"],
                           v["repeats"], {**facts, "timing": v["timing"]})
        if result.status == "ok":
            return Outcome(config, result.value["status"], result.value["reason"], facts=facts)
        status = "timeout" if result.status == "timeout" else "runtime_error"
        return Outcome(config, status, result.reason, facts=facts)


def confirm_best(first: Outcome, second: Outcome) -> Outcome:
    """The outcome of a would-be new best measured twice: a failure on the second run wins,
    else the slower median (with its own spread), both medians noted in `facts["remeasured"]`."""
    if second.status != "ok":
        return second
    slower = max(first, second, key=lambda o: o.latency_us)
    facts = {**slower.facts, "remeasured": [first.latency_us, second.latency_us]}
    return Outcome(slower.config, "ok", "", slower.latency_us, min(first.latency_min_us, second.latency_min_us),
                   slower.latency_spread, first.repeats + second.repeats, facts)
