"""The reference evaluator: runs any operator with torch on the CPU, the correctness oracle.

Numerics: float values are computed in float64 and rounded only where the program says so: at
an explicit `.astype(...)` and when the output is stored in its dtype. Intermediate stages stay
in float64, as a fused kernel keeps them in fp32 registers rather than storing them.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch

from tiletune.errors import DSLError
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.expr import (
    ARG_REDUCE_OPS,
    FLOAT_ONLY_UNARY,
    Binary,
    BinaryOp,
    Cast,
    Compare,
    CompareOp,
    Const,
    DimVar,
    Expr,
    IterVar,
    Logical,
    LogicalOp,
    Read,
    Reduce,
    ReduceOp,
    ScanOp,
    Select,
    Unary,
    UnaryOp,
)
from tiletune.tensorexpr.operator import Graph
from tiletune.tensorexpr.tensor import ComputeOp, Tensor

# Elements evaluated at once per stage (before reduction); bounds memory at large shapes.
CHUNK_ELEMENTS = 1 << 22

_TORCH_DTYPES = {
    "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64,
    "float8_e4m3fn": torch.float8_e4m3fn,
    "int8": torch.int8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool,
}


def torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a DSL dtype."""
    return _TORCH_DTYPES[dt.strong(dtype)]


def _compute_type(dtype: str) -> torch.dtype:
    if dt.is_float(dtype):
        return torch.float64
    if dt.is_int(dtype):
        return torch.int64
    return torch.bool


def evaluate(graph: Graph, inputs: Sequence[torch.Tensor], dims: Mapping[str, int] | None = None) -> torch.Tensor:
    """The operator's output for `inputs` (CPU torch tensors), in the output's dtype."""
    shapes = [tuple(x.shape) for x in inputs]
    if dims is None:
        bound = graph.bind(shapes)
    else:
        bound = graph.check_dims(dims)
        graph.check_shapes(shapes, bound)
    values: dict[Tensor, torch.Tensor] = {}
    for t, x in zip(graph.inputs, inputs):
        if dt.canonical(x.dtype) != t.dtype:
            raise DSLError(f"{graph.name}: input '{t.name}' has dtype {dt.canonical(x.dtype)}, expected {t.dtype}")
        values[t] = x.detach().to("cpu", _compute_type(t.dtype))
    for stage in graph.stages:
        values[stage] = _evaluate_stage(graph, stage, values, bound)
    return values[graph.output].to(torch_dtype(graph.output.dtype))


