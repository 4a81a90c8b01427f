"""Numpy-style broadcasting for injective stages.

Shapes align at their last dimension; a dimension declared as 1 stretches to the other's extent,
and a missing leading dimension counts as 1. Dims are symbolic, so two extents broadcast only
when they are the same expression or one of them is the literal 1: `D` and `64` may differ
once bound, and the declaration says so rather than guessing.

    x = te.placeholder((N, C, H, W), name="x")
    b = te.placeholder((C, 1, 1), name="b")
    y = te.elementwise(lambda x, b: x + b, x, b, name="y")   # y[n, c, h, w] = x[n, c, h, w] + b[c, 0, 0]
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

from tiletune.errors import DSLError
from tiletune.tensorexpr.expr import Const, Expr, ExprLike
from tiletune.tensorexpr.tensor import Tensor, compute, format_shape

ShapeOrTensor = Union[Tensor, Sequence[Union[int, Expr]]]


def _is_one(e: Expr) -> bool:
    return isinstance(e, Const) and e.value == 1


def _shape(item: ShapeOrTensor, what: str) -> tuple[Expr, ...]:
    if isinstance(item, Tensor):
        return item.shape
    if isinstance(item, (list, tuple)):
        return tuple(Const(s, "int") if isinstance(s, int) and not isinstance(s, bool) else s for s in item)
    raise DSLError(f"{what}: expected a tensor or a shape, got {type(item).__name__}")


def _label(item: ShapeOrTensor, shape: tuple[Expr, ...]) -> str:
    return f"'{item.name}' {format_shape(shape)}" if isinstance(item, Tensor) else format_shape(shape)


def broadcast_shape(*items: ShapeOrTensor) -> tuple[Expr, ...]:
    """The shape tensors (or shapes) broadcast to, numpy-style; a DSLError names the first
    pair of dimensions that do not broadcast."""
    if not items:
        raise DSLError("te.broadcast_shape: give at least one tensor or shape")
    shapes = [_shape(item, "te.broadcast_shape") for item in items]
    rank = max(len(s) for s in shapes)
    out: list[Expr] = []
    for pos in range(rank):
        extent: Expr | None = None
        owner = 0
        for n, shape in enumerate(shapes):
            back = rank - pos
            if back > len(shape):
                continue  # a missing leading dimension is a 1
            e = shape[len(shape) - back]
            if extent is None or _is_one(extent):
                extent, owner = e, n
            elif not _is_one(e) and e != extent:
                a, b = _label(items[owner], shapes[owner]), _label(items[n], shapes[n])
                raise DSLError(
                    f"shapes {a} and {b} do not broadcast: dimension {pos} of the result is "
                    f"{_text(extent)} in one and {_text(e)} in the other; broadcasting needs equal "
                    "extents or a literal 1"
                )
        out.append(extent)
    return tuple(out)


def broadcast(tensor: Tensor, axes: Sequence[Expr]) -> Expr:
    """`tensor` read at the point `axes` of a broadcast result: its dimensions align with the
    last ones of `axes`, and a dimension declared 1 is read at 0."""
    if not isinstance(tensor, Tensor):
        raise DSLError(f"te.broadcast: expected a tensor, got {type(tensor).__name__}")
    axes = tuple(axes)
    if tensor.ndim > len(axes):
        raise DSLError(
            f"te.broadcast: tensor '{tensor.name}' {format_shape(tensor.shape)} has rank {tensor.ndim}, "
            f"more than the {len(axes)} axes it is read at"
        )
    lead = len(axes) - tensor.ndim
    indices: list[ExprLike] = []
    for n, extent in enumerate(tensor.shape):
        axis = axes[lead + n]
        axis_extent = getattr(axis, "extent", None)
        if _is_one(extent) and not (axis_extent is not None and _is_one(axis_extent)):
            indices.append(0)
        elif axis_extent is not None and axis_extent != extent:
            raise DSLError(
                f"te.broadcast: tensor '{tensor.name}' {format_shape(tensor.shape)} axis {n} has extent "
                f"{_text(extent)} but is read along axis '{axis}' of extent {_text(axis_extent)}; "
                "broadcasting needs equal extents or a literal 1"
            )
        else:
            indices.append(axis)
    return tensor[tuple(indices)]


def elementwise(fn: Callable[..., ExprLike], *tensors: Tensor, name: str = "elementwise") -> Tensor:
    """A stage over the broadcast shape of `tensors` whose element is `fn` of their broadcast
    elements: `te.elementwise(lambda x, b: x + b, x, b, name="y")`."""
    if not tensors:
        raise DSLError(f"te.elementwise '{name}': give at least one tensor")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise DSLError(f"te.elementwise '{name}': expected tensors, got {type(t).__name__}")
    shape = broadcast_shape(*tensors)
    return compute(shape, lambda *idx: fn(*(broadcast(t, idx) for t in tensors)), name=name)


def _text(e: Expr) -> str:
    return format_shape((e,))[1:-2]
