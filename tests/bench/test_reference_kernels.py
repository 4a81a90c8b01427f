"""The suite's reference Triton kernels compute the right thing (interpreter, fixed configs)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
_spec = importlib.util.spec_from_file_location("bench_reference_kernels", BENCH / "reference_kernels.py")
ref = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ref
_spec.loader.exec_module(ref)


def test_reference_matmul_with_and_without_the_gelu_epilogue():
    a, b, bias = torch.randn(37, 45), torch.randn(45, 29), torch.randn(29)
    config = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2}
    plain = ref.launch_matmul(ref.matmul_kernel, a, b, None, False, **config)
    torch.testing.assert_close(plain, a @ b, rtol=1e-3, atol=1e-3)
    fused = ref.launch_matmul(ref.matmul_kernel, a, b, bias, True, **config)
    torch.testing.assert_close(fused, torch.nn.functional.gelu(a @ b + bias), rtol=1e-3, atol=1e-3)


def test_reference_row_kernels():
    x, w, b = torch.randn(7, 50), torch.randn(50), torch.randn(50)
    torch.testing.assert_close(ref.softmax(x, kernel=ref.softmax_kernel), torch.softmax(x, -1))
    torch.testing.assert_close(ref.layernorm(x, w, b, kernel=ref.layernorm_kernel),
                               torch.nn.functional.layer_norm(x, (50,), w, b, eps=1e-5), rtol=1e-4, atol=1e-4)
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w
    torch.testing.assert_close(ref.rmsnorm(x, w, kernel=ref.rmsnorm_kernel), expected, rtol=1e-4, atol=1e-4)


# The reference kernels compile for sm_90 and the matmul configs fit Hopper (a compile-only
# check: a worker process with TRITON_INTERPRET=0, as tiletune's own compiles run).
AOT_WORKER = r'''
import importlib.util, json, sys
from tiletune.kernels.compile import aot_compile

spec = importlib.util.spec_from_file_location("reference_kernels", sys.argv[1])
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
mm = {"a_ptr": "*{t}", "b_ptr": "*{t}", "bias_ptr": "*{t}", "c_ptr": "*{t}", "M": "i32", "N": "i32", "K": "i32",
      "stride_am": "i32", "stride_ak": "constexpr", "stride_bk": "i32", "stride_bn": "constexpr",
      "stride_cm": "i32", "stride_cn": "constexpr"}  # unit strides: Triton's JIT makes them constants
aligned = ["a_ptr", "b_ptr", "bias_ptr", "c_ptr", "M", "N", "K", "stride_am", "stride_bk", "stride_cm"]
results = []
def smem(c):  # the pipelined A and B tiles, in elements
    return (c.kwargs["BLOCK_M"] + c.kwargs["BLOCK_N"]) * c.kwargs["BLOCK_K"] * c.num_stages
largest = sorted(ref._matmul_configs(), key=smem)[-2:]  # the rest need less shared memory
jobs = [("fp16", c, True) for c in largest] + [("bf16", ref._matmul_configs()[0], False)]
for t, config, epilogue in jobs:
    sig = {k: v.format(t=t) for k, v in mm.items()}
    consts = {**config.kwargs, "HAS_BIAS": epilogue, "GELU": epilogue, "stride_ak": 1, "stride_bn": 1, "stride_cn": 1}
    usage = aot_compile(ref.matmul_kernel, sig, consts, num_warps=config.num_warps, num_stages=config.num_stages,
                        aligned=aligned)
    results.append(["matmul", t, usage.spill_bytes, usage.shared_bytes])
rows = {"softmax_kernel": ["x_ptr", "y_ptr"], "layernorm_kernel": ["x_ptr", "w_ptr", "b_ptr", "y_ptr"],
        "rmsnorm_kernel": ["x_ptr", "w_ptr", "y_ptr"]}
for name, ptrs in rows.items():
    sig = {**{p: "*fp16" for p in ptrs}, "D": "i32", "stride_x": "i32", "stride_y": "i32"}
    if name != "softmax_kernel":
        sig["eps"] = "fp32"
    usage = aot_compile(getattr(ref, name), sig, {"BLOCK": 4096}, num_warps=8, num_stages=1,
                        aligned=ptrs + ["D", "stride_x", "stride_y"])
    results.append([name, "fp16", usage.spill_bytes, usage.shared_bytes])
print(json.dumps(results))
'''


def test_reference_kernels_compile_for_sm90_and_the_largest_matmul_configs_fit():
    import json
    import os
    import subprocess

    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, "-c", AOT_WORKER, str(BENCH / "reference_kernels.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    assert len(results) == 2 + 1 + 3
    for name, dtype, spills, shared in results:
        assert shared <= 232448, (name, dtype, shared)  # 227 KiB: Hopper's shared memory per block
