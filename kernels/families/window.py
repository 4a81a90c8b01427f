"""The window kernel: reductions over small constant windows that slide with the output
(max and average pooling, depthwise convolution).

Each program owns a tile of `BLOCK_ROWS` fused outer output rows by `BLOCK_LANE` elements of the
last output axis, as an injective kernel does; each windowed stage the output reads becomes an
fp32 accumulator over that tile and a loop over the window axes (`tl.static_range` when
unrolled, a `range` loop otherwise) adding one masked load per window point. Padding is a
bounds-checked read (`te.pad_read`): its load is masked where the index leaves the input, and
the reduction sees the padding value there (-inf for max, 0 for a sum).
"""
from __future__ import annotations

import math
from typing import Mapping

from tiletune.errors import LoweringError
from tiletune.kernels.emit import TL_DTYPES, TileEmitter, Value, ident
from tiletune.kernels.facts import TileFacts, arithmetic, unique_bytes
from tiletune.kernels.families.family import Family
from tiletune.kernels.families.rows import RowLayout
from tiletune.kernels.grid import Extent, Grid, Product, Tiles
from tiletune.kernels.kernel import KernelContext, KernelSource, check_bindings, py_extent
from tiletune.kernels.syntax import REDUCE_IDENTITY, combine, int_identity
from tiletune.schedules.knobs import Boolean, Choice, PowerOfTwo
from tiletune.schedules.limits import next_pow2, no_larger_than_axis
from tiletune.schedules.schedule import ResolvedSchedule, Schedule
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import OpClass, inline_injective
from tiletune.tensorexpr.expr import IterVar, Read, substitute
from tiletune.tensorexpr.operator import Graph, evaluate_extent
from tiletune.tensorexpr.tensor import Tensor

# A window up to this many points is unrolled by default (tl.static_range); larger ones loop.
MAX_UNROLLED_WINDOW = 64
# Output elements of one window-kernel tile: each holds an fp32 accumulator per window stage
# and the values loaded for it, so tiles are smaller than an injective kernel's.
MAX_WINDOW_TILE = 8192
# Each dim of a windowed operator is cut to this at verification: the window kernel's masks
# (tile tails, padding at both edges) show at any size past a few windows.
WINDOW_VERIFY_DIM = 7


def window_layout(graph: Graph) -> RowLayout:
    """The rows/lane layout of a windowed operator: its output tiled like an injective one
    (the last output axis along the lane), the window axes looped over inside the tile."""
    out_axes = graph.output.op.axes
    return RowLayout(out_axes[:-1], out_axes[-1], out_axes[-1].extent, ())


