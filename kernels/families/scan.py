"""The scan family: inclusive scans (`te.cumsum`, `cumprod`, `cummax`, `cummin`) along one axis.

Each program owns `BLOCK_ROWS` rows (the output's other axes, fused) and walks the scanned axis
in chunks of `BLOCK_SCAN`: each chunk is scanned on the tile with `tl.cumsum`/`tl.cumprod`/
`tl.associative_scan`, combined with the running total of the chunks before it, stored, and its
own total folded into that running total. A row that fits one chunk runs the loop once; a longer
one costs one pass over its elements, never a quadratic loop. Elementwise producers are inlined
into the scanned values and elementwise consumers are computed on the scanned tile.

When the scanned axis is the output's innermost one the tile is `[BLOCK_ROWS, BLOCK_SCAN]`
(chunks are contiguous in memory); otherwise it is `[BLOCK_SCAN, BLOCK_ROWS]`, so that the
rows, whose last axis is then the innermost one, are the contiguous dimension of the loads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from tiletune.errors import LoweringError
from tiletune.kernels.emit import TL_DTYPES, CodeBuilder, Dim, TileEmitter, Value, converted, ident
from tiletune.kernels.facts import TileFacts, arithmetic, unique_bytes
from tiletune.kernels.families.family import Family, shrink
from tiletune.kernels.families.pattern import Pattern
from tiletune.kernels.grid import Extent, Grid, Tiles, cdiv
from tiletune.kernels.kernel import KernelContext, KernelSource, check_bindings, py_extent
from tiletune.kernels.syntax import combine, int_identity
from tiletune.schedules.knobs import Choice, PowerOfTwo
from tiletune.schedules.limits import next_pow2, no_larger_than_axis, tile_at_most
from tiletune.schedules.schedule import ResolvedSchedule, Schedule
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import OpClass, inline_injective
from tiletune.tensorexpr.expr import DimVar, IterVar, Read, ScanOp, describe
from tiletune.tensorexpr.operator import Graph, evaluate_extent
from tiletune.tensorexpr.tensor import Tensor

# Elements of one scan chunk's tile: half a row kernel's, for the chunk and its scanned copy.
MAX_SCAN_TILE = 32768 // 2


@dataclass(frozen=True, slots=True, eq=False)
class ScanLayout:
    """How a scan operator maps onto a tile: the output axis the scan runs along (`scan`,
    at position `position`) and the other output axes (`rows`, fused into one)."""

    stage: Tensor
    scan: IterVar
    position: int
    rows: tuple[IterVar, ...]


def scan_layout(graph: Graph, pattern: Pattern) -> ScanLayout:
    """The rows/scan layout of a scan operator. The output must have the scan stage's shape
    (it is the scan, or an elementwise consumer of it), so that its axis at the scanned position
    runs along the scan."""
    (stage,) = pattern.anchors
    out = graph.output
    position = next(n for n, a in enumerate(stage.op.axes) if a is stage.scan.axis)
    if out is not stage and tuple(out.shape) != tuple(stage.shape):
        raise LoweringError(
            f"{graph.name}: the output '{out.name}' has a different shape from the scan stage "
            f"'{stage.name}'; a scan's consumers must be elementwise over its whole shape"
        )
    axes = out.op.axes
    return ScanLayout(stage, axes[position], position, axes[:position] + axes[position + 1:])



class ScanFamily(Family):
    """Inclusive scans along one axis: rows of programs walking the scanned axis in chunks."""

    name = "scan"
    serves = frozenset({OpClass.SCAN})
    roles = ("rows", "scan")

    def __init__(self, graph: Graph, pattern: Pattern) -> None:
        super().__init__(graph, pattern)
        self.layout = scan_layout(graph, pattern)

    def role_of(self, axis: IterVar) -> str | None:
        layout = self.layout
        if axis is layout.scan or axis is layout.stage.scan.axis:
            return "scan"
        if axis in layout.rows or axis in layout.stage.op.axes:
            return "rows"
        return super().role_of(axis)

    def add_knobs(self, schedule: Schedule, dims: Mapping[str, int]) -> None:
        # Each program scans BLOCK_ROWS rows in chunks of BLOCK_SCAN, carrying the running total
        # from chunk to chunk: one chunk when the row fits, a loop otherwise (never quadratic).
        layout = self.layout
        length = evaluate_extent(layout.scan.extent, dims)
        rows = math.prod(evaluate_extent(a.extent, dims) for a in layout.rows)
        block_scan = min(1024, max(16, next_pow2(length)))
        schedule.tile("scan", PowerOfTwo("BLOCK_SCAN", 16, 4096, default=block_scan))
        default_rows = max(1, min(64, 2048 // block_scan, next_pow2(rows)))
        schedule.tile("rows", PowerOfTwo("BLOCK_ROWS", 1, 64, default=default_rows))
        schedule.constrain(*no_larger_than_axis("BLOCK_SCAN", length, floor=16))
        schedule.constrain(*no_larger_than_axis("BLOCK_ROWS", rows, floor=1))
        schedule.constrain(*tile_at_most(("BLOCK_ROWS", "BLOCK_SCAN"), MAX_SCAN_TILE, "chunk"))
        schedule.bind("rows", "block.x")
        schedule.num_warps(Choice("num_warps", (1, 2, 4, 8, 16), default=4))

    def grid(self, schedule: ResolvedSchedule) -> Grid:
        return Grid((Tiles(Extent(tuple(a.extent for a in self.layout.rows)), schedule.tile("rows")),))

    def emit(self, kernel: KernelContext, for_interpreter: bool) -> KernelSource:
        return lower_scan(kernel, self.grid(kernel.schedule))

    def facts(self, schedule: ResolvedSchedule, dims: Mapping[str, int]) -> TileFacts:
        """A scan program walks its BLOCK_ROWS rows in chunks of BLOCK_SCAN (`k_iterations` of
        them): per element the fused elementwise work, plus about log2(BLOCK_SCAN) combines for
        the tree scan and two for the carry and the chunk's total."""
        layout = self.layout
        rows = math.prod(evaluate_extent(a.extent, dims) for a in layout.rows)
        length = evaluate_extent(layout.scan.extent, dims)
        br, bs = schedule.tile("rows"), schedule.tile("scan")
        chunks = cdiv(length, bs)
        programs = self.grid(schedule).programs(dims, None)
        padded = programs * br * chunks * bs
        keep = frozenset(self.pattern.anchors)
        ops = arithmetic(inline_injective(self.graph.output.op.body, keep))
        ops += arithmetic(inline_injective(layout.stage.scan.body, keep))
        per_element = ops + max(1, bs.bit_length() - 1) + 2
        total_unique = unique_bytes(self.graph, dims)
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

    def verification_dims(self, dims: Mapping[str, int], schedule: ResolvedSchedule) -> dict[str, int]:
        """Rows just over two row tiles, and a scanned axis just over two chunks: the carry
        across chunks and a masked tail run."""
        tiles: dict[str, int] = {}
        for axis in self.layout.rows:
            if isinstance(axis.extent, DimVar):
                tiles.setdefault(axis.extent.name, schedule.tile("rows"))
        if isinstance(self.layout.scan.extent, DimVar):
            tiles[self.layout.scan.extent.name] = schedule.tile("scan")
        return shrink(dims, tiles)


