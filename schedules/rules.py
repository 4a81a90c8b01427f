"""Automatic schedules: one rule per op class derives the default schedule and its knobs.

The rules see the workload's concrete dims, so that constraints can say "a tile no larger than
the axis needs" and "shared memory fits the device" before anything is compiled.
"""
from __future__ import annotations

import math
from typing import Mapping

from tiletune.errors import LoweringError
from tiletune.schedules.config import Config
from tiletune.schedules.knobs import Boolean, Choice, PowerOfTwo
from tiletune.schedules.schedule import Schedule
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import OpClass, Pattern, analyse, row_layout, window_layout
from tiletune.tensorexpr.expr import Read, walk
from tiletune.tensorexpr.operator import Graph, evaluate_extent

# Hopper: 227 KiB of shared memory per block (228 KiB per SM, 1 KiB reserved by the driver).
MAX_SHARED_BYTES = 232448
# Largest row a single-pass reduction holds in one block.
MAX_LANE = 32768
# Elements of one row-kernel tile; beyond this a block's registers spill heavily.
MAX_ROW_TILE = 32768


def next_pow2(n: int) -> int:
    """The smallest power of two >= n."""
    return 1 << max(0, (int(n) - 1).bit_length())


def default_schedule(graph: Graph, dims: Mapping[str, int], pattern: Pattern | None = None) -> Schedule:
    """The automatic schedule of `graph` at `dims`, derived from its op class."""
    pattern = pattern or analyse(graph)
    s = Schedule(graph, pattern)
    for stage in graph.stages:
        if stage is graph.output or stage in pattern.anchors:
            continue
        if stage.reduction is None:
            _inline_or_fuse(s, graph, pattern, stage)
    if pattern.op_class is OpClass.CONTRACTION:
        _contraction(s, graph, pattern, dims)
    elif pattern.op_class is OpClass.WINDOW:
        _window(s, graph, pattern, dims)
    else:
        _rows(s, graph, pattern, dims)
    return s


def _inline_or_fuse(s: Schedule, graph: Graph, pattern: Pattern, stage) -> None:
    # A stage downstream of the contraction is an epilogue; everything else is a prologue.
    if pattern.contraction is not None and _depends_on(stage, pattern.contraction.stage):
        s.fuse_epilogue(stage)
    else:
        s.compute_inline(stage)


def _depends_on(stage, target) -> bool:
    for node in walk(stage.op.body):
        if isinstance(node, Read):
            if node.tensor is target or (not node.tensor.is_placeholder and _depends_on(node.tensor, target)):
                return True
    return False


def dot_dtype(pattern: Pattern) -> str:
    """The operand type fed to `tl.dot`: the narrow input type when both factors read only
    tensors of that one 16-bit type, else float32 (accumulation is always float32)."""
    c = pattern.contraction
    read_types = {n.tensor.dtype for f in (c.a, c.b) for n in walk(f) if isinstance(n, Read)}
    if len(read_types) == 1 and next(iter(read_types)) in ("float16", "bfloat16"):
        return next(iter(read_types))
    return "float32"


