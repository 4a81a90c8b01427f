"""Hopper knobs of the contraction space: persistent programs, TMA descriptor loads and warp
specialization. Correct in the interpreter at odd shapes, refused with a reason where they do
not apply, compiled for sm_90 (one worker process for all compiles), told apart by the
simulated H100."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tiletune.errors import IllegalConfig
from tiletune.kernels.families import default_schedule, tile_facts
from tiletune.kernels.library import bmm, matmul, matmul_a_bt, matmul_bias_relu
from tiletune.kernels.lower import lower
from tiletune.kernels.target import MAX_SHARED_BYTES
from tiletune.kernels.verify import check, check_candidate, verification_dims
from tiletune.schedules import Config
from tiletune.search.measurement.simulator import KernelFacts, simulate

# K and N rows of 16-bit elements that are multiples of 16 bytes (descriptors need that), with
# M, N and K not multiples of the tiles
ODD = {"M": 67, "N": 40, "K": 88}


def lowered(op, dims, dtype="float16", **knobs):
    graph = op.graph(dtype)
    s = default_schedule(graph, dims)
    config = s.space().default().replace(**knobs)
    return graph, s, lower(graph, s.resolve(config), for_interpreter=True)


@pytest.mark.parametrize("knobs", [
    dict(PERSISTENT=True, BLOCK_M=16, BLOCK_N=16),  # 15 tiles over 4 interpreter programs
    dict(LOAD="tma"),
    dict(PERSISTENT=True, LOAD="tma", BLOCK_M=32, BLOCK_N=16, GROUP_M=4),
    dict(LOAD="tma", WARP_SPECIALIZE=True),
], ids=["persistent", "tma", "persistent_tma", "tma_ws"])
def test_hopper_knobs_compute_the_reference_matmul(knobs):
    graph, _, src = lowered(matmul, ODD, **knobs)
    assert check(graph, src, ODD).ok


def test_persistent_programs_loop_over_tiles_in_grouped_order_with_batch_folded_in():
    dims = {"B": 3, "M": 33, "N": 20, "K": 24}
    graph, _, src = lowered(bmm, dims, PERSISTENT=True, BLOCK_M=16, BLOCK_N=16)
    assert "for tile_id in tl.range(tl.program_id(0), num_tiles, NUM_PROGRAMS, flatten=True):" in src.text
    assert "NUM_PROGRAMS=grid[0]," in src.text  # the launcher passes the program count it launches
    assert "pid_batch = tile_id // (num_pid_m * num_pid_n)" in src.text and "first_pid_m" in src.text
    assert check(graph, src, dims).ok


def test_tma_loads_a_transposed_operand_and_keeps_the_epilogue():
    graph, _, src = lowered(matmul_a_bt, ODD, LOAD="tma")
    assert "tl.trans(b_desc.load([pid_n * BLOCK_N, k0 * BLOCK_K]))" in src.text
    assert check(graph, src, ODD).ok
    graph, _, src = lowered(matmul_bias_relu, ODD, LOAD="tma", PERSISTENT=True, BLOCK_M=16, BLOCK_N=16)
    assert check(graph, src, ODD).ok


def test_a_tma_candidate_is_checked_at_aligned_small_dims():
    # the tuner checks candidates at shrunk dims: shrinking K=256 to 2 tiles + 3 made rows of
    # 134 bytes, which a descriptor refuses, so every TMA candidate failed its check
    dims = {"M": 256, "N": 256, "K": 256}
    graph, s, _ = lowered(matmul, dims, LOAD="tma")
    resolved = s.resolve(s.space().default().replace(LOAD="tma"))
    small = verification_dims(graph, dims, resolved)
    assert all(small[d] % 16 == 0 and small[d] < dims[d] for d in ("N", "K")), small
    assert verification_dims(graph, dims, s.resolve(s.space().default()))["K"] == 2 * 32 + 3
    assert check_candidate(graph, lower(graph, resolved, for_interpreter=True), dims, resolved).ok


def test_tma_composes_with_split_k_and_persistent_does_not():
    dims = {"M": 24, "N": 32, "K": 520}
    graph, s, src = lowered(matmul, dims, LOAD="tma", SPLIT_K=4)
    assert "a_desc.load" in src.text and "pid_k" in src.text
    assert check(graph, src, dims).ok
    with pytest.raises(IllegalConfig, match="PERSISTENT with SPLIT_K=4"):
        s.resolve(s.space().default().replace(PERSISTENT=True, SPLIT_K=4))


def test_tma_on_unaligned_rows_is_refused_with_the_reason():
    s = default_schedule(matmul.graph("float16"), {"M": 67, "N": 45, "K": 93})
    with pytest.raises(IllegalConfig, match=r"rows of 'a' are 186 bytes, not a multiple of 16"):
        s.resolve(s.space().default().replace(LOAD="tma"))


@pytest.mark.parametrize("knobs, reason", [
    (dict(WARP_SPECIALIZE=True), "needs LOAD='tma'"),
    (dict(WARP_SPECIALIZE=True, LOAD="tma", num_warps=8), "needs num_warps=4"),
    (dict(WARP_SPECIALIZE=True, LOAD="tma", num_stages=1), "num_stages >= 2"),
    (dict(WARP_SPECIALIZE=True, LOAD="tma", PERSISTENT=True), "persistent"),
    (dict(WARP_SPECIALIZE=True, LOAD="tma", BLOCK_M=32), "BLOCK_M >= 64"),
])
def test_warp_specialization_is_offered_only_where_sm90_applies_it(knobs, reason):
    s = default_schedule(matmul.graph("float16"), {"M": 512, "N": 512, "K": 512})
    assert reason in " ".join(s.space().validate(s.space().default().replace(**knobs)))


def test_a_config_recorded_before_the_knobs_means_their_old_behaviour():
    s = default_schedule(matmul.graph("float16"), {"M": 512, "N": 512, "K": 512})
    old = Config.of(BLOCK_K=32, BLOCK_M=64, BLOCK_N=64, GROUP_M=8, num_stages=3, num_warps=4)
    assert s.space().is_legal(old)
    r = s.resolve(old)
    assert (r.persistent, r.load, r.warp_specialized) == (False, "pointer", frozenset())
    # the default, in full, resolves to the same schedule and prints as the old config
    assert s.resolve(s.space().default()) == r and r.config == old


def test_simulated_h100_tells_the_knobs_apart():
    graph = matmul.graph("float16")
    dims = {"M": 4096, "N": 4096, "K": 4096}
    s = default_schedule(graph, dims)
    base = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=4, num_stages=4)

    def latency(shared_bytes=131072, **knobs):  # 4 stages of both 128x128x64 fp16 tiles
        r = s.resolve(s.space().default().replace(**base, **knobs))
        t = tile_facts(graph, r, dims)
        facts = KernelFacts(
            programs=t.programs, flops_per_program=t.flops_per_program, bytes_per_program=t.bytes_per_program,
            unique_bytes=t.unique_bytes, uses_tensor_cores=True, dot_dtype="float16", tile_m=t.tile_m,
            tile_n=t.tile_n, tile_k=t.tile_k, k_iterations=t.k_iterations, num_warps=4, num_stages=4,
            registers=168, spill_bytes=0, shared_bytes=shared_bytes, persistent=bool(t.persistent), tma=bool(t.tma),
            warp_specialized=bool(t.warp_specialized), tiles_per_program=t.tiles_per_program,
            epilogue_bytes=t.epilogue_bytes)
        return simulate(facts)

    pointer, tma, ws = latency(), latency(LOAD="tma"), latency(LOAD="tma", WARP_SPECIALIZE=True)
    persistent, persistent_tma = latency(PERSISTENT=True), latency(PERSISTENT=True, LOAD="tma")
    assert tma.compute_us < pointer.compute_us and tma.latency_us <= pointer.latency_us
    assert ws.latency_us < tma.latency_us  # better overlap of the L2-bound loads
    assert persistent_tma.latency_us < tma.latency_us and persistent_tma.waves == 1 < tma.waves
    # tiletune's persistent pointer loop keeps its pipeline (every stage's buffers): rewarded like
    # the TMA one; one that compiled unpipelined (Triton 3.9's collapse, 80 KiB) is not
    assert persistent.latency_us < pointer.latency_us
    assert latency(PERSISTENT=True, shared_bytes=80 * 1024).latency_us > pointer.latency_us


# --- ahead-of-time compiles for sm_90 -------------------------------------------------------

WORKER = textwrap.dedent('''
    import json, sys
    from tiletune.schedules import Config
    from tiletune.search.measurement.steps import compile_step
    from tiletune.kernels.task import TaskSpec

    out = {}
    for case in json.load(sys.stdin):
        spec = TaskSpec.make(case["op"], case["dims"], "float16")
        config = Config.from_dict({**spec.build().space.default().as_dict(), **case["config"]})
        out[case["id"]] = compile_step(spec, config.to_json()).to_dict()
    print(json.dumps(out))
''')
BIG = {"M": 2048, "N": 2048, "K": 2048}
TILE = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_stages=3)
COMPILES = {
    "pointer": ("matmul", BIG, dict(TILE, num_warps=8)),
    "persistent": ("matmul", BIG, dict(TILE, num_warps=8, PERSISTENT=True)),
    "tma": ("matmul", BIG, dict(TILE, num_warps=8, LOAD="tma")),
    "persistent_tma": ("matmul", BIG, dict(TILE, num_warps=8, LOAD="tma", PERSISTENT=True)),
    "tma_ws": ("matmul", BIG, dict(TILE, num_warps=4, LOAD="tma", WARP_SPECIALIZE=True)),
    "split_k_tma": ("matmul", {"M": 64, "N": 64, "K": 4096}, dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, num_warps=4,
                                                                  LOAD="tma", SPLIT_K=8)),
    # the deepest 256x128 pipeline the shared-memory model admits
    "deepest": ("matmul", BIG, dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=64, num_stages=4, num_warps=8, LOAD="tma")),
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("hopper")
    worker = tmp / "worker.py"
    worker.write_text(WORKER)
    cases = [{"id": i, "op": op, "dims": d, "config": c} for i, (op, d, c) in COMPILES.items()]
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp / "triton-cache")}
    done = subprocess.run([sys.executable, str(worker)], input=json.dumps(cases), capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", list(COMPILES))
def test_each_knob_compiles_for_sm90_within_the_shared_memory_model(compiled, case):
    result = compiled[case]
    assert result["status"] == "ok", result
    usage, tile = result["data"]["usage"], result["data"]["tile"]
    assert usage["spill_bytes"] == 0 and usage["registers"] <= 255
    op, dims, knobs = COMPILES[case]
    s = default_schedule(matmul.graph("float16"), dims)
    config = s.space().default().replace(**knobs)
    assert s.space().is_legal(config)  # the model admitted it, and the compile agrees
    assert usage["shared_bytes"] <= MAX_SHARED_BYTES
    stages = (config["BLOCK_M"] + config["BLOCK_N"]) * config["BLOCK_K"] * 2 * config["num_stages"]
    if case in ("pointer", "tma", "tma_ws", "split_k_tma", "deepest"):
        assert usage["shared_bytes"] >= stages  # every stage buffered, as the model counts
    assert tile["persistent"] == int(knobs.get("PERSISTENT", False))
    assert tile["tma"] == int(knobs.get("LOAD") == "tma")


def test_descriptor_loads_free_registers(compiled):
    assert compiled["tma"]["data"]["usage"]["registers"] < compiled["pointer"]["data"]["usage"]["registers"]
