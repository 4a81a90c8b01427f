"""Recorded sweeps and the replay measurer: file checks, answers, the restricted space, and the
replay search loop. A tiny sweep is written by hand from a real task's space and tile facts,
with made-up latencies, so nothing is compiled."""
from __future__ import annotations

import json
import math
from random import Random

import pytest

from tiletune.errors import UsageError
from tiletune.kernels.task import TaskSpec
from tiletune.schedules.config import Config
from tiletune.schedules.space import ConfigSpace
from tiletune.search.measurement.replay import ReplayMeasurer
from tiletune.search.measurement.sweep import (
    SWEEP_FORMAT,
    Sweep,
    SweepEntry,
    spec_to_dict,
)
from tiletune.search.measurement.sweep_recording import sweep_configs
from tiletune.search.replay_search import replay_search
from tiletune.search.strategies import make_strategy

SPEC = TaskSpec.make("matmul", {"M": 200, "N": 136, "K": 72}, "float16")
HEADER = {"format": SWEEP_FORMAT, "version": 1, "device": "sim-h100", "capability": "sm90",
          "measurer": "sim-h100", "triton": "3.4.0"}


def made_up_latency(config: Config) -> float:
    """A smooth bowl around BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, 4 warps: one clear best."""
    return 10.0 + sum(abs(math.log2(config[k]) - v) for k, v in
                      (("BLOCK_M", 6), ("BLOCK_N", 6), ("BLOCK_K", 5), ("num_warps", 2))) \
        + 0.01 * config["num_stages"] + 0.001 * config["GROUP_M"]


@pytest.fixture(scope="module")
def recorded() -> tuple[list[Config], list[SweepEntry]]:
    """40 legal configs (the default first); the last one recorded as a compile error."""
    task = SPEC.build()
    configs = [task.space.default()] + task.space.sample(Random(1), 39, exclude={task.space.default()})
    entries = [
        SweepEntry(SPEC, c, "ok", "", made_up_latency(c),
                   {"tile": task.facts(c).to_dict(), "usage": {"registers": 96}})
        for c in configs[:-1]
    ]
    entries.append(SweepEntry(SPEC, configs[-1], "compile_error", "out of resources: shared memory"))
    return configs, entries


@pytest.fixture()
def sweep_file(tmp_path, recorded):
    path = tmp_path / "sweep.jsonl"
    Sweep(HEADER, recorded[1]).save(path)
    return path


def lines_of(path) -> list[str]:
    return path.read_text().splitlines()