# per combine: the scan of a chunk, the chunk's total, the module-level combine function they
# need (None: Triton has the scan built in) and the float identity
SCAN: dict[ScanOp, str] = {
    ScanOp.SUM: "tl.cumsum({x}, axis={axis})",
    ScanOp.PROD: "tl.cumprod({x}, axis={axis})",
    ScanOp.MAX: "tl.associative_scan({x}, {axis}, _scan_max)",
    ScanOp.MIN: "tl.associative_scan({x}, {axis}, _scan_min)",
}
TOTAL: dict[ScanOp, str] = {
    ScanOp.SUM: "tl.sum({x}, axis={axis}, keep_dims=True)",
    ScanOp.PROD: "tl.reduce({x}, {axis}, _scan_mul, keep_dims=True)",
    ScanOp.MAX: "tl.max({x}, axis={axis}, keep_dims=True)",
    ScanOp.MIN: "tl.min({x}, axis={axis}, keep_dims=True)",
}
HELPERS: dict[ScanOp, str | None] = {
    ScanOp.SUM: None,
    ScanOp.PROD: "@triton.jit\ndef _scan_mul(a, b):\n    return a * b",
    ScanOp.MAX: "@triton.jit\ndef _scan_max(a, b):\n    return tl.maximum(a, b)",
    ScanOp.MIN: "@triton.jit\ndef _scan_min(a, b):\n    return tl.minimum(a, b)",
}
FLOAT_IDENTITY: dict[ScanOp, str] = {
    ScanOp.SUM: "0.0", ScanOp.PROD: "1.0", ScanOp.MAX: 'float("-inf")', ScanOp.MIN: 'float("inf")',
}


