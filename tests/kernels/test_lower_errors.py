"""Patterns the Triton backend cannot lower are refused before any kernel runs, with a
LoweringError that names the operator, the stage and what to do, never a Triton traceback."""
from __future__ import annotations

import pytest

from tiletune import tensorexpr as te
from tiletune.errors import LoweringError, TiletuneError
from tiletune.kernels.lower import lower
from tiletune.kernels.library import softmax
from tiletune.schedules import Choice, Config, PowerOfTwo
from tiletune.kernels.families import default_schedule, schedule_for


def lower_default(graph, dims):
    """The whole path a tuner takes: analysis, automatic schedule, default config, lowering."""
    schedule = default_schedule(graph, dims)
    return lower(graph, schedule.resolve(schedule.space().default()), for_interpreter=True)


def refused(graph, dims, *fragments: str) -> str:
    """The LoweringError message for `graph`, checked to name the operator and `fragments`."""
    with pytest.raises(LoweringError) as info:
        lower_default(graph, dims)
    message = str(info.value)
    assert message.startswith(f"{graph.name}:"), message
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in message and "triton" not in message.lower(), message
    return message


@te.operator
def two_matmuls(M, N, K, L):
    a = te.placeholder((M, K), "float16", name="a")
    b = te.placeholder((K, L), "float16", name="b")
    d = te.placeholder((L, N), "float16", name="d")
    k = te.reduce_axis(K, name="k")
    ab = te.compute((M, L), lambda i, l: te.sum(a[i, k] * b[k, l], axis=k), name="ab")
    r = te.reduce_axis(L, name="r")
    y = te.compute((M, N), lambda i, j: te.sum(ab[i, r] * d[r, j], axis=r), name="y")
    return [a, b, d], y


