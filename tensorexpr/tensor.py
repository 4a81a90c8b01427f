"""Tensors and the DSL's constructors: `placeholder`, `compute`, `reduce_axis`, reductions."""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

from tiletune.errors import DSLError
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.expr import (
    REDUCE_OPS,
    SCAN_OPS,
    Binary,
    Cast,
    Const,
    DimVar,
    Expr,
    ExprLike,
    IterVar,
    Read,
    Reduce,
    ReduceOp,
    Scan,
    ScanOp,
    TensorRef,
    Unary,
    as_expr,
    describe,
    walk,
)

ShapeLike = Sequence[Union[int, Expr]]


@dataclass(frozen=True, slots=True)
class PlaceholderOp:
    """An input of the operator, given at call time. `domain` is the (low, high) range its
    values are meaningful in (a variance is not negative), where random test inputs are drawn;
    None means any real value. It says nothing about what is computed, so it is not hashed."""

    domain: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class ComputeOp:
    """A stage computed element by element: `body` at every point of `axes`."""

    axes: tuple[IterVar, ...]
    body: Expr


@dataclass(frozen=True, slots=True, eq=False)
class Tensor(TensorRef):
    """A named multi-dimensional value: an input (placeholder) or a computed stage."""

    name: str
    shape: tuple[Expr, ...]
    dtype: str
    op: PlaceholderOp | ComputeOp

    @property
    def ndim(self) -> int:
        """The rank."""
        return len(self.shape)

    @property
    def is_placeholder(self) -> bool:
        """True for the operator's inputs."""
        return isinstance(self.op, PlaceholderOp)

    @property
    def reduction(self) -> Reduce | None:
        """The reduction at the root of this stage's body, if it is a reduction stage."""
        root = self._root()
        return root if isinstance(root, Reduce) else None

    @property
    def scan(self) -> Scan | None:
        """The scan at the root of this stage's body, if it is a scan stage."""
        root = self._root()
        return root if isinstance(root, Scan) else None

    def _root(self) -> Expr | None:
        """A computed stage's body under its casts (None for a placeholder)."""
        if not isinstance(self.op, ComputeOp):
            return None
        body = self.op.body
        while isinstance(body, Cast):
            body = body.x
        return body

    def __getitem__(self, index: ExprLike | tuple[ExprLike, ...]) -> Expr:
        indices = index if isinstance(index, tuple) else (index,)
        if len(indices) != self.ndim:
            raise DSLError(
                f"tensor '{self.name}' indexed with {len(indices)} "
                f"{'index' if len(indices) == 1 else 'indices'} but has rank {self.ndim} "
                f"(shape {format_shape(self.shape)})"
            )
        exprs = tuple(as_expr(i, f"index of '{self.name}'") for i in indices)
        for axis_no, e in enumerate(exprs):
            check_index(self, axis_no, e)
        return Read(self, exprs, self.dtype)

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, shape={format_shape(self.shape)}, dtype={self.dtype!r})"

    def __bool__(self) -> bool:
        return True


def format_shape(shape: Sequence[Expr]) -> str:
    """`(M, 64)` style."""
    inner = ", ".join(describe(s) for s in shape)
    return f"({inner}{',' if len(shape) == 1 else ''})"


