"""Operators a user declares go through the same path as the built-ins: op-class analysis, the
automatic schedule, lowering, Triton's interpreter. Each is checked against the reference
evaluator, and a few against torch computed independently of it."""
from __future__ import annotations

import math

import pytest
import torch

from tiletune import tensorexpr as te
from tiletune.tensorexpr.analysis import OpClass
from tiletune.kernels.families import analyse
from tiletune.kernels.families.rows import row_layout

FLOATS = ("float32", "float16", "bfloat16")
TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def randn(*shape: int, dtype: str = "float32", seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(TORCH[dtype])


def close(out: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> None:
    torch.testing.assert_close(out.double(), expected.double(), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# contractions: operand layouts, batch axes, epilogues, prologues


@te.operator
def matmul_at(M, N, K, dtype="float16"):
    a = te.placeholder((K, M), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[k, i] * b[k, j], axis=k), name="c")
    return [a, b], c


@te.operator
def matmul_bt(M, N, K, dtype="float16"):
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((N, K), dtype, name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[j, k], axis=k), name="c")
    return [a, b], c


@te.operator
def matmul_atbt(M, N, K, dtype="float16"):
    a = te.placeholder((K, M), dtype, name="a")
    b = te.placeholder((N, K), dtype, name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(b[j, k] * a[k, i], axis=k), name="c")
    return [a, b], c


@te.operator
def bmm(B, M, N, K, dtype="float16"):
    a = te.placeholder((B, M, K), dtype, name="a")
    b = te.placeholder((B, K, N), dtype, name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute((B, M, N), lambda z, i, j: te.sum(a[z, i, k] * b[z, k, j], axis=k), name="c")
    return [a, b], c


@te.operator
def attention_scores(B, H, M, N, K, dtype="float16"):
    """q @ k^T per (batch, head): two batch axes, and the second operand transposed."""
    q = te.placeholder((B, H, M, K), dtype, name="q")
    kt = te.placeholder((B, H, N, K), dtype, name="kt")
    r = te.reduce_axis(K, name="r")
    s = te.compute((B, H, M, N), lambda z, h, i, j: te.sum(q[z, h, i, r] * kt[z, h, j, r], axis=r), name="s")
    return [q, kt], s


CONTRACTION_DIMS = dict(M=37, N=19, K=45)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", [matmul_at, matmul_bt, matmul_atbt], ids=lambda op: op.name)
def test_transposed_operands(verified, op, dtype):
    assert analyse(op.graph(dtype)).op_class is OpClass.CONTRACTION
    verified(op.graph(dtype), CONTRACTION_DIMS)
    verified(op.graph(dtype), CONTRACTION_DIMS, BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_batched_matmul_3d(verified, dtype):
    graph = bmm.graph(dtype)
    c = analyse(graph).contraction
    assert [a.name for a in c.batch] == ["z"] and (c.m.name, c.n.name, c.k.name) == ("i", "j", "k")
    verified(graph, dict(B=3, **CONTRACTION_DIMS))


def test_batched_matmul_4d_matches_torch(lowered):
    graph = attention_scores.graph("float16")
    assert [a.name for a in analyse(graph).contraction.batch] == ["z", "h"]
    dims = dict(B=2, H=3, M=21, N=17, K=40)
    kernel = lowered(graph, dims, BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)
    q, kt = randn(2, 3, 21, 40, dtype="float16", seed=1), randn(2, 3, 17, 40, dtype="float16", seed=2)
    expected = (q.double() @ kt.double().transpose(-1, -2)).to(torch.float16)
    close(kernel.run([q, kt]), expected, rtol=1e-2, atol=1e-2)
    assert kernel.check().ok


@te.operator
def matmul_scaled(M, N, K, dtype="float16"):
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    y = te.compute((M, N), lambda i, j: c[i, j] * 0.125, name="y")
    return [a, b], y


@te.operator
def matmul_residual(M, N, K, dtype="float16"):
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    r = te.placeholder((M, N), dtype, name="r")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    y = te.compute((M, N), lambda i, j: c[i, j] + r[i, j], name="y")
    return [a, b, r], y


@te.operator
def matmul_bias_gelu(M, N, K, dtype="float16"):
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    bias = te.placeholder((N,), dtype, name="bias")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    v = te.compute((M, N), lambda i, j: c[i, j] + bias[j], name="v")
    y = te.compute((M, N), lambda i, j: 0.5 * v[i, j] * (1.0 + te.erf(v[i, j] * 0.7071067811865476)), name="y")
    return [a, b, bias], y


@te.operator
def matmul_to_half(M, N, K):
    """float32 operands, a float16 result."""
    a = te.placeholder((M, K), "float32", name="a")
    b = te.placeholder((K, N), "float32", name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    y = te.compute((M, N), lambda i, j: c[i, j].astype("float16"), name="y")
    return [a, b], y


@te.operator
def matmul_transposed_store(M, N, K, dtype="float16"):
    """The epilogue stores the accumulator transposed: y[j, i] = c[i, j]."""
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    y = te.compute((N, M), lambda j, i: c[i, j] * 2.0, name="y")
    return [a, b], y


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    "op", [matmul_scaled, matmul_residual, matmul_bias_gelu, matmul_transposed_store], ids=lambda op: op.name
)
def test_epilogues(verified, op, dtype):
    graph = op.graph(dtype)
    assert analyse(graph).op_class is OpClass.CONTRACTION
    verified(graph, CONTRACTION_DIMS)


def test_epilogue_cast_to_half(verified):
    graph = matmul_to_half.graph()
    assert graph.output.dtype == "float16"
    verified(graph, CONTRACTION_DIMS)


def test_bias_gelu_epilogue_matches_torch(lowered):
    kernel = lowered(matmul_bias_gelu.graph("float32"), CONTRACTION_DIMS)
    a, b, bias = randn(37, 45, seed=1), randn(45, 19, seed=2), randn(19, seed=3)
    expected = torch.nn.functional.gelu(a.double() @ b.double() + bias.double())
    close(kernel.run([a, b, bias]), expected, rtol=1e-4, atol=1e-4)


@te.operator
def matmul_scaled_operand(M, N, K, dtype="float16"):
    """An injective producer of an operand, inlined into the dot's loads."""
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    a2 = te.compute((M, K), lambda i, k: a[i, k] * 2.0, name="a2")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a2[i, k] * b[k, j], axis=k), name="c")
    return [a, b], c


@te.operator
def matmul_cast_operands(M, N, K):
    """float32 operands rounded to float16 before the product (a cast prologue on both)."""
    a = te.placeholder((M, K), "float32", name="a")
    b = te.placeholder((K, N), "float32", name="b")
    a16 = te.compute((M, K), lambda i, k: a[i, k].astype("float16"), name="a16")
    b16 = te.compute((K, N), lambda k, j: b[k, j].astype("float16"), name="b16")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a16[i, k] * b16[k, j], axis=k), name="c")
    return [a, b], c


