"""The analytic H100 model: legality, ranking of configs, and plausible absolute numbers."""
from __future__ import annotations

import dataclasses
import math
import random

import pytest

from tiletune.errors import TiletuneError, UsageError
from tiletune.search.measurement.simulator import (
    H100,
    LIMITERS,
    SIMULATED_GPUS,
    DoesNotFit,
    KernelFacts,
    blocks_per_sm,
    busiest_sm_programs,
    cluster_slots,
    issue_overlap,
    l2_bytes_per_program,
    load_path_efficiency,
    multicast_bytes_saved,
    overlap,
    pipeline_stages,
    registers_per_block,
    simulate,
    softmax_time_us,
    spill_slowdown,
    tile_overhead_us,
)


def matmul_facts(m: int, n: int, k: int, *, tile: tuple[int, int, int], num_warps: int,
                 num_stages: int, registers: int = 128, spill_bytes: int = 0,
                 dtype: str = "float16") -> KernelFacts:
    """What the lowering of a tiled C = A @ B (2-byte inputs and output) knows about a launch."""
    bm, bn, bk = tile
    k_iterations = math.ceil(k / bk)
    elem = 2
    return KernelFacts(
        programs=math.ceil(m / bm) * math.ceil(n / bn),
        flops_per_program=2.0 * bm * bn * bk * k_iterations,
        bytes_per_program=float((bm * bk + bk * bn) * elem * k_iterations + bm * bn * elem),
        unique_bytes=float((m * k + k * n + m * n) * elem),
        uses_tensor_cores=True,
        dot_dtype=dtype,
        tile_m=bm, tile_n=bn, tile_k=bk,
        k_iterations=k_iterations,
        num_warps=num_warps,
        num_stages=num_stages,
        registers=registers,
        spill_bytes=spill_bytes,
        shared_bytes=num_stages * (bm * bk + bk * bn) * elem,
    )


def elementwise_facts(n_bytes: int, *, block_bytes: int = 8192, num_warps: int = 4) -> KernelFacts:
    """A streaming kernel (read one tensor, write one) moving `n_bytes` in total."""
    return KernelFacts(
        programs=math.ceil(n_bytes / block_bytes),
        flops_per_program=block_bytes / 8,
        bytes_per_program=float(block_bytes),
        unique_bytes=float(n_bytes),
        uses_tensor_cores=False, dot_dtype="none",
        tile_m=0, tile_n=0, tile_k=0, k_iterations=1,
        num_warps=num_warps, num_stages=1, registers=24, spill_bytes=0, shared_bytes=0,
    )


GOOD_4096 = matmul_facts(4096, 4096, 4096, tile=(128, 128, 64), num_warps=8, num_stages=3, registers=115)


def test_registry_names_the_h100() -> None:
    assert SIMULATED_GPUS["sim-h100"] is H100
    assert H100.sm_count == 132


def test_same_facts_give_the_same_answer() -> None:
    assert simulate(GOOD_4096) == simulate(dataclasses.replace(GOOD_4096))
    assert simulate(GOOD_4096).latency_us == simulate(GOOD_4096).latency_us


def test_spilling_config_is_slower_than_the_same_config_without_spills() -> None:
    clean = matmul_facts(4096, 4096, 4096, tile=(256, 128, 32), num_warps=4, num_stages=2,
                         registers=255)
    for spill in (8, 512, 4096):
        spilled = dataclasses.replace(clean, spill_bytes=spill)
        result = simulate(spilled)
        assert result.latency_us > simulate(clean).latency_us
        assert result.spill_penalty > 1.0
    assert simulate(clean).spill_penalty == 1.0


def test_more_spills_cost_more() -> None:
    assert spill_slowdown(0) == 1.0
    assert 1.0 < spill_slowdown(64) < spill_slowdown(1024) < spill_slowdown(1 << 20) <= 2.0


def test_large_tiles_beat_tiny_tiles_on_a_big_matmul() -> None:
    tiny = matmul_facts(4096, 4096, 4096, tile=(16, 16, 16), num_warps=1, num_stages=2, registers=40)
    assert simulate(GOOD_4096).latency_us * 5 < simulate(tiny).latency_us


