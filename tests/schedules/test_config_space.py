"""Config (repr, equality, JSON) and ConfigSpace (validation, enumeration, sampling, neighbours)."""
from __future__ import annotations

import dataclasses
import enum
import itertools
from random import Random

import pytest

from tiletune.errors import IllegalConfig, ScheduleError
from tiletune.schedules.config import Config
from tiletune.schedules.knobs import Boolean, Choice, Fixed, PowerOfTwo
from tiletune.schedules.space import Constraint, ConfigSpace

# --- Config: construction, repr, equality -----------------------------------------------------


def test_config_repr_is_sorted_pasteable_code() -> None:
    config = Config.of(num_warps=4, BLOCK_M=64, BLOCK_K=32)
    assert repr(config) == "Config.of(BLOCK_K=32, BLOCK_M=64, num_warps=4)"
    assert config.values == (("BLOCK_K", 32), ("BLOCK_M", 64), ("num_warps", 4))


@pytest.mark.parametrize(
    "config",
    [
        Config.of(),
        Config.of(BLOCK_M=64, swizzle=True, order="row", quote="it's \"quoted\"\n"),
        Config.of(big=2**70, neg=-3),
        Config.from_dict({"not-an-identifier": 1, "class": 2}),
        Config.from_dict({"__import__('os').system('false')": 1}),
    ],
)
def test_config_repr_evaluates_to_an_equal_config(config: Config) -> None:
    rebuilt = eval(repr(config), {"Config": Config})  # noqa: S307 - our own repr, by design
    assert rebuilt == config
    assert rebuilt.to_json() == config.to_json()


def test_config_with_a_non_identifier_name_falls_back_to_from_dict() -> None:
    assert repr(Config.from_dict({"a-b": 1})) == "Config.from_dict({'a-b': 1})"


def test_config_constructors_agree_and_ignore_order() -> None:
    expected = Config.of(BLOCK_M=64, num_warps=4)
    assert Config.from_dict({"num_warps": 4, "BLOCK_M": 64}) == expected
    assert Config((("num_warps", 4), ("BLOCK_M", 64))) == expected
    assert Config({"num_warps": 4, "BLOCK_M": 64}) == expected  # type: ignore[arg-type]


def test_config_equality_and_hash_follow_values() -> None:
    a = Config.of(BLOCK_M=64, num_warps=4)
    b = Config.from_dict({"num_warps": 4, "BLOCK_M": 64})
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != Config.of(BLOCK_M=64, num_warps=8)
    assert a != Config.of(BLOCK_M=64)
    assert a != {"BLOCK_M": 64, "num_warps": 4}


def test_config_tells_true_from_one() -> None:
    # Python says True == 1 and hash(True) == hash(1); a config must not.
    assert Config.of(x=True) != Config.of(x=1)
    assert Config.of(x=False) != Config.of(x=0)
    assert len({Config.of(x=True), Config.of(x=1)}) == 2


