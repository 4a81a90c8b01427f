"""The cuBLAS kernel probe a device run makes for the calibration table: cluster shapes read
from kernel names, every cuBLAS figure of the table covered, and a clear refusal without a GPU."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import cublas_kernels  # noqa: E402


@pytest.mark.parametrize("name, cluster", [
    ("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_TNN", (2, 1)),
    ("nvjet_tst_192x192_64x3_1x2_h_bz_coopB_NNT", (1, 2)),
    ("sm90_xmma_gemm_e4m3bf16_e4m3f32_f32_tn_n_tilesize128x128x128_cgasize1x2x1_stage4_gmmastage2", (1, 2)),
    ("sm90_xmma_gemm_e4m3e4m3_e4m3f32_f32_tn_n_tilesize128x128x128_warpgroupsize1x1x1_bias_f16_execute_"
     "segment_k_off_kernel__5x_cublas", None),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>", None),
])
def test_the_cluster_a_kernel_name_states(name, cluster):
    assert cublas_kernels.cluster_of(name) == cluster


def test_every_cublas_figure_of_the_table_has_a_gemm_to_profile():
    figures = cublas_kernels.cublas_figures()
    assert {f["id"] for f in figures} >= {"gemm-fp8-8192x8192x4096-cublas", "gemm-fp16-8192x8192x512-cublas"}
    assert {f["op"] for f in figures} <= {"matmul", "matmul_a_bt", "matmul_fp8"}  # what _gemm runs


def test_without_a_gpu_the_probe_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    done = subprocess.run([sys.executable, str(BENCH / "cublas_kernels.py")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3 and "no CUDA GPU is visible" in done.stderr


@pytest.mark.gpu
def test_on_a_gpu_every_cublas_figure_launches_a_named_kernel():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    found = cublas_kernels.probe()
    assert set(found) == {f["id"] for f in cublas_kernels.cublas_figures()}
    for figure, result in found.items():
        assert result.get("kernels"), (figure, result)
