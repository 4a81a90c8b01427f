"""The reduction families: reductions over any axes, looped over chunks of the reduce index.

Three families share one kernel (`reduction.kernel`) and one layout analysis
(`reduction.layout`), and differ in how the tile lies and what is split:

- `RowReductionFamily` (inner form): rows of programs, each reducing `BLOCK_ROWS` rows along
  the lane; a row that fits `BLOCK_RED` is one pass (the rows family's kernel), a longer one
  loops, and a few very long rows may be split across programs (`SPLIT`);
- `OuterReductionFamily` (outer form): a non-innermost axis reduced, the output's contiguous
  axis along the lane, the reduction looping over the tile's first dimension;
- `TotalFamily`: scalar totals over the rows of row reductions (a loss), combined by a
  second kernel.

Roles: `rows` (the output's outer axes, fused), `lane` and `red` (the fused reduce index).
"""
from __future__ import annotations

import math
from typing import Mapping

from tiletune.errors import LoweringError
from tiletune.kernels.facts import TileFacts, ops_per_element, unique_bytes
from tiletune.kernels.families.family import INNER_ROW_DIM, Family, shrink
from tiletune.kernels.families.pattern import Pattern
from tiletune.kernels.families.reduction.kernel import lower_reduction
from tiletune.kernels.families.reduction.layout import ReduceLayout, reduce_layout, total_stages
from tiletune.kernels.families.rows import RowsFamily, lower_rows, row_layout
from tiletune.kernels.grid import Constant, Extent, Grid, Product, Tiles, cdiv
from tiletune.kernels.kernel import KernelContext, KernelSource
from tiletune.schedules.knobs import Choice, PowerOfTwo
from tiletune.schedules.limits import next_pow2, no_larger_than_axis, tile_at_most
from tiletune.schedules.schedule import ResolvedSchedule, Schedule
from tiletune.tensorexpr.analysis import OpClass
from tiletune.tensorexpr.expr import REDUCE_OPS, DimVar, IterVar, Read, walk
from tiletune.tensorexpr.operator import Graph, evaluate_extent

__all__ = ["OuterReductionFamily", "ReduceLayout", "RowReductionFamily", "TotalFamily", "reduce_layout"]

# Largest reduce block of one loop iteration (a whole row up to this is one pass).
MAX_RED_BLOCK = 32768
# Elements of one tile; beyond this a block's registers spill heavily.
MAX_TILE = 32768
# A reduction over this many elements or more with few rows may be split across programs.
SPLIT_MIN_ELEMENTS = 1 << 16


