"""Contractions: matrix products with their prologues and epilogues, one `tl.dot` kernel each."""
from __future__ import annotations

from tiletune import tensorexpr as te
from tiletune.tensorexpr.operator import operator

__all__ = ["matmul", "matmul_bias_relu"]


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