@te.operator
def matmul_softmax(M, N, K):
    a = te.placeholder((M, K), "float32", name="a")
    b = te.placeholder((K, N), "float32", name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    r = te.reduce_axis(N, name="r")
    row_max = te.compute((M,), lambda i: te.max(c[i, r], axis=r), name="row_max")
    y = te.compute((M, N), lambda i, j: c[i, j] - row_max[i], name="y")
    return [a, b], y


@te.operator
def sum_two_axes(N, H, W):
    x = te.placeholder((N, H, W), "float32", name="x")
    kh = te.reduce_axis(H, name="kh")
    kw = te.reduce_axis(W, name="kw")
    y = te.compute((N,), lambda i: te.sum(x[i, kh, kw], axis=[kh, kw]), name="pooled")
    return [x], y


@te.operator
def two_row_lengths(N, D, E):
    x = te.placeholder((N, D), "float32", name="x")
    z = te.placeholder((N, E), "float32", name="z")
    k1 = te.reduce_axis(D, name="k1")
    k2 = te.reduce_axis(E, name="k2")
    sx = te.compute((N,), lambda i: te.sum(x[i, k1], axis=k1), name="sx")
    sz = te.compute((N,), lambda i: te.sum(z[i, k2], axis=k2), name="sz")
    y = te.compute((N,), lambda i: sx[i] / sz[i], name="y")
    return [x, z], y


@te.operator
def epilogue_plus_transpose(N, K):
    """y = c + c^T: the epilogue reads the accumulator at two positions."""
    a = te.placeholder((N, K), "float32", name="a")
    b = te.placeholder((K, N), "float32", name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute((N, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    y = te.compute((N, N), lambda i, j: c[i, j] + c[j, i], name="y")
    return [a, b], y


@te.operator
def epilogue_reads_transposed(N, K):
    """y[i, j] = c[j, i] * 2 on the output's own axes: supported, as a transposed store."""
    a = te.placeholder((N, K), "float32", name="a")
    b = te.placeholder((K, N), "float32", name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute((N, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    y = te.compute((N, N), lambda i, j: c[j, i] * 2.0, name="y")
    return [a, b], y


@te.operator
def epilogue_shifted(M, N, K):
    """y[i, j] = c[i, j + 1] (guarded): an element of the neighbouring accumulator tile."""
    a = te.placeholder((M, K), "float32", name="a")
    b = te.placeholder((K, N), "float32", name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    y = te.compute((M, N), lambda i, j: te.where(j + 1 < N, c[i, j + 1], 0.0), name="y")
    return [a, b], y


@te.operator
def epilogue_drops_axis(M, N, K):
    """y[i] = c[i, 0]: the epilogue does not keep the accumulator's shape."""
    a = te.placeholder((M, K), "float32", name="a")
    b = te.placeholder((K, N), "float32", name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    y = te.compute((M,), lambda i: c[i, 0], name="y")
    return [a, b], y


@te.operator
def scaled_add(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    y = te.placeholder((N, D), "float32", name="y")
    sx = te.compute((N, D), lambda i, j: x[i, j] * 2.0, name="sx")
    z = te.compute((N, D), lambda i, j: sx[i, j] + y[i, j], name="z")
    return [x, y], z


def test_two_contractions_in_one_operator():
    refused(two_matmuls.graph(), dict(M=8, N=8, K=8, L=8), "stages ab, y", "one contraction", "split the operator")


def test_contraction_with_a_reduction():
    refused(matmul_softmax.graph(), dict(M=8, N=8, K=8), "stages c, row_max", "one contraction", "split the operator")


def test_reduction_over_two_axes_lowers_as_one_fused_reduce_index():
    lower_default(sum_two_axes.graph(), dict(N=4, H=3, W=5))


def test_reductions_of_different_lengths():
    refused(two_row_lengths.graph(), dict(N=4, D=8, E=6), "stage 'sz'", "'sx'", "rows of one length")


def test_epilogue_reading_the_accumulator_twice():
    refused(epilogue_plus_transpose.graph(), dict(N=8, K=8), "epilogue 'y' reads 'c' at 2 different positions")


def test_epilogue_reading_a_shifted_element():
    refused(epilogue_shifted.graph(), dict(M=8, N=8, K=8), "epilogue 'y' reads 'c' as c[i, j + 1]",
            "each index must be a distinct axis of the output")


def test_epilogue_dropping_an_axis():
    refused(epilogue_drops_axis.graph(), dict(M=8, N=8, K=8), "epilogue 'y' reads 'c' as c[i, 0]")


def test_epilogue_reading_the_accumulator_transposed_is_a_transposed_store():
    """Not an error: each index of the one read is an output axis, so the kernel stores the
    accumulator tile transposed (and matches the reference)."""
    from tiletune.kernels.verify import check

    graph = epilogue_reads_transposed.graph()
    dims = dict(N=37, K=19)
    verdict = check(graph, lower_default(graph, dims), dims)
    assert verdict.ok, verdict.reason


def test_schedule_without_compute_inline():
    graph = scaled_add.graph()
    s = schedule_for(graph)
    s.tile("lane", PowerOfTwo("BLOCK_LANE", 16, 1024, default=64)).tile("rows", 1)
    s.bind("rows", "block.x").vectorize("lane").num_warps(Choice("num_warps", (4,)))
    with pytest.raises(LoweringError, match=r"scaled_add: stage 'sx' is neither inlined nor fused.*"
                                            r"s\.compute_inline\('sx'\)"):
        lower(graph, s.resolve(s.space().default()))
    s.compute_inline("sx")
    assert "sx" not in lower(graph, s.resolve(s.space().default())).text.split("):", 1)[0]


def test_rows_longer_than_one_block_loop():
    graph = softmax.graph("float32")
    src = lower_default(graph, dict(N=2, D=40000))
    assert "for red_start in range(0, n_red, BLOCK_RED)" in src.text
    lower_default(graph, dict(N=2, D=32768))


def test_refusals_are_tiletune_errors():
    """A CLI turns TiletuneErrors into one line; a refused lowering must be one."""
    assert issubclass(LoweringError, TiletuneError)
    with pytest.raises(TiletuneError):
        lower_default(two_matmuls.graph(), dict(M=8, N=8, K=8, L=8))


def test_a_config_outside_the_space_is_refused_before_lowering():
    from tiletune.errors import IllegalConfig

    graph = softmax.graph("float32")
    schedule = default_schedule(graph, dict(N=37, D=70))
    with pytest.raises(IllegalConfig, match="BLOCK_ROWS"):
        schedule.resolve(Config.of(BLOCK_ROWS=3, num_warps=4))
