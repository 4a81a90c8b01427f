"""A schedule: a recorded sequence of primitives over an operator, replayable with knob values.

Primitives name the axes of the kernel's loop nest by *role*. The roles are the kernel
family's (`tiletune.kernels.families`): `m`, `n`, `k` and `batch` for a contraction; `rows` and
`lane` (and `red`, `window`, `scan`) for the row-shaped kernels; the family tells the schedule
its role names and which role each axis of the operator plays (`AxisRoles`).

An axis of the operator (`IterVar`) is accepted wherever a role name is. A primitive's argument
may be a `Knob`; the knobs of all primitives make the schedule's `ConfigSpace`, and
`resolve(config)` replays the record with the config's values into a `ResolvedSchedule`.

    s = schedule_for(graph)   # tiletune.kernels.families: a Schedule with the graph's roles
    s.tile("m", PowerOfTwo("BLOCK_M", 16, 256)).tile("n", PowerOfTwo("BLOCK_N", 16, 256))
    s.tile("k", PowerOfTwo("BLOCK_K", 16, 128)).pipeline("k", Choice("num_stages", (2, 3, 4)))
    s.swizzle("m", Choice("GROUP_M", (1, 8))).num_warps(Choice("num_warps", (4, 8)))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Union

from tiletune.errors import ScheduleError
from tiletune.schedules.config import Config
from tiletune.schedules.knobs import Knob, KnobValue
from tiletune.schedules.space import ConfigSpace, Constraint
from tiletune.tensorexpr.analysis import OpClass
from tiletune.tensorexpr.expr import IterVar
from tiletune.tensorexpr.operator import Graph
from tiletune.tensorexpr.tensor import Tensor

AxisRef = Union[str, IterVar]
Arg = Union[KnobValue, Knob]

BIND_TARGETS = ("block.x", "block.y", "block.z")
LOAD_PATHS = ("pointer", "tma")
# Primitives added after configs were first recorded: a config that leaves their knob out means
# this value, the behaviour from before the primitive existed.
LATER_PRIMITIVES: Mapping[str, KnobValue] = {"persistent": False, "load_via": "pointer", "warp_specialize": False}


class AxisRoles(Protocol):
    """What a schedule needs to know of the kernel it schedules: the kernel's op class, its
    role names, and the role each axis of the operator plays (None: the axis is not in its
    loop nest). Kernel families implement it."""

    op_class: OpClass
    roles: tuple[str, ...]

    def role_of(self, axis: IterVar) -> str | None:
        """The role of `axis` in the kernel's loop nest, or None."""
        ...


@dataclass(frozen=True, slots=True)
class Primitive:
    """One recorded step: `op(target, arg)`."""

    op: str
    target: str
    arg: Arg | None = None

    def __repr__(self) -> str:
        parts = [self.target] if self.target else []
        if self.arg is not None:
            parts.append(self.arg.name if isinstance(self.arg, Knob) else repr(self.arg))
        return f"{self.op}({', '.join(parts)})"


@dataclass(frozen=True, slots=True)
class ResolvedSchedule:
    """A schedule with every knob replaced by its value: what lowering reads."""

    op_class: OpClass
    config: Config
    tiles: Mapping[str, int] = field(default_factory=dict)
    bindings: Mapping[str, str] = field(default_factory=dict)
    swizzle: Mapping[str, int] = field(default_factory=dict)
    vectorized: frozenset[str] = frozenset()
    unroll: Mapping[str, int] = field(default_factory=dict)
    stages: Mapping[str, int] = field(default_factory=dict)
    order: tuple[str, ...] = ()
    num_warps: int = 4
    inlined: frozenset[str] = frozenset()
    epilogue: frozenset[str] = frozenset()
    splits: Mapping[str, int] = field(default_factory=dict)  # role -> programs sharing its reduction
    persistent: bool = False  # a grid of about the SM count, each program looping over tiles
    load: str = "pointer"  # "pointer" arithmetic or "tma" tensor descriptors for tile loads
    warp_specialized: frozenset[str] = frozenset()  # loops split into producer and consumer warps

    def tile(self, role: str) -> int:
        """The block size of a role's axis; ScheduleError if the schedule never tiled it."""
        if role not in self.tiles:
            raise ScheduleError(f"the schedule does not tile axis '{role}'; add s.tile('{role}', ...)")
        return self.tiles[role]

    @property
    def num_stages(self) -> int:
        """Software-pipelining depth of the reduction loop (1: no pipelining)."""
        return self.stages.get("k", self.stages.get("n", self.stages.get("lane", 1)))


