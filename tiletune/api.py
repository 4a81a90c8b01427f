"""The public entry points: `autotune` an operator at a shape, and `load` it as a library call."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Mapping

from tiletune.errors import UsageError
from tiletune.tensorexpr.operator import Operator

DEVICES = ("auto", "cuda", "sim-h100")


def resolve_device(device: str) -> str:
    """`auto` becomes `cuda` where a GPU is visible, else the simulated H100."""
    if device not in DEVICES:
        raise UsageError(f"unknown device '{device}'; expected one of {', '.join(DEVICES)}")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "sim-h100"


def operator_ref(op: str | Operator) -> str:
    """How workers find an operator again: a built-in name or `path.py:function`."""
    if isinstance(op, str):
        path, sep, name = op.rpartition(":")
        # workers may run elsewhere than the caller's directory: name the file absolutely
        return f"{Path(path).expanduser().resolve()}:{name}" if sep and Path(path).expanduser().is_file() else op
    from tiletune.kernels.library import BUILTINS

    if BUILTINS.get(op.name) is op:
        return op.name
    module = getattr(op.fn, "__module__", None)
    path = getattr(sys.modules.get(module), "__file__", None)
    if not path:
        raise UsageError(f"operator {op.name} is not defined in a file; worker processes cannot import it")
    return f"{path}:{op.fn.__name__}"


def autotune(
    op: str | Operator,
    dims: Mapping[str, int],
    *,
    dtype: str | None = None,
    device: str = "auto",
    trials: int = 32,
    time_limit: float | None = None,
    db: str | os.PathLike | None = None,
    seed: int = 0,
    strategy: str = "model",
    batch_size: int = 8,
    workers: int | None = None,
    on_batch: Callable | None = None,
    on_start: Callable[[], None] | None = None,
):
    """Tune `op` at `dims` and store every measurement in the tuning DB; returns the report.

    `on_start` is called once the arguments are checked, just before the first batch."""
    from tiletune.search.measure import CudaMeasurer, SimMeasurer
    from tiletune.search.strategies import STRATEGIES
    from tiletune.search.task import Task, TaskSpec
    from tiletune.search.tuner import COMPILE_ENV, Budget, Tuner
    from tiletune.search.workers import WorkerPool
    from tiletune.tuning_db import TuningDB, default_db_path

    if trials < 1:
        raise UsageError(f"trials must be at least 1, got {trials}")
    if time_limit is not None and time_limit <= 0:
        raise UsageError(f"the time limit must be positive, got {time_limit}")
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")
    if batch_size < 1:
        raise UsageError(f"the batch size must be at least 1, got {batch_size}")
    if strategy not in STRATEGIES:  # before the DB file is created
        raise UsageError(f"unknown strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    spec = TaskSpec.make(operator_ref(op), dims, dtype)
    task = Task(spec, op if isinstance(op, Operator) else None)
    spec = TaskSpec.make(spec.op, task.dims, dtype)
    kind = resolve_device(device)
    gpu_pool = None
    try:
        if kind == "cuda":
            gpu_pool = WorkerPool(1, env=COMPILE_ENV, name="gpu")
            measurer = CudaMeasurer(gpu_pool, seed=seed)
        else:
            measurer = SimMeasurer(kind)
        with TuningDB(Path(db) if db else default_db_path()) as database:
            tuner = Tuner(task, measurer, database, strategy=strategy, seed=seed, workers=workers, on_batch=on_batch)
            if on_start:
                on_start()
            return tuner.run(Budget(trials, time_limit, batch_size))
    finally:
        if gpu_pool is not None:
            gpu_pool.close()


def load(op: str | Operator, db: str | os.PathLike | None = None):
    """`op` as a callable on torch tensors that runs the best tuned config for each call's
    shapes, dtypes and device (see `tiletune.loaded.LoadedOperator`)."""
    from tiletune.kernels.library import resolve_operator
    from tiletune.loaded import LoadedOperator
    from tiletune.tuning_db import default_db_path

    return LoadedOperator(resolve_operator(op), Path(db) if db else default_db_path())
