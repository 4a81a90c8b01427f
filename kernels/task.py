"""A tuning task: one operator at one shape and dtype, with its kernel family, schedule and
config space.

`TaskSpec` is the picklable name of a task (operator reference, dtype, dims) that worker
processes turn back into a `Task`; a `Task` owns everything derived from it, built once. Both
the search (which tunes a task) and `tiletune.load` (which runs a tuned one) depend on it; its
identity in a tuning DB is `tuning_db.Workload.of(task)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Mapping

from tiletune.errors import ScheduleError, UsageError
from tiletune.kernels.facts import TileFacts
from tiletune.kernels.families import Pattern, analyse, default_schedule, tile_facts
from tiletune.kernels.library import resolve_operator
from tiletune.kernels.lower import KernelSource, lower
from tiletune.kernels.specialize import flag_values
from tiletune.schedules.config import Config
from tiletune.schedules.schedule import ResolvedSchedule, Schedule
from tiletune.schedules.space import ConfigSpace
from tiletune.tensorexpr.operator import Graph, Operator, evaluate_extent


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What to tune, as plain data: `op` is a built-in name or `path/file.py:function`."""

    op: str
    dtype: str | None
    dims: tuple[tuple[str, int], ...]

    @classmethod
    def make(cls, op: str, dims: Mapping[str, int], dtype: str | None = None) -> TaskSpec:
        """A spec with dims kept in the operator's declaration order."""
        return cls(op, dtype, tuple(dims.items()))

    def build(self) -> Task:
        """The task (cached per process: workers build each spec once)."""
        if self not in _TASKS:
            _TASKS[self] = Task(self)
        return _TASKS[self]

    def __str__(self) -> str:
        shape = ",".join(f"{k}={v}" for k, v in self.dims)
        return f"{self.op}[{shape}]" + (f":{self.dtype}" if self.dtype else "")


def parse_dims(text: str, where: str = "--shape") -> dict[str, int]:
    """`M=512,N=512,K=512` -> {"M": 512, "N": 512, "K": 512}: NAME=INT pairs separated by
    commas, written in ASCII digits (as a user types them; no signs, underscores or exponents).
    `where` names the source in messages."""
    dims: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not name.isidentifier():
            raise UsageError(f"{where}: '{part}' is not NAME=INT; expected pairs such as M=512,N=512,K=512")
        if not (value.isascii() and value.isdigit()):
            raise UsageError(f"{where}: '{part}' is not NAME=INT; {name} must be a whole number, got '{value}'")
        if len(value) > 12:  # also keeps int() below Python's limit on digits
            raise UsageError(f"{where}: {name}={value[:12]}... is far too large for a dim")
        if int(value) < 1:
            raise UsageError(f"{where}: {name} must be at least 1, got {int(value)}")
        if name in dims:
            raise UsageError(f"{where} gives {name} twice")
        dims[name] = int(value)
    if not dims:
        raise UsageError(f"{where} is empty; expected NAME=INT pairs such as M=512,N=512,K=512")
    return dims


# Built tasks by spec, per process: an explicit cache so workers lower against one Task.
_TASKS: dict[TaskSpec, "Task"] = {}


class Task:
    """One operator at one shape: graph, pattern, schedule and space, and what names it in a
    tuning DB (`op_name`, `op_hash`, `dims`, `input_dtypes`)."""

    def __init__(self, spec: TaskSpec, operator: Operator | None = None) -> None:
        self.spec = spec
        self.operator = operator or resolve_operator(spec.op)
        self.graph: Graph = self.operator.graph(spec.dtype)
        self.dims: dict[str, int] = self.graph.check_dims(dict(spec.dims))
        self.pattern: Pattern = analyse(self.graph)
        self.schedule: Schedule = default_schedule(self.graph, self.dims, self.pattern)
        self.space: ConfigSpace = self.schedule.space()

    @property
    def op_name(self) -> str:
        """The operator's name (with its attributes: `softmax_nd[dim=1]`)."""
        return self.operator.name

    @cached_property
    def op_hash(self) -> str:
        """The structural hash of the operator's graph at this dtype."""
        return self.graph.structural_hash()

    @property
    def input_dtypes(self) -> tuple[str, ...]:
        """The dtypes of the operator's inputs, in call order."""
        return tuple(t.dtype for t in self.graph.inputs)

    @cached_property
    def flops(self) -> float:
        """Useful FLOPs of one call (2 per multiply-add of a contraction, else one per output
        element and reduction step): for reporting throughput."""
        total = 0
        for stage in self.graph.stages:
            size = math.prod(self.graph.shape_of(stage, self.dims))
            red = stage.reduction
            if red is not None:
                size *= math.prod(evaluate_extent(a.extent, self.dims) for a in red.axes)
                size *= 2 if self.pattern.contraction is not None and stage is self.pattern.contraction.stage else 1
                att = self.pattern.attention  # its two contractions (scores, values) are multiply-adds too
                size *= 2 if att is not None and red.axes[0] in (att.d, att.j) else 1
            total += size
        return float(total)

    def stored_config(self, values: Mapping[str, object]) -> tuple[Config | None, str]:
        """A config read from a tuning DB as a legal config of this task's space, or None and
        why not: stored configs are data from a file that may be damaged or hostile."""
        try:
            config = Config.from_dict(values)
        except ScheduleError as error:
            return None, str(error)
        reasons = self.space.validate(config)
        return (None, "; ".join(reasons)) if reasons else (config, "")

    def resolve(self, config: Config) -> ResolvedSchedule:
        """The schedule replayed with `config` (IllegalConfig if it is not in the space)."""
        return self.schedule.resolve(config)

    def source(self, config: Config, *, for_interpreter: bool = False) -> KernelSource:
        """Generated Triton source of `config`."""
        return lower(self.graph, self.resolve(config), self.pattern, for_interpreter=for_interpreter)

    def facts(self, config: Config) -> TileFacts:
        """Static work and traffic facts of launching `config` at this task's dims."""
        return tile_facts(self.graph, self.resolve(config), self.dims, self.pattern)

    def specialization(self, src: KernelSource) -> tuple[dict[str, int], tuple[str, ...]]:
        """How Triton's JIT will specialize `src`'s integer arguments when launched on
        contiguous tensors at these dims: those equal to 1 become constants, those divisible
        by 16 are marked aligned (with every pointer: torch allocations are 16-byte aligned),
        and each of `src`'s launch flags (`tiletune.kernels.specialize`: `EVEN_K` and the like)
        gets the value its launcher computes. An ahead-of-time compile that skips this compiles
        a different kernel than runs."""
        values: dict[str, int] = dict(zip(src.dim_params, self.dims.values()))
        for t, (_, strides) in zip((*self.graph.inputs, self.graph.output), src.tensor_params):
            shape = self.graph.shape_of(t, self.dims)
            for d, name in enumerate(strides):
                values[name] = math.prod(shape[d + 1:])
        constants: dict[str, int] = {name: 1 for name, v in values.items() if v == 1}
        constants.update(flag_values(src.launch_flags, self.graph, self.dims))
        aligned = tuple(p for p, _ in src.tensor_params) + tuple(
            name for name, v in values.items() if v % 16 == 0
        )
        return constants, aligned
