"""Records of a tuning DB checked against the operators they claim to measure.

The DB layer (`tuning_db`) knows records as data and cannot build config spaces (that needs
schedules and kernels, which it must not import); this module can. It serves three readers:

- `task_for(workload)`: the built-in task a stored workload is, found by name and confirmed by
  its structure hash (a DB's operator name is never imported as a file: that would run code);
- `usable_best(db, workload)`: the fastest usable record per device whose config is legal in
  the task's space, and what was passed over (`show`, `list`, `db stats`);
- `RecordValidator(db)`: the check `tiletune db import/merge` runs on every incoming record
  (known operator, config inside its space at that shape).
"""
from __future__ import annotations

import functools
import json

from tiletune.errors import TiletuneError
from tiletune.kernels.task import Task, TaskSpec
from tiletune.tuning_db import Record, TuningDB, Workload

__all__ = ["RecordValidator", "builtin_hashes", "skipped_message", "task_for", "usable_best"]


def task_for(workload: Workload) -> Task | None:
    """The task of a built-in operator that `workload` is, or None (a user's operator, or a
    built-in whose structure changed since the record was made)."""
    return _task_for(workload.op_name, workload.op_hash, tuple(sorted(workload.dims.items())), workload.dtypes)


@functools.lru_cache(maxsize=256)
def _task_for(op_name: str, op_hash: str, dims: tuple, dtypes: tuple[str, ...]) -> Task | None:
    from tiletune.kernels.library import resolve_operator

    if not isinstance(op_name, str) or ":" in op_name:  # a file path: never imported from a DB
        return None
    try:
        operator = resolve_operator(op_name)
    except TiletuneError:
        return None
    for dtype in dict.fromkeys(dtypes) if operator.takes_dtype else [None]:
        try:
            task = Task(TaskSpec.make(op_name, dict(dims), dtype), operator)
            if (task.op_hash, task.input_dtypes) == (op_hash, tuple(dtypes)):
                return task
        except TiletuneError:
            continue
    return None


@functools.lru_cache(maxsize=256)
def builtin_hashes(op_name: str) -> frozenset[str]:
    """The structure hashes of the built-in named `op_name` at every dtype it takes (empty when
    no built-in has that name): a workload with one of them claims to be that built-in."""
    from tiletune.kernels.library import resolve_operator
    from tiletune.tensorexpr.dtypes import FLOATS

    if not isinstance(op_name, str) or ":" in op_name:
        return frozenset()
    try:
        operator = resolve_operator(op_name)
    except TiletuneError:
        return frozenset()
    hashes = set()
    for dtype in FLOATS if operator.takes_dtype else [None]:
        try:
            hashes.add(operator.graph(dtype).structural_hash())
        except TiletuneError:
            continue
    return frozenset(hashes)


def usable_best(db: TuningDB, workload: Workload, task: Task | None = None) -> tuple[dict[str, Record], list[str]]:
    """The usable best record of `workload` on each device it was measured on: the fastest
    `TuningDB.usable` record whose config is legal in the space of `task` (by default the
    built-in task the workload is, when it is one; a user's operator has no space to check
    here). Also a line for each faster record passed over. This is the one definition of a
    workload's best that `list`, `show` and `db stats` print (and `tiletune.load` runs).

    Reads rows in latency order and stops at the first legal one per device, so it costs a
    few index lookups, not a scan of the workload's records."""
    task = task if task is not None else task_for(workload)
    best: dict[str, Record] = {}
    skipped: list[str] = []
    for device_key in [d.key for d in db.devices()]:
        for record in db.usable(workload.key, [device_key]):
            problem = None if task is None else task.stored_config(record.config)[1]
            if not problem:
                best[device_key] = record
                break
            skipped.append(f"{json.dumps(record.config)[:120]}: {problem[:200]}")
    return best, skipped


def skipped_message(where: object, task: Task, skipped: list[str]) -> str:
    """One line saying that stored configs were passed over, the first one and why."""
    more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
    return (f"{where}: skipped a record of {task.spec} whose config is not in its space ({skipped[0]}){more};"
            " using the best usable one")


class RecordValidator:
    """`validator(workload, record)`: why `record` of `workload` may not enter `db`, or None.

    A workload of a built-in (name and structure hash agree) has its config checked against
    the space at its shape. Otherwise its operator is known only if the DB already stores a
    workload with its structure hash (someone here tuned it from their file): its config must
    then name the same knobs as the configs stored for that operator. Anything else is refused.
    """

    def __init__(self, db: TuningDB | None) -> None:
        self._knobs_by_hash: dict[str, set[frozenset[str]]] = {}
        for workload in db.workloads() if db is not None else ():
            knobs = self._knobs_by_hash.setdefault(workload.op_hash, set())
            for record in db.records(workload.key):
                knobs.add(frozenset(record.config))

    def __call__(self, workload: Workload, record: Record) -> str | None:
        task = task_for(workload)
        if task is not None:
            _, problem = task.stored_config(record.config)
            return f"config is not in {task.spec}'s space: {problem}" if problem else None
        if workload.op_hash in builtin_hashes(workload.op_name):
            # the built-in's structure, at dims or dtypes it does not take: its space cannot be
            # built, so no config of it can be checked, and none may enter
            dims = ",".join(f"{k}={v}" for k, v in workload.dims.items())
            return (f"workload of built-in {workload.op_name!r:.80} at {dims[:120]} ({'/'.join(workload.dtypes)[:80]})"
                    " is not one it takes (its dims or dtypes do not fit its declaration)")
        known = self._knobs_by_hash.get(workload.op_hash)
        if known is None:
            return (f"operator {workload.op_name!r:.80} is not a built-in of this tiletune (or its structure"
                    f" changed) and the DB stores no workload of its hash {workload.op_hash!r:.40};"
                    " tune it here once, then import")
        if known and frozenset(record.config) not in known:
            expected = " or ".join(sorted(str(sorted(k)) for k in known))
            return f"config knobs {sorted(record.config)} are not those of {workload.op_name}'s configs ({expected})"
        return None
