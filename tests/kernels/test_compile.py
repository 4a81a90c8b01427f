"""Ahead-of-time compile for sm_90 on the CPU and the resource usage read from the cubin."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tiletune.errors import CompileError, UsageError
from tiletune.kernels.compile import (
    ResourceUsage,
    cuobjdump_path,
    parse_resource_usage,
)

# Triton's @jit reads the kernel's source with inspect, so the kernels live in a real file.
KERNELS_SOURCE = textwrap.dedent('''
    import triton
    import triton.language as tl


    @triton.jit
    def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_bk, stride_cm,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :]
        b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, K, BLOCK_K):
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
            acc = tl.dot(a, b, acc)
            a_ptrs += BLOCK_K
            b_ptrs += BLOCK_K * stride_bk
        c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :]
        tl.store(c_ptrs, acc.to(tl.float16))


    @triton.jit
    def rank_error_kernel(x_ptr, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs)
        tl.store(x_ptr + offs, tl.dot(x, x))
''')

MATMUL_SIGNATURE = {
    "a_ptr": "*fp16", "b_ptr": "*fp16", "c_ptr": "*fp16",
    "M": "i32", "N": "i32", "K": "i32",
    "stride_am": "i32", "stride_bk": "i32", "stride_cm": "i32",
    "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr",
}
# What Triton's JIT would specialize for torch tensors of multiple-of-16 shapes.
MATMUL_ALIGNED = ("a_ptr", "b_ptr", "c_ptr", "M", "N", "K", "stride_am", "stride_bk", "stride_cm")

# Captured from `cuobjdump --dump-resource-usage` on the cubin of `matmul_kernel` at 128x128x64,
# num_warps=4, num_stages=3, without alignment hints.
CUOBJDUMP_SAMPLE = """
Resource usage:
 Common:
  GLOBAL:0
 Function matmul_kernel:
  REG:255 STACK:376 SHARED:1024 LOCAL:0 CONSTANT[0]:608 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


# Triton fixes once per process whether @jit functions are compiled or interpreted, and
# importing tiletune.kernels on a machine without CUDA picks the interpreter. Compiles
# therefore run in a worker process started with TRITON_INTERPRET=0, as the tuner runs them.
WORKER_SOURCE = textwrap.dedent('''
    import importlib.util, json, sys

    from tiletune.kernels.compile import aot_compile

    kernels_path, cases = sys.argv[1], json.load(sys.stdin)
    spec = importlib.util.spec_from_file_location("aot_test_kernels", kernels_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = {}
    for case in cases:
        try:
            usage = aot_compile(getattr(module, case["kernel"]), case["signature"], case["constexprs"],
                                num_warps=case["num_warps"], num_stages=case["num_stages"],
                                aligned=case["aligned"])
            results[case["id"]] = {"usage": usage.to_dict()}
        except Exception as error:
            results[case["id"]] = {"error": type(error).__name__, "message": str(error)}
    print(json.dumps(results))
''')


