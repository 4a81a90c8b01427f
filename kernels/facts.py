"""Static facts about one launch of a generated kernel: how many programs, how much work and
memory traffic each does. They feed the simulated device and the cost model's features; they
need the workload's dims, not a GPU.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping

from tiletune.schedules.rules import dot_dtype
from tiletune.schedules.schedule import ResolvedSchedule
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import OpClass, Pattern, analyse, inline_injective, row_layout, window_layout
from tiletune.tensorexpr.expr import Binary, Read, Unary, walk
from tiletune.tensorexpr.operator import Graph, evaluate_extent


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
        k_iters = _cdiv(k, bk)
        programs = _cdiv(m, bm) * _cdiv(n, bn) * batch
        item = dt.itemsize(operand)
        epilogue_reads = sum(
            dt.itemsize(r.tensor.dtype) * (bm * bn if len(r.indices) > 1 else max(bm, bn))
            for r in walk(graph.output.op.body) if isinstance(r, Read) and r.tensor.is_placeholder
        ) if graph.output is not c.stage else 0
        traffic = (bm * bk + bk * bn) * item * k_iters + epilogue_reads + bm * bn * dt.itemsize(graph.output.dtype)
        padded = _cdiv(m, bm) * bm * _cdiv(n, bn) * bn
        return TileFacts(
            programs=programs,
            flops_per_program=2.0 * bm * bn * bk * k_iters,
            bytes_per_program=float(traffic),
            unique_bytes=total_unique,
            tile_m=bm, tile_n=bn, tile_k=bk, k_iterations=k_iters,
            uses_tensor_cores=operand in ("float16", "bfloat16"),
            dot_dtype=operand,
            tail_fraction=1.0 - (m * n) / padded,
        )
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
