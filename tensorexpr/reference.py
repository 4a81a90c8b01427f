"""The reference evaluator: runs any operator with torch on the CPU, the correctness oracle.

Numerics: float values are computed in float64 and rounded only where the program says so: at
an explicit `.astype(...)` and when the output is stored in its dtype. Intermediate stages stay
in float64, as a fused kernel keeps them in fp32 registers rather than storing them.

`evaluate(..., fast=True)` is the CPU path of `tiletune.load`, not an oracle: float math runs
in float32 (float64 for float64 values), as the generated kernels compute it; a read whose
indices are the stage's own axes is a view of its tensor rather than a gather; and a sum of a
product is one `torch.einsum` rather than a broadcast product summed. Its answers stay within
the verification tolerance of the exact mode (tests/tensorexpr/test_te_fast.py).
"""
from __future__ import annotations

import math
import weakref
from collections import Counter
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
    walk,
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


def _compute_type(dtype: str, fast: bool = False) -> torch.dtype:
    if dt.is_float(dtype):
        # fast: fp32 math as in the kernels, except for float64 values
        return torch.float32 if fast and dt.strong(dtype) != "float64" else torch.float64
    if dt.is_int(dtype):
        return torch.int64
    return torch.bool


def evaluate(graph: Graph, inputs: Sequence[torch.Tensor], dims: Mapping[str, int] | None = None, *,
             fast: bool = False) -> torch.Tensor:
    """The operator's output for `inputs` (CPU torch tensors), in the output's dtype; `fast`
    selects the fast mode (see the module's docstring)."""
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
        values[t] = x.detach().to("cpu", _compute_type(t.dtype, fast))
    for stage in graph.stages:
        values[stage] = _evaluate_stage(graph, stage, values, bound, fast)
    out = values[graph.output].to(torch_dtype(graph.output.dtype))
    if fast:  # the fast mode's stages may be views (of an input, or broadcast): give the caller its own
        out = out.contiguous()
        if any(out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr() for x in inputs):
            out = out.clone()
    return out


