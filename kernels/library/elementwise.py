"""Elementwise (injective) operators, broadcasting numpy-style over ranks 1 to 4."""
from __future__ import annotations

from tiletune import tensorexpr as te
from tiletune.tensorexpr.operator import operator

__all__ = ["add", "broadcast_add", "broadcast_mul", "bias_add_3d", "scalar_add_1d"]


@operator
def add(N, D, dtype="float32"):
    """Z[N, D] = X[N, D] + Y[N, D]."""
    x = te.placeholder((N, D), dtype, name="x")
    y = te.placeholder((N, D), dtype, name="y")
    z = te.compute((N, D), lambda i, j: x[i, j] + y[i, j], name="z")
    return [x, y], z


@operator
def broadcast_add(N, C, H, W, dtype="float32"):
    """Z[N, C, H, W] = X[N, C, H, W] + B[C, 1, 1]: a per-channel bias over an NCHW tensor."""
    x = te.placeholder((N, C, H, W), dtype, name="x")
    b = te.placeholder((C, 1, 1), dtype, name="b")
    return [x, b], te.elementwise(lambda x, b: x + b, x, b, name="z")


@operator
def broadcast_mul(N, C, H, W, dtype="float32"):
    """Z[N, C, H, W] = X[N, C, H, W] * S[1, C, 1, 1]: a per-channel scale over an NCHW tensor."""
    x = te.placeholder((N, C, H, W), dtype, name="x")
    s = te.placeholder((1, C, 1, 1), dtype, name="s")
    return [x, s], te.elementwise(lambda x, s: x * s, x, s, name="z")


@operator
def bias_add_3d(B, S, D, dtype="float32"):
    """Z[B, S, D] = X[B, S, D] + BIAS[D]: a bias missing the leading dims, broadcast over them."""
    x = te.placeholder((B, S, D), dtype, name="x")
    bias = te.placeholder((D,), dtype, name="bias")
    return [x, bias], te.elementwise(lambda x, b: x + b, x, bias, name="z")


@operator
def scalar_add_1d(N, dtype="float32"):
    """Z[N] = X[N] + Y[1]: a rank-1 tensor plus a one-element tensor broadcast along it."""
    x = te.placeholder((N,), dtype, name="x")
    y = te.placeholder((1,), dtype, name="y")
    return [x, y], te.elementwise(lambda x, y: x + y, x, y, name="z")