def test_config_is_frozen() -> None:
    config = Config.of(BLOCK_M=64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.values = ()  # type: ignore[misc]


@pytest.mark.parametrize("bad", [64.0, None, [64], {"a": 1}, b"64"])
def test_config_refuses_values_that_are_not_int_bool_or_str(bad: object) -> None:
    with pytest.raises(ScheduleError, match="value of 'BLOCK_M' must be an int, bool or str"):
        Config.of(BLOCK_M=bad)  # type: ignore[arg-type]


def test_config_refuses_repeated_and_empty_names() -> None:
    with pytest.raises(ScheduleError, match="twice"):
        Config((("BLOCK_M", 64), ("BLOCK_M", 32)))
    with pytest.raises(ScheduleError, match="non-empty strings"):
        Config.from_dict({"": 1})
    with pytest.raises(ScheduleError, match="pairs"):
        Config(((1, 2, 3),))  # type: ignore[arg-type]


def test_config_turns_int_subclasses_into_plain_ints() -> None:
    class Warps(enum.IntEnum):
        FOUR = 4

    config = Config.of(num_warps=Warps.FOUR)
    assert type(config["num_warps"]) is int
    assert repr(config) == "Config.of(num_warps=4)"


# --- Config: mapping access -------------------------------------------------------------------


def test_config_mapping_access() -> None:
    config = Config.of(BLOCK_M=64, num_warps=4)
    assert config["BLOCK_M"] == 64
    assert config.get("num_warps") == 4
    assert config.get("BLOCK_N") is None
    assert config.get("BLOCK_N", 32) == 32
    assert "BLOCK_M" in config and "BLOCK_N" not in config
    assert list(config) == ["BLOCK_M", "num_warps"]
    assert len(config) == 2
    assert dict(config) == {"BLOCK_M": 64, "num_warps": 4}
    assert config.items() == (("BLOCK_M", 64), ("num_warps", 4))
    with pytest.raises(KeyError, match="BLOCK_N"):
        config["BLOCK_N"]


def test_as_dict_is_a_copy() -> None:
    config = Config.of(BLOCK_M=64)
    values = config.as_dict()
    values["BLOCK_M"] = 128
    assert config["BLOCK_M"] == 64


def test_replace_returns_a_new_config_and_refuses_unknown_names() -> None:
    config = Config.of(BLOCK_M=64, num_warps=4)
    changed = config.replace(num_warps=8)
    assert changed == Config.of(BLOCK_M=64, num_warps=8)
    assert config["num_warps"] == 4
    with pytest.raises(ScheduleError, match="no knob 'num_warp'"):
        config.replace(num_warp=8)


# --- Config: JSON -----------------------------------------------------------------------------


def test_to_json_is_canonical() -> None:
    config = Config.of(order="row", BLOCK_M=64, swizzle=True)
    assert config.to_json() == '{"BLOCK_M":64,"order":"row","swizzle":true}'


@pytest.mark.parametrize(
    "config",
    [
        Config.of(),
        Config.of(BLOCK_M=64, swizzle=False, order="col", big=2**80, neg=-1),
        Config.of(text="ünïcode ✓ \"quotes\" \\ back\nslash"),
        Config.of(one=1, yes=True, zero=0, no=False),
    ],
)
def test_json_round_trips_exactly(config: Config) -> None:
    back = Config.from_json(config.to_json())
    assert back == config
    assert back.to_json() == config.to_json()
    assert [type(v) for _, v in back.items()] == [type(v) for _, v in config.items()]


def test_from_json_ignores_key_order_and_whitespace() -> None:
    assert Config.from_json(' { "b" : 2 ,\n "a" : "x" } ') == Config.of(a="x", b=2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "must be an object.*got array"),
        ('"BLOCK_M"', "must be an object.*got string"),
        ("64", "must be an object.*got int"),
        ("null", "must be an object.*got null"),
        ("1.5", "must be an object.*got float"),
        ('{"BLOCK_M": {"value": 64}}', "'BLOCK_M'.*got object"),
        ('{"BLOCK_M": [64]}', "'BLOCK_M'.*got array"),
        ('{"BLOCK_M": 64.0}', "'BLOCK_M'.*got float 64.0"),
        ('{"BLOCK_M": 6.4e1}', "'BLOCK_M'.*got float"),
        ('{"BLOCK_M": NaN}', "'BLOCK_M'.*non-finite"),
        ('{"BLOCK_M": Infinity}', "'BLOCK_M'.*non-finite"),
        ('{"BLOCK_M": -Infinity}', "'BLOCK_M'.*non-finite"),
        ('{"BLOCK_M": null}', "'BLOCK_M'.*got null"),
        ('{"BLOCK_M": 64, "BLOCK_M": 32}', "'BLOCK_M' twice"),
        ('{"BLOCK_M": 64', "not valid"),
        ("", "not valid"),
        ("{'BLOCK_M': 64}", "not valid"),
        ('{"": 1}', "non-empty"),
        ("[" * 100_000 + "]" * 100_000, "not valid"),
        ('{"n": ' + "9" * 5000 + "}", "not valid"),
    ],
)
def test_from_json_refuses_anything_but_an_object_of_plain_values(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Config.from_json(text)


def test_from_json_refuses_non_text() -> None:
    with pytest.raises(ScheduleError, match="must be a str"):
        Config.from_json(b'{"a": 1}')  # type: ignore[arg-type]


def test_from_json_keeps_code_as_a_plain_string() -> None:
    code = "globals().__setitem__('PWNED', 1) or __import__('os').getpid()"
    text = '{"order": ' + '"' + code.replace("'", "\\u0027") + '", "n": "64"}'
    config = Config.from_json(text)
    assert config["order"] == code and type(config["order"]) is str
    assert config["n"] == "64" and type(config["n"]) is str  # no coercion to int either
    rebuilt = eval(repr(config), {"Config": Config})  # noqa: S307 - our own repr, by design
    assert rebuilt == config
    assert "PWNED" not in globals()


# --- ConfigSpace ------------------------------------------------------------------------------


def _tile_fits(config: Config) -> str | None:
    area = config["BLOCK_M"] * config["BLOCK_N"]
    return None if area <= 64 * 64 else f"{config['BLOCK_M']}x{config['BLOCK_N']} is over 64x64"


FITS = Constraint("tile fits in registers", _tile_fits)


def gemm_space() -> ConfigSpace:
    """864 assignments; the 3 (BLOCK_M, BLOCK_N) pairs over 64x64 of 16 are illegal."""
    return ConfigSpace(
        [
            PowerOfTwo("BLOCK_M", 16, 128),
            PowerOfTwo("BLOCK_N", 16, 128),
            PowerOfTwo("BLOCK_K", 16, 64),
            Choice("num_warps", (2, 4, 8)),
            Choice("num_stages", (2, 3, 4)),
            Boolean("swizzle"),
        ],
        [FITS],
    )


def test_space_basics() -> None:
    space = gemm_space()
    assert space.names == ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages", "swizzle")
    assert space.size == 4 * 4 * 3 * 3 * 3 * 2
    assert space.knob("num_warps") == Choice("num_warps", (2, 4, 8))
    assert len(space.knobs) == 6
    with pytest.raises(ScheduleError, match="no knob 'BLOCK_Z'"):
        space.knob("BLOCK_Z")


def test_space_refuses_repeated_knob_names_and_wrong_types() -> None:
    with pytest.raises(ScheduleError, match="'BLOCK_M' twice"):
        ConfigSpace([PowerOfTwo("BLOCK_M", 16, 64), Choice("BLOCK_M", (16, 32))])
    with pytest.raises(ScheduleError, match="Knob objects"):
        ConfigSpace(["BLOCK_M"])  # type: ignore[list-item]
    with pytest.raises(ScheduleError, match="Constraint objects"):
        ConfigSpace([Boolean("swizzle")], [_tile_fits])  # type: ignore[list-item]


def test_default_is_every_knob_default_when_legal() -> None:
    assert gemm_space().default() == Config.of(
        BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, num_warps=2, num_stages=2, swizzle=False
    )


def test_default_falls_back_to_the_first_legal_config_in_enumeration_order() -> None:
    not_default = Constraint("no 32", lambda c: "32 refused" if c["BLOCK_M"] == 32 else None)
    space = gemm_space().with_constraint(not_default)
    assert space.default() == next(space.enumerate())
    assert space.default()["BLOCK_M"] == 16
    nothing = Constraint("nothing", lambda c: "never")
    with pytest.raises(ScheduleError, match="no legal config"):
        ConfigSpace([Boolean("swizzle")], [nothing]).default()


def test_validate_reports_every_reason() -> None:
    space = gemm_space()
    config = Config.of(
        BLOCK_M=48, BLOCK_N=True, num_warps=4, num_stages=2, swizzle=1, BLOCK_Z=16
    )
    reasons = space.validate(config)
    assert len(reasons) == 5
    assert any("unknown knob 'BLOCK_Z'" in r for r in reasons)
    assert "missing knob 'BLOCK_K'" in reasons
    assert "BLOCK_M must be a power of two in [16, 128], got 48" in reasons
    assert "BLOCK_N must be a power of two in [16, 128], got True (a bool)" in reasons
    assert "swizzle must be True or False, got 1" in reasons


def test_validate_reports_every_violated_constraint() -> None:
    even = Constraint("stages even", lambda c: None if c["num_stages"] % 2 == 0 else "odd")
    space = gemm_space().with_constraint(even)
    config = space.default().replace(BLOCK_M=128, BLOCK_N=128, num_stages=3)
    assert space.validate(config) == [
        "tile fits in registers: 128x128 is over 64x64",
        "stages even: odd",
    ]
    assert space.validate(space.default()) == []


def test_check_raises_illegal_config_with_the_repr_and_all_reasons() -> None:
    space = gemm_space()
    config = space.default().replace(BLOCK_M=128, BLOCK_N=128, BLOCK_K=8)
    with pytest.raises(IllegalConfig) as raised:
        space.check(config)
    # BLOCK_K is illegal, so the constraint (which assumes legal knobs) is not consulted.
    assert str(raised.value) == (
        f"illegal config {config!r}: BLOCK_K must be a power of two in [16, 64], got 8"
    )
    two = space.default().replace(BLOCK_M=128, BLOCK_N=128, num_warps=3, swizzle=2)
    with pytest.raises(IllegalConfig, match=r"got 3\]?.*; swizzle must be True or False"):
        space.check(two)
    space.check(space.default())
    assert space.is_legal(space.default())
    assert not space.is_legal(config)


def test_a_broken_constraint_is_reported_not_taken_as_a_verdict() -> None:
    returns_bool = Constraint("fits", lambda c: c["BLOCK_M"] <= 64)
    with pytest.raises(ScheduleError, match="must return None or a reason string, got True"):
        gemm_space().with_constraint(returns_bool).is_legal(gemm_space().default())
    raises = Constraint("typo", lambda c: c["BLOCK_MM"])
    with pytest.raises(ScheduleError, match="constraint 'typo' raised KeyError"):
        gemm_space().with_constraint(raises).validate(gemm_space().default())


def test_enumerate_counts_the_product_minus_the_illegal_ones() -> None:
    space = gemm_space()
    configs = list(space.enumerate())
    # Of the 16 (BLOCK_M, BLOCK_N) pairs, (64, 128), (128, 64) and (128, 128) are over 64x64;
    # the other four knobs contribute 3 * 3 * 3 * 2 = 54 each.
    assert len(configs) == space.size - 3 * 54 == 702
    assert len(set(configs)) == len(configs)
    assert all(space.is_legal(c) for c in configs)


def test_enumerate_is_deterministic_with_the_last_knob_fastest() -> None:
    space = gemm_space()
    configs = list(space.enumerate())
    assert configs == list(space.enumerate())
    assert configs[0] == Config.of(
        BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=2, num_stages=2, swizzle=False
    )
    assert configs[1] == configs[0].replace(swizzle=True)
    assert configs[2] == configs[0].replace(num_stages=3)


def test_enumerate_matches_a_brute_force_count() -> None:
    space = gemm_space()
    expected = {
        Config.of(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, num_warps=w, num_stages=s, swizzle=z)
        for m, n, k, w, s, z in itertools.product(
            (16, 32, 64, 128), (16, 32, 64, 128), (16, 32, 64), (2, 4, 8), (2, 3, 4), (False, True)
        )
        if m * n <= 4096
    }
    assert set(space.enumerate()) == expected


def test_sample_is_deterministic_per_seed_distinct_and_legal() -> None:
    space = gemm_space()
    first = space.sample(Random(1), 50)
    assert first == space.sample(Random(1), 50)
    assert first != space.sample(Random(2), 50)
    assert len(first) == 50 and len(set(first)) == 50
    assert all(space.is_legal(c) for c in first)


def test_sample_respects_exclude() -> None:
    space = gemm_space()
    taken = set(space.sample(Random(0), 600))
    more = space.sample(Random(1), 200, exclude=taken)
    assert len(more) == 702 - 600
    assert not taken & set(more)
    assert taken | set(more) == set(space.enumerate())
    assert space.sample(Random(0), 5, exclude=space.enumerate()) == []


def test_sample_returns_every_legal_config_when_n_exceeds_the_space() -> None:
    space = ConfigSpace([Choice("num_warps", (2, 4, 8)), Boolean("swizzle")])
    drawn = space.sample(Random(0), 100)
    assert len(drawn) == 6
    assert set(drawn) == set(space.enumerate())
    assert space.sample(Random(0), 0) == []
    with pytest.raises(ScheduleError, match="n must be >= 0"):
        space.sample(Random(0), -1)


def test_sample_falls_back_to_enumeration_under_tight_constraints() -> None:
    # 4096 assignments, one legal: rejection sampling gives up and enumeration finds it.
    space = ConfigSpace(
        [Choice(f"k{i}", tuple(range(8))) for i in range(4)],
        [Constraint("all sevens", lambda c: None if set(c.as_dict().values()) == {7} else "no")],
    )
    assert space.sample(Random(3), 2) == [Config.of(k0=7, k1=7, k2=7, k3=7)]


class _Stuck(Choice):
    """A knob whose random draw is always its first value, so that rejection sampling stalls."""

    def random(self, rng: Random) -> int | str:
        return self.values[0]


def test_sample_fallback_is_still_random_and_deterministic() -> None:
    # Random draws only ever give (0, 0); the other configs must come from the fallback.
    space = ConfigSpace([_Stuck("a", tuple(range(10))), _Stuck("b", tuple(range(10)))])
    first = space.sample(Random(1), 5)
    assert first == space.sample(Random(1), 5)
    assert first[0] == Config.of(a=0, b=0)
    assert len(set(first)) == 5
    drawn = {c for seed in range(10) for c in space.sample(Random(seed), 5)}
    assert len(drawn) > 5  # not always the first ones in enumeration order


def test_sample_does_not_enumerate_a_large_space_when_draws_suffice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(self: ConfigSpace) -> None:
        raise AssertionError("enumerated")

    space = ConfigSpace([PowerOfTwo(f"k{i}", 1, 2**20) for i in range(6)])
    monkeypatch.setattr(ConfigSpace, "enumerate", refuse)
    assert len(space.sample(Random(0), 20)) == 20


def test_neighbors_are_legal_and_differ_in_exactly_one_knob() -> None:
    space = gemm_space()
    config = Config.of(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3, swizzle=True)
    found = space.neighbors(config)
    for neighbor in found:
        assert space.is_legal(neighbor)
        changed = [name for name in space.names if neighbor[name] != config[name]]
        assert len(changed) == 1
        knob = space.knob(changed[0])
        assert neighbor[changed[0]] in knob.neighbors(config[changed[0]])
    assert config.replace(BLOCK_M=32) in found
    # BLOCK_M=128 with BLOCK_N=64 breaks the tile constraint, so it is not offered.
    assert config.replace(BLOCK_M=128) not in found
    # 2 + 2 + 2 + 2 + 1 (swizzle) for the others, 1 each for BLOCK_M and BLOCK_N.
    assert len(found) == 1 + 1 + 2 + 2 + 2 + 1
    assert len(set(found)) == len(found)


def test_neighbors_refuse_a_malformed_config() -> None:
    with pytest.raises(IllegalConfig, match="missing knob"):
        gemm_space().neighbors(Config.of(BLOCK_M=64))


def test_space_from_json_validates_against_the_space() -> None:
    space = gemm_space()
    assert space.from_json(space.default().to_json()) == space.default()
    illegal = space.default().replace(BLOCK_M=128, BLOCK_N=128).to_json()
    with pytest.raises(IllegalConfig, match="tile fits in registers"):
        space.from_json(illegal)
    with pytest.raises(IllegalConfig, match="'BLOCK_M'.*float"):
        space.from_json('{"BLOCK_M": 64.0}')


def test_with_constraint_leaves_the_original_alone() -> None:
    space = gemm_space()
    no_swizzle = Constraint("no swizzle", lambda c: "off" if c["swizzle"] else None)
    stricter = space.with_constraint(no_swizzle)
    config = space.default().replace(swizzle=True)
    assert space.is_legal(config)
    assert not stricter.is_legal(config)
    assert len(list(stricter.enumerate())) == 702 // 2


def test_merge_unites_knobs_and_constraints() -> None:
    tiles = ConfigSpace([PowerOfTwo("BLOCK_M", 16, 128), PowerOfTwo("BLOCK_N", 16, 128)], [FITS])
    launch = ConfigSpace([PowerOfTwo("BLOCK_M", 16, 128), Choice("num_warps", (2, 4, 8))])
    merged = tiles.merge(launch)
    assert merged.names == ("BLOCK_M", "BLOCK_N", "num_warps")
    assert merged.constraints == (FITS,)
    assert len(list(merged.enumerate())) == 13 * 3
    with pytest.raises(ScheduleError, match="'BLOCK_M' differs"):
        tiles.merge(ConfigSpace([PowerOfTwo("BLOCK_M", 16, 64)]))


def test_fix_pins_knobs_to_one_value() -> None:
    space = gemm_space()
    fixed = space.fix(num_warps=4, swizzle=True)
    assert fixed.knob("num_warps") == Fixed("num_warps", 4)
    assert fixed.size == space.size // 3 // 2
    configs = list(fixed.enumerate())
    assert len(configs) == 702 // 6
    assert {(c["num_warps"], c["swizzle"]) for c in configs} == {(4, True)}
    assert fixed.default()["num_warps"] == 4
    assert space.knob("num_warps") == Choice("num_warps", (2, 4, 8))
    assert fixed.validate(configs[0].replace(num_warps=8)) == ["num_warps is fixed to 4, got 8"]


def test_fix_refuses_unknown_knobs_and_illegal_values() -> None:
    with pytest.raises(ScheduleError, match="no knob 'BLOCK_Z'"):
        gemm_space().fix(BLOCK_Z=64)
    with pytest.raises(ScheduleError, match="fix: BLOCK_M must be a power of two"):
        gemm_space().fix(BLOCK_M=48)
    with pytest.raises(ScheduleError, match="fix: swizzle must be True or False"):
        gemm_space().fix(swizzle=1)