@te.operator
def matmul_scaled_rows(M, N, K, dtype="float16"):
    """A prologue that reads a second tensor: the rows of a scaled by s[i], then b transposed."""
    a = te.placeholder((M, K), dtype, name="a")
    s = te.placeholder((M,), dtype, name="s")
    b = te.placeholder((N, K), dtype, name="b")
    sa = te.compute((M, K), lambda i, k: a[i, k] * s[i], name="sa")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(sa[i, k] * b[j, k], axis=k), name="c")
    return [a, s, b], c


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", [matmul_scaled_operand, matmul_scaled_rows], ids=lambda op: op.name)
def test_prologue_fusion(lowered, op, dtype):
    graph = op.graph(dtype)
    kernel = lowered(graph, CONTRACTION_DIMS)
    # the producer is inlined into the loads of the dot loop, not a stage of its own
    assert analyse(graph).anchors == (graph.output,)
    loop = kernel.src.text.split("for k0 in range")[1].split("acc = tl.dot")[0]
    tail = kernel.src.text.split("if not EVEN_K:")[1].split("acc = tl.dot")[0]
    # whole K tiles need no zeroing; the partial last one zeroes the computed factor past K
    assert "a_masked" not in loop and "a_masked" in tail and "mask_k" in tail
    verdict = kernel.check()
    assert verdict.ok, verdict.reason