def write_lines(path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


# -- file format ---------------------------------------------------------------------------------


def test_a_saved_sweep_loads_back_equal(sweep_file, recorded):
    sweep = Sweep.load(sweep_file)
    assert sweep.specs() == [SPEC]
    assert sweep.header == HEADER
    assert list(sweep.entries(SPEC).values()) == recorded[1]
    assert json.loads(lines_of(sweep_file)[0])["format"] == "tiletune-sweep"
    assert not list(sweep_file.parent.glob(".*tmp")), "the temp file of the atomic write is left"


@pytest.mark.parametrize("first_line, message", [
    ("", "is empty"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({**HEADER, "format": "tiletune-db"}), "is not a tiletune sweep"),
    (json.dumps({**HEADER, "version": 2}), "format version 2"),
    (json.dumps({**HEADER, "version": "1"}), "format version '1'"),
    (json.dumps({**HEADER, "version": True}), "format version True"),
    (json.dumps({k: v for k, v in HEADER.items() if k != "measurer"}), "needs 'measurer'"),
])
def test_a_bad_header_is_refused_with_its_reason(sweep_file, first_line, message):
    write_lines(sweep_file, [first_line] + lines_of(sweep_file)[1:])
    with pytest.raises(UsageError, match=message):
        Sweep.load(sweep_file)


def test_a_missing_file_says_how_to_record_one(tmp_path):
    with pytest.raises(UsageError, match="--record"):
        Sweep.load(tmp_path / "nope.jsonl")


def _entry_line(**changes) -> str:
    line = {"spec": spec_to_dict(SPEC), "config": SPEC.build().space.default().as_dict(),
            "status": "ok", "reason": "", "latency_us": 12.0, "facts": {}}
    line.update(changes)
    return json.dumps(line)


@pytest.mark.parametrize("bad_line, message", [
    ('{"spec": ', "not valid JSON"),
    ('"just a string"', "expected a JSON object"),
    (_entry_line(status="great"), "status must be one of"),
    (_entry_line(latency_us=None), "needs a positive latency_us"),
    (_entry_line(latency_us=-3.0), "needs a positive latency_us"),
    (_entry_line(latency_us=True), "needs a positive latency_us"),
    (_entry_line(latency_us="12"), "needs a positive latency_us"),
    (_entry_line(status="compile_error", latency_us=3.0), "has no latency"),
    (_entry_line(config={"BLOCK_M": 64.5}), "must be an int, bool or str"),
    (_entry_line(config=[["BLOCK_M", 64]]), "'config' must be an object"),
    (_entry_line(spec={"op": "matmul", "dtype": "float16", "dims": {"M": "200"}}), "positive integers"),
    (_entry_line(spec={"op": 3, "dtype": None, "dims": {}}), "operator name"),
    (_entry_line(facts="usage"), "'facts' must be an object"),
    (_entry_line(facts={"tile": {"programs": "__import__('os')"}}), "facts 'tile' must map names to numbers"),
    (_entry_line(facts={"usage": [96]}), "facts 'usage' must map names to numbers"),
    (_entry_line(latency_us=float("nan")), "not valid JSON"),
])
def test_a_bad_line_is_refused_naming_the_line(sweep_file, bad_line, message):
    lines = lines_of(sweep_file)
    write_lines(sweep_file, lines[:2] + [bad_line] + lines[2:])
    with pytest.raises(UsageError, match=message) as error:
        Sweep.load(sweep_file)
    assert ":3:" in str(error.value)


def test_a_config_recorded_twice_is_refused(sweep_file):
    lines = lines_of(sweep_file)
    write_lines(sweep_file, lines + [lines[1]])
    with pytest.raises(UsageError, match="twice"):
        Sweep.load(sweep_file)


def test_python_code_in_a_sweep_stays_data(sweep_file, tmp_path):
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    other = {"op": code, "dtype": None, "dims": {"N": 4}}
    lines = lines_of(sweep_file) + [
        _entry_line(config={**SPEC.build().space.default().as_dict(), "BLOCK_M": code}, reason=code,
                    facts={"note": code}),
        _entry_line(spec=other),
    ]
    write_lines(sweep_file, lines)
    sweep = Sweep.load(sweep_file)
    assert not marker.exists()
    odd = [e for e in sweep.entries(SPEC).values() if e.config["BLOCK_M"] == code]
    assert len(odd) == 1 and odd[0].reason == code and odd[0].facts == {"note": code}
    assert TaskSpec(code, None, (("N", 4),)) in sweep.specs()  # a name, never imported
    assert odd[0].config not in set(sweep.space(SPEC).enumerate())  # and never a legal config
    assert not marker.exists()


# -- the replay measurer ---------------------------------------------------------------------------


def test_replay_measurer_answers_recorded_outcomes(sweep_file, recorded):
    configs, entries = recorded
    measurer = ReplayMeasurer(Sweep.load(sweep_file))
    assert measurer.kind == "replay:sim-h100"
    assert measurer.device.name == "sim-h100" and measurer.device.capability == "sm90"
    outcomes = measurer.measure(SPEC, [(c, {}) for c in configs])
    assert [o.config for o in outcomes] == configs
    assert [o.latency_us for o in outcomes[:-1]] == [e.latency_us for e in entries[:-1]]
    assert all(o.status == "ok" and o.facts["usage"]["registers"] == 96 for o in outcomes[:-1])
    assert outcomes[-1].status == "compile_error" and outcomes[-1].latency_us is None
    assert "shared memory" in outcomes[-1].reason


def test_replay_measurer_refuses_configs_it_did_not_record(sweep_file, recorded):
    measurer = ReplayMeasurer(Sweep.load(sweep_file))
    unknown = next(c for c in SPEC.build().space.enumerate() if c not in recorded[0])
    [outcome] = measurer.measure(SPEC, [(unknown, {})])
    assert outcome.status == "illegal" and outcome.latency_us is None
    assert "not in the replayed sweep" in outcome.reason and "40 configs" in outcome.reason
    other = TaskSpec.make("matmul", {"M": 64, "N": 64, "K": 64}, "float16")
    [outcome] = measurer.measure(other, [(recorded[0][0], {})])
    assert outcome.status == "illegal" and "has no workload" in outcome.reason


# -- the restricted space --------------------------------------------------------------------------


def test_the_restricted_space_enumerates_exactly_the_recorded_legal_configs(sweep_file, recorded, tmp_path):
    configs, entries = recorded
    # A config legal in no version of the space (an unknown knob value) is recorded too.
    stale = configs[0].replace(BLOCK_M=24)
    path = tmp_path / "with-stale.jsonl"
    Sweep(HEADER, entries + [SweepEntry(SPEC, stale, "ok", "", 1.0, {})]).save(path)
    sweep = Sweep.load(path)
    space = sweep.space(SPEC)
    plain = ConfigSpace(space.knobs, space.constraints)  # the same constraints, the slow way
    assert list(space.enumerate()) == list(plain.enumerate())
    assert set(space.enumerate()) == set(configs)
    assert not space.is_legal(stale) and space.validate(stale) == plain.validate(stale)
    unknown = next(c for c in SPEC.build().space.enumerate() if c not in configs)
    assert not space.is_legal(unknown)
    assert any("recorded in the sweep" in r for r in space.validate(unknown))
    assert space.default() == SPEC.build().space.default()
    drawn = space.sample(Random(0), 100, exclude=set(configs[:5]))
    assert len(drawn) == 35 and len(set(drawn)) == 35 and set(drawn) <= set(configs[5:])
    assert space.sample(Random(3), 10) == space.sample(Random(3), 10)
    assert all(n in set(configs) for c in configs for n in space.neighbors(c))


def test_sweep_configs_take_the_default_and_a_seeded_sample():
    spec = TaskSpec.make("softmax", {"N": 64, "D": 100}, "float32")
    space = spec.build().space
    every = sweep_configs(spec, None, 0)
    assert every[0] == space.default() and set(every) == set(space.enumerate()) and len(set(every)) == len(every)
    some = sweep_configs(SPEC, 10, 0)
    assert some[0] == SPEC.build().space.default() and len(set(some)) == 11
    assert some == sweep_configs(SPEC, 10, 0) and some != sweep_configs(SPEC, 10, 1)
    assert all(SPEC.build().space.is_legal(c) for c in some)


def test_sweep_samples_of_two_shapes_share_their_configs():
    # Shapes of one operator draw from one shuffled order, so a sweep compiles shared kernels once.
    # (K short enough that neither offers SPLIT_K: both spaces have the same knobs)
    big = TaskSpec.make("matmul", {"M": 512, "N": 512, "K": 128}, "float16")
    thin = TaskSpec.make("matmul", {"M": 32, "N": 512, "K": 128}, "float16")  # BLOCK_M <= 32 only
    a, b = sweep_configs(big, 60, 0), sweep_configs(thin, 60, 0)
    assert len(a) == len(b) == 61 and all(thin.build().space.is_legal(c) for c in b)
    legal_in_both = [c for c in a[1:] if thin.build().space.is_legal(c)]
    assert legal_in_both == [c for c in b[1:] if c in set(a)]  # the same order, filtered
    assert len(legal_in_both) >= 10


# -- the replay search loop --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["random", "model"])
def test_replay_search_finds_the_best_config(sweep_file, recorded, strategy):
    sweep = Sweep.load(sweep_file)
    best = sweep.best(SPEC)
    assert best.latency_us == min(e.latency_us for e in recorded[1] if e.status == "ok")
    run = replay_search(make_strategy(strategy, sweep.tile_facts(SPEC), 0), sweep, SPEC, best.latency_us, batch=4)
    assert run.found and run.best_us == best.latency_us
    assert 1 <= run.trials <= 40


def test_replay_search_stops_when_the_sweep_is_exhausted(sweep_file):
    sweep = Sweep.load(sweep_file)
    run = replay_search(make_strategy("random", sweep.tile_facts(SPEC), 0), sweep, SPEC, 0.5, batch=8)
    assert not run.found and run.trials == 40
    assert run.best_us == sweep.best(SPEC).latency_us


def test_a_config_in_full_finds_an_entry_recorded_before_its_knobs_existed():
    """The sweep of 2026-11-23 predates the Hopper knobs: its configs leave them out. A lookup
    of the full form must find the entry before anything else built the sweep's space."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "data" / "sweep-sim-h100-2026-11-23.jsonl"
    spec = next(s for s in Sweep.load(path).specs() if s.op == "matmul")
    short = next(iter(Sweep.load(path).entries(spec)))
    assert "PERSISTENT" not in short.as_dict()
    full = spec.build().space.expand(short)
    assert Sweep.load(path).lookup(spec, full) is not None
