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
