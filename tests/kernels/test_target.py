"""The GPU target: residency (blocks per SM, occupancy) from registers, shared memory and warps,
with the hardware's allocation granularity, and one description per simulated GPU."""
from __future__ import annotations

import pytest

from tiletune.kernels.target import H100, H200, KERNEL_TARGET, TARGETS


def test_occupancy_255_registers_times_4_warps_fits_2_blocks():
    # 255 -> 256 registers per thread, x 32 x 4 = 32768 per block: 65536 / 32768 = 2 blocks.
    assert H100.blocks_per_sm(255, None, 4) == 2
    assert H100.occupancy(H100.blocks_per_sm(255, None, 4), 4) == pytest.approx(2 * 4 / 64)


def test_occupancy_is_limited_by_the_tightest_resource():
    assert H100.blocks_per_sm(None, None, 1) == 32  # the block limit
    assert H100.blocks_per_sm(None, None, 8) == 8  # 64 warps / 8
    assert H100.blocks_per_sm(32, None, 4) == 16  # 32 regs: 4096 per block, 16 blocks, also 64 warps
    # 100 KiB of shared memory + 1 KiB reserved: two fit in 228 KiB.
    assert H100.blocks_per_sm(32, 100 * 1024, 4) == 2
    assert H100.blocks_per_sm(32, 200 * 1024, 4) == 1
    assert H100.blocks_per_sm(40, None, 4) == 12  # 40 regs -> 1280 per warp, 5120 per block
    assert H100.occupancy(H100.blocks_per_sm(32, None, 4), 4) == 1.0
    assert H100.occupancy(H100.blocks_per_sm(255, 200 * 1024, 8), 8) == pytest.approx(8 / 64)
    assert H100.regs_per_sm == 65_536 and H100.smem_per_sm == 228 * 1024


def test_registers_round_to_8_per_thread_and_256_per_warp():
    assert H100.registers_per_block(33, 4) == 40 * 32 * 4
    assert H100.registers_per_block(1, 1) == 256  # one warp's smallest allocation


def test_every_simulated_gpu_is_one_target_and_kernels_are_generated_for_the_h100():
    assert TARGETS == {"sim-h100": H100, "sim-h200": H200}
    assert KERNEL_TARGET is H100
    # the H200 is the H100's die with faster memory
    assert (H200.sm_count, H200.fp16_tensor_tflops) == (H100.sm_count, H100.fp16_tensor_tflops)
    assert H200.hbm_gbps > H100.hbm_gbps
