"""Static facts about one launch of a generated kernel: how many programs, how much work and
memory traffic each does. They feed the simulated device and the cost model's features; they
need the workload's dims, not a GPU.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping

from tiletune.kernels.hopper import programs_per_sm
from tiletune.schedules.rules import NUM_SMS as H100_SMS
from tiletune.schedules.rules import TENSOR_CORE_DTYPES, attention_dot_dtype, dot_dtype
from tiletune.schedules.schedule import ResolvedSchedule
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import (
    OpClass,
    Pattern,
    analyse,
    inline_injective,
    row_layout,
    scan_layout,
    window_layout,
)
from tiletune.tensorexpr.expr import Binary, Read, Unary, walk
from tiletune.tensorexpr.operator import Graph, evaluate_extent
from tiletune.tensorexpr.reduce_layout import reduce_layout


@dataclass(frozen=True, slots=True)
class TileFacts:
    """Work and traffic of one launch, per program and in total."""

    programs: int
    flops_per_program: float
    bytes_per_program: float
    unique_bytes: float
    tile_m: int
    tile_n: int
    tile_k: int
    k_iterations: int
    uses_tensor_cores: bool
    dot_dtype: str
    tail_fraction: float  # share of the launched tile area that falls outside the output
    # Hopper knobs (0/1): a persistent grid looping over tiles, descriptor (TMA) loads, and a
    # warp-specialized main loop; 0 for kernels without them
    persistent: int = 0
    tma: int = 0
    warp_specialized: int = 0

    @property
    def intensity(self) -> float:
        """FLOPs per byte of traffic a program issues."""
        return self.flops_per_program / max(self.bytes_per_program, 1.0)

    def to_dict(self) -> dict[str, float]:
        """Plain numbers (bools as 0/1, the dot dtype left out) for features and records."""
        d = asdict(self)
        d.pop("dot_dtype")
        d["uses_tensor_cores"] = int(self.uses_tensor_cores)
        d["intensity"] = self.intensity
        return d


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def unique_bytes(graph: Graph, dims: Mapping[str, int]) -> float:
    """Compulsory traffic: every input read once and the output written once."""
    total = 0
    for t in (*graph.inputs, graph.output):
        total += math.prod(graph.shape_of(t, dims)) * dt.itemsize(t.dtype)
    return float(total)


def _ops_per_element(graph: Graph, pattern: Pattern) -> int:
    keep = frozenset(pattern.anchors)
    exprs = [inline_injective(graph.output.op.body, keep)]
    exprs += [inline_injective(s.reduction.body, keep) for s in pattern.reductions]
    return max(1, sum(1 for e in exprs for n in walk(e) if isinstance(n, (Binary, Unary)) and not _is_index(n)))


def _is_index(node) -> bool:
    return dt.is_int(node.dtype)


def tile_facts(graph: Graph, schedule: ResolvedSchedule, dims: Mapping[str, int],
               pattern: Pattern | None = None) -> TileFacts:
    """The facts of launching `graph` under `schedule` at `dims`."""
    pattern = pattern or analyse(graph)
    total_unique = unique_bytes(graph, dims)
    if pattern.op_class is OpClass.CONTRACTION:
        c = pattern.contraction
        m, n, k = (evaluate_extent(a.extent, dims) for a in (c.m, c.n, c.k))
        batch = math.prod(evaluate_extent(a.extent, dims) for a in c.batch)
        bm, bn, bk = schedule.tile("m"), schedule.tile("n"), schedule.tile("k")
        operand = dot_dtype(pattern)
        split = schedule.splits.get("k", 1)
        k_iters = _cdiv(_cdiv(k, bk), split)
        programs = _cdiv(m, bm) * _cdiv(n, bn) * batch * split
        item = dt.itemsize(operand)
        epilogue_reads = sum(
            dt.itemsize(r.tensor.dtype) * (bm * bn if len(r.indices) > 1 else max(bm, bn))
            for r in walk(graph.output.op.body) if isinstance(r, Read) and r.tensor.is_placeholder
        ) if graph.output is not c.stage else 0
        epilogue = epilogue_reads + bm * bn * dt.itemsize(graph.output.dtype)
        if split > 1:
            # each split program writes an fp32 partial tile, and the reduce kernel reads it back
            # and runs the epilogue once per output tile: its share of that is 1/SPLIT_K
            epilogue = 2 * bm * bn * 4 + epilogue / split
        traffic = (bm * bk + bk * bn) * item * k_iters + epilogue
        padded = _cdiv(m, bm) * bm * _cdiv(n, bn) * bn
        # a persistent program runs the busiest share of tiles back to back, its K loops
        # flattened into one pipelined loop
        tiles_per_program = 1
        if schedule.persistent:
            per_sm = programs_per_sm(bm, bn, bk, schedule.num_stages, schedule.num_warps, item)
            launched = min(programs, H100_SMS * per_sm)
            tiles_per_program, programs = _cdiv(programs, launched), launched
        return TileFacts(
            programs=programs,
            flops_per_program=2.0 * bm * bn * bk * k_iters * tiles_per_program,
            bytes_per_program=float(traffic * tiles_per_program),
            unique_bytes=total_unique,
            tile_m=bm, tile_n=bn, tile_k=bk, k_iterations=k_iters * tiles_per_program,
            uses_tensor_cores=operand in TENSOR_CORE_DTYPES,
            dot_dtype=operand,
            tail_fraction=1.0 - (m * n) / padded,
            persistent=int(schedule.persistent),
            tma=int(schedule.load == "tma"),
            warp_specialized=int("k" in schedule.warp_specialized),
        )
    if pattern.op_class is OpClass.SCAN:
        return _scan_facts(graph, schedule, dims, pattern, total_unique)
    if pattern.op_class is OpClass.ATTENTION:
        return _attention_facts(graph, schedule, dims, pattern, total_unique)
    if pattern.op_class is OpClass.REDUCTION and "red" in schedule.tiles:
        return _reduction_facts(graph, schedule, dims, pattern, total_unique)
    if pattern.op_class is OpClass.WINDOW:
        return _window_facts(graph, schedule, dims, pattern, total_unique)
    layout = row_layout(graph, pattern)
    rows = math.prod(evaluate_extent(a.extent, dims) for a in layout.rows)
    lane = evaluate_extent(layout.lane_extent, dims) if layout.lane_extent is not None else 1
    br, bl = schedule.tile("rows"), schedule.tile("lane")
    lane_tiles = 1 if pattern.op_class is OpClass.REDUCTION else _cdiv(lane, bl)
    programs = _cdiv(rows, br) * lane_tiles
    padded = _cdiv(rows, br) * br * lane_tiles * bl
    return TileFacts(
        programs=programs,
        flops_per_program=float(_ops_per_element(graph, pattern) * br * bl),
        bytes_per_program=total_unique / programs * (padded / max(rows * lane, 1)),
        unique_bytes=total_unique,
        tile_m=br, tile_n=bl, tile_k=0, k_iterations=1,
        uses_tensor_cores=False,
        dot_dtype="none",
        tail_fraction=1.0 - (rows * lane) / padded,
    )


def _scan_facts(graph: Graph, schedule: ResolvedSchedule, dims: Mapping[str, int], pattern: Pattern,
                total_unique: float) -> TileFacts:
    """A scan program walks its BLOCK_ROWS rows in chunks of BLOCK_SCAN (`k_iterations` of them):
    per element the fused elementwise work, plus about log2(BLOCK_SCAN) combines for the
    tree scan and two for the carry and the chunk's total."""
    layout = scan_layout(graph, pattern)
    rows = math.prod(evaluate_extent(a.extent, dims) for a in layout.rows)
    length = evaluate_extent(layout.scan.extent, dims)
    br, bs = schedule.tile("rows"), schedule.tile("scan")
    chunks = _cdiv(length, bs)
    programs = _cdiv(rows, br)
    padded = programs * br * chunks * bs
    keep = frozenset(pattern.anchors)
    stage = layout.stage
    exprs = [inline_injective(graph.output.op.body, keep), inline_injective(stage.scan.body, keep)]
    ops = sum(1 for e in exprs for n in walk(e) if isinstance(n, (Binary, Unary)) and not _is_index(n))
    per_element = ops + max(1, bs.bit_length() - 1) + 2
    return TileFacts(
        programs=programs,
        flops_per_program=float(per_element * br * bs * chunks),
        bytes_per_program=total_unique / programs * (padded / max(rows * length, 1)),
        unique_bytes=total_unique,
        tile_m=br, tile_n=bs, tile_k=0, k_iterations=chunks,
        uses_tensor_cores=False,
        dot_dtype="none",
        tail_fraction=1.0 - (rows * length) / padded,
    )


