"""A deterministic analytic model of a GPU: a kernel's latency estimated from static facts.

The `sim-<gpu>` measurer uses it where no GPU is present, so that the tuner, the cost model and
the tests can run anywhere. It is a roofline with the effects that decide which tile config
wins on a real Hopper part, each a small named function below, read top to bottom:

1. `check_fits`: a block that cannot be resident on one SM at all is refused (`DoesNotFit`).
2. `blocks_per_sm` / `occupancy`: resident blocks limited by registers, shared memory, warps
   and the block limit, with the hardware's allocation granularity.
3. `waves` / `busiest_sm_programs`: the grid quantized over the SMs; the busiest SM sets the
   time. A kernel launched in thread-block clusters is scheduled a whole cluster at a time, on
   `cluster_slots` groups of SMs (`cluster_size` CTAs each).
4. `compute_time_us`: the busiest SM's FLOPs at the tensor-core (or CUDA-core) peak, scaled by
   `tensor_core_efficiency` (tile shape), `load_path_efficiency` (pointer loads spend issue
   slots on addresses and masks that TMA does not: about 13 % on large fp16 GEMMs, triton
   PR #5461) and `latency_hiding` (resident warps).
5. `softmax_time_us` / `issue_overlap`: work of a dot loop off the tensor cores (attention's
   exp2 on the MUFU, its max/scale/sum/rescale and masks on the CUDA cores; only the trips
   that apply a mask pay for it), overlapped with the MMAs only as far as another warpgroup
   or a warp-specialized schedule can run it while the tensor cores work.
6. `memory_time_us`: the larger of compulsory DRAM traffic over HBM bandwidth and the busiest
   SM's share of L2 traffic (tile loads, stores and spill traffic), less what a cluster's TMA
   multicast spares it (`l2_bytes_per_program`).
7. `overlap` / `pipeline_stages`: with `num_stages >= 2` compute and memory overlap, deeper
   pipelines a bit better; with one stage they add. A persistent program with pointer loads
   counts as one stage: Triton 3.9 does not pipeline its loop (one operand goes through
   registers), so it is charged the non-pipelined cost.
8. `tile_overhead_us`: per output tile, the pipeline fill (the prologue's `num_stages - 1`
   loads before the first MMA) and the epilogue (accumulator converted and its stores issued
   into L2; their DRAM write-back is the memory term's), exposed unless another resident
   block runs meanwhile; a persistent program fills its pipeline once and overlaps half of
   each epilogue with the next tile's loads.
   This is what dominates short-K GEMMs.
9. `latency_chain_us`: a program cannot finish faster than its chain of dependent memory
   round trips, however idle the machine.
10. `spill_slowdown`: a multiplicative penalty on top of the spill traffic, so that a spilling
    config is always slower than the same config without spills.
11. Launch overhead.

Absolute numbers are estimates: the constants below are fitted so that the model lands within
20 % of published H100 figures for the matching kernel structure (`measurement.calibration`,
`bench/data/published_figures.json`, checked by `tests/search/test_calibration.py`); the model is
meant to rank configs the way the hardware does. Every record it produces says `sim`.
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
    "cluster_size",
    "cluster_slots",
    "compute_time_us",
    "issue_overlap",
    "l2_bytes_per_program",
    "latency_chain_us",
    "latency_hiding",
    "load_path_efficiency",
    "memory_time_us",
    "multicast_bytes_saved",
    "occupancy",
    "overlap",
    "peak_tflops",
    "pipeline_stages",
    "registers_per_block",
    "simulate",
    "softmax_time_us",
    "spill_slowdown",
    "spill_traffic_bytes",
    "tensor_core_efficiency",
    "tile_overhead_us",
    "waves",
]

# A persistent program issues its next tile's first loads under the previous tile's epilogue,
# and no block retires and relaunches per tile: a few percent on large GEMMs (estimate, after
# Triton's persistent-matmul tutorial figures on H100).
PERSISTENT_GAIN = 0.97
# Main-loop issue rate of a tensor-core loop with pointer loads against descriptor (TMA) loads:
# triton PR #5461 measures TMA about 13 % faster on fp16 8192x8192x4096 on H100.
POINTER_LOOP_EFFICIENCY = 1 / 1.13
# MUFU (exp2, rsqrt, conversions) results per SM and cycle on sm_90, against 128 FP32 lanes:
# the FlashAttention-3 paper's 3.9 TFLOPS of special functions on H100 SXM5.
SFU_PER_FP32_LANE = 16 / 128
# Share of the shorter of MMA and softmax work that runs under the longer, by schedule: one
# warpgroup on the SM waits for its own wgmma; another resident warpgroup's softmax runs
# under it; a warp-specialized (ping-pong) schedule hides most of it (fitted to the
# FlashAttention-3 paper's H100 figures: Triton's tutorial kernel against FlashAttention-3).
OVERLAP_ONE_WARPGROUP, OVERLAP_SEVERAL, OVERLAP_SPECIALIZED = 0.0, 0.5, 0.85
# Each score that passes a mask costs a compare and a select on the CUDA cores.
MASK_OPS_PER_SCORE = 3.0
# The most CTAs one thread-block cluster may hold on sm_90 (16 with the non-portable opt-in;
# 8 is the portable limit).
MAX_CLUSTER_CTAS = 16

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
    tiles_per_program: int = 1
    """Output tiles one program computes back to back (a persistent program's share)."""
    epilogue_bytes: float = 0.0
    """Bytes one output tile's epilogue stores; 0 where there is no per-tile epilogue."""
    sfu_ops_per_program: float = 0.0
    """Special-function operations (MUFU: exp2 and the like) beside a dot loop, per program."""
    alu_ops_per_program: float = 0.0
    """CUDA-core arithmetic beside a dot loop (softmax's max, scale, sum, rescale), per program."""
    masked_fraction: float = 0.0
    """Share of main-loop trips whose scores pass through a mask."""
    cluster_m: int = 1
    cluster_n: int = 1
    """CTAs per thread-block cluster along M and N (1x1: no cluster)."""

    @classmethod
    def from_facts(cls, tile: dict, usage: dict, dot_dtype: str) -> "KernelFacts":
        """The facts of one compiled candidate: its tile facts (`TileFacts.to_dict`), its
        compile usage (registers, spills, shared memory, warps, stages) and its dot dtype.
        Facts recorded before a field existed read as that field's default."""
        uses_tensor_cores = bool(tile["uses_tensor_cores"])
        return cls(
            programs=int(tile["programs"]), flops_per_program=tile["flops_per_program"],
            bytes_per_program=tile["bytes_per_program"], unique_bytes=tile["unique_bytes"],
            uses_tensor_cores=uses_tensor_cores,
            dot_dtype=dot_dtype if uses_tensor_cores else "none",
            tile_m=int(tile["tile_m"]), tile_n=int(tile["tile_n"]), tile_k=int(tile["tile_k"]),
            k_iterations=int(tile["k_iterations"]), num_warps=int(usage["num_warps"]),
            num_stages=int(usage["num_stages"]), registers=int(usage["registers"]),
            spill_bytes=int(usage["spill_bytes"]), shared_bytes=int(usage["shared_bytes"]),
            persistent=bool(tile.get("persistent", 0)), tma=bool(tile.get("tma", 0)),
            warp_specialized=bool(tile.get("warp_specialized", 0)),
            tiles_per_program=int(tile.get("tiles_per_program", 1)),
            epilogue_bytes=float(tile.get("epilogue_bytes", 0.0)),
            sfu_ops_per_program=float(tile.get("sfu_ops_per_program", 0.0)),
            alu_ops_per_program=float(tile.get("alu_ops_per_program", 0.0)),
            masked_fraction=float(tile.get("masked_fraction", 0.0)),
            cluster_m=int(tile.get("cluster_m", 1)), cluster_n=int(tile.get("cluster_n", 1)),
        )

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
        if self.tiles_per_program < 1:
            problems.append(f"tiles_per_program must be >= 1, got {self.tiles_per_program}")
        if self.cluster_m < 1 or self.cluster_n < 1:
            problems.append(f"cluster_m and cluster_n must be >= 1, got {self.cluster_m}x{self.cluster_n}")
        if not 0.0 <= self.masked_fraction <= 1.0:
            problems.append(f"masked_fraction must be in [0, 1], got {self.masked_fraction}")
        for name in ("flops_per_program", "bytes_per_program", "unique_bytes", "tile_m", "tile_n",
                     "tile_k", "registers", "spill_bytes", "shared_bytes", "epilogue_bytes",
                     "sfu_ops_per_program", "alu_ops_per_program"):
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
    mma = compute_time_us(facts, gpu, resident)
    softmax = softmax_time_us(facts, gpu)
    hidden = issue_overlap(facts, resident) * min(mma, softmax)
    compute = mma + softmax - hidden
    memory = memory_time_us(facts, gpu)
    chain = latency_chain_us(facts, gpu, resident)
    penalty = spill_slowdown(facts.spill_bytes)
    throughput = overlap(compute, memory, pipeline_stages(facts), facts.warp_specialized)
    if facts.persistent:
        throughput *= PERSISTENT_GAIN
    throughput += tile_overhead_us(facts, gpu, resident)
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
    if cluster_size(facts) > min(MAX_CLUSTER_CTAS, gpu.sm_count):
        raise DoesNotFit(f"a cluster of {facts.cluster_m}x{facts.cluster_n} CTAs exceeds the "
                         f"{min(MAX_CLUSTER_CTAS, gpu.sm_count)} CTAs a cluster may hold on {gpu.name}")
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


def cluster_size(facts: KernelFacts) -> int:
    """CTAs per thread-block cluster (1 without clusters)."""
    return facts.cluster_m * facts.cluster_n


def cluster_slots(facts: KernelFacts, gpu: GPUTarget) -> int:
    """Groups of SMs that can each hold one cluster at a time: the SM count over the cluster
    size, rounded down (without clusters, the SM count).

    The hardware places all CTAs of a cluster at once, on distinct SMs of one GPC; SMs left
    over when the count does not divide stay idle for that kernel. Hopper's SMs come in pairs
    (TPCs), so every GPC holds an even number; this model takes the SMs as one flat pool,
    exact for clusters of 2 and optimistic for larger ones, which can strand a few SMs per GPC.
    """
    return gpu.sm_count // cluster_size(facts)


def waves(facts: KernelFacts, gpu: GPUTarget, resident: int) -> int:
    """Rounds of resident blocks needed to run the grid: ceil(programs / (SMs x blocks/SM)),
    counted in whole clusters where the kernel has them."""
    clusters = math.ceil(facts.programs / cluster_size(facts))
    return math.ceil(clusters / (cluster_slots(facts, gpu) * resident))


def busiest_sm_programs(facts: KernelFacts, gpu: GPUTarget) -> int:
    """Programs the busiest SM runs; blocks on one SM share its tensor cores and bandwidth.

    This is where wave quantization bites: one program more than a multiple of the SM count
    makes one SM do a whole extra program while the others idle. With clusters the unit is a
    cluster over `cluster_slots` groups of SMs (a grid is padded to whole clusters).
    """
    clusters = math.ceil(facts.programs / cluster_size(facts))
    return math.ceil(clusters / cluster_slots(facts, gpu))


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
    return max(rows * cols * depth, 1e-3)


def load_path_efficiency(facts: KernelFacts) -> float:
    """Fraction of the main loop's issue rate left to the MMAs by the load path.

    With pointer loads every trip computes and masks each operand's addresses in the MMA
    warps; a tensor descriptor (TMA) hands that to the copy engine (triton PR #5461: about
    13 % on large fp16 GEMMs). Kernels without a tensor-core loop are not affected.
    """
    if not facts.uses_tensor_cores or facts.dot_dtype == "none" or facts.tile_k == 0 or facts.tma:
        return 1.0
    return POINTER_LOOP_EFFICIENCY


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
    rate = (per_sm_flops_per_us * tensor_core_efficiency(facts) * load_path_efficiency(facts)
            * latency_hiding(resident_warps))
    return load * facts.flops_per_program / rate


def softmax_time_us(facts: KernelFacts, gpu: GPUTarget) -> float:
    """The busiest SM's work beside the dot loop: MUFU operations at the special-function rate
    and CUDA-core arithmetic (with the masks of the masked trips) at the FP32 rate."""
    if facts.sfu_ops_per_program <= 0 and facts.alu_ops_per_program <= 0:
        return 0.0
    lanes_per_us = gpu.fp32_tflops * 1e6 / 2 / gpu.sm_count  # FP32 lanes x clock, per SM
    scores = facts.tile_m * facts.tile_n * facts.k_iterations
    alu = facts.alu_ops_per_program + MASK_OPS_PER_SCORE * facts.masked_fraction * scores
    per_program = facts.sfu_ops_per_program / (lanes_per_us * SFU_PER_FP32_LANE) + alu / lanes_per_us
    return busiest_sm_programs(facts, gpu) * per_program


def issue_overlap(facts: KernelFacts, resident: int) -> float:
    """Share of the shorter of MMA and softmax time hidden under the longer.

    Tensor cores, MUFU and FP32 lanes are separate units, but a warpgroup waits for its own
    wgmma before its softmax reads the scores: only another warpgroup's work (a second one
    in the block, or another resident block) fills that wait; warp specialization schedules
    it on purpose.
    """
    if facts.warp_specialized:
        return OVERLAP_SPECIALIZED
    warpgroups = resident * max(1, facts.num_warps // 4)
    return OVERLAP_SEVERAL if warpgroups >= 2 else OVERLAP_ONE_WARPGROUP


def spill_traffic_bytes(facts: KernelFacts) -> float:
    """Local-memory traffic of one program from spills: a store and a reload per loop trip."""
    return 2.0 * facts.spill_bytes * facts.threads * facts.k_iterations


# Bytes of one operand element for each dot dtype, to size a stage's operand buffers.
_DOT_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float8": 1, "float8_e4m3fn": 1}


def multicast_bytes_saved(facts: KernelFacts) -> float:
    """Operand bytes per program that a cluster's TMA multicast keeps off this SM's L2 reads.

    The `cluster_m` CTAs of a cluster along M compute tiles of the same columns, so they load
    the same B tile: each issues 1/cluster_m of it, multicast into all their shared memories
    (likewise A along N). Only descriptor (TMA) loads multicast, and only a contraction's
    operand tiles are shared; the epilogue's stores and the DRAM traffic are unchanged.
    """
    if cluster_size(facts) == 1 or not facts.tma or not facts.uses_tensor_cores or facts.tile_k == 0:
        return 0.0
    item = _DOT_BYTES.get(facts.dot_dtype, 2)
    a_trip = facts.tile_m * facts.tile_k * item
    b_trip = facts.tile_k * facts.tile_n * item
    saved = b_trip * (1 - 1 / facts.cluster_m) + a_trip * (1 - 1 / facts.cluster_n)
    # never more than the loads the program issues (facts built by hand may undercount them)
    loads = max(0.0, facts.bytes_per_program - facts.tiles_per_program * facts.epilogue_bytes)
    return min(facts.k_iterations * saved, loads)


def l2_bytes_per_program(facts: KernelFacts) -> float:
    """Bytes one program moves between L2 and its SM: its traffic less the multicast share."""
    return facts.bytes_per_program - multicast_bytes_saved(facts)


def memory_time_us(facts: KernelFacts, gpu: GPUTarget) -> float:
    """The larger of DRAM time for compulsory traffic and the busiest SM's share of L2 time.

    DRAM traffic beyond `unique_bytes` (re-reads of data evicted from L2) is not modelled;
    the L2 term charges every byte a program moves through L2, spills included.
    """
    dram_us = facts.unique_bytes / (gpu.hbm_gbps * 1e3)
    per_sm_l2_bytes_per_us = gpu.l2_gbps * 1e3 / gpu.sm_count
    sm_bytes = busiest_sm_programs(facts, gpu) * (l2_bytes_per_program(facts) + spill_traffic_bytes(facts))
    return max(dram_us, sm_bytes / per_sm_l2_bytes_per_us)


def pipeline_stages(facts: KernelFacts) -> int:
    """The stages the compiled loop really pipelines. Triton 3.9 can leave a persistent loop
    with pointer loads unpipelined (tutorial 09's structure: one operand through registers);
    the compile shows it as shared memory short of `num_stages` buffers of both operand tiles
    (80 KiB where 3 stages of 128x128x64 fp16 need 96), and the loop then runs as one stage.
    tiletune's persistent kernels keep every buffer, so their loops count as pipelined. An
    unknown compile (no shared memory) is assumed collapsed, the cautious reading."""
    if facts.persistent and not facts.tma and facts.uses_tensor_cores and facts.num_stages > 1:
        stage = (facts.tile_m + facts.tile_n) * facts.tile_k * _DOT_BYTES.get(facts.dot_dtype, 2)
        if facts.shared_bytes < facts.num_stages * stage:
            return 1
    return facts.num_stages


def tile_overhead_us(facts: KernelFacts, gpu: GPUTarget, resident: int) -> float:
    """The busiest SM's per-tile time outside the steady main loop: the pipeline fill (a round
    trip, then the prologue's `num_stages - 1` stage loads before the first MMA) and the
    epilogue (the tile converted and its stores issued into L2; the block does not wait for
    them to reach DRAM, whose write bandwidth `memory_time_us` charges).

    Another resident block runs its loop meanwhile, so 1/resident of it shows; a persistent
    program fills once; a warp-specialized one stores a tile while its producer warps load
    the next, hiding half of each epilogue.
    """
    if facts.epilogue_bytes <= 0 or facts.tile_k == 0:
        return 0.0
    per_sm_l2_bytes_per_us = gpu.l2_gbps * 1e3 / gpu.sm_count
    tiles = facts.tiles_per_program
    loads_per_trip = max(0.0, l2_bytes_per_program(facts) - tiles * facts.epilogue_bytes) / facts.k_iterations
    stages = pipeline_stages(facts)
    fill = gpu.dram_latency_us + max(1, stages - 1) * loads_per_trip / per_sm_l2_bytes_per_us
    # the epilogue issues its stores into L2 and the block retires without waiting for them to
    # reach DRAM: the write-back is DRAM traffic, charged by `memory_time_us` and overlapped
    # with later tiles' loops
    epilogue = facts.epilogue_bytes / per_sm_l2_bytes_per_us
    # the loop's last MMAs finish before the epilogue reads the accumulator: one trip's MMA
    drain = facts.flops_per_program / facts.k_iterations / (peak_tflops(facts, gpu) * 1e6 / gpu.sm_count)
    if facts.warp_specialized:
        # the producer warps load the next tile while the consumers store this one
        per_program = fill + tiles * (epilogue + drain) * 0.5
    else:
        per_program = fill + tiles * (epilogue + drain)
    return busiest_sm_programs(facts, gpu) * per_program / max(1, resident)


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
    in_flight = max(1, pipeline_stages(facts) - 1)
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
