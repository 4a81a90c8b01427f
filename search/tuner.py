"""The tuner loop: propose a batch, compile it in parallel, verify it, measure it, record it.

Each batch lands in the DB in one transaction. Configs already measured for this workload on
this device are not measured again, and they seed the history, so re-running a tuning resumes
it; the trial budget counts new measurements.

The same loop studies search offline (`search.replay_search`): with a measurer that answers
from recorded outcomes (`needs_kernels` False) nothing is compiled or checked, and without a DB
nothing is stored.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tiletune._version import __version__
from tiletune.kernels.task import Task, TaskSpec
from tiletune.schedules.config import Config
from tiletune.schedules.space import ConfigSpace
from tiletune.search.backends import Backend, LocalBackend
from tiletune.search.features import featurize
from tiletune.search.measurement.measurers import Measurer
from tiletune.search.measurement.pipeline import evaluate
from tiletune.search.measurement.results import Outcome
from tiletune.search.strategies import History, Strategy, make_strategy
from tiletune.tuning_db import Record, Status, TuningDB, Workload


@dataclass
class Budget:
    """When to stop: after `trials` new measurements, `seconds` of wall time, or `patience`
    batches in a row without a better config."""

    trials: int = 32
    seconds: float | None = None
    batch_size: int = 8
    patience: int | None = None
    target_us: float | None = None
    """Stop once a config this fast (or faster) is measured."""


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
    stale_batches: int = 0  # batches in a row that found nothing better
    exhausted: bool = False  # every legal config has been tried

    def trials_to(self, latency_us: float) -> int | None:
        """The trial (counted from 1, resumed ones included) that first reached `latency_us`,
        or None if none did."""
        return next((trial for trial, best in self.curve if best <= latency_us), None)


# Records of other workloads that warm-start a new task's cost model (the most recent first).
TRANSFER_RECORDS = 4000


class Tuner:
    """Tunes one task on one measurer, writing every outcome to the DB.

    `run(budget)` tunes to the end; `start()` then repeated `step(n)` let a scheduler share
    workers between several tuners. `strategy` is a registered name or a `Strategy`; `space`
    and `tile_facts` default to the task's (a replayed sweep narrows both to what it recorded).
    With `db` None nothing is stored or resumed.
    """

    def __init__(
        self,
        task: Task,
        measurer: Measurer,
        db: TuningDB | None,
        *,
        strategy: str | Strategy = "model",
        seed: int = 0,
        workers: int | None = None,
        compile_timeout: float = 180.0,
        verify_timeout: float = 300.0,
        on_batch: Callable[[TuneReport, int], None] | None = None,
        transfer: bool = True,
        space: ConfigSpace | None = None,
        tile_facts: Callable[[Config], dict] | None = None,
    ) -> None:
        self.task, self.measurer, self.db = task, measurer, db
        self.workload = Workload.of(task)
        self.seed = seed
        self.space = space if space is not None else task.space
        self.tile_facts = tile_facts or (lambda config: self.task.facts(config).to_dict())
        self.strategy = make_strategy(strategy, self.tile_facts, seed) if isinstance(strategy, str) else strategy
        self.workers = workers
        self.compile_timeout, self.verify_timeout = compile_timeout, verify_timeout
        self.on_batch = on_batch
        self.transfer = transfer
        self.report: TuneReport | None = None
        self.history = History()

    def _features(self, config: Config) -> np.ndarray:
        return featurize(config.as_dict(), self.tile_facts(config), {})

    def start(self) -> TuneReport:
        """Register the workload and device, and resume from what the DB holds."""
        self.report = TuneReport(self.task.spec, self.measurer.device.name, self.measurer.kind)
        if self.db is None:
            return self.report
        self.db.add_workload(self.workload)
        self.db.add_device(self.measurer.device)
        workload, device = self.workload, self.measurer.device
        for record in self.db.records(workload.key, device.key):
            if record.measurer != self.measurer.kind:
                continue
            config, _ = self.task.stored_config(record.config)
            if config is None:
                continue  # measured under an older space, or damaged: keep it in the DB, not in the search
            ok = record.status is Status.OK
            self.history.add(config, record.latency_us if ok else None, self._features(config) if ok else None)
        self.report.resumed = len(self.history.tried)
        if self.history.best:
            self.report.best_config, self.report.best_latency_us = self.history.best
        if self.transfer and hasattr(self.strategy, "prior"):
            self.strategy.prior = self._transfer_rows()
        return self.report

    def _transfer_rows(self) -> list[tuple[np.ndarray, float, str]]:
        """Features and latencies of ok records of *other* workloads on this device and
        measurer, so a new shape of a known operator starts from what was learned there."""
        rows: list[tuple[np.ndarray, float, str]] = []
        own = self.workload.key
        device = self.measurer.device.key
        for workload in self.db.workloads():
            if workload.key == own:
                continue
            for record in self.db.records(workload.key, device, status="ok"):
                tile = record.facts.get("tile") if isinstance(record.facts, dict) else None
                if record.measurer != self.measurer.kind or not isinstance(tile, dict) or not record.latency_us:
                    continue
                try:
                    rows.append((featurize(record.config, tile, {}), record.latency_us, workload.key))
                except (TypeError, ValueError, OverflowError):
                    continue  # facts or knobs a damaged or hostile file made unusable as features
        return rows[-TRANSFER_RECORDS:]

    def step(self, backend: Backend | None, n: int) -> int:
        """Propose, compile, verify, measure and record one batch of up to `n` configs on
        `backend`'s compile and verification workers; returns how many were measured (0 once
        the space is exhausted). `backend` may be None for a measurer that needs no kernels."""
        batch = self.strategy.propose(self.space, self.history, n)
        if not batch:
            self.report.exhausted = True
            return 0
        before = self.report.best_latency_us
        if self.measurer.needs_kernels:
            outcomes = evaluate(self.task.spec, batch, self.measurer, backend.compiler, backend.verifier, seed=self.seed,
                                compile_timeout=self.compile_timeout, verify_timeout=self.verify_timeout)
        else:
            outcomes = self.measurer.measure(self.task.spec, [(config, {}) for config in batch])
        self._record(outcomes)
        improved = self.report.best_latency_us is not None and (before is None or self.report.best_latency_us < before)
        self.report.stale_batches = 0 if improved else self.report.stale_batches + 1
        if self.on_batch:
            self.on_batch(self.report, len(outcomes))
        return len(outcomes)

    def run(self, budget: Budget, backend: Backend | None = None) -> TuneReport:
        """Tune until the budget is spent (trials, seconds, a target latency reached), the
        search stalls for `patience` batches, or the space is exhausted. Without a `backend`,
        the run starts local workers of its own (if its measurer needs kernels)."""
        start = time.monotonic()
        report = self.start()
        own = backend is None and self.measurer.needs_kernels
        backend = LocalBackend(self.workers) if own else backend
        try:
            while report.trials < budget.trials:
                if budget.seconds is not None and time.monotonic() - start >= budget.seconds:
                    break
                if budget.patience is not None and report.stale_batches >= budget.patience:
                    break
                if budget.target_us is not None and report.best_latency_us is not None \
                        and report.best_latency_us <= budget.target_us:
                    break
                if not self.step(backend, min(budget.batch_size, budget.trials - report.trials)):
                    break
        finally:
            if own:
                backend.close()
        report.seconds = time.monotonic() - start
        return report

    def _record(self, outcomes: list[Outcome]) -> None:
        """Store the batch in one transaction, and add it to the history and the report."""
        if self.db is not None:
            self.db.add_records([self._as_record(o) for o in outcomes])
        report = self.report
        for o in outcomes:
            report.trials += 1
            report.statuses[o.status] += 1
            if not o.ok:
                report.reasons.setdefault(o.status, o.reason)
            self.history.add(o.config, o.latency_us if o.ok else None, self._features(o.config) if o.ok else None)
            if o.ok and (report.best_latency_us is None or o.latency_us < report.best_latency_us):
                report.best_config, report.best_latency_us = o.config, o.latency_us
            if report.best_latency_us is not None:
                report.curve.append((report.resumed + report.trials, report.best_latency_us))

    def _as_record(self, outcome: Outcome) -> Record:
        import triton

        return Record(
            workload_key=self.workload.key, device_key=self.measurer.device.key,
            config=outcome.config.as_dict(), status=outcome.status, reason=outcome.reason[:2000],
            latency_us=outcome.latency_us, latency_min_us=outcome.latency_min_us,
            latency_spread=outcome.latency_spread, repeats=outcome.repeats, measurer=self.measurer.kind,
            facts=outcome.facts, triton_version=triton.__version__, tiletune_version=__version__, host=outcome.host,
        )