def test_big_fp16_matmul_lands_near_real_h100_throughput() -> None:
    result = simulate(GOOD_4096)
    assert 150 <= result.latency_us <= 900
    tflops = 2 * 4096**3 / result.latency_us / 1e6
    assert 300 <= tflops <= 989


def test_small_fp16_matmul_is_dominated_by_latency_and_launch() -> None:
    result = simulate(matmul_facts(512, 512, 512, tile=(128, 128, 64), num_warps=8,
                                   num_stages=3, registers=115))
    # Real H100 runs take ~7-10 µs (about 30-40 TFLOP/s); the model keeps that order.
    assert 5 <= result.latency_us <= 40
    assert result.limiter in ("latency", "launch")


def test_streaming_kernel_runs_at_about_hbm_bandwidth() -> None:
    n_bytes = 1 << 30
    result = simulate(elementwise_facts(n_bytes))
    ideal_us = n_bytes / (H100.hbm_gbps * 1e3)
    assert ideal_us <= result.latency_us <= 2 * ideal_us
    assert result.limiter == "memory"


def test_tiny_kernel_is_launch_bound() -> None:
    result = simulate(elementwise_facts(4096))
    assert result.limiter == "launch"
    assert result.latency_us >= H100.launch_overhead_us


def test_one_program_more_than_the_sm_count_costs_a_second_wave() -> None:
    # One program per SM fills the machine: the shared memory admits one block per SM.
    heavy = dataclasses.replace(GOOD_4096, programs=H100.sm_count, shared_bytes=200 * 1024)
    full = simulate(heavy)
    spill_over = simulate(dataclasses.replace(heavy, programs=H100.sm_count + 1))
    assert (full.waves, spill_over.waves) == (1, 2)
    assert full.blocks_per_sm == 1
    assert spill_over.latency_us > 1.5 * full.latency_us


def test_shared_memory_over_the_block_limit_does_not_fit() -> None:
    too_big = dataclasses.replace(GOOD_4096, shared_bytes=H100.max_smem_per_block + 1)
    with pytest.raises(DoesNotFit, match="shared memory 232449 B per block exceeds"):
        simulate(too_big)
    assert issubclass(DoesNotFit, ValueError) and issubclass(DoesNotFit, TiletuneError)


def test_largest_legal_shared_memory_fits_one_block() -> None:
    edge = dataclasses.replace(GOOD_4096, shared_bytes=H100.max_smem_per_block)
    assert simulate(edge).blocks_per_sm == 1


@pytest.mark.parametrize(("registers", "num_warps", "reason"), [
    (256, 4, "registers per thread"),
    (32, 64, "threads per block"),
    (255, 32, "more than the 65536"),
])
def test_register_and_thread_limits_do_not_fit(registers: int, num_warps: int, reason: str) -> None:
    facts = dataclasses.replace(GOOD_4096, registers=registers, num_warps=num_warps)
    with pytest.raises(DoesNotFit, match=reason):
        simulate(facts)


def test_occupancy_follows_the_tightest_resource() -> None:
    # 115 registers round to 120; 120 x 32 = 3840 rounds to 3840 per warp: 30720 per 8-warp block.
    assert registers_per_block(GOOD_4096, H100) == 30720
    # Registers admit 2 blocks, 96 KiB + 1 KiB of shared memory admits 2, warps admit 8.
    assert blocks_per_sm(GOOD_4096, H100) == 2
    assert simulate(GOOD_4096).occupancy == pytest.approx(16 / 64)
    small = dataclasses.replace(GOOD_4096, registers=32, num_warps=4, shared_bytes=0)
    assert blocks_per_sm(small, H100) == 16  # the 64-warp limit


def test_pipelining_overlaps_compute_and_memory() -> None:
    assert overlap(10.0, 4.0, 1) == 14.0
    assert overlap(10.0, 4.0, 2) > overlap(10.0, 4.0, 3) > overlap(10.0, 4.0, 4) >= 10.0
    one_stage = simulate(dataclasses.replace(GOOD_4096, num_stages=1))
    assert one_stage.latency_us > simulate(GOOD_4096).latency_us


