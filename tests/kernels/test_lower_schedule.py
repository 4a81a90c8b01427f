"""Schedule primitives that change the generated kernel: program order, unrolling, binding."""
from __future__ import annotations

import pytest

from tiletune.errors import LoweringError
from tiletune.kernels.library import matmul
from tiletune.kernels.lower import lower
from tiletune.kernels.verify import check
from tiletune.kernels.families import schedule_for
from tiletune.schedules import Config, Schedule

DIMS = {"M": 67, "N": 45, "K": 93}


def matmul_schedule(order=("m", "n"), unroll=1, bind_batch="block.y") -> Schedule:
    graph = matmul.graph("float16")
    s = schedule_for(graph)
    s.tile("m", 32).tile("n", 16).tile("k", 16).reorder(*order).swizzle(order[0], 2)
    s.bind("batch", bind_batch).pipeline("k", 2).num_warps(4)
    if unroll > 1:
        s.unroll("k", unroll)
    return s


def test_column_major_program_order_groups_along_n_and_stays_correct():
    graph = matmul.graph("float16")
    src = lower(graph, matmul_schedule(order=("n", "m")).resolve(Config.of()), for_interpreter=True)
    assert "GROUP_N" in src.constexprs and "first_pid_n" in src.text
    assert check(graph, src, DIMS).ok


def test_unrolling_the_reduction_loop_stays_correct():
    graph = matmul.graph("float16")
    src = lower(graph, matmul_schedule(unroll=2).resolve(Config.of()), for_interpreter=True)
    assert "loop_unroll_factor=2" in src.text
    assert check(graph, src, DIMS).ok


def test_a_binding_the_kernel_cannot_honour_is_refused():
    with pytest.raises(LoweringError, match="cannot bind 'batch' to block.x"):
        lower(matmul.graph("float16"), matmul_schedule(bind_batch="block.x").resolve(Config.of()))
