"""The reference evaluator against torch written independently, at shapes that are not powers of two.

Expected values are computed in float64 and rounded once to the output dtype, as the evaluator
documents; so float32 results agree to rounding and elementwise float16 results exactly.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tiletune import tensorexpr as te
from tiletune.errors import DSLError
from tiletune.tensorexpr import reference
from tiletune.tensorexpr.reference import evaluate

SHAPES_2D = [(37, 70), (1, 5), (13, 1)]


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1000 * len(shape) + sum(shape))
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def check(got: torch.Tensor, want64: torch.Tensor, dtype: torch.dtype = torch.float32, **tol) -> None:
    """`got` equals the float64 `want64` rounded to `dtype`, up to rounding (or `tol`)."""
    assert got.dtype == dtype
    torch.testing.assert_close(got, want64.to(dtype), **tol)


# ---------------------------------------------------------------------------------------------
# normalisations


@te.operator
def rmsnorm(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    w = te.placeholder((D,), "float32", name="w")
    k = te.reduce_axis(D, name="k")
    ms = te.compute((N,), lambda i: te.sum(x[i, k] * x[i, k], axis=k), name="ms")
    y = te.compute((N, D), lambda i, j: x[i, j] * te.rsqrt(ms[i] / D + 1e-6) * w[j], name="y")
    return [x, w], y


@pytest.mark.parametrize("n, d", SHAPES_2D)
def test_rmsnorm(n, d):
    x, w = randn(n, d), randn(d, seed=1)
    x64, w64 = x.double(), w.double()
    want = x64 / torch.sqrt((x64 * x64).mean(dim=1, keepdim=True) + 1e-6) * w64
    check(evaluate(rmsnorm.graph(), [x, w]), want)


@te.operator
def softmax(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    k1, k2 = te.reduce_axis(D, name="k1"), te.reduce_axis(D, name="k2")
    row_max = te.compute((N,), lambda i: te.max(x[i, k1], axis=k1), name="row_max")
    e = te.compute((N, D), lambda i, j: te.exp(x[i, j] - row_max[i]), name="e")
    total = te.compute((N,), lambda i: te.sum(e[i, k2], axis=k2), name="total")
    return [x], te.compute((N, D), lambda i, j: e[i, j] / total[i], name="y")


@pytest.mark.parametrize("n, d", SHAPES_2D)
def test_softmax(n, d):
    x = randn(n, d) * 5
    want = torch.softmax(x.double(), dim=1)
    got = evaluate(softmax.graph(), [x])
    check(got, want)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(n))


@te.operator
def layernorm(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    gamma = te.placeholder((D,), "float32", name="gamma")
    beta = te.placeholder((D,), "float32", name="beta")
    k1, k2 = te.reduce_axis(D, name="k1"), te.reduce_axis(D, name="k2")
    mean = te.compute((N,), lambda i: te.sum(x[i, k1] / D, axis=k1), name="mean")
    var = te.compute((N,), lambda i: te.sum((x[i, k2] - mean[i]) ** 2 / D, axis=k2), name="var")
    y = te.compute(
        (N, D), lambda i, j: (x[i, j] - mean[i]) * te.rsqrt(var[i] + 1e-5) * gamma[j] + beta[j], name="y"
    )
    return [x, gamma, beta], y


@pytest.mark.parametrize("n, d", SHAPES_2D)
def test_layernorm(n, d):
    x, gamma, beta = randn(n, d) * 3 + 1, randn(d, seed=1), randn(d, seed=2)
    want = torch.nn.functional.layer_norm(x.double(), (d,), gamma.double(), beta.double(), eps=1e-5)
    check(evaluate(layernorm.graph(), [x, gamma, beta]), want)


# ---------------------------------------------------------------------------------------------
# matmuls


@te.operator
def matmul(M, N, K, dtype="float32"):
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    k = te.reduce_axis(K, name="k")
    return [a, b], te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")


@te.operator
def matmul_nt(M, N, K):
    a = te.placeholder((M, K), "float32", name="a")
    b = te.placeholder((N, K), "float32", name="b")
    k = te.reduce_axis(K, name="k")
    return [a, b], te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[j, k], axis=k), name="c")


@te.operator
def bmm(B, M, N, K):
    a = te.placeholder((B, M, K), "float32", name="a")
    b = te.placeholder((B, K, N), "float32", name="b")
    k = te.reduce_axis(K, name="k")
    return [a, b], te.compute((B, M, N), lambda z, i, j: te.sum(a[z, i, k] * b[z, k, j], axis=k), name="c")


@te.operator
def linear_relu(M, N, K):
    a = te.placeholder((M, K), "float32", name="a")
    w = te.placeholder((K, N), "float32", name="w")
    bias = te.placeholder((N,), "float32", name="bias")
    k = te.reduce_axis(K, name="k")
    acc = te.compute((M, N), lambda i, j: te.sum(a[i, k] * w[k, j], axis=k), name="acc")
    return [a, w, bias], te.compute((M, N), lambda i, j: te.maximum(acc[i, j] + bias[j], 0.0), name="y")


MNK = [(37, 70, 13), (1, 5, 1), (13, 1, 37)]


@pytest.mark.parametrize("m, n, k", MNK)
def test_matmul(m, n, k):
    a, b = randn(m, k), randn(k, n, seed=1)
    check(evaluate(matmul.graph(), [a, b]), a.double() @ b.double())


@pytest.mark.parametrize("m, n, k", MNK)
def test_matmul_float16_rounds_only_the_output(m, n, k):
    a, b = randn(m, k, dtype=torch.float16), randn(k, n, dtype=torch.float16, seed=1)
    got = evaluate(matmul.graph("float16"), [a, b])
    check(got, a.double() @ b.double(), torch.float16, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("m, n, k", MNK)
def test_matmul_with_b_transposed(m, n, k):
    a, b = randn(m, k), randn(n, k, seed=1)
    check(evaluate(matmul_nt.graph(), [a, b]), a.double() @ b.double().T)


def test_batched_matmul():
    a, b = randn(3, 37, 13), randn(3, 13, 5, seed=1)
    check(evaluate(bmm.graph(), [a, b]), torch.bmm(a.double(), b.double()))


@pytest.mark.parametrize("m, n, k", MNK)
def test_matmul_bias_relu(m, n, k):
    a, w, bias = randn(m, k), randn(k, n, seed=1), randn(n, seed=2)
    want = torch.relu(a.double() @ w.double() + bias.double())
    got = evaluate(linear_relu.graph(), [a, w, bias])
    check(got, want)
    assert (got == 0).any() or m * n < 4


def test_large_matmul_exercises_chunking():
    m, n, k = 300, 200, 150
    assert 1 < m * n * k // reference.CHUNK_ELEMENTS  # more than one chunk of rows
    a, b = randn(m, k), randn(k, n, seed=1)
    got = evaluate(matmul.graph(), [a, b])
    torch.testing.assert_close(got, a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("chunk", [1, 100, 1000])
def test_small_chunks_give_the_same_result(monkeypatch, chunk):
    # 70 elements per row: chunks of 1 row, 1 row (a row is larger than the chunk) and 14 rows.
    monkeypatch.setattr(reference, "CHUNK_ELEMENTS", chunk)
    x, w = randn(37, 70), randn(70, seed=1)
    x64 = x.double()
    want = x64 / torch.sqrt((x64 * x64).mean(dim=1, keepdim=True) + 1e-6) * w.double()
    check(evaluate(rmsnorm.graph(), [x, w]), want)


# ---------------------------------------------------------------------------------------------
# elementwise, indexing, casts


@te.operator
def add_bias(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    b = te.placeholder((D,), "float32", name="b")
    return [x, b], te.compute((N, D), lambda i, j: x[i, j] + b[j], name="y")


@pytest.mark.parametrize("n, d", SHAPES_2D)
def test_elementwise_add_with_broadcasting(n, d):
    x, b = randn(n, d), randn(d, seed=1)
    check(evaluate(add_bias.graph(), [x, b]), x.double() + b.double(), rtol=0, atol=0)


@te.operator
def maxpool1d(L):
    x = te.placeholder((L,), "float32", name="x")
    r = te.reduce_axis(3, name="r")
    return [x], te.compute(((L - 3) // 2 + 1,), lambda i: te.max(x[i * 2 + r], axis=r), name="y")


@pytest.mark.parametrize("length", [37, 5, 3, 70])
def test_windowed_index_arithmetic_max_pool(length):
    x = randn(length)
    want = torch.nn.functional.max_pool1d(x.view(1, 1, -1), kernel_size=3, stride=2).view(-1)
    got = evaluate(maxpool1d.graph(), [x])
    assert got.shape == ((length - 3) // 2 + 1,)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@te.operator
def reverse_rows(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    return [x], te.compute((N, D), lambda i, j: x[N - 1 - i, (j + 1) % D], name="y")


def test_reversed_and_rotated_indices():
    x = randn(13, 7)
    want = torch.roll(x.flip(0), shifts=-1, dims=1)
    torch.testing.assert_close(evaluate(reverse_rows.graph(), [x]), want, rtol=0, atol=0)


@te.operator
def select(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    t = te.placeholder((D,), "float32", name="t")

    def body(i, j):
        v = x[i, j]
        inside = (v > -0.5) & (v <= t[j])
        edge = te.equal(j, 0) | ~te.not_equal(i, N - 1)
        outside = (v < -1.5) | (v >= 1.5)
        return te.where(inside, v * 2, te.where(edge, -1.0, te.where(outside, te.abs(v), 0.25)))

    return [x, t], te.compute((N, D), body, name="y")


@pytest.mark.parametrize("n, d", SHAPES_2D)
def test_where_and_comparisons(n, d):
    x, t = randn(n, d) * 1.5, randn(d, seed=1).abs()
    x64 = x.double()
    i = torch.arange(n).view(-1, 1)
    j = torch.arange(d).view(1, -1)
    inside = (x64 > -0.5) & (x64 <= t.double())
    edge = (j == 0) | (i == n - 1)
    outside = (x64 < -1.5) | (x64 >= 1.5)
    want = torch.where(
        inside, x64 * 2, torch.where(edge, -1.0, torch.where(outside, x64.abs(), torch.tensor(0.25).double()))
    )
    check(evaluate(select.graph(), [x, t]), want, rtol=0, atol=0)


@te.operator
def to_half(N):
    x = te.placeholder((N,), "float32", name="x")
    return [x], te.compute((N,), lambda i: (x[i] * 3.0 + 0.1).astype("float16"), name="y")


def test_float16_output_is_rounded_once():
    x = randn(37)
    got = evaluate(to_half.graph(), [x])
    assert got.dtype == torch.float16
    assert torch.equal(got, (x.double() * 3.0 + 0.1).to(torch.float16))


@te.operator
def half_rounding_error(N):
    x = te.placeholder((N,), "float32", name="x")
    return [x], te.compute((N,), lambda i: x[i] - x[i].astype("float16").astype("float32"), name="err")


def test_astype_float16_in_the_middle_rounds():
    x = randn(37)
    got = evaluate(half_rounding_error.graph(), [x])
    want = x.double() - x.to(torch.float16).double()
    check(got, want, rtol=0, atol=0)
    assert got.abs().max() > 0  # the cast really rounded


@te.operator
def scaled_half(N, dtype="float16"):
    x = te.placeholder((N,), dtype, name="x")
    return [x], te.compute((N,), lambda i: te.sigmoid(x[i]) * 3 + x[i] / 7, name="y")


def test_float16_operator_computes_wide_and_stores_half():
    x = randn(70, dtype=torch.float16)
    x64 = x.double()
    got = evaluate(scaled_half.graph(), [x])
    assert torch.equal(got, (torch.sigmoid(x64) * 3 + x64 / 7).to(torch.float16))


@te.operator
def int_math(N):
    x = te.placeholder((N,), "int32", name="x")
    return [x], te.compute((N,), lambda i: x[i] * 0.5 - (x[i] // 2 - x[i] % 3).astype("float32") + i / 4, name="y")


def test_integer_inputs_floor_division_and_weak_float_division():
    x = torch.tensor([16777217, -7, 0, 5, 2, -1, 9], dtype=torch.int32)
    x64 = x.double()
    i = torch.arange(7).double()
    want = x64 * 0.5 - (torch.div(x64, 2, rounding_mode="floor") - torch.remainder(x64, 3)) + i / 4
    got = evaluate(int_math.graph(), [x])
    check(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "erf", "abs"])
def test_elementwise_functions(name):
    @te.operator
    def fn(N, D):
        x = te.placeholder((N, D), "float32", name="x")
        return [x], te.compute((N, D), lambda i, j: getattr(te, name)(x[i, j]), name="y")

    x = randn(13, 7).abs() + 0.1
    torch_fn = {"rsqrt": torch.rsqrt, "erf": torch.special.erf}.get(name, getattr(torch, name, None))
    check(evaluate(fn.graph(), [x]), torch_fn(x.double()))


# ---------------------------------------------------------------------------------------------
# reductions


@te.operator
def reduce_two_axes(B, M, N):
    x = te.placeholder((B, M, N), "float32", name="x")
    m1, n1 = te.reduce_axis(M, name="m1"), te.reduce_axis(N, name="n1")
    m2, n2 = te.reduce_axis(M, name="m2"), te.reduce_axis(N, name="n2")
    m3, n3 = te.reduce_axis(M, name="m3"), te.reduce_axis(N, name="n3")
    total = te.compute((B,), lambda b: te.sum(x[b, m1, n1], axis=[m1, n1]), name="total")
    hi = te.compute((B,), lambda b: te.max(x[b, m2, n2], axis=[m2, n2]), name="hi")
    lo = te.compute((B,), lambda b: te.min(x[b, m3, n3], axis=[m3, n3]), name="lo")
    return [x], te.compute((B,), lambda b: total[b] + 100 * hi[b] + 10000 * lo[b], name="y")


@pytest.mark.parametrize("b, m, n", [(3, 37, 70), (1, 1, 5), (13, 1, 1)])
def test_sum_max_min_over_two_axes(b, m, n):
    x = randn(b, m, n)
    x64 = x.double()
    want = x64.sum(dim=(1, 2)) + 100 * x64.amax(dim=(1, 2)) + 10000 * x64.amin(dim=(1, 2))
    check(evaluate(reduce_two_axes.graph(), [x]), want)


@te.operator
def total(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    n, d = te.reduce_axis(N, name="n"), te.reduce_axis(D, name="d")
    return [x], te.compute((), lambda: te.sum(x[n, d], axis=[n, d]), name="s")


@pytest.mark.parametrize("n, d", SHAPES_2D)
def test_reduction_to_a_scalar(n, d):
    x = randn(n, d)
    got = evaluate(total.graph(), [x])
    assert got.shape == ()
    check(got, x.double().sum())


@te.operator
def silu(N):
    x = te.placeholder((N,), "float32", name="x")
    return [x], te.compute((N,), lambda i: x[i] * te.sigmoid(x[i]), name="y")


@pytest.mark.parametrize("n", [1, 37, 70])
def test_scalar_free_1d_operator(n):
    x = randn(n)
    check(evaluate(silu.graph(), [x]), torch.nn.functional.silu(x.double()))


# ---------------------------------------------------------------------------------------------
# guarded reads, explicit dims, errors


@te.operator
def shift_left(N):
    x = te.placeholder((N,), "float32", name="x")
    return [x], te.compute((N,), lambda i: te.where(i + 1 < N, x[i + 1], -x[i - N + 1]), name="y")


def test_reads_guarded_by_where_may_leave_the_tensor_where_unused():
    x = randn(37)
    want = torch.cat([x[1:], -x[:1]])
    torch.testing.assert_close(evaluate(shift_left.graph(), [x]), want, rtol=0, atol=0)


@te.operator
def unguarded_shift(N):
    x = te.placeholder((N,), "float32", name="x")
    return [x], te.compute((N,), lambda i: x[i + 1] * 2, name="shifted")


def test_out_of_range_read_names_stage_tensor_index_and_axis():
    with pytest.raises(DSLError, match=r"unguarded_shift: stage 'shifted' reads 'x' at index 37 on axis 0 of size 37"):
        evaluate(unguarded_shift.graph(), [randn(37)])


@te.operator
def wrongly_guarded(N):
    x = te.placeholder((N,), "float32", name="x")
    # The guard keeps the wrong side: the out-of-range read is used.
    return [x], te.compute((N,), lambda i: te.where(i + 1 < N, 0.0, x[i + 1]), name="y")


def test_read_on_the_taken_side_of_where_is_still_checked():
    with pytest.raises(DSLError, match=r"stage 'y' reads 'x' at index 37 on axis 0"):
        evaluate(wrongly_guarded.graph(), [randn(37)])


def test_negative_out_of_range_read_is_reported():
    @te.operator
    def back(N):
        x = te.placeholder((N,), "float32", name="x")
        return [x], te.compute((N,), lambda i: x[i - 2], name="y")

    with pytest.raises(DSLError, match=r"stage 'y' reads 'x' at index -2 on axis 0 of size 5"):
        evaluate(back.graph(), [randn(5)])


def test_input_dtype_mismatch():
    with pytest.raises(DSLError, match=r"rmsnorm: input 'w' has dtype float16, expected float32"):
        evaluate(rmsnorm.graph(), [randn(3, 4), randn(4, dtype=torch.float16)])


def test_input_shape_errors_come_from_binding():
    with pytest.raises(DSLError, match=r"rmsnorm: dim D is 4 from input 'x' but 5 from input 'w' axis 0"):
        evaluate(rmsnorm.graph(), [randn(3, 4), randn(5)])
    with pytest.raises(DSLError, match=r"rmsnorm takes 2 inputs \(x, w\), got 1"):
        evaluate(rmsnorm.graph(), [randn(3, 4)])


@te.operator
def ramp(N):
    start = te.placeholder((1,), "float32", name="start")
    return [start], te.compute((N,), lambda i: start[0] + i * 0.5, name="y")


def test_explicit_dims_for_a_dim_no_input_carries():
    got = evaluate(ramp.graph(), [torch.tensor([2.0])], dims={"N": 5})
    torch.testing.assert_close(got, torch.tensor([2.0, 2.5, 3.0, 3.5, 4.0]))


def test_explicit_dims_still_check_the_inputs():
    with pytest.raises(DSLError, match=r"rmsnorm: input 'x' has shape \(5, 4\), expected \(3, 4\)"):
        evaluate(rmsnorm.graph(), [randn(5, 4), randn(4)], dims={"N": 3, "D": 4})
    with pytest.raises(DSLError, match=r"rmsnorm takes 2 inputs \(x, w\), got 1"):
        evaluate(rmsnorm.graph(), [randn(3, 4)], dims={"N": 3, "D": 4})
    with pytest.raises(DSLError, match=r"rmsnorm: missing a value for dim D"):
        evaluate(rmsnorm.graph(), [randn(3, 4), randn(4)], dims={"N": 3})


# ---------------------------------------------------------------------------------------------
# structural hash

MATMUL_SOURCE = textwrap.dedent(
    """
    from tiletune import tensorexpr as te

    @te.operator
    def matmul(M, N, K, dtype="float16"):
        a = te.placeholder((M, K), dtype, name="a")
        b = te.placeholder((K, N), dtype, name="b")
        k = te.reduce_axis(K, name="k")
        acc = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="acc")
        return [a, b], te.compute((M, N), lambda i, j: acc[i, j] * 0.5, name="c")
    """
)


def load_matmul():
    scope: dict = {}
    exec(MATMUL_SOURCE, scope)
    return scope["matmul"]


def test_structural_hash_is_stable_across_instantiations_and_processes():
    first, second = load_matmul(), load_matmul()
    assert first.graph() is not second.graph()
    h = first.graph().structural_hash()
    assert h == second.graph().structural_hash() == first.graph("fp16").structural_hash()
    assert len(h) == 16 and int(h, 16) >= 0
    code = MATMUL_SOURCE + "\nprint(matmul.graph().structural_hash())"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == h


def test_structural_hash_ignores_python_names():
    @te.operator
    def product(M, N, K, dtype="float16"):
        lhs = te.placeholder((M, K), dtype, name="lhs")
        rhs = te.placeholder((K, N), dtype, name="rhs")
        red = te.reduce_axis(K, name="red")
        partial = te.compute((M, N), lambda row, col: te.sum(lhs[row, red] * rhs[red, col], axis=red), name="p")
        return [lhs, rhs], te.compute((M, N), lambda r, c: partial[r, c] * 0.5, name="out")

    assert product.graph().structural_hash() == load_matmul().graph().structural_hash()


def test_structural_hash_changes_with_a_constant_a_dtype_or_an_index():
    base = load_matmul().graph().structural_hash()
    assert load_matmul().graph("float32").structural_hash() != base
    other_constant = {}
    exec(MATMUL_SOURCE.replace("* 0.5", "* 0.25"), other_constant)
    assert other_constant["matmul"].graph().structural_hash() != base
    transposed = {}
    exec(MATMUL_SOURCE.replace("b[k, j]", "b[j, k]").replace("(K, N), dtype", "(N, K), dtype"), transposed)
    assert transposed["matmul"].graph().structural_hash() != base


def test_structural_hash_of_rmsnorm_changes_with_epsilon():
    @te.operator
    def rmsnorm_eps(N, D):
        x = te.placeholder((N, D), "float32", name="x")
        w = te.placeholder((D,), "float32", name="w")
        k = te.reduce_axis(D, name="k")
        ms = te.compute((N,), lambda i: te.sum(x[i, k] * x[i, k], axis=k), name="ms")
        y = te.compute((N, D), lambda i, j: x[i, j] * te.rsqrt(ms[i] / D + 1e-5) * w[j], name="y")
        return [x, w], y

    assert rmsnorm_eps.graph().structural_hash() != rmsnorm.graph().structural_hash()
