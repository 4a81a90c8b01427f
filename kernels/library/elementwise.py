"""Elementwise (injective) operators."""
from __future__ import annotations

from tiletune import tensorexpr as te
from tiletune.tensorexpr.operator import operator

__all__ = ["add"]


@operator
def add(N, D, dtype="float32"):
    """Z[N, D] = X[N, D] + Y[N, D]."""
    x = te.placeholder((N, D), dtype, name="x")
    y = te.placeholder((N, D), dtype, name="y")
    z = te.compute((N, D), lambda i, j: x[i, j] + y[i, j], name="z")
    return [x, y], z
