"""Scans (cumsum, cumprod, cummax, cummin): the DSL node, the reference, the scan kernel through
Triton's interpreter at odd shapes and several configs, the errors, AOT compiles and tuning."""
from __future__ import annotations

import pytest
import torch

from tiletune import tensorexpr as te
from tiletune.errors import DSLError, LoweringError
from tiletune.kernels.families import analyse, default_schedule, tile_facts
from tiletune.kernels.library import FAMILIES, builtin, scans
from tiletune.kernels.library.scans import cumulative
from tiletune.kernels.lower import lower
from tiletune.kernels.verify import verification_dims
from tiletune.tensorexpr.analysis import OpClass
from tiletune.tensorexpr.reference import evaluate

# (built-in, dims): odd lengths, a 1-element row, a row just above the default chunk
BUILTIN_CASES = [
    ("cumsum", {"N": 3, "D": 37}),
    ("cumsum", {"N": 1, "D": 1}),
    ("cumprod", {"N": 5, "D": 17}),
    ("cummax", {"N": 7, "D": 129}),
    ("cumsum_dim1", {"B": 2, "L": 19, "C": 5}),
]


def smallest(space):
    """The space's default with the smallest tiles: several chunks and one row per program."""
    return space.default().replace(BLOCK_ROWS=1, BLOCK_SCAN=16, num_warps=1)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name,dims", BUILTIN_CASES, ids=lambda v: str(v))
def test_builtins_match_the_reference_under_the_default_config(verified, name, dims, dtype):
    verified(builtin(name).graph(dtype), dims)


@pytest.mark.parametrize("name,dims", [("cumsum", {"N": 3, "D": 37}), ("cummax", {"N": 2, "D": 33}),
                                       ("cumsum_dim1", {"B": 3, "L": 50, "C": 3})])
def test_smallest_tiles_loop_over_chunks_with_a_masked_tail(verified, name, dims):
    # 16-element chunks over rows of 33..50: the loop runs 3-4 times carrying the running total
    verified(builtin(name).graph("float16"), dims, smallest)


