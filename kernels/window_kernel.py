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

from tiletune.errors import LoweringError
from tiletune.kernels.emit import REDUCE_IDENTITY, TL_DTYPES, TileEmitter, Value, ident
from tiletune.kernels.kernel import KernelContext, KernelSource, check_bindings, py_extent
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import inline_injective, window_layout
from tiletune.tensorexpr.expr import Read, substitute

_COMBINE = {"sum": "{acc} + {v}", "max": "tl.maximum({acc}, {v})", "min": "tl.minimum({acc}, {v})"}


def lower_window(k: KernelContext) -> KernelSource:
    graph, s, pattern = k.graph, k.schedule, k.pattern
    k.check_fusion()
    check_bindings(graph.name, s, {"rows": "block.x", "lane": "block.x"})
    layout = window_layout(graph, pattern)
    block_rows, block_lane = s.tile("rows"), s.tile("lane")
    unrolled = bool(s.unroll.get("window", 1))
    k.constexprs.update(BLOCK_ROWS=block_rows, BLOCK_LANE=block_lane)
    b = k.body
    rows_total = py_extent(k, layout.rows)
    lane_extent = k.extent(layout.lane_extent)

    em = k.rows_lane_tile(rows_total, lane_extent, whole_row=False, contiguous="lane" in s.vectorized)
    # the fused rows unflatten into the output's outer axes (last one fastest)
    for axis, name in k.unflatten(layout.rows, "offs_rows").items():
        em.axes[axis] = Value(em.expand(name, 0), frozenset({0}), "int32")
    em.axes[layout.lane] = Value(em.expand("offs_lane", 1), frozenset({1}), "int32")

    windows = frozenset(pattern.anchors)

    def nested(read: Read, emitter: TileEmitter) -> Value | None:
        if read.tensor in windows:
            raise LoweringError(
                f"{graph.name}: windowed stage '{read.tensor.name}' is read inside another window; "
                "one kernel reduces one level of windows: split the operator in two"
            )
        return None

    def resolve(read: Read, emitter: TileEmitter) -> Value | None:
        t = read.tensor
        if t not in windows:
            return None
        red = t.reduction
        body = inline_injective(substitute(red.body, dict(zip(t.op.axes, read.indices))), windows)
        floating = dt.is_float(red.dtype)
        acc_type = "float32" if floating else dt.strong(red.dtype)
        identity = REDUCE_IDENTITY[red.op] if floating else _int_identity(red.op, acc_type)
        acc = b.assign(f"{ident(t.name)}_acc", f"tl.full((BLOCK_ROWS, BLOCK_LANE), {identity}, {TL_DTYPES[acc_type]})")
        loop = "tl.static_range" if unrolled else "range"
        inner_axes = dict(emitter.axes)
        outer_indent = b.indent
        for axis in red.axes:
            var = b.fresh(ident(axis.name))
            b.line(f"for {var} in {loop}({int(axis.extent.value)}):")
            b.indent += 1
            inner_axes[axis] = Value(var, frozenset(), "int32")
        # a fresh emitter: values that depend on the window point must be computed inside the
        # loop, and nothing computed there may be reused after it
        inner = TileEmitter(b, emitter.dims, inner_axes, k.args, k.extent, resolve=nested)
        v = inner.value(body)
        if floating:
            v = inner.as_float32(v)
        b.line(f"{acc} = {_COMBINE[red.op].format(acc=acc, v=v.code)}")
        b.indent = outer_indent
        return Value(acc, frozenset({0, 1}), acc_type)

    em.resolve = resolve
    out = graph.output
    if out in windows:
        value = resolve(Read(out, out.op.axes, out.dtype), em)
    else:
        value = em.value(inline_injective(out.op.body, windows))
    k.store(em, value)
    grid = [f"triton.cdiv({py_extent(k, layout.rows)}, {block_rows}) * triton.cdiv({lane_extent}, {block_lane})"]
    return k.finish(f"{ident(graph.name)}_kernel", grid)


def _int_identity(op: str, dtype: str) -> str:
    # an integer accumulator keeps its type: a float identity would turn the tile into floats
    bits = 8 * dt.itemsize(dtype)
    return {"sum": "0", "max": str(-(1 << (bits - 1))), "min": str((1 << (bits - 1)) - 1)}[op]
