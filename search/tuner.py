"""The tuner loop: propose a batch, compile it in parallel, verify it, measure it, record it.

Each batch lands in the DB in one transaction. Configs already measured for this workload on
this device are not measured again, and they seed the history, so re-running a tuning resumes
it; the trial budget counts new measurements.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tiletune._version import __version__
from tiletune.schedules.config import Config
from tiletune.search.features import featurize
from tiletune.search.measure import Measurer, Outcome, compile_step, verify_step
from tiletune.search.strategies import History, make_strategy
from tiletune.search.task import Task, TaskSpec
from tiletune.search.workers import WorkerPool
from tiletune.tuning_db import Record, TuningDB

COMPILE_ENV = {"TRITON_INTERPRET": "0"}
INTERPRET_ENV = {"TRITON_INTERPRET": "1"}


@dataclass
class Budget:
    """When to stop: after `trials` new measurements or `seconds` of wall time."""

    trials: int = 32
    seconds: float | None = None
    batch_size: int = 8


@dataclass
class TuneReport:
    """What a tuning run did and found."""

    spec: TaskSpec
    device: str
    measurer: str
    trials: int = 0
    resumed: int = 0
    seconds: float = 0.0
    best_config: Config | None = None
    best_latency_us: float | None = None
    statuses: Counter = field(default_factory=Counter)
    reasons: dict[str, str] = field(default_factory=dict)  # one example reason per failure status
    curve: list[tuple[int, float]] = field(default_factory=list)  # (trial, best latency so far)


class Tuner:
    """Tunes one task on one measurer, writing every outcome to the DB."""

    def __init__(
        self,
        task: Task,
        measurer: Measurer,
        db: TuningDB,
        *,
        strategy: str = "model",
        seed: int = 0,
        workers: int | None = None,
        compile_timeout: float = 180.0,
        verify_timeout: float = 300.0,
        on_batch: Callable[[TuneReport, int], None] | None = None,
    ) -> None:
        self.task, self.measurer, self.db = task, measurer, db
        self.seed = seed
        self.strategy = make_strategy(strategy, lambda c: self.task.facts(c).to_dict(), seed)
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.compile_timeout, self.verify_timeout = compile_timeout, verify_timeout
        self.on_batch = on_batch

    def _features(self, config: Config) -> np.ndarray:
        return featurize(config.as_dict(), self.task.facts(config).to_dict(), {})

    def _resume(self, report: TuneReport) -> History:
        history = History()
        workload, device = self.task.workload, self.measurer.device
        for record in self.db.records(workload.key, device.key):
            if record.measurer != self.measurer.kind:
                continue
            config = Config.from_dict(record.config)
            if not self.task.space.is_legal(config):
                continue  # measured under an older space: keep it in the DB, not in the search
            history.add(config, record.latency_us if record.status == "ok" else None,
                        self._features(config) if record.status == "ok" else None)
        report.resumed = len(history.tried)
        if history.best:
            report.best_config, report.best_latency_us = history.best
        return history

    def run(self, budget: Budget) -> TuneReport:
        """Tune until the budget is spent or the space is exhausted."""
        start = time.monotonic()
        report = TuneReport(self.task.spec, self.measurer.device.name, self.measurer.kind)
        self.db.add_workload(self.task.workload)
        self.db.add_device(self.measurer.device)
        history = self._resume(report)
        with WorkerPool(self.workers, env=COMPILE_ENV, name="compile") as compiler, \
                WorkerPool(1, env=INTERPRET_ENV, name="verify") as verifier:
            while report.trials < budget.trials:
                if budget.seconds is not None and time.monotonic() - start >= budget.seconds:
                    break
                n = min(budget.batch_size, budget.trials - report.trials)
                batch = self.strategy.propose(self.task.space, history, n)
                if not batch:
                    break  # the space is exhausted
                outcomes = self._evaluate(batch, compiler, verifier)
                self._record(outcomes, history, report)
                if self.on_batch:
                    self.on_batch(report, len(outcomes))
        report.seconds = time.monotonic() - start
        return report

    def _evaluate(self, batch: list[Config], compiler: WorkerPool, verifier: WorkerPool) -> list[Outcome]:
        spec = self.task.spec
        results: dict[Config, Outcome] = {}
        compiled = compiler.map(compile_step, [(spec, c.to_json()) for c in batch], timeout=self.compile_timeout)
        survivors: list[tuple[Config, dict]] = []
        for config, res in zip(batch, compiled):
            if res.status == "timeout":
                results[config] = Outcome(config, "timeout", f"compile exceeded {self.compile_timeout:.0f} s")
            elif res.status != "ok":
                results[config] = Outcome(config, "compile_error", f"compile worker {res.status}: {res.reason}")
            elif res.value["status"] != "ok":
                results[config] = Outcome(config, res.value["status"], res.value["reason"])
            else:
                survivors.append((config, res.value))
        verified = verifier.map(
            verify_step, [(spec, c.to_json(), self.seed) for c, _ in survivors], timeout=self.verify_timeout
        )
        measurable: list[tuple[Config, dict]] = []
        for (config, facts), res in zip(survivors, verified):
            if res.status == "timeout":
                results[config] = Outcome(config, "timeout", f"verification exceeded {self.verify_timeout:.0f} s", facts=facts)
            elif res.status != "ok":
                results[config] = Outcome(config, "runtime_error", f"verification worker {res.status}: {res.reason}", facts=facts)
            elif res.value["status"] != "ok":
                results[config] = Outcome(config, res.value["status"], res.value["reason"], facts=facts)
            else:
                measurable.append((config, facts))
        for outcome in self.measurer.measure(spec, measurable):
            results[outcome.config] = outcome
        return [results[c] for c in batch]

    def _record(self, outcomes: list[Outcome], history: History, report: TuneReport) -> None:
        import triton

        workload, device = self.task.workload, self.measurer.device
        records = [
            Record(
                workload.key, device.key, o.config.as_dict(), o.status, o.reason[:2000],
                o.latency_us, o.latency_min_us, o.latency_spread, o.repeats, self.measurer.kind,
                o.facts, triton.__version__, __version__,
            )
            for o in outcomes
        ]
        self.db.add_records(records)  # one transaction for the batch
        for o in outcomes:
            report.trials += 1
            report.statuses[o.status] += 1
            if o.status != "ok":
                report.reasons.setdefault(o.status, o.reason)
            ok = o.status == "ok"
            history.add(o.config, o.latency_us if ok else None, self._features(o.config) if ok else None)
            if ok and (report.best_latency_us is None or o.latency_us < report.best_latency_us):
                report.best_config, report.best_latency_us = o.config, o.latency_us
            if report.best_latency_us is not None:
                report.curve.append((report.resumed + report.trials, report.best_latency_us))