def check_index(tensor: Tensor, axis_no: int, e: Expr) -> None:
    """Refuse index expressions the backend cannot analyse: they must be integer affine forms
    of axes and dims (products with constants or dims, `//` and `%` by constants)."""
    where = f"tensor '{tensor.name}' axis {axis_no}"
    if not dt.is_int(e.dtype):
        raise DSLError(f"{where}: index must be an integer expression of axes and dims, got {e.dtype} ({describe(e)})")
    if isinstance(e, Read) and e.tensor.is_placeholder:
        # a gather, x[i, t[i]]: an index read whole from an integer input (whose own indices
        # were checked affine when it was read); the kernel masks the load to the axis's range
        return
    for node in walk(e):
        if isinstance(node, Read):
            raise DSLError(
                f"{where}: data-dependent index {describe(node)} cannot be analysed; a gather index "
                "must be a whole read of an integer input (x[i, t[i]]), and other indices affine "
                "in axes and dims"
            )
        if isinstance(node, (IterVar, DimVar, Const)) or (isinstance(node, Unary) and node.op == "neg"):
            continue
        if not isinstance(node, Binary) or node.op not in _INDEX_OPS:
            op = getattr(node, "op", type(node).__name__.lower())
            raise DSLError(f"{where}: '{op}' cannot appear in an index expression ({describe(e)})")
        if node.op == "mul" and _has_axis(node.a) and _has_axis(node.b):
            raise DSLError(
                f"{where}: index multiplies two axes ({describe(node.a)} * {describe(node.b)}); "
                "indices must be affine in the axes"
            )
        if node.op in ("floordiv", "mod") and not isinstance(node.b, (Const, DimVar)):
            raise DSLError(f"{where}: `//` and `%` in an index need a constant or dim divisor")


_INDEX_OPS = ("add", "sub", "mul", "floordiv", "mod")


def _has_axis(e: Expr) -> bool:
    return any(isinstance(n, IterVar) for n in walk(e))


