"""Activations: one elementwise function over X[N, D], each matching torch.nn.functional.

Each is a one-line use of `te.nn`, the expression-level helpers that any compute (a matmul's
epilogue included) can use. Attributes (a slope, torch's softplus threshold) are keyword-only
parameters with torch's defaults; `op.with_attrs(...)` gives other values.
"""
from __future__ import annotations

from tiletune import tensorexpr as te
from tiletune.tensorexpr.operator import operator

__all__ = [
    "relu", "leaky_relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "softplus", "softsign",
    "elu", "selu", "hardtanh", "hardsigmoid",
]


def _activation(N, D, dtype, fn):
    x = te.placeholder((N, D), dtype, name="x")
    y = te.compute((N, D), lambda i, j: fn(x[i, j]), name="y")
    return [x], y


@operator
def relu(N, D, dtype="float32"):
    """Y = max(X, 0) over X[N, D]."""
    return _activation(N, D, dtype, te.nn.relu)


@operator
def leaky_relu(N, D, *, negative_slope=0.01, dtype="float32"):
    """Y = X where X > 0, else negative_slope * X, over X[N, D]."""
    return _activation(N, D, dtype, lambda v: te.nn.leaky_relu(v, negative_slope))


@operator
def gelu(N, D, dtype="float32"):
    """Y = X * Phi(X) over X[N, D], exact (through erf), as torch's approximate="none"."""
    return _activation(N, D, dtype, te.nn.gelu)


@operator
def gelu_tanh(N, D, dtype="float32"):
    """Y = gelu(X) over X[N, D] in torch's tanh approximation (approximate="tanh")."""
    return _activation(N, D, dtype, lambda v: te.nn.gelu(v, approximate="tanh"))


@operator
def silu(N, D, dtype="float32"):
    """Y = X * sigmoid(X) over X[N, D] (swish)."""
    return _activation(N, D, dtype, te.nn.silu)


@operator
def sigmoid(N, D, dtype="float32"):
    """Y = 1 / (1 + exp(-X)) over X[N, D], stable for large |X|."""
    return _activation(N, D, dtype, te.nn.sigmoid)


@operator
def tanh(N, D, dtype="float32"):
    """Y = tanh(X) over X[N, D]."""
    return _activation(N, D, dtype, te.nn.tanh)


@operator
def softplus(N, D, *, beta=1.0, threshold=20.0, dtype="float32"):
    """Y = log(1 + exp(beta * X)) / beta over X[N, D], and X where beta * X > threshold."""
    return _activation(N, D, dtype, lambda v: te.nn.softplus(v, beta, threshold))


@operator
def softsign(N, D, dtype="float32"):
    """Y = X / (1 + |X|) over X[N, D]."""
    return _activation(N, D, dtype, te.nn.softsign)


@operator
def elu(N, D, *, alpha=1.0, dtype="float32"):
    """Y = X where X > 0, else alpha * (exp(X) - 1), over X[N, D]."""
    return _activation(N, D, dtype, lambda v: te.nn.elu(v, alpha))


@operator
def selu(N, D, dtype="float32"):
    """Y = scale * elu(X, alpha) over X[N, D] with torch's SELU constants."""
    return _activation(N, D, dtype, te.nn.selu)


@operator
def hardtanh(N, D, *, min_val=-1.0, max_val=1.0, dtype="float32"):
    """Y = X clamped to [min_val, max_val] over X[N, D]."""
    return _activation(N, D, dtype, lambda v: te.nn.hardtanh(v, min_val, max_val))


@operator
def hardsigmoid(N, D, dtype="float32"):
    """Y = clamp(X + 3, 0, 6) / 6 over X[N, D]."""
    return _activation(N, D, dtype, te.nn.hardsigmoid)
