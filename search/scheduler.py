"""Tuning many workloads under one total budget.

The idea of Ansor's task scheduler: the objective is the weighted sum of the workloads' best
latencies, so each batch goes to the workload whose best latency is expected to drop the most
per trial. That expectation mixes what the last batches achieved (a backward difference of the
best latency) with an optimistic forward guess (the best latency spread over the trials spent
so far, which favours workloads that had little tuning); a workload with no passing config yet
comes first, and one whose space is exhausted or whose search stalled retires.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from tiletune.errors import UsageError
from tiletune.kernels.task import TaskSpec, parse_dims
from tiletune.search.backends import Backend
from tiletune.search.tuner import Budget, Tuner, TuneReport

# Weight of the observed improvement rate against the optimistic guess (Ansor uses 0.2).
BACKWARD_WEIGHT = 0.2
# Batches over which the observed improvement rate is measured.
WINDOW = 2


@dataclass(frozen=True, slots=True)
class WorkloadEntry:
    """One line of a workloads file: what to tune, and how much its latency matters."""

    spec: TaskSpec
    weight: float = 1.0


def load_workloads(path: str | Path) -> list[WorkloadEntry]:
    """Read a JSON list, or a TOML file of `[[workload]]` tables, each with `op`, `shape`
    (a table or "M=512,N=512"), optional `dtype` and `weight`."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"workloads file '{path}' does not exist")
    try:
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text).get("workload")
        else:
            data = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError, OSError) as error:  # RecursionError: nested too deep
        raise UsageError(f"workloads file '{path}' is not valid {path.suffix.lstrip('.') or 'JSON'}: {error}") from None
    if not isinstance(data, list) or not data:
        raise UsageError(f"workloads file '{path}' must hold a non-empty list of workloads "
                         "(JSON: [{\"op\": ..., \"shape\": ...}], TOML: [[workload]] tables)")
    return [_entry(path, n, item) for n, item in enumerate(data)]


def _entry(path: Path, n: int, item: object) -> WorkloadEntry:
    where = f"{path} workload {n}"
    if not isinstance(item, dict):
        raise UsageError(f"{where}: expected a table with op and shape, got {type(item).__name__}")
    unknown = sorted(set(item) - {"op", "shape", "dtype", "weight"})
    if unknown:
        raise UsageError(f"{where}: unknown field {', '.join(unknown)}; fields are op, shape, dtype, weight")
    op, shape, dtype, weight = item.get("op"), item.get("shape"), item.get("dtype"), item.get("weight", 1.0)
    if not isinstance(op, str) or not op:
        raise UsageError(f"{where}: 'op' must be a built-in name or path/file.py:function")
    if isinstance(shape, str):
        dims = parse_dims(shape, f"{where}: shape")
    elif isinstance(shape, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in shape.values()):
        dims = dict(shape)
    else:
        raise UsageError(f"{where}: 'shape' must be a table of dims to integers or \"M=512,N=512\"")
    if dtype is not None and not isinstance(dtype, str):
        raise UsageError(f"{where}: 'dtype' must be a string such as \"float16\"")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
        raise UsageError(f"{where}: 'weight' must be a positive number, got {weight!r}")
    if op.count(":") == 1 and not Path(op.split(":")[0]).is_absolute():
        op = f"{(path.parent / op.split(':')[0]).resolve()}:{op.split(':')[1]}"  # relative to the file
    return WorkloadEntry(TaskSpec.make(op, dims, dtype), float(weight))


class TaskScheduler:
    """Gives each batch to the workload with the largest expected gain."""

    def __init__(self, tuners: list[Tuner], weights: list[float]) -> None:
        self.tuners, self.weights = tuners, weights
        self.bests: list[list[float | None]] = [[] for _ in tuners]  # best latency after each batch

    def gain(self, i: int) -> float:
        """Expected drop of the weighted objective per trial if workload `i` gets the next batch."""
        report = self.tuners[i].report
        if report.best_latency_us is None:
            return float("inf")  # nothing passes yet: nothing else is known about it
        history = [b for b in self.bests[i] if b is not None]
        backward = 0.0
        if len(history) > WINDOW:
            trials = max(1, report.trials) / max(1, len(self.bests[i]))
            backward = (history[-1 - WINDOW] - history[-1]) / (WINDOW * trials)
        forward = report.best_latency_us / max(1, report.trials + report.resumed)
        return self.weights[i] * (BACKWARD_WEIGHT * backward + (1 - BACKWARD_WEIGHT) * forward)

    def run(self, budget: Budget, backend: Backend) -> list[TuneReport]:
        """Tune every workload within the total budget; returns one report per workload."""
        start = time.monotonic()
        try:
            return self._run(budget, backend, start)
        finally:
            for tuner in self.tuners:
                tuner.finish()  # claims left by a batch cut short

    def _run(self, budget: Budget, backend: Backend, start: float) -> list[TuneReport]:
        for tuner in self.tuners:
            tuner.start()
        active = set(range(len(self.tuners)))
        spent = 0

        def out_of_budget() -> bool:
            late = budget.seconds is not None and time.monotonic() - start >= budget.seconds
            return late or spent >= budget.trials

        # one batch each first, in order, so that every workload has a figure
        for i in range(len(self.tuners)):
            if out_of_budget():
                break
            spent += self._step(i, backend, min(budget.batch_size, budget.trials - spent), active, budget)
        while active and not out_of_budget():
            i = max(sorted(active), key=self.gain)
            spent += self._step(i, backend, min(budget.batch_size, budget.trials - spent), active, budget)
        elapsed = time.monotonic() - start
        for tuner in self.tuners:
            tuner.report.seconds = elapsed
        return [t.report for t in self.tuners]

    def _step(self, i: int, backend: Backend, n: int, active: set[int], budget: Budget) -> int:
        done = self.tuners[i].step(backend, n)
        report = self.tuners[i].report
        self.bests[i].append(report.best_latency_us)
        stalled = budget.patience is not None and report.stale_batches >= budget.patience
        if not done or report.exhausted or stalled:
            active.discard(i)
        return done
