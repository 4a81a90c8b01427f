"""Bounds-checked reads: padding expressed in the DSL.

A windowed operator (pooling, a padded convolution) reads its input at affine indices such as
`h * 2 + r - 1` that step outside the tensor near its edges. `pad_read(x, idx, value)` is
`x[idx]` where every index is in range and `value` elsewhere: `te.where(in_bounds, x[idx], value)`.
It needs no new IR node: the reference evaluator checks a read inside `te.where` only where its
branch is taken, and the backend masks every load whose index is not an axis of the tensor's own
extent, so the read outside the tensor never happens on the GPU either.
"""
from __future__ import annotations

from typing import Sequence

from tiletune.errors import DSLError
from tiletune.tensorexpr.expr import (
    Binary,
    Const,
    DimVar,
    Expr,
    ExprLike,
    IterVar,
    as_expr,
    compare,
    logical,
    select,
)
from tiletune.tensorexpr.tensor import Tensor


def in_bounds(tensor: Tensor, indices: Sequence[ExprLike]) -> Expr | None:
    """The condition that `tensor[indices]` lies inside the tensor, or None when that holds by
    construction (every index an axis over the tensor's own extent, or a constant inside it).
    A lower bound `>= 0` is left out for indices that cannot be negative."""
    if not isinstance(tensor, Tensor):
        raise DSLError(f"te.in_bounds: expected a tensor, got {type(tensor).__name__}")
    if len(indices) != tensor.ndim:
        raise DSLError(
            f"te.in_bounds: tensor '{tensor.name}' has rank {tensor.ndim}, got {len(indices)} indices"
        )
    cond: Expr | None = None
    for size, raw in zip(tensor.shape, indices):
        index = as_expr(raw, f"index of '{tensor.name}'")
        if isinstance(index, IterVar) and index.extent == size:
            continue  # an axis of the tensor's own extent never leaves it
        if isinstance(index, Const) and isinstance(size, Const) and 0 <= index.value < size.value:
            continue
        parts = [] if _non_negative(index) else [compare("ge", index, 0)]
        parts.append(compare("lt", index, size))
        for part in parts:
            cond = part if cond is None else logical("and", cond, part)
    return cond


def pad_read(tensor: Tensor, indices: Sequence[ExprLike], value: ExprLike) -> Expr:
    """`tensor[indices]` where the indices are inside the tensor, `value` elsewhere (padding):
    `te.pad_read(x, (n, c, h * s + r - p), float("-inf"))` for max pooling, `0.0` for a sum."""
    if not isinstance(indices, (tuple, list)):
        indices = (indices,)
    read = tensor[tuple(indices)]
    cond = in_bounds(tensor, indices)
    return read if cond is None else select(cond, read, value)


def _non_negative(e: Expr) -> bool:
    # axes count from 0 and dims are >= 1; sums and products of those stay >= 0
    if isinstance(e, Const):
        return not isinstance(e.value, bool) and e.value >= 0
    if isinstance(e, (IterVar, DimVar)):
        return True
    if isinstance(e, Binary) and e.op in ("add", "mul", "floordiv"):
        return _non_negative(e.a) and _non_negative(e.b)
    return False
