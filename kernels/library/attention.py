"""Attention: softmax(q k^T * scale) v declared as ordinary stages (scores, row max,
probabilities, row sum, the weighted sum of values), which analysis recognises and lowers into
one flash-style kernel."""
from __future__ import annotations

from tiletune import tensorexpr as te
from tiletune.tensorexpr.operator import operator

__all__ = ["attention", "causal_attention", "cross_attention"]


def _sdpa(B, H, SQ, SK, D, causal: bool, dtype: str, name: str):
    """Stages of scaled dot-product attention over q[B, H, SQ, D], k and v[B, H, SK, D]."""
    q = te.placeholder((B, H, SQ, D), dtype, name="q")
    k = te.placeholder((B, H, SK, D), dtype, name="k")
    v = te.placeholder((B, H, SK, D), dtype, name="v")
    d = te.reduce_axis(D, name="d")
    scale = te.rsqrt(D)  # 1/sqrt(D), D a dim bound at call time
    s = te.compute(
        (B, H, SQ, SK), lambda b, h, i, j: te.sum(q[b, h, i, d] * k[b, h, j, d], axis=d) , name="qk")
    if causal:
        # top-left aligned, as torch's is_causal: query i sees keys 0..i
        scores = te.compute((B, H, SQ, SK), lambda b, h, i, j: te.where(j <= i, s[b, h, i, j] * scale, float("-inf")),
                            name="scores")
    else:
        scores = te.compute((B, H, SQ, SK), lambda b, h, i, j: s[b, h, i, j] * scale, name="scores")
    j1 = te.reduce_axis(SK, name="j1")
    row_max = te.compute((B, H, SQ), lambda b, h, i: te.max(scores[b, h, i, j1], axis=j1), name="row_max")
    p = te.compute((B, H, SQ, SK), lambda b, h, i, j: te.exp(scores[b, h, i, j] - row_max[b, h, i]), name="p")
    j2 = te.reduce_axis(SK, name="j2")
    row_sum = te.compute((B, H, SQ), lambda b, h, i: te.sum(p[b, h, i, j2], axis=j2), name="row_sum")
    j3 = te.reduce_axis(SK, name="j3")
    o = te.compute((B, H, SQ, D), lambda b, h, i, e: te.sum(p[b, h, i, j3] * v[b, h, j3, e], axis=j3), name="pv")
    out = te.compute((B, H, SQ, D), lambda b, h, i, e: (o[b, h, i, e] / row_sum[b, h, i]).astype(dtype), name=name)
    return [q, k, v], out


@operator
def attention(B, H, S, D, dtype="float16"):
    """O[B, H, S, D] = softmax(Q K^T / sqrt(D)) V over S keys: one fused flash-style kernel."""
    return _sdpa(B, H, S, S, D, False, dtype, "o")


@operator
def causal_attention(B, H, S, D, dtype="float16"):
    """Causal attention: query i attends to keys 0..i (top-left aligned, as torch's is_causal)."""
    return _sdpa(B, H, S, S, D, True, dtype, "o")


@operator
def cross_attention(B, H, SQ, SK, D, dtype="float16"):
    """O[B, H, SQ, D] = softmax(Q K^T / sqrt(D)) V with SQ queries over SK keys and values."""
    return _sdpa(B, H, SQ, SK, D, False, dtype, "o")