def _attention_facts(graph: Graph, schedule: ResolvedSchedule, dims: Mapping[str, int], pattern: Pattern,
                     total_unique: float) -> TileFacts:
    """One program per query block and batch index; per key block two dots (scores:
    2*BM*BN*D, values: 2*BM*BN*E flops) and one k and one v tile read. Causal programs stop at
    their diagonal, so they average fewer key blocks (about half the flops of the full square)."""
    a = pattern.attention
    sq, sk, d, e = (evaluate_extent(x.extent, dims) for x in (a.i, a.j, a.d, a.e))
    batch = math.prod(evaluate_extent(x.extent, dims) for x in a.batch)
    bm, bn, bd, be = schedule.tile("m"), schedule.tile("n"), schedule.tile("d"), schedule.tile("e")
    blocks_m = _cdiv(sq, bm)
    if a.causal:
        n_blocks = [_cdiv(min(sk, (pid + 1) * bm), bn) for pid in range(blocks_m)]
    else:
        n_blocks = [_cdiv(sk, bn)] * blocks_m
    iters = sum(n_blocks) / blocks_m
    operand = attention_dot_dtype(pattern)
    item = dt.itemsize(operand)
    traffic = bm * bd * item + iters * bn * (bd + be) * item + bm * be * dt.itemsize(graph.output.dtype)
    return TileFacts(
        programs=blocks_m * batch,
        flops_per_program=2.0 * bm * bn * (bd + be) * iters,
        bytes_per_program=float(traffic),
        unique_bytes=total_unique,
        tile_m=bm, tile_n=bn, tile_k=bd, k_iterations=max(1, round(iters)),
        uses_tensor_cores=operand in ("float16", "bfloat16"),
        dot_dtype=operand,
        tail_fraction=1.0 - sq / (blocks_m * bm),
    )


