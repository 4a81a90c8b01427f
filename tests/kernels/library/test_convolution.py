"""Convolutions as implicit GEMMs: roles, the interpreter against the reference evaluator and
PyTorch, AOT compiles for sm_90, tuning on the simulated H100, and the errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tiletune as tt
from tiletune.errors import DSLError, LoweringError, UsageError
from tiletune.kernels.families import analyse, default_schedule, tile_facts
from tiletune.kernels.library import builtin
from tiletune.kernels.library.convolution import (
    conv1d,
    conv1d_op,
    conv2d,
    conv2d_op,
    pointwise_conv2d,
)
from tiletune.tensorexpr.analysis import OpClass

# (operator, dims): prime spatial sizes, C_in=3, C_out just above a 16-wide tile, stride 2,
# dilation 2, padding 1, groups 2 and 3, and everything at 1
CASES = [
    (conv2d, dict(N=2, C=3, H=7, W=5, K=5, R=3, S=2)),
    (conv2d_op(stride=2, padding=1), dict(N=1, C=3, H=13, W=11, K=17, R=3, S=3)),
    (conv2d_op(padding=1, dilation=2, groups=2), dict(N=2, C=4, H=11, W=7, K=6, R=3, S=3)),
    (conv1d_op(stride=2, padding=1, dilation=2, groups=3), dict(N=2, C=3, L=13, K=6, R=3)),
    (conv1d, dict(N=1, C=1, L=1, K=1, R=1)),
    (pointwise_conv2d, dict(N=1, C=3, H=5, W=7, K=17)),
]
SMALLEST = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=1, num_stages=1, num_warps=2)


def case_id(case) -> str:
    return case[0].name


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_default_config_matches_reference(verified, case, dtype):
    op, dims = case
    verified(op.graph(dtype), dims)


@pytest.mark.parametrize("values", [SMALLEST, dict(BLOCK_M=32, BLOCK_K=16, GROUP_M=4, num_stages=2)],
                         ids=["smallest", "k-loop"])
def test_other_configs_match_reference(verified, values):
    # K = C/groups * R * S = 45 runs the k loop three times at BLOCK_K=16, over groups and padding
    dims = dict(N=3, C=10, H=5, W=6, K=18, R=3, S=3)
    verified(conv2d_op(stride=2, padding=1, groups=2).graph("float16"), dims, **values)


def test_bfloat16_matches_reference(verified):
    # the interpreter gets fp32 dot operands (lower(..., for_interpreter=True)); the GPU bf16 ones
    verified(conv2d_op(padding=1).graph("bfloat16"), dict(N=1, C=3, H=5, W=5, K=4, R=3, S=3))


def random_inputs(graph, dims, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    from tiletune.tensorexpr.reference import torch_dtype

    return [torch.randn(graph.shape_of(t, dims), generator=gen).to(torch_dtype(t.dtype)) for t in graph.inputs]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_conv2d_matches_torch(lowered, dtype):
    graph = conv2d_op(stride=2, padding=1, dilation=2, groups=2).graph(dtype)
    dims = dict(N=2, C=4, H=13, W=11, K=6, R=3, S=3)
    kernel = lowered(graph, dims)
    x, w = random_inputs(graph, dims)
    expected = F.conv2d(x.float(), w.float(), stride=2, padding=1, dilation=2, groups=2)
    tol = 1e-4 if dtype == "float32" else 2e-2
    torch.testing.assert_close(kernel.run([x, w]).float(), expected, atol=tol, rtol=tol)


def test_conv1d_and_pointwise_match_torch(lowered):
    graph = conv1d_op(stride=2, padding=1, groups=3).graph("float32")
    dims = dict(N=2, C=3, L=13, K=6, R=3)
    x, w = random_inputs(graph, dims)
    expected = F.conv1d(x, w, stride=2, padding=1, groups=3)
    torch.testing.assert_close(lowered(graph, dims).run([x, w]), expected, atol=1e-4, rtol=1e-4)

    graph = pointwise_conv2d.graph("float32")
    dims = dict(N=1, C=3, H=5, W=7, K=17)
    x, w = random_inputs(graph, dims)
    torch.testing.assert_close(lowered(graph, dims).run([x, w]), F.conv2d(x, w), atol=1e-4, rtol=1e-4)


def test_roles_fuse_output_and_reduce_axes():
    c = analyse(conv2d_op(groups=2).graph("float16")).contraction
    assert analyse(conv2d.graph("float16")).op_class is OpClass.CONTRACTION
    assert [a.name for a in c.fused.m_axes] == ["n", "oh", "ow"]
    assert [a.name for a in c.fused.k_axes] == ["ci", "r", "s"]
    assert c.fused.n_axis.name == "co" and c.batch == (c.fused.group,)
    assert c.fused.group.extent.value == 2


def test_tile_facts_count_one_program_column_per_group():
    graph = conv2d_op(stride=2, padding=1, groups=2).graph("float16")
    dims = dict(N=2, C=4, H=9, W=9, K=40, R=3, S=3)  # 2 x 5 x 5 outputs, 20 channels per group
    schedule = default_schedule(graph, dims)
    config = schedule.space().default()
    facts = tile_facts(graph, schedule.resolve(config), dims)
    bm, bn, bk = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]
    assert facts.programs == -(-50 // bm) * -(-20 // bn) * 2
    assert facts.k_iterations == -(-18 // bk) and facts.uses_tensor_cores


def test_parametrised_names_resolve_to_one_operator():
    assert builtin("conv2d_s2_p1_d2_g2") is conv2d_op(stride=2, padding=1, dilation=2, groups=2)
    assert builtin("conv1d_p1") is conv1d_op(padding=1)
    with pytest.raises(UsageError, match="no built-in operator 'conv2d_s1'"):
        builtin("conv2d_s1")  # a default spelled out is not the canonical name


def test_bad_parameters_and_ungroupable_channels_are_refused():
    with pytest.raises(DSLError, match="conv2d: stride must be an integer >= 1, got 0"):
        conv2d_op(stride=0)
    graph = conv2d_op(groups=2).graph("float16")
    with pytest.raises(LoweringError, match="output axis 'co' has 5 elements, not a multiple of its 2 groups"):
        default_schedule(graph, dict(N=1, C=4, H=5, W=5, K=5, R=3, S=3))


@pytest.mark.slow
def test_default_configs_aot_compile_for_sm90():
    from tiletune.kernels.task import TaskSpec
    from tiletune.search.execution.workers import COMPILE_ENV, WorkerPool
    from tiletune.search.measurement.steps import compile_step

    specs = [
        TaskSpec.make("conv2d", dict(N=2, C=16, H=14, W=14, K=32, R=3, S=3), "float16"),
        TaskSpec.make("conv2d_s2_p1_d2_g2", dict(N=2, C=16, H=14, W=14, K=32, R=3, S=3), "float16"),
        TaskSpec.make("conv1d", dict(N=2, C=16, L=64, K=32, R=5), "float32"),
        TaskSpec.make("pointwise_conv2d", dict(N=2, C=32, H=14, W=14, K=64), "bfloat16"),
    ]
    jobs = [(spec, spec.build().space.default().to_json()) for spec in specs]
    pool = WorkerPool(2, env=COMPILE_ENV, name="conv-compile")
    try:
        results = pool.map(compile_step, jobs, timeout=240)
    finally:
        pool.close()
    for spec, res in zip(specs, results):
        assert res.status == "ok", (spec.op, res.reason)
        assert res.value.ok, (spec.op, res.value.reason)
        assert res.value.data["usage"]["registers"] > 0


@pytest.mark.slow
def test_autotune_on_simulated_h100(tmp_path):
    report = tt.autotune("conv2d_s2_p1", dict(N=1, C=3, H=13, W=13, K=8, R=3, S=3), dtype="float16",
                         device="sim-h100", trials=2, batch_size=2, workers=2, db=tmp_path / "t.db")
    assert report.statuses.get("ok") == 2, report.reasons
    assert report.best_latency_us > 0 and report.best_config is not None
