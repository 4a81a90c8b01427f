"""What a kernel family is: everything tiletune knows about one kernel shape, in one object.

A family serves one op class (or, for reductions, one layout of it) and owns, for an operator
it holds:

- its **axis roles** (`roles`, `role_of`): the names schedules use for the loop nest's axes;
- its **space rule** (`add_knobs`): the knobs and constraints of the automatic schedule;
- its **grid** (`grid`): the main kernel's launch grid as data, rendered by lowering into the
  launcher and evaluated by the facts, so the two always agree;
- its **lowering** (`emit`): the Triton source, built on a `KernelContext`;
- its **tile facts** (`facts`): work and traffic per program, for the simulator and the cost
  model;
- its **verification dims** (`verification_dims`): the small dims a candidate is checked at
  in the interpreter, chosen so that every mask and loop tail runs.

`tiletune.kernels.families.family_for(graph)` picks the family of an operator.
"""
from __future__ import annotations

from typing import ClassVar, Mapping

from tiletune.kernels.facts import TileFacts
from tiletune.kernels.families.pattern import Pattern
from tiletune.kernels.grid import Grid
from tiletune.kernels.kernel import KernelContext, KernelSource
from tiletune.schedules.schedule import ResolvedSchedule, Schedule
from tiletune.tensorexpr.analysis import OpClass
from tiletune.tensorexpr.expr import IterVar, Read, walk
from tiletune.tensorexpr.operator import Graph

# What an inner (not outermost) fused row dim shrinks to in a verification run.
INNER_ROW_DIM = 5
ALIGN_ELEMENTS = 16  # elements: 16-byte aligned rows for any item size of one byte or more


class Family:
    """One kernel shape for the operators of one op class (see the module docstring).

    Subclasses set `name`, `serves` and `roles`, implement `choose` (None when the operator is
    not theirs), `add_knobs`, `grid`, `emit`, `facts` and `verification_dims`.
    """

    name: ClassVar[str]
    serves: ClassVar[frozenset[OpClass]]
    roles: tuple[str, ...]

    def __init__(self, graph: Graph, pattern: Pattern) -> None:
        self.graph, self.pattern = graph, pattern

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.graph.name})"

    @classmethod
    def choose(cls, graph: Graph, pattern: Pattern) -> Family | None:
        """This family for `graph`, or None when it does not hold it (LoweringError when it is
        the only family that could and cannot)."""
        return cls(graph, pattern) if pattern.op_class in cls.serves else None

    @property
    def op_class(self) -> OpClass:
        return self.pattern.op_class

    # --- axis roles -----------------------------------------------------------------------

    def role_of(self, axis: IterVar) -> str | None:
        """The role of an axis of the operator in this kernel's loop nest (None: not in it).
        The row-shaped kernels' rule: reduce axes and the output's last axis run along the
        lane, other output axes are rows."""
        out_axes = self.graph.output.op.axes
        if axis.kind == "reduce" or (out_axes and axis is out_axes[-1]):
            return "lane"
        if axis in out_axes:
            return "rows"
        return None

    # --- the space rule -------------------------------------------------------------------

    def default_schedule(self, dims: Mapping[str, int]) -> Schedule:
        """The automatic schedule at `dims`: every intermediate injective stage inlined into
        its consumers (or, after a contraction, fused into its epilogue), then the family's
        knobs."""
        schedule = Schedule(self.graph, self)
        contraction = self.pattern.contraction
        for stage in self.graph.stages:
            if stage is self.graph.output or stage in self.pattern.anchors or stage.reduction is not None:
                continue
            if contraction is not None and _depends_on(stage, contraction.stage):
                schedule.fuse_epilogue(stage)
            else:
                schedule.compute_inline(stage)
        self.add_knobs(schedule, dims)
        return schedule

    def add_knobs(self, schedule: Schedule, dims: Mapping[str, int]) -> None:
        """Record the family's tiles, knobs and constraints for a workload at `dims`."""
        raise NotImplementedError

    # --- lowering and what it produces ----------------------------------------------------

    def grid(self, schedule: ResolvedSchedule) -> Grid:
        """The launch grid of the main kernel (the one compiled ahead of time for facts)."""
        raise NotImplementedError

    def lower(self, schedule: ResolvedSchedule, *, for_interpreter: bool = False) -> KernelSource:
        """Triton source of the operator under `schedule` (see `tiletune.kernels.lower`)."""
        return self.emit(KernelContext(self.graph, schedule, self.pattern), for_interpreter)

    def emit(self, kernel: KernelContext, for_interpreter: bool) -> KernelSource:
        raise NotImplementedError

    def facts(self, schedule: ResolvedSchedule, dims: Mapping[str, int]) -> TileFacts:
        """Work and traffic of one launch at `dims`."""
        raise NotImplementedError

    def verification_dims(self, dims: Mapping[str, int], schedule: ResolvedSchedule) -> dict[str, int]:
        """Smaller dims at which to check a candidate cheaply in the interpreter."""
        raise NotImplementedError


def shrink(dims: Mapping[str, int], tiles: Mapping[str, int], inner: set[str] = frozenset(),
           *, keep_alignment: bool = False) -> dict[str, int]:
    """`dims` for a verification run: a dim that sizes a tiled axis shrinks to just over two
    tiles and an odd remainder (so masks and loop tails run), an inner fused row dim to
    INNER_ROW_DIM values, and a dim whose tile is 0 or that tiles nothing stays.

    `keep_alignment`: tensor descriptors need 16-byte aligned rows, so a shrunk dim keeps its
    residue mod 16 and a TMA candidate legal at the tuned shape stays legal at the check's.
    """
    small = {}
    for name, value in dims.items():
        tile = tiles.get(name)
        if tile is None and name in inner:
            small[name] = min(value, INNER_ROW_DIM)
        elif not tile:
            small[name] = value
        elif keep_alignment:
            target = min(value, 2 * tile + 3)
            small[name] = target + (value - target) % ALIGN_ELEMENTS
        else:
            small[name] = min(value, 2 * tile + 3)
    return small


def _depends_on(stage, target) -> bool:
    for node in walk(stage.op.body):
        if isinstance(node, Read):
            if node.tensor is target or (not node.tensor.is_placeholder and _depends_on(node.tensor, target)):
                return True
    return False
