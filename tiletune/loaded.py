"""A tuned operator as a library call.

The first call with a new (shapes, dtypes, device) key finds the best config in the tuning DB
for that workload and device, falls back to the nearest tuned shape or to the default config
(saying so once), lowers it and caches the result; later calls with that key go straight to
the launch. Configs read from the DB are data: they are validated against the operator's space
before use and nothing in the DB is ever executed.
"""
from __future__ import annotations

import itertools
import json
import math
import re
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from tiletune.errors import DSLError, TiletuneError, UsageError
from tiletune.kernels import runtime
from tiletune.kernels.library import operator_ref
from tiletune.kernels.lower import KernelSource
from tiletune.kernels.task import Task, TaskSpec
from tiletune.schedules.config import Config
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.operator import Operator
from tiletune.tensorexpr.reference import torch_dtype
from tiletune.tuning_db import Record, TuningDB, Workload


@dataclass(frozen=True, slots=True)
class Selection:
    """The config a call key runs, and where it came from."""

    config: Config
    origin: str  # "tuned", "nearest", "default"
    note: str = ""


@dataclass(frozen=True, slots=True)
class _Entry:
    task: Task
    source: KernelSource
    out_shape: tuple[int, ...]
    out_dtype: torch.dtype
    selection: Selection
    launch: Callable[..., None]  # the generated launcher, resolved once
    dim_values: tuple[int, ...]
    device: torch.device


