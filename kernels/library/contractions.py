"""Contractions: matrix products with their prologues and epilogues, one `tl.dot` kernel each.

Transposed operands, batches and small or large K need no operator of their own in the backend:
the analysis finds the m/n/k roles from the indices, the kernel addresses operands through
their strides, and the automatic space sizes tiles (and offers SPLIT_K) from the dims.
"""
from __future__ import annotations

import math

from tiletune import tensorexpr as te
from tiletune.tensorexpr.operator import operator

__all__ = [
    "matmul",
    "matmul_bias_relu",
    "matmul_at_b",
    "matmul_a_bt",
    "matmul_at_bt",
    "bmm",
    "bmm_4d",
    "matvec",
    "matmul_cast_fp16",
    "matmul_scaled",
    "matmul_bias_gelu",
    "matmul_bias_silu",
    "matmul_residual",
    "matmul_row_col_scale",
    "matmul_fp8",
]


def _product(a, b, K, a_index, b_index, shape, name="c"):
    """C[shape] = sum over k of a[a_index(k, *axes)] * b[b_index(k, *axes)]."""
    k = te.reduce_axis(K, name="k")
    return te.compute(shape, lambda *ax: te.sum(a[a_index(k, *ax)] * b[b_index(k, *ax)], axis=k), name=name)


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
def matmul_at_b(M, N, K, dtype="float16"):
    """C[M, N] = A[K, M]^T @ B[K, N] (A stored transposed)."""
    a = te.placeholder((K, M), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    return [a, b], _product(a, b, K, lambda k, i, j: (k, i), lambda k, i, j: (k, j), (M, N))


@operator
def matmul_a_bt(M, N, K, dtype="float16"):
    """C[M, N] = A[M, K] @ B[N, K]^T (B stored transposed, as a linear layer's weight)."""
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((N, K), dtype, name="b")
    return [a, b], _product(a, b, K, lambda k, i, j: (i, k), lambda k, i, j: (j, k), (M, N))


@operator
def matmul_at_bt(M, N, K, dtype="float16"):
    """C[M, N] = A[K, M]^T @ B[N, K]^T (both operands stored transposed)."""
    a = te.placeholder((K, M), dtype, name="a")
    b = te.placeholder((N, K), dtype, name="b")
    return [a, b], _product(a, b, K, lambda k, i, j: (k, i), lambda k, i, j: (j, k), (M, N))


@operator
def bmm(B, M, N, K, dtype="float16"):
    """C[B, M, N] = A[B, M, K] @ B[B, K, N], one product per batch entry."""
    a = te.placeholder((B, M, K), dtype, name="a")
    b = te.placeholder((B, K, N), dtype, name="b")
    return [a, b], _product(a, b, K, lambda k, z, i, j: (z, i, k), lambda k, z, i, j: (z, k, j), (B, M, N))


@operator
def bmm_4d(B, H, M, N, K, dtype="float16"):
    """C[B, H, M, N] = A[B, H, M, K] @ B[B, H, K, N]: two batch axes (batch and heads)."""
    a = te.placeholder((B, H, M, K), dtype, name="a")
    b = te.placeholder((B, H, K, N), dtype, name="b")
    return [a, b], _product(
        a, b, K, lambda k, z, h, i, j: (z, h, i, k), lambda k, z, h, i, j: (z, h, k, j), (B, H, M, N)
    )


@operator
def matvec(M, K, dtype="float16"):
    """y[M] = A[M, K] @ x[K].

    With one output axis there is no "n" for `tl.dot`: the analysis classes it as a row
    reduction (rows of A, each reduced along K in one block), which is the bandwidth-bound
    kernel a matrix-vector product wants; its space tunes the rows per program and the warps.
    """
    a = te.placeholder((M, K), dtype, name="a")
    x = te.placeholder((K,), dtype, name="x")
    k = te.reduce_axis(K, name="k")
    y = te.compute((M,), lambda i: te.sum(a[i, k] * x[k], axis=k), name="y")
    return [a, x], y


@operator
def matmul_cast_fp16(M, N, K, dtype="float32"):
    """C[M, N] = fp16(A[M, K]) @ fp16(B[K, N]) in `dtype`: a prologue that rounds the inputs to
    fp16 so the product runs on fp16 tensor cores (accumulation stays fp32)."""
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute(
        (M, N), lambda i, j: te.sum(a[i, k].astype("float16") * b[k, j].astype("float16"), axis=k), name="c"
    )
    y = te.compute((M, N), lambda i, j: c[i, j].astype(dtype), name="y")
    return [a, b], y


@operator
def matmul_scaled(M, N, K, dtype="float16"):
    """C[M, N] = (A[M, K] * s[K]) @ B[K, N]: narrow inputs with an fp32 per-channel scale of A's
    columns (as in SmoothQuant), the scaled A rounded back to `dtype` for the tensor cores."""
    a = te.placeholder((M, K), dtype, name="a")
    s = te.placeholder((K,), "float32", name="s")
    b = te.placeholder((K, N), dtype, name="b")
    a_scaled = te.compute((M, K), lambda i, k: (a[i, k].astype("float32") * s[k]).astype(dtype), name="a_scaled")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a_scaled[i, k] * b[k, j], axis=k), name="c")
    return [a, s, b], c


