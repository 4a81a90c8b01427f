"""What the differential fuzzer established, pinned: programs the backend does not support are
refused with a TiletuneError naming the pattern (counted as rejected, never a crash), and every
verification run writes into a fresh NaN-filled output, so a kernel that skips part of its
output cannot pass on what an earlier run (of another config) left in a shared buffer."""
from __future__ import annotations

import pytest

from tiletune.kernels import verify
from tiletune.kernels.families import analyse, default_schedule
from tiletune.kernels.fuzz import program as fp
from tiletune.kernels.fuzz.programs import generate
from tiletune.kernels.fuzz.runner import run_pair
from tiletune.kernels.lower import lower
from tiletune.kernels.parts import refusal


@pytest.mark.parametrize("seed", [1000073, 1000179])
def test_reductions_over_scattered_axes_are_refused_by_name_and_run_as_two_kernels(seed):
    """Found by bench/fuzz.py --seed 1: a reduction over several axes that are not the
    trailing ones of its input, read back by an elementwise stage, is refused as one kernel
    with a LoweringError naming the stage and its axes. The partitioner stores the reduction
    by a kernel of its own (one the total family holds), and the pair runs as two kernels."""
    program = generate(seed)
    assert "reduces over" in refusal(fp.graph(program))
    result = run_pair(program, None, seed)
    assert result.status == "ok", result.reason
    assert result.parts == 2


def test_a_program_the_partitioner_cannot_split_is_rejected_as_it_was_refused(monkeypatch):
    from tiletune.errors import LoweringError
    from tiletune.kernels import parts

    def cannot_split(graph):
        raise LoweringError("no cut fits")

    monkeypatch.setattr(parts, "partition_of", cannot_split)
    result = run_pair(generate(1000073), None, 1000073)
    assert result.status == "rejected" and result.parts == 1
    assert result.step == "schedule"  # the space rule asks the lowering for the layout
    assert result.reason.startswith("LoweringError:") and "reduces over" in result.reason


SMALL = {"version": 1, "name": "fz_small", "dims": {"D0": 5, "D1": 3},
         "inputs": [{"name": "x", "shape": ["D0", "D1"], "dtype": "float32", "domain": None}],
         "stages": [{"name": "y", "shape": ["D0", "D1"], "axes": ["i", "j"], "reduce_axes": [],
                     "body": ["un", "neg", ["read", "x", [["axis", "i"], ["axis", "j"]]]]}]}


def test_every_check_gets_a_fresh_nan_output(monkeypatch):
    graph = fp.graph(SMALL)
    dims = graph.check_dims(SMALL["dims"])
    schedule = default_schedule(graph, dims)
    resolved = schedule.resolve(schedule.space().default())
    src = lower(graph, resolved, analyse(graph), for_interpreter=True)
    assert verify.check_candidate(graph, src, dims, resolved).ok
    real_launch, calls = verify.runtime.launch, []

    def writes_only_once(src, inputs, out, dims):
        calls.append(out.data_ptr())
        if len(calls) == 1:
            real_launch(src, inputs, out, dims)

    monkeypatch.setattr(verify.runtime, "launch", writes_only_once)
    assert verify.check_candidate(graph, src, dims, resolved).ok
    second = verify.check_candidate(graph, src, dims, resolved)
    assert not second.ok and "unwritten" in second.reason



# Found by bench/fuzz.py --pairs 10000 --seed 11 (shrunk): an operand read as bfloat16 after a
# cast, minus itself. Triton's interpreter narrowed float32 to bfloat16 by truncation where the
# GPU and torch round to nearest even, so the check failed a correct kernel by one bf16 ulp.
BF16_ROUNDTRIP = '{"dims": {"D0": 1, "D1": 33, "D2": 1}, "inputs": [{"domain": null, "dtype": "bfloat16", "name": "x0", "shape": [1, "D0", "D1"]}, {"domain": null, "dtype": "float32", "name": "x1", "shape": [1, "D1"]}], "name": "fz_injective_11007070", "stages": [{"axes": ["i0", "i1", "i2"], "body": ["bin", "sub", ["cast", "float32", ["cast", "bfloat16", ["read", "x1", [["const", 0], ["axis", "i2"]]]]], ["read", "x1", [["const", 0], ["axis", "i2"]]]], "name": "s0", "reduce_axes": [], "shape": ["D2", "D0", "D1"]}], "version": 1}'
BF16_SIGMOID_TANH = '{"dims": {"D0": 16, "D1": 1}, "inputs": [{"domain": null, "dtype": "float16", "name": "x0", "shape": ["D0"]}], "name": "fz_injective_11002298", "stages": [{"axes": ["i0", "i1"], "body": ["un", "sigmoid", ["read", "x0", [["axis", "i1"]]]], "name": "s0", "reduce_axes": [], "shape": ["D1", "D0"]}, {"axes": ["i0", "i1"], "body": ["bin", "sub", ["cast", "bfloat16", ["read", "s0", [["axis", "i0"], ["axis", "i1"]]]], ["cast", "bfloat16", ["un", "tanh", ["read", "s0", [["axis", "i0"], ["axis", "i1"]]]]]], "name": "s1", "reduce_axes": [], "shape": ["D1", "D0"]}], "version": 1}'


