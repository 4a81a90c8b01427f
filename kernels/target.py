"""The GPUs tiletune targets, described once: their figures and how many blocks an SM holds.

Every part of tiletune that needs a hardware fact reads it here: the space rules (shared memory
per block, the SM count behind split-K and persistent grids), the persistent grid's programs per
SM, the cost model's occupancy features and the simulated devices (`sim-h100`, `sim-h200`). A new
simulated GPU is one `GPUTarget` added to `TARGETS`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True, slots=True)
class GPUTarget:
    """The figures of one GPU. Bandwidths in GB/s, throughputs in TFLOP/s."""

    name: str
    """The simulated device's name (`--device sim-h100`), as records key it."""
    capability: str
    """Compute capability, as device keys spell it ("sm90")."""
    sm_count: int
    clock_ghz: float
    fp16_tensor_tflops: float
    """Dense tensor-core peak for fp16 inputs (bf16 has its own field, usually equal)."""
    bf16_tensor_tflops: float
    tf32_tensor_tflops: float
    """Peak for fp32 inputs to `tl.dot`, which Triton runs as tf32 by default."""
    fp8_tensor_tflops: float
    fp32_tflops: float
    """CUDA-core FMA peak, for contractions and arithmetic that do not use tensor cores."""
    hbm_gbps: float
    l2_bytes: int
    l2_gbps: float
    smem_per_sm: int
    max_smem_per_block: int
    smem_reserved_per_block: int
    """Shared memory the driver reserves for every resident block."""
    regs_per_sm: int
    max_regs_per_thread: int
    reg_alloc_unit: int
    """Registers are allocated to a warp in chunks of this many."""
    max_warps_per_sm: int
    max_blocks_per_sm: int
    max_threads_per_block: int
    dram_latency_us: float
    """Round trip of a global load that misses in L2, under load."""
    launch_overhead_us: float
    """Time between back-to-back launches as an event-timed benchmark sees it."""

    def registers_per_block(self, registers: float, num_warps: int) -> int:
        """Registers one block of `num_warps` warps holds at `registers` per thread, after the
        hardware's rounding: per-thread counts to a multiple of 8, each warp's share to
        `reg_alloc_unit`."""
        per_thread = _round_up(math.ceil(registers), 8)
        return _round_up(per_thread * 32, self.reg_alloc_unit) * num_warps

    def blocks_per_sm(self, registers: float | None, shared_bytes: float | None, num_warps: int) -> int:
        """Blocks of a kernel resident on one SM: the tightest of registers, shared memory,
        warps and the block limit. An unknown resource (None or <= 0) does not limit.

        At least 1: a kernel that fits no block at all is refused by the compile and the
        simulator, not here. Example: 255 registers x 4 warps hold 4 x 32 x 256 = 32768
        registers, so 2 blocks.
        """
        warps = max(int(num_warps), 1)
        limits = [self.max_blocks_per_sm, self.max_warps_per_sm // warps]
        if registers is not None and registers > 0:
            limits.append(self.regs_per_sm // self.registers_per_block(registers, warps))
        if shared_bytes is not None and shared_bytes > 0:
            limits.append(self.smem_per_sm // (math.ceil(shared_bytes) + self.smem_reserved_per_block))
        return max(1, min(limits))

    def occupancy(self, resident: int, num_warps: int) -> float:
        """Resident warps on a fully loaded SM as a fraction of the most it can hold."""
        return min(1.0, resident * max(int(num_warps), 1) / self.max_warps_per_sm)


H100 = GPUTarget(
    name="sim-h100",
    capability="sm90",
    # NVIDIA H100 SXM5, from the H100 datasheet and the Hopper architecture whitepaper.
    sm_count=132,
    clock_ghz=1.98,  # max boost; the tensor peaks below correspond to ~1.83 GHz sustained
    fp16_tensor_tflops=989.4,  # dense (the datasheet's 1979 assumes 2:4 sparsity)
    bf16_tensor_tflops=989.4,
    tf32_tensor_tflops=494.7,
    fp8_tensor_tflops=1978.9,
    fp32_tflops=66.9,  # 132 SMs x 128 FP32 lanes x 2 FLOP x 1.98 GHz
    hbm_gbps=3350.0,  # HBM3, 3.35 TB/s
    l2_bytes=50 * 1024 * 1024,
    l2_gbps=10_000.0,  # estimate: NVIDIA publishes no figure; microbenchmarks give 7-12 TB/s
    smem_per_sm=228 * 1024,  # CUDA C Programming Guide, compute capability 9.0
    max_smem_per_block=227 * 1024,  # 228 KiB per SM, 1 KiB reserved by the driver
    smem_reserved_per_block=1024,
    regs_per_sm=65_536,
    max_regs_per_thread=255,
    reg_alloc_unit=256,
    max_warps_per_sm=64,
    max_blocks_per_sm=32,
    max_threads_per_block=1024,
    dram_latency_us=0.8,  # estimate: ~0.5-0.6 us idle in microbenchmarks, more under load
    launch_overhead_us=3.0,  # estimate: back-to-back launches timed with CUDA events
)

# NVIDIA H200 SXM: the H100's die (same SMs, clocks and tensor peaks) with 141 GB of HBM3e at
# 4.8 TB/s; the model has no capacity figure, so only the bandwidth differs.
H200 = dataclasses.replace(H100, name="sim-h200", hbm_gbps=4800.0)

#: The GPUs tiletune can simulate, by name.
TARGETS: dict[str, GPUTarget] = {H100.name: H100, H200.name: H200}

#: What kernels are generated for: the grid sizes and resource limits baked into a kernel and
#: its space are those of this part (Hopper, sm_90).
KERNEL_TARGET = H100
# Shared memory one block of a generated kernel may use.
MAX_SHARED_BYTES = KERNEL_TARGET.max_smem_per_block
