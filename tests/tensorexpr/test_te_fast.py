"""The reference evaluator's fast mode (the CPU path of `tiletune.load`) against its exact mode,
on every built-in at small odd shapes, under the tolerance verification holds kernels to."""
from __future__ import annotations

import pytest
import torch

from tiletune import tensorexpr as te
from tiletune.kernels.library import BUILTINS, resolve_operator
from tiletune.kernels.verify import compare, longest_reduction, make_inputs
from tiletune.tensorexpr import reference
from tiletune.tensorexpr.reference import evaluate

# One small odd shape per dim signature.
SHAPES = {
    ("M", "N", "K"): dict(M=13, N=9, K=21),
    ("B", "M", "N", "K"): dict(B=3, M=7, N=5, K=11),
    ("B", "H", "M", "N", "K"): dict(B=2, H=3, M=5, N=7, K=9),
    ("M", "K"): dict(M=11, K=37),
    ("N", "C", "L", "K", "R"): dict(N=2, C=5, L=13, K=3, R=3),
    ("N", "C", "H", "W", "K", "R", "S"): dict(N=2, C=3, H=7, W=9, K=5, R=3, S=3),
    ("N", "C", "H", "W", "K"): dict(N=2, C=3, H=5, W=7, K=5),
    ("N", "D"): dict(N=7, D=33),
    ("N", "C"): dict(N=9, C=13),
    ("N", "C", "H", "W"): dict(N=2, C=3, H=5, W=7),
    ("B", "S", "D"): dict(B=3, S=7, D=13),
    ("N",): dict(N=101),
    ("A", "B", "C", "D"): dict(A=3, B=5, C=3, D=7),
    ("N", "G", "CG", "HW"): dict(N=2, G=3, CG=3, HW=7),
    ("B", "L", "C"): dict(B=3, L=11, C=5),
    ("B", "H", "S", "D"): dict(B=1, H=2, S=9, D=16),
    ("B", "H", "SQ", "SK", "D"): dict(B=1, H=2, SQ=5, SK=11, D=16),
    ("N", "C", "L"): dict(N=2, C=5, L=13),
}
VARIANTS = ["softmax_nd[dim=1]", "log_softmax_nd[dim=0]", "sum4d[axes=(0, 2)]", "argmax4d[axis=1]",
            "l2_normalize[dim=2]", "kl_div[log_target=True]", "conv2d_s2_p1"]


def _dtypes(op) -> list[str | None]:
    """The operator's default dtype, and float16 too for a float operator that takes a dtype."""
    if not op.takes_dtype:
        return [None]
    default = op.default_dtype
    return [default, "float16"] if default in ("float32", "bfloat16") else [default]


@pytest.mark.parametrize("ref", sorted(BUILTINS) + VARIANTS)
def test_fast_mode_matches_the_exact_mode_on_every_builtin(ref):
    op = resolve_operator(ref)
    dims = SHAPES[op.dim_names]
    for dtype in _dtypes(op):
        graph = op.graph(dtype) if dtype else op.graph()
        inputs = make_inputs(graph, dims, seed=3)
        exact = evaluate(graph, inputs, dims)
        fast = evaluate(graph, inputs, dims, fast=True)
        assert fast.dtype == exact.dtype and fast.shape == exact.shape
        verdict = compare(fast, exact, graph.output.dtype, longest_reduction(graph, dims))
        assert verdict.ok, f"{ref} {dtype}: {verdict.reason}"


@te.operator
def _copy(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    return [x], te.compute((N, D), lambda i, j: x[i, j], name="y")


@te.operator
def _scaled_matmul(M, N, K):
    a = te.placeholder((M, K), "float32", name="a")
    b = te.placeholder((N, K), "float32", name="b")
    k = te.reduce_axis(K, name="k")
    c = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[j, k], axis=k), name="c")
    return [a, b], te.compute((M, N), lambda i, j: c[i, j] * 0.5 + 1.0, name="y")


def test_fast_mode_returns_a_tensor_of_its_own():
    # its reads are views: an output that is one must not alias the caller's input
    x = torch.randn(5, 7)
    y = evaluate(_copy.graph(), [x], fast=True)
    assert torch.equal(y, x)
    assert y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()


def test_fast_mode_computes_in_float32_and_contracts_with_one_einsum(monkeypatch):
    a, b = torch.randn(64, 40), torch.randn(48, 40)
    calls = []
    einsum = torch.einsum
    monkeypatch.setattr(reference.torch, "einsum", lambda *args: calls.append(args[0]) or einsum(*args))
    y = evaluate(_scaled_matmul.graph(), [a, b], fast=True)
    assert calls == ["ac,bc->ab"]  # a @ b.T, not a broadcast product summed
    torch.testing.assert_close(y, (a.double() @ b.double().T * 0.5 + 1).float())
    exact_calls = len(calls)
    evaluate(_scaled_matmul.graph(), [a, b])
    assert len(calls) == exact_calls  # the exact mode keeps its float64 broadcast sum
