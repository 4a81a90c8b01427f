"""Losses: a reduction to a scalar of elementwise work over X[N, D] (and a target), as torch's
`reduction="mean"` (KL divergence: `reduction="batchmean"`). The elementwise work is fused into
the reduction; the sum accumulates in fp32 and the scalar is stored in the input dtype, as torch
returns it. Large inputs split the reduction across programs and a second kernel combines the
partial sums (see `kernels.reduce_kernel`)."""
from __future__ import annotations

from tiletune import tensorexpr as te
from tiletune.errors import DSLError
from tiletune.tensorexpr.operator import operator

__all__ = ["mse_loss", "huber_loss"]


def _mean_of(name: str, N, D, dtype, term):
    """mean over (n, d) of `term(n, d)`: one sum over both axes, then the division."""
    i = te.reduce_axis(N, name="i")
    j = te.reduce_axis(D, name="j")
    total = te.compute((), lambda: te.sum(term(i, j), axis=(i, j)), name="total")
    return te.compute((), lambda: (total[()] / (N * D)).astype(dtype), name=name)


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