def test_malformed_facts_are_refused_with_the_field_named() -> None:
    with pytest.raises(UsageError, match="dot_dtype must be one of"):
        dataclasses.replace(GOOD_4096, dot_dtype="fp16")
    with pytest.raises(UsageError, match="programs must be >= 1"):
        dataclasses.replace(GOOD_4096, programs=0)


def test_latency_is_positive_and_finite_over_random_facts() -> None:
    rng = random.Random(0)
    checked = 0
    for _ in range(300):
        tile = (rng.choice([16, 32, 64, 128, 256]), rng.choice([16, 32, 64, 128, 256]),
                rng.choice([16, 32, 64, 128]))
        size = rng.choice([1, 17, 512, 1000, 4096])
        facts = matmul_facts(size, rng.choice([1, 64, 3000]), rng.choice([1, 100, 8192]), tile=tile,
                             num_warps=rng.choice([1, 2, 4, 8, 16]), num_stages=rng.choice([1, 2, 3, 4, 5]),
                             registers=rng.randint(0, 255), spill_bytes=rng.choice([0, 0, 16, 2048]),
                             dtype=rng.choice(["float16", "bfloat16", "float32", "float8"]))
        try:
            result = simulate(facts)
        except DoesNotFit:
            continue
        checked += 1
        assert 0 < result.latency_us < math.inf
        assert result.compute_us >= 0 and result.memory_us >= 0
        assert result.waves >= 1 and result.blocks_per_sm >= 1
        assert 0 < result.occupancy <= 1
        assert result.limiter in LIMITERS
    assert checked > 100


