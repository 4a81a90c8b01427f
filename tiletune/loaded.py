"""A tuned operator as a library call.

The first call with a new (shapes, strides, dtypes, device) key finds the best config in the
tuning DB for that workload and device, falls back to the nearest tuned shape or to the default
config (saying so once), lowers it and caches the result; later calls with that key go straight
to the launch. Configs read from the DB are data: they are validated against the operator's
space before use and nothing in the DB is ever executed.

Which path runs a call (`LoadedOperator.path`):
- CUDA tensors: the tuned kernel.
- CPU tensors: by default "torch", the operator evaluated with vectorised torch ops by the
  reference evaluator's fast mode (`tensorexpr.reference`, `fast=True`: float math in fp32 as
  the kernels do it, fp64 for float64, rounded at casts and at the output; reads as views,
  contractions as einsum; within verification's tolerance of the exact mode); "interpreter"
  runs the tuned kernel through Triton's interpreter (the same kernel, thousands of times
  slower). Chosen by `load(..., cpu=...)`, else by the environment variable TILETUNE_CPU.
- meta tensors: no computation; an empty meta output of the right shape and dtype.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from tiletune.errors import DSLError, TiletuneError, UsageError
from tiletune.kernels import runtime
from tiletune.kernels.library import operator_ref
from tiletune.kernels.offsets import check_fits, contiguous_strides
from tiletune.kernels.parts import part_operator, partition_of
from tiletune.kernels.lower import KernelSource
from tiletune.kernels.task import Task, TaskSpec
from tiletune.schedules.config import Config
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.operator import Graph, Operator
from tiletune.tensorexpr.partition import PART_INFIX, Part, Partition
from tiletune.tensorexpr.reference import evaluate, torch_dtype
from tiletune.tuning_db import Record, TuningDB, Workload

# How CPU tensors run: "torch" (the reference evaluator, the default) or "interpreter".
CPU_PATHS = ("torch", "interpreter")
CPU_PATH_ENV = "TILETUNE_CPU"


def cpu_path(requested: str | None) -> str:
    """The CPU path a loaded operator uses: `requested`, else $TILETUNE_CPU, else "torch"."""
    value = requested if requested is not None else os.environ.get(CPU_PATH_ENV) or "torch"
    if value not in CPU_PATHS:
        where = "cpu" if requested is not None else f"${CPU_PATH_ENV}"
        raise UsageError(f"{where} must be one of {', '.join(CPU_PATHS)}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Selection:
    """The config a call key runs, and where it came from."""

    config: Config
    origin: str  # "tuned", "nearest", "default"
    note: str = ""


@dataclass(frozen=True, slots=True)
class _Entry:
    path: str  # "kernel", "interpreter", "torch" or "meta"
    task: Task | None  # kernel paths only
    source: KernelSource | None
    out_shape: tuple[int, ...]
    out_dtype: torch.dtype
    selection: Selection | None  # kernel paths only
    launch: Callable[..., None]  # launch(*inputs, out, *dims): the generated launcher, resolved once
    dim_values: tuple[int, ...]
    device: torch.device
    needs_grad: bool  # an input requires grad: refused while grad mode is on
    compute: Callable[..., torch.Tensor] | None = None  # the torch path: compute(*inputs) -> a fresh output


class LoadedOperator:
    """Call with the operator's input tensors in order; returns the output tensor."""

    def __init__(self, operator: Operator, db_path: Path, cpu: str | None = None, *, backward: bool = True) -> None:
        self.operator = operator
        self.db_path = Path(db_path)
        self.cpu = cpu_path(cpu)
        """How CPU tensors run: "torch" or "interpreter" (see the module's docstring)."""
        self._entries: dict[tuple, _Entry] = {}  # cache: call key -> lowered kernel
        # Registered now, not on first use: torch.compile cannot register an op while tracing.
        self.torch_op = _register_custom_op(self)
        """This operator as a `torch.library` custom op taking the list of inputs, so that it
        composes with `torch.compile` (traced through its fake implementation: the output's
        shape and dtype from the graph), with its derived backward registered as its autograd."""
        self.steps: dict[str, LoadedOperator] = {}
        """The backward steps (`matmul.grad_a`, ...) as loaded operators of their own: each
        runs its tuned config from the same DB."""
        self.no_backward = _register_backward(self) if backward else "a backward step has no backward of its own"
        """Why the operator has no backward (empty when it has one)."""

    def __repr__(self) -> str:
        return f"<tiletune loaded {self.operator.name} (db {self.db_path}, cpu {self.cpu})>"

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        # The hot path: build the key without checks, one dict lookup, allocate, launch. The
        # checks run on a miss only (a non-tensor never finds an entry: it has no such key).
        # Strides are in the key: whether 32-bit offsets reach every element depends on them.
        try:
            entry = self._entries.get(tuple([(x.shape, x.stride(), x.dtype, x.device, x.requires_grad)
                                             for x in inputs]))
        except (AttributeError, TypeError):
            entry = None
        if entry is None:
            key = self._key(inputs)
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = self._prepare(inputs)
        if entry.needs_grad and torch.is_grad_enabled():
            if self.no_backward:
                raise UsageError(
                    f"{self.operator.name}: an input requires grad, and this operator has no backward "
                    f"({self.no_backward}); call it under torch.no_grad() or pass inputs detached with .detach()"
                )
            return self.torch_op(list(inputs))  # through autograd: its backward is registered there
        return self._run(entry, inputs)

    def _run(self, entry: _Entry, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if entry.compute is not None:  # its own fresh output: no copy into one allocated here
            return entry.compute(*inputs)
        out = torch.empty(entry.out_shape, dtype=entry.out_dtype, device=entry.device)
        entry.launch(*inputs, out, *entry.dim_values)
        return out

    def output_like(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """An empty tensor of the output's shape, dtype and device for these inputs."""
        graph, dims = self._bind(inputs)
        return inputs[0].new_empty(graph.shape_of(graph.output, dims), dtype=torch_dtype(graph.output.dtype))

    def selection(self, *inputs: torch.Tensor) -> Selection:
        """Which config the kernel runs for these inputs, and why (on the CPU's torch path no
        kernel runs: this is the config `cpu="interpreter"` would run). An operator that runs
        as several kernels has one per kernel: ask `selections`."""
        key = self._key(inputs)  # no helper frame: a warning raised in _prepare points at the caller
        entry = self._entries[key] = self._entries.get(key) or self._prepare(inputs)
        if entry.selection is not None:
            return entry.selection
        graph, _ = self._bind(inputs)
        partition = partition_of(graph)
        if not partition.fused:
            raise UsageError(f"{self.operator.name} runs as {len(partition.parts)} kernels, each with its "
                             "own config; ask .selections(*inputs) for them by kernel")
        selection = self._select(self._task(inputs), None)
        if selection.origin != "tuned":  # as the kernel path says it on its first call
            warnings.warn(selection.note, stacklevel=2)
        return selection

    def selections(self, *inputs: torch.Tensor) -> dict[str, Selection]:
        """The config each kernel runs for these inputs, by kernel name (one entry, the
        operator's own name, when one kernel holds it)."""
        graph, dims = self._bind(inputs)
        partition = partition_of(graph)
        if partition.fused:
            return {self.operator.name: self.selection(*inputs)}
        return {part.name: selection for part, _, selection in self._part_selections(partition, inputs, dims, 3)}

    def _part_selections(self, partition: Partition, inputs: Sequence[torch.Tensor], dims: Mapping[str, int],
                         stacklevel: int) -> list[tuple[Part, Task, Selection]]:
        """Each kernel of `partition` with its task and the config it runs for these inputs
        (from this DB, as its own workload); a kernel without a tuned config is named once,
        `stacklevel` frames up."""
        device_name = _device_name(inputs[0]) if inputs[0].device.type == "cuda" else None
        dtype = dt.canonical(inputs[0].dtype) if self.operator.takes_dtype else None
        chosen = []
        for part in partition.parts:
            operator = part_operator(self.operator, part.name)
            task = Task(TaskSpec.make(operator.name, dims, dtype), operator)
            selection = self._select(task, device_name)
            if selection.origin != "tuned":
                warnings.warn(selection.note, stacklevel=stacklevel)
            chosen.append((part, task, selection))
        return chosen

    def path(self, *inputs: torch.Tensor) -> str:
        """What runs a call with these inputs: "kernel" (CUDA), "interpreter" (the kernel in
        Triton's interpreter), "torch" (the CPU path of vectorised torch ops) or "meta"."""
        key = self._key(inputs)
        entry = self._entries[key] = self._entries.get(key) or self._prepare(inputs)
        return entry.path

    def _key(self, inputs: Sequence[torch.Tensor]) -> tuple:
        """The cache key of a call (as `__call__` builds it), after checking the inputs."""
        if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
            raise UsageError(f"{self.operator.name} takes torch tensors as inputs")
        return tuple([(x.shape, x.stride(), x.dtype, x.device, x.requires_grad) for x in inputs])

    def _bind(self, inputs: Sequence[torch.Tensor]) -> tuple[Graph, dict[str, int]]:
        """The operator's graph for these inputs' dtype, and its dims bound from their shapes."""
        dtype = dt.canonical(inputs[0].dtype) if self.operator.takes_dtype else None
        try:
            graph = self.operator.graph(dtype)
        except DSLError as error:
            if dtype is None or not self.operator.takes_dtype:
                raise
            # The operator is declared for any dtype but its body mixes this one with another
            # (an int tensor in float math): the caller passed the wrong tensors.
            if not dt.is_float(dtype):
                raise UsageError(f"{self.operator.name} computes in floating point and cannot take {dtype} inputs; "
                                 "pass float16, bfloat16, float32 or float64 tensors (convert with .float())") from None
            raise UsageError(f"{self.operator.name} cannot take {dtype} inputs: {error}") from None
        return graph, graph.bind([tuple(x.shape) for x in inputs])

    def _task(self, inputs: Sequence[torch.Tensor]) -> Task:
        """The tuning task of a call with these inputs."""
        _, dims = self._bind(inputs)
        dtype = dt.canonical(inputs[0].dtype) if self.operator.takes_dtype else None
        return Task(TaskSpec.make(self.operator.name, dims, dtype), self.operator)

    def _prepare(self, inputs: Sequence[torch.Tensor]) -> _Entry:
        name = self.operator.name
        devices = {x.device for x in inputs}
        if len(devices) > 1:
            raise UsageError(f"{name}: inputs are on several devices ({', '.join(map(str, devices))})")
        device = inputs[0].device
        graph, dims = self._bind(inputs)
        for t, x in zip(graph.inputs, inputs):
            if dt.canonical(x.dtype) != t.dtype:
                raise DSLError(f"{graph.name}: input '{t.name}' has dtype {dt.canonical(x.dtype)}, expected {t.dtype}")
        out_shape = graph.shape_of(graph.output, dims)
        out_dtype = torch_dtype(graph.output.dtype)
        needs_grad = any(x.requires_grad for x in inputs)
        dim_values = tuple(dims[n] for n in graph.dim_names)
        if device.type == "meta":  # shape propagation only: the output is as empty as the inputs
            return _Entry("meta", None, None, out_shape, out_dtype, None, _no_launch, dim_values, device, needs_grad)
        if device.type == "cpu" and self.cpu == "torch":
            compute = _evaluator(graph, dims)
            return _Entry("torch", None, None, out_shape, out_dtype, None,
                          lambda *args: args[len(inputs)].copy_(compute(*args[:len(inputs)])),
                          dim_values, device, needs_grad, compute)
        if device.type not in ("cpu", "cuda"):
            raise UsageError(f"{name}: inputs on device {device}; tiletune runs CUDA, CPU and meta tensors")
        check_fits(name, [*((t.name, tuple(x.shape), x.stride()) for t, x in zip(graph.inputs, inputs)),
                          (graph.output.name, out_shape, contiguous_strides(out_shape))])
        partition = partition_of(graph)
        if not partition.fused:  # its kernels, one after another, each at its own tuned config
            launch = self._launch_parts(partition, inputs, dims)
            return _Entry("kernel" if device.type == "cuda" else "interpreter", None, None, out_shape, out_dtype,
                          None, launch, dim_values, device, needs_grad)
        task = self._task(inputs)
        cuda = device.type == "cuda"
        selection = self._select(task, _device_name(inputs[0]) if cuda else None)
        if selection.origin != "tuned":
            warnings.warn(selection.note, stacklevel=3)
        source = task.source(selection.config, for_interpreter=not cuda)
        launch = runtime.launcher(source, cuda)
        return _Entry("kernel" if cuda else "interpreter", task, source, out_shape, out_dtype, selection,
                      launch if cuda else _without_numpy_warnings(launch), tuple(task.dims.values()), device,
                      needs_grad)

    def _launch_parts(self, partition: Partition, inputs: Sequence[torch.Tensor],
                      dims: Mapping[str, int]) -> Callable[..., None]:
        """One launch(*inputs, out, *dims) running `partition`'s kernels in order, each at the
        best config of its own workload; the values stored between them are allocated per call."""
        cuda = inputs[0].device.type == "cuda"
        graph = partition.graph
        slots = {t.name: n for n, t in enumerate(graph.inputs)}  # where each value is in `values`
        steps = []
        stored = []
        for part, task, selection in self._part_selections(partition, inputs, dims, 5):
            run = runtime.launcher(task.source(selection.config, for_interpreter=not cuda), cuda)
            out = task.graph.output
            shape = task.graph.shape_of(out, dims)
            steps.append((run if cuda else _without_numpy_warnings(run), [slots[r] for r in part.reads],
                          shape, torch_dtype(out.dtype)))
            slots[part.writes] = len(slots)
            stored.append((part.writes, shape))
        check_fits(self.operator.name, [(name, shape, contiguous_strides(shape)) for name, shape in stored[:-1]])
        *first, last = steps

        def launch(*args: torch.Tensor | int) -> None:
            n = len(graph.inputs)
            values, out, dim_values = list(args[:n]), args[n], args[n + 1:]
            for run, reads, shape, torch_type in first:
                value = torch.empty(shape, dtype=torch_type, device=out.device)
                run(*[values[r] for r in reads], value, *dim_values)
                values.append(value)
            run, reads, _, _ = last
            run(*[values[r] for r in reads], out, *dim_values)

        return launch

    def _select(self, task: Task, device_name: str | None) -> Selection:
        """The best usable config: tuned for this workload, else tuned for the nearest shape,
        else the default."""
        shape = ", ".join(f"{k}={v}" for k, v in task.dims.items())
        # A dtype-generic operator is tuned per dtype: name it, and tune that one.
        dtype = task.spec.dtype
        where = f"{shape} in {dtype}" if dtype else shape
        dtype_option = f" --dtype {dtype}" if dtype else ""
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
                        return Selection(config, "nearest", f"{task.operator.name} was not tuned at {where}; "
                                                            f"using the config tuned at {other}")
            except TiletuneError as error:
                return Selection(task.space.default(), "default",
                                 f"{task.operator.name}: tuning DB unusable ({error}); using the default config")
        return Selection(
            task.space.default(), "default",
            f"{task.operator.name} was not tuned at {where}; using the default config (tune it with: "
            f"tiletune autotune {_command_ref(task.operator)} --shape {shape.replace(', ', ',')}{dtype_option})",
        )


def _no_launch(*args: torch.Tensor | int) -> None:
    """A meta call's launch: nothing to compute."""


def _evaluator(graph: Graph, dims: Mapping[str, int]) -> Callable[..., torch.Tensor]:
    """The CPU torch path: compute(*inputs) -> the reference evaluator's fast answer (a fresh
    tensor) at the call key's `dims`."""
    dims = dict(dims)

    def compute(*inputs: torch.Tensor) -> torch.Tensor:
        return evaluate(graph, inputs, dims, fast=True)

    return compute


def _without_numpy_warnings(launch: Callable[..., None]) -> Callable[..., None]:
    """The interpreter's launch with numpy's floating-point warnings off: it computes masked-off
    lanes too, and their overflows are not the caller's."""

    def quiet(*args: torch.Tensor | int) -> None:
        with np.errstate(all="ignore"):
            launch(*args)

    return quiet


def _command_ref(operator: Operator) -> str:
    """How `tiletune autotune` names the operator: a built-in name or `path.py:function` (for
    one kernel of a split operator, the whole operator: its kernels are tuned together)."""
    whole = getattr(operator, "derived_from", None)
    if whole is not None and PART_INFIX in operator.name:
        return _command_ref(whole)
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
        key = loaded._key(inputs)
        entry = loaded._entries[key] = loaded._entries.get(key) or loaded._prepare(inputs)
        return loaded._run(entry, inputs)  # autograd is above this call: no grad-mode check here

    @op.register_fake
    def _(inputs: list[torch.Tensor]) -> torch.Tensor:
        return loaded.output_like(inputs)

    return op


def _register_backward(loaded: LoadedOperator) -> str:
    """Register the derived backward of `loaded` as its custom op's autograd; returns why there
    is none ("" when there is). The steps are loaded now, as the op itself: torch.compile traces
    the backward through their custom ops and cannot register one while tracing."""
    from tiletune.kernels.backward import backward_of, step_operator

    operator = loaded.operator
    try:
        graph = operator.graph()
        backward = backward_of(graph)
    except TiletuneError as error:
        return str(error)
    if not backward.grads:
        return f"none of its inputs is floating ({', '.join(backward.refused)})"
    for step in backward.all_steps():
        loaded.steps[step.name] = LoadedOperator(step_operator(operator, step.name), loaded.db_path, loaded.cpu,
                                                backward=False)

    def setup_context(ctx, inputs, output) -> None:
        (xs,) = inputs
        ctx.wants = [x.requires_grad for x in xs]
        ctx.save_for_backward(*xs, output)

    def backward_fn(ctx, grad: torch.Tensor):
        *xs, out = ctx.saved_tensors
        graph, _ = loaded._bind(xs)
        derived = backward_of(graph)
        wanted = [t.name for t, want in zip(graph.inputs, ctx.wants) if want and t.name in derived.grads]
        values = {t.name: x for t, x in zip(graph.inputs, xs)}
        values[graph.output.name] = out
        values[derived.output_grad] = grad.contiguous()
        for step in derived.steps(wanted):
            step_op = loaded.steps.get(step.name)
            if step_op is None:  # another dtype split its gradient otherwise (eager mode only)
                step_op = loaded.steps[step.name] = LoadedOperator(
                    step_operator(operator, step.name), loaded.db_path, loaded.cpu, backward=False)
            values[step.writes] = step_op.torch_op([values[r] for r in step.reads])
        return [values[derived.grads[t.name][-1].writes] if t.name in wanted else None for t in graph.inputs],

    loaded.torch_op.register_autograd(backward_fn, setup_context=setup_context)
    return ""


# Numbers for custom-op names: torch.library names are process-wide and cannot be reused.
_OP_NUMBERS = itertools.count()


def _device_name(x: torch.Tensor) -> str:
    return torch.cuda.get_device_name(x.device)


def _records_for_device(db: TuningDB, workload_key: str, device_name: str | None) -> Iterator[Record]:
    """Usable records of the workload on this GPU (any Triton version), or, for CPU tensors that
    run in the interpreter, on any device (real GPUs' when there are any); fastest first, read
    lazily (`TuningDB.usable_on`)."""
    return db.usable_on(workload_key, device_name)


def _best_for(db: TuningDB, task: Task, workload_key: str, device_name: str | None,
              skipped: list[str] | None = None) -> Config | None:
    """The fastest stored config that is legal in `task`'s space; faster ones that are not
    (a damaged or hostile file, or an older space) are passed over and described in `skipped`."""
    for record in _records_for_device(db, workload_key, device_name):
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
