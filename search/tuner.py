"""The tuner loop: propose a batch, compile it in parallel, verify it, measure it, record it.

Each batch lands in the DB in one transaction. Configs already measured for this workload on
this device are not measured again, and they seed the history, so re-running a tuning resumes
it; the trial budget counts new measurements.

Tuners of one workload on one DB split its space: a tuner claims each config in the DB before
it measures it (`TuningDB.claim`), and one that another tuner has stored or is measuring is
skipped for another candidate (a stored one joins the history). A candidate that failed for a
reason outside it (its worker killed from outside, or it never reached its work) is kept in the
DB as a retry, not a record, and a resumed run measures it again first, up to MAX_ATTEMPTS
times in all; its own failures (compile error, wrong result, its own timeout) are records that
no run measures again.

The same loop studies search offline (`search.replay_search`): with a measurer that answers
from recorded outcomes (`needs_kernels` False) nothing is compiled or checked, and without a DB
nothing is stored.
"""
from __future__ import annotations

import contextlib
import dataclasses
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
from tiletune.errors import TuningDBError
from tiletune.tuning_db import Claimant, Record, Retry, Status, TuningDB, Workload, config_key


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
    statuses: Counter = field(default_factory=Counter)  # by Status, and "transient" for retries kept
    reasons: dict[str, str] = field(default_factory=dict)  # one example reason per failure status
    retried: int = 0  # of the trials, configs owed a retry by an earlier run
    skipped: int = 0  # candidates left to another tuner (it stored or is measuring them)
    curve: list[tuple[int, float]] = field(default_factory=list)  # (trial, best latency so far)
    stale_batches: int = 0  # batches in a row that found nothing better
    exhausted: bool = False  # every legal config has been tried

    def trials_to(self, latency_us: float) -> int | None:
        """The trial (counted from 1, resumed ones included) that first reached `latency_us`,
        or None if none did."""
        return next((trial for trial, best in self.curve if best <= latency_us), None)


# Records of other workloads that warm-start a new task's cost model (the most recent first).
TRANSFER_RECORDS = 4000

# Measurements of one config that may fail from outside it before the last such failure is
# recorded as its own: a config that takes its worker down every time is its own problem.
MAX_ATTEMPTS = 3

# How long a claim outlives a batch's compile and verification limits: the measurement and the
# write. Claims of a tuner on another host that died free their configs after this.
CLAIM_MARGIN_S = 600.0


