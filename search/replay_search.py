"""Searching a recorded sweep: how many trials a strategy needs, measured without a GPU.

`replay_search` runs one strategy on one workload of a sweep through the tuner's own loop
(`search.tuner.Tuner`), with the replay measurer answering latencies from the sweep, the space
narrowed to the configs it recorded and the features computed from its recorded tile facts: no
compiles, no DB, milliseconds per batch. `ok_rows` gives a workload's recorded configs as the
cost model sees them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tiletune.kernels.task import TaskSpec
from tiletune.schedules.config import Config
from tiletune.search.features import featurize
from tiletune.search.measurement.replay import ReplayMeasurer
from tiletune.search.measurement.sweep import Sweep
from tiletune.search.strategies import Strategy
from tiletune.search.tuner import Budget, Tuner
from tiletune.tuning_db import Status


@dataclass(frozen=True, slots=True)
class ReplayRun:
    """How one search of a sweep went: `trials` configs measured until the first one within
    the target (or until the space ran out, `found` False), and the best latency seen."""

    trials: int
    found: bool
    best_us: float | None


def replay_search(strategy: Strategy, sweep: Sweep, spec: TaskSpec, target_us: float, *, batch: int = 8,
                  limit: int | None = None) -> ReplayRun:
    """Run `strategy` on `spec`'s recorded space, answering latencies from the sweep, until a
    config with latency <= `target_us` is measured; `trials` counts configs in the order
    proposed. Stops when the strategy proposes nothing new, or after `limit` trials.

    History rows carry the features the tuner gives them (knobs and recorded tile facts).
    """
    tuner = Tuner(spec.build(), ReplayMeasurer(sweep), None, strategy=strategy,
                  space=sweep.space(spec), tile_facts=sweep.tile_facts(spec))
    limit = limit if limit is not None else len(sweep.entries(spec))
    report = tuner.run(Budget(trials=limit, batch_size=batch, target_us=target_us))
    hit = report.trials_to(target_us)
    if hit is None:
        return ReplayRun(report.trials, False, report.best_latency_us)
    return ReplayRun(hit, True, dict(report.curve)[hit])  # the best when the target was reached


def ok_rows(sweep: Sweep, spec: TaskSpec) -> tuple[list[Config], np.ndarray, np.ndarray]:
    """The ok configs of `spec`, their search features (knobs and tile facts, as the tuner
    computes them) and their latencies."""
    tile_facts = sweep.tile_facts(spec)
    ok = [e for e in sweep.entries(spec).values() if e.status is Status.OK]
    if not ok:
        return [], np.zeros((0, 0), dtype=np.float32), np.zeros(0)
    X = np.stack([featurize(e.config.as_dict(), tile_facts(e.config), {}) for e in ok])
    return [e.config for e in ok], X, np.array([e.latency_us for e in ok], dtype=np.float64)
