"""Launch-time constexprs (`tiletune.kernels.specialize`): the flag a launcher computes per call
and the value `Task.specialization` gives the ahead-of-time compile agree, on both sides of
each flag."""
from __future__ import annotations

import pytest

from tiletune.kernels.kernel import KernelContext
from tiletune.kernels.families import analyse, default_schedule
from tiletune.kernels.library import matmul
from tiletune.kernels.specialize import Divides, RowsAligned, flag_values


def _context(dims):
    graph = matmul.graph("float16")
    pattern = analyse(graph)
    schedule = default_schedule(graph, dims, pattern)
    return graph, KernelContext(graph, schedule.resolve(schedule.space().default()), pattern)


@pytest.mark.parametrize("k, even", [(128, True), (100, False)])
def test_divides_is_computed_alike_by_the_launcher_and_at_the_task_dims(k, even):
    dims = {"M": 64, "N": 48, "K": k}
    graph, kernel = _context(dims)
    flag = Divides("EVEN_K", (kernel.pattern.contraction.k.extent,), 32)
    assert flag.value(graph, dims) is even
    code = flag.launcher_code(kernel)
    assert eval(code, {}, dims) is even  # the launcher's expression, at these dims


@pytest.mark.parametrize("n, aligned", [(48, True), (40, True), (44, False), (45, False)])
def test_rows_aligned_follows_the_row_bytes_of_a_contiguous_tensor(n, aligned):
    dims = {"M": 64, "N": n, "K": 32}
    graph, _ = _context(dims)
    flag = RowsAligned("TMA_STORE", graph.output)
    # fp16 rows: 16 bytes are 8 elements
    assert flag_values((flag,), graph, dims) == {"TMA_STORE": aligned}


def test_a_declared_flag_is_a_constexpr_parameter_and_a_launcher_argument():
    dims = {"M": 64, "N": 48, "K": 100}
    graph, kernel = _context(dims)
    name = kernel.specialize(Divides("EVEN_K", (kernel.pattern.contraction.k.extent,), 32))
    kernel.body.line(f"if {name}:")
    kernel.body.line("    pass")
    src = kernel.finish("matmul_kernel", ["1"])
    assert "    EVEN_K: tl.constexpr," in src.text
    assert "        EVEN_K=(K) % 32 == 0," in src.text
    assert src.signature["EVEN_K"] == "constexpr" and "EVEN_K" not in src.constexprs
    assert [f.name for f in src.launch_flags] == ["EVEN_K"]


# --- the GEMM's use of them, in the interpreter against the reference, on both sides of each ---

from tiletune.kernels.library import matmul_a_bt, matmul_bias_relu  # noqa: E402
from tiletune.kernels.lower import lower  # noqa: E402
from tiletune.kernels.task import TaskSpec  # noqa: E402
from tiletune.kernels.verify import check  # noqa: E402


def _lowered(op, dims, dtype="float16", **knobs):
    graph = op.graph(dtype)
    schedule = default_schedule(graph, dims)
    config = schedule.space().default().replace(**knobs)
    return graph, lower(graph, schedule.resolve(config), for_interpreter=True)


@pytest.mark.parametrize("dims", [
    {"M": 64, "N": 48, "K": 96},  # K divides BLOCK_K: the masked tail is compiled out
    {"M": 67, "N": 45, "K": 83},  # nothing divides: rows wrap, the last K tile is masked
    {"M": 5, "N": 3, "K": 7},  # smaller than one tile everywhere: only the tail runs
], ids=["even", "odd", "tiny"])
@pytest.mark.parametrize("knobs", [{}, {"PERSISTENT": True}], ids=["plain", "persistent"])
def test_pointer_gemm_matches_the_reference_whether_or_not_k_divides(dims, knobs):
    graph, src = _lowered(matmul_bias_relu, dims, BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, **knobs)
    loop = src.text.split("for k0 in ")[1].split("acc = tl.dot")[0]
    assert "mask" not in loop  # whole K tiles load without masks
    assert "if not EVEN_K:" in src.text
    verdict = check(graph, src, dims)
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize("k", [320, 300, 333], ids=["even", "odd", "odd_in_an_empty_split"])
def test_split_k_takes_the_partial_last_tile_in_the_split_that_holds_it(k):
    # 333 = 10 whole tiles of 32 and a partial one: 11 tiles over 8 splits of 2, the last split empty
    dims = {"M": 20, "N": 18, "K": k}
    graph, src = _lowered(matmul, dims, BLOCK_M=16, BLOCK_N=16, BLOCK_K=32, SPLIT_K=8 if k == 333 else 4)
    assert "for k0 in range(tl.maximum(k_first, K // BLOCK_K), k_last):" in src.text
    verdict = check(graph, src, dims)
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize("k, even", [(256, True), (200, False)])
def test_the_aot_compile_gets_the_even_k_the_launcher_passes(k, even):
    task = TaskSpec.make("matmul", {"M": 128, "N": 128, "K": k}, "float16").build()
    config = task.space.default().replace(BLOCK_K=32)
    constants, _ = task.specialization(task.source(config))
    assert constants["EVEN_K"] is even


@pytest.mark.parametrize("n, aligned", [(40, True), (41, False)])
def test_tma_epilogue_stores_by_descriptor_only_where_the_output_rows_allow(n, aligned):
    # b is [N, K]: N need not be aligned for the loads, so both sides of TMA_STORE are legal
    dims = {"M": 67, "N": n, "K": 88}
    graph, src = _lowered(matmul_a_bt, dims, LOAD="tma")
    assert "c_desc.store([pid_m * BLOCK_M, pid_n * BLOCK_N]" in src.text and "if TMA_STORE:" in src.text
    task = TaskSpec.make("matmul_a_bt", dims, "float16").build()
    constants, _ = task.specialization(task.source(task.space.default().replace(LOAD="tma")))
    assert constants["TMA_STORE"] is aligned
    verdict = check(graph, src, dims)
    assert verdict.ok, verdict.reason


def test_pointer_loads_keep_plain_stores():
    _, src = _lowered(matmul, {"M": 64, "N": 48, "K": 96})
    assert "TMA_STORE" not in src.text and "_desc" not in src.text


@pytest.mark.parametrize("op, dims, even", [
    ("softmax", {"N": 6, "D": 64}, (True, True)),  # 2-row blocks, the whole row one 64-lane block
    ("softmax", {"N": 7, "D": 50}, (False, False)),
    ("add", {"N": 8, "D": 100}, (True, False)),
], ids=["softmax_even", "softmax_odd", "add_mixed"])
def test_row_kernels_drop_the_masks_of_the_extents_that_divide_their_block(op, dims, even):
    task = TaskSpec.make(op, dims, "float32").build()
    config = task.space.default().replace(BLOCK_ROWS=2, **({"BLOCK_LANE": 32} if op == "add" else {}))
    src = task.source(config, for_interpreter=True)
    constants, _ = task.specialization(src)
    assert (constants["EVEN_ROWS"], constants["EVEN_LANE"]) == even
    assert "mask_lane = tl.full((BLOCK_LANE,), 1, tl.int1)" in src.text
    verdict = check(task.graph, src, dims)
    assert verdict.ok, verdict.reason
