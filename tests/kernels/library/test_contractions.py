"""The contractions family: every built-in against the reference evaluator in Triton's
interpreter (odd shapes, a dim of 1, K below and just above a tile, tall-skinny outputs), under
the default, the smallest and a split-K config; its automatic space; its tile facts; an sm_90
compile of each default; and a few trials of tuning on the simulated H100."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import tiletune as tt
from tiletune import tensorexpr as te
from tiletune.errors import LoweringError
from tiletune.kernels.families import analyse, default_schedule, tile_facts
from tiletune.kernels.families.contraction import dot_dtype
from tiletune.kernels.library import BUILTINS, contractions
from tiletune.schedules import Config, ConfigSpace
from tiletune.tensorexpr.analysis import OpClass
from tiletune.tensorexpr.operator import operator

DTYPES = ("float32", "float16", "bfloat16")  # bf16 dots are widened for the interpreter

# One odd shape per built-in: primes, a dim of 1, sizes just above a 16 or 32 tile.
SHAPES = {
    "matmul": dict(M=1, N=37, K=131),
    "matmul_bias_relu": dict(M=17, N=45, K=33),
    "matmul_at_b": dict(M=17, N=33, K=19),
    "matmul_a_bt": dict(M=33, N=17, K=19),
    "matmul_at_bt": dict(M=17, N=1, K=37),
    "bmm": dict(B=3, M=17, N=9, K=20),
    "bmm_4d": dict(B=2, H=3, M=5, N=17, K=8),
    "matvec": dict(M=37, K=50),
    "matmul_cast_fp16": dict(M=17, N=9, K=33),
    "matmul_scaled": dict(M=17, N=9, K=33),
    "matmul_bias_gelu": dict(M=17, N=9, K=33),
    "matmul_bias_silu": dict(M=17, N=9, K=33),
    "matmul_residual": dict(M=17, N=9, K=33),
    "matmul_row_col_scale": dict(M=17, N=9, K=33),
    "matmul_fp8": dict(M=33, N=17, K=65),  # fp8 inputs whatever the dtype (the output's)
}


def smallest(space: ConfigSpace) -> Config:
    """Every tile at its smallest, no swizzle, no pipelining, fewest warps (where the space has them)."""
    values = dict(space.default().values)
    for knob in space.knobs:
        if knob.name.startswith("BLOCK_") or knob.name in ("GROUP_M", "num_stages", "num_warps"):
            values[knob.name] = min(knob.choices())
    return Config.from_dict(values)


def test_every_family_member_is_registered_and_documented():
    assert set(contractions.__all__) == set(SHAPES)
    for name in contractions.__all__:
        assert BUILTINS[name].__doc__, name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_builtin_matches_reference_under_default_config(lowered, name, dtype):
    kernel = lowered(BUILTINS[name].graph(dtype), SHAPES[name])
    verdict = kernel.check()
    assert verdict.ok, f"{name} {dtype} {kernel.config!r}: {verdict.reason}\n{kernel.src.text}"


@pytest.mark.parametrize("name", ["matmul_at_bt", "bmm_4d", "matvec", "matmul_scaled", "matmul_bias_gelu"])
def test_builtin_matches_reference_under_smallest_config(lowered, name):
    kernel = lowered(BUILTINS[name].graph("float16"), SHAPES[name], smallest)
    verdict = kernel.check(seed=1)
    assert verdict.ok, f"{name} {kernel.config!r}: {verdict.reason}\n{kernel.src.text}"


@pytest.mark.parametrize(
    "dims",
    [
        dict(M=5, N=7, K=3),  # K below tl.dot's 16: one masked BLOCK_K=16 step
        dict(M=65, N=17, K=8),  # just above a 64 tile, K=8
        dict(M=1000, N=3, K=17),  # tall-skinny
        dict(M=3, N=1000, K=17),  # and the reverse
    ],
    ids=["k3", "k8", "tall", "wide"],
)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_small_k_and_skinny_matmuls(lowered, dims, dtype):
    kernel = lowered(contractions.matmul.graph(dtype), dims)
    verdict = kernel.check()
    assert verdict.ok, f"{dims} {kernel.config!r}: {verdict.reason}"


# (built-in, dims, knob values): SPLIT_K with a fused epilogue, a batch, empty splits (9 K
# iterations over 8 splits of 2) and the smallest tiles.
SPLIT_CASES = [
    ("matmul", dict(M=5, N=7, K=300), dict(SPLIT_K=4)),
    ("matmul_bias_gelu", dict(M=17, N=3, K=300), dict(SPLIT_K=2, BLOCK_M=16, BLOCK_N=16)),
    ("bmm", dict(B=2, M=3, N=5, K=260), dict(SPLIT_K=8)),
    ("matmul_row_col_scale", dict(M=1, N=33, K=300), dict(SPLIT_K=16, BLOCK_K=16, BLOCK_N=16, num_stages=1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, dims, values", SPLIT_CASES, ids=[c[0] for c in SPLIT_CASES])
def test_split_k_matches_reference(lowered, name, dims, values, dtype):
    kernel = lowered(BUILTINS[name].graph(dtype), dims, **values)
    assert f"{name}_reduce_kernel" in kernel.src.text
    verdict = kernel.check()
    assert verdict.ok, f"{name} {dtype} {kernel.config!r}: {verdict.reason}\n{kernel.src.text}"


def test_split_k_is_offered_only_where_k_dominates_and_defaults_to_one():
    graph = contractions.matmul.graph("float16")
    long_k = default_schedule(graph, dict(M=64, N=64, K=4096)).space()
    assert "SPLIT_K" in long_k.names and long_k.default()["SPLIT_K"] == 1
    for dims in (dict(M=512, N=512, K=512), dict(M=4096, N=4096, K=8192), dict(M=64, N=64, K=128)):
        assert "SPLIT_K" not in default_schedule(graph, dims).space().names, dims
    assert long_k.is_legal(long_k.default().replace(SPLIT_K=16, BLOCK_K=128))
    short = default_schedule(graph, dict(M=8, N=8, K=256)).space()
    assert any("splits a K loop of 2" in r for r in short.validate(short.default().replace(SPLIT_K=4, BLOCK_K=128)))


def test_split_k_facts_count_the_split_programs():
    graph = contractions.matmul.graph("float16")
    dims = dict(M=64, N=64, K=4096)
    s = default_schedule(graph, dims)
    base = s.space().default()
    one = tile_facts(graph, s.resolve(base), dims)
    four = tile_facts(graph, s.resolve(base.replace(SPLIT_K=4)), dims)
    assert four.programs == 4 * one.programs
    assert four.k_iterations * 4 == one.k_iterations
    assert four.flops_per_program * four.programs == one.flops_per_program * one.programs


def test_defaults_fit_skinny_and_small_k_workloads():
    space = default_schedule(contractions.matmul.graph("float16"), dict(M=100000, N=4, K=8)).space()
    d = space.default()
    assert (d["BLOCK_M"], d["BLOCK_N"], d["BLOCK_K"]) == (64, 16, 16)
    assert d["num_stages"] == 2  # one K step: nothing deeper to pipeline


def test_prologue_casts_feed_the_dot_in_fp16():
    for op, dtype in ((contractions.matmul_cast_fp16, "float32"), (contractions.matmul_scaled, "float16")):
        assert dot_dtype(analyse(op.graph(dtype))) == "float16"
    assert dot_dtype(analyse(contractions.matmul.graph("float32"))) == "float32"


def test_matvec_is_a_row_reduction_with_a_tunable_space():
    graph = contractions.matvec.graph("float16")
    assert analyse(graph).op_class is OpClass.REDUCTION
    space = default_schedule(graph, dict(M=4096, K=4096)).space()
    assert space.names == ("BLOCK_RED", "BLOCK_ROWS", "num_warps") and space.size > 10
    # a row longer than one block loops over chunks; a few long rows also split across programs
    long_rows = default_schedule(graph, dict(M=64, K=100_000)).space()
    assert "SPLIT" in long_rows.names and long_rows.default()["BLOCK_RED"] < 100_000


def test_an_epilogue_reading_the_accumulator_twice_is_refused(lowered):
    @operator
    def symmetric(N, K, dtype="float16"):
        a = te.placeholder((N, K), dtype, name="a")
        b = te.placeholder((K, N), dtype, name="b")
        k = te.reduce_axis(K, name="k")
        c = te.compute((N, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
        y = te.compute((N, N), lambda i, j: c[i, j] + c[j, i], name="y")
        return [a, b], y

    with pytest.raises(LoweringError, match="reads 'c' at 2 different positions"):
        lowered(symmetric.graph(), dict(N=8, K=8))


# AOT compiles need a process where Triton compiles (TRITON_INTERPRET=0), as the tuner's workers.
COMPILE_WORKER = textwrap.dedent('''
    import json, sys
    from tiletune.kernels.compile import aot_compile
    from tiletune.kernels.runtime import load_module
    from tiletune.schedules.config import Config
    from tiletune.kernels.task import TaskSpec

    results = {}
    for case in json.load(sys.stdin):
        task = TaskSpec.make(case["op"], case["dims"], case["dtype"]).build()
        config = task.space.default() if case["values"] is None else task.space.default().replace(**case["values"])
        src = task.source(config)
        constants, aligned = task.specialization(src)
        signature = {**src.signature, **{name: "constexpr" for name in constants}}
        module = load_module(src)
        names = [src.kernel_name] + [n for n in (src.kernel_name.replace("_kernel", "_reduce_kernel"),) if hasattr(module, n)]
        try:
            for name in names:
                # the second-pass kernel takes a subset of the arguments (no launch flags of the K loop)
                fn = getattr(module, name)
                mine = lambda values: {k: v for k, v in values.items() if k in fn.arg_names}
                usage = aot_compile(fn, mine(signature), mine({**src.constexprs, **constants}),
                                    num_warps=src.num_warps, num_stages=src.num_stages,
                                    aligned=[a for a in aligned if a in fn.arg_names])
            results[case["id"]] = {"kernels": names, "registers": usage.registers}
        except Exception as error:
            results[case["id"]] = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(results))
''')


@pytest.mark.slow
def test_every_default_and_a_split_k_config_compile_for_sm90(tmp_path):
    cases = [dict(id=name, op=name, dims={k: max(v, 16) for k, v in dims.items()}, dtype="float16", values=None)
             for name, dims in SHAPES.items()]
    cases.append(dict(id="split", op="matmul_bias_gelu", dims=dict(M=64, N=64, K=4096), dtype="bfloat16",
                      values=dict(SPLIT_K=4)))
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "triton")}
    worker = tmp_path / "worker.py"
    worker.write_text(COMPILE_WORKER)
    done = subprocess.run([sys.executable, str(worker)], input=json.dumps(cases), capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    failed = {k: v for k, v in results.items() if "error" in v}
    assert not failed, failed
    assert results["split"]["kernels"] == ["matmul_bias_gelu_kernel", "matmul_bias_gelu_reduce_kernel"]


@pytest.mark.slow
def test_a_split_k_workload_tunes_on_the_simulated_h100(tmp_path):
    report = tt.autotune("matmul_bias_silu", dict(M=64, N=64, K=2048), dtype="float16", device="sim-h100",
                         trials=2, batch_size=2, workers=1, db=tmp_path / "t.db")
    assert report.statuses["ok"] == 2, report.reasons
    assert report.best_latency_us > 0
