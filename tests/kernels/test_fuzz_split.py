"""The fuzzer on programs no one kernel holds: the `composite` template makes them, and
`run_pair` runs them as the kernels `kernels.parts` splits them into, each at its own config
and into its own NaN-filled output, against the reference of each part and of the whole."""
from __future__ import annotations

import collections
import json

import pytest

from tiletune.kernels import runtime
from tiletune.kernels.families import analyse
from tiletune.kernels.fuzz import program as fp
from tiletune.kernels.fuzz.programs import generate
from tiletune.kernels.fuzz.runner import config_of, run_pair, split_of
from tiletune.tensorexpr.analysis import OpClass


def _split(program: dict):
    return split_of(fp.graph(program), program["dims"])


def _split_seed() -> int:
    """The first composite program that runs as two kernels."""
    for seed in range(50):
        split = _split(generate(seed, "composite"))
        if split is not None and len(split.parts) == 2:
            return seed
    raise AssertionError("no composite program of two kernels among seeds 0-49")


def test_composite_programs_run_as_several_kernels():
    parts, fused = collections.Counter(), set()
    for seed in range(40):
        program = generate(seed, "composite")
        graph = fp.graph(program)
        split = split_of(graph, program["dims"])
        if split is None:
            fused.add(analyse(graph).op_class)
        else:
            parts[len(split.parts)] += 1
            assert split.parts[-1].writes == graph.output.name
    assert sum(parts.values()) >= 28, parts  # the template is there to exercise the partitioner
    assert any(n >= 3 for n in parts), parts  # cuts of several points (attention-shaped chains)
    # one kernel holds softmax(q k^T) v, and some reductions of a reduction's rows
    assert fused <= {OpClass.ATTENTION, OpClass.REDUCTION}, fused


def test_a_split_pair_draws_one_config_per_part_and_replays_it():
    seed = _split_seed()
    program = generate(seed, "composite")
    result = run_pair(program, None, seed)
    assert result.status == "ok", result.reason
    assert result.parts == 2
    configs = json.loads(result.config)
    assert list(configs) == [p.name for p in _split(program).parts]
    assert result.config == config_of(program, seed)
    again = run_pair(program, result.config, seed + 1)  # the given configs, not drawn ones
    assert again.status == "ok" and json.loads(again.config) == configs


def test_a_split_pair_refuses_a_config_of_one_kernel():
    seed = _split_seed()
    result = run_pair(generate(seed, "composite"), '{"BLOCK_M": 16}', seed)
    assert result.status == "rejected" and "{part name: config" in result.reason


def test_an_unwritten_element_of_a_stored_part_is_caught(monkeypatch):
    """Each part writes into a fresh NaN-filled output: a kernel that leaves an element of an
    intermediate unwritten fails at that part, whatever the next kernel makes of it."""
    seed = _split_seed()
    program = generate(seed, "composite")
    first = _split(program).parts[0].name
    real, calls = runtime.launch, []

    def skips_one_element(src, inputs, out, dims):
        real(src, inputs, out, dims)
        calls.append(out)
        if len(calls) == 1:  # the first kernel leaves its last element as it found it
            out.view(-1)[-1] = float("nan")

    monkeypatch.setattr(runtime, "launch", skips_one_element)
    result = run_pair(program, None, seed)
    assert result.status == "mismatch", result
    assert result.step == f"{first}: run" and "unwritten" in result.reason


@pytest.mark.parametrize("seed", range(3))
def test_composite_generation_is_deterministic(seed):
    assert fp.dumps(generate(seed, "composite")) == fp.dumps(generate(seed, "composite"))


def test_the_shrinker_simplifies_one_part_config_at_a_time():
    from tiletune.kernels.fuzz.shrink import _simpler_configs

    seed = _split_seed()
    program = generate(seed, "composite")
    config = json.loads(config_of(program, seed))
    simpler = [json.loads(c) for c in _simpler_configs(program, json.dumps(config))]
    assert simpler
    for candidate in simpler:
        assert list(candidate) == list(config)
        changed = [(part, knob) for part in config for knob in config[part]
                   if candidate[part][knob] != config[part][knob]]
        assert len(changed) == 1, changed


# A reverse cumsum written with reversed reads: analyse and the schedule accept it, the
# lowering refuses the reversed read of the scan (a LoweringError), so it runs split.
REVERSED_SCAN = {
    "version": 1, "name": "fz_reversed_scan", "dims": {"R": 5, "L": 37},
    "inputs": [{"name": "x", "shape": ["R", "L"], "dtype": "float32", "domain": None}],
    "stages": [
        {"name": "c", "shape": ["R", "L"], "axes": ["i", "j"], "reduce_axes": [],
         "body": ["scan", "sum", "j", ["read", "x", [["axis", "i"], ["bin", "sub", ["bin", "sub", ["dim", "L"], 1], ["axis", "j"]]]]]},
        {"name": "o", "shape": ["R", "L"], "axes": ["i", "j"], "reduce_axes": [],
         "body": ["bin", "mul", ["read", "c", [["axis", "i"], ["bin", "sub", ["bin", "sub", ["dim", "L"], 1], ["axis", "j"]]]], ["const", 2.0]]},
    ]}


def test_a_program_refused_at_lowering_runs_split():
    result = run_pair(REVERSED_SCAN, None, 1)
    assert result.status == "ok", result.reason
    assert result.parts == 2 and list(json.loads(result.config)) == [
        "fz_reversed_scan.part_c", "fz_reversed_scan.part_o"]
    assert result.config == config_of(REVERSED_SCAN, 1)
