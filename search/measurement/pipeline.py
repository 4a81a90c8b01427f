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


def _run_step(executor: Executor, step: Step, fn: Callable[..., StepResult],
              candidates: Sequence[tuple[Config, dict]], args: Callable[[Config], tuple], timeout: float,
              outcomes: dict[Config, Outcome]) -> list[tuple[Config, dict, StepResult]]:
    """`fn(*args(config))` for every candidate on `executor`: a candidate whose step failed (or
    whose worker did) gets its outcome in `outcomes`, with the facts known so far; the others
    come back, in order, with the step's result."""
    tasks = executor.map(fn, [args(config) for config, _ in candidates], timeout=timeout)
    passed = []
    for (config, facts), task in zip(candidates, tasks):
        result = step_result(step, task, timeout)
        if result.ok:
            passed.append((config, facts, result))
        else:
            outcomes[config] = Outcome.failed(config, result.status, result.reason, facts,
                                              transient=result.transient)
    return passed


def evaluate(spec: TaskSpec, batch: Sequence[Config], measurer: Measurer, compiler: Executor,
             verifier: Executor | None, *, seed: int = 0, compile_timeout: float = 180.0,
             verify_timeout: float = 300.0, on_stage: Callable[[str], None] | None = None) -> list[Outcome]:
    """The outcome of every config of `batch`, in order: compiled on `compiler` (its facts are
    `usage`, `tile`, `dot_dtype`), checked on `verifier`, measured. Without a `verifier`
    nothing is checked in the interpreter (a sweep recorded to compare searches; a GPU measurer
    still checks on the device before it times). `on_stage` hears which step the batch is in
    ("compiling 8 configs", ...), so that a progress display moves before the batch ends."""
    say = on_stage or (lambda stage: None)
    outcomes: dict[Config, Outcome] = {}
    say(f"compiling {len(batch)} config{'s' * (len(batch) != 1)} for sm_90")
    compiled = _run_step(compiler, "compile", compile_step, [(config, {}) for config in batch],
                         lambda config: (spec, config.to_json()), compile_timeout, outcomes)
    candidates = [(config, result.data) for config, _, result in compiled]
    if verifier is not None and candidates:
        say(f"checking {len(candidates)} against the reference in the interpreter")
        checked = _run_step(verifier, "verify", verify_step, candidates,
                            lambda config: (spec, config.to_json(), seed), verify_timeout, outcomes)
        candidates = [(config, facts) for config, facts, _ in checked]
    if candidates:
        say(f"measuring {len(candidates)} on {measurer.kind}")
    for outcome in measurer.measure(spec, candidates):
        outcomes[outcome.config] = outcome
    return [outcomes[config] for config in batch]
