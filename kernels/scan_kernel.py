"""The scan kernel: inclusive scans (`te.cumsum`, `cumprod`, `cummax`, `cummin`) along one axis.

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

from tiletune.errors import LoweringError
from tiletune.kernels.emit import TL_DTYPES, Dim, TileEmitter, Value, converted, ident
from tiletune.kernels.kernel import KernelContext, KernelSource, check_bindings, py_extent
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import inline_injective, scan_layout
from tiletune.tensorexpr.expr import Read, describe

# The chunk's scan, and how the running total of earlier chunks combines with it.
_SCAN = {
    "sum": "tl.cumsum({x}, axis={axis})",
    "prod": "tl.cumprod({x}, axis={axis})",
    "max": "tl.associative_scan({x}, {axis}, _scan_max)",
    "min": "tl.associative_scan({x}, {axis}, _scan_min)",
}
_TOTAL = {
    "sum": "tl.sum({x}, axis={axis}, keep_dims=True)",
    "prod": "tl.reduce({x}, {axis}, _scan_mul, keep_dims=True)",
    "max": "tl.max({x}, axis={axis}, keep_dims=True)",
    "min": "tl.min({x}, axis={axis}, keep_dims=True)",
}
_COMBINE = {"sum": "{a} + {b}", "prod": "{a} * {b}", "max": "tl.maximum({a}, {b})", "min": "tl.minimum({a}, {b})"}
_HELPERS = {
    "max": "@triton.jit\ndef _scan_max(a, b):\n    return tl.maximum(a, b)",
    "min": "@triton.jit\ndef _scan_min(a, b):\n    return tl.minimum(a, b)",
    "prod": "@triton.jit\ndef _scan_mul(a, b):\n    return a * b",
}
_FLOAT_IDENTITY = {"sum": "0.0", "prod": "1.0", "max": 'float("-inf")', "min": 'float("inf")'}


def _int_identity(op: str, dtype: str) -> str:
    bits = 8 * dt.itemsize(dtype)
    return {"sum": "0", "prod": "1", "max": str(-(1 << (bits - 1))), "min": str((1 << (bits - 1)) - 1)}[op]


def lower_scan(k: KernelContext) -> KernelSource:
    """Triton source of a scan operator (op class SCAN) under its resolved schedule."""
    graph, s, pattern = k.graph, k.schedule, k.pattern
    k.check_fusion()
    check_bindings(graph.name, s, {"rows": "block.x"})
    layout = scan_layout(graph, pattern)
    stage, scan = layout.stage, layout.stage.scan
    out = graph.output
    block_rows, block_scan = s.tile("rows"), s.tile("scan")
    k.constexprs.update(BLOCK_ROWS=block_rows, BLOCK_SCAN=block_scan)
    if scan.op in _HELPERS:
        k.helpers.append(_HELPERS[scan.op])
    floating = dt.is_float(scan.dtype)
    # fp32 accumulation for every float type (the reference scans in float64)
    acc_dtype = "float32" if floating else ("int64" if scan.dtype == "int64" else "int32")
    identity = _FLOAT_IDENTITY[scan.op] if floating else _int_identity(scan.op, acc_dtype)
    scan_dim = 1 if layout.position == len(out.op.axes) - 1 else 0
    rows_dim = 1 - scan_dim

    b = k.body
    b.reserve("BLOCK_SCAN", "start", "carry", "offs_scan", "mask_scan")
    b.line(f"n_rows = {py_extent(k, layout.rows)}")
    b.line(f"n_scan = {k.extent(layout.scan.extent)}")
    b.line("pid_rows = tl.program_id(0)")
    b.line("offs_rows = pid_rows * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)")
    b.line("mask_rows = offs_rows < n_rows")
    dims = [Dim("rows", "offs_rows", "mask_rows"), Dim("scan", "offs_scan", "mask_scan")]
    if scan_dim == 0:
        dims.reverse()
    em = TileEmitter(b, dims, {}, k.args, k.extent)
    # the fused rows unflatten into the output's other axes (last one fastest)
    for axis, name in k.unflatten(layout.rows, "offs_rows").items():
        em.axes[axis] = Value(em.expand(name, rows_dim), frozenset({rows_dim}), "int32")
    em.axes[layout.scan] = Value(em.expand("offs_scan", scan_dim), frozenset({scan_dim}), "int32")
    # the scan stage's axes run with the output's, position by position
    for own, outer in zip(stage.op.axes, out.op.axes):
        em.axes[own] = em.axes[outer]

    carry_shape = "(BLOCK_ROWS, 1)" if scan_dim == 1 else "(1, BLOCK_ROWS)"
    b.line(f"# the running {scan.op} of the chunks already stored, per row")
    b.line(f"carry = tl.full({carry_shape}, {identity}, {TL_DTYPES[acc_dtype]})")
    b.line("for start in range(0, n_scan, BLOCK_SCAN):")
    b.indent += 1
    b.line("offs_scan = start + tl.arange(0, BLOCK_SCAN)")
    b.line("mask_scan = offs_scan < n_scan")

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
        if scanned:
            return scanned[0]
        v = emitter.value(inline_injective(scan.body, frozenset({stage})))
        if floating:
            v = emitter.as_float32(v)
        elif v.dtype != acc_dtype:
            v = Value(converted(v.code, v.dims, TL_DTYPES[acc_dtype]), v.dims, acc_dtype)
        name = ident(stage.name)
        # positions past the row's end and rows past the last hold the identity, so that they
        # change neither the scan nor the chunk's total
        chunk = b.assign(f"{name}_in", f"tl.where({emitter.full_mask()}, {v.code}, {identity})")
        local = b.assign(f"{name}_chunk", _SCAN[scan.op].format(x=chunk, axis=scan_dim))
        value = b.assign(name, _COMBINE[scan.op].format(a="carry", b=local))
        b.line("carry = " + _COMBINE[scan.op].format(a="carry", b=_TOTAL[scan.op].format(x=chunk, axis=scan_dim)))
        scanned.append(Value(value, frozenset({0, 1}), acc_dtype))
        return scanned[0]

    em.resolve = resolve
    if out is stage:
        value = resolve(Read(out, out.op.axes, out.dtype), em)
    else:
        value = em.value(inline_injective(out.op.body, frozenset({stage})))
    k.store(em, value)
    b.indent -= 1
    grid = [f"triton.cdiv({py_extent(k, layout.rows)}, {block_rows})"]
    return k.finish(f"{ident(graph.name)}_kernel", grid)
