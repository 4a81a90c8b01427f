"""What the differential fuzzer established, pinned: programs the backend does not support are
refused with a TiletuneError naming the pattern (counted as rejected, never a crash), and every
verification run writes into a fresh NaN-filled output, so a kernel that skips part of its
output cannot pass on what an earlier run (of another config) left in a shared buffer."""
from __future__ import annotations

import pytest

from tiletune.kernels import verify
from tiletune.kernels.fuzz import program as fp
from tiletune.kernels.fuzz.programs import generate
from tiletune.kernels.fuzz.runner import run_pair
from tiletune.kernels.lower import lower
from tiletune.schedules.rules import default_schedule
from tiletune.tensorexpr.analysis import analyse


@pytest.mark.parametrize("seed", [1000073, 1000179])
def test_reductions_over_scattered_axes_are_rejected_by_name(seed):
    """Found by bench/fuzz.py --seed 1: a reduction over several axes that are not the
    trailing ones of its input is refused with a LoweringError, naming the stage and its axes."""
    result = run_pair(generate(seed), None, seed)
    assert result.status == "rejected", result.reason
    assert result.step in ("schedule", "lower")  # the space rule asks the lowering for the layout
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
