"""Tuners of one workload on one DB split its space through claims, in one process: a measurer
that needs no kernels, so nothing is compiled and the test is fast."""
from __future__ import annotations

from collections import Counter
from typing import Callable

from tiletune.kernels.task import TaskSpec
from tiletune.schedules.config import Config
from tiletune.search.measurement.measurers import SimMeasurer
from tiletune.search.measurement.results import Outcome
from tiletune.search.tuner import Budget, Tuner
from tiletune.tuning_db import TuningDB, Workload

ADD = TaskSpec.make("add", {"N": 300, "D": 1000}, "float32")


class Answering:
    """A measurer that answers at once (a latency from the config's knobs), and calls `during`
    while it measures: another tuner's step, taken while this one holds its claims."""

    needs_kernels = False

    def __init__(self, during: Callable[[], None] | None = None) -> None:
        sim = SimMeasurer()
        self.device, self.kind = sim.device, sim.kind
        self.during = during
        self.measured: list[Config] = []

    def measure(self, spec: TaskSpec, candidates: list[tuple[Config, dict]]) -> list[Outcome]:
        if self.during is not None:
            during, self.during = self.during, None
            during()
        self.measured += [config for config, _ in candidates]
        return [Outcome.measured(config, 1.0 + len(repr(config)) % 7) for config, _ in candidates]


def test_two_tuners_with_one_seed_measure_no_config_twice(tmp_path):
    with TuningDB(tmp_path / "t.db") as db:
        task = ADD.build()
        second = Tuner(task, Answering(), db, strategy="random", seed=0, transfer=False)
        second.start()
        # The first tuner's first batch is claimed when the second steps: the second draws others.
        first = Tuner(task, Answering(during=lambda: second.step(None, 4)), db, strategy="random", seed=0,
                      transfer=False)
        first.run(Budget(trials=8, batch_size=4))
        while second.report.trials < 8 and second.step(None, 4):
            pass
        second.finish()
        measured = first.measurer.measured + second.measurer.measured
        assert max(Counter(measured).values()) == 1
        assert first.report.trials + second.report.trials == 16 == len(db.records(Workload.of(task).key))
        assert second.report.skipped >= 4  # the first's claimed batch, then its stored configs
        assert db.claims(Workload.of(task).key) == []


def test_a_tuner_without_a_db_claims_nothing():
    task = ADD.build()
    tuner = Tuner(task, Answering(), None, strategy="random", seed=0, transfer=False)
    report = tuner.run(Budget(trials=4, batch_size=4))
    assert report.trials == 4 and report.skipped == 0
