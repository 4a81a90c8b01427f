"""The row kernel: injective operators and row reductions.

Each program owns a tile of `BLOCK_ROWS` fused outer rows by `BLOCK_LANE` elements of the lane
axis; row reductions are computed on the tile (the whole row fits one block) and consumed in
registers by the stages after them, so softmax, layernorm and rmsnorm are one kernel.
"""
from __future__ import annotations

from tiletune.errors import LoweringError
from tiletune.kernels.emit import REDUCE_FN, REDUCE_IDENTITY, TileEmitter, Value, ident
from tiletune.kernels.kernel import KernelContext, KernelSource, check_bindings, py_extent
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import OpClass, inline_injective, row_layout
from tiletune.tensorexpr.expr import Read, substitute


def lower_rows(k: KernelContext) -> KernelSource:
    graph, s, pattern = k.graph, k.schedule, k.pattern
    k.check_fusion()
    check_bindings(graph.name, s, {"rows": "block.x", "lane": "block.x"})
    layout = row_layout(graph, pattern)
    block_rows, block_lane = s.tile("rows"), s.tile("lane")
    k.constexprs.update(BLOCK_ROWS=block_rows, BLOCK_LANE=block_lane)
    b = k.body
    rows_total = " * ".join(k.extent(a.extent) for a in layout.rows) or "1"
    lane_extent = k.extent(layout.lane_extent) if layout.lane_extent is not None else "1"
    reduction = pattern.op_class is OpClass.REDUCTION

    em = k.rows_lane_tile(rows_total, lane_extent, whole_row=reduction,
                          contiguous="lane" in s.vectorized and not reduction)
    # the fused rows unflatten into the output's outer axes (last one fastest)
    for axis, name in k.unflatten(layout.rows, "offs_rows").items():
        em.axes[axis] = Value(em.expand(name, 0), frozenset({0}), "int32")
    lane_value = Value(em.expand("offs_lane", 1), frozenset({1}), "int32")
    if layout.lane is not None:
        em.axes[layout.lane] = lane_value
    for axis in layout.reduce_axes:
        em.axes[axis] = lane_value

    anchors = set(pattern.reductions)

    def resolve(read: Read, emitter: TileEmitter) -> Value | None:
        t = read.tensor
        if t not in anchors:
            return None
        red = t.reduction
        body = substitute(red.body, dict(zip(t.op.axes, read.indices)))
        body = inline_injective(body, frozenset(anchors))
        v = emitter.value(body)
        if 1 in {d for i in read.indices for d in emitter.value(i).dims}:
            raise LoweringError(f"{graph.name}: stage '{t.name}' is read along the reduced axis; it must be read per row")
        floating = red.dtype.startswith(("float", "bfloat"))
        vf = emitter.as_float32(v) if floating else v
        identity = REDUCE_IDENTITY[red.op] if floating else _int_identity(red.op, red.dtype)
        masked = b.assign(f"{ident(t.name)}_in", f"tl.where({emitter.full_mask()}, {vf.code}, {identity})")
        out = b.assign(ident(t.name), f"{REDUCE_FN[red.op]}({masked}, axis=1, keep_dims=True)")
        return Value(out, frozenset({0}), vf.dtype)

    em.resolve = resolve
    out = graph.output
    out_read = Read(out, out.op.axes, out.dtype)
    if out in anchors:
        value = resolve(out_read, em)
    else:
        value = em.value(inline_injective(out.op.body, frozenset(anchors)))
    k.store(em, value)
    if reduction:
        grid = [f"triton.cdiv({py_extent(k, layout.rows)}, {block_rows})"]
    else:
        grid = [f"triton.cdiv({py_extent(k, layout.rows)}, {block_rows}) * triton.cdiv({lane_extent}, {block_lane})"]
    return k.finish(f"{ident(graph.name)}_kernel", grid)


def _int_identity(op: str, dtype: str) -> str:
    """The identity of an integer reduction, in its own type: a float identity (0.0, -inf)
    would turn the tile into floats, which integer `//` and `%` then refuse."""
    bits = 8 * dt.itemsize(dtype)
    return {"sum": "0", "max": str(-(1 << (bits - 1))), "min": str((1 << (bits - 1)) - 1)}[op]