def _bias_product(M, N, K, dtype):
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    bias = te.placeholder((N,), dtype, name="bias")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    return a, b, bias, c


@operator
def matmul_bias_gelu(M, N, K, dtype="float16"):
    """Y[M, N] = gelu(A @ B + bias[N]), the exact (erf) gelu, written inline with te functions."""
    a, b, bias, c = _bias_product(M, N, K, dtype)
    h = te.compute((M, N), lambda i, j: c[i, j] + bias[j], name="h")
    y = te.compute((M, N), lambda i, j: 0.5 * h[i, j] * (1.0 + te.erf(h[i, j] * (1.0 / math.sqrt(2.0)))), name="y")
    return [a, b, bias], y


@operator
def matmul_bias_silu(M, N, K, dtype="float16"):
    """Y[M, N] = silu(A @ B + bias[N]) = h * sigmoid(h), written inline with te functions."""
    a, b, bias, c = _bias_product(M, N, K, dtype)
    y = te.compute((M, N), lambda i, j: (c[i, j] + bias[j]) * te.sigmoid(c[i, j] + bias[j]), name="y")
    return [a, b, bias], y


@operator
def matmul_residual(M, N, K, dtype="float16"):
    """Y[M, N] = A[M, K] @ B[K, N] + R[M, N]: a residual added in the epilogue."""
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    r = te.placeholder((M, N), dtype, name="r")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    y = te.compute((M, N), lambda i, j: c[i, j] + r[i, j], name="y")
    return [a, b, r], y


@operator
def matmul_row_col_scale(M, N, K, dtype="float16"):
    """Y[M, N] = (A @ B)[i, j] * row_scale[i] * col_scale[j], fp32 scales (as in dequantizing
    a per-token, per-channel quantized product)."""
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    row_scale = te.placeholder((M,), "float32", name="row_scale")
    col_scale = te.placeholder((N,), "float32", name="col_scale")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    y = te.compute((M, N), lambda i, j: (c[i, j].astype("float32") * row_scale[i] * col_scale[j]).astype(dtype), name="y")
    return [a, b, row_scale, col_scale], y


@operator
def matmul_fp8(M, N, K, dtype="float16"):
    """Y[M, N] = (A[M, K] @ B[N, K]^T) * scale_a * scale_b: fp8 (e4m3) operands with per-tensor
    fp32 scales, as in an fp8 linear layer; the product runs on fp8 tensor cores (sm_89+) with
    fp32 accumulation, and `dtype` (float16 or bfloat16) is the output.

    B is stored [N, K] (a linear layer's weight), so both operands are K-contiguous, the layout
    fp8 wgmma reads on sm_90 without a transpose through shared memory. Each scale is a
    one-element tensor, so a new scale needs no recompile.
    """
    a = te.placeholder((M, K), "float8_e4m3fn", name="a")
    b = te.placeholder((N, K), "float8_e4m3fn", name="b")
    # dequantization scales are positive (amax / 448 of the tensor quantized)
    scale_a = te.placeholder((1,), "float32", name="scale_a", domain=(0.01, 1.0))
    scale_b = te.placeholder((1,), "float32", name="scale_b", domain=(0.01, 1.0))
    k = te.reduce_axis(K, name="k")
    # widened to fp32 so the sum is an fp32 one; the dot still takes the fp8 values as they are
    c = te.compute(
        (M, N), lambda i, j: te.sum(a[i, k].astype("float32") * b[j, k].astype("float32"), axis=k), name="c"
    )
    y = te.compute((M, N), lambda i, j: (c[i, j] * scale_a[0] * scale_b[0]).astype(dtype), name="y")
    return [a, b, scale_a, scale_b], y
