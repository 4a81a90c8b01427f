"""The `replay` measurer: latencies answered from a recorded sweep (`measurement.sweep`), so
that search can be studied offline, in milliseconds per batch, against measurements made once.
"""
from __future__ import annotations

from typing import Sequence

from tiletune.kernels.task import TaskSpec
from tiletune.schedules.config import Config
from tiletune.search.measurement.results import Outcome
from tiletune.search.measurement.sweep import Sweep
from tiletune.tuning_db import Status


class ReplayMeasurer:
    """A `Measurer` that answers from a recorded sweep; a config it did not record is
    "illegal" with a reason. Its kind is "replay:<the sweep's measurer>"."""

    def __init__(self, sweep: Sweep) -> None:
        self.sweep = sweep
        self.needs_kernels = False  # it answers from the sweep: nothing to compile or check
        self.kind = f"replay:{sweep.measurer}"
        self.device = sweep.device

    def measure(self, spec: TaskSpec, candidates: Sequence[tuple[Config, dict]]) -> list[Outcome]:
        """The recorded outcome of each candidate (the facts passed in are not needed)."""
        outcomes = []
        for config, _facts in candidates:
            entry = self.sweep.lookup(spec, config)
            if entry is None:
                known = len(self.sweep.entries(spec))
                where = f"among the {known} configs recorded for {spec}" if known else f"(the sweep has no workload {spec})"
                outcomes.append(Outcome.failed(config, Status.ILLEGAL,
                                               f"not in the replayed sweep: {config!r} is not {where}"))
            elif entry.status is Status.OK:
                outcomes.append(Outcome.measured(config, entry.latency_us, facts=entry.facts))
            else:
                outcomes.append(Outcome.failed(config, entry.status, entry.reason, entry.facts))
        return outcomes
