"""Automatic schedules per op class, their legality constraints, and hand-written schedules."""
from __future__ import annotations

import pytest

from tiletune import tensorexpr as te
from tiletune.errors import IllegalConfig, LoweringError, ScheduleError
from tiletune.kernels.library import add, matmul, rmsnorm, softmax
from tiletune.schedules import Choice, Config, PowerOfTwo
from tiletune.kernels.families import default_schedule, schedule_for
from tiletune.kernels.target import MAX_SHARED_BYTES
from tiletune.tensorexpr.analysis import OpClass

MM = {"M": 512, "N": 512, "K": 512}


def test_each_op_class_gets_its_knobs_without_a_template():
    assert default_schedule(matmul.graph("float16"), MM).space().names == (
        "BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_stages", "num_warps", "PERSISTENT", "LOAD",
        "WARP_SPECIALIZE")
    assert default_schedule(softmax.graph("float32"), {"N": 64, "D": 1000}).space().names == (
        "BLOCK_RED", "BLOCK_ROWS", "num_warps")
    assert default_schedule(add.graph("float32"), {"N": 64, "D": 1000}).space().names == (
        "BLOCK_LANE", "BLOCK_ROWS", "num_warps")


def test_defaults_are_legal_for_every_builtin():
    for op, dims in ((matmul, MM), (softmax, {"N": 7, "D": 5}), (rmsnorm, {"N": 1, "D": 1}), (add, {"N": 3, "D": 3})):
        space = default_schedule(op.graph("float16"), dims).space()
        assert space.is_legal(space.default())


def test_shared_memory_over_the_device_limit_is_illegal_with_its_reason():
    space = default_schedule(matmul.graph("float16"), {"M": 4096, "N": 4096, "K": 4096}).space()
    config = Config.of(BLOCK_M=256, BLOCK_N=256, BLOCK_K=128, GROUP_M=8, num_stages=5, num_warps=8)
    reasons = space.validate(config)
    assert any("shared memory" in r and str(MAX_SHARED_BYTES) in r for r in reasons), reasons
    with pytest.raises(IllegalConfig, match="shared memory"):
        space.check(config)


def test_an_accumulator_too_big_for_the_registers_is_illegal():
    space = default_schedule(matmul.graph("float16"), {"M": 4096, "N": 4096, "K": 4096}).space()
    config = Config.of(BLOCK_M=256, BLOCK_N=256, BLOCK_K=16, GROUP_M=8, num_stages=2, num_warps=2)
    assert any("registers per thread" in r for r in space.validate(config))


def test_a_tile_far_larger_than_its_axis_is_illegal():
    space = default_schedule(matmul.graph("float16"), {"M": 20, "N": 512, "K": 512}).space()
    reasons = space.validate(space.default().replace(BLOCK_M=128))
    assert any("BLOCK_M=128 tiles an axis of 20" in r for r in reasons), reasons
    assert space.is_legal(space.default().replace(BLOCK_M=32))


def test_a_tile_that_is_not_a_power_of_two_is_illegal():
    space = default_schedule(matmul.graph("float16"), MM).space()
    assert any("power of two" in r for r in space.validate(space.default().replace(BLOCK_M=48)))


def test_rows_too_long_for_one_block_loop_over_chunks():
    space = default_schedule(softmax.graph("float32"), {"N": 4, "D": 40000}).space()
    assert space.default()["BLOCK_RED"] == 32768 and 16 in space.knob("BLOCK_RED").choices()


def test_resolve_replays_the_primitives_with_the_config():
    s = default_schedule(matmul.graph("float16"), MM)
    r = s.resolve(Config.of(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, GROUP_M=4, num_stages=4, num_warps=8))
    assert (r.tile("m"), r.tile("n"), r.tile("k")) == (128, 64, 32)
    assert r.swizzle["m"] == 4 and r.num_stages == 4 and r.num_warps == 8
    assert r.op_class is OpClass.CONTRACTION


def test_a_hand_written_schedule_with_knobs_of_its_own():
    graph = matmul.graph("float16")
    i, j = graph.output.op.axes
    s = schedule_for(graph)
    s.tile(i, PowerOfTwo("TM", 32, 64)).tile(j, 64).tile("k", 32)
    s.pipeline("k", Choice("STAGES", (2, 3))).num_warps(4).swizzle("m", 8)
    s.constrain("square-ish", lambda c: None if c["TM"] >= 32 else "too thin")
    space = s.space()
    assert space.names == ("TM", "STAGES") and space.size == 4
    r = s.resolve(Config.of(TM=64, STAGES=3))
    assert (r.tile("m"), r.tile("n"), r.num_stages) == (64, 64, 3)
    assert "tile(m, TM)" in repr(s)


def test_schedule_primitives_refuse_what_does_not_exist():
    graph = rmsnorm.graph()
    s = schedule_for(graph)
    with pytest.raises(ScheduleError, match="no axis 'm'"):
        s.tile("m", 16)
    with pytest.raises(ScheduleError, match="'ms' is a reduction"):
        s.compute_inline("ms")
    with pytest.raises(ScheduleError, match="no stage 'nope'"):
        s.fuse_epilogue("nope")
    with pytest.raises(ScheduleError, match="bind target"):
        s.bind("rows", "thread.x")


def test_a_stage_left_out_of_the_schedule_is_refused_at_lowering():
    from tiletune.kernels.lower import lower

    @te.operator
    def twice(N):
        x = te.placeholder((N,), "float32", name="x")
        y = te.compute((N,), lambda i: x[i] * 2.0, name="y")
        return [x], te.compute((N,), lambda i: y[i] + 1.0, name="z")

    s = schedule_for(twice.graph())
    s.tile("rows", 1).tile("lane", 128)
    with pytest.raises(LoweringError, match="'y' is neither inlined nor fused"):
        lower(twice.graph(), s.resolve(Config.of()))
