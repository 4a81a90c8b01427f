"""A deterministic analytic model of a GPU: a kernel's latency estimated from static facts.

The `sim-<gpu>` measurer uses it where no GPU is present, so that the tuner, the cost model and
the tests can run anywhere. It is a roofline with the effects that decide which tile config
wins on a real Hopper part, each a small named function below, read top to bottom:

1. `check_fits`: a block that cannot be resident on one SM at all is refused (`DoesNotFit`).
2. `blocks_per_sm` / `occupancy`: resident blocks limited by registers, shared memory, warps
   and the block limit, with the hardware's allocation granularity.
3. `waves` / `busiest_sm_programs`: the grid quantized over the SMs; the busiest SM sets the
   time.
4. `compute_time_us`: the busiest SM's FLOPs at the tensor-core (or CUDA-core) peak, scaled by
   `tensor_core_efficiency` (tile shape) and `latency_hiding` (resident warps).
5. `memory_time_us`: the larger of compulsory DRAM traffic over HBM bandwidth and the busiest
   SM's share of L2 traffic (tile loads, stores and spill traffic).
6. `overlap`: with `num_stages >= 2` compute and memory overlap, deeper pipelines a bit
   better; with one stage they add.
7. `latency_chain_us`: a program cannot finish faster than its chain of dependent memory
   round trips, however idle the machine.
8. `spill_slowdown`: a multiplicative penalty on top of the spill traffic, so that a spilling
   config is always slower than the same config without spills.
9. Launch overhead.

Absolute numbers are estimates; the model is meant to rank configs the way the hardware does
and to land within a small factor of real timings. Every record it produces says `sim`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from tiletune.errors import TiletuneError, UsageError
from tiletune.kernels.target import H100, H200, TARGETS, GPUTarget

__all__ = [
    "H100",
    "H200",
    "SIMULATED_GPUS",
    "DoesNotFit",
    "GPUTarget",
    "KernelFacts",
    "SimResult",
    "blocks_per_sm",
    "busiest_sm_programs",
    "check_fits",
    "compute_time_us",
    "latency_chain_us",
    "latency_hiding",
    "memory_time_us",
    "occupancy",
    "overlap",
    "peak_tflops",
    "registers_per_block",
    "simulate",
    "spill_slowdown",
    "spill_traffic_bytes",
    "tensor_core_efficiency",
    "waves",
]

# A persistent program issues its next tile's first loads under the previous tile's epilogue,
# and no block retires and relaunches per tile: a few percent on large GEMMs (estimate, after
# Triton's persistent-matmul tutorial figures on H100).
PERSISTENT_GAIN = 0.97

DOT_DTYPES = ("float16", "bfloat16", "float32", "float8", "float8_e4m3fn", "none")
LIMITERS = ("compute", "memory", "latency", "launch")


class DoesNotFit(TiletuneError, ValueError):
    """A kernel cannot have even one block resident on an SM; the caller records the reason."""


#: The devices a `sim-<gpu>` measurer can stand for, by name: the GPUs of `kernels.target`.
SIMULATED_GPUS: dict[str, GPUTarget] = TARGETS


@dataclass(frozen=True, slots=True)
class KernelFacts:
    """What the lowering and the AOT compile know about one launch of one kernel."""

    programs: int
    """Grid size: programs (blocks) launched."""
    flops_per_program: float
    bytes_per_program: float
    """Global-memory traffic one program issues, loads plus stores."""
    unique_bytes: float
    """Compulsory DRAM traffic of the whole launch: inputs read once, output written once."""
    uses_tensor_cores: bool
    dot_dtype: str
    """Input dtype of the contraction: one of `DOT_DTYPES` ("none" where there is no dot)."""
    tile_m: int
    tile_n: int
    tile_k: int
    """Tile of the contraction; 0 where the kernel is not a contraction."""
    k_iterations: int
    """Trips of the main loop; 1 where there is no loop."""
    num_warps: int
    num_stages: int
    registers: int
    """Registers per thread from the AOT compile; 0 where unknown (then no register limit)."""
    spill_bytes: int
    shared_bytes: int
    persistent: bool = False
    """A grid of about the SM count whose programs loop over tiles (k_iterations counts them all)."""
    tma: bool = False
    """Tiles loaded through tensor descriptors (the copy engine computes the addresses)."""
    warp_specialized: bool = False
    """The main loop split into producer (load) and consumer (MMA) warps."""

    def __post_init__(self) -> None:
        problems = []
        if self.programs < 1:
            problems.append(f"programs must be >= 1, got {self.programs}")
        if self.dot_dtype not in DOT_DTYPES:
            problems.append(f"dot_dtype must be one of {list(DOT_DTYPES)}, got {self.dot_dtype!r}")
        if self.k_iterations < 1:
            problems.append(f"k_iterations must be >= 1, got {self.k_iterations}")
        if self.num_warps < 1 or self.num_stages < 1:
            problems.append(f"num_warps and num_stages must be >= 1, got {self.num_warps}, {self.num_stages}")
        for name in ("flops_per_program", "bytes_per_program", "unique_bytes", "tile_m", "tile_n",
                     "tile_k", "registers", "spill_bytes", "shared_bytes"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                problems.append(f"{name} must be finite and >= 0, got {value}")
        if problems:
            raise UsageError("KernelFacts: " + "; ".join(problems))

    @property
    def threads(self) -> int:
        """Threads per program."""
        return self.num_warps * 32


@dataclass(frozen=True, slots=True)
class SimResult:
    """The simulated timing of one launch and the terms it was built from (times in µs)."""

    latency_us: float
    compute_us: float
    memory_us: float
    waves: int
    blocks_per_sm: int
    occupancy: float
    """Resident warps on a fully loaded SM over the most it can hold."""
    limiter: str
    """What bounds the time: one of `LIMITERS`."""
    spill_penalty: float
    """The multiplicative slowdown applied for spills; 1.0 without spills."""


def simulate(facts: KernelFacts, gpu: GPUTarget = H100) -> SimResult:
    """Estimate the latency of one launch on `gpu`. Raises `DoesNotFit` for an illegal kernel."""
    check_fits(facts, gpu)
    resident = blocks_per_sm(facts, gpu)
    compute = compute_time_us(facts, gpu, resident)
    memory = memory_time_us(facts, gpu)
    chain = latency_chain_us(facts, gpu, resident)
    penalty = spill_slowdown(facts.spill_bytes)
    throughput = overlap(compute, memory, facts.num_stages, facts.warp_specialized)
    if facts.persistent:
        throughput *= PERSISTENT_GAIN
    body = max(throughput, chain) * penalty
    return SimResult(
        latency_us=gpu.launch_overhead_us + body,
        compute_us=compute,
        memory_us=memory,
        waves=waves(facts, gpu, resident),
        blocks_per_sm=resident,
        occupancy=occupancy(facts, gpu, resident),
        limiter=_limiter(compute, memory, throughput, chain, body, gpu),
        spill_penalty=penalty,
    )


def check_fits(facts: KernelFacts, gpu: GPUTarget) -> None:
    """Raise `DoesNotFit` when not even one block of the kernel can be resident on an SM."""
    if facts.shared_bytes > gpu.max_smem_per_block:
        raise DoesNotFit(f"shared memory {facts.shared_bytes} B per block exceeds the "
                         f"{gpu.max_smem_per_block} B limit of {gpu.name}")
    if facts.registers > gpu.max_regs_per_thread:
        raise DoesNotFit(f"{facts.registers} registers per thread exceed the "
                         f"{gpu.max_regs_per_thread} limit of {gpu.name}")
    if facts.threads > gpu.max_threads_per_block:
        raise DoesNotFit(f"{facts.threads} threads per block exceed the "
                         f"{gpu.max_threads_per_block} limit of {gpu.name}")
    if registers_per_block(facts, gpu) > gpu.regs_per_sm:
        raise DoesNotFit(f"{facts.num_warps} warps x {facts.registers} registers need "
                         f"{registers_per_block(facts, gpu)} registers, more than the "
                         f"{gpu.regs_per_sm} of one SM of {gpu.name}")


def registers_per_block(facts: KernelFacts, gpu: GPUTarget) -> int:
    """Registers one block holds, after the hardware's rounding (`GPUTarget.registers_per_block`)."""
    return gpu.registers_per_block(facts.registers, facts.num_warps) if facts.registers > 0 else 0


