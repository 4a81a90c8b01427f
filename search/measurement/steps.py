"""The steps a candidate goes through, each run in a worker process so that a crash or a hang
costs one worker, never the tuner:

1. `compile_step` (a compiling worker): lower, AOT-compile for sm_90, read registers, spills
   and shared memory, and compute the tile facts;
2. `verify_step` (an interpreting worker): run the kernel on CPU tensors at small dims, in a
   NaN-filled output, against the reference evaluator;
3. `time_step` (the GPU worker of the `cuda` measurer): check the kernel on the GPU, then time
   it. Simulated measurers answer in-process from the compile facts instead.

Each step answers a `StepResult` (plain data: it crosses the process boundary, and compile and
verification answers are cached on disk by `execution.step_cache`). Steps are module-level
functions, so they pickle by name into worker processes.
"""
from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Callable

from tiletune.errors import TiletuneError
from tiletune.search.execution import faults, step_cache
from tiletune.search.execution.worker_process import preparing
from tiletune.search.measurement.results import StepResult
from tiletune.tuning_db import Status

if TYPE_CHECKING:  # workers import the task when a step runs; the tuner may not need torch
    from tiletune.kernels.task import TaskSpec


def _out_of_memory_is_a_status(step: Callable[..., StepResult]) -> Callable[..., StepResult]:
    """Report a step that runs out of memory as a runtime error saying so: a bare MemoryError
    would reach the tuner as an anonymous worker error."""

    @functools.wraps(step)  # keeps the name, so the step still pickles by reference
    def run(*args: object) -> StepResult:
        try:
            return step(*args)
        except Exception as error:
            torch = sys.modules.get("torch")
            if not (isinstance(error, MemoryError)
                    or (torch is not None and isinstance(error, torch.cuda.OutOfMemoryError))):
                raise
            return StepResult.failed(Status.RUNTIME_ERROR, f"out of memory: {type(error).__name__}: {error}")

    return run


def _cached(step: str, question: object, answer: Callable[[], StepResult]) -> StepResult:
    """The cached answer of `step` to `question`, or `answer()` stored for next time."""
    entry = step_cache.key(step, question)
    stored = step_cache.get(entry)
    result = StepResult.from_dict(stored) if stored is not None else None
    if result is None:
        result = answer()
        step_cache.put(entry, result.to_dict())
    return result


@_out_of_memory_is_a_status
def compile_step(spec: TaskSpec, config_json: str) -> StepResult:
    """Lower and AOT-compile one config; passes with `usage`, `tile` and `dot_dtype`."""
    with preparing():  # importing the operator is no part of this config's time limit
        from tiletune.kernels.compile import aot_compile
        from tiletune.kernels.runtime import load_module

        task = spec.build()
    config = task.space.from_json(config_json)
    faults.inject("compile", config)
    src = task.source(config)
    constants, aligned = task.specialization(src)
    signature = dict(src.signature)
    signature.update({name: "constexpr" for name in constants})

    def compile_kernel() -> StepResult:
        fn = getattr(load_module(src), src.kernel_name)
        try:
            usage = aot_compile(
                fn, signature, {**src.constexprs, **constants},
                num_warps=src.num_warps, num_stages=src.num_stages, aligned=aligned,
            )
        except TiletuneError as error:
            return StepResult.failed(Status.COMPILE_ERROR, str(error))
        return StepResult.passed(usage=usage.to_dict())

    compiled = _cached("compile", [src.text, signature, src.constexprs, constants, sorted(aligned),
                                   src.num_warps, src.num_stages], compile_kernel)
    if not compiled.ok:
        return compiled
    facts = task.facts(config)
    return StepResult.passed(usage=compiled.data["usage"], tile=facts.to_dict(), dot_dtype=facts.dot_dtype)


@_out_of_memory_is_a_status
def verify_step(spec: TaskSpec, config_json: str, seed: int) -> StepResult:
    """Run one config through Triton's interpreter at small dims against the reference;
    passes with `worst` (the largest error relative to the allowed one)."""
    with preparing():
        from tiletune.kernels.verify import check_candidate, verification_dims

        task = spec.build()
    config = task.space.from_json(config_json)
    wrong = faults.inject("verify", config)
    if wrong:
        return StepResult.failed(Status.WRONG_RESULT, wrong)
    src = task.source(config, for_interpreter=True)
    schedule = task.resolve(config)
    dtypes = [t.dtype for t in (*task.graph.inputs, task.graph.output)]

    def check() -> StepResult:
        verdict = check_candidate(task.graph, src, task.dims, schedule, seed)
        if verdict.ok:
            return StepResult.passed(worst=verdict.worst)
        return StepResult.failed(Status.WRONG_RESULT, verdict.reason)

    return _cached("verify", [src.text, task.graph.structural_hash(), dtypes,
                              verification_dims(task.graph, task.dims, schedule), seed], check)


@_out_of_memory_is_a_status
def time_step(spec: TaskSpec, config_json: str, seed: int, repeats: int, budget_ms: float = 400.0) -> StepResult:
    """Verify one config on the GPU at small dims, then time it at full dims by the method of
    `measurement.timing` (events, a flushed L2, CUDA graphs for small kernels, at least
    `repeats` repetitions and more until the median is stable or `budget_ms` is spent); passes
    with the latency fields of a record and `timing`."""
    with preparing():
        import torch

        from tiletune.kernels import runtime
        from tiletune.kernels.verify import check, make_inputs, verification_dims
        from tiletune.search.measurement.timing import CudaTimer, TimingPolicy
        from tiletune.tensorexpr.reference import torch_dtype

        task = spec.build()
    config = task.space.from_json(config_json)
    wrong = faults.inject("measure", config)
    if wrong:
        return StepResult.failed(Status.WRONG_RESULT, wrong)
    src = task.source(config)
    small = verification_dims(task.graph, task.dims, task.resolve(config))
    verdict = check(task.graph, src, small, seed, device="cuda")
    if not verdict.ok:
        return StepResult.failed(Status.WRONG_RESULT, f"on the GPU: {verdict.reason}")
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
    return StepResult.passed(**timing.record_fields(), timing=timing.to_dict())