@pytest.mark.parametrize("text, config", [
    (BF16_ROUNDTRIP, '{"BLOCK_LANE":64,"BLOCK_ROWS":1,"num_warps":4}'),
    (BF16_SIGMOID_TANH, '{"BLOCK_LANE":16,"BLOCK_ROWS":1,"num_warps":4}'),
], ids=["roundtrip", "sigmoid_tanh"])
def test_bfloat16_casts_in_the_interpreter_round_like_the_gpu(text, config):
    result = run_pair(fp.loads(text), config, 0)
    assert result.status == "ok", result.reason


def test_bfloat16_bits_round_to_nearest_even_like_torch():
    import numpy as np
    import torch

    from tiletune.kernels.interpreter_rounding import bfloat16_bits

    x = torch.cat([torch.randn(5000) * 10.0 ** torch.randint(-30, 30, (5000,)),
                   torch.tensor([float("nan"), float("inf"), -float("inf"), 3.4e38, 1e-40, 0.0, -0.0, 1 + 2**-8])])
    ours = torch.from_numpy(bfloat16_bits(x.numpy()).view(np.int16)).view(torch.bfloat16).float()
    ref = x.to(torch.bfloat16).float()
    assert bool(((ours == ref) | (ours.isnan() & ref.isnan())).all())


def test_tma_is_refused_when_one_descriptor_operand_is_unaligned():
    """Found by the same run (58 crashes, one cause): LOAD='tma' was legal when either factor
    was aligned, but the kernel loads both through descriptors, so a 31-column fp16 `b` (62-byte
    rows) failed at launch. The space now refuses it with the reason."""
    from tiletune.errors import IllegalConfig
    from tiletune.kernels.library import matmul

    graph = matmul.graph("float16")
    space = default_schedule(graph, {"M": 4, "N": 31, "K": 8}).space()
    with pytest.raises(IllegalConfig, match="rows of 'b' are 62 bytes"):
        space.check(space.default().replace(LOAD="tma"))
    assert all(c["LOAD"] == "pointer" for c in space.sample(__import__("random").Random(0), 50))


# Found probing the partitioner with the fuzzer's runner: a row sum read at the next row
# (x - s[i + 1]). The single-pass kernel computes it (it reduces that row too), the looped one
# refused at lowering; the space offered looped configs (BLOCK_RED < the row), so a drawn
# config failed with a LoweringError while kernels.parts.refusal (the default config, one pass)
# said one kernel holds the operator. The space now refuses a looping config by name.
SHIFTED_ROW_SUM = {
    "version": 1, "name": "fz_shifted_row_sum", "dims": {"R": 6, "L": 17},
    "inputs": [{"name": "x", "shape": ["R", "L"], "dtype": "float32", "domain": None}],
    "stages": [
        {"name": "s", "shape": ["R"], "axes": ["i"], "reduce_axes": [["r", "L"]],
         "body": ["reduce", "sum", ["r"], ["read", "x", [["axis", "i"], ["axis", "r"]]]]},
        {"name": "o", "shape": ["R", "L"], "axes": ["i", "j"], "reduce_axes": [],
         "body": ["bin", "sub", ["read", "x", [["axis", "i"], ["axis", "j"]]],
                  ["pad", "s", [["bin", "add", ["axis", "i"], 1]], 0.0]]},
    ]}


def test_a_reduction_read_at_another_row_is_one_pass_in_every_config():
    import random

    from tiletune.errors import IllegalConfig

    graph = fp.graph(SHIFTED_ROW_SUM)
    dims = graph.check_dims(SHIFTED_ROW_SUM["dims"])
    schedule = default_schedule(graph, dims)
    space = schedule.space()
    for config in space.sample(random.Random(0), 12):
        lower(graph, schedule.resolve(config), analyse(graph), for_interpreter=True)
    with pytest.raises(IllegalConfig, match="BLOCK_RED=16 loops over a row of 32.*'s' is read at other positions"):
        space.check(space.default().replace(BLOCK_RED=16))
    for seed in range(3):
        result = run_pair(SHIFTED_ROW_SUM, None, seed)
        assert result.status == "ok", result.reason