class ReductionFamily(Family):
    """What the three reduction families share: the layout, the reduce chunk knob, the looped
    kernel, its facts and check dims. A schedule that tiles no `red` chunk (a hand-written
    one) and a row one block holds whole run the rows family's single-pass kernel."""

    serves = frozenset({OpClass.REDUCTION})
    roles = ("rows", "lane", "red")

    def __init__(self, graph: Graph, pattern: Pattern, layout: ReduceLayout) -> None:
        super().__init__(graph, pattern)
        self.layout = layout

    @classmethod
    def choose(cls, graph: Graph, pattern: Pattern) -> Family | None:
        if pattern.op_class not in cls.serves:
            return None
        try:
            layout = reduce_layout(graph, pattern)
        except LoweringError:
            return None  # not one value per output row: the rows family's single pass may hold it
        return cls(graph, pattern, layout) if cls.holds(layout) else None

    @staticmethod
    def holds(layout: ReduceLayout) -> bool:
        raise NotImplementedError

    def rows(self) -> RowsFamily:
        """The rows family's view of this operator: its single-pass kernel."""
        return RowsFamily(self.graph, self.pattern)

    # --- the space rule -------------------------------------------------------------------

    def add_knobs(self, schedule: Schedule, dims: Mapping[str, int]) -> None:
        """BLOCK_RED (the chunk of the fused reduce index one loop iteration reads; the whole
        row means one pass), the family's row or lane tile, and num_warps."""
        full = next_pow2(self.layout.red_extent(dims))
        self.add_tiles(schedule, dims, full)
        off_row = self._read_off_its_row()
        if off_row is not None:
            # only the single-pass kernel computes a reduction at another row (it reduces that
            # row too); the looped one refuses, so a config that loops is illegal, and where
            # no config is one pass the operator is no one kernel (its parts store the stage)
            why = (f"{self.graph.name}: stage '{off_row}' is read at other positions than its own row; only "
                   f"the single-pass kernel (a whole row in one block) computes it there")
            if not self._one_pass_possible() or full > MAX_RED_BLOCK:
                raise LoweringError(f"{why}, and it cannot hold this operator's rows of {full}")
            schedule.constrain("one pass over a row", lambda cfg: None if cfg["BLOCK_RED"] >= full
                               else f"BLOCK_RED={cfg['BLOCK_RED']} loops over a row of {full}: {why}")
        schedule.vectorize("red" if self.layout.inner else "lane")
        schedule.num_warps(Choice("num_warps", (1, 2, 4, 8, 16), default=4))

    def _read_off_its_row(self) -> str | None:
        """The first reduction stage some stage reads at an index other than a plain axis (a
        shifted, reversed or fixed row: s[i + 1], s[0]), or None."""
        reduced = {id(t) for t in self.pattern.reductions}
        for stage in self.graph.stages:
            for node in walk(stage.op.body):
                if (isinstance(node, Read) and id(node.tensor) in reduced
                        and not all(isinstance(i, IterVar) for i in node.indices)):
                    return node.tensor.name
        return None

    def _one_pass_possible(self) -> bool:
        """Whether some config runs the single-pass kernel (`single_pass`'s conditions that no
        knob changes)."""
        layout = self.layout
        if not layout.inner or len(layout.slots) != 1:
            return False
        if any(s.reduction.op not in REDUCE_OPS for s in self.pattern.reductions):
            return False
        try:
            row_layout(self.graph, self.pattern)
        except LoweringError:
            return False
        return True

    def add_tiles(self, schedule: Schedule, dims: Mapping[str, int], full: int) -> None:
        raise NotImplementedError

    def _inner_tiles(self, schedule: Schedule, dims: Mapping[str, int], full: int) -> int:
        """The inner form's tiles (`BLOCK_RED` along the lane, `BLOCK_ROWS`); the default
        BLOCK_RED."""
        high = min(full, MAX_RED_BLOCK)
        rows = self._rows(dims)
        schedule.tile("red", PowerOfTwo("BLOCK_RED", min(16, high), high, default=high))
        # the row kernel's whole-row block: BLOCK_RED >= this means one pass over a row
        schedule.tile("lane", full)
        default_rows = max(1, min(64, MAX_TILE // high, 2048 // high, next_pow2(rows)))
        schedule.tile("rows", PowerOfTwo("BLOCK_ROWS", 1, 64, default=default_rows))
        schedule.constrain(*no_larger_than_axis("BLOCK_ROWS", rows))
        schedule.constrain(*tile_at_most(("BLOCK_ROWS", "BLOCK_RED"), MAX_TILE, "program"))
        schedule.bind("rows", "block.x")
        return high

    def _rows(self, dims: Mapping[str, int]) -> int:
        return math.prod(evaluate_extent(a.extent, dims) for a in self.layout.rows)

    # --- lowering -------------------------------------------------------------------------

    def single_pass(self, schedule: ResolvedSchedule) -> bool:
        """True when the rows family's kernel holds the whole row in one block: one reduced
        axis that is the contiguous one, no arg-reduction, no split, and a BLOCK_RED covering
        the row (the fixed "lane" tile the schedule records). Everything else loops."""
        if "red" not in schedule.tiles:
            return True
        if schedule.splits.get("red", 1) > 1 or schedule.tile("red") < schedule.tiles.get("lane", 1 << 30):
            return False
        return self._one_pass_possible()

    def grid(self, schedule: ResolvedSchedule) -> Grid:
        if self.single_pass(schedule):
            return self.rows().grid(schedule)
        return self.looped_grid(schedule)

    def looped_grid(self, schedule: ResolvedSchedule) -> Grid:
        raise NotImplementedError

    def emit(self, kernel: KernelContext, for_interpreter: bool) -> KernelSource:
        if self.single_pass(kernel.schedule):
            return lower_rows(kernel, self.grid(kernel.schedule))
        return lower_reduction(kernel, self.layout, self.grid(kernel.schedule))

    # --- facts and checks -----------------------------------------------------------------

    def facts(self, schedule: ResolvedSchedule, dims: Mapping[str, int]) -> TileFacts:
        """One program per row tile (times SPLIT) or per (row, lane tile); each pass over the
        reduce index reads the row again."""
        if "red" not in schedule.tiles:
            return self.rows().facts(schedule, dims)
        layout = self.layout
        red = layout.red_extent(dims)
        block_red = schedule.tile("red")
        split = schedule.splits.get("red", 1)
        programs = self.grid(schedule).programs(dims, None)
        tile_m, tile_n, outputs = self.tile_shape(schedule, dims)
        padded = self._padded_outputs(schedule, dims) * cdiv(red, block_red) * block_red
        single = block_red >= red and split == 1
        # passes over the input: one per reduction loop (an online max/sum pair is one) and the
        # output's loop; a single-pass row stays in registers
        # (totals over rows are computed on the row values: no pass of their own)
        passes = 1 if single else len(self.pattern.reductions) - len(layout.totals) + (1 if layout.aligned else 0)
        k_iters = cdiv(red, block_red * split)
        total_unique = unique_bytes(self.graph, dims)
        return TileFacts(
            programs=programs,
            flops_per_program=float(ops_per_element(self.graph, self.pattern) * tile_m * tile_n * k_iters),
            bytes_per_program=total_unique * passes / programs * (padded / max(outputs * red, 1)),
            unique_bytes=total_unique,
            tile_m=tile_m, tile_n=tile_n, tile_k=block_red, k_iterations=k_iters,
            uses_tensor_cores=False,
            dot_dtype="none",
            tail_fraction=1.0 - (outputs * red) / max(padded, 1),
        )

    def tile_shape(self, schedule: ResolvedSchedule, dims: Mapping[str, int]) -> tuple[int, int, int]:
        """(tile rows, tile columns, output values) of the looped kernel."""
        raise NotImplementedError

    def _padded_outputs(self, schedule: ResolvedSchedule, dims: Mapping[str, int]) -> int:
        """Output values the launched tiles cover, masked ones included."""
        raise NotImplementedError

    def verification_dims(self, dims: Mapping[str, int], schedule: ResolvedSchedule) -> dict[str, int]:
        """Tiled row or lane axes just over two tiles, other outer axes a few values, and a
        single reduced dim just over two chunks (of every split) so that the loop, its masked
        tail and the combine all run."""
        if "red" not in schedule.tiles:
            return self._rows_verification_dims(dims, schedule)
        layout = self.layout
        small = dict(dims)

        def shrink_axis(axis, tile: int) -> None:
            if isinstance(axis.extent, DimVar):
                name = axis.extent.name
                small[name] = min(small[name], 2 * tile + 3) if tile else min(small[name], INNER_ROW_DIM)

        tiled = schedule.tile("rows") if layout.inner else 0
        for n, axis in enumerate(layout.rows):
            shrink_axis(axis, tiled if n == 0 else 0)
        if layout.lane is not None:
            shrink_axis(layout.lane, schedule.tile("lane"))
        reduced = [e for e in layout.slots if isinstance(e, DimVar)]
        if len(reduced) == 1 and len(layout.slots) == 1:
            name = reduced[0].name
            small[name] = min(dims[name], 2 * schedule.tile("red") * schedule.splits.get("red", 1) + 3)
        else:
            for e in reduced:  # several reduced axes fuse into one index: keep the rows whole
                small[e.name] = dims[e.name]
        return small

    def _rows_verification_dims(self, dims: Mapping[str, int], schedule: ResolvedSchedule) -> dict[str, int]:
        """Check dims of the single-pass kernel; with no row layout (a loss, a sum to a
        scalar), rows shrink to just over two row tiles and the reduced extents stay."""
        try:
            return self.rows().verification_dims(dims, schedule)
        except LoweringError:
            pass
        fused = [a for a in self.layout.rows if isinstance(a.extent, DimVar)]
        tiles = {fused[0].extent.name: schedule.tile("rows")} if fused else {}
        return shrink(dims, tiles, {a.extent.name for a in fused[1:] if a.extent.name not in tiles})


class RowReductionFamily(ReductionFamily):
    """Reductions along the rows' contiguous axis (the inner form): softmax, layernorm,
    a sum over the last axes; one pass when a row fits a block, else a loop over chunks."""

    name = "row_reduction"

    @staticmethod
    def holds(layout: ReduceLayout) -> bool:
        return layout.inner and not layout.totals

    def add_tiles(self, schedule: Schedule, dims: Mapping[str, int], full: int) -> None:
        high = self._inner_tiles(schedule, dims, full)
        layout, red = self.layout, self.layout.red_extent(dims)
        if layout.independent and not layout.aligned and red >= SPLIT_MIN_ELEMENTS and self._rows(dims) <= 64:
            default_split = min(64, max(1, next_pow2(red // (8 * high))))
            schedule.split_k("red", PowerOfTwo("SPLIT", 1, 128, default=default_split))

    def looped_grid(self, schedule: ResolvedSchedule) -> Grid:
        rows = Tiles(Extent(tuple(a.extent for a in self.layout.rows)), schedule.tile("rows"))
        split = schedule.splits.get("red", 1)
        return Grid((rows, Constant(split)) if split > 1 else (rows,))

    def tile_shape(self, schedule: ResolvedSchedule, dims: Mapping[str, int]) -> tuple[int, int, int]:
        return schedule.tile("rows"), schedule.tile("red"), self._rows(dims)

    def _padded_outputs(self, schedule: ResolvedSchedule, dims: Mapping[str, int]) -> int:
        br = schedule.tile("rows")
        return cdiv(self._rows(dims), br) * br


class TotalFamily(RowReductionFamily):
    """Totals over the rows of row reductions (a loss: a mean over rows of a per-row term):
    the row reductions in the inner form, each program's partial totals in a workspace, and a
    second kernel that combines them."""

    name = "total"

    @classmethod
    def choose(cls, graph: Graph, pattern: Pattern) -> Family | None:
        if pattern.op_class not in cls.serves or not total_stages(pattern):
            return None
        # only this kernel could hold totals over rows: its reason, if it cannot
        return cls(graph, pattern, reduce_layout(graph, pattern))

    @staticmethod
    def holds(layout: ReduceLayout) -> bool:
        return bool(layout.totals)

    def add_tiles(self, schedule: Schedule, dims: Mapping[str, int], full: int) -> None:
        self._inner_tiles(schedule, dims, full)


class OuterReductionFamily(ReductionFamily):
    """A reduction over a non-innermost axis (the outer form, a sum over axis 1 of [A, R, C]):
    the output's contiguous axis along the lane, the reduction looping over the tile's first
    dimension, so no lane reads with the reduced axis's stride; other output axes are one
    program each."""

    name = "outer_reduction"

    @staticmethod
    def holds(layout: ReduceLayout) -> bool:
        return not layout.inner

    def add_tiles(self, schedule: Schedule, dims: Mapping[str, int], full: int) -> None:
        lane = evaluate_extent(self.layout.lane.extent, dims)
        high = min(full, MAX_RED_BLOCK)
        schedule.tile("lane", PowerOfTwo("BLOCK_LANE", 16, 1024, default=min(128, max(16, next_pow2(lane)))))
        schedule.tile("red", PowerOfTwo("BLOCK_RED", 1, high, default=min(high, 32)))
        schedule.constrain(*no_larger_than_axis("BLOCK_LANE", lane, floor=16))
        schedule.constrain(*tile_at_most(("BLOCK_RED", "BLOCK_LANE"), MAX_TILE, "program"))
        schedule.bind("lane", "block.x")

    def looped_grid(self, schedule: ResolvedSchedule) -> Grid:
        rows = Extent(tuple(a.extent for a in self.layout.rows))
        return Grid((Product((rows, Tiles(Extent((self.layout.lane.extent,)), schedule.tile("lane")))),))

    def tile_shape(self, schedule: ResolvedSchedule, dims: Mapping[str, int]) -> tuple[int, int, int]:
        lane = evaluate_extent(self.layout.lane.extent, dims)
        return schedule.tile("red"), schedule.tile("lane"), self._rows(dims) * lane

    def _padded_outputs(self, schedule: ResolvedSchedule, dims: Mapping[str, int]) -> int:
        lane, bl = evaluate_extent(self.layout.lane.extent, dims), schedule.tile("lane")
        return self._rows(dims) * cdiv(lane, bl) * bl