def _contraction(s: Schedule, graph: Graph, pattern: Pattern, dims: Mapping[str, int]) -> None:
    c = pattern.contraction
    m, n, k = (evaluate_extent(a.extent, dims) for a in (c.m, c.n, c.k))
    item = dt.itemsize(dot_dtype(pattern))
    s.tile("m", PowerOfTwo("BLOCK_M", 16, 256, default=64))
    s.tile("n", PowerOfTwo("BLOCK_N", 16, 256, default=64))
    s.tile("k", PowerOfTwo("BLOCK_K", 16, 128, default=32))
    s.bind("m", "block.x").bind("n", "block.x").bind("batch", "block.y")
    s.reorder("m", "n")
    s.swizzle("m", Choice("GROUP_M", (1, 4, 8), default=8))
    s.vectorize("n").vectorize("k")
    s.pipeline("k", Choice("num_stages", (1, 2, 3, 4, 5), default=3))
    s.num_warps(Choice("num_warps", (2, 4, 8), default=4))
    for name, extent in (("BLOCK_M", m), ("BLOCK_N", n), ("BLOCK_K", k)):
        s.constrain(*_no_larger_than_axis(name, extent, floor=16))
    s.constrain(
        "shared memory fits",
        lambda cfg: None
        if (need := cfg["num_stages"] * (cfg["BLOCK_M"] + cfg["BLOCK_N"]) * cfg["BLOCK_K"] * item) <= MAX_SHARED_BYTES
        else f"{cfg['num_stages']} stages of {cfg['BLOCK_M']}x{cfg['BLOCK_K']} and {cfg['BLOCK_K']}x{cfg['BLOCK_N']} "
        f"tiles need {need} bytes, over {MAX_SHARED_BYTES}",
    )
    s.constrain(
        "accumulator fits registers",
        lambda cfg: None
        if (regs := cfg["BLOCK_M"] * cfg["BLOCK_N"] // (32 * cfg["num_warps"])) <= 256
        else f"a {cfg['BLOCK_M']}x{cfg['BLOCK_N']} fp32 accumulator over {cfg['num_warps']} warps "
        f"needs {regs} registers per thread, over 256",
    )


def _rows(s: Schedule, graph: Graph, pattern: Pattern, dims: Mapping[str, int]) -> None:
    layout = row_layout(graph, pattern)
    lane = evaluate_extent(layout.lane_extent, dims) if layout.lane_extent is not None else 1
    rows = math.prod(evaluate_extent(a.extent, dims) for a in layout.rows)
    if pattern.op_class is OpClass.REDUCTION:
        block_lane = next_pow2(lane)
        if block_lane > MAX_LANE:
            raise LoweringError(
                f"{graph.name}: rows of {lane} elements do not fit one block (at most {MAX_LANE}); "
                "looped reductions over longer rows are not supported yet"
            )
        s.tile("lane", block_lane)
        max_rows = max(1, min(64, MAX_ROW_TILE // block_lane))
        default_rows = max(1, min(max_rows, 2048 // block_lane, next_pow2(rows)))
        s.tile("rows", PowerOfTwo("BLOCK_ROWS", 1, max_rows, default=default_rows))
    else:
        s.tile("lane", PowerOfTwo("BLOCK_LANE", 16, 4096, default=min(1024, max(16, next_pow2(lane)))))
        s.tile("rows", PowerOfTwo("BLOCK_ROWS", 1, 64, default=1))
        s.constrain(*_no_larger_than_axis("BLOCK_LANE", lane, floor=16))
        s.constrain(
            "tile fits registers",
            lambda cfg: None
            if cfg["BLOCK_ROWS"] * cfg["BLOCK_LANE"] <= MAX_ROW_TILE
            else f"{cfg['BLOCK_ROWS']}x{cfg['BLOCK_LANE']} elements per program, over {MAX_ROW_TILE}",
        )
    s.constrain(*_no_larger_than_axis("BLOCK_ROWS", rows, floor=1))
    s.bind("rows", "block.x").vectorize("lane")
    s.num_warps(Choice("num_warps", (1, 2, 4, 8, 16), default=4))


# A window up to this many points is unrolled by default (tl.static_range); larger ones loop.
MAX_UNROLLED_WINDOW = 64
# Output elements of one window-kernel tile: each holds an fp32 accumulator per window stage
# and the values loaded for it, so tiles are smaller than an injective kernel's.
MAX_WINDOW_TILE = 8192


def _window(s: Schedule, graph: Graph, pattern: Pattern, dims: Mapping[str, int]) -> None:
    layout = window_layout(graph, pattern)
    lane = evaluate_extent(layout.lane_extent, dims)
    rows = math.prod(evaluate_extent(a.extent, dims) for a in layout.rows)
    points = max(math.prod(int(a.extent.value) for a in t.reduction.axes) for t in pattern.anchors)
    accumulators = len(pattern.anchors)
    default_lane = min(128, max(16, next_pow2(lane)))
    s.tile("lane", PowerOfTwo("BLOCK_LANE", 16, 1024, default=default_lane))
    s.tile("rows", PowerOfTwo("BLOCK_ROWS", 1, 64, default=max(1, min(64, 1024 // default_lane, next_pow2(rows)))))
    s.unroll("window", Boolean("UNROLL_WINDOW", default=points <= MAX_UNROLLED_WINDOW))
    s.constrain(*_no_larger_than_axis("BLOCK_LANE", lane, floor=16))
    s.constrain(*_no_larger_than_axis("BLOCK_ROWS", rows, floor=1))
    s.constrain(
        "tile fits registers",
        lambda cfg: None
        if cfg["BLOCK_ROWS"] * cfg["BLOCK_LANE"] * accumulators <= MAX_WINDOW_TILE
        else f"{cfg['BLOCK_ROWS']}x{cfg['BLOCK_LANE']} outputs x {accumulators} accumulators per program, "
        f"over {MAX_WINDOW_TILE}",
    )
    s.constrain(
        "unrolled window is small",
        lambda cfg: None
        if not cfg["UNROLL_WINDOW"] or points <= MAX_UNROLLED_WINDOW
        else f"a window of {points} points unrolled, over {MAX_UNROLLED_WINDOW}: loop over it instead",
    )
    s.bind("rows", "block.x").vectorize("lane")
    s.num_warps(Choice("num_warps", (1, 2, 4, 8), default=4))


def _no_larger_than_axis(knob: str, extent: int, floor: int):
    limit = max(floor, next_pow2(extent))
    return (
        f"{knob} no larger than its axis needs",
        lambda cfg: None if cfg[knob] <= limit else f"{knob}={cfg[knob]} tiles an axis of {extent} (at most {limit})",
    )


def default_config(graph: Graph, dims: Mapping[str, int]) -> Config:
    """The default config of the automatic schedule: a safe choice when nothing is tuned."""
    return default_schedule(graph, dims).space().default()