def test_short_k_gemm_pays_the_per_tile_fill_and_epilogue() -> None:
    short = dataclasses.replace(matmul_facts(8192, 8192, 512, tile=(128, 256, 64), num_warps=8, num_stages=3,
                                             registers=193), epilogue_bytes=128 * 256 * 2)
    resident = blocks_per_sm(short, H100)
    overhead = tile_overhead_us(short, H100, resident)
    assert overhead > 0
    # a deeper prologue waits longer before the first MMA
    deeper = dataclasses.replace(short, num_stages=4, shared_bytes=short.shared_bytes // 3 * 4)
    assert tile_overhead_us(deeper, H100, blocks_per_sm(deeper, H100)) > overhead
    assert simulate(short).latency_us > simulate(dataclasses.replace(short, epilogue_bytes=0)).latency_us


def test_epilogue_stores_retire_into_l2_and_dram_write_back_is_charged_once() -> None:
    # a block does not wait for its stores to reach DRAM: the per-tile epilogue depends on the
    # L2, the write-back on the HBM bandwidth (through the memory term) only
    short = dataclasses.replace(matmul_facts(8192, 8192, 512, tile=(128, 256, 64), num_warps=8, num_stages=3,
                                             registers=193), epilogue_bytes=128 * 256 * 2)
    slow_hbm = dataclasses.replace(H100, hbm_gbps=H100.hbm_gbps / 4)
    assert tile_overhead_us(short, slow_hbm, 1) == tile_overhead_us(short, H100, 1)
    assert simulate(short, slow_hbm).memory_us > simulate(short, H100).memory_us
    slow_l2 = dataclasses.replace(H100, l2_gbps=H100.l2_gbps / 2)
    assert tile_overhead_us(short, slow_l2, 1) > tile_overhead_us(short, H100, 1)


def test_a_persistent_pointer_loop_that_compiled_unpipelined_costs_the_unpipelined_loop() -> None:
    facts = dataclasses.replace(GOOD_4096, persistent=True, programs=132, tiles_per_program=8,
                                k_iterations=GOOD_4096.k_iterations * 8,
                                flops_per_program=GOOD_4096.flops_per_program * 8,
                                bytes_per_program=GOOD_4096.bytes_per_program * 8)
    # the compile keeps every stage's buffers (tiletune's kernel): pipelined
    assert pipeline_stages(facts) == 3
    # shared memory short of 3 stages of both tiles (Triton 3.9's collapse: 80 of 96 KiB): one stage
    collapsed = dataclasses.replace(facts, shared_bytes=80 * 1024)
    assert pipeline_stages(collapsed) == 1 and pipeline_stages(dataclasses.replace(collapsed, tma=True)) == 3
    assert simulate(collapsed).latency_us > simulate(dataclasses.replace(collapsed, tma=True)).latency_us
    assert simulate(collapsed).latency_us > simulate(facts).latency_us


def test_pointer_loads_leave_the_main_loop_fewer_issue_slots_than_tma() -> None:
    assert load_path_efficiency(GOOD_4096) < load_path_efficiency(dataclasses.replace(GOOD_4096, tma=True)) == 1.0
    assert load_path_efficiency(elementwise_facts(1 << 20)) == 1.0


def attention_facts(*, masked: float, specialized: bool = False) -> KernelFacts:
    bm, bn, d, blocks, iters = 128, 64, 128, 128 * 16, 256
    scores = bm * bn * iters
    return KernelFacts(
        programs=blocks, flops_per_program=4.0 * bm * bn * d * iters,
        bytes_per_program=float(bm * d * 2 + iters * bn * 2 * d * 2 + bm * d * 2), unique_bytes=4.0 * 16 * 16384 * d * 2,
        uses_tensor_cores=True, dot_dtype="float16", tile_m=bm, tile_n=bn, tile_k=d, k_iterations=iters,
        num_warps=8, num_stages=2, registers=171, spill_bytes=0, shared_bytes=98304,
        tma=specialized, warp_specialized=specialized, epilogue_bytes=bm * d * 2.0,
        sfu_ops_per_program=scores + bm * iters, alu_ops_per_program=5.0 * scores + bm * d * iters,
        masked_fraction=masked)


def test_attention_pays_for_softmax_and_masks_beside_the_mmas() -> None:
    plain = attention_facts(masked=0.0)
    assert softmax_time_us(plain, H100) > 0
    assert simulate(attention_facts(masked=1.0)).latency_us > simulate(plain).latency_us
    # a warp-specialized schedule runs the softmax under the other warpgroup's MMAs
    assert issue_overlap(attention_facts(masked=0.0, specialized=True), 1) > issue_overlap(plain, 1)
    assert simulate(attention_facts(masked=0.0, specialized=True)).latency_us < simulate(plain).latency_us


def _attention_latency(**knobs) -> float:
    """sim-h100's latency of tiletune's attention at 16 heads x 4096 x 64 under `knobs`, with one
    fixed compile usage so that only the tile facts the knobs set can differ."""
    from tiletune.kernels.task import TaskSpec
    from tiletune.search.measurement.measurers import SimMeasurer

    spec = TaskSpec.make("attention", {"B": 1, "H": 16, "S": 4096, "D": 64}, "float16")
    space = spec.build().space
    # num_warps=4: warp specialization applies with one consumer warpgroup only
    config = space.default().replace(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=2, **knobs)
    assert not space.validate(config), space.validate(config)
    facts = spec.build().facts(config)
    usage = {"registers": 168, "spill_bytes": 0, "shared_bytes": 98304, "num_warps": 4, "num_stages": 2}
    candidate = {"tile": facts.to_dict(), "usage": usage, "dot_dtype": facts.dot_dtype}
    (outcome,) = SimMeasurer("sim-h100").measure(spec, [(config, candidate)])
    return outcome.latency_us


def test_attention_load_and_warp_specialize_knobs_reach_the_simulator() -> None:
    pointer = _attention_latency(LOAD="pointer", WARP_SPECIALIZE=False)
    tma = _attention_latency(LOAD="tma", WARP_SPECIALIZE=False)
    specialized = _attention_latency(LOAD="tma", WARP_SPECIALIZE=True)
    # TMA frees the MMA warps from address arithmetic; producer warps hide the softmax
    assert tma < pointer
    assert specialized < tma


def _tma_gemm(tile: tuple[int, int, int], num_warps: int, *, cluster: tuple[int, int] = (1, 1)) -> KernelFacts:
    """A TMA-loaded fp16 8192x8192x4096 GEMM, 4 stages, in clusters of `cluster` (M x N) CTAs."""
    facts = matmul_facts(8192, 8192, 4096, tile=tile, num_warps=num_warps, num_stages=4, registers=168)
    return dataclasses.replace(facts, tma=True, epilogue_bytes=float(tile[0] * tile[1] * 2),
                               cluster_m=cluster[0], cluster_n=cluster[1])


def test_a_2x1_cluster_speeds_up_an_l2_bound_gemm_and_barely_moves_a_compute_bound_one() -> None:
    # 128x128x64: 32 KB of operand tiles per 2 MFLOP, bound by L2 -> SM traffic
    l2_bound = simulate(_tma_gemm((128, 128, 64), 4))
    assert l2_bound.limiter == "memory"
    clustered = simulate(_tma_gemm((128, 128, 64), 4, cluster=(2, 1)))
    # the two CTAs of a cluster share their B tile: a quarter of the operand bytes go
    assert clustered.memory_us < 0.8 * l2_bound.memory_us
    assert clustered.latency_us < 0.85 * l2_bound.latency_us
    # 128x256x32: the tensor cores bound it; only the memory term's leak through the
    # pipeline shrinks
    compute_bound = simulate(_tma_gemm((128, 256, 32), 8))
    assert compute_bound.limiter == "compute"
    ratio = simulate(_tma_gemm((128, 256, 32), 8, cluster=(2, 1))).latency_us / compute_bound.latency_us
    assert 0.95 <= ratio <= 1.0


def test_cluster_multicast_shares_the_operand_of_the_other_axis() -> None:
    # CTAs along M share the (wider) B tile of a 128x256 tile, CTAs along N its A tile
    wide_b = _tma_gemm((128, 256, 64), 8)
    per_trip = {"a": 128 * 64 * 2, "b": 64 * 256 * 2}
    assert multicast_bytes_saved(dataclasses.replace(wide_b, cluster_m=2)) == wide_b.k_iterations * per_trip["b"] / 2
    assert multicast_bytes_saved(dataclasses.replace(wide_b, cluster_n=2)) == wide_b.k_iterations * per_trip["a"] / 2
    assert l2_bytes_per_program(wide_b) == wide_b.bytes_per_program
    # only descriptor (TMA) loads multicast: pointer loads in a cluster move every byte
    pointer = dataclasses.replace(wide_b, tma=False, cluster_m=2)
    assert multicast_bytes_saved(pointer) == 0.0
    assert simulate(pointer).memory_us == simulate(dataclasses.replace(pointer, cluster_m=1)).memory_us


def test_clusters_are_scheduled_whole() -> None:
    # 132 programs fill the 132 SMs once; in 4x4 clusters only 8 fit at a time (128 SMs), so the
    # ninth cluster runs as a second wave
    one_wave = dataclasses.replace(_tma_gemm((128, 128, 64), 4), programs=132)
    in_clusters = dataclasses.replace(one_wave, cluster_m=4, cluster_n=4)
    assert cluster_slots(in_clusters, H100) == 8
    assert busiest_sm_programs(one_wave, H100) == 1
    assert busiest_sm_programs(in_clusters, H100) == 2
    # pairs divide the SMs: a 2x1 grid of 132 programs is one wave, as without clusters
    assert busiest_sm_programs(dataclasses.replace(one_wave, cluster_m=2), H100) == 1


def test_cluster_facts_are_checked() -> None:
    with pytest.raises(UsageError, match="cluster_m and cluster_n must be >= 1"):
        dataclasses.replace(GOOD_4096, cluster_m=0)
    with pytest.raises(DoesNotFit, match="cluster of 4x8 CTAs"):
        simulate(dataclasses.replace(GOOD_4096, cluster_m=4, cluster_n=8))
    # facts recorded before clusters existed read as 1x1
    tile = _tile_dict(GOOD_4096)
    usage = {"registers": 115, "spill_bytes": 0, "shared_bytes": GOOD_4096.shared_bytes,
             "num_warps": 8, "num_stages": 3}
    facts = KernelFacts.from_facts(tile, usage, "float16")
    assert (facts.cluster_m, facts.cluster_n) == (1, 1)
    assert simulate(facts) == simulate(GOOD_4096)


def _tile_dict(facts: KernelFacts) -> dict:
    """The tile facts `KernelFacts.from_facts` needs (no cluster keys: a record of before they
    existed), from hand-built facts."""
    names = ("programs", "flops_per_program", "bytes_per_program", "unique_bytes", "uses_tensor_cores",
             "tile_m", "tile_n", "tile_k", "k_iterations")
    return {name: getattr(facts, name) for name in names}
