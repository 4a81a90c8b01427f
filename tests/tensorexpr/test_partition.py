"""Partitioning a graph into kernels (`tensorexpr.partition`): where cuts go, what each kernel
reads, and the choice between cuts, against a stand-in for the families' check (at most one
anchor per kernel) and against the real one (`kernels.parts.refusal`)."""
from __future__ import annotations

import pytest

from tiletune import tensorexpr as te
from tiletune.errors import LoweringError
from tiletune.kernels.parts import partition_of
from tiletune.tensorexpr.operator import operator
from tiletune.tensorexpr.partition import extract, is_anchor, partition


def one_anchor(graph):
    """A kernel holds at most one anchor (a stand-in for the families' rules)."""
    anchors = [s.name for s in graph.stages if is_anchor(s)]
    return None if len(anchors) <= 1 else f"{graph.name}: anchors {', '.join(anchors)} in one kernel"


@operator
def sum_then_scaled_max(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    r = te.reduce_axis(D, name="r")
    s = te.compute((N,), lambda i: te.sum(x[i, r], axis=r), name="s")
    t = te.compute((N,), lambda i: s[i] * 2.0, name="t")  # s's epilogue: stored with it
    u = te.compute((N, D), lambda i, j: x[i, j] - t[i], name="u")
    q = te.reduce_axis(D, name="q")
    return [x], te.compute((N,), lambda i: te.max(u[i, q], axis=q), name="m")


def test_a_cut_moves_down_the_anchors_epilogue_and_each_part_reads_what_it_needs():
    parts = partition(sum_then_scaled_max.graph(), one_anchor).parts
    assert [(p.name, p.reads, p.writes) for p in parts] == [
        ("sum_then_scaled_max.part_t", ("x",), "t"),
        ("sum_then_scaled_max.part_m", ("x", "t"), "m"),  # in the order its body reads them
    ]
    assert [s.name for s in parts[0].graph.stages] == ["s", "t"]
    assert parts[0].why == "t is stored for m, whose kernel cannot also compute it: anchors s, m in one kernel"
    assert parts[1].why == ""


def test_a_graph_one_kernel_holds_is_one_part_under_its_own_name():
    partition_ = partition(sum_then_scaled_max.graph(), lambda g: None)
    assert partition_.fused and partition_.parts[0].name == "sum_then_scaled_max"
    assert partition_.parts[0].reads == ("x",)


def test_nothing_that_fits_is_a_lowering_error_with_the_whole_graphs_reason():
    with pytest.raises(LoweringError, match="nothing fits"):
        partition(sum_then_scaled_max.graph(), lambda g: f"{g.name}: nothing fits")


@operator
def reverse_cumsum(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    r = te.reduce_axis(D, name="r")
    total = te.compute((N,), lambda i: te.sum(x[i, r], axis=r), name="total")
    cs = te.compute((N, D), lambda i, j: te.cumsum(x[i, j], axis=j), name="cs")
    return [x], te.compute((N, D), lambda i, j: total[i] - cs[i, j] + x[i, j], name="y")


def test_of_two_cuts_with_as_many_kernels_the_one_storing_fewer_elements_wins():
    parts = partition(reverse_cumsum.graph(), one_anchor).parts
    assert [p.writes for p in parts] == ["total", "y"]  # [N], not the [N, D] cumsum


def test_extract_reads_an_input_for_a_dim_no_other_input_binds():
    graph = reverse_cumsum.graph()
    total = next(s for s in graph.stages if s.name == "total")
    part, reads = extract("rc.part", graph, graph.output, [total])
    assert reads == ("total", "x")
    only_total, reads = extract("rc.total", graph, total, [])
    assert reads == ("x",) and [s.name for s in only_total.stages] == ["total"]


def _softmax_matmul(cur, layer, M, N, w):
    r1 = te.reduce_axis(N, name=f"r{layer}")
    mx = te.compute((M,), lambda i: te.max(cur[i, r1], axis=r1), name=f"mx{layer}")
    e = te.compute((M, N), lambda i, j: te.exp(cur[i, j] - mx[i]), name=f"e{layer}")
    r2 = te.reduce_axis(N, name=f"q{layer}")
    s = te.compute((M,), lambda i: te.sum(e[i, r2], axis=r2), name=f"s{layer}")
    p = te.compute((M, N), lambda i, j: e[i, j] / s[i], name=f"p{layer}")
    kk = te.reduce_axis(N, name=f"k{layer}")
    return te.compute((M, N), lambda i, j: te.sum(p[i, kk] * w[kk, j], axis=kk), name=f"c{layer + 1}")


@operator
def softmax_matmul_chain(M, N, K):
    a = te.placeholder((M, K), "float32", name="a")
    b = te.placeholder((K, N), "float32", name="b")
    w = te.placeholder((N, N), "float32", name="w")
    k = te.reduce_axis(K, name="k")
    cur = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c0")
    for layer in range(3):
        cur = _softmax_matmul(cur, layer, M, N, w)
    return [a, b, w], cur


def test_a_chain_of_softmax_matmul_blocks_splits_with_the_families_check():
    # probing it once raised AttributeError in attention's recogniser (a score read from a
    # stored tensor); the first block is attention-shaped and stays one kernel
    parts = partition_of(softmax_matmul_chain.graph()).parts
    assert parts[0].writes == "c1" and parts[0].reads == ("a", "b", "w")
    assert parts[-1].writes == "c3"
    stored = [p.writes for p in parts]
    assert len(stored) == len(set(stored))
    for p in parts:  # every part holds at most one contraction, and reads only stored values or inputs
        assert set(p.reads) <= set(stored) | {"a", "b", "w"}


@operator
def attention_rmsnorm(B, H, S, D):
    from tiletune.kernels.library.attention import _sdpa

    inputs, out = _sdpa(B, H, S, S, D, False, "float32", "o")
    w = te.placeholder((D,), "float32", name="w")
    k = te.reduce_axis(D, name="kd")
    ms = te.compute((B, H, S), lambda b, h, i: te.sum(out[b, h, i, k] * out[b, h, i, k], axis=k), name="ms")
    return [*inputs, w], te.compute((B, H, S, D), lambda b, h, i, e: out[b, h, i, e] * te.rsqrt(ms[b, h, i] / D + 1e-6)
                                    * w[e], name="y")


def test_attention_then_a_norm_is_one_flash_kernel_then_the_norm():
    # the cut goes where attention's two sums join (its output), not at its [S, S] scores
    parts = partition_of(attention_rmsnorm.graph()).parts
    assert [(p.writes, p.reads) for p in parts] == [("o", ("q", "k", "v")), ("y", ("o", "w"))]
