"""Elementwise built-ins and numpy-style broadcasting over ranks 1 to 4: declaration, lowering
through the row kernel in Triton's interpreter against the reference evaluator and torch's own
broadcasting, an AOT compile of every elementwise and activation built-in for sm_90, and a short
tuning run on the simulated H100."""
from __future__ import annotations

import pytest
import torch

import tiletune as tt
from tiletune import tensorexpr as te
from tiletune.api import operator_ref
from tiletune.errors import DSLError
from tiletune.kernels.families import default_schedule
from tiletune.kernels.library import activations, elementwise, resolve_operator
from tiletune.kernels.verify import verification_dims
from tiletune.schedules import Config, ConfigSpace
from tiletune.tensorexpr.operator import operator
from tiletune.tensorexpr.reference import torch_dtype

DTYPES = ("float32", "float16", "bfloat16")


def with_values(space: ConfigSpace, **values: object) -> Config:
    """The default config with some knobs replaced, checked legal."""
    config = Config.from_dict({**dict(space.default().values), **values})
    space.check(config)
    return config


def smallest(space: ConfigSpace) -> Config:
    return with_values(space, BLOCK_LANE=16, BLOCK_ROWS=1, num_warps=1)


def rows_tiled(space: ConfigSpace) -> Config:
    """Several fused rows per program: up to 8, as many as the rows allow."""
    for rows in (8, 4, 2):
        config = Config.from_dict({**dict(space.default().values), "BLOCK_LANE": 16, "BLOCK_ROWS": rows, "num_warps": 2})
        if space.is_legal(config):
            return config
    return smallest(space)


# Odd shapes: primes, dims of 1, a lane just above the smallest tile.
SHAPES = {
    "broadcast_add": [dict(N=2, C=3, H=5, W=17), dict(N=1, C=1, H=1, W=1), dict(N=3, C=7, H=1, W=5)],
    "broadcast_mul": [dict(N=2, C=5, H=3, W=19), dict(N=1, C=2, H=1, W=1)],
    "bias_add_3d": [dict(B=2, S=5, D=37), dict(B=1, S=1, D=1)],
    "scalar_add_1d": [dict(N=1), dict(N=131)],
    "add": [dict(N=3, D=17), dict(N=1, D=1)],
}
assert set(SHAPES) == set(elementwise.__all__)


# every dtype under the default config; the other configs once each (the dtype changes only
# the loads' and the store's conversions, which the default runs cover)
CASES = [(dtype, None) for dtype in DTYPES] + [("float32", smallest), ("float16", rows_tiled)]


@pytest.mark.parametrize("dtype, config", CASES, ids=[f"{d}-{c.__name__ if c else 'default'}" for d, c in CASES])
@pytest.mark.parametrize("name", elementwise.__all__)
def test_elementwise_builtins_match_the_reference(verified, name, dtype, config):
    graph = getattr(elementwise, name).graph(dtype)
    for dims in SHAPES[name]:
        verified(graph, dims, config)


# torch's broadcasting, on the built-ins' own inputs
TORCH = {
    "broadcast_add": torch.add,
    "broadcast_mul": torch.mul,
    "bias_add_3d": torch.add,
    "scalar_add_1d": torch.add,
}


@pytest.mark.parametrize("name", sorted(TORCH))
def test_broadcast_builtins_match_torch_broadcasting(lowered, name):
    op = getattr(elementwise, name)
    graph = op.graph("float32")
    dims = SHAPES[name][0]
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(graph.shape_of(t, dims), generator=gen) for t in graph.inputs]
    out = lowered(graph, dims).run(inputs)
    torch.testing.assert_close(out, TORCH[name](*inputs), rtol=0, atol=0)


@operator
def outer_sub(N, D, dtype="float32"):
    """Z[N, 1, D] = X[N, 1, 1] - Y[1, D]: size-1 dims in the output and in both inputs."""
    x = te.placeholder((N, 1, 1), dtype, name="x")
    y = te.placeholder((1, D), dtype, name="y")
    return [x, y], te.elementwise(lambda a, b: a - b, x, y, name="z")


@operator
def gated_bias(N, C, L, dtype="float32"):
    """Z[N, C, L] = silu(X[N, C, L] + B[C, 1]) * G[L]: broadcasting inside an activation."""
    x = te.placeholder((N, C, L), dtype, name="x")
    b = te.placeholder((C, 1), dtype, name="b")
    g = te.placeholder((L,), dtype, name="g")
    return [x, b, g], te.elementwise(lambda x, b, g: te.nn.silu(x + b) * g, x, b, g, name="z")


@operator
def last_dim_one(N, C, dtype="float32"):
    """Z[N, C, 1] = X[N, C, 1] * S[C, 1]: an output whose lane axis has extent 1."""
    x = te.placeholder((N, C, 1), dtype, name="x")
    s = te.placeholder((C, 1), dtype, name="s")
    return [x, s], te.elementwise(lambda x, s: x * s, x, s, name="z")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_size_one_dims_in_outputs_and_inputs(lowered, dtype):
    cases = [(outer_sub, dict(N=5, D=19)), (gated_bias, dict(N=2, C=3, L=23)), (last_dim_one, dict(N=3, C=7))]
    for op, dims in cases:
        graph = op.graph(dtype)
        gen = torch.Generator().manual_seed(0)
        inputs = [torch.randn(graph.shape_of(t, dims), generator=gen).to(torch_dtype(dtype)) for t in graph.inputs]
        kernel = lowered(graph, dims)
        verdict = kernel.check()
        assert verdict.ok, f"{op.name}: {verdict.reason}"
        if op is outer_sub:
            out = kernel.run(inputs)
            assert out.shape == (5, 1, 19)
            torch.testing.assert_close(out, inputs[0] - inputs[1])