def _as_extent(value: int | Expr, what: str) -> Expr:
    if isinstance(value, bool) or not isinstance(value, (int, Expr)):
        raise DSLError(f"{what}: a dimension must be an int or a dim, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise DSLError(f"{what}: a dimension must be at least 1, got {value}")
        return Const(value, dt.WEAK_INT)
    if not dt.is_int(value.dtype) or any(isinstance(n, (IterVar, Read)) for n in walk(value)):
        raise DSLError(f"{what}: a dimension must be an integer expression of dims, got {describe(value)}")
    return value


def placeholder(shape: ShapeLike, dtype: object = "float32", name: str = "input",
                domain: tuple[float, float] | None = None) -> Tensor:
    """An input tensor of the operator: `te.placeholder((M, K), "float16", name="a")`.

    `domain=(low, high)` bounds the values the input takes (`(0, 4)` for a variance), so that
    verification and fuzzing draw test inputs where the operator is defined."""
    if isinstance(shape, (int, Expr)):
        shape = (shape,)
    extents = tuple(_as_extent(s, f"placeholder '{name}' axis {n}") for n, s in enumerate(shape))
    if domain is not None:
        try:
            low, high = (float(v) for v in domain)
        except (TypeError, ValueError):
            raise DSLError(f"placeholder '{name}': domain must be (low, high), got {domain!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise DSLError(f"placeholder '{name}': domain needs finite low < high, got {domain!r}")
        domain = (low, high)
    return Tensor(name, extents, dt.canonical(dtype), PlaceholderOp(domain))


def reduce_axis(extent: int | Expr | tuple[int, int | Expr], name: str = "k") -> IterVar:
    """A reduction axis over `range(extent)`; TVM's `(0, n)` form is accepted too."""
    if isinstance(extent, tuple):
        if len(extent) != 2 or extent[0] != 0:
            raise DSLError(f"reduce_axis '{name}': a range must be (0, extent), got {extent!r}")
        extent = extent[1]
    return IterVar(name, _as_extent(extent, f"reduce_axis '{name}'"), "reduce")


def compute(shape: ShapeLike, fcompute: Callable[..., ExprLike], name: str = "compute") -> Tensor:
    """A stage whose element at `(i, j, ...)` is `fcompute(i, j, ...)`.

    The lambda's parameter names name the axes (they appear in generated code and errors).
    """
    if isinstance(shape, (int, Expr)):
        shape = (shape,)
    extents = tuple(_as_extent(s, f"compute '{name}' axis {n}") for n, s in enumerate(shape))
    try:
        params = [p.name for p in inspect.signature(fcompute).parameters.values()]
    except (TypeError, ValueError):
        params = []
    if params and len(params) != len(extents) and not any(
        p.kind == inspect.Parameter.VAR_POSITIONAL for p in inspect.signature(fcompute).parameters.values()
    ):
        raise DSLError(
            f"compute '{name}': shape {format_shape(extents)} has rank {len(extents)} "
            f"but the function takes {len(params)} axes ({', '.join(params)})"
        )
    names = params if len(params) == len(extents) else [f"i{n}" for n in range(len(extents))]
    axes = tuple(IterVar(n, e, "spatial") for n, e in zip(names, extents))
    body = as_expr(fcompute(*axes), f"compute '{name}'")
    _check_body(name, axes, body)
    dtype = dt.strong(body.dtype)
    if body.dtype != dtype:
        body = Cast(body, dtype)
    return Tensor(name, extents, dtype, ComputeOp(axes, body))


def _check_body(name: str, axes: tuple[IterVar, ...], body: Expr) -> None:
    root = body
    while isinstance(root, Cast):
        root = root.x
    for node in walk(body):
        if isinstance(node, Reduce) and node is not root:
            raise DSLError(
                f"compute '{name}': a reduction must be the whole body of its stage; "
                "compute it in its own te.compute and read that stage here"
            )
    for node in walk(body):
        if isinstance(node, Scan) and node is not root:
            raise DSLError(
                f"compute '{name}': a scan (te.cum{node.op}) must be the whole body of its stage; "
                "compute it in its own te.compute and read that stage here"
            )
    if isinstance(root, Scan) and not any(root.axis is a for a in axes):
        raise DSLError(
            f"compute '{name}': te.cum{root.op} scans along axis '{root.axis.name}', which is not an axis "
            f"of this stage ({', '.join(a.name for a in axes)}); scan along one of the lambda's own axes"
        )
    bound = set(axes) | (set(root.axes) if isinstance(root, Reduce) else set())
    for node in walk(body):
        if isinstance(node, IterVar) and node not in bound:
            if node.kind == "reduce":
                raise DSLError(
                    f"compute '{name}': reduce axis '{node.name}' is used outside its reduction; "
                    f"wrap the expression in te.sum/max/min(..., axis={node.name})"
                )
            raise DSLError(f"compute '{name}': axis '{node.name}' belongs to another stage")
    if body.dtype == "bool":
        raise DSLError(f"compute '{name}': a stage of bools is not supported; use te.where(cond, 1.0, 0.0)")


def _reduce(op: ReduceOp, body: ExprLike, axis: IterVar | Sequence[IterVar]) -> Expr:
    axes = (axis,) if isinstance(axis, IterVar) else tuple(axis)
    if not axes:
        raise DSLError(f"te.{op}: give at least one reduce axis (axis=k)")
    for a in axes:
        if not isinstance(a, IterVar) or a.kind != "reduce":
            raise DSLError(f"te.{op}: axis must be made by te.reduce_axis, got {a!r}")
    eb = as_expr(body, f"te.{op}")
    if eb.dtype == "bool":
        raise DSLError(f"te.{op}: cannot reduce bools; use te.where(cond, 1, 0)")
    missing = [a.name for a in axes if not any(n is a for n in walk(eb))]
    if missing:
        raise DSLError(f"te.{op}: the body does not use reduce axis {', '.join(missing)}")
    return Reduce(op, eb, axes, dt.strong(eb.dtype))


def sum(body: ExprLike, axis: IterVar | Sequence[IterVar]) -> Expr:  # noqa: A001 - the DSL's name
    """Sum of `body` over the reduce axes."""
    return _reduce(ReduceOp.SUM, body, axis)


def max(body: ExprLike, axis: IterVar | Sequence[IterVar]) -> Expr:  # noqa: A001
    """Maximum of `body` over the reduce axes."""
    return _reduce(ReduceOp.MAX, body, axis)


def min(body: ExprLike, axis: IterVar | Sequence[IterVar]) -> Expr:  # noqa: A001
    """Minimum of `body` over the reduce axes."""
    return _reduce(ReduceOp.MIN, body, axis)


def argmax(body: ExprLike, axis: IterVar | Sequence[IterVar], dtype: object = "int64") -> Expr:
    """Index of the maximum of `body` over the reduce axes (row-major over several axes; the
    first index on ties, as torch.argmax); `dtype` is int64 or int32."""
    return _arg_reduce(ReduceOp.ARGMAX, body, axis, dtype)


def argmin(body: ExprLike, axis: IterVar | Sequence[IterVar], dtype: object = "int64") -> Expr:
    """Index of the minimum of `body` over the reduce axes (first index on ties)."""
    return _arg_reduce(ReduceOp.ARGMIN, body, axis, dtype)


def _arg_reduce(op: ReduceOp, body: ExprLike, axis: IterVar | Sequence[IterVar], dtype: object) -> Expr:
    index_dtype = dt.canonical(dtype)
    if index_dtype not in ("int32", "int64"):
        raise DSLError(f"te.{op}: the index dtype must be int32 or int64, got {index_dtype}")
    r = _reduce(op, body, axis)
    if not dt.is_float(r.body.dtype):
        raise DSLError(f"te.{op}: reduces floating values, got {r.body.dtype}; cast with .astype(\"float32\")")
    return Reduce(op, r.body, r.axes, index_dtype)


assert set(REDUCE_OPS) == {"sum", "max", "min"}


def scan(op: ScanOp | str, body: ExprLike, axis: IterVar) -> Expr:
    """The inclusive scan of `body` along the stage's spatial `axis` with the associative
    combine `op` ("sum", "prod", "max" or "min"): `te.compute((N, D), lambda i, j:
    te.scan("sum", x[i, j], axis=j))` is torch.cumsum(x, dim=1)."""
    if op not in SCAN_OPS:
        raise DSLError(f"te.scan: unknown combine {op!r}; expected one of {', '.join(SCAN_OPS)}")
    op = ScanOp(op)
    what = f"te.cum{op}"
    if not isinstance(axis, IterVar):
        raise DSLError(f"{what}: axis must be an axis of the stage (a lambda parameter), got {axis!r}")
    if axis.kind == "reduce":
        raise DSLError(
            f"{what}: axis '{axis.name}' is a reduce axis; a scan runs along a spatial axis of its own "
            f"stage, e.g. te.compute((N, D), lambda i, j: {what}(x[i, j], axis=j))"
        )
    eb = as_expr(body, what)
    if eb.dtype == "bool":
        raise DSLError(f"{what}: cannot scan bools; use te.where(cond, 1, 0)")
    if any(isinstance(n, (Reduce, Scan)) for n in walk(eb)):
        raise DSLError(f"{what}: the body holds a reduction or scan; compute it in its own stage first")
    return Scan(op, eb, axis, dt.strong(eb.dtype))


def cumsum(body: ExprLike, axis: IterVar) -> Expr:
    """Inclusive cumulative sum of `body` along the stage's `axis` (torch.cumsum)."""
    return scan(ScanOp.SUM, body, axis)


def cumprod(body: ExprLike, axis: IterVar) -> Expr:
    """Inclusive cumulative product of `body` along the stage's `axis` (torch.cumprod)."""
    return scan(ScanOp.PROD, body, axis)


def cummax(body: ExprLike, axis: IterVar) -> Expr:
    """Running maximum of `body` along the stage's `axis` (the values of torch.cummax)."""
    return scan(ScanOp.MAX, body, axis)


def cummin(body: ExprLike, axis: IterVar) -> Expr:
    """Running minimum of `body` along the stage's `axis` (the values of torch.cummin)."""
    return scan(ScanOp.MIN, body, axis)
