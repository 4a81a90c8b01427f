"""Reductions of a 4-D tensor X[A, B, C, D] over any axes (`axes=` attribute, torch's `dim`),
and a sum of a 1-D tensor to a scalar. Lower-rank inputs use dims of 1 (a [N, D] tensor is
[1, 1, N, D]). A reduced axis that is not the innermost one is read along the lane, not with a
stride per lane; several axes fuse into one reduce index; long rows loop over chunks."""
from __future__ import annotations

from tiletune import tensorexpr as te
from tiletune.errors import DSLError
from tiletune.tensorexpr.operator import operator

__all__ = ["sum4d", "mean4d", "amax4d", "amin4d", "argmax4d", "argmin4d",
           "l1_norm", "l2_norm", "frobenius_norm", "sum_all"]


def _axes(axes, rank: int = 4) -> tuple[int, ...]:
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    out = sorted({a + rank if a < 0 else a for a in axes})
    if not out or any(not 0 <= a < rank for a in out):
        raise DSLError(f"axes {axes!r}: expected one or more of 0..{rank - 1} (or negative from the end)")
    return tuple(out)


def _reduce(name: str, shape, dtype, axes, body, op=te.sum, out_dtype=None):
    """`op(body(x[...]))` over `axes` of x; the output keeps the other axes in order."""
    x = te.placeholder(shape, dtype, name="x")
    axes = _axes(axes, len(shape))
    ks = {a: te.reduce_axis(shape[a], name=f"k{a}") for a in axes}
    out_shape = tuple(s for a, s in enumerate(shape) if a not in axes)

    def index(idx):
        it = iter(idx)
        return tuple(ks[a] if a in ks else next(it) for a in range(len(shape)))

    def fcompute(*idx):
        v = body(x[index(idx)])
        return op(v, axis=tuple(ks.values())) if out_dtype is None else op(v, axis=tuple(ks.values()), dtype=out_dtype)

    return x, te.compute(out_shape, fcompute, name=name), out_shape, axes


def _count(shape, axes):
    n = 1
    for a in axes:
        n = shape[a] * n
    return n


@operator
def sum4d(A, B, C, D, *, axes=(3,), dtype="float32"):
    """Y = X[A, B, C, D].sum(axes)."""
    x, y, _, _ = _reduce("y", (A, B, C, D), dtype, axes, lambda v: v)
    return [x], y


@operator
def mean4d(A, B, C, D, *, axes=(3,), dtype="float32"):
    """Y = X[A, B, C, D].mean(axes)."""
    shape = (A, B, C, D)
    x, s, out_shape, ax = _reduce("total", shape, dtype, axes, lambda v: v)
    n = _count(shape, ax)
    y = te.compute(out_shape, lambda *i: (s[i] / n).astype(dtype), name="y")
    return [x], y


@operator
def amax4d(A, B, C, D, *, axes=(3,), dtype="float32"):
    """Y = X[A, B, C, D].amax(axes)."""
    x, y, _, _ = _reduce("y", (A, B, C, D), dtype, axes, lambda v: v, op=te.max)
    return [x], y


@operator
def amin4d(A, B, C, D, *, axes=(3,), dtype="float32"):
    """Y = X[A, B, C, D].amin(axes)."""
    x, y, _, _ = _reduce("y", (A, B, C, D), dtype, axes, lambda v: v, op=te.min)
    return [x], y


@operator
def argmax4d(A, B, C, D, *, axis=3, dtype="float32"):
    """Y = X[A, B, C, D].argmax(axis) as int64, the first index on ties (as torch)."""
    x, y, _, _ = _reduce("y", (A, B, C, D), dtype, axis, lambda v: v, op=te.argmax, out_dtype="int64")
    return [x], y


@operator
def argmin4d(A, B, C, D, *, axis=3, dtype="float32"):
    """Y = X[A, B, C, D].argmin(axis) as int64, the first index on ties (as torch)."""
    x, y, _, _ = _reduce("y", (A, B, C, D), dtype, axis, lambda v: v, op=te.argmin, out_dtype="int64")
    return [x], y


@operator
def l1_norm(A, B, C, D, *, axes=(3,), dtype="float32"):
    """Y = sum(|X|) over axes (torch.linalg.vector_norm(ord=1))."""
    x, y, _, _ = _reduce("y", (A, B, C, D), dtype, axes, lambda v: te.abs(v))
    return [x], y


@operator
def l2_norm(A, B, C, D, *, axes=(3,), dtype="float32"):
    """Y = sqrt(sum(X^2)) over axes (torch.linalg.vector_norm(ord=2))."""
    shape = (A, B, C, D)
    x, s, out_shape, _ = _reduce("sq", shape, dtype, axes, lambda v: v * v)
    y = te.compute(out_shape, lambda *i: te.sqrt(s[i]).astype(dtype), name="y")
    return [x], y


@operator
def frobenius_norm(A, B, C, D, *, axes=(2, 3), dtype="float32"):
    """Y = the Frobenius norm of each matrix X[a, b, :, :] (torch.linalg.matrix_norm("fro"))."""
    return l2_norm.fn(A, B, C, D, axes=axes, dtype=dtype)


@operator
def sum_all(N, dtype="float32"):
    """Y = X[N].sum(): a full reduction to a scalar, split across programs when N is large."""
    x, y, _, _ = _reduce("y", (N,), dtype, (0,), lambda v: v)
    return [x], y