class WindowFamily(Family):
    """Reductions over small sliding windows: an injective tile of the output, each window
    looped over inside it."""

    name = "window"
    serves = frozenset({OpClass.WINDOW})
    roles = ("rows", "lane", "window")

    def role_of(self, axis: IterVar) -> str | None:
        # the reduce axes are the window loops inside the tile
        return "window" if axis.kind == "reduce" else super().role_of(axis)

    def add_knobs(self, schedule: Schedule, dims: Mapping[str, int]) -> None:
        layout = window_layout(self.graph)
        lane = evaluate_extent(layout.lane_extent, dims)
        rows = math.prod(evaluate_extent(a.extent, dims) for a in layout.rows)
        points = max(math.prod(int(a.extent.value) for a in t.reduction.axes) for t in self.pattern.anchors)
        accumulators = len(self.pattern.anchors)
        default_lane = min(128, max(16, next_pow2(lane)))
        schedule.tile("lane", PowerOfTwo("BLOCK_LANE", 16, 1024, default=default_lane))
        default_rows = max(1, min(64, 1024 // default_lane, next_pow2(rows)))
        schedule.tile("rows", PowerOfTwo("BLOCK_ROWS", 1, 64, default=default_rows))
        schedule.unroll("window", Boolean("UNROLL_WINDOW", default=points <= MAX_UNROLLED_WINDOW))
        schedule.constrain(*no_larger_than_axis("BLOCK_LANE", lane, floor=16))
        schedule.constrain(*no_larger_than_axis("BLOCK_ROWS", rows, floor=1))
        schedule.constrain(
            "tile fits registers",
            lambda cfg: None
            if cfg["BLOCK_ROWS"] * cfg["BLOCK_LANE"] * accumulators <= MAX_WINDOW_TILE
            else f"{cfg['BLOCK_ROWS']}x{cfg['BLOCK_LANE']} outputs x {accumulators} accumulators per program, "
            f"over {MAX_WINDOW_TILE}",
        )
        schedule.constrain(
            "unrolled window is small",
            lambda cfg: None
            if not cfg["UNROLL_WINDOW"] or points <= MAX_UNROLLED_WINDOW
            else f"a window of {points} points unrolled, over {MAX_UNROLLED_WINDOW}: loop over it instead",
        )
        schedule.bind("rows", "block.x").vectorize("lane")
        schedule.num_warps(Choice("num_warps", (1, 2, 4, 8), default=4))

    def grid(self, schedule: ResolvedSchedule) -> Grid:
        layout = window_layout(self.graph)
        rows = Tiles(Extent(tuple(a.extent for a in layout.rows)), schedule.tile("rows"))
        return Grid((Product((rows, Tiles(Extent((layout.lane_extent,)), schedule.tile("lane")))),))

    def emit(self, kernel: KernelContext, for_interpreter: bool) -> KernelSource:
        return lower_window(kernel, self.grid(kernel.schedule))

    def facts(self, schedule: ResolvedSchedule, dims: Mapping[str, int]) -> TileFacts:
        """Programs over the output's tiles, each looping over the window points; per point it
        loads a tile of every input the window body reads (neighbouring points hit cache, so
        the DRAM traffic is about the compulsory traffic; the loads are what it issues)."""
        layout = window_layout(self.graph)
        rows = math.prod(evaluate_extent(a.extent, dims) for a in layout.rows)
        lane = evaluate_extent(layout.lane_extent, dims)
        br, bl = schedule.tile("rows"), schedule.tile("lane")
        programs = self.grid(schedule).programs(dims, None)
        padded = programs * br * bl
        keep = frozenset(self.pattern.anchors)
        points = 0
        window_ops = 0
        for stage in self.pattern.anchors:
            n = math.prod(int(a.extent.value) for a in stage.reduction.axes)
            # one combine per point, plus the body's arithmetic
            window_ops += n * (1 + arithmetic(inline_injective(stage.reduction.body, keep)))
            points = max(points, n)
        epilogue = arithmetic(inline_injective(self.graph.output.op.body, keep))
        total_unique = unique_bytes(self.graph, dims)
        return TileFacts(
            programs=programs,
            flops_per_program=float((window_ops + epilogue) * br * bl),
            bytes_per_program=total_unique / programs * (padded / max(rows * lane, 1)),
            unique_bytes=total_unique,
            tile_m=br, tile_n=bl, tile_k=points, k_iterations=max(1, points),
            uses_tensor_cores=False,
            dot_dtype="none",
            tail_fraction=1.0 - (rows * lane) / padded,
        )

    def verification_dims(self, dims: Mapping[str, int], schedule: ResolvedSchedule) -> dict[str, int]:
        """Every dim cut to WINDOW_VERIFY_DIM where the operator's shapes stay valid (a window
        larger than that keeps its input's full size)."""
        graph = self.graph
        small = dict(dims)
        for name, value in dims.items():
            trial = {**small, name: min(value, WINDOW_VERIFY_DIM)}
            if all(s >= 1 for t in (*graph.inputs, *graph.stages) for s in graph.shape_of(t, trial)):
                small = trial
        return small


def lower_window(kernel: KernelContext, grid: Grid) -> KernelSource:
    """The window kernel of the operator under `kernel`'s schedule, launched over `grid`."""
    graph, schedule, pattern = kernel.graph, kernel.schedule, kernel.pattern
    kernel.check_fusion()
    check_bindings(graph.name, schedule, {"rows": "block.x", "lane": "block.x"})
    layout = window_layout(graph)
    block_rows, block_lane = schedule.tile("rows"), schedule.tile("lane")
    unrolled = bool(schedule.unroll.get("window", 1))
    kernel.constexprs.update(BLOCK_ROWS=block_rows, BLOCK_LANE=block_lane)
    rows_total = py_extent(kernel, layout.rows)
    lane_extent = kernel.extent(layout.lane_extent)

    emitter = kernel.rows_lane_tile(rows_total, lane_extent, whole_row=False, contiguous="lane" in schedule.vectorized)
    # the fused rows unflatten into the output's outer axes (last one fastest)
    for axis, name in kernel.unflatten(layout.rows, "offs_rows").items():
        emitter.axes[axis] = Value(emitter.expand(name, 0), frozenset({0}), "int32")
    emitter.axes[layout.lane] = Value(emitter.expand("offs_lane", 1), frozenset({1}), "int32")

    windows = frozenset(pattern.anchors)

    def resolve(read: Read, emitter: TileEmitter) -> Value | None:
        if read.tensor not in windows:
            return None
        return _window_reduction(kernel, emitter, read, windows, unrolled)

    emitter.resolve = resolve
    out = graph.output
    if out in windows:
        value = resolve(Read(out, out.op.axes, out.dtype), emitter)
    else:
        value = emitter.computed(out, windows)
    kernel.store(emitter, value)
    return kernel.finish(f"{ident(graph.name)}_kernel", grid.code(kernel))


def _window_reduction(kernel: KernelContext, emitter: TileEmitter, read: Read, windows: frozenset[Tensor],
                      unrolled: bool) -> Value:
    """The accumulator of windowed stage `read.tensor` at the tile's positions: one loop per
    window axis (static when `unrolled`) adding the body at each window point."""
    body, stage = kernel.body, read.tensor
    red = stage.reduction
    floating = dt.is_float(red.dtype)
    acc_type = "float32" if floating else dt.strong(red.dtype)
    identity = REDUCE_IDENTITY[red.op] if floating else int_identity(red.op, acc_type)
    full = f"tl.full((BLOCK_ROWS, BLOCK_LANE), {identity}, {TL_DTYPES[acc_type]})"
    acc = body.assign(f"{ident(stage.name)}_acc", full)
    loop = "tl.static_range" if unrolled else "range"
    inner_axes = dict(emitter.axes)
    outer_indent = body.indent
    for axis in red.axes:
        var = body.fresh(ident(axis.name))
        body.line(f"for {var} in {loop}({int(axis.extent.value)}):")
        body.indent += 1
        inner_axes[axis] = Value(var, frozenset(), "int32")

    def nested(inner_read: Read, _: TileEmitter) -> Value | None:
        if inner_read.tensor in windows:
            raise LoweringError(
                f"{kernel.graph.name}: windowed stage '{inner_read.tensor.name}' is read inside another window; "
                "one kernel reduces one level of windows: split the operator in two"
            )
        return None

    # a fresh emitter: values that depend on the window point must be computed inside the
    # loop, and nothing computed there may be reused after it
    inner = TileEmitter(body, emitter.dims, inner_axes, kernel.args, kernel.extent, resolve=nested)
    window_body = inner.inlined(substitute(red.body, dict(zip(stage.op.axes, read.indices))), windows)
    v = inner.value(window_body, within=stage.name)
    if floating:
        v = inner.as_float32(v)
    body.line(f"{acc} = {combine(red.op, acc, v)}")
    body.indent = outer_indent
    return Value(acc, frozenset({0, 1}), acc_type)