def _reduction_facts(graph: Graph, schedule: ResolvedSchedule, dims: Mapping[str, int], pattern: Pattern,
                     total_unique: float) -> TileFacts:
    """Facts of the looped reduction kernel: one program per row tile (times SPLIT) or per
    (row, lane tile); each pass over the reduce index reads the row again."""
    layout = reduce_layout(graph, pattern)
    red = layout.red_extent(dims)
    rows = math.prod(evaluate_extent(a.extent, dims) for a in layout.rows)
    block_red = schedule.tile("red")
    split = schedule.splits.get("red", 1)
    if layout.inner:
        br = schedule.tile("rows")
        programs = _cdiv(rows, br) * split
        tile_m, tile_n, padded = br, block_red, _cdiv(rows, br) * br * _cdiv(red, block_red) * block_red
        outputs = rows
    else:
        lane = evaluate_extent(layout.lane.extent, dims)
        bl = schedule.tile("lane")
        programs = rows * _cdiv(lane, bl)
        tile_m, tile_n, padded = block_red, bl, rows * _cdiv(lane, bl) * bl * _cdiv(red, block_red) * block_red
        outputs = rows * lane
    single = block_red >= red and split == 1
    # passes over the input: one per reduction loop (an online max/sum pair is one) and the
    # output's loop; a single-pass row stays in registers
    # (totals over rows are computed on the row values: no pass of their own)
    passes = 1 if single else len(pattern.reductions) - len(layout.totals) + (1 if layout.aligned else 0)
    k_iters = _cdiv(red, block_red * split)
    return TileFacts(
        programs=programs,
        flops_per_program=float(_ops_per_element(graph, pattern) * tile_m * tile_n * k_iters),
        bytes_per_program=total_unique * passes / programs * (padded / max(outputs * red, 1)),
        unique_bytes=total_unique,
        tile_m=tile_m, tile_n=tile_n, tile_k=block_red, k_iterations=k_iters,
        uses_tensor_cores=False,
        dot_dtype="none",
        tail_fraction=1.0 - (outputs * red) / max(padded, 1),
    )


def _window_facts(graph: Graph, schedule: ResolvedSchedule, dims: Mapping[str, int], pattern: Pattern,
                  total_unique: float) -> TileFacts:
    """A window kernel: programs over the output's tiles, each looping over the window points;
    per point it loads a tile of every input the window body reads (neighbouring points hit
    cache, so the DRAM traffic is about the compulsory traffic; the loads are what it issues)."""
    layout = window_layout(graph, pattern)
    rows = math.prod(evaluate_extent(a.extent, dims) for a in layout.rows)
    lane = evaluate_extent(layout.lane_extent, dims)
    br, bl = schedule.tile("rows"), schedule.tile("lane")
    programs = _cdiv(rows, br) * _cdiv(lane, bl)
    padded = programs * br * bl
    keep = frozenset(pattern.anchors)
    points = 0
    window_ops = 0
    for stage in pattern.anchors:
        n = math.prod(int(a.extent.value) for a in stage.reduction.axes)
        body = inline_injective(stage.reduction.body, keep)
        # one combine per point, plus the body's arithmetic
        window_ops += n * (1 + sum(1 for e in walk(body) if isinstance(e, (Binary, Unary)) and not _is_index(e)))
        points = max(points, n)
    epilogue = sum(1 for e in walk(inline_injective(graph.output.op.body, keep))
                   if isinstance(e, (Binary, Unary)) and not _is_index(e))
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
