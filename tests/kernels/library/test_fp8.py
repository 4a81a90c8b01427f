"""fp8 (e4m3) contractions: the dtype through the DSL, the reference and the inputs; matmul_fp8
against the reference in Triton's interpreter at odd shapes (fp8 inputs are exact, so only the
fp32 accumulation and the output rounding differ); its space (K tiles of 32 at least, shared
memory at one byte an element); and sm_90 compiles whose dot is an fp8 wgmma."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import tiletune as tt
from tiletune import tensorexpr as te
from tiletune.errors import DSLError
from tiletune.kernels.emit import POINTER_TYPES, TL_DTYPES
from tiletune.kernels.families import analyse, default_schedule
from tiletune.kernels.families.contraction import dot_dtype
from tiletune.kernels.library import contractions
from tiletune.kernels.lower import lower
from tiletune.kernels.verify import make_inputs
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.operator import operator
from tiletune.tensorexpr.reference import evaluate, torch_dtype

FP8 = "float8_e4m3fn"


def test_fp8_is_a_dsl_dtype_with_its_torch_and_triton_names():
    assert dt.canonical("fp8") == dt.canonical(torch.float8_e4m3fn) == FP8
    assert dt.itemsize(FP8) == 1 and dt.is_float(FP8)
    assert torch_dtype(FP8) is torch.float8_e4m3fn
    assert TL_DTYPES[FP8] == "tl.float8e4nv" and POINTER_TYPES[FP8] == "*fp8e4nv"
    with pytest.raises(DSLError, match="mixed dtypes float8_e4m3fn and float16"):
        dt.promote(FP8, "float16", "x")


def test_fp8_inputs_are_small_exact_values_and_the_reference_computes_in_float64():
    graph = contractions.matmul_fp8.graph("float16")
    dims = dict(M=33, N=17, K=65)
    a, b, scale_a, scale_b = make_inputs(graph, dims, seed=3)
    assert a.dtype == b.dtype == torch.float8_e4m3fn and scale_a.dtype == torch.float32
    assert a.float().abs().max() <= 8 and a.float().std() > 0.5
    assert 0.01 <= float(scale_a) <= 1.0
    out = evaluate(graph, [a, b, scale_a, scale_b], dims)
    exact = (a.double() @ b.double().T) * float(scale_a) * float(scale_b)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, exact.half(), rtol=0, atol=0)


def test_matmul_fp8_feeds_fp8_to_the_dot_on_the_gpu_and_fp32_to_the_interpreter():
    graph = contractions.matmul_fp8.graph("float16")
    assert dot_dtype(analyse(graph)) == FP8
    schedule = default_schedule(graph, dict(M=256, N=256, K=256))
    resolved = schedule.resolve(schedule.space().default())
    gpu = lower(graph, resolved).text
    assert "tl.dot(a_tile, b_tile, acc)" in gpu and "other=0.0" in gpu
    interpreted = lower(graph, resolved, for_interpreter=True).text
    assert "a_tile.to(tl.float32)" in interpreted and 'input_precision="ieee"' in interpreted


def test_fp8_space_takes_k_tiles_of_32_and_counts_one_byte_an_element():
    dims = dict(M=4096, N=4096, K=4096)
    fp8 = default_schedule(contractions.matmul_fp8.graph("float16"), dims).space()
    fp16 = default_schedule(contractions.matmul_a_bt.graph("float16"), dims).space()
    assert min(fp8.knob("BLOCK_K").choices()) == 32 and fp8.default()["BLOCK_K"] == 64
    assert fp16.default()["BLOCK_K"] == 32
    # 3 stages of 256x128 + 128x256 tiles: 192 KiB of fp8 fits, 384 KiB of fp16 does not
    big = dict(BLOCK_M=256, BLOCK_N=256, BLOCK_K=128, num_stages=3, num_warps=8)
    assert fp8.is_legal(fp8.default().replace(**big))
    assert any("shared" in r or "bytes" in r for r in fp16.validate(fp16.default().replace(**big)))
    # K below the 32 tile: the constraint's floor is 32, so the default stays legal
    small_k = default_schedule(contractions.matmul_fp8.graph("float16"), dict(M=5, N=7, K=3)).space()
    assert small_k.default()["BLOCK_K"] == 32 and small_k.is_legal(small_k.default())


@pytest.mark.parametrize(
    "dims, values",
    [
        (dict(M=33, N=17, K=65), {}),
        (dict(M=1, N=40, K=31), {}),  # K below one 32 tile, a single row
        (dict(M=70, N=3, K=130), dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=32, num_stages=1, GROUP_M=1)),
        (dict(M=9, N=33, K=1000), dict(SPLIT_K=4)),
    ],
    ids=["odd", "k31", "smallest", "split_k"],
)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_matmul_fp8_matches_reference_in_the_interpreter(lowered, dims, values, dtype):
    kernel = lowered(contractions.matmul_fp8.graph(dtype), dims, **values)
    verdict = kernel.check(seed=2)
    assert verdict.ok, f"{dims} {kernel.config!r}: {verdict.reason}\n{kernel.src.text}"


def test_a_user_operator_on_fp8_placeholders_lowers_and_matches(lowered):
    @operator
    def fp8_bias(M, N, K, dtype="float32"):
        a = te.placeholder((M, K), "fp8", name="a")
        b = te.placeholder((K, N), "fp8", name="b")
        bias = te.placeholder((N,), "fp8", name="bias")
        k = te.reduce_axis(K, name="k")
        c = te.compute((M, N), lambda i, j: te.sum(a[i, k].astype("float32") * b[k, j].astype("float32"), axis=k))
        y = te.compute((M, N), lambda i, j: (c[i, j] + bias[j].astype("float32")).astype(dtype), name="y")
        return [a, b, bias], y

    kernel = lowered(fp8_bias.graph(), dict(M=19, N=35, K=40))
    assert dot_dtype(analyse(kernel.graph)) == FP8
    verdict = kernel.check()
    assert verdict.ok, verdict.reason


@pytest.mark.slow
def test_matmul_fp8_tunes_on_the_simulated_h100(tmp_path):
    report = tt.autotune("matmul_fp8", dict(M=256, N=256, K=512), dtype="float16", device="sim-h100",
                         trials=2, batch_size=2, workers=1, db=tmp_path / "t.db")
    assert report.statuses["ok"] == 2, report.reasons


# AOT compiles need a process where Triton compiles (TRITON_INTERPRET=0), as the tuner's workers.
COMPILE_WORKER = textwrap.dedent('''
    import json, re, sys
    import triton
    from tiletune.kernels.compile import aot_compile
    from tiletune.kernels.runtime import load_module
    from tiletune.kernels.task import TaskSpec

    results = {}
    for case in json.load(sys.stdin):
        task = TaskSpec.make("matmul_fp8", case["dims"], "float16").build()
        config = task.space.default().replace(**case["values"])
        src = task.source(config)
        constants, aligned = task.specialization(src)
        signature = {**src.signature, **{name: "constexpr" for name in constants}}
        kernel = getattr(load_module(src), src.kernel_name)
        try:
            usage = aot_compile(kernel, signature, {**src.constexprs, **constants},
                                num_warps=src.num_warps, num_stages=src.num_stages, aligned=aligned)
        except Exception as error:
            results[case["id"]] = {"error": f"{type(error).__name__}: {error}"}
            continue
        # the same compile again comes from Triton's cache: read which MMA its PTX issues
        ptx = "".join(open(p).read() for p in __import__("glob").glob(
            f"{__import__('os').environ['TRITON_CACHE_DIR']}/*/{src.kernel_name}.ptx"))
        results[case["id"]] = {"shared": usage.shared_bytes,
                               "mma": sorted(set(re.findall(r"wgmma\\.mma_async[\\w.]*", ptx)))}
    print(json.dumps(results))
''')


@pytest.mark.slow
def test_matmul_fp8_compiles_for_sm90_to_fp8_wgmma(tmp_path):
    cases = [
        dict(id="default", dims=dict(M=33, N=17, K=65), values={}),
        dict(id="large", dims=dict(M=4096, N=4096, K=4096),
             values=dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, num_stages=4, num_warps=8)),
    ]
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "triton")}
    worker = tmp_path / "worker.py"
    worker.write_text(COMPILE_WORKER)
    done = subprocess.run([sys.executable, str(worker)], input=json.dumps(cases), capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for case in cases:
        result = results[case["id"]]
        assert "error" not in result, result
        assert result["mma"] and all(m.endswith(".e4m3.e4m3") for m in result["mma"]), result
    # 4 stages of (128 + 128) x 128 fp8 tiles: 128 KiB, one byte an element
    assert results["large"]["shared"] == 4 * 256 * 128