class LoadedOperator:
    """Call with the operator's input tensors in order; returns the output tensor."""

    def __init__(self, operator: Operator, db_path: Path) -> None:
        self.operator = operator
        self.db_path = Path(db_path)
        self._entries: dict[tuple, _Entry] = {}  # cache: call key -> lowered kernel
        # Registered now, not on first use: torch.compile cannot register an op while tracing.
        self.torch_op = _register_custom_op(self)
        """This operator as a `torch.library` custom op taking the list of inputs, so that it
        composes with `torch.compile` (traced through its fake implementation: the output's
        shape and dtype from the graph)."""

    def __repr__(self) -> str:
        return f"<tiletune loaded {self.operator.name} (db {self.db_path})>"

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        # The hot path: build the key without checks, one dict lookup, allocate, launch. The
        # checks run on a miss only (a non-tensor never finds an entry: it has no such key).
        try:
            entry = self._entries.get(tuple([(x.shape, x.dtype, x.device) for x in inputs]))
        except AttributeError:
            entry = None
        if entry is None:
            key = self._key(inputs)
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = self._prepare(inputs)
        out = torch.empty(entry.out_shape, dtype=entry.out_dtype, device=entry.device)
        entry.launch(*inputs, out, *entry.dim_values)
        return out

    def output_like(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """An empty tensor of the output's shape, dtype and device for these inputs."""
        dtype = dt.canonical(inputs[0].dtype) if self.operator.takes_dtype else None
        graph = self.operator.graph(dtype)
        dims = graph.bind([tuple(x.shape) for x in inputs])
        return inputs[0].new_empty(graph.shape_of(graph.output, dims), dtype=torch_dtype(graph.output.dtype))

    def selection(self, *inputs: torch.Tensor) -> Selection:
        """Which config a call with these inputs runs, and why."""
        key = self._key(inputs)
        entry = self._entries.get(key) or self._prepare(inputs)
        self._entries[key] = entry
        return entry.selection

    def _key(self, inputs: Sequence[torch.Tensor]) -> tuple:
        """The cache key of a call (as `__call__` builds it), after checking the inputs."""
        if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
            raise UsageError(f"{self.operator.name} takes torch tensors as inputs")
        return tuple([(x.shape, x.dtype, x.device) for x in inputs])

    def _prepare(self, inputs: Sequence[torch.Tensor]) -> _Entry:
        devices = {x.device for x in inputs}
        if len(devices) > 1:
            raise UsageError(f"{self.operator.name}: inputs are on several devices ({', '.join(map(str, devices))})")
        dtype = dt.canonical(inputs[0].dtype) if self.operator.takes_dtype else None
        graph = self.operator.graph(dtype)
        dims = graph.bind([tuple(x.shape) for x in inputs])
        for t, x in zip(graph.inputs, inputs):
            if dt.canonical(x.dtype) != t.dtype:
                raise DSLError(f"{graph.name}: input '{t.name}' has dtype {dt.canonical(x.dtype)}, expected {t.dtype}")
        task = Task(TaskSpec.make(self.operator.name, dims, dtype), self.operator)
        cuda = inputs[0].is_cuda
        selection = self._select(task, _device_name(inputs[0]) if cuda else None)
        if selection.origin != "tuned":
            warnings.warn(selection.note, stacklevel=3)
        source = task.source(selection.config, for_interpreter=not cuda)
        return _Entry(task, source, graph.shape_of(graph.output, dims), torch_dtype(graph.output.dtype), selection,
                      runtime.launcher(source, cuda), tuple(task.dims.values()), inputs[0].device)

    def _select(self, task: Task, device_name: str | None) -> Selection:
        """The best usable config: tuned for this workload, else tuned for the nearest shape,
        else the default."""
        shape = ", ".join(f"{k}={v}" for k, v in task.dims.items())
        if self.db_path.exists():
            try:
                with TuningDB(self.db_path, readonly=True) as db:
                    skipped: list[str] = []
                    found = _best_for(db, task, Workload.of(task).key, device_name, skipped)
                    _warn_skipped(self.db_path, task, skipped)
                    if found is not None:
                        return Selection(found, "tuned")
                    nearest = _nearest(db, task, device_name)
                    if nearest is not None:
                        config, dims = nearest
                        other = ", ".join(f"{k}={dims[k]}" for k in task.dims)
                        return Selection(config, "nearest", f"{task.operator.name} was not tuned at {shape}; "
                                                            f"using the config tuned at {other}")
            except TiletuneError as error:
                return Selection(task.space.default(), "default",
                                 f"{task.operator.name}: tuning DB unusable ({error}); using the default config")
        return Selection(
            task.space.default(), "default",
            f"{task.operator.name} was not tuned at {shape}; using the default config "
            f"(tune it with: tiletune autotune {_command_ref(task.operator)} --shape {shape.replace(', ', ',')})",
        )


def _command_ref(operator: Operator) -> str:
    """How `tiletune autotune` names the operator: a built-in name or `path.py:function`."""
    try:
        return shlex.quote(operator_ref(operator))
    except TiletuneError:  # declared outside any file: the name is the best hint there is
        return operator.name


def _register_custom_op(loaded: LoadedOperator):
    """Register `loaded` as `tiletune::<name>_<n>` (one library namespace, a fresh name per
    registration: two loaded operators of one name may read different DBs)."""
    base = re.sub(r"\W", "_", loaded.operator.name)
    name = f"tiletune::{base}_{next(_OP_NUMBERS)}"

    @torch.library.custom_op(name, mutates_args=())
    def op(inputs: list[torch.Tensor]) -> torch.Tensor:
        return loaded(*inputs)

    @op.register_fake
    def _(inputs: list[torch.Tensor]) -> torch.Tensor:
        return loaded.output_like(inputs)

    return op


# Numbers for custom-op names: torch.library names are process-wide and cannot be reused.
_OP_NUMBERS = itertools.count()


def _device_name(x: torch.Tensor) -> str:
    return torch.cuda.get_device_name(x.device)


def _records_for_device(db: TuningDB, workload_key: str, device_name: str | None) -> list[Record]:
    """ok records of the workload on this GPU (any Triton version), or, for CPU tensors that
    run in the interpreter, on any device (real GPUs before simulated ones)."""
    devices = {d.key: d for d in db.devices()}
    records = [r for r in db.records(workload_key, status="ok") if r.latency_us is not None]
    if device_name is not None:
        return [r for r in records if r.device_key in devices and devices[r.device_key].name == device_name]
    real = [r for r in records if r.measurer == "cuda"]
    return real or records


def _best_for(db: TuningDB, task: Task, workload_key: str, device_name: str | None,
              skipped: list[str] | None = None) -> Config | None:
    """The fastest stored config that is legal in `task`'s space; faster ones that are not
    (a damaged or hostile file, or an older space) are passed over and described in `skipped`."""
    for record in sorted(_records_for_device(db, workload_key, device_name), key=lambda r: r.latency_us):
        config, problem = task.stored_config(record.config)
        if config is not None:
            return config
        if skipped is not None:
            skipped.append(f"{json.dumps(record.config)[:120]}: {problem[:200]}")
    return None


def _warn_skipped(db_path: Path, task: Task, skipped: list[str]) -> None:
    """Say once per selection that faster stored configs were not usable here, and why."""
    from tiletune.db_validate import skipped_message

    if skipped:
        warnings.warn(skipped_message(db_path, task, skipped), stacklevel=5)


def _nearest(db: TuningDB, task: Task, device_name: str | None) -> tuple[Config, dict] | None:
    """The best config of the closest tuned shape (log-distance over dims) that is legal here."""
    own = Workload.of(task)
    candidates = [w for w in db.workloads(own.op_name) if w.op_hash == own.op_hash and w.dtypes == own.dtypes
                  and w.key != own.key and set(w.dims) == set(task.dims)]
    candidates.sort(key=lambda w: sum(abs(math.log(w.dims[k] / task.dims[k])) for k in task.dims))
    for w in candidates:
        config = _best_for(db, task, w.key, device_name)
        if config is not None:
            return config, w.dims
    return None