def blocks_per_sm(facts: KernelFacts, gpu: GPUTarget) -> int:
    """Blocks resident on one SM: the tightest of registers, shared memory, warps and blocks."""
    # check_fits has already refused kernels that fit no block
    return gpu.blocks_per_sm(facts.registers, facts.shared_bytes, facts.num_warps)


def occupancy(facts: KernelFacts, gpu: GPUTarget, resident: int) -> float:
    """Resident warps on a fully loaded SM as a fraction of the most an SM can hold."""
    return gpu.occupancy(resident, facts.num_warps)


def waves(facts: KernelFacts, gpu: GPUTarget, resident: int) -> int:
    """Rounds of resident blocks needed to run the grid: ceil(programs / (SMs x blocks/SM))."""
    return math.ceil(facts.programs / (gpu.sm_count * resident))


def busiest_sm_programs(facts: KernelFacts, gpu: GPUTarget) -> int:
    """Programs the busiest SM runs; blocks on one SM share its tensor cores and bandwidth.

    This is where wave quantization bites: one program more than a multiple of the SM count
    makes one SM do a whole extra program while the others idle.
    """
    return math.ceil(facts.programs / gpu.sm_count)


def peak_tflops(facts: KernelFacts, gpu: GPUTarget) -> float:
    """The arithmetic peak the kernel's main operation can reach."""
    if not facts.uses_tensor_cores or facts.dot_dtype == "none":
        return gpu.fp32_tflops
    return {
        "float16": gpu.fp16_tensor_tflops,
        "bfloat16": gpu.bf16_tensor_tflops,
        "float32": gpu.tf32_tensor_tflops,
        "float8": gpu.fp8_tensor_tflops,
        "float8_e4m3fn": gpu.fp8_tensor_tflops,  # the DSL's name, as the kernel facts give it
    }[facts.dot_dtype]