def _evaluate_stage(graph: Graph, stage: Tensor, values: dict, dims: Mapping[str, int],
                    fast: bool = False) -> torch.Tensor:
    if stage.scan is not None:
        return _evaluate_scan(graph, stage, values, dims, fast)
    axes = stage.op.axes
    body = stage.op.body
    reduction = stage.reduction
    raxes = reduction.axes if reduction is not None else ()
    extents = [_extent(a, dims) for a in axes]
    rextents = [_extent(a, dims) for a in raxes]
    rank = len(axes) + len(raxes)
    per_row = math.prod(extents[1:]) * math.prod(rextents) if axes else 1
    if fast and _contractions_only(body):
        per_row = math.prod(extents[1:])  # an einsum never forms the product over the reduce axes
    chunk = max(1, CHUNK_ELEMENTS // max(per_row, 1))
    out = torch.empty(extents, dtype=_compute_type(stage.dtype, fast))
    rows = extents[0] if axes else 1
    for start in range(0, rows, chunk):
        stop = min(rows, start + chunk)
        env: dict[Expr, object] = {}
        spans: dict[IterVar, tuple[int, int, int]] = {}
        for pos, (a, n) in enumerate(zip(axes + raxes, extents + rextents)):
            # Chunks split the first spatial axis only; a scalar stage has none to split.
            lo, hi = (start, stop) if pos == 0 and axes else (0, n)
            view = [1] * rank
            view[pos] = hi - lo
            env[a] = torch.arange(lo, hi, dtype=torch.int64).view(view)
            spans[a] = (pos, lo, hi)
        ctx = _Context(graph, stage, values, dims, env, rank, spans if fast else None)
        value = _to_tensor(ctx.eval(body), stage.dtype, fast)
        # Give the value every dim of the index space, then drop the (size-1) reduced ones.
        value = value.reshape((1,) * (rank - value.dim()) + tuple(value.shape))
        value = value.reshape(value.shape[: len(axes)])
        if fast and rows <= chunk:  # one chunk: the value is the stage, no copy needed
            return value.expand(extents).to(out.dtype)
        if axes:
            out[start:stop] = value.expand([stop - start, *extents[1:]]).to(out.dtype)
        else:
            out.copy_(value.reshape(()))
    return out


def _contractions_only(body: Expr) -> bool:
    """True when every reduction in `body` is a sum of a product (the fast mode's einsum)."""
    reduces = [n for n in walk(body) if isinstance(n, Reduce)]
    return bool(reduces) and all(_is_contraction(r) for r in reduces)


def _is_contraction(e: Reduce) -> bool:
    """A float sum of a product: the fast mode sums it with one einsum."""
    return (e.op is ReduceOp.SUM and dt.is_float(e.dtype) and isinstance(e.body, Binary)
            and e.body.op is BinaryOp.MUL)


def _evaluate_scan(graph: Graph, stage: Tensor, values: dict, dims: Mapping[str, int],
                   fast: bool = False) -> torch.Tensor:
    """A scan stage: its body evaluated everywhere as a stage of its own, then scanned along the
    axis with torch (in float64 for floats), then the casts around the scan applied."""
    scan = stage.scan
    body_stage = Tensor(stage.name, stage.shape, scan.dtype, ComputeOp(stage.op.axes, scan.body))
    body = _evaluate_stage(graph, body_stage, values, dims, fast)
    axis_no = next(n for n, a in enumerate(stage.op.axes) if a is scan.axis)
    out = SCAN[scan.op](body, dim=axis_no)
    casts = []
    root = stage.op.body
    while isinstance(root, Cast):
        casts.append(root.dtype)
        root = root.x
    for dtype in reversed(casts):
        out = out.to(torch_dtype(dtype)).to(_compute_type(dtype, fast))
    return out.to(_compute_type(stage.dtype, fast))


def _extent(axis: IterVar, dims: Mapping[str, int]) -> int:
    from tiletune.tensorexpr.operator import evaluate_extent

    return evaluate_extent(axis.extent, dims)


def _to_tensor(value: object, dtype: str, fast: bool = False) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(value, dtype=_compute_type(dtype, fast))


class _Context:
    """Evaluates one chunk of one stage over a broadcast index space."""

    def __init__(self, graph: Graph, stage: Tensor, values: dict, dims: Mapping[str, int], env: dict, rank: int,
                 spans: dict | None = None):
        self.graph, self.stage, self.values, self.dims, self.env, self.rank = graph, stage, values, dims, env, rank
        # The fast mode's (position, start, stop) of each axis in the index space; None: exact mode.
        self.spans = spans
        self.fast = spans is not None
        self.temps: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()
        # The fast mode evaluates an expression the body holds more than once (layernorm's two
        # x - mean factors) once; such a value is never a temporary to compute into.
        self.shared: set[Expr] = set()
        self.memo: dict[Expr, object] = {}
        if self.fast:
            counts = Counter(n for n in walk(stage.op.body) if isinstance(n, (Binary, Unary, Cast, Select)))
            self.shared = {n for n, count in counts.items() if count > 1}
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
        if self.shared and self.guard is None and e in self.shared:
            if e not in self.memo:
                self.memo[e] = value = self.compute(e)
                self.temps.pop(id(value), None)
            return self.memo[e]
        return self.compute(e)

    def compute(self, e: Expr):
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
            return COMPARE[e.op](self.tensor(a, e.a.dtype), self.tensor(b, e.b.dtype))
        if isinstance(e, Logical):
            a = self.tensor(self.eval(e.a), "bool")
            b = self.tensor(self.eval(e.b), "bool")
            return LOGICAL[e.op](a, b)
        if isinstance(e, Select):
            c = self.tensor(self.eval(e.cond), "bool")
            a = self.tensor(self.guarded(c, e.a), e.dtype).to(self.ctype(e.dtype))
            b = self.tensor(self.guarded(~c, e.b), e.dtype).to(self.ctype(e.dtype))
            return torch.where(c, a, b)
        if isinstance(e, Cast):
            x = self.tensor(self.eval(e.x), e.x.dtype)
            return x.to(torch_dtype(e.dtype)).to(self.ctype(e.dtype))
        if isinstance(e, Reduce):
            return self.reduce(e)
        raise TypeError(f"reference: unknown node {type(e).__name__}")

    def ctype(self, dtype: str) -> torch.dtype:
        """The type values of `dtype` are computed in (see `_compute_type`)."""
        return _compute_type(dtype, self.fast)

    def tensor(self, value: object, dtype: str) -> torch.Tensor:
        return _to_tensor(value, dtype, self.fast)

    def reduce(self, e: Reduce):
        value_type = e.body.dtype if e.op in ARG_REDUCE_OPS else e.dtype
        first = self.rank - len(e.axes)
        if self.fast and _is_contraction(e):
            factors = [self.tensor(self.eval(f), f.dtype).to(self.ctype(value_type)) for f in (e.body.a, e.body.b)]
            return self.contract(*factors, e.axes)
        body = self.tensor(self.eval(e.body), e.body.dtype).to(self.ctype(value_type))
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

    def contract(self, a: torch.Tensor, b: torch.Tensor, axes: Sequence[IterVar]) -> torch.Tensor:
        """The sum of a * b over the reduce `axes` (the index space's last positions), kept as
        size-1 dims: one einsum over the positions either factor spans, a matmul where it is one."""
        rank = self.rank
        first = rank - len(axes)
        a, b = (f.reshape((1,) * (rank - f.dim()) + tuple(f.shape)) for f in (a, b))
        letters = [chr(ord("a") + p) for p in range(rank)]
        spanned = [p for p in range(rank) if a.shape[p] != 1 or b.shape[p] != 1]
        terms = ["".join(letters[p] for p in range(rank) if f.shape[p] != 1) for f in (a, b)]
        kept = [p for p in spanned if p < first]
        result = torch.einsum(f"{terms[0]},{terms[1]}->{''.join(letters[p] for p in kept)}",
                              a.reshape([n for n in a.shape if n != 1]), b.reshape([n for n in b.shape if n != 1]))
        shape = [1] * rank
        for p in kept:
            shape[p] = max(a.shape[p], b.shape[p])
        result = result.reshape(shape)
        # a reduced axis neither factor depends on adds the same product once per index
        repeats = math.prod(self.env[ax].shape[first + k] for k, ax in enumerate(axes) if first + k not in spanned)
        return result * repeats if repeats != 1 else result

    def read(self, e: Read):
        source = self.values[e.tensor]
        if self.fast:
            view = self.view(e, source)
            if view is not None:
                return view
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

    def view(self, e: Read, source: torch.Tensor) -> torch.Tensor | None:
        """A read whose indices are distinct axes of the index space, each in range, as a
        view of `source` laid out in the index space (None for any other read)."""
        spans = [self.spans.get(ie) if isinstance(ie, IterVar) else None for ie in e.indices]
        if not spans or any(s is None for s in spans) or len({s[0] for s in spans}) < len(spans):
            return None
        if any(hi > size for (_, _, hi), size in zip(spans, source.shape)):
            return None  # out of range somewhere: the exact path says where, or masks it
        value = source[tuple(slice(lo, hi) for _, lo, hi in spans)]
        order = sorted(range(len(spans)), key=lambda k: spans[k][0])
        value = value.permute(order)
        used = {pos: hi - lo for pos, lo, hi in spans}
        # size-1 dims where the index space has axes this read does not use (a view still)
        return value.reshape([used.get(p, 1) for p in range(min(used), self.rank)])

    def binary(self, e: Binary):
        a, b = self.eval(e.a), self.eval(e.b)
        ctype = self.ctype(e.dtype)
        if e.op in (BinaryOp.MAXIMUM, BinaryOp.MINIMUM):
            a, b = self.tensor(a, e.dtype).to(ctype), self.tensor(b, e.dtype).to(ctype)
        elif ctype.is_floating_point:
            # An integer tensor times a Python float would otherwise give torch's default float32.
            a = self.tensor(a, e.a.dtype).to(ctype)
        elif not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
            a = torch.tensor(a, dtype=ctype)
        if self.fast and e.op in IN_PLACE_BINARY:
            for into in (a, b):
                if self.reusable(into, a, b):
                    return self.temporary(IN_PLACE_BINARY[e.op](a, b, out=into))
            return self.temporary(BINARY[e.op](a, b, e))
        return BINARY[e.op](a, b, e)

    def unary(self, e: Unary):
        x = self.tensor(self.eval(e.x), e.x.dtype)
        if e.op in FLOAT_ONLY_UNARY:
            x = x.to(self.ctype(e.dtype))
        if self.fast:
            return self.temporary(UNARY[e.op](x, out=x) if self.reusable(x, x) else UNARY[e.op](x))
        return UNARY[e.op](x)

    # The fast mode computes into a temporary of this chunk in place where it can, as a fused
    # kernel keeps values in registers: fresh large tensors cost an allocation and page faults.
    def temporary(self, t: torch.Tensor) -> torch.Tensor:
        """`t`, recorded as a tensor only this chunk's expression uses (an operation's result)."""
        self.temps[id(t)] = t
        return t

    def reusable(self, into: object, *operands: object) -> bool:
        """True when `into` is a temporary that can hold the result of an elementwise operation
        on `operands` (it has the result's shape and dtype)."""
        if not isinstance(into, torch.Tensor) or self.temps.get(id(into)) is not into:
            return False
        if len(operands) == 1:  # a math function: float results in the argument's type
            return into.dtype.is_floating_point
        shapes = [x.shape for x in operands if isinstance(x, torch.Tensor)]
        return torch.broadcast_shapes(*shapes) == into.shape and torch.result_type(*operands) == into.dtype


# The reference's meaning of each operator (one table per node kind, keyed by every member).
# A binary operation gets its operands as evaluated (tensors or Python numbers; both in the
# computation type for maximum/minimum, the first for a float result) and its node.
BINARY: dict[BinaryOp, Callable[[object, object, Binary], torch.Tensor]] = {
    BinaryOp.ADD: lambda a, b, e: a + b,
    BinaryOp.SUB: lambda a, b, e: a - b,
    BinaryOp.MUL: lambda a, b, e: a * b,
    BinaryOp.TRUEDIV: lambda a, b, e: a / b,
    BinaryOp.FLOORDIV: lambda a, b, e: torch.div(_to_tensor(a, e.a.dtype), b, rounding_mode="floor"),
    BinaryOp.MOD: lambda a, b, e: torch.remainder(_to_tensor(a, e.a.dtype), b),
    BinaryOp.MAXIMUM: lambda a, b, e: torch.maximum(a, b),
    BinaryOp.MINIMUM: lambda a, b, e: torch.minimum(a, b),
}
# The fast mode's in-place forms (an `out=` that is one of the operands).
IN_PLACE_BINARY: dict[BinaryOp, Callable[..., torch.Tensor]] = {
    BinaryOp.ADD: torch.add, BinaryOp.SUB: torch.sub, BinaryOp.MUL: torch.mul, BinaryOp.TRUEDIV: torch.div,
    BinaryOp.MAXIMUM: torch.maximum, BinaryOp.MINIMUM: torch.minimum,
}
# float-only functions (FLOAT_ONLY_UNARY) get their argument in the float computation type
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
