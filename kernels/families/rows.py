"""The rows family: injective operators, and row reductions whose whole row one block holds.

Each program owns a tile of `BLOCK_ROWS` fused outer rows by `BLOCK_LANE` elements of the lane
axis; row reductions are computed on the tile (the whole row fits one block) and consumed in
registers by the stages after them, so softmax, layernorm and rmsnorm are one kernel. Row
reductions whose rows are longer, or that reduce other axes, are the reduction families'; this
family holds those whose layout only it can express (`RowLayout`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from tiletune.errors import LoweringError
from tiletune.kernels.emit import TileEmitter, Value, ident
from tiletune.kernels.facts import TileFacts, ops_per_element, unique_bytes
from tiletune.kernels.families.family import Family, shrink
from tiletune.kernels.families.pattern import Pattern
from tiletune.kernels.grid import Extent, Grid, Product, Tiles, cdiv
from tiletune.kernels.kernel import KernelContext, KernelSource, check_bindings
from tiletune.kernels.specialize import Divides
from tiletune.kernels.syntax import REDUCE_FN, REDUCE_IDENTITY, int_identity
from tiletune.schedules.knobs import Choice, PowerOfTwo
from tiletune.schedules.limits import next_pow2, no_larger_than_axis, tile_at_most
from tiletune.schedules.schedule import ResolvedSchedule, Schedule
from tiletune.tensorexpr.analysis import OpClass, inline_injective
from tiletune.tensorexpr.expr import DimVar, Expr, IterVar, Read, substitute, walk
from tiletune.tensorexpr.operator import Graph, evaluate_extent

# Largest row a single-pass reduction holds in one block.
MAX_LANE = 32768
# Elements of one row-kernel tile; beyond this a block's registers spill heavily.
MAX_ROW_TILE = 32768


@dataclass(frozen=True, slots=True, eq=False)
class RowLayout:
    """How an injective or reduction operator maps onto a 2-D tile of `rows` x `lane`.

    `lane` is the output axis that runs along the tile's contiguous dimension (for row
    reductions: the axis the reductions run over, or None if the output has no such axis, as
    for a row sum); `rows` are the other output axes, fused into one.
    """

    rows: tuple[IterVar, ...]
    lane: IterVar | None
    lane_extent: Expr | None
    reduce_axes: tuple[IterVar, ...]  # one per reduction stage, all of extent lane_extent


def row_layout(graph: Graph, pattern: Pattern) -> RowLayout:
    """The rows/lane layout of an injective or reduction operator."""
    out_axes = graph.output.op.axes
    if pattern.op_class is OpClass.INJECTIVE:
        if not out_axes:
            return RowLayout((), None, None, ())
        return RowLayout(out_axes[:-1], out_axes[-1], out_axes[-1].extent, ())
    if pattern.op_class is not OpClass.REDUCTION:
        raise LoweringError(f"{graph.name}: a {pattern.op_class.value} operator has no row layout")
    reduce_axes = []
    for stage in pattern.reductions:
        red = stage.reduction
        if len(red.axes) != 1:
            raise LoweringError(
                f"{graph.name}: stage '{stage.name}' reduces over {len(red.axes)} axes; "
                "this backend reduces over one axis per stage (reshape the input to merge them)"
            )
        reduce_axes.append(red.axes[0])
    extent = reduce_axes[0].extent
    for stage, axis in zip(pattern.reductions, reduce_axes):
        if axis.extent != extent:
            raise LoweringError(
                f"{graph.name}: stage '{stage.name}' reduces over an axis of extent {axis.extent!r} "
                f"but '{pattern.reductions[0].name}' over {extent!r}; one kernel reduces rows of one length"
            )
    lane = _lane_axis(graph, pattern, tuple(reduce_axes))
    rows = tuple(a for a in out_axes if a is not lane)
    return RowLayout(rows, lane, extent, tuple(reduce_axes))


def _lane_axis(graph: Graph, pattern: Pattern, reduce_axes: tuple[IterVar, ...]) -> IterVar | None:
    """The output axis that runs along the reduced axis: the one that indexes the same input
    dimension as a reduce axis does (x[i, j] in the output, x[i, k] in the reduction); else
    the last output axis of the same extent; else None."""
    out = graph.output
    if out.reduction is not None:
        return None
    keep = frozenset(pattern.reductions)
    out_reads = [n for n in walk(inline_injective(out.op.body, keep)) if isinstance(n, Read)]
    for stage, k in zip(pattern.reductions, reduce_axes):
        for r in walk(inline_injective(stage.reduction.body, keep)):
            if not isinstance(r, Read) or k not in r.indices:
                continue
            pos = r.indices.index(k)
            for o in out_reads:
                if o.tensor is not r.tensor:
                    continue
                index = o.indices[pos]
                # the lane axis shares the reduce axis's offsets and mask, so it needs its extent
                # too: an output over a slice of the row (x[i, j], j < E < D) is not along it
                if isinstance(index, IterVar) and index in out.op.axes and index.extent == k.extent:
                    return index
    same = [a for a in out.op.axes if a.extent == reduce_axes[0].extent]
    return same[-1] if same else None



class RowsFamily(Family):
    """Injective operators and whole-row reductions: one `BLOCK_ROWS x BLOCK_LANE` tile per
    program (a reduction's program holds whole rows)."""

    name = "rows"
    serves = frozenset({OpClass.INJECTIVE, OpClass.REDUCTION})

    def __init__(self, graph: Graph, pattern: Pattern) -> None:
        super().__init__(graph, pattern)
        self.reduction = pattern.op_class is OpClass.REDUCTION
        self.roles = ("rows", "lane", "red") if self.reduction else ("rows", "lane")

    @property
    def layout(self) -> RowLayout:
        return row_layout(self.graph, self.pattern)

    def add_knobs(self, schedule: Schedule, dims: Mapping[str, int]) -> None:
        layout = self.layout
        lane = evaluate_extent(layout.lane_extent, dims) if layout.lane_extent is not None else 1
        rows = math.prod(evaluate_extent(a.extent, dims) for a in layout.rows)
        if self.reduction:
            block_lane = next_pow2(lane)
            if block_lane > MAX_LANE:
                raise LoweringError(
                    f"{self.graph.name}: rows of {lane} elements do not fit one block (at most {MAX_LANE}); "
                    "looped reductions over longer rows are not supported yet"
                )
            schedule.tile("lane", block_lane)
            max_rows = max(1, min(64, MAX_ROW_TILE // block_lane))
            default_rows = max(1, min(max_rows, 2048 // block_lane, next_pow2(rows)))
            schedule.tile("rows", PowerOfTwo("BLOCK_ROWS", 1, max_rows, default=default_rows))
        else:
            schedule.tile("lane", PowerOfTwo("BLOCK_LANE", 16, 4096, default=min(1024, max(16, next_pow2(lane)))))
            schedule.tile("rows", PowerOfTwo("BLOCK_ROWS", 1, 64, default=1))
            schedule.constrain(*no_larger_than_axis("BLOCK_LANE", lane, floor=16))
            schedule.constrain(*tile_at_most(("BLOCK_ROWS", "BLOCK_LANE"), MAX_ROW_TILE, "program"))
        schedule.constrain(*no_larger_than_axis("BLOCK_ROWS", rows, floor=1))
        schedule.bind("rows", "block.x").vectorize("lane")
        schedule.num_warps(Choice("num_warps", (1, 2, 4, 8, 16), default=4))

    def grid(self, schedule: ResolvedSchedule) -> Grid:
        layout = self.layout
        rows = Tiles(Extent(tuple(a.extent for a in layout.rows)), schedule.tile("rows"))
        if self.reduction:
            return Grid((rows,))
        lane = Extent(() if layout.lane_extent is None else (layout.lane_extent,))
        return Grid((Product((rows, Tiles(lane, schedule.tile("lane")))),))

    def emit(self, kernel: KernelContext, for_interpreter: bool) -> KernelSource:
        return lower_rows(kernel, self.grid(kernel.schedule))

    def facts(self, schedule: ResolvedSchedule, dims: Mapping[str, int]) -> TileFacts:
        layout = self.layout
        rows = math.prod(evaluate_extent(a.extent, dims) for a in layout.rows)
        lane = evaluate_extent(layout.lane_extent, dims) if layout.lane_extent is not None else 1
        br, bl = schedule.tile("rows"), schedule.tile("lane")
        lane_tiles = 1 if self.reduction else cdiv(lane, bl)
        programs = self.grid(schedule).programs(dims, None)
        padded = cdiv(rows, br) * br * lane_tiles * bl
        total_unique = unique_bytes(self.graph, dims)
        return TileFacts(
            programs=programs,
            flops_per_program=float(ops_per_element(self.graph, self.pattern) * br * bl),
            bytes_per_program=total_unique / programs * (padded / max(rows * lane, 1)),
            unique_bytes=total_unique,
            tile_m=br, tile_n=bl, tile_k=0, k_iterations=1,
            uses_tensor_cores=False,
            dot_dtype="none",
            tail_fraction=1.0 - (rows * lane) / padded,
        )

    def verification_dims(self, dims: Mapping[str, int], schedule: ResolvedSchedule) -> dict[str, int]:
        """The rows shrink (the outermost to just over two row tiles; the inner ones, fused with
        it, to a few values: each shrunk to two tiles would make a rank-4 check cubic in the
        tile size); an injective lane to just over two lane tiles; a reduced row stays whole,
        since the kernel holds it in one block."""
        layout = self.layout
        tiles: dict[str, int] = {}
        inner: set[str] = set()
        for n, axis in enumerate(a for a in layout.rows if isinstance(a.extent, DimVar)):
            if n == 0:
                tiles.setdefault(axis.extent.name, schedule.tile("rows"))
            elif axis.extent.name not in tiles:
                inner.add(axis.extent.name)
        if isinstance(layout.lane_extent, DimVar):
            if self.reduction:
                tiles[layout.lane_extent.name] = 0  # keep: the kernel holds the whole row
            else:
                tiles.setdefault(layout.lane_extent.name, schedule.tile("lane"))
        return shrink(dims, tiles, inner)


def lower_rows(kernel: KernelContext, grid: Grid) -> KernelSource:
    """The row kernel of the operator under `kernel`'s schedule, launched over `grid`."""
    graph, schedule, pattern = kernel.graph, kernel.schedule, kernel.pattern
    kernel.check_fusion()
    check_bindings(graph.name, schedule, {"rows": "block.x", "lane": "block.x"})
    layout = row_layout(graph, pattern)
    block_rows, block_lane = schedule.tile("rows"), schedule.tile("lane")
    kernel.constexprs.update(BLOCK_ROWS=block_rows, BLOCK_LANE=block_lane)
    body = kernel.body
    rows_total = " * ".join(kernel.extent(a.extent) for a in layout.rows) or "1"
    lane_extent = kernel.extent(layout.lane_extent) if layout.lane_extent is not None else "1"
    reduction = pattern.op_class is OpClass.REDUCTION

    even_rows = Divides("EVEN_ROWS", tuple(a.extent for a in layout.rows), block_rows) if layout.rows else None
    even_lane = Divides("EVEN_LANE", (layout.lane_extent,), block_lane) if layout.lane_extent is not None else None
    emitter = kernel.rows_lane_tile(rows_total, lane_extent, whole_row=reduction,
                                    contiguous="lane" in schedule.vectorized and not reduction,
                                    even=(even_rows, even_lane))
    # the fused rows unflatten into the output's outer axes (last one fastest)
    for axis, name in kernel.unflatten(layout.rows, "offs_rows").items():
        emitter.axes[axis] = Value(emitter.expand(name, 0), frozenset({0}), "int32")
    lane_value = Value(emitter.expand("offs_lane", 1), frozenset({1}), "int32")
    if layout.lane is not None:
        emitter.axes[layout.lane] = lane_value
    for axis in layout.reduce_axes:
        emitter.axes[axis] = lane_value

    anchors = set(pattern.reductions)

    def resolve(read: Read, emitter: TileEmitter) -> Value | None:
        t = read.tensor
        if t not in anchors:
            return None
        red = t.reduction
        red_body = substitute(red.body, dict(zip(t.op.axes, read.indices)))
        red_body = emitter.inlined(red_body, frozenset(anchors))
        v = emitter.value(red_body, within=t.name)
        if 1 in {d for i in read.indices for d in emitter.value(i).dims}:
            raise LoweringError(f"{graph.name}: stage '{t.name}' is read along the reduced axis; it must be read per row")
        floating = red.dtype.startswith(("float", "bfloat"))
        vf = emitter.as_float32(v) if floating else v
        identity = REDUCE_IDENTITY[red.op] if floating else int_identity(red.op, red.dtype)
        masked = body.assign(f"{ident(t.name)}_in", f"tl.where({emitter.full_mask()}, {vf.code}, {identity})")
        out = body.assign(ident(t.name), f"{REDUCE_FN[red.op]}({masked}, axis=1, keep_dims=True)")
        return Value(out, frozenset({0}), vf.dtype)

    emitter.resolve = resolve
    out = graph.output
    out_read = Read(out, out.op.axes, out.dtype)
    if out in anchors:
        value = resolve(out_read, emitter)
    else:
        value = emitter.computed(out, frozenset(anchors))
    kernel.store(emitter, value)
    return kernel.finish(f"{ident(graph.name)}_kernel", grid.code(kernel))