def tensor_core_efficiency(facts: KernelFacts) -> float:
    """Fraction of the tensor-core peak the tile shape allows (1.0 without tensor cores).

    Hopper's wgmma works on 64-row slabs per warpgroup, so a tile_m below 64 wastes rows.
    Narrow tile_n loads the same A fragment from shared memory for fewer outputs, and a short
    tile_k pays the per-iteration barrier and wait for less work.
    """
    if not facts.uses_tensor_cores or facts.dot_dtype == "none":
        return 1.0
    rows = min(1.0, facts.tile_m / 64)
    cols = min(1.0, facts.tile_n / 128) ** 0.5
    depth = facts.tile_k / (facts.tile_k + 8)
    efficiency = rows * cols * depth
    if facts.tma:
        # the copy engine computes tile addresses: the issue slots that pointer arithmetic took
        # per iteration go back to the MMAs, recovering part of the short-tile loss
        efficiency = 1.0 - 0.8 * (1.0 - efficiency)
    return max(efficiency, 1e-3)


def latency_hiding(resident_warps: int) -> float:
    """Fraction of peak issue an SM keeps with this many resident warps.

    Fewer than 4 (one warpgroup, one warp per scheduler) leave schedulers idle while
    instructions wait on their operands.
    """
    return min(1.0, resident_warps / 4)


