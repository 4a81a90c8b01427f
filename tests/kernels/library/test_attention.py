"""Attention: recognised among ordinary stages, lowered to one flash-style kernel and run in
Triton's interpreter against the reference evaluator and torch's scaled_dot_product_attention,
at odd sequence lengths (1, primes, just above a block), head dims 16, 64 and 80, causal and
not, in float32, float16 and bfloat16 (widened for the interpreter's dots)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tiletune import tensorexpr as te
from tiletune.errors import LoweringError
from tiletune.kernels.families import analyse, default_schedule
from tiletune.kernels.library import FAMILIES
from tiletune.kernels.library.attention import (
    attention,
    causal_attention,
    cross_attention,
)
from tiletune.kernels.verify import make_inputs
from tiletune.schedules import Config, ConfigSpace
from tiletune.tensorexpr.analysis import OpClass
from tiletune.tensorexpr.operator import operator


def smallest(space: ConfigSpace) -> Config:
    """16x16 blocks, no pipelining, two warps: the most key blocks and diagonal crossings."""
    return Config.from_dict({**dict(space.default().values), "BLOCK_M": 16, "BLOCK_N": 16,
                             "num_stages": 1, "num_warps": 2})


def wide(space: ConfigSpace) -> Config:
    """Query blocks wider than key blocks (the causal loop ends mid query block)."""
    return Config.from_dict({**dict(space.default().values), "BLOCK_M": 64, "BLOCK_N": 16,
                             "num_stages": 3, "num_warps": 8})


CASES = [
    # (operator, dtype, dims, config)
    (attention, "float32", dict(B=1, H=2, S=37, D=16), None),
    (attention, "float16", dict(B=2, H=1, S=1, D=64), None),
    (attention, "float16", dict(B=1, H=1, S=17, D=80), smallest),
    (causal_attention, "float32", dict(B=1, H=2, S=67, D=16), smallest),
    (causal_attention, "float16", dict(B=1, H=1, S=131, D=64), None),
    (causal_attention, "bfloat16", dict(B=1, H=1, S=37, D=16), wide),
    (cross_attention, "float16", dict(B=1, H=1, SQ=5, SK=131, D=16), None),
    (cross_attention, "bfloat16", dict(B=1, H=2, SQ=19, SK=3, D=64), smallest),
]


@pytest.mark.parametrize(
    "op, dtype, dims, config", CASES,
    ids=[f"{op.name}-{dtype}-{'-'.join(f'{k}{v}' for k, v in dims.items())}-{c.__name__ if c else 'default'}"
         for op, dtype, dims, c in CASES],
)
def test_attention_matches_reference(lowered, op, dtype, dims, config):
    kernel = lowered(op.graph(dtype), dims, config)
    verdict = kernel.check()
    assert verdict.ok, f"{op.name} {dtype} at {dims} with {kernel.config!r}: {verdict.reason}\n{kernel.src.text}"


@pytest.mark.parametrize("op, causal, dims", [
    (attention, False, dict(B=1, H=2, S=19, D=64)),
    (causal_attention, True, dict(B=1, H=1, S=33, D=16)),
    (cross_attention, False, dict(B=2, H=1, SQ=7, SK=23, D=16)),
], ids=["attention", "causal", "cross"])
def test_attention_matches_torch_sdpa(lowered, op, causal, dims):
    kernel = lowered(op.graph("float32"), dims, smallest)
    q, k, v = make_inputs(kernel.graph, kernel.dims, seed=3)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(kernel.run([q, k, v]), expected, rtol=1e-4, atol=1e-5)


def test_builtins_are_one_attention_family():
    assert FAMILIES["attention"].__all__ == ["attention", "causal_attention", "cross_attention"]
    for op, causal in ((attention, False), (causal_attention, True), (cross_attention, False)):
        pattern = analyse(op.graph("float16"))
        assert pattern.op_class is OpClass.ATTENTION
        assert pattern.attention.causal is causal
        assert [a.name for a in pattern.attention.batch] == ["b", "h"]


# --- the recogniser accepts the ways people write attention --------------------------------


@operator
def attention_variants(B, S, H, D):
    """BSHD layout, the scale inside the scores' sum, `i >= j` for the causal mask, and the
    division by the row sum inside the second contraction."""
    q = te.placeholder((B, S, H, D), "float16", name="q")
    k = te.placeholder((B, S, H, D), "float16", name="k")
    v = te.placeholder((B, S, H, D), "float16", name="v")
    d = te.reduce_axis(D, name="d")
    s = te.compute((B, H, S, S), lambda b, h, i, j: te.sum(q[b, i, h, d] * k[b, j, h, d] * 0.125, axis=d), name="s")
    masked = te.compute((B, H, S, S), lambda b, h, i, j: te.where(i >= j, s[b, h, i, j], float("-inf")), name="masked")
    j1 = te.reduce_axis(S, name="j1")
    m = te.compute((B, H, S), lambda b, h, i: te.max(masked[b, h, i, j1], axis=j1), name="m")
    j2 = te.reduce_axis(S, name="j2")
    l = te.compute((B, H, S), lambda b, h, i: te.sum(te.exp(masked[b, h, i, j2] - m[b, h, i]), axis=j2), name="l")
    j3 = te.reduce_axis(S, name="j3")
    o = te.compute((B, S, H, D), lambda b, i, h, e: te.sum(
        te.exp(masked[b, h, i, j3] - m[b, h, i]) / l[b, h, i] * v[b, j3, h, e], axis=j3), name="o")
    return [q, k, v], o


def test_variant_spelling_is_recognised_and_correct(lowered):
    pattern = analyse(attention_variants.graph())
    assert pattern.op_class is OpClass.ATTENTION and pattern.attention.causal
    kernel = lowered(attention_variants.graph(), dict(B=1, S=21, H=2, D=16), smallest)
    assert kernel.check().ok
    q, k, v = make_inputs(kernel.graph, kernel.dims, seed=1)
    expected = F.scaled_dot_product_attention(
        *(x.float().transpose(1, 2) for x in (q, k, v)), is_causal=True, scale=0.125).transpose(1, 2)
    torch.testing.assert_close(kernel.run([q, k, v]).float(), expected, rtol=1e-2, atol=1e-2)


# --- what is not attention keeps a clear refusal --------------------------------------------


@operator
def two_matmuls(M, N, K, dtype="float32"):
    """(A @ B) @ C: two contractions without a softmax between them."""
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    c = te.placeholder((N, N), dtype, name="c")
    k = te.reduce_axis(K, name="k")
    ab = te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="ab")
    n = te.reduce_axis(N, name="n")
    return [a, b, c], te.compute((M, N), lambda i, j: te.sum(ab[i, n] * c[n, j], axis=n), name="abc")


@operator
def wrong_normaliser(S, D):
    """softmax-like, but divided by the row max instead of the row sum: not attention."""
    q = te.placeholder((S, D), "float32", name="q")
    k = te.placeholder((S, D), "float32", name="k")
    v = te.placeholder((S, D), "float32", name="v")
    d = te.reduce_axis(D, name="d")
    s = te.compute((S, S), lambda i, j: te.sum(q[i, d] * k[j, d], axis=d), name="s")
    j1 = te.reduce_axis(S, name="j1")
    m = te.compute((S,), lambda i: te.max(s[i, j1], axis=j1), name="m")
    j3 = te.reduce_axis(S, name="j3")
    o = te.compute((S, D), lambda i, e: te.sum(te.exp(s[i, j3] - m[i]) * v[j3, e], axis=j3), name="o")
    return [q, k, v], te.compute((S, D), lambda i, e: o[i, e] / m[i], name="y")


@pytest.mark.parametrize("op", [two_matmuls, wrong_normaliser], ids=["two_matmuls", "wrong_normaliser"])
def test_two_contractions_that_are_not_attention_are_refused(op):
    with pytest.raises(LoweringError, match="contraction together with other reductions"):
        analyse(op.graph("float32") if op.takes_dtype else op.graph())


def test_head_dim_over_the_limit_is_refused_at_schedule_time():
    with pytest.raises(LoweringError, match=r"head dims 300 and 300 must be at most 256"):
        default_schedule(attention.graph("float16"), dict(B=1, H=1, S=64, D=300))


# --- ahead-of-time compile for sm_90, and tuning on the simulated H100 ----------------------

COMPILE_WORKLOADS = [
    ("attention", dict(B=2, H=4, S=256, D=64), "float16"),
    ("causal_attention", dict(B=2, H=4, S=256, D=128), "bfloat16"),
    ("cross_attention", dict(B=1, H=8, SQ=128, SK=384, D=64), "float32"),
]


@pytest.mark.slow
def test_default_configs_compile_for_sm90():
    """Each built-in's default config AOT-compiles for Hopper, in compiling worker processes
    (TRITON_INTERPRET=0), within the device's registers and shared memory."""
    from tiletune.kernels.task import TaskSpec
    from tiletune.search.execution.workers import COMPILE_ENV, WorkerPool
    from tiletune.search.measurement.steps import compile_step

    specs = [TaskSpec.make(name, dims, dtype) for name, dims, dtype in COMPILE_WORKLOADS]
    items = [(spec, spec.build().space.default().to_json()) for spec in specs]
    with WorkerPool(2, env=COMPILE_ENV, name="attention-compile") as pool:
        results = pool.map(compile_step, items, timeout=240)
    for spec, res in zip(specs, results):
        assert res.status == "ok", f"{spec}: {res.status} {res.reason}"
        assert res.value.ok, f"{spec}: {res.value}"
        usage = res.value.data["usage"]
        assert 0 < usage["registers"] <= 255 and usage["spill_bytes"] == 0, (spec, usage)
        assert res.value.data["tile"]["programs"] > 0


