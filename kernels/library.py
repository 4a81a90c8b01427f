"""The built-in operator library: operators declared in the DSL like any user's.

Each takes its dims and a `dtype`; narrow float inputs are computed in fp32 and stored back in
their own type by the generated kernels.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tiletune import tensorexpr as te
from tiletune.errors import UsageError
from tiletune.tensorexpr.operator import Operator, operator


@operator
def matmul(M, N, K, dtype="float16"):
    """C[M, N] = A[M, K] @ B[K, N]."""
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    return [a, b], c


@operator
def matmul_bias_relu(M, N, K, dtype="float16"):
    """Y[M, N] = relu(A[M, K] @ B[K, N] + bias[N]): a contraction with a fused epilogue."""
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    bias = te.placeholder((N,), dtype, name="bias")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    y = te.compute((M, N), lambda i, j: te.maximum(c[i, j] + bias[j], 0.0), name="y")
    return [a, b, bias], y


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


@operator
def add(N, D, dtype="float32"):
    """Z[N, D] = X[N, D] + Y[N, D]."""
    x = te.placeholder((N, D), dtype, name="x")
    y = te.placeholder((N, D), dtype, name="y")
    z = te.compute((N, D), lambda i, j: x[i, j] + y[i, j], name="z")
    return [x, y], z


BUILTINS: dict[str, Operator] = {
    op.name: op for op in (matmul, matmul_bias_relu, softmax, layernorm, rmsnorm, add)
}


def builtin(name: str) -> Operator:
    """The built-in operator called `name`."""
    if name not in BUILTINS:
        raise UsageError(f"no built-in operator '{name}'; built-ins are {', '.join(sorted(BUILTINS))}")
    return BUILTINS[name]


def resolve_operator(ref: str | Operator) -> Operator:
    """The operator named by `ref`: a built-in name, or `path/to/file.py:function` for one
    declared with `@tiletune.operator` in a user's file (the file is imported, as Python code
    the user wrote; nothing from a tuning DB is ever executed)."""
    if isinstance(ref, Operator):
        return ref
    if ":" not in ref:
        return builtin(ref)
    path_text, _, attr = ref.rpartition(":")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise UsageError(f"operator file '{path_text}' does not exist; expected path/to/file.py:function")
    module = _import_file(path.resolve())
    obj = getattr(module, attr, None)
    if obj is None:
        raise UsageError(f"'{path_text}' defines no '{attr}'")
    if not isinstance(obj, Operator):
        raise UsageError(f"'{path_text}:{attr}' is not an operator; decorate it with @tiletune.operator")
    return obj


# Imported operator files by resolved path; an explicit cache so a file is imported once.
_USER_MODULES: dict[Path, ModuleType] = {}


def _import_file(path: Path) -> ModuleType:
    if path in _USER_MODULES:
        return _USER_MODULES[path]
    name = "tiletune_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise UsageError(f"importing operator file '{path}' failed: {type(error).__name__}: {error}") from error
    _USER_MODULES[path] = module
    return module