class Tuner:
    """Tunes one task on one measurer, writing every outcome to the DB.

    `run(budget)` tunes to the end; `start()` then repeated `step(n)` let a scheduler share
    workers between several tuners. `strategy` is a registered name or a `Strategy`; `space`
    and `tile_facts` default to the task's (a replayed sweep narrows both to what it recorded).
    With `db` None nothing is stored or resumed. Every config is claimed in the DB before it is
    measured; `run` releases the claims at its end, and so must `finish()` after `start`/`step`.
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
        on_stage: Callable[[TuneReport, str], None] | None = None,
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
        self.on_batch, self.on_stage = on_batch, on_stage
        self.transfer = transfer
        self.report: TuneReport | None = None
        self.history = History()
        self.claimant = Claimant.this_run()
        self.claim_ttl_s = compile_timeout + verify_timeout + CLAIM_MARGIN_S
        self._attempts: dict[Config, int] = {}  # failures from outside, so far, of configs owed a retry
        self._owed: list[Config] = []  # configs owed a retry, measured before any new proposal

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
        for retry in self.db.retries(workload.key, device.key, self.measurer.kind):
            config, _ = self.task.stored_config(retry.config)
            if config is not None and config not in self.history.tried:
                self._attempts[config] = retry.attempts
        self._owed = list(self._attempts)
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
        batch = self._next_batch(n)
        if not batch:
            self.report.exhausted = True
            return 0
        before = self.report.best_latency_us
        if self.measurer.needs_kernels:
            on_stage = (lambda stage: self.on_stage(self.report, stage)) if self.on_stage else None
            outcomes = evaluate(self.task.spec, batch, self.measurer, backend.compiler, backend.verifier, seed=self.seed,
                                compile_timeout=self.compile_timeout, verify_timeout=self.verify_timeout,
                                on_stage=on_stage)
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
            try:
                self.finish()
            finally:
                if own:
                    backend.close()
        report.seconds = time.monotonic() - start
        return report

    def finish(self) -> None:
        """Release the claims this run still holds (after an error, or a batch cut short), so
        that other tuners may measure those configs at once."""
        if self.db is not None and not self.db.readonly:
            # A DB locked past its timeout must not hide the error that ended the run; claims
            # of a process that has exited count for nothing anyway.
            with contextlib.suppress(TuningDBError):
                self.db.release_claims(self.claimant)

    def _next_batch(self, n: int) -> list[Config]:
        """Up to `n` configs to measure: first those owed a retry, then the strategy's
        proposals; with a DB, only those this run claimed. A candidate another tuner stored
        meanwhile joins the history with its record; one it is measuring is left to it."""
        batch: list[Config] = []
        while len(batch) < n:
            owed, self._owed = self._owed[: n - len(batch)], self._owed[n - len(batch):]
            owed = [config for config in owed if config not in self.history.tried]
            want = n - len(batch) - len(owed)
            proposals = owed + (self.strategy.propose(self.space, self.history, want) if want else [])
            if not proposals:
                break  # the space is exhausted
            granted = proposals if self.db is None else self._claim(proposals)
            batch += granted
            # Marked tried at once, so that the next proposals in this batch are other configs;
            # `_record` adds their outcomes.
            self.history.tried.update(granted)
        return batch

    def _claim(self, proposals: list[Config]) -> list[Config]:
        """The proposals this run claimed; the others join the history (with their records,
        where another tuner stored them) so the strategy draws other configs."""
        by_key = {config_key(config.as_dict()): config for config in proposals}
        workload, device, kind = self.workload.key, self.measurer.device.key, self.measurer.kind
        granted = set(self.db.claim(workload, device, kind, list(by_key), self.claimant, self.claim_ttl_s))
        taken = [key for key in by_key if key not in granted]
        if taken:
            self.report.skipped += len(taken)
            for record in self.db.records(workload, device, config_keys=taken):
                config = by_key.get(record.config_key)
                if record.measurer == kind and config is not None and record.status is Status.OK:
                    self.history.add(config, record.latency_us, self._features(config))
            for key in taken:
                self.history.add(by_key[key], None, None)  # stored as a failure, or being measured
        return [config for key, config in by_key.items() if key in granted]

    def _record(self, outcomes: list[Outcome]) -> None:
        """Store the batch in one transaction (records, retries owed, claims released), and add
        it to the history and the report."""
        outcomes = [self._settled(o) for o in outcomes]
        if self.db is not None:
            workload, device, kind = self.workload.key, self.measurer.device.key, self.measurer.kind
            retries = [Retry(workload, device, kind, o.config.as_dict(), o.reason[:2000],
                             self._attempts.get(o.config, 0) + 1) for o in outcomes if o.transient]
            self.db.add_records([self._as_record(o) for o in outcomes if not o.transient], retries=retries,
                                claimant=self.claimant)
        report = self.report
        for o in outcomes:
            report.trials += 1
            report.retried += o.config in self._attempts
            status = "transient" if o.transient else o.status
            report.statuses[status] += 1
            if not o.ok:
                report.reasons.setdefault(status, o.reason)
            self.history.add(o.config, o.latency_us if o.ok else None, self._features(o.config) if o.ok else None)
            if o.ok and (report.best_latency_us is None or o.latency_us < report.best_latency_us):
                report.best_config, report.best_latency_us = o.config, o.latency_us
            if report.best_latency_us is not None:
                report.curve.append((report.resumed + report.trials, report.best_latency_us))

    def _settled(self, outcome: Outcome) -> Outcome:
        """The outcome as stored: a failure from outside a config that has had MAX_ATTEMPTS of
        them is recorded as its own (with its status: a runtime error, a timeout)."""
        attempts = self._attempts.get(outcome.config, 0) + 1
        if not outcome.transient or attempts < MAX_ATTEMPTS:
            return outcome
        return dataclasses.replace(outcome, transient=False,
                                   reason=f"{outcome.reason} (failed from outside the config {attempts} times in a row;"
                                          " recorded as its own failure)")

    def _as_record(self, outcome: Outcome) -> Record:
        import triton

        return Record(
            workload_key=self.workload.key, device_key=self.measurer.device.key,
            config=outcome.config.as_dict(), status=outcome.status, reason=outcome.reason[:2000],
            latency_us=outcome.latency_us, latency_min_us=outcome.latency_min_us,
            latency_spread=outcome.latency_spread, repeats=outcome.repeats, measurer=self.measurer.kind,
            facts=outcome.facts, triton_version=triton.__version__, tiletune_version=__version__, host=outcome.host,
        )