def test_broadcast_shape_follows_numpy():
    N, C = te.var("N"), te.var("C")
    assert te.broadcast_shape((N, C, 5, 1), (C, 1, 7)) == te.broadcast_shape((N, C, 5, 7))
    assert te.broadcast_shape((1,), (1, 1)) == te.broadcast_shape((1, 1))
    x = te.placeholder((N, C), name="x")
    assert te.broadcast_shape(x, (1, C)) == x.shape


def test_shapes_that_do_not_broadcast_are_declaration_errors():
    N, D = te.var("N"), te.var("D")
    x = te.placeholder((N, D), name="x")
    with pytest.raises(DSLError, match=r"shapes 'x' \(N, D\) and 'w' \(4,\) do not broadcast: dimension 1 .* D in one and 4"):
        te.elementwise(lambda a, b: a + b, x, te.placeholder((4,), name="w"))
    with pytest.raises(DSLError, match=r"\(3, 5\) and \(2, 5\) do not broadcast: dimension 0"):
        te.broadcast_shape((3, 5), (2, 5))
    with pytest.raises(DSLError, match="tensor 'x' .* has rank 2, more than the 1 axes"):
        te.compute((N,), lambda i: te.broadcast(x, (i,)))
    with pytest.raises(DSLError, match="axis 1 has extent D but is read along axis 'j' of extent 3"):
        te.compute((N, 3), lambda i, j: te.broadcast(x, (i, j)))

    @operator
    def mismatched(N, D):
        a = te.placeholder((N, D), name="a")
        b = te.placeholder((D, N), name="b")
        return [a, b], te.elementwise(lambda a, b: a + b, a, b, name="z")

    with pytest.raises(DSLError, match="mismatched: shapes 'a' \\(N, D\\) and 'b' \\(D, N\\) do not broadcast"):
        mismatched.graph()


def test_verification_of_a_rank_4_candidate_stays_small():
    graph = elementwise.broadcast_add.graph("float16")
    dims = dict(N=8, C=64, H=56, W=56)
    schedule = default_schedule(graph, dims)
    config = with_values(schedule.space(), BLOCK_ROWS=8, BLOCK_LANE=64)
    small = verification_dims(graph, dims, schedule.resolve(config))
    assert small == dict(N=8, C=5, H=5, W=56)


@pytest.mark.slow
def test_an_operator_with_attributes_tunes_under_its_own_name(tmp_path):
    # workers rebuild the variant from its reference, `leaky_relu[negative_slope=0.2]`
    op = activations.leaky_relu.with_attrs(negative_slope=0.2)
    assert op.name == "leaky_relu[negative_slope=0.2]" and operator_ref(op) == op.name
    assert resolve_operator(op.name).graph("float32").structural_hash() == op.graph("float32").structural_hash()
    assert op.graph("float32").structural_hash() != activations.leaky_relu.graph("float32").structural_hash()
    report = tt.autotune(op, {"N": 4, "D": 4}, device="sim-h100", trials=1, workers=1, db=tmp_path / "t.db")
    assert report.statuses.get("ok") == 1, report.reasons
    assert activations.leaky_relu.with_attrs(negative_slope=0.01) is activations.leaky_relu  # the default


@pytest.mark.parametrize("ref, message", [
    ("leaky_relu[negative_slope=__import__('os')]", "attributes must be name=literal pairs"),
    ("leaky_relu[0.2]", "attributes must be name=literal pairs"),
    ("leaky_relu[slope=0.2]", "unknown attribute slope"),
])
def test_attribute_references_are_literals_only(ref, message):
    with pytest.raises(DSLError, match=message):
        resolve_operator(ref)


@pytest.mark.slow
def test_tuning_a_broadcast_builtin_on_the_simulated_h100(tmp_path):
    report = tt.autotune("broadcast_add", {"N": 4, "C": 32, "H": 14, "W": 14}, dtype="float16",
                         device="sim-h100", trials=2, batch_size=2, workers=1, db=tmp_path / "t.db")
    assert report.statuses.get("ok") == 2, report.reasons
    assert report.best_latency_us > 0


@pytest.mark.slow
def test_every_elementwise_and_activation_builtin_compiles_for_sm90():
    from tiletune.kernels.task import TaskSpec
    from tiletune.search.execution.workers import COMPILE_ENV, WorkerPool
    from tiletune.search.measurement.steps import compile_step

    specs = []
    for module in (elementwise, activations):
        for name in module.__all__:
            op = getattr(module, name)
            specs.append(TaskSpec.make(name, {d: 100 for d in op.dim_names}, "float16"))
    jobs = [(spec, spec.build().space.default().to_json()) for spec in specs]
    with WorkerPool(2, env=COMPILE_ENV, name="compile") as pool:
        results = pool.map(compile_step, jobs, timeout=300)
    for spec, res in zip(specs, results):
        assert res.status == "ok" and res.value.ok, f"{spec}: {res.reason or res.value}"
        assert res.value.data["usage"]["registers"] > 0 and res.value.data["usage"]["spill_bytes"] == 0
