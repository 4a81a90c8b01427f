"""From a batch of configs to their outcomes: compile them in parallel, check them in the
interpreter, measure the survivors.

`evaluate` is the one pipeline the tuner and the sweep recorder run: a candidate that fails a
step leaves it with that step's failure (`results.step_result` says which), the rest go on, and
the outcomes come back in the batch's order.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

from tiletune.schedules.config import Config
from tiletune.search.execution.workers import Executor
from tiletune.search.measurement.measurers import Measurer
from tiletune.search.measurement.results import Outcome, Step, StepResult, step_result
from tiletune.search.measurement.steps import compile_step, verify_step

if TYPE_CHECKING:
    from tiletune.kernels.task import TaskSpec


def run_step(executor: Executor, step: Step, fn: Callable[..., StepResult], items: Sequence[tuple],
             timeout: float | None) -> list[StepResult]:
    """`fn(*item)` for every item on `executor`, each answer (or its worker's failure) as the
    step's result, in input order."""
    return [step_result(step, task, timeout) for task in executor.map(fn, items, timeout=timeout)]


def compile_batch(spec: TaskSpec, batch: Sequence[Config], compiler: Executor, timeout: float
                  ) -> tuple[dict[Config, Outcome], list[tuple[Config, dict]]]:
    """Compile `batch` on `compiler`: the failures as outcomes, and the rest with their compile
    facts (`usage`, `tile`, `dot_dtype`)."""
    failed: dict[Config, Outcome] = {}
    compiled: list[tuple[Config, dict]] = []
    results = run_step(compiler, "compile", compile_step, [(spec, c.to_json()) for c in batch], timeout)
    for config, result in zip(batch, results):
        if result.ok:
            compiled.append((config, result.data))
        else:
            failed[config] = Outcome.failed(config, result.status, result.reason)
    return failed, compiled


def evaluate(spec: TaskSpec, batch: Sequence[Config], measurer: Measurer, compiler: Executor,
             verifier: Executor | None, *, seed: int = 0, compile_timeout: float = 180.0,
             verify_timeout: float = 300.0) -> list[Outcome]:
    """The outcome of every config of `batch`, in order. Without a `verifier` nothing is checked
    in the interpreter (a sweep recorded to compare searches; a GPU measurer still checks on
    the device before it times)."""
    outcomes, candidates = compile_batch(spec, batch, compiler, compile_timeout)
    if verifier is not None:
        checks = run_step(verifier, "verify", verify_step,
                          [(spec, config.to_json(), seed) for config, _ in candidates], verify_timeout)
        passed = []
        for (config, facts), check in zip(candidates, checks):
            if check.ok:
                passed.append((config, facts))
            else:
                outcomes[config] = Outcome.failed(config, check.status, check.reason, facts)
        candidates = passed
    for outcome in measurer.measure(spec, candidates):
        outcomes[outcome.config] = outcome
    return [outcomes[config] for config in batch]
