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