def test_cast_prologue_matches_torch(lowered):
    graph = matmul_cast_operands.graph()
    kernel = lowered(graph, CONTRACTION_DIMS)
    # regression: the casts were dropped as if the operands were loaded in their own type
    loop = kernel.src.text.split("for k0 in range")[1].split("acc = tl.dot")[0]
    assert loop.count(".to(tl.float16)") == 2
    a, b = randn(37, 45, seed=1), randn(45, 19, seed=2)
    # a sum of float16 products is float16, accumulated in fp32 and rounded once at the store;
    # without the operands' rounding the error reaches several float16 ulps, within verify's
    # tolerance but not within this one
    assert graph.output.dtype == "float16"
    expected = (a.half().double() @ b.half().double()).half()
    close(kernel.run([a, b]), expected, rtol=1e-3, atol=1e-3)
    assert kernel.check().ok


def test_transposed_operand_matches_torch(lowered):
    kernel = lowered(matmul_atbt.graph("float16"), dict(M=1, N=33, K=70), BLOCK_K=32)
    a, b = randn(70, 1, dtype="float16", seed=4), randn(33, 70, dtype="float16", seed=5)
    expected = (a.double().T @ b.double().T).half()
    close(kernel.run([a, b]), expected, rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------------------------------------
# injective operators


@te.operator
def bias_row_scale(N, D, dtype="float32"):
    x = te.placeholder((N, D), dtype, name="x")
    b = te.placeholder((D,), dtype, name="b")
    s = te.placeholder((N,), dtype, name="s")
    y = te.compute((N, D), lambda i, j: (x[i, j] + b[j]) * s[i], name="y")
    return [x, b, s], y


@te.operator
def axpy(N, dtype="float32"):
    x = te.placeholder((N,), dtype, name="x")
    y = te.placeholder((N,), dtype, name="y")
    z = te.compute((N,), lambda i: x[i] * 2.5 + y[i], name="z")
    return [x, y], z


@te.operator
def add_3d(A, B, C, dtype="float32"):
    x = te.placeholder((A, B, C), dtype, name="x")
    b = te.placeholder((C,), dtype, name="b")
    s = te.placeholder((A, B), dtype, name="s")
    y = te.compute((A, B, C), lambda p, q, r: x[p, q, r] * s[p, q] + b[r], name="y")
    return [x, b, s], y


@te.operator
def permute_3d(A, B, C, dtype="float32"):
    """y[r, p, q] = x[p, q, r]: the output's lane axis is not the input's contiguous one."""
    x = te.placeholder((A, B, C), dtype, name="x")
    y = te.compute((C, A, B), lambda r, p, q: x[p, q, r], name="y")
    return [x], y


@te.operator
def leaky_clip(N, D, dtype="float32"):
    """where and every comparison, combined with & | ~."""
    x = te.placeholder((N, D), dtype, name="x")
    y = te.placeholder((N, D), dtype, name="y")

    def f(i, j):
        v, w = x[i, j], y[i, j]
        leaky = te.where(v > 0.0, v, v * 0.1)
        inside = (v >= -0.5) & (v <= 0.5)
        picked = te.where(inside | (w < v), leaky, w)
        flags = te.where(te.equal(j % 3, 0), 1.0, 0.0) + te.where(te.not_equal(i, 2) & ~(v < w), 2.0, 0.0)
        return picked + flags

    z = te.compute((N, D), f, name="z")
    return [x, y], z


@te.operator
def all_functions(N, D, dtype="float32"):
    """Every elementwise function of the DSL, with arguments inside their domains."""
    x = te.placeholder((N, D), dtype, name="x")
    y = te.placeholder((N, D), dtype, name="y")

    def f(i, j):
        v, w = x[i, j], y[i, j]
        return (
            te.exp(v) * 0.1 + te.log(te.abs(v) + 1.0) + te.sqrt(te.abs(w)) + te.rsqrt(te.abs(v) + 1.0)
            + te.tanh(v) + te.sigmoid(w) + te.erf(v) + te.abs(w) - v
            + te.maximum(v, w) * te.minimum(v, w)
        )

    z = te.compute((N, D), f, name="z")
    return [x, y], z


@te.operator
def negate_abs(N, D, dtype="float32"):
    """Negation and abs alone: no other float math would widen a narrow input first."""
    x = te.placeholder((N, D), dtype, name="x")
    z = te.compute((N, D), lambda i, j: te.where(x[i, j] > 0.0, -x[i, j], te.abs(x[i, j])), name="z")
    return [x], z


INJECTIVE_DIMS = dict(N=5, D=37)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", [bias_row_scale, leaky_clip, all_functions, negate_abs], ids=lambda op: op.name)
def test_injective_2d(verified, op, dtype):
    graph = op.graph(dtype)
    assert analyse(graph).op_class is OpClass.INJECTIVE
    verified(graph, INJECTIVE_DIMS)
    verified(graph, dict(N=1, D=131), BLOCK_LANE=16, BLOCK_ROWS=1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_injective_1d(verified, dtype):
    verified(axpy.graph(dtype), dict(N=1))
    verified(axpy.graph(dtype), dict(N=131), BLOCK_LANE=32)


@pytest.mark.parametrize("op", [add_3d, permute_3d], ids=lambda op: op.name)
def test_injective_3d(verified, op):
    dims = dict(A=3, B=5, C=7)
    verified(op.graph("float16"), dims)
    verified(op.graph("float32"), dims, BLOCK_ROWS=4, BLOCK_LANE=16)


def test_broadcast_and_functions_match_torch(lowered):
    kernel = lowered(all_functions.graph("float32"), INJECTIVE_DIMS)
    x, y = randn(5, 37, seed=1), randn(5, 37, seed=2)
    xd, yd = x.double(), y.double()
    expected = (
        torch.exp(xd) * 0.1 + torch.log(xd.abs() + 1) + yd.abs().sqrt() + torch.rsqrt(xd.abs() + 1)
        + torch.tanh(xd) + torch.sigmoid(yd) + torch.erf(xd) + yd.abs() - xd + torch.maximum(xd, yd) * torch.minimum(xd, yd)
    )
    close(kernel.run([x, y]), expected, rtol=1e-5, atol=1e-5)

    kernel = lowered(permute_3d.graph("float32"), dict(A=3, B=5, C=7))
    x = randn(3, 5, 7, seed=3)
    close(kernel.run([x]), x.permute(2, 0, 1), rtol=0, atol=0)


# windowed index arithmetic


@te.operator
def odd_elements(N, dtype="float32"):
    x = te.placeholder((2 * N + 1,), dtype, name="x")
    y = te.compute((N,), lambda i: x[i * 2 + 1], name="y")
    return [x], y


@te.operator
def stencil(N, D, dtype="float32"):
    """A 3-point stencil along the row, zero-padded: shifted reads guarded by te.where."""
    x = te.placeholder((N, D), dtype, name="x")

    def f(i, j):
        left = te.where(j >= 1, x[i, j - 1], 0.0)
        right = te.where(j + 1 < D, x[i, j + 1], 0.0)
        return left - 2.0 * x[i, j] + right

    y = te.compute((N, D), f, name="y")
    return [x], y


@te.operator
def roll_and_halve(N, D, dtype="float32"):
    """Index arithmetic on negative values: Python's `%` and `//` (floor), not C's."""
    x = te.placeholder((N, D), dtype, name="x")
    y = te.compute((N, D), lambda i, j: x[i, (j - 1) % D] + x[i, (j - 3) // 2 + 2] * 0.5, name="y")
    return [x], y


@pytest.mark.parametrize("dtype", ("float32", "bfloat16"))
@pytest.mark.parametrize("op", [stencil, roll_and_halve], ids=lambda op: op.name)
def test_windowed_2d(verified, op, dtype):
    verified(op.graph(dtype), INJECTIVE_DIMS)
    verified(op.graph(dtype), dict(N=3, D=70), BLOCK_LANE=16, BLOCK_ROWS=2)


def test_strided_read(verified):
    verified(odd_elements.graph("float32"), dict(N=1))
    verified(odd_elements.graph("float16"), dict(N=45), BLOCK_LANE=16)


def test_windowed_reads_match_torch(lowered):
    x = randn(5, 37, seed=6)
    kernel = lowered(roll_and_halve.graph("float32"), INJECTIVE_DIMS)
    j = torch.arange(37)
    halves = torch.div(j - 3, 2, rounding_mode="floor") + 2
    close(kernel.run([x]), torch.roll(x, 1, dims=1) + x[:, halves] * 0.5, rtol=1e-6, atol=1e-6)

    kernel = lowered(stencil.graph("float32"), INJECTIVE_DIMS)
    padded = torch.nn.functional.pad(x, (1, 1))
    close(kernel.run([x]), padded[:, :-2] - 2 * x + padded[:, 2:], rtol=1e-6, atol=1e-6)

    kernel = lowered(odd_elements.graph("float32"), dict(N=45))
    x = randn(91, seed=7)
    close(kernel.run([x]), x[1::2], rtol=0, atol=0)


@te.operator
def int_divmod(N, D):
    """Integer `//` and `%` of values that may be negative, by constants of either sign and by
    a divisor read from data."""
    x = te.placeholder((N, D), "int32", name="x")
    d = te.placeholder((N, D), "int32", name="d")

    def f(i, j):
        v = x[i, j]
        divisor = te.abs(d[i, j]) + 1
        return v // 3 + (v % 3) * 10 + (v // -4) * 100 + (v % -4) * 1000 + (v // divisor) * 10000 + (v % divisor) * 100000

    y = te.compute((N, D), f, name="y")
    return [x, d], y


def test_integer_floor_division_matches_python(lowered):
    kernel = lowered(int_divmod.graph(), INJECTIVE_DIMS)
    verdict = kernel.check()
    assert verdict.ok, verdict.reason
    gen = torch.Generator().manual_seed(8)
    x = torch.randint(-20, 20, (5, 37), generator=gen, dtype=torch.int32)
    d = torch.randint(-6, 6, (5, 37), generator=gen, dtype=torch.int32)
    xl, div = x.long(), d.long().abs() + 1
    fl = lambda a, b: torch.div(a, b, rounding_mode="floor")  # noqa: E731
    expected = (fl(xl, 3) + torch.remainder(xl, 3) * 10 + fl(xl, -4) * 100 + torch.remainder(xl, -4) * 1000
                + fl(xl, div) * 10000 + torch.remainder(xl, div) * 100000)
    assert torch.equal(kernel.run([x, d]).long(), expected)


# ---------------------------------------------------------------------------------------------
# reductions


@te.operator
def row_range(N, D, dtype="float32"):
    """max minus min of each row: two reductions, an output with no lane axis."""
    x = te.placeholder((N, D), dtype, name="x")
    k1 = te.reduce_axis(D, name="k1")
    k2 = te.reduce_axis(D, name="k2")
    hi = te.compute((N,), lambda i: te.max(x[i, k1], axis=k1), name="hi")
    lo = te.compute((N,), lambda i: te.min(x[i, k2], axis=k2), name="lo")
    y = te.compute((N,), lambda i: hi[i] - lo[i], name="y")
    return [x], y


@te.operator
def row_sum(N, D, dtype="float32"):
    x = te.placeholder((N, D), dtype, name="x")
    k = te.reduce_axis(D, name="k")
    y = te.compute((N,), lambda i: te.sum(x[i, k], axis=k), name="y")
    return [x], y


@te.operator
def middle_sum(A, R, C, dtype="float32"):
    """A sum over the middle axis of a 3-D tensor: rows are (a, c), the lane runs along r."""
    x = te.placeholder((A, R, C), dtype, name="x")
    k = te.reduce_axis(R, name="k")
    y = te.compute((A, C), lambda p, q: te.sum(x[p, k, q], axis=k), name="y")
    return [x], y


@te.operator
def middle_softmax(A, R, C, dtype="float32"):
    """Softmax along the middle axis: the output's lane is its middle axis."""
    x = te.placeholder((A, R, C), dtype, name="x")
    k1 = te.reduce_axis(R, name="k1")
    k2 = te.reduce_axis(R, name="k2")
    m = te.compute((A, C), lambda p, q: te.max(x[p, k1, q], axis=k1), name="m")
    e = te.compute((A, R, C), lambda p, r, q: te.exp(x[p, r, q] - m[p, q]), name="e")
    s = te.compute((A, C), lambda p, q: te.sum(e[p, k2, q], axis=k2), name="s")
    y = te.compute((A, R, C), lambda p, r, q: e[p, r, q] / s[p, q], name="y")
    return [x], y


@te.operator
def max_shifted_prefix(N, D, E):
    """The output covers only the first E elements of each row: its axis j is not the row's
    lane (extent E, the reduction runs over D), so the lane cannot be shared."""
    x = te.placeholder((N, D), "float32", name="x")
    z = te.placeholder((N, E), "float32", name="z")
    k = te.reduce_axis(D, name="k")
    m = te.compute((N,), lambda i: te.max(x[i, k], axis=k), name="m")
    y = te.compute((N, E), lambda i, j: x[i, j] - m[i] + z[i, j], name="y")
    return [x, z], y


@pytest.mark.parametrize("dtype", FLOATS)
def test_max_and_min_reductions(verified, dtype):
    graph = row_range.graph(dtype)
    assert [t.name for t in analyse(graph).reductions] == ["hi", "lo"]
    assert row_layout(graph, analyse(graph)).lane is None
    verified(graph, dict(N=37, D=70))
    verified(graph, dict(N=3, D=1), BLOCK_ROWS=1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_row_sum_without_lane_axis(verified, dtype):
    graph = row_sum.graph(dtype)
    assert row_layout(graph, analyse(graph)).lane is None
    verified(graph, dict(N=37, D=70))
    verified(graph, dict(N=1, D=131))


@pytest.mark.parametrize("op", [middle_sum, middle_softmax], ids=lambda op: op.name)
@pytest.mark.parametrize("dtype", ("float32", "float16"))
def test_reduction_over_middle_axis(verified, op, dtype):
    graph = op.graph(dtype)
    layout = row_layout(graph, analyse(graph))
    assert [a.name for a in layout.rows] == ["p", "q"]
    verified(graph, dict(A=3, R=37, C=5))
    verified(graph, dict(A=1, R=19, C=2), BLOCK_RED=1, BLOCK_LANE=16)


def test_reductions_match_torch(lowered):
    x = randn(37, 70, seed=9)
    close(lowered(row_sum.graph("float32"), dict(N=37, D=70)).run([x]), x.double().sum(1), rtol=1e-5, atol=1e-5)
    close(lowered(row_range.graph("float32"), dict(N=37, D=70)).run([x]),
          x.amax(1) - x.amin(1), rtol=1e-6, atol=1e-6)
    x3 = randn(3, 37, 5, seed=10)
    close(lowered(middle_sum.graph("float32"), dict(A=3, R=37, C=5)).run([x3]),
          x3.double().sum(1), rtol=1e-5, atol=1e-5)
    close(lowered(middle_softmax.graph("float32"), dict(A=3, R=37, C=5)).run([x3]),
          torch.softmax(x3.double(), dim=1), rtol=1e-5, atol=1e-6)


def test_output_over_part_of_the_row_stays_in_bounds(lowered):
    """Regression: the output axis j (extent E) was taken for the row's lane (extent D > E), so
    the kernel stored D elements into rows of E and wrote past the output."""
    graph = max_shifted_prefix.graph()
    assert row_layout(graph, analyse(graph)).lane is None
    kernel = lowered(graph, dict(N=6, D=40, E=20))
    verdict = kernel.check()
    assert verdict.ok, verdict.reason
    x, z = randn(6, 40, seed=11), randn(6, 20, seed=12)
    # the output as a view into a wider buffer: a store past column E would show in the margin
    buffer = torch.full((6, 48), math.nan)
    out = buffer[:, :20]
    from tiletune.kernels import runtime

    runtime.launch(kernel.src, [x, z], out, kernel.dims)
    assert torch.isnan(buffer[:, 20:]).all()
    close(out, x[:, :20] - x.amax(1, keepdim=True) + z, rtol=1e-6, atol=1e-6)


@te.operator
def total(D, dtype="float32"):
    """The sum of a whole vector: a 0-d output."""
    x = te.placeholder((D,), dtype, name="x")
    k = te.reduce_axis(D, name="k")
    y = te.compute((), lambda: te.sum(x[k], axis=k), name="y")
    return [x], y


@te.operator
def column_sum(R, C, dtype="float32"):
    x = te.placeholder((R, C), dtype, name="x")
    k = te.reduce_axis(R, name="k")
    y = te.compute((C,), lambda j: te.sum(x[k, j], axis=k), name="y")
    return [x], y


@te.operator
def int_row_stats(N, D):
    """Integer reductions, consumed by integer arithmetic (`//` of a row sum)."""
    x = te.placeholder((N, D), "int32", name="x")
    k1 = te.reduce_axis(D, name="k1")
    k2 = te.reduce_axis(D, name="k2")
    k3 = te.reduce_axis(D, name="k3")
    s = te.compute((N,), lambda i: te.sum(x[i, k1], axis=k1), name="s")
    hi = te.compute((N,), lambda i: te.max(x[i, k2], axis=k2), name="hi")
    lo = te.compute((N,), lambda i: te.min(x[i, k3], axis=k3), name="lo")
    y = te.compute((N, D), lambda i, j: x[i, j] * 1000 + s[i] // 3 + (hi[i] - lo[i]) * 7, name="y")
    return [x], y


@pytest.mark.parametrize("dtype", FLOATS)
def test_scalar_output(verified, dtype):
    """Regression: the (1, 1) tile of a 0-d output was stored through a scalar pointer."""
    verified(total.graph(dtype), dict(D=131))
    verified(total.graph(dtype), dict(D=1))


def test_reduction_over_the_first_axis(verified):
    verified(column_sum.graph("float32"), dict(R=37, C=5))
    verified(column_sum.graph("bfloat16"), dict(R=1, C=19), BLOCK_RED=1)


def test_integer_reductions(verified, lowered):
    """Regression: integer reductions were padded with float identities (0.0, -inf), which
    made the tile float and broke integer `//` after them."""
    verified(int_row_stats.graph(), dict(N=5, D=37))
    verified(int_row_stats.graph(), dict(N=3, D=1), BLOCK_ROWS=1)
    kernel = lowered(int_row_stats.graph(), dict(N=5, D=37))
    assert 'float("-inf")' not in kernel.src.text and "-2147483648" in kernel.src.text


def _stage_named(name: str, input_name: str = "x"):
    @te.operator
    def named(N, D):
        x = te.placeholder((N, D), "float32", name=input_name)
        k = te.reduce_axis(D, name="k")
        m = te.compute((N,), lambda i: te.max(x[i, k], axis=k), name=name)
        y = te.compute((N, D), lambda i, j: x[i, j] - m[i], name="y")
        return [x], y

    return named


@pytest.mark.parametrize("stage, tensor", [("tl", "x"), ("mask_rows", "x"), ("offs_lane", "in"), ("max", "from")])
def test_names_that_clash_with_the_kernel(verified, stage, tensor):
    """Regression: a reduction stage named like a kernel local (or `tl`) overwrote it, and an
    input named like a Python keyword made the launcher a syntax error."""
    verified(_stage_named(stage, tensor).graph(), dict(N=5, D=37))


def test_strided_inputs(lowered):
    """Strides are arguments: transposed and sliced views run without a copy."""
    kernel = lowered(bias_row_scale.graph("float32"), INJECTIVE_DIMS)
    x = randn(37, 5, seed=13).T
    b = randn(74, seed=14)[::2]
    s = randn(5, seed=15)
    close(kernel.run([x, b, s]), (x + b) * s[:, None], rtol=1e-6, atol=1e-6)
    kernel = lowered(matmul_bt.graph("float32"), CONTRACTION_DIMS)
    a, bt = randn(45, 37, seed=16).T, randn(19, 90, seed=17)[:, ::2]
    close(kernel.run([a, bt]), a.double() @ bt.double().T, rtol=1e-4, atol=1e-4)


def _filled(body, dtype: str = "float32"):
    @te.operator
    def filled(N, D):
        x = te.placeholder((N, D), dtype, name="x")
        y = te.compute((N, D), body(x), name="y")
        return [x], y

    return filled


@te.operator
def first_twice(D, dtype="float32"):
    x = te.placeholder((D,), dtype, name="x")
    y = te.compute((), lambda: x[0] * 2.0, name="y")
    return [x], y


@pytest.mark.parametrize("body", [
    pytest.param(lambda x: lambda i, j: 2.5, id="float-constant"),
    pytest.param(lambda x: lambda i, j: 3, id="int-constant"),
    pytest.param(lambda x: lambda i, j: te.where(te.equal(i, j), 1.0, 0.0), id="identity-matrix"),
    pytest.param(lambda x: lambda i, j: (i * 100 + j).astype("float16"), id="iota-cast"),
    pytest.param(lambda x: lambda i, j: (x[i, j] * 3.0).astype("int32") - j, id="to-int"),
])
def test_outputs_from_constants_and_axes(verified, body):
    """Regression: a constant output rendered as `2.5.to(tl.float32)` (or `3.to(...)`, a syntax
    error): literals have no `.to()`."""
    verified(_filled(body).graph(), INJECTIVE_DIMS)


def test_scalar_injective_output(verified):
    verified(first_twice.graph("float32"), dict(D=7))
    verified(first_twice.graph("bfloat16"), dict(D=1))
