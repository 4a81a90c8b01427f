"""Losses: a reduction to a scalar of elementwise work over X[N, D] (and a target), as torch's
`reduction="mean"` (KL divergence: `reduction="batchmean"`). The elementwise work is fused into
the reduction; the sum accumulates in fp32 and the scalar is stored in the input dtype, as torch
returns it. Large inputs split the reduction across programs and a second kernel combines the
partial sums (see `kernels.reduce_kernel`)."""
from __future__ import annotations

from tiletune import tensorexpr as te
from tiletune.errors import DSLError
from tiletune.tensorexpr.operator import operator

__all__ = ["mse_loss", "huber_loss", "cross_entropy", "kl_div"]


def _mean_of(name: str, N, D, dtype, term, count=None):
    """The sum over (n, d) of `term(n, d)` divided by `count` (N * D: the mean): one sum over
    both axes, then the division."""
    i = te.reduce_axis(N, name="i")
    j = te.reduce_axis(D, name="j")
    total = te.compute((), lambda: te.sum(term(i, j), axis=(i, j)), name="total")
    return te.compute((), lambda: (total[()] / (N * D if count is None else count)).astype(dtype), name=name)


@operator
def mse_loss(N, D, dtype="float32"):
    """Y = mean((X - T)^2) over X[N, D], T[N, D] (torch.nn.functional.mse_loss)."""
    x = te.placeholder((N, D), dtype, name="x")
    t = te.placeholder((N, D), dtype, name="target")
    y = _mean_of("y", N, D, dtype, lambda i, j: (x[i, j] - t[i, j]) * (x[i, j] - t[i, j]))
    return [x, t], y


@operator
def huber_loss(N, D, *, delta=1.0, dtype="float32"):
    """Y = mean(huber(X - T)) over X[N, D], T[N, D] with huber(e) = e^2 / 2 where |e| < delta,
    else delta * (|e| - delta / 2) (torch.nn.functional.huber_loss)."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or delta <= 0:
        raise DSLError(f"huber_loss: delta must be a positive number, got {delta!r}")
    delta = float(delta)
    x = te.placeholder((N, D), dtype, name="x")
    t = te.placeholder((N, D), dtype, name="target")

    def term(i, j):
        e = te.abs(x[i, j] - t[i, j])
        return te.where(e < delta, 0.5 * e * e, delta * (e - 0.5 * delta))

    return [x, t], _mean_of("y", N, D, dtype, term)


@operator
def cross_entropy(N, C, dtype="float32"):
    """Y = cross-entropy of logits X[N, C] against class indices T[N] (int64), the mean over
    the rows whose target is a class (torch.nn.functional.cross_entropy; a target outside
    0..C-1, as torch's ignore_index -100, is ignored, where torch raises for other values).
    Per row, logsumexp(x[n, :]) - x[n, t[n]], the logsumexp by one online max/sum loop; the
    target's logit is a masked gather. All targets ignored gives NaN, as torch."""
    x = te.placeholder((N, C), dtype, name="x")
    target = te.placeholder((N,), "int64", name="target")
    k1 = te.reduce_axis(C, name="k1")
    row_max = te.compute((N,), lambda n: te.max(x[n, k1], axis=k1), name="row_max")
    k2 = te.reduce_axis(C, name="k2")
    row_sum = te.compute((N,), lambda n: te.sum(te.exp(x[n, k2] - row_max[n]), axis=k2), name="row_sum")
    counted = te.compute((N,), lambda n: te.where((target[n] >= 0) & (target[n] < C), 1.0, 0.0), name="counted")
    # the gather x[n, t[n]] under te.where: read (and loaded) only where the target is a class
    nll = te.compute((N,), lambda n: te.where(counted[n] > 0.0, te.log(row_sum[n]) + row_max[n] - x[n, target[n]], 0.0),
                     name="nll")
    i = te.reduce_axis(N, name="i")
    total = te.compute((), lambda: te.sum(nll[i], axis=i), name="total")
    j = te.reduce_axis(N, name="j")
    count = te.compute((), lambda: te.sum(counted[j], axis=j), name="count")
    # (total is in the input dtype, count in fp32: both are fp32 sums in the kernel)
    return [x, target], te.compute((), lambda: (total[()].astype("float32") / count[()]).astype(dtype), name="y")


@operator
def kl_div(N, C, *, log_target=False, dtype="float32"):
    """Y = KL divergence of target T[N, C] from the log-probabilities X[N, C], summed and divided
    by N (torch.nn.functional.kl_div with reduction="batchmean"): the sum of
    T * (log T - X), where a target of 0 (or less: not a probability) adds 0 as torch's xlogy
    does for 0; with `log_target=True` T holds log-probabilities and the term is
    exp(T) * (T - X)."""
    if not isinstance(log_target, bool):
        raise DSLError(f"kl_div: log_target must be True or False, got {log_target!r}")
    x = te.placeholder((N, C), dtype, name="x")
    t = te.placeholder((N, C), dtype, name="target")

    def term(i, j):
        if log_target:
            return te.exp(t[i, j]) * (t[i, j] - x[i, j])
        p = t[i, j]
        return te.where(p > 0.0, p * (te.log(p) - x[i, j]), 0.0)

    return [x, t], _mean_of("y", N, C, dtype, term, count=N)
