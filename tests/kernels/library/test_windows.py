"""Windowed built-ins (pooling, depthwise convolution): lowered under their automatic schedule,
run in Triton's interpreter against the reference evaluator and against torch, at odd shapes,
with stride, padding and dilation; compiled for sm_90; tuned on the simulated H100."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tiletune import tensorexpr as te
from tiletune.errors import DSLError, LoweringError
from tiletune.kernels.families import analyse, default_schedule, tile_facts
from tiletune.kernels.library import windows
from tiletune.tensorexpr.analysis import OpClass

NAMES_2D = ("max_pool2d", "avg_pool2d", "depthwise_conv2d")
NAMES_1D = ("max_pool1d", "avg_pool1d")

# Deliberately different configs, each at shapes it exercises without many interpreted
# programs: the default (odd sizes everywhere, then sizes of 1: one output position); the
# smallest tiles (rows of more than one 16-wide lane tile); a loop over the window (`range`
# instead of `tl.static_range`) with a few rows per program and a row tail.
CONFIGS = {
    "default": ({}, (dict(N=2, C=3, H=13, W=37), dict(N=1, C=1, H=1, W=5)),
                (dict(N=2, C=3, L=37), dict(N=1, C=5, L=1))),
    "smallest": (dict(BLOCK_ROWS=1, BLOCK_LANE=16, num_warps=1), (dict(N=1, C=2, H=3, W=37),),
                 (dict(N=1, C=3, L=37),)),
    "looped": (dict(UNROLL_WINDOW=False, BLOCK_ROWS=4, BLOCK_LANE=16, num_warps=2), (dict(N=1, C=3, H=7, W=19),),
               (dict(N=3, C=3, L=19),)),
}


def cases():
    for name in NAMES_2D + NAMES_1D:
        for label, (values, shapes_2d, shapes_1d) in CONFIGS.items():
            shapes = shapes_2d if name in NAMES_2D else shapes_1d
            for shape_no, dims in enumerate(shapes):
                # bfloat16 (loaded, then computed in fp32) at the default config only
                for dtype in ("float32", "float16", "bfloat16")[: 3 if label == "default" else 2]:
                    yield pytest.param(name, dims, dtype, values, id=f"{name}-{label}-shape{shape_no}-{dtype}")


@pytest.mark.parametrize("name, dims, dtype, values", list(cases()))
@pytest.mark.slow
def test_builtin_matches_reference(verified, name, dims, dtype, values):
    verified(getattr(windows, name).graph(dtype), dims, **values)


def _inputs(graph, dims, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(graph.shape_of(t, dims), generator=g).to(getattr(torch, dtype)) for t in graph.inputs]


TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float16": dict(rtol=1e-2, atol=1e-2)}

# (declared operator, dims, what torch computes for its inputs)
GEOMETRIES = [
    pytest.param(windows.pool("max", 2, 3, stride=2, padding=1, dilation=2), dict(N=2, C=3, H=11, W=19),
                 lambda x: F.max_pool2d(x, 3, stride=2, padding=1, dilation=2), id="max2d-k3s2p1d2"),
    pytest.param(windows.pool("max", 2, (2, 3), stride=(1, 2), padding=(1, 0)), dict(N=1, C=2, H=7, W=17),
                 lambda x: F.max_pool2d(x, (2, 3), stride=(1, 2), padding=(1, 0)), id="max2d-k2x3"),
    pytest.param(windows.pool("avg", 2, 3, stride=2, padding=1), dict(N=2, C=3, H=9, W=17),
                 lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), id="avg2d-k3s2p1"),
    pytest.param(windows.pool("avg", 2, 3, stride=2, padding=1, count_include_pad=False), dict(N=2, C=3, H=9, W=17),
                 lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False), id="avg2d-excl"),
    pytest.param(windows.pool("avg", 2, 2), dict(N=1, C=3, H=7, W=19),
                 lambda x: F.avg_pool2d(x, 2), id="avg2d-k2-nopad"),
    pytest.param(windows.pool("max", 1, 5, stride=3, padding=2, dilation=2), dict(N=2, C=3, L=41),
                 lambda x: F.max_pool1d(x, 5, stride=3, padding=2, dilation=2), id="max1d-k5s3p2d2"),
    pytest.param(windows.pool("avg", 1, 4, stride=2, padding=2, count_include_pad=False), dict(N=2, C=3, L=23),
                 lambda x: F.avg_pool1d(x, 4, stride=2, padding=2, count_include_pad=False), id="avg1d-excl"),
    pytest.param(windows.depthwise_conv(3, stride=2, padding=1, dilation=2), dict(N=2, C=5, H=11, W=17),
                 lambda x, w: F.conv2d(x, w, stride=2, padding=1, dilation=2, groups=w.shape[0]), id="dw-k3s2p1d2"),
    pytest.param(windows.depthwise_conv((3, 5), padding=(1, 2)), dict(N=1, C=3, H=7, W=13),
                 lambda x, w: F.conv2d(x, w, padding=(1, 2), groups=w.shape[0]), id="dw-k3x5"),
]


@pytest.mark.parametrize("dtype", ("float32", "float16"))
@pytest.mark.parametrize("op, dims, torch_fn", GEOMETRIES)
def test_geometry_matches_torch(lowered, op, dims, torch_fn, dtype):
    kernel = lowered(op.graph(dtype), dims)
    inputs = _inputs(kernel.graph, dims, dtype)
    want = torch_fn(*(x.float() for x in inputs))
    got = kernel.run(inputs)
    assert got.shape == want.shape
    torch.testing.assert_close(got.float(), want, **TOL[dtype])
    assert kernel.check().ok


def test_padding_never_wins_a_max(lowered):
    # every input negative: a padded zero would win the max at the edges if padding were read
    kernel = lowered(windows.max_pool2d.graph("float32"), dict(N=1, C=2, H=5, W=6))
    x = -1.0 - torch.rand(1, 2, 5, 6)
    got = kernel.run([x])
    assert (got < 0).all()
    torch.testing.assert_close(got, F.max_pool2d(x, 3, stride=2, padding=1), rtol=0, atol=0)


def test_windows_are_classified_and_spaced_automatically():
    graph = windows.depthwise_conv2d.graph("float16")
    dims = dict(N=8, C=32, H=56, W=56)
    pattern = analyse(graph)
    assert pattern.op_class is OpClass.WINDOW
    assert [t.name for t in pattern.anchors] == ["y"]
    space = default_schedule(graph, dims).space()
    assert set(space.names) == {"BLOCK_ROWS", "BLOCK_LANE", "UNROLL_WINDOW", "num_warps"}
    assert space.default()["UNROLL_WINDOW"] is True
    # a tile wider than the 56-wide output row is refused before any compile
    assert not space.is_legal(space.default().replace(BLOCK_LANE=128))
    facts = tile_facts(graph, default_schedule(graph, dims).resolve(space.default()), dims)
    rows = 8 * 32 * 56
    lanes = -(-56 // space.default()["BLOCK_LANE"])
    assert facts.programs == -(-rows // space.default()["BLOCK_ROWS"]) * lanes
    assert facts.tile_k == facts.k_iterations == 9
    assert facts.flops_per_program >= 2 * 9 * space.default()["BLOCK_ROWS"] * space.default()["BLOCK_LANE"]
    # a plain row reduction with a constant extent stays a row reduction
    assert analyse(_row_sum.graph()).op_class is OpClass.REDUCTION


@te.operator
def _row_sum(N):
    x = te.placeholder((N, 4), "float32", name="x")
    k = te.reduce_axis(4, name="k")
    return [x], te.compute((N,), lambda i: te.sum(x[i, k], axis=k), name="y")


@te.operator
def pool_of_pool(N, L):
    """Two windowed stages, the second reading the first inside its window."""
    x = te.placeholder((N, L), "float32", name="x")
    r = te.reduce_axis(2, name="r")
    a = te.compute((N, L - 1), lambda i, j: te.max(x[i, j + r], axis=r), name="a")
    q = te.reduce_axis(2, name="q")
    return [x], te.compute((N, L - 2), lambda i, j: te.max(a[i, j + q], axis=q), name="b")


@te.operator
def pool_then_row_sum(N, L):
    x = te.placeholder((N, L), "float32", name="x")
    r = te.reduce_axis(2, name="r")
    a = te.compute((N, L - 1), lambda i, j: te.max(x[i, j + r], axis=r), name="a")
    k = te.reduce_axis(L - 1, name="k")
    return [x], te.compute((N,), lambda i: te.sum(a[i, k], axis=k), name="total")


def test_unsupported_window_patterns_are_clear_errors(lowered):
    with pytest.raises(LoweringError, match="'a' is read inside another window"):
        lowered(pool_of_pool.graph(), dict(N=3, L=9))
    with pytest.raises(LoweringError, match="windowed reduction a together with row reduction total"):
        analyse(pool_then_row_sum.graph())
    with pytest.raises(DSLError, match="padding 2 must be at most half the kernel size 3"):
        windows.pool("max", 2, 3, padding=2)
    with pytest.raises(DSLError, match="stride must be at least 1"):
        windows.depthwise_conv(3, stride=0)
    x = te.placeholder((4, 4), "float32", name="x")
    with pytest.raises(DSLError, match="tensor 'x' has rank 2, got 1 indices"):
        te.in_bounds(x, (1,))


TUNE_DIMS_2D = dict(N=8, C=64, H=56, W=56)
TUNE_DIMS_1D = dict(N=8, C=64, L=1001)


@pytest.mark.slow
def test_default_configs_compile_for_sm90():
    """Each built-in's default config AOT-compiles for Hopper, in one compiling worker process
    (this process interprets), with sane resources."""
    from tiletune.kernels.task import TaskSpec
    from tiletune.search.execution.workers import COMPILE_ENV, WorkerPool
    from tiletune.search.measurement.steps import compile_step

    specs = [TaskSpec.make(name, TUNE_DIMS_2D if name in NAMES_2D else TUNE_DIMS_1D, "float16")
             for name in NAMES_2D + NAMES_1D]
    items = [(spec, spec.build().space.default().to_json()) for spec in specs]
    with WorkerPool(2, env=COMPILE_ENV, name="compile") as pool:
        results = pool.map(compile_step, items, timeout=300)
    for spec, result in zip(specs, results):
        assert result.status == "ok", (spec, result.reason)
        assert result.value.ok, (spec, result.value.reason)
        usage = result.value.data["usage"]
        assert 0 < usage["registers"] <= 255 and usage["spill_bytes"] == 0, (spec, usage)


@pytest.mark.slow
def test_autotune_a_window_builtin_on_the_simulated_h100(tmp_path):
    import tiletune as tt

    report = tt.autotune("max_pool2d", TUNE_DIMS_2D, dtype="float16", device="sim-h100", trials=2,
                         db=tmp_path / "t.db", workers=2)
    assert report.trials == 2
    assert report.statuses["ok"] >= 1, report.reasons
    assert report.best_latency_us is not None and report.best_latency_us > 0
