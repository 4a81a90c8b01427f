"""Scans: inclusive cumulative sums, products and maxima along one axis (torch.cumsum,
torch.cumprod, torch.cummax's values), accumulated in fp32 and stored in the input's type.

The built-ins scan the last axis of X[N, D], or the middle axis of X[B, L, C], which is any
tensor's scan along any dim viewed as (dims before, the scanned dim, dims after).
`cumulative(op, rank, dim)` declares the scan of a tensor of rank 1 to 4 along `dim` directly.
"""
from __future__ import annotations

import inspect

from tiletune import tensorexpr as te
from tiletune.errors import DSLError
from tiletune.tensorexpr.operator import Operator, operator

__all__ = ["cumsum", "cumprod", "cummax", "cumsum_dim1"]

_SCANS = {"sum": te.cumsum, "prod": te.cumprod, "max": te.cummax, "min": te.cummin}


@operator
def cumsum(N, D, dtype="float32"):
    """Inclusive cumulative sum of X[N, D] along D: torch.cumsum(x, dim=-1)."""
    x = te.placeholder((N, D), dtype, name="x")
    y = te.compute((N, D), lambda i, j: te.cumsum(x[i, j], axis=j), name="y")
    return [x], y


@operator
def cumprod(N, D, dtype="float32"):
    """Inclusive cumulative product of X[N, D] along D: torch.cumprod(x, dim=-1)."""
    x = te.placeholder((N, D), dtype, name="x")
    y = te.compute((N, D), lambda i, j: te.cumprod(x[i, j], axis=j), name="y")
    return [x], y


@operator
def cummax(N, D, dtype="float32"):
    """Running maximum of X[N, D] along D: torch.cummax(x, dim=-1).values."""
    x = te.placeholder((N, D), dtype, name="x")
    y = te.compute((N, D), lambda i, j: te.cummax(x[i, j], axis=j), name="y")
    return [x], y


@operator
def cumsum_dim1(B, L, C, dtype="float32"):
    """Inclusive cumulative sum of X[B, L, C] along L (torch.cumsum(x, dim=1)): the scan of any
    tensor along any dim, with B the product of the dims before it and C of those after."""
    x = te.placeholder((B, L, C), dtype, name="x")
    y = te.compute((B, L, C), lambda b, l, c: te.cumsum(x[b, l, c], axis=l), name="y")
    return [x], y


def cumulative(op: str, rank: int, dim: int, name: str | None = None) -> Operator:
    """The operator scanning X[D0, ..., D{rank-1}] along `dim` (negative counts from the end)
    with the combine `op` ("sum", "prod", "max", "min"), taking `dtype=` like the built-ins."""
    if op not in _SCANS:
        raise DSLError(f"cumulative: unknown combine {op!r}; expected one of {', '.join(_SCANS)}")
    if not 1 <= rank <= 4:
        raise DSLError(f"cumulative: rank must be 1 to 4, got {rank}")
    if not -rank <= dim < rank:
        raise DSLError(f"cumulative: dim {dim} is out of range for rank {rank}")
    dim %= rank
    scan_fn = _SCANS[op]

    def declare(*dims, dtype="float32"):
        x = te.placeholder(dims, dtype, name="x")

        def body(*axes):
            return scan_fn(x[axes], axis=axes[dim])

        # te.compute names axes after the lambda's parameters: give them readable ones
        body.__signature__ = inspect.Signature(
            [inspect.Parameter(f"i{n}", inspect.Parameter.POSITIONAL_ONLY) for n in range(rank)]
        )
        y = te.compute(dims, body, name="y")
        return [x], y

    declare.__signature__ = inspect.Signature(
        [inspect.Parameter(f"D{n}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in range(rank)]
        + [inspect.Parameter("dtype", inspect.Parameter.KEYWORD_ONLY, default="float32")]
    )
    declare.__doc__ = f"Inclusive cumulative {op} of a rank-{rank} X along dim {dim}."
    return Operator(declare, name or f"cum{op}_rank{rank}_dim{dim}")