def compute_time_us(facts: KernelFacts, gpu: GPUTarget, resident: int) -> float:
    """Time for the busiest SM's FLOPs at the peak scaled by tile shape and resident warps."""
    load = busiest_sm_programs(facts, gpu)
    resident_warps = min(load, resident) * facts.num_warps
    per_sm_flops_per_us = peak_tflops(facts, gpu) * 1e6 / gpu.sm_count
    rate = per_sm_flops_per_us * tensor_core_efficiency(facts) * latency_hiding(resident_warps)
    return load * facts.flops_per_program / rate


def spill_traffic_bytes(facts: KernelFacts) -> float:
    """Local-memory traffic of one program from spills: a store and a reload per loop trip."""
    return 2.0 * facts.spill_bytes * facts.threads * facts.k_iterations


def memory_time_us(facts: KernelFacts, gpu: GPUTarget) -> float:
    """The larger of DRAM time for compulsory traffic and the busiest SM's share of L2 time.

    DRAM traffic beyond `unique_bytes` (re-reads of data evicted from L2) is not modelled;
    the L2 term charges every byte a program issues, spills included.
    """
    dram_us = facts.unique_bytes / (gpu.hbm_gbps * 1e3)
    per_sm_l2_bytes_per_us = gpu.l2_gbps * 1e3 / gpu.sm_count
    sm_bytes = busiest_sm_programs(facts, gpu) * (facts.bytes_per_program + spill_traffic_bytes(facts))
    return max(dram_us, sm_bytes / per_sm_l2_bytes_per_us)


def overlap(compute_us: float, memory_us: float, num_stages: int, warp_specialized: bool = False) -> float:
    """Compute and memory combined: summed with one stage, overlapped with more.

    Software pipelining hides the shorter of the two behind the longer; what leaks through
    shrinks with depth (30 % with two stages, 15 % with three, 10 % with four), a diminishing
    return; a warp-specialized loop leaks half as much.
    """
    if num_stages <= 1:
        return compute_us + memory_us
    leak = 0.3 / (num_stages - 1)
    if warp_specialized:
        # producer warps keep every stage's copy in flight while the consumers compute
        leak /= 2
    return max(compute_us, memory_us) + leak * min(compute_us, memory_us)


def latency_chain_us(facts: KernelFacts, gpu: GPUTarget, resident: int) -> float:
    """The least time the grid takes with unlimited throughput: dependent memory round trips.

    Each program waits one round trip for its first load and one for its stores to drain;
    between them each further loop trip waits one round trip, divided among the
    `num_stages - 1` loads the pipeline keeps in flight. Blocks resident together overlap
    their chains, so the chain counts once per wave.
    """
    in_flight = max(1, facts.num_stages - 1)
    if facts.warp_specialized:
        in_flight = facts.num_stages  # the producer refills a stage as soon as it is consumed
    # (a persistent program's k_iterations span all its tiles: one ramp up and one drain for
    # the lot, where one program per tile pays them on every wave)
    per_program = (2 + (facts.k_iterations - 1) / in_flight) * gpu.dram_latency_us
    return waves(facts, gpu, resident) * per_program


def spill_slowdown(spill_bytes: int) -> float:
    """Multiplier for spilling kernels: 1.0 without spills, from 1.1 towards 2.0 with more.

    Spill stores and reloads take issue slots and stall the instructions waiting on them
    beyond what their traffic costs.
    """
    if spill_bytes <= 0:
        return 1.0
    return 1.1 + 0.9 * spill_bytes / (spill_bytes + 1024)


def _limiter(compute: float, memory: float, throughput: float, chain: float, body: float,
             gpu: GPUTarget) -> str:
    """Name the term that bounds the time."""
    if gpu.launch_overhead_us > body:
        return "launch"
    if chain >= throughput:
        return "latency"
    return "compute" if compute >= memory else "memory"
