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
from tiletune.search.measure import Measurer, Outcome, compile_batch, verify_step
from tiletune.search.strategies import History, make_strategy
from tiletune.search.task import Task, TaskSpec
from tiletune.search.workers import COMPILE_ENV, INTERPRET_ENV, Executor, WorkerPool  # noqa: F401 (re-exported)
from tiletune.tuning_db import Record, TuningDB



@dataclass
class Budget:
    """When to stop: after `trials` new measurements, `seconds` of wall time, or `patience`
    batches in a row without a better config."""

    trials: int = 32
    seconds: float | None = None
    batch_size: int = 8
    patience: int | None = None


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


class Pools:
    """The worker pools one or several tuners share: compiles (compiling processes) and
    interpreter verification (interpreting processes)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.compiler = WorkerPool(self.workers, env=COMPILE_ENV, name="compile")
        try:
            self.verifier = WorkerPool(1, env=INTERPRET_ENV, name="verify")
        except BaseException:
            self.compiler.close()
            raise

    def close(self) -> None:
        """Stop every worker."""
        self.compiler.close()
        self.verifier.close()

    def __enter__(self) -> Pools:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Records of other workloads that warm-start a new task's cost model (the most recent first).
TRANSFER_RECORDS = 4000


class Tuner:
    """Tunes one task on one measurer, writing every outcome to the DB.

    `run(budget)` tunes to the end; `start()` then repeated `step(n)` let a scheduler share
    workers between several tuners.
    """

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
        transfer: bool = True,
    ) -> None:
        self.task, self.measurer, self.db = task, measurer, db
        self.seed = seed
        self.strategy = make_strategy(strategy, lambda c: self.task.facts(c).to_dict(), seed)
        self.workers = workers
        self.compile_timeout, self.verify_timeout = compile_timeout, verify_timeout
        self.on_batch = on_batch
        self.transfer = transfer
        self.report: TuneReport | None = None
        self.history = History()

    def _features(self, config: Config) -> np.ndarray:
        return featurize(config.as_dict(), self.task.facts(config).to_dict(), {})

    def start(self) -> TuneReport:
        """Register the workload and device, and resume from what the DB holds."""
        self.report = TuneReport(self.task.spec, self.measurer.device.name, self.measurer.kind)
        self.db.add_workload(self.task.workload)
        self.db.add_device(self.measurer.device)
        workload, device = self.task.workload, self.measurer.device
        for record in self.db.records(workload.key, device.key):
            if record.measurer != self.measurer.kind:
                continue
            config, _ = self.task.stored_config(record.config)
            if config is None:
                continue  # measured under an older space, or damaged: keep it in the DB, not in the search
            ok = record.status == "ok"
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
        own = self.task.workload.key
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

    def step(self, pools: Pools, n: int) -> int:
        """Propose, compile, verify, measure and record one batch of up to `n` configs;
        returns how many were measured (0 once the space is exhausted)."""
        batch = self.strategy.propose(self.task.space, self.history, n)
        if not batch:
            self.report.exhausted = True
            return 0
        before = self.report.best_latency_us
        outcomes = self._evaluate(batch, pools.compiler, pools.verifier)
        self._record(outcomes, self.history, self.report)
        improved = self.report.best_latency_us is not None and (before is None or self.report.best_latency_us < before)
        self.report.stale_batches = 0 if improved else self.report.stale_batches + 1
        if self.on_batch:
            self.on_batch(self.report, len(outcomes))
        return len(outcomes)

    def run(self, budget: Budget, pools: Pools | None = None) -> TuneReport:
        """Tune until the budget is spent, the search stalls for `patience` batches, or the
        space is exhausted."""
        start = time.monotonic()
        report = self.start()
        own = pools is None
        pools = pools or Pools(self.workers)
        try:
            while report.trials < budget.trials:
                if budget.seconds is not None and time.monotonic() - start >= budget.seconds:
                    break
                if budget.patience is not None and report.stale_batches >= budget.patience:
                    break
                if not self.step(pools, min(budget.batch_size, budget.trials - report.trials)):
                    break
        finally:
            if own:
                pools.close()
        report.seconds = time.monotonic() - start
        return report

    def _evaluate(self, batch: list[Config], compiler: Executor, verifier: Executor) -> list[Outcome]:
        spec = self.task.spec
        results, survivors = compile_batch(spec, batch, compiler, self.compile_timeout)
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
                o.facts, triton.__version__, __version__, host=o.host,
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