def _evaluate_stage(graph: Graph, stage: Tensor, values: dict, dims: Mapping[str, int]) -> torch.Tensor:
    if stage.scan is not None:
        return _evaluate_scan(graph, stage, values, dims)
    axes = stage.op.axes
    body = stage.op.body
    reduction = stage.reduction
    raxes = reduction.axes if reduction is not None else ()
    extents = [_extent(a, dims) for a in axes]
    rextents = [_extent(a, dims) for a in raxes]
    rank = len(axes) + len(raxes)
    per_row = math.prod(extents[1:]) * math.prod(rextents) if axes else 1
    chunk = max(1, CHUNK_ELEMENTS // max(per_row, 1))
    out = torch.empty(extents, dtype=_compute_type(stage.dtype))
    rows = extents[0] if axes else 1
    for start in range(0, rows, chunk):
        stop = min(rows, start + chunk)
        env: dict[Expr, object] = {}
        for pos, (a, n) in enumerate(zip(axes + raxes, extents + rextents)):
            # Chunks split the first spatial axis only; a scalar stage has none to split.
            lo, hi = (start, stop) if pos == 0 and axes else (0, n)
            view = [1] * rank
            view[pos] = hi - lo
            env[a] = torch.arange(lo, hi, dtype=torch.int64).view(view)
        ctx = _Context(graph, stage, values, dims, env, rank)
        value = _to_tensor(ctx.eval(body), stage.dtype)
        # Give the value every dim of the index space, then drop the (size-1) reduced ones.
        value = value.reshape((1,) * (rank - value.dim()) + tuple(value.shape))
        value = value.reshape(value.shape[: len(axes)])
        if axes:
            out[start:stop] = value.expand([stop - start, *extents[1:]]).to(out.dtype)
        else:
            out.copy_(value.reshape(()))
    return out


def _evaluate_scan(graph: Graph, stage: Tensor, values: dict, dims: Mapping[str, int]) -> torch.Tensor:
    """A scan stage: its body evaluated everywhere as a stage of its own, then scanned along the
    axis with torch (in float64 for floats), then the casts around the scan applied."""
    scan = stage.scan
    body_stage = Tensor(stage.name, stage.shape, scan.dtype, ComputeOp(stage.op.axes, scan.body))
    body = _evaluate_stage(graph, body_stage, values, dims)
    axis_no = next(n for n, a in enumerate(stage.op.axes) if a is scan.axis)
    out = SCAN[scan.op](body, dim=axis_no)
    casts = []
    root = stage.op.body
    while isinstance(root, Cast):
        casts.append(root.dtype)
        root = root.x
    for dtype in reversed(casts):
        out = out.to(torch_dtype(dtype)).to(_compute_type(dtype))
    return out.to(_compute_type(stage.dtype))


def _extent(axis: IterVar, dims: Mapping[str, int]) -> int:
    from tiletune.tensorexpr.operator import evaluate_extent

    return evaluate_extent(axis.extent, dims)


def _to_tensor(value: object, dtype: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(value, dtype=_compute_type(dtype))


class _Context:
    """Evaluates one chunk of one stage over a broadcast index space."""

    def __init__(self, graph: Graph, stage: Tensor, values: dict, dims: Mapping[str, int], env: dict, rank: int):
        self.graph, self.stage, self.values, self.dims, self.env, self.rank = graph, stage, values, dims, env, rank
        # Where the value being evaluated is used: inside `te.where`, a branch's reads only need
        # to be in range where that branch is taken (a kernel masks those loads).
        self.guard: torch.Tensor | None = None

    def guarded(self, cond: torch.Tensor, e: Expr):
        """`e` evaluated where only the points with `cond` set are used."""
        outer = self.guard
        self.guard = cond if outer is None else outer & cond
        try:
            return self.eval(e)
        finally:
            self.guard = outer

    def eval(self, e: Expr):
        if isinstance(e, Const):
            return e.value
        if isinstance(e, DimVar):
            return self.dims[e.name]
        if isinstance(e, IterVar):
            return self.env[e]
        if isinstance(e, Read):
            return self.read(e)
        if isinstance(e, Binary):
            return self.binary(e)
        if isinstance(e, Unary):
            return self.unary(e)
        if isinstance(e, Compare):
            a, b = self.eval(e.a), self.eval(e.b)
            return COMPARE[e.op](_to_tensor(a, e.a.dtype), _to_tensor(b, e.b.dtype))
        if isinstance(e, Logical):
            a = _to_tensor(self.eval(e.a), "bool")
            b = _to_tensor(self.eval(e.b), "bool")
            return LOGICAL[e.op](a, b)
        if isinstance(e, Select):
            c = _to_tensor(self.eval(e.cond), "bool")
            a = _to_tensor(self.guarded(c, e.a), e.dtype).to(_compute_type(e.dtype))
            b = _to_tensor(self.guarded(~c, e.b), e.dtype).to(_compute_type(e.dtype))
            return torch.where(c, a, b)
        if isinstance(e, Cast):
            x = _to_tensor(self.eval(e.x), e.x.dtype)
            return x.to(torch_dtype(e.dtype)).to(_compute_type(e.dtype))
        if isinstance(e, Reduce):
            return self.reduce(e)
        raise TypeError(f"reference: unknown node {type(e).__name__}")

    def reduce(self, e: Reduce):
        value_type = e.body.dtype if e.op in ARG_REDUCE_OPS else e.dtype
        body = _to_tensor(self.eval(e.body), e.body.dtype).to(_compute_type(value_type))
        first = self.rank - len(e.axes)
        shape = list(torch.broadcast_shapes(body.shape, (1,) * self.rank))
        for k in range(first, self.rank):
            shape[k] = self.env[e.axes[k - first]].shape[k]
        body = body.expand(shape)
        red = tuple(range(first, self.rank))
        if e.op in ARG_REDUCE_OPS:
            # torch's argmax flattens row-major and takes the first index on ties
            flat = body.reshape(*body.shape[:first], -1, *([1] * (len(red) - 1)))
            return REDUCE[e.op](flat, dim=first, keepdim=True)
        return REDUCE[e.op](body, dim=red, keepdim=True)

    def read(self, e: Read):
        source = self.values[e.tensor]
        indices = []
        for axis_no, ie in enumerate(e.indices):
            idx = torch.as_tensor(self.eval(ie), dtype=torch.int64)
            size = source.shape[axis_no]
            outside = (idx < 0) | (idx >= size)
            if self.guard is not None:
                outside = outside & self.guard
            if bool(outside.any()):
                bad = torch.broadcast_tensors(idx, outside)[0][outside]
                bad_index = int(bad.min()) if bool((bad < 0).any()) else int(bad.max())
                raise DSLError(
                    f"{self.graph.name}: stage '{self.stage.name}' reads '{e.tensor.name}' at index {bad_index} "
                    f"on axis {axis_no} of size {size}; guard the read with te.where or shrink the axis"
                )
            # Points outside are masked off by a te.where; any in-range index serves for them.
            indices.append(idx.clamp(0, size - 1))
        if not indices:
            return source
        return source[tuple(indices)]

    def binary(self, e: Binary):
        a, b = self.eval(e.a), self.eval(e.b)
        ctype = _compute_type(e.dtype)
        if ctype == torch.float64:
            # An integer tensor times a Python float would otherwise give torch's default float32.
            a = _to_tensor(a, e.a.dtype).to(ctype)
        elif not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
            a = torch.tensor(a, dtype=ctype)
        return BINARY[e.op](a, b, e)

    def unary(self, e: Unary):
        x = _to_tensor(self.eval(e.x), e.x.dtype)
        if e.op in FLOAT_ONLY_UNARY:
            x = x.to(torch.float64)
        return UNARY[e.op](x)


def _same_type(a: object, b: object, e: Binary) -> tuple[torch.Tensor, torch.Tensor]:
    ctype = _compute_type(e.dtype)
    return _to_tensor(a, e.dtype).to(ctype), _to_tensor(b, e.dtype).to(ctype)


# The reference's meaning of each operator (one table per node kind, keyed by every member).
# A binary operation gets its operands as evaluated (tensors or Python numbers) and its node.
BINARY: dict[BinaryOp, Callable[[object, object, Binary], torch.Tensor]] = {
    BinaryOp.ADD: lambda a, b, e: a + b,
    BinaryOp.SUB: lambda a, b, e: a - b,
    BinaryOp.MUL: lambda a, b, e: a * b,
    BinaryOp.TRUEDIV: lambda a, b, e: _to_tensor(a, e.a.dtype).to(torch.float64) / b,
    BinaryOp.FLOORDIV: lambda a, b, e: torch.div(_to_tensor(a, e.a.dtype), b, rounding_mode="floor"),
    BinaryOp.MOD: lambda a, b, e: torch.remainder(_to_tensor(a, e.a.dtype), b),
    BinaryOp.MAXIMUM: lambda a, b, e: torch.maximum(*_same_type(a, b, e)),
    BinaryOp.MINIMUM: lambda a, b, e: torch.minimum(*_same_type(a, b, e)),
}
# float-only functions (FLOAT_ONLY_UNARY) get their argument in float64
UNARY: dict[UnaryOp, Callable[[torch.Tensor], torch.Tensor]] = {
    UnaryOp.NEG: torch.neg, UnaryOp.NOT: torch.bitwise_not, UnaryOp.ABS: torch.abs,
    UnaryOp.EXP: torch.exp, UnaryOp.LOG: torch.log, UnaryOp.SQRT: torch.sqrt, UnaryOp.RSQRT: torch.rsqrt,
    UnaryOp.TANH: torch.tanh, UnaryOp.SIGMOID: torch.sigmoid, UnaryOp.ERF: torch.erf,
}
COMPARE: dict[CompareOp, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    CompareOp.LT: torch.lt, CompareOp.LE: torch.le, CompareOp.GT: torch.gt,
    CompareOp.GE: torch.ge, CompareOp.EQ: torch.eq, CompareOp.NE: torch.ne,
}
LOGICAL: dict[LogicalOp, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    LogicalOp.AND: torch.bitwise_and, LogicalOp.OR: torch.bitwise_or,
}
# over the reduce dims, kept; an arg-reduction gets the reduce dims flattened into one
REDUCE: dict[ReduceOp, Callable[..., torch.Tensor]] = {
    ReduceOp.SUM: torch.sum, ReduceOp.MAX: torch.amax, ReduceOp.MIN: torch.amin,
    ReduceOp.ARGMAX: torch.argmax, ReduceOp.ARGMIN: torch.argmin,
}
SCAN: dict[ScanOp, Callable[..., torch.Tensor]] = {
    ScanOp.SUM: torch.cumsum,
    ScanOp.PROD: torch.cumprod,
    ScanOp.MAX: lambda x, dim: torch.cummax(x, dim).values,
    ScanOp.MIN: lambda x, dim: torch.cummin(x, dim).values,
}
