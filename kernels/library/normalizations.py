"""Normalisations: row reductions with the elementwise work around them, fused into one kernel."""
from __future__ import annotations

from tiletune import tensorexpr as te
from tiletune.tensorexpr.operator import operator

__all__ = ["softmax", "layernorm", "rmsnorm", "softmax_nd", "log_softmax_nd", "l2_normalize",
           "instancenorm", "groupnorm", "batchnorm"]


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


def _along(shape, dim: int):
    rank = len(shape)
    dim = dim + rank if dim < 0 else dim
    if not 0 <= dim < rank:
        from tiletune.errors import DSLError

        raise DSLError(f"dim {dim}: expected 0..{rank - 1} (or negative from the end)")
    return dim


def _softmax_parts(shape, dtype, dim):
    """x, the reduce-axis-indexed read, the row max and the row sum of exp(x - max) along `dim`."""
    dim = _along(shape, dim)
    x = te.placeholder(shape, dtype, name="x")
    rows = tuple(s for a, s in enumerate(shape) if a != dim)
    k1 = te.reduce_axis(shape[dim], name="k1")
    k2 = te.reduce_axis(shape[dim], name="k2")

    def at(idx, k):
        idx = list(idx)
        return x[tuple(idx[:dim] + [k] + idx[dim:])]

    m = te.compute(rows, lambda *i: te.max(at(i, k1), axis=k1), name="row_max")
    s = te.compute(rows, lambda *i: te.sum(te.exp(at(i, k2) - m[i]), axis=k2), name="row_sum")

    def row(idx):
        return tuple(a for p, a in enumerate(idx) if p != dim)

    return x, m, s, row


@operator
def softmax_nd(A, B, C, D, *, dim=-1, dtype="float32"):
    """Softmax of X[A, B, C, D] along `dim` (online: running max and rescaled sum in one loop)."""
    x, m, s, row = _softmax_parts((A, B, C, D), dtype, dim)
    y = te.compute((A, B, C, D), lambda *i: te.exp(x[i] - m[row(i)]) / s[row(i)], name="y")
    return [x], y


@operator
def log_softmax_nd(A, B, C, D, *, dim=-1, dtype="float32"):
    """Log-softmax of X[A, B, C, D] along `dim`: x - max - log(sum(exp(x - max)))."""
    x, m, s, row = _softmax_parts((A, B, C, D), dtype, dim)
    y = te.compute((A, B, C, D), lambda *i: x[i] - m[row(i)] - te.log(s[row(i)]), name="y")
    return [x], y


@operator
def l2_normalize(A, B, C, D, *, dim=-1, dtype="float32"):
    """X / max(||X||_2, 1e-12) along `dim` (torch.nn.functional.normalize)."""
    shape = (A, B, C, D)
    d = _along(shape, dim)
    x = te.placeholder(shape, dtype, name="x")
    k = te.reduce_axis(shape[d], name="k")
    rows = tuple(s for a, s in enumerate(shape) if a != d)

    def row(idx):
        return tuple(a for p, a in enumerate(idx) if p != d)

    sq = te.compute(rows, lambda *i: te.sum(x[i[:d] + (k,) + i[d:]] * x[i[:d] + (k,) + i[d:]], axis=k), name="sq")
    y = te.compute(shape, lambda *i: x[i] / te.maximum(te.sqrt(sq[row(i)]), 1e-12), name="y")
    return [x], y


@operator
def instancenorm(N, C, H, W, dtype="float32"):
    """Instance normalisation of X[N, C, H, W] over (H, W) per (n, c), eps 1e-5, no affine
    (torch.nn.functional.instance_norm's defaults)."""
    x = te.placeholder((N, C, H, W), dtype, name="x")
    k1, k2 = te.reduce_axis(H, name="kh"), te.reduce_axis(W, name="kw")
    total = te.compute((N, C), lambda n, c: te.sum(x[n, c, k1, k2], axis=(k1, k2)), name="total")
    mean = te.compute((N, C), lambda n, c: total[n, c] / (H * W), name="mean")
    q1, q2 = te.reduce_axis(H, name="qh"), te.reduce_axis(W, name="qw")
    sq = te.compute((N, C), lambda n, c: te.sum((x[n, c, q1, q2] - mean[n, c]) * (x[n, c, q1, q2] - mean[n, c]),
                                                 axis=(q1, q2)), name="sq")
    y = te.compute((N, C, H, W), lambda n, c, h, w: (x[n, c, h, w] - mean[n, c]) * te.rsqrt(sq[n, c] / (H * W) + 1e-5),
                   name="y")
    return [x], y


@operator
def groupnorm(N, G, CG, HW, dtype="float32"):
    """Group normalisation, eps 1e-5, with weight and bias. X is the [N, C, H, W] input viewed
    as [N, G, C // G, H * W] and weight/bias the [C] vectors viewed as [G, C // G] (free
    reshapes of contiguous tensors): each (n, g) normalises over (C // G, H * W)."""
    x = te.placeholder((N, G, CG, HW), dtype, name="x")
    w = te.placeholder((G, CG), dtype, name="w")
    b = te.placeholder((G, CG), dtype, name="b")
    k1, k2 = te.reduce_axis(CG, name="kc"), te.reduce_axis(HW, name="ks")
    total = te.compute((N, G), lambda n, g: te.sum(x[n, g, k1, k2], axis=(k1, k2)), name="total")
    mean = te.compute((N, G), lambda n, g: total[n, g] / (CG * HW), name="mean")
    q1, q2 = te.reduce_axis(CG, name="qc"), te.reduce_axis(HW, name="qs")
    sq = te.compute((N, G), lambda n, g: te.sum((x[n, g, q1, q2] - mean[n, g]) * (x[n, g, q1, q2] - mean[n, g]),
                                                 axis=(q1, q2)), name="sq")
    y = te.compute(
        (N, G, CG, HW),
        lambda n, g, c, s: (x[n, g, c, s] - mean[n, g]) * te.rsqrt(sq[n, g] / (CG * HW) + 1e-5) * w[g, c] + b[g, c],
        name="y",
    )
    return [x, w, b], y


@operator
def batchnorm(N, C, H, W, dtype="float32"):
    """Batch normalisation in inference form over X[N, C, H, W] with running mean and variance,
    weight and bias per channel, eps 1e-5: elementwise, no reduction."""
    x = te.placeholder((N, C, H, W), dtype, name="x")
    rm = te.placeholder((C,), dtype, name="running_mean")
    rv = te.placeholder((C,), dtype, name="running_var", domain=(0.0, 4.0))
    w = te.placeholder((C,), dtype, name="w")
    b = te.placeholder((C,), dtype, name="b")
    y = te.compute((N, C, H, W), lambda n, c, h, s: (x[n, c, h, s] - rm[c]) * te.rsqrt(rv[c] + 1e-5) * w[c] + b[c],
                   name="y")
    return [x, rm, rv, w, b], y