def test_a_row_just_above_one_chunk_runs_the_loop_twice(lowered):
    kernel = lowered(builtin("cumsum").graph("float32"), {"N": 3, "D": 65}, BLOCK_SCAN=64, BLOCK_ROWS=2)
    assert "for start in range(0, n_scan, BLOCK_SCAN):" in kernel.src.text
    assert kernel.check().ok
    x = torch.randn(3, 65)
    torch.testing.assert_close(kernel.run([x]), torch.cumsum(x, dim=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dim", [0, -1])
@pytest.mark.parametrize("op", ["sum", "min"])
def test_axis_0_and_last_axis_of_a_3d_tensor(verified, op, dim):
    graph = cumulative(op, 3, dim).graph("float32")
    verified(graph, {"D0": 17, "D1": 3, "D2": 5})
    verified(graph, {"D0": 17, "D1": 3, "D2": 5}, smallest)


def test_a_middle_axis_of_a_4d_tensor_in_float16(verified):
    verified(cumulative("sum", 4, 2).graph("float16"), {"D0": 2, "D1": 3, "D2": 21, "D3": 5})


def test_bfloat16_loads_and_stores_around_an_fp32_scan(verified):
    verified(builtin("cumsum").graph("bfloat16"), {"N": 3, "D": 37})


def test_cumsum_and_cumprod_agree_with_torch(lowered):
    # values near 1 keep a long product finite; 300 elements in 64-element chunks
    gen = torch.Generator().manual_seed(1)
    x = 1.0 + 0.01 * torch.randn(4, 300, generator=gen)
    product = lowered(builtin("cumprod").graph("float32"), {"N": 4, "D": 300}, BLOCK_SCAN=64)
    torch.testing.assert_close(product.run([x]), torch.cumprod(x.double(), dim=1).float(), rtol=1e-4, atol=1e-5)
    total = lowered(builtin("cumsum").graph("float16"), {"N": 4, "D": 300}, BLOCK_SCAN=64)
    expected = torch.cumsum(x.half().double(), dim=1).half()
    torch.testing.assert_close(total.run([x.half()]), expected, rtol=2e-3, atol=2e-3)


def test_elementwise_producers_and_consumers_fuse_into_the_scan(verified, lowered):
    @te.operator
    def scaled_cumsum(N, D, dtype="float32"):
        x = te.placeholder((N, D), dtype, name="x")
        w = te.placeholder((D,), dtype, name="w")
        prod = te.compute((N, D), lambda i, j: x[i, j] * w[j], name="prod")
        run = te.compute((N, D), lambda i, j: te.cumsum(prod[i, j], axis=j), name="run")
        y = te.compute((N, D), lambda i, j: te.sigmoid(run[i, j]) + x[i, j], name="y")
        return [x, w], y

    graph = scaled_cumsum.graph("float16")
    assert analyse(graph).op_class is OpClass.SCAN
    src = lowered(graph, {"N": 5, "D": 23}).src.text
    assert src.count("tl.store(") == 1 and "tl.cumsum(" in src
    verified(graph, {"N": 5, "D": 23})
    verified(graph, {"N": 5, "D": 23}, smallest)


def test_integer_scans_accumulate_in_their_integer_type(verified):
    @te.operator
    def int_cumsum(N, D):
        x = te.placeholder((N, D), "int32", name="x")
        return [x], te.compute((N, D), lambda i, j: te.cumsum(x[i, j], axis=j), name="y")

    verified(int_cumsum.graph(), {"N": 3, "D": 37}, smallest)


def test_reference_matches_torch_in_float64():
    x = torch.randn(4, 6, 5, dtype=torch.float64)
    for op, fn in (("sum", torch.cumsum), ("prod", torch.cumprod),
                   ("max", lambda t, d: torch.cummax(t, d).values), ("min", lambda t, d: torch.cummin(t, d).values)):
        out = evaluate(cumulative(op, 3, 1).graph("float64"), [x])
        torch.testing.assert_close(out, fn(x, 1), rtol=0, atol=0)


# --- schedule space and facts ---------------------------------------------------------------


def test_space_is_single_pass_where_the_row_fits_and_looped_beyond():
    graph = builtin("cumsum").graph("float32")
    short = default_schedule(graph, {"N": 64, "D": 300}).space()
    assert [k.name for k in short.knobs] == ["BLOCK_SCAN", "BLOCK_ROWS", "num_warps"]
    assert short.default()["BLOCK_SCAN"] == 512
    long = default_schedule(graph, {"N": 64, "D": 5000})
    config = long.space().default()
    assert config["BLOCK_SCAN"] == 1024
    facts = tile_facts(graph, long.resolve(config), {"N": 64, "D": 5000})
    assert facts.k_iterations == 5 and facts.tile_n == 1024
    assert facts.programs == 64 // config["BLOCK_ROWS"]
    assert facts.unique_bytes == 2 * 64 * 5000 * 4
    assert 0 < facts.tail_fraction < 0.03
    small = verification_dims(graph, {"N": 64, "D": 5000}, long.resolve(config))
    assert small["D"] == 2 * 1024 + 3
    i, j = graph.output.op.axes
    assert (long.role(i), long.role(j), long.role("scan")) == ("rows", "scan", "scan")


# --- errors ---------------------------------------------------------------------------------


def test_dsl_errors_name_the_pattern():
    x = te.placeholder((4, 5), name="x")
    k = te.reduce_axis(5, name="k")
    with pytest.raises(DSLError, match="'k' is a reduce axis; a scan runs along a spatial axis"):
        te.compute((4,), lambda i: te.cumsum(x[i, k], axis=k))
    with pytest.raises(DSLError, match="unknown combine 'mean'; expected one of sum, prod, max, min"):
        te.compute((4, 5), lambda i, j: te.scan("mean", x[i, j], axis=j))
    with pytest.raises(DSLError, match="must be the whole body of its stage"):
        te.compute((4, 5), lambda i, j: te.cumsum(x[i, j], axis=j) * 2)
    other = te.compute((4, 5), lambda a, b: x[a, b], name="other")
    with pytest.raises(DSLError, match="not an axis of this stage"):
        te.compute((4, 5), lambda i, j: te.cumsum(x[i, j], axis=other.op.axes[1]))
    with pytest.raises(DSLError, match="rank must be 1 to 4"):
        cumulative("sum", 5, 0)


def test_unsupported_scan_patterns_fail_at_lowering_with_the_reason():
    @te.operator
    def reversed_read(N, D):
        x = te.placeholder((N, D), name="x")
        run = te.compute((N, D), lambda i, j: te.cumsum(x[i, j], axis=j), name="run")
        return [x], te.compute((N, D), lambda i, j: run[i, D - 1 - j], name="y")

    @te.operator
    def scan_then_reduce(N, D):
        x = te.placeholder((N, D), name="x")
        run = te.compute((N, D), lambda i, j: te.cumsum(x[i, j], axis=j), name="run")
        k = te.reduce_axis(D, name="k")
        return [x], te.compute((N,), lambda i: te.sum(run[i, k], axis=k), name="total")

    graph = reversed_read.graph()
    schedule = default_schedule(graph, {"N": 3, "D": 7})
    with pytest.raises(LoweringError, match="stage 'run' is read as run\\[i, .*\\]; a scan's consumers must read it"):
        lower(graph, schedule.resolve(schedule.space().default()))
    with pytest.raises(LoweringError, match="run, total are a scan together with other scans or reductions"):
        analyse(scan_then_reduce.graph())


# --- AOT compile and tuning -------------------------------------------------------------------


@pytest.mark.slow
def test_every_builtin_default_config_compiles_for_sm90():
    from tiletune.kernels.task import TaskSpec
    from tiletune.search.execution.workers import COMPILE_ENV, WorkerPool
    from tiletune.search.measurement.steps import compile_step

    specs = [TaskSpec.make(name, {d: 1000 + 17 * n for n, d in enumerate(builtin(name).dim_names)}, "float16")
             for name in scans.__all__]
    with WorkerPool(2, env=COMPILE_ENV, name="scan-compile") as pool:
        results = pool.map(compile_step, [(s, s.build().space.default().to_json()) for s in specs], timeout=300)
    for spec, res in zip(specs, results):
        assert res.status == "ok" and res.value.ok, (str(spec), res)
        assert res.value.data["usage"]["registers"] > 0 and res.value.data["usage"]["spill_bytes"] == 0


@pytest.mark.slow
def test_autotune_cumsum_on_the_simulated_h100(tmp_path):
    import tiletune as tt

    report = tt.autotune("cumsum", {"N": 512, "D": 3000}, dtype="float16", device="sim-h100", trials=4,
                         db=str(tmp_path / "t.db"), workers=2, batch_size=4)
    assert report.statuses.get("ok") == 4, report.reasons
    assert report.best_latency_us > 0


def test_the_family_is_registered():
    assert FAMILIES["scans"] is scans
    assert set(scans.__all__) == {"cumsum", "cumprod", "cummax", "cumsum_dim1"}