class Schedule:
    """A recorded, replayable sequence of primitives over one operator graph."""

    def __init__(self, graph: Graph, roles: AxisRoles) -> None:
        self.graph = graph
        self.kernel = roles
        self.roles = roles.roles
        self.primitives: list[Primitive] = []
        self.constraints: list[Constraint] = []

    def __repr__(self) -> str:
        return f"Schedule({self.graph.name}: " + ".".join(map(repr, self.primitives)) + ")"

    # --- naming -------------------------------------------------------------------------------

    def role(self, axis: AxisRef) -> str:
        """The role of an axis given by role name or as an axis of the operator."""
        if isinstance(axis, str):
            if axis not in self.roles:
                raise ScheduleError(
                    f"{self.graph.name}: no axis '{axis}' in a {self.kernel.op_class.value} schedule; "
                    f"axes are {', '.join(self.roles)}"
                )
            return axis
        role = self.kernel.role_of(axis)
        if role is None:
            raise ScheduleError(f"{self.graph.name}: axis '{axis.name}' is not an axis of the kernel's loop nest")
        return role

    def _stage(self, stage: Tensor | str) -> str:
        name = stage if isinstance(stage, str) else stage.name
        for t in self.graph.stages:
            if t.name == name:
                if t.reduction is not None:
                    raise ScheduleError(f"{self.graph.name}: stage '{name}' is a reduction; only injective stages inline or fuse")
                if t is self.graph.output:
                    raise ScheduleError(f"{self.graph.name}: stage '{name}' is the output; it is stored, not inlined")
                return name
        raise ScheduleError(
            f"{self.graph.name}: no stage '{name}'; stages are {', '.join(t.name for t in self.graph.stages)}"
        )

    def _record(self, op: str, target: str, arg: Arg | None = None) -> Schedule:
        if isinstance(arg, Knob):
            for p in self.primitives:
                if isinstance(p.arg, Knob) and p.arg.name == arg.name and p.arg != arg:
                    raise ScheduleError(f"two different knobs are named {arg.name!r}")
        self.primitives.append(Primitive(op, target, arg))
        return self

    # --- primitives ---------------------------------------------------------------------------

    def tile(self, axis: AxisRef, factor: int | Knob) -> Schedule:
        """Split `axis` into tiles of `factor` elements: the block size of that axis."""
        return self._record("tile", self.role(axis), factor)

    def bind(self, axis: AxisRef, target: str) -> Schedule:
        """Make the outer (tile) loop of `axis` a program-id axis: "block.x", "block.y" or "block.z"."""
        if target not in BIND_TARGETS:
            raise ScheduleError(f"bind target must be one of {', '.join(BIND_TARGETS)}, got {target!r}")
        return self._record("bind", self.role(axis), target)

    def reorder(self, *axes: AxisRef) -> Schedule:
        """The order of the outer tile loops, outermost first (program-id linearisation order)."""
        return self._record("reorder", ",".join(self.role(a) for a in axes))

    def swizzle(self, axis: AxisRef, group: int | Knob) -> Schedule:
        """Grouped program order along `axis` (`group` tiles at a time) for L2 reuse."""
        return self._record("swizzle", self.role(axis), group)

    def vectorize(self, axis: AxisRef) -> Schedule:
        """Mark `axis` as the contiguous one: its offsets get contiguity and alignment hints."""
        return self._record("vectorize", self.role(axis))

    def unroll(self, axis: AxisRef, factor: int | Knob) -> Schedule:
        """Unroll the loop over `axis` by `factor`."""
        return self._record("unroll", self.role(axis), factor)

    def pipeline(self, axis: AxisRef, stages: int | Knob) -> Schedule:
        """Software-pipeline the loop over `axis` with `stages` buffers in flight (num_stages)."""
        return self._record("pipeline", self.role(axis), stages)

    def split_k(self, axis: AxisRef, parts: int | Knob) -> Schedule:
        """Split the reduction over `axis` across `parts` programs, then combine their results."""
        return self._record("split_k", self.role(axis), parts)

    def persistent(self, on: bool | Knob) -> Schedule:
        """Launch about one program per resident slot on the GPU (SM count x programs per SM),
        each looping over output tiles in the bound (grouped) order, instead of one per tile."""
        return self._record("persistent", "", on)

    def load_via(self, path: str | Knob) -> Schedule:
        """How tiles are loaded: "pointer" (address arithmetic per element) or "tma" (tensor
        descriptors, the Hopper copy engine; needs 16-byte aligned strides)."""
        if not isinstance(path, Knob) and path not in LOAD_PATHS:
            raise ScheduleError(f"load_via: path must be one of {', '.join(LOAD_PATHS)}, got {path!r}")
        return self._record("load_via", "", path)

    def warp_specialize(self, axis: AxisRef, on: bool | Knob) -> Schedule:
        """Split the loop over `axis` into producer (load) and consumer (compute) warps."""
        return self._record("warp_specialize", self.role(axis), on)

    def num_warps(self, warps: int | Knob) -> Schedule:
        """Warps per program."""
        return self._record("num_warps", "", warps)

    def compute_inline(self, stage: Tensor | str) -> Schedule:
        """Fold an injective producer into the loads of its consumers."""
        return self._record("compute_inline", self._stage(stage))

    def fuse_epilogue(self, stage: Tensor | str) -> Schedule:
        """Compute an injective consumer on the anchor's tile before it is stored."""
        return self._record("fuse_epilogue", self._stage(stage))

    def constrain(self, description: str, check: Callable[[Config], str | None]) -> Schedule:
        """Add a rule over whole configs (None when satisfied, else the reason)."""
        self.constraints.append(Constraint(description, check))
        return self

    # --- space and replay ---------------------------------------------------------------------

    @property
    def knobs(self) -> list[Knob]:
        """The knobs of all primitives, in the order they were recorded."""
        seen: dict[str, Knob] = {}
        for p in self.primitives:
            if isinstance(p.arg, Knob):
                seen.setdefault(p.arg.name, p.arg)
        return list(seen.values())

    def space(self) -> ConfigSpace:
        """The config space: the knobs and the constraints."""
        implied = {p.arg.name: LATER_PRIMITIVES[p.op] for p in self.primitives
                   if p.op in LATER_PRIMITIVES and isinstance(p.arg, Knob)}
        return ConfigSpace(self.knobs, tuple(self.constraints), tuple(implied.items()))

    def resolve(self, config: Config) -> ResolvedSchedule:
        """Replay the primitives with `config`'s knob values; IllegalConfig if it is not legal."""
        space = self.space()
        space.check(config)
        config = space.expand(config)

        def value(arg: Arg | None) -> KnobValue | None:
            return config[arg.name] if isinstance(arg, Knob) else arg

        tiles: dict[str, int] = {}
        bindings: dict[str, str] = {}
        swizzle: dict[str, int] = {}
        unroll: dict[str, int] = {}
        stages: dict[str, int] = {}
        vectorized: set[str] = set()
        inlined: set[str] = set()
        epilogue: set[str] = set()
        splits: dict[str, int] = {}
        order: tuple[str, ...] = ()
        warps = 4
        persistent, load, specialized = False, "pointer", set()
        for p in self.primitives:
            v = value(p.arg)
            if p.op == "tile":
                tiles[p.target] = int(v)
            elif p.op == "bind":
                bindings[p.target] = str(v)
            elif p.op == "swizzle":
                swizzle[p.target] = int(v)
            elif p.op == "unroll":
                unroll[p.target] = int(v)
            elif p.op == "pipeline":
                stages[p.target] = int(v)
            elif p.op == "vectorize":
                vectorized.add(p.target)
            elif p.op == "num_warps":
                warps = int(v)
            elif p.op == "compute_inline":
                inlined.add(p.target)
            elif p.op == "fuse_epilogue":
                epilogue.add(p.target)
            elif p.op == "split_k":
                splits[p.target] = int(v)
            elif p.op == "reorder":
                order = tuple(p.target.split(","))
            elif p.op == "persistent":
                persistent = bool(v)
            elif p.op == "load_via":
                if v not in LOAD_PATHS:
                    raise ScheduleError(f"load_via: path must be one of {', '.join(LOAD_PATHS)}, got {v!r}")
                load = str(v)
            elif p.op == "warp_specialize" and v:
                specialized.add(p.target)
        return ResolvedSchedule(
            self.kernel.op_class, space.shorten(config), tiles, bindings, swizzle, frozenset(vectorized), unroll,
            stages, order, warps, frozenset(inlined), frozenset(epilogue), splits,
            persistent, load, frozenset(specialized),
        )