@pytest.mark.slow
def test_autotune_attention_on_sim_h100(tmp_path):
    import tiletune as tt

    report = tt.autotune("causal_attention", {"B": 1, "H": 2, "S": 96, "D": 32}, dtype="float16",
                         device="sim-h100", trials=4, batch_size=4, workers=2, db=tmp_path / "t.db")
    assert report.trials == 4
    assert report.statuses["ok"] == 4, report.reasons
    assert report.best_latency_us is not None and report.best_latency_us > 0


@operator
def window_attention(S, D):
    """Sliding-window causal attention: query i sees keys i-7..i. A general mask, so whole key
    blocks are masked for some rows (the online softmax must not make NaN of them)."""
    q = te.placeholder((S, D), "float32", name="q")
    k = te.placeholder((S, D), "float32", name="k")
    v = te.placeholder((S, D), "float32", name="v")
    d = te.reduce_axis(D, name="d")
    s = te.compute((S, S), lambda i, j: te.sum(q[i, d] * k[j, d], axis=d), name="s")
    masked = te.compute((S, S), lambda i, j: te.where((j <= i) & (i - j < 8), s[i, j] * 0.25, float("-inf")), name="w")
    j1 = te.reduce_axis(S, name="j1")
    m = te.compute((S,), lambda i: te.max(masked[i, j1], axis=j1), name="m")
    p = te.compute((S, S), lambda i, j: te.exp(masked[i, j] - m[i]), name="p")
    j2 = te.reduce_axis(S, name="j2")
    l = te.compute((S,), lambda i: te.sum(p[i, j2], axis=j2), name="l")
    j3 = te.reduce_axis(S, name="j3")
    o = te.compute((S, D), lambda i, e: te.sum(p[i, j3] * v[j3, e], axis=j3), name="o")
    return [q, k, v], te.compute((S, D), lambda i, e: o[i, e] / l[i], name="y")


def test_general_mask_is_applied_per_score(lowered):
    pattern = analyse(window_attention.graph())
    assert pattern.op_class is OpClass.ATTENTION and not pattern.attention.causal
    kernel = lowered(window_attention.graph(), dict(S=41, D=16), smallest)
    verdict = kernel.check()
    assert verdict.ok, verdict.reason
