"""The public entry points: `autotune` an operator at a shape, and `load` it as a library call."""
from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tiletune.errors import UsageError
from tiletune.kernels.library import operator_ref
from tiletune.kernels.offsets import check_workload
from tiletune.tensorexpr.operator import Operator

# More compile workers than this only queue for the same cores (and each holds torch in memory).
MAX_WORKERS = 4 * (os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class TuneOptions:
    """How to tune, shared by one workload and many: checked before anything is created."""

    device: str = "auto"
    trials: int = 32
    time_limit: float | None = None
    db: str | os.PathLike | None = None
    seed: int = 0
    strategy: str = "model"
    batch_size: int = 8
    workers: int | None = None
    patience: int | None = None
    executor: object = "local"  # "local", "ray", or an open `search.backends.Backend` to reuse
    sim_realtime: bool = False

    def check(self) -> None:
        """Refuse impossible options with a message that says what was expected."""
        from tiletune.search.strategies import STRATEGIES

        for name in ("trials", "seed", "batch_size", "workers", "patience"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise UsageError(f"{name} must be an integer, got {value!r}")
        if self.time_limit is not None and (isinstance(self.time_limit, bool)
                                            or not isinstance(self.time_limit, (int, float))):
            raise UsageError(f"the time limit must be a number of seconds, got {self.time_limit!r}")
        for name in ("strategy", "device"):
            if not isinstance(getattr(self, name), str):
                raise UsageError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.trials < 1:
            raise UsageError(f"trials must be at least 1, got {self.trials}")
        if self.time_limit is not None and not self.time_limit > 0:  # NaN too
            raise UsageError(f"the time limit must be a positive number of seconds, got {self.time_limit}")
        if self.workers is not None and not 1 <= self.workers <= MAX_WORKERS:
            raise UsageError(f"workers must be between 1 and {MAX_WORKERS} (4 per core), got {self.workers}")
        if not 0 <= self.seed < 2**32:  # what numpy's and XGBoost's generators accept
            raise UsageError(f"the seed must be between 0 and {2**32 - 1}, got {self.seed}")
        if self.batch_size < 1:
            raise UsageError(f"the batch size must be at least 1, got {self.batch_size}")
        if self.patience is not None and self.patience < 1:
            raise UsageError(f"patience must be at least 1 batch, got {self.patience}")
        if self.strategy not in STRATEGIES:  # before the DB file is created
            raise UsageError(f"unknown strategy '{self.strategy}'; choose one of {', '.join(STRATEGIES)}")
        from tiletune.search.backends import check_executor
        from tiletune.search.devices import REALTIME_ON_A_GPU, device_kinds

        name = self.executor if isinstance(self.executor, str) else getattr(self.executor, "name", "")
        check_executor(name)
        kinds = device_kinds(self.device, executor=name)
        if self.sim_realtime and "cuda" in kinds:
            raise UsageError(REALTIME_ON_A_GPU)

    @classmethod
    def of(cls, options: Mapping[str, object]) -> TuneOptions:
        """The checked options of a call's keyword arguments."""
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise UsageError(f"unknown option {', '.join(unknown)}; options are {', '.join(cls.__dataclass_fields__)}")
        opts = cls(**options)
        opts.check()
        return opts

    @property
    def budget(self):
        from tiletune.search.tuner import Budget

        return Budget(self.trials, self.time_limit, self.batch_size, self.patience)


@contextmanager
def _session(options: TuneOptions):
    """The executor backend, one measurer per device kind and the tuning DB of one tuning
    run, closed after it."""
    from tiletune.search.backends import open_backend
    from tiletune.tuning_db import TuningDB, default_db_path

    with ExitStack() as stack:
        if isinstance(options.executor, str):
            backend = open_backend(options.executor, options.workers)
            stack.callback(backend.close)
        else:  # the caller's backend, kept open (its warm workers serve several runs)
            backend = options.executor
        measurers = backend.measurers(options.device, seed=options.seed, realtime=options.sim_realtime)
        for measurer in measurers:
            if hasattr(measurer, "close"):  # measurement actors end with the run, whoever owns the backend
                stack.callback(measurer.close)
        database = stack.enter_context(TuningDB(Path(options.db) if options.db else default_db_path()))
        yield backend, measurers, database


def autotune(
    op: str | Operator,
    dims: Mapping[str, int],
    *,
    dtype: str | None = None,
    on_batch: Callable | None = None,
    on_start: Callable[[], None] | None = None,
    on_stage: Callable | None = None,
    **options,
):
    """Tune `op` at `dims` and store every measurement in the tuning DB; returns the report
    (a list of reports, one per device kind, when `device` names several). An operator that
    runs as several kernels (`kernels.parts`) has its kernels tuned together under one budget
    of `trials`, each its own workload (`op.part_<stage>`): a list of reports, one per kernel.

    Options are those of `TuneOptions` (device, trials, time_limit, db, seed, strategy,
    batch_size, workers, patience, executor, sim_realtime). `on_start` is called once the
    arguments are checked, just before the first batch; `on_batch(report, n)` after each batch,
    `on_stage(report, text)` as a batch moves from compiling to checking to measuring."""
    from tiletune.kernels.task import Task, TaskSpec
    from tiletune.search.tuner import Tuner

    opts = TuneOptions.of(options)
    if not isinstance(dims, Mapping):
        raise UsageError(f"dims must be a mapping of dim names to sizes, such as {{'N': 4096}}, got {dims!r}")
    split = _part_workloads(op, dims, dtype)
    if split:
        return autotune_many(split, on_batch=on_batch, on_start=on_start, on_stage=on_stage, **options)
    spec = TaskSpec.make(operator_ref(op), dims, dtype)
    task = Task(spec, op if isinstance(op, Operator) else None)
    check_workload(task.graph, task.dims)
    with _session(opts) as (backend, measurers, database):
        if on_start:
            on_start()
        reports = [Tuner(task, measurer, database, strategy=opts.strategy, seed=opts.seed, on_batch=on_batch,
                         on_stage=on_stage).run(opts.budget, backend) for measurer in measurers]  # each device kind for itself
        return reports[0] if len(reports) == 1 else reports


def autotune_many(
    workloads: str | os.PathLike | Sequence,
    *,
    on_batch: Callable | None = None,
    on_start: Callable[[], None] | None = None,
    on_stage: Callable | None = None,
    **options,
):
    """Tune every workload of a JSON/TOML file (or a list of `WorkloadEntry`) under one total
    trial budget, giving batches where the expected gain is largest; one report per workload
    (and per device kind, kind after kind, when `device` names several)."""
    from tiletune.search.scheduler import TaskScheduler, load_workloads
    from tiletune.search.tuner import Tuner

    opts = TuneOptions.of(options)
    entries = load_workloads(workloads) if isinstance(workloads, (str, os.PathLike)) else list(workloads)
    entries = [part for entry in entries for part in _part_workloads(entry, None, None) or [entry]]
    tasks = [entry.spec.build() for entry in entries]  # every entry checked before tuning starts
    for task in tasks:
        check_workload(task.graph, task.dims)
    with _session(opts) as (backend, measurers, database):
        if on_start:
            on_start()
        reports = []
        for measurer in measurers:
            tuners = [Tuner(task, measurer, database, strategy=opts.strategy, seed=opts.seed, on_batch=on_batch,
                            on_stage=on_stage) for task in tasks]
            reports += TaskScheduler(tuners, [e.weight for e in entries]).run(opts.budget, backend)
        return reports


def _part_workloads(op, dims, dtype) -> list:
    """The workloads of the kernels `op` runs as (`kernels.parts`), or [] when one kernel
    holds it. `op` may be a workloads file's entry: each part takes its weight (the operator's
    latency is the sum of its kernels')."""
    from tiletune.kernels.library import resolve_operator
    from tiletune.kernels.parts import is_split, parts
    from tiletune.kernels.task import TaskSpec
    from tiletune.search.scheduler import WorkloadEntry

    weight = 1.0
    if isinstance(op, WorkloadEntry):
        op, dims, dtype, weight = op.spec.op, dict(op.spec.dims), op.spec.dtype, op.weight
    operator = resolve_operator(op)
    if not is_split(operator, dtype):
        return []
    found = parts(operator, dtype)
    return [WorkloadEntry(TaskSpec.make(operator_ref(part_op), dims, dtype), weight)
            for _, part_op in found]


def load(op: str | Operator, db: str | os.PathLike | None = None, *, cpu: str | None = None):
    """`op` as a callable on torch tensors that runs the best tuned config for each call's
    shapes, dtypes and device (see `tiletune.loaded.LoadedOperator`).

    `cpu` says how CPU tensors run: "torch" (vectorised torch ops, the default) or
    "interpreter" (the tuned kernel in Triton's interpreter, slow); unset, $TILETUNE_CPU decides."""
    from tiletune.kernels.library import resolve_operator
    from tiletune.loaded import LoadedOperator
    from tiletune.tuning_db import default_db_path

    return LoadedOperator(resolve_operator(op), Path(db) if db else default_db_path(), cpu)


def backward_steps(op: str | Operator, dtype: str | None = None) -> list[str]:
    """The workload names of `op`'s backward kernels at `dtype` (`matmul.grad_a`, ...), each
    tuned and loaded like any operator; GradientError when `op` has no gradient."""
    from tiletune.kernels.backward import step_operators
    from tiletune.kernels.library import resolve_operator

    forward = resolve_operator(op)
    return [operator_ref(step_op) for _, step_op in step_operators(forward, dtype)]