def matmul_case(case_id: str, m: int, n: int, k: int, *, num_warps: int, num_stages: int,
                aligned: tuple[str, ...] = MATMUL_ALIGNED, signature: dict[str, str] | None = None) -> dict:
    """One AOT compile of the test matmul, as the worker reads it."""
    return {"id": case_id, "kernel": "matmul_kernel", "signature": signature or MATMUL_SIGNATURE,
            "constexprs": {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, "num_warps": num_warps,
            "num_stages": num_stages, "aligned": list(aligned)}


CASES = [
    matmul_case("small", 64, 64, 32, num_warps=4, num_stages=3),
    matmul_case("small_unaligned", 64, 64, 32, num_warps=4, num_stages=3, aligned=()),
    # 4 stages x (128x128 + 128x128) fp16 = 256 KiB > 227 KiB.
    matmul_case("too_much_shared", 128, 128, 128, num_warps=4, num_stages=4),
    # A 256x128 fp32 accumulator over 128 threads is 256 registers per thread before anything else.
    matmul_case("spills", 256, 128, 32, num_warps=4, num_stages=2),
    matmul_case("missing_k", 64, 64, 32, num_warps=4, num_stages=2,
                signature={k: v for k, v in MATMUL_SIGNATURE.items() if k != "K"}),
    {"id": "rank_error", "kernel": "rank_error_kernel", "signature": {"x_ptr": "*fp16"},
     "constexprs": {"BLOCK": 64}, "num_warps": 4, "num_stages": 2, "aligned": []},
]


def run_worker(tmp: Path, cases: list[dict], *, interpret: str) -> dict[str, dict]:
    """AOT-compile `cases` in a fresh process with TRITON_INTERPRET=`interpret`."""
    kernels_path = tmp / "aot_test_kernels.py"
    kernels_path.write_text(KERNELS_SOURCE)
    worker = tmp / "aot_worker.py"
    worker.write_text(WORKER_SOURCE)
    # A private cache keeps compile times honest (no hits from earlier runs) and ~/.triton clean.
    env = {**os.environ, "TRITON_INTERPRET": interpret, "TRITON_CACHE_DIR": str(tmp / "triton-cache")}
    done = subprocess.run([sys.executable, str(worker), str(kernels_path)], input=json.dumps(cases),
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The results of `CASES`, compiled once for the module in one worker process."""
    return run_worker(tmp_path_factory.mktemp("aot"), CASES, interpret="0")


def usage_of(compiled: dict[str, dict], case_id: str) -> ResourceUsage:
    """The ResourceUsage of a case that must have compiled."""
    result = compiled[case_id]
    assert "usage" in result, result
    return ResourceUsage.from_dict(result["usage"])


def test_cuobjdump_ships_with_triton() -> None:
    assert cuobjdump_path().exists()


def test_small_fp16_tile_compiles_with_sane_resources(compiled: dict[str, dict]) -> None:
    usage = usage_of(compiled, "small")
    assert 16 <= usage.registers <= 255
    assert usage.spill_bytes == 0
    # Three pipeline stages of a 64x32 and a 32x64 fp16 tile.
    assert usage.shared_bytes == 3 * (64 * 32 + 32 * 64) * 2
    assert (usage.num_warps, usage.num_stages) == (4, 3)
    assert usage.compile_seconds > 0


def test_alignment_hints_enable_pipelining(compiled: dict[str, dict]) -> None:
    # Without 16-byte alignment the loads cannot become cp.async, so nothing is multi-buffered.
    assert usage_of(compiled, "small_unaligned").shared_bytes < usage_of(compiled, "small").shared_bytes


def test_shared_memory_over_the_hopper_limit_is_a_compile_error(compiled: dict[str, dict]) -> None:
    result = compiled["too_much_shared"]
    assert result.get("error") == "CompileError", result
    assert "out of resource: shared memory, Required: 262144, Hardware limit: 232448" in result["message"]
    assert "\n" not in result["message"]


def test_huge_fp32_accumulator_spills(compiled: dict[str, dict]) -> None:
    usage = usage_of(compiled, "spills")
    assert usage.registers == 255
    assert usage.spill_bytes > 0


def test_triton_semantic_error_becomes_one_line_compile_error(compiled: dict[str, dict]) -> None:
    result = compiled["rank_error"]
    assert result.get("error") == "CompileError", result
    message = result["message"]
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("rank_error_kernel (BLOCK=64, num_warps=4, num_stages=2): ")
    assert "ranks" in message


def test_signature_that_does_not_match_the_kernel_is_a_usage_error(compiled: dict[str, dict]) -> None:
    result = compiled["missing_k"]
    assert result.get("error") == "UsageError", result
    assert "no type for ['K']" in result["message"]


def test_interpreting_process_refuses_to_compile(tmp_path: Path) -> None:
    result = run_worker(tmp_path, [CASES[0]], interpret="1")["small"]
    assert result.get("error") == "UsageError", result
    assert "TRITON_INTERPRET=0" in result["message"]


def test_parse_resource_usage_reads_a_captured_sample() -> None:
    usage = parse_resource_usage(CUOBJDUMP_SAMPLE)
    assert usage["REG"] == 255
    assert usage["STACK"] == 376
    assert usage["SHARED"] == 1024
    assert usage["LOCAL"] == 0
    assert usage["CONSTANT[0]"] == 608
    assert parse_resource_usage(CUOBJDUMP_SAMPLE, "matmul_kernel") == usage


def test_parse_resource_usage_picks_the_named_function() -> None:
    text = CUOBJDUMP_SAMPLE + " Function other_kernel:\n  REG:40 STACK:8 SHARED:0 LOCAL:16\n"
    assert parse_resource_usage(text, "other_kernel")["REG"] == 40
    with pytest.raises(CompileError, match="missing_kernel"):
        parse_resource_usage(text, "missing_kernel")


def test_resource_usage_round_trips_through_json() -> None:
    usage = ResourceUsage(registers=128, spill_bytes=0, shared_bytes=98304, num_warps=8,
                          num_stages=3, compile_seconds=1.25)
    assert ResourceUsage.from_dict(json.loads(json.dumps(usage.to_dict()))) == usage
    with pytest.raises(UsageError, match="unknown keys"):
        ResourceUsage.from_dict({**usage.to_dict(), "regs": 1})


def test_resource_usage_is_frozen() -> None:
    usage = ResourceUsage(registers=1, spill_bytes=0, shared_bytes=0, num_warps=1, num_stages=1,
                          compile_seconds=0.1)
    with pytest.raises(AttributeError):
        usage.registers = 2  # type: ignore[misc]
