"""The fuzz program generator covers every construct, is deterministic per seed and round-trips
through JSON; the shrinker reduces a planted failure to a small program and config."""
from __future__ import annotations

import collections

import pytest

from tiletune.kernels.families import analyse
from tiletune.kernels.fuzz import program as fp
from tiletune.kernels.fuzz.programs import TEMPLATES, generate
from tiletune.kernels.fuzz.runner import PairResult, config_of, pair_seed, split_of, tolerance_dtype
from tiletune.kernels.fuzz.shrink import shrink
from tiletune.tensorexpr.analysis import OpClass
from tiletune.tensorexpr.operator import canonical_text

SEEDS = range(400)


@pytest.fixture(scope="module")
def programs() -> list[dict]:
    return [generate(pair_seed(0, s)) for s in SEEDS]


def _heads(program: dict) -> collections.Counter:
    found: collections.Counter = collections.Counter()
    for stage in program["stages"]:
        for node in fp.nodes(stage["body"]):
            found[node[0]] += 1
            if node[0] in ("reduce", "scan", "cast", "un", "bin"):
                found[f"{node[0]}:{node[1]}"] += 1
    return found


def test_generator_covers_every_construct(programs):
    heads: collections.Counter = collections.Counter()
    classes, kinds, ranks, dtypes, sizes = set(), set(), set(), set(), set()
    for p in programs:
        heads += _heads(p)
        kinds.add(p["name"].split("_")[1])
        graph = fp.graph(p)
        if split_of(graph, p["dims"]) is None:  # a composite program runs as several kernels (test_fuzz_split.py)
            classes.add(analyse(graph).op_class)
        else:
            kinds.add("split")
        ranks.update(len(t["shape"]) for t in p["inputs"])
        dtypes.update(t["dtype"] for t in p["inputs"])
        sizes.update(p["dims"].values())
        if any(1 in t["shape"] for t in p["inputs"]):
            heads["broadcast"] += 1
    assert kinds == set(TEMPLATES) | {"split"}
    assert {OpClass.INJECTIVE, OpClass.REDUCTION, OpClass.CONTRACTION, OpClass.WINDOW, OpClass.SCAN} <= classes
    for construct in ("read", "pad", "where", "cmp", "broadcast", "reduce:sum", "reduce:max", "reduce:min",
                      "reduce:argmax", "reduce:argmin", "scan:sum", "scan:prod", "scan:max", "scan:min",
                      "cast:float16", "cast:bfloat16", "cast:float32", "bin:floordiv", "bin:mod", "un:exp"):
        assert heads[construct], construct
    assert ranks >= {1, 2, 3, 4}
    assert {"float32", "float16", "bfloat16", "int64", "int32"} <= dtypes
    assert {1, 17, 31, 33, 65, 127, 129} & sizes >= {1, 17, 31, 33}
    multi_axis = [p for p in programs for s in p["stages"] if len(s["reduce_axes"]) >= 2]
    assert multi_axis


def test_contractions_use_every_operand_layout_and_batch_axes(programs):
    layouts, batches = set(), set()
    for p in programs:
        if not p["name"].startswith("fz_contraction"):
            continue
        assert analyse(fp.graph(p)).op_class is OpClass.CONTRACTION
        a, w = p["inputs"][:2]
        stage = next(s for s in p["stages"] if s["reduce_axes"])
        k = stage["reduce_axes"][0][1]
        layouts.add((a["shape"][-1] != k, w["shape"][-1] == k))  # (A is K x M, B is N x K)
        batches.add(len(stage["shape"]) - 2)
    assert layouts == {(False, False), (False, True), (True, False), (True, True)}
    assert batches >= {0, 1, 2}


def test_generator_is_deterministic_per_seed():
    assert fp.dumps(generate(7)) == fp.dumps(generate(7))
    assert fp.dumps(generate(7)) != fp.dumps(generate(8))
    assert config_of(generate(7), 7) == config_of(generate(7), 7)


def test_program_round_trips_through_json(programs):
    for p in programs[:100]:
        again = fp.loads(fp.dumps(p))
        assert again == p
        assert canonical_text(fp.graph(again)) == canonical_text(fp.graph(p))


def test_loads_refuses_another_version():
    from tiletune.errors import DSLError

    with pytest.raises(DSLError, match="version"):
        fp.loads('{"version": 99}')


def test_tolerance_follows_the_loosest_rounding():
    p = {"version": 1, "name": "t", "dims": {"D0": 3},
         "inputs": [{"name": "x", "shape": ["D0"], "dtype": "float32", "domain": None}],
         "stages": [{"name": "y", "shape": ["D0"], "axes": ["i"], "reduce_axes": [],
                     "body": ["cast", "float32", ["cast", "bfloat16", ["read", "x", [["axis", "i"]]]]]}]}
    assert tolerance_dtype(fp.graph(p)) == "bfloat16"
    p["stages"][0]["body"] = ["read", "x", [["axis", "i"]]]
    assert tolerance_dtype(fp.graph(p)) == "float32"


def test_shrinker_reduces_a_planted_failure():
    """A planted bug: any program with an exp whose first dim exceeds 2 'mismatches'."""
    program = next(p for p in (generate(s, "injective") for s in range(200))
                   if _heads(p)["un:exp"] and len(p["stages"]) == 2 and max(p["dims"].values()) > 8)
    first = list(program["dims"])[0]
    program["dims"][first] = 40

    def check(p: dict, config: str | None) -> PairResult:
        try:
            fp.graph(p)
        except Exception:  # noqa: BLE001
            return PairResult("rejected", "declare", "", 0.0, "", config)
        bad = _heads(p)["un:exp"] and p["dims"][first] > 2
        return PairResult("mismatch" if bad else "ok", "run", "", 0.0, "", config)

    failure = check(program, None)
    assert failure.status == "mismatch"
    small, _, result, tries = shrink(program, None, failure, check=check)
    assert result.status == "mismatch"
    assert small["dims"][first] == 3
    assert all(v == 1 for k, v in small["dims"].items() if k != first)
    assert len(small["stages"]) == 1
    assert sum(_heads(small).values()) < sum(_heads(program).values())
    assert tries < 300