def lower_scan(kernel: KernelContext, grid: Grid) -> KernelSource:
    """The scan kernel of the operator under `kernel`'s schedule, launched over `grid`."""
    graph, schedule = kernel.graph, kernel.schedule
    kernel.check_fusion()
    check_bindings(graph.name, schedule, {"rows": "block.x"})
    layout = scan_layout(graph, kernel.pattern)
    stage, scan, out = layout.stage, layout.stage.scan, graph.output
    kernel.constexprs.update(BLOCK_ROWS=schedule.tile("rows"), BLOCK_SCAN=schedule.tile("scan"))
    if HELPERS[scan.op] is not None:
        kernel.helpers.append(HELPERS[scan.op])
    # fp32 accumulation for every float type (the reference scans in float64)
    acc_dtype = "float32" if dt.is_float(scan.dtype) else ("int64" if scan.dtype == "int64" else "int32")
    identity = FLOAT_IDENTITY[scan.op] if dt.is_float(scan.dtype) else int_identity(scan.op, acc_dtype)
    scan_dim = 1 if layout.position == len(out.op.axes) - 1 else 0
    emitter = _scan_tile(kernel, layout, scan_dim)
    _open_chunk_loop(kernel.body, scan.op, scan_dim, identity, acc_dtype)
    scanned: list[Value] = []

    def resolve(read: Read, emitter: TileEmitter) -> Value | None:
        if read.tensor is not stage:
            return None
        for own, index in zip(stage.op.axes, read.indices):
            if emitter.value(index) != emitter.axes[own]:
                raise LoweringError(
                    f"{graph.name}: stage '{stage.name}' is read as {describe(read)}; a scan's consumers must "
                    "read it at the element they compute (no shifted, reversed or broadcast reads)"
                )
        if not scanned:
            scanned.append(_scan_chunk(kernel.body, emitter, stage, scan_dim, identity, acc_dtype))
        return scanned[0]

    emitter.resolve = resolve
    if out is stage:
        value = resolve(Read(out, out.op.axes, out.dtype), emitter)
    else:
        value = emitter.computed(out, frozenset({stage}))
    kernel.store(emitter, value)
    kernel.body.indent -= 1
    return kernel.finish(f"{ident(graph.name)}_kernel", grid.code(kernel))


def _scan_tile(kernel: KernelContext, layout: ScanLayout, scan_dim: int) -> TileEmitter:
    """This program's rows, and an emitter over the `rows x scan` tile (`scan x rows` when
    `scan_dim` is 0) whose axes are the output's and the scan stage's."""
    body, out = kernel.body, kernel.graph.output
    rows_dim = 1 - scan_dim
    body.reserve("BLOCK_SCAN", "start", "carry", "offs_scan", "mask_scan")
    body.line(f"n_rows = {py_extent(kernel, layout.rows)}")
    body.line(f"n_scan = {kernel.extent(layout.scan.extent)}")
    body.line("pid_rows = tl.program_id(0)")
    body.line("offs_rows = pid_rows * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)")
    body.line("mask_rows = offs_rows < n_rows")
    dims = [Dim("rows", "offs_rows", "mask_rows"), Dim("scan", "offs_scan", "mask_scan")]
    if scan_dim == 0:
        dims.reverse()
    emitter = TileEmitter(body, dims, {}, kernel.args, kernel.extent)
    # the fused rows unflatten into the output's other axes (last one fastest)
    for axis, name in kernel.unflatten(layout.rows, "offs_rows").items():
        emitter.axes[axis] = Value(emitter.expand(name, rows_dim), frozenset({rows_dim}), "int32")
    emitter.axes[layout.scan] = Value(emitter.expand("offs_scan", scan_dim), frozenset({scan_dim}), "int32")
    # the scan stage's axes run with the output's, position by position
    for own, outer in zip(layout.stage.op.axes, out.op.axes):
        emitter.axes[own] = emitter.axes[outer]
    return emitter


def _open_chunk_loop(body: CodeBuilder, op: ScanOp, scan_dim: int, identity: str, acc_dtype: str) -> None:
    """The running total of each row (`carry`), and the loop over the chunks of the rows."""
    carry_shape = "(BLOCK_ROWS, 1)" if scan_dim == 1 else "(1, BLOCK_ROWS)"
    body.line(f"# the running {op} of the chunks already stored, per row")
    body.line(f"carry = tl.full({carry_shape}, {identity}, {TL_DTYPES[acc_dtype]})")
    body.line("for start in range(0, n_scan, BLOCK_SCAN):")
    body.indent += 1
    body.line("offs_scan = start + tl.arange(0, BLOCK_SCAN)")
    body.line("mask_scan = offs_scan < n_scan")


def _scan_chunk(body: CodeBuilder, emitter: TileEmitter, stage: Tensor, scan_dim: int, identity: str,
                acc_dtype: str) -> Value:
    """The scan of this chunk of the rows, combined with the carry, and the carry updated."""
    scan = stage.scan
    v = emitter.value(emitter.inlined(scan.body, frozenset({stage})), within=stage.name)
    if dt.is_float(scan.dtype):
        v = emitter.as_float32(v)
    elif v.dtype != acc_dtype:
        v = converted(v, acc_dtype)
    name = ident(stage.name)
    # positions past the row's end and rows past the last hold the identity, so that they
    # change neither the scan nor the chunk's total
    chunk = body.assign(f"{name}_in", f"tl.where({emitter.full_mask()}, {v.code}, {identity})")
    local = body.assign(f"{name}_chunk", SCAN[scan.op].format(x=chunk, axis=scan_dim))
    value = body.assign(name, combine(scan.op, "carry", local))
    body.line("carry = " + combine(scan.op, "carry", TOTAL[scan.op].format(x=chunk, axis=scan_dim)))
    return Value(value, frozenset({0, 1}), acc_dtype)
