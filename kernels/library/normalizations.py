"""Normalisations: row reductions with the elementwise work around them, fused into one kernel."""
from __future__ import annotations

from tiletune import tensorexpr as te
from tiletune.tensorexpr.operator import operator

__all__ = ["softmax", "layernorm", "rmsnorm"]


@operator
def softmax(N, D, dtype="float32"):
    """Softmax over the last axis of X[N, D], numerically stable (max subtracted)."""
    x = te.placeholder((N, D), dtype, name="x")
    k1 = te.reduce_axis(D, name="k1")
    row_max = te.compute((N,), lambda i: te.max(x[i, k1], axis=k1), name="row_max")
    e = te.compute((N, D), lambda i, j: te.exp(x[i, j] - row_max[i]), name="e")
    k2 = te.reduce_axis(D, name="k2")
    row_sum = te.compute((N,), lambda i: te.sum(e[i, k2], axis=k2), name="row_sum")
    y = te.compute((N, D), lambda i, j: e[i, j] / row_sum[i], name="y")
    return [x], y


@operator
def layernorm(N, D, dtype="float32"):
    """Layer normalisation of X[N, D] over D with weight and bias, eps 1e-5."""
    x = te.placeholder((N, D), dtype, name="x")
    w = te.placeholder((D,), dtype, name="w")
    b = te.placeholder((D,), dtype, name="b")
    k1 = te.reduce_axis(D, name="k1")
    total = te.compute((N,), lambda i: te.sum(x[i, k1], axis=k1), name="total")
    mean = te.compute((N,), lambda i: total[i] / D, name="mean")
    k2 = te.reduce_axis(D, name="k2")
    sq = te.compute((N,), lambda i: te.sum((x[i, k2] - mean[i]) * (x[i, k2] - mean[i]), axis=k2), name="sq")
    y = te.compute(
        (N, D),
        lambda i, j: (x[i, j] - mean[i]) * te.rsqrt(sq[i] / D + 1e-5) * w[j] + b[j],
        name="y",
    )
    return [x, w, b], y


@operator
def rmsnorm(N, D, dtype="float32"):
    """RMS normalisation of X[N, D] over D with a weight, eps 1e-6."""
    x = te.placeholder((N, D), dtype, name="x")
    w = te.placeholder((D,), dtype, name="w")
    k = te.reduce_axis(D, name="k")
    ms = te.compute((N,), lambda i: te.sum(x[i, k] * x[i, k], axis=k), name="ms")
    y = te.compute((N, D), lambda i, j: x[i, j] * te.rsqrt(ms[i] / D + 1e-6) * w[j], name="y")
    return [x, w], y
