"""Automatic schedules: one rule per op class derives the default schedule and its knobs.

The rules see the workload's concrete dims, so that constraints can say "a tile no larger than
the axis needs" and "shared memory fits the device" before anything is compiled.
"""
from __future__ import annotations

import math
from typing import Mapping

from tiletune.errors import LoweringError
from tiletune.schedules.config import Config
from tiletune.schedules.hopper_rules import TENSOR_CORE_DTYPES, add_hopper_knobs, extra_shared_bytes
from tiletune.schedules.knobs import Boolean, Choice, PowerOfTwo
from tiletune.schedules.limits import next_pow2, no_larger_than_axis
from tiletune.schedules.reduce_rules import reduction_schedule
from tiletune.schedules.schedule import Schedule
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import OpClass, Pattern, analyse, row_layout, scan_layout, window_layout
from tiletune.tensorexpr.expr import Cast, Read, walk
from tiletune.tensorexpr.operator import Graph, evaluate_extent
from tiletune.tensorexpr.reduce_layout import total_stages

# Hopper: 227 KiB of shared memory per block (228 KiB per SM, 1 KiB reserved by the driver).
MAX_SHARED_BYTES = 232448
# Largest row a single-pass reduction holds in one block.
MAX_LANE = 32768
# Elements of one row-kernel tile; beyond this a block's registers spill heavily.
MAX_ROW_TILE = 32768


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
    elif pattern.op_class is OpClass.SCAN:
        _scan(s, graph, pattern, dims)
    elif pattern.op_class is OpClass.ATTENTION:
        _attention(s, graph, pattern, dims)
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
    tensors of that one 16- or 8-bit type, else float32 (accumulation is always float32)."""
    c = pattern.contraction
    read_types = {n.tensor.dtype for f in (c.a, c.b) for n in walk(f) if isinstance(n, Read)}
    if len(read_types) == 1 and next(iter(read_types)) in TENSOR_CORE_DTYPES:
        return next(iter(read_types))
    # a prologue that casts both factors to one 16-bit type (fp32 inputs cast to fp16, a scaled
    # fp16 input cast back to fp16) feeds the tensor cores that type without losing a bit; fp8
    # factors widened to fp32 (to accumulate in it) are fed to the dot as the fp8 they are
    cast_types = {_cast_type(f) for f in (c.a, c.b)}
    if len(cast_types) == 1 and next(iter(cast_types)) in TENSOR_CORE_DTYPES:
        return next(iter(cast_types))
    return "float32"


# Float types that hold every value of a narrower one exactly.
_EXACT_WIDENING = {"float16": ("float32", "float64"), "bfloat16": ("float32", "float64"), "float32": ("float64",),
                   "float8_e4m3fn": ("float16", "bfloat16", "float32", "float64")}


def _cast_type(e) -> str | None:
    """The type every value of factor `e` is exact in: that of an outermost cast to a 16-bit
    float (only exact widenings outside it), or of a plain read; None for other expressions."""
    while isinstance(e, Cast):
        if e.dtype in ("float16", "bfloat16"):
            return e.dtype
        if e.dtype not in _EXACT_WIDENING.get(e.x.dtype, ()):
            return None
        e = e.x
    return e.tensor.dtype if isinstance(e, Read) else None


def _contraction(s: Schedule, graph: Graph, pattern: Pattern, dims: Mapping[str, int]) -> None:
    c = pattern.contraction
    if c.fused is not None and c.fused.group is not None:
        _check_groups(graph, c, dims)
    m, n, k = (evaluate_extent(a.extent, dims) for a in (c.m, c.n, c.k))
    batch = math.prod(evaluate_extent(a.extent, dims) for a in c.batch)
    item = dt.itemsize(dot_dtype(pattern))
    # defaults no larger than the axis needs (16 at least: tl.dot's smallest tile, masked), so a
    # tall-skinny or small-K workload keeps its long axis's default tile
    # tl.dot takes K tiles of 32 at least for 8-bit operands; their default K tile holds the
    # same bytes as a 16-bit one's
    min_k, cap_k = (32, 64) if item == 1 else (16, 32)
    default_m, default_n = (min(d, max(16, next_pow2(e))) for d, e in ((64, m), (64, n)))
    default_k = min(cap_k, max(min_k, next_pow2(k)))
    # an implicit GEMM's second (reduce + epilogue) kernel would need its fused index math too
    split = c.fused is None and _offers_split_k(m, n, k, batch)
    k_iters = -(-k // default_k)
    s.tile("m", PowerOfTwo("BLOCK_M", 16, 256, default=default_m))
    s.tile("n", PowerOfTwo("BLOCK_N", 16, 256, default=default_n))
    s.tile("k", PowerOfTwo("BLOCK_K", min_k, 128, default=default_k))
    s.bind("m", "block.x").bind("n", "block.x").bind("batch", "block.y")
    s.reorder("m", "n")
    s.swizzle("m", Choice("GROUP_M", (1, 4, 8), default=8))
    s.vectorize("n").vectorize("k")
    # a pipeline deeper than the K loop buffers nothing more: a short loop defaults shallower
    s.pipeline("k", Choice("num_stages", (1, 2, 3, 4, 5), default=min(3, k_iters + 1)))
    s.num_warps(Choice("num_warps", (2, 4, 8), default=4))
    if split:
        s.split_k("k", Choice("SPLIT_K", SPLIT_K_CHOICES, default=1))
    add_hopper_knobs(s, pattern, dims, split, dot_dtype(pattern))
    for name, extent, floor in (("BLOCK_M", m, 16), ("BLOCK_N", n, 16), ("BLOCK_K", k, min_k)):
        s.constrain(*no_larger_than_axis(name, extent, floor=floor))
    if split:
        s.constrain(
            "no more splits than K iterations",
            lambda cfg: None
            if cfg["SPLIT_K"] <= (iters := -(-k // cfg["BLOCK_K"]))
            else f"SPLIT_K={cfg['SPLIT_K']} splits a K loop of {iters} iterations",
        )
    s.constrain(
        "shared memory fits",
        lambda cfg: None
        if (need := cfg["num_stages"] * (cfg["BLOCK_M"] + cfg["BLOCK_N"]) * cfg["BLOCK_K"] * item
            + extra_shared_bytes(cfg)) <= MAX_SHARED_BYTES
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


def _check_groups(graph: Graph, c, dims: Mapping[str, int]) -> None:
    # programs cover group count x group size output channels: a remainder would go unwritten
    axis = c.fused.n_axis
    extent, groups = evaluate_extent(axis.extent, dims), evaluate_extent(c.fused.group.extent, dims)
    if extent % groups:
        raise LoweringError(
            f"{graph.name}: output axis '{axis.name}' has {extent} elements, not a multiple of its "
            f"{groups} groups; a grouped contraction needs each group the same size"
        )


# Head dims one attention program holds whole (q tile, accumulator), padded to a power of two.
MAX_HEAD_DIM = 256


def attention_dot_dtype(pattern: Pattern) -> str:
    """The operand type of both of attention's `tl.dot`s: the inputs' type when q, k and v
    share one 16-bit type, else float32 (scores, softmax and accumulator are always fp32)."""
    a = pattern.attention
    read_types = {n.tensor.dtype for f in (a.q, a.k, a.v) for n in walk(f) if isinstance(n, Read)}
    if len(read_types) == 1 and next(iter(read_types)) in ("float16", "bfloat16"):
        return next(iter(read_types))
    return "float32"


def _attention(s: Schedule, graph: Graph, pattern: Pattern, dims: Mapping[str, int]) -> None:
    a = pattern.attention
    sq, sk, d, e = (evaluate_extent(x.extent, dims) for x in (a.i, a.j, a.d, a.e))
    # tl.dot needs every tile dim >= 16; the head dims are masked up to a power of two
    block_d, block_e = max(16, next_pow2(d)), max(16, next_pow2(e))
    if max(block_d, block_e) > MAX_HEAD_DIM:
        raise LoweringError(
            f"{graph.name}: attention head dims {d} and {e} must be at most {MAX_HEAD_DIM}; one program "
            "holds a query tile and its accumulator whole over the head dim"
        )
    operand = attention_dot_dtype(pattern)
    item = dt.itemsize(operand)
    wide = operand == "float32"
    s.tile("d", block_d).tile("e", block_e)
    s.tile("m", PowerOfTwo("BLOCK_M", 16, 128, default=32 if wide else 64))
    s.tile("n", PowerOfTwo("BLOCK_N", 16, 128, default=32 if wide or block_d > 64 else 64))
    s.bind("m", "block.x").bind("batch", "block.y")
    s.vectorize("d").vectorize("e")
    s.pipeline("n", Choice("num_stages", (1, 2, 3, 4), default=2))
    heavy = block_d + block_e > 128 if wide else block_e > 128
    s.num_warps(Choice("num_warps", (2, 4, 8), default=8 if heavy else 4))
    s.constrain(*no_larger_than_axis("BLOCK_M", sq, floor=16))
    s.constrain(*no_larger_than_axis("BLOCK_N", sk, floor=16))
    s.constrain(
        "shared memory fits",
        lambda cfg: None
        if (need := (cfg["BLOCK_M"] * block_d + cfg["num_stages"] * cfg["BLOCK_N"] * (block_d + block_e)) * item)
        <= MAX_SHARED_BYTES
        else f"a {cfg['BLOCK_M']}x{block_d} query tile and {cfg['num_stages']} stages of {cfg['BLOCK_N']}-key "
        f"k and v tiles need {need} bytes, over {MAX_SHARED_BYTES}",
    )
    # fp32 elements per thread that stay live across the key loop, with limits read off sm_90
    # compiles: 16-bit tiles go through shared memory to the tensor cores, and the scores and
    # the accumulator spill past ~128; fp32 "ieee" dots run on FMAs with the query tile in
    # registers too, and spill past ~40.
    limit = 40 if wide else 128
    s.constrain(
        "scores and accumulator fit registers",
        lambda cfg: None
        if (regs := cfg["BLOCK_M"] * (cfg["BLOCK_N"] + block_e + (block_d if wide else 0)) // (32 * cfg["num_warps"]))
        <= limit
        else f"{cfg['BLOCK_M']}x{cfg['BLOCK_N']} scores and a {cfg['BLOCK_M']}x{block_e} accumulator"
        f"{' and query tile' if wide else ''} over {cfg['num_warps']} warps keep {regs} fp32 values per thread, "
        f"over {limit}",
    )


SPLIT_K_CHOICES = (1, 2, 4, 8, 16)
# Hopper's SMs: split-K pays when the output's tiles alone leave most of them idle.
NUM_SMS = 132


def _offers_split_k(m: int, n: int, k: int, batch: int) -> bool:
    """Whether SPLIT_K is worth a knob: K long (256 at least, and 4 times the output's mean side)
    while the output has too few 64x64 tiles to fill the GPU twice over."""
    tiles = -(-m // 64) * -(-n // 64) * batch
    return k >= 256 and k * k >= 16 * m * n and tiles < 2 * NUM_SMS


def _rows(s: Schedule, graph: Graph, pattern: Pattern, dims: Mapping[str, int]) -> None:
    if pattern.op_class is OpClass.REDUCTION:
        try:
            reduction_schedule(s, graph, pattern, dims)
            return
        except LoweringError:
            if total_stages(pattern):
                raise  # totals over rows: only the reduction kernel could hold them, so its reason
            # not one value per output row: the row kernel's single pass may still hold it
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
        s.constrain(*no_larger_than_axis("BLOCK_LANE", lane, floor=16))
        s.constrain(
            "tile fits registers",
            lambda cfg: None
            if cfg["BLOCK_ROWS"] * cfg["BLOCK_LANE"] <= MAX_ROW_TILE
            else f"{cfg['BLOCK_ROWS']}x{cfg['BLOCK_LANE']} elements per program, over {MAX_ROW_TILE}",
        )
    s.constrain(*no_larger_than_axis("BLOCK_ROWS", rows, floor=1))
    s.bind("rows", "block.x").vectorize("lane")
    s.num_warps(Choice("num_warps", (1, 2, 4, 8, 16), default=4))


def _scan(s: Schedule, graph: Graph, pattern: Pattern, dims: Mapping[str, int]) -> None:
    # Each program scans BLOCK_ROWS rows in chunks of BLOCK_SCAN, carrying the running total
    # from chunk to chunk: one chunk when the row fits, a loop otherwise (never quadratic).
    layout = scan_layout(graph, pattern)
    length = evaluate_extent(layout.scan.extent, dims)
    rows = math.prod(evaluate_extent(a.extent, dims) for a in layout.rows)
    block_scan = min(1024, max(16, next_pow2(length)))
    s.tile("scan", PowerOfTwo("BLOCK_SCAN", 16, 4096, default=block_scan))
    s.tile("rows", PowerOfTwo("BLOCK_ROWS", 1, 64, default=max(1, min(64, 2048 // block_scan, next_pow2(rows)))))
    s.constrain(*no_larger_than_axis("BLOCK_SCAN", length, floor=16))
    s.constrain(*no_larger_than_axis("BLOCK_ROWS", rows, floor=1))
    s.constrain(
        "tile fits registers",
        lambda cfg: None
        if cfg["BLOCK_ROWS"] * cfg["BLOCK_SCAN"] <= MAX_ROW_TILE // 2
        else f"{cfg['BLOCK_ROWS']}x{cfg['BLOCK_SCAN']} elements per chunk, over {MAX_ROW_TILE // 2}",
    )
    s.bind("rows", "block.x")
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
    s.constrain(*no_larger_than_axis("BLOCK_LANE", lane, floor=16))
    s.constrain(*no_larger_than_axis("BLOCK_ROWS", rows, floor=1))
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


def default_config(graph: Graph, dims: Mapping[str, int]) -> Config:
    """The default config of the automatic schedule: a safe choice when nothing is tuned."""
    return default_schedule(graph, dims).space().default()
