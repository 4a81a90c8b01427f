"""Knobs: choices, defaults, random draws, neighbours, validation and construction errors."""
from __future__ import annotations

import dataclasses
import enum
from random import Random

import pytest

from tiletune.errors import ScheduleError
from tiletune.schedules.knobs import Boolean, Choice, Fixed, Knob, PowerOfTwo, as_knob_value

# --- PowerOfTwo -------------------------------------------------------------------------------


def test_power_of_two_choices_run_from_low_to_high_inclusive() -> None:
    assert PowerOfTwo("BLOCK_M", 16, 256).choices() == (16, 32, 64, 128, 256)
    assert PowerOfTwo("BLOCK_M", 1, 1).choices() == (1,)


def test_power_of_two_default_is_the_middle_choice_or_the_given_one() -> None:
    assert PowerOfTwo("BLOCK_M", 16, 256).default == 64
    # Even count: the lower of the two middles (smaller tiles are more often legal).
    assert PowerOfTwo("BLOCK_M", 16, 128).default == 32
    assert PowerOfTwo("BLOCK_M", 16, 256, default=128).default == 128


def test_power_of_two_validate_names_the_knob_range_and_value() -> None:
    knob = PowerOfTwo("BLOCK_M", 16, 256)
    assert knob.validate(64) is None
    assert knob.validate(48) == "BLOCK_M must be a power of two in [16, 256], got 48"
    assert knob.validate(512) == "BLOCK_M must be a power of two in [16, 256], got 512"
    assert knob.validate(8) is not None
    assert knob.validate("64") is not None
    assert knob.validate(64.0) is not None
    assert knob.validate(None) is not None


def test_bool_is_not_accepted_for_an_int_knob() -> None:
    # True == 1 and 1 is a legal power of two: the knob must still refuse it.
    knob = PowerOfTwo("num_warps", 1, 8)
    assert knob.validate(1) is None
    assert knob.validate(True) == "num_warps must be a power of two in [1, 8], got True (a bool)"
    with pytest.raises(ScheduleError):
        knob.index(True)
    with pytest.raises(ScheduleError):
        knob.neighbors(True)
    choice = Choice("num_stages", (0, 1, 2))
    assert choice.validate(1) is None
    assert choice.validate(True) is not None
    assert choice.validate(False) is not None


def test_power_of_two_neighbors_are_half_and_double_within_range() -> None:
    knob = PowerOfTwo("BLOCK_M", 16, 256)
    assert knob.neighbors(64) == (32, 128)
    assert knob.neighbors(16) == (32,)
    assert knob.neighbors(256) == (128,)
    assert PowerOfTwo("BLOCK_M", 32, 32).neighbors(32) == ()
    with pytest.raises(ScheduleError, match="got 48"):
        knob.neighbors(48)


def test_index_is_the_position_in_choices() -> None:
    knob = PowerOfTwo("BLOCK_M", 16, 256)
    assert [knob.index(v) for v in (16, 32, 64, 128, 256)] == [0, 1, 2, 3, 4]
    with pytest.raises(ScheduleError, match="BLOCK_M must be a power of two"):
        knob.index(48)


@pytest.mark.parametrize(
    ("low", "high", "message"),
    [
        (12, 256, "low must be a power of two"),
        (16, 200, "high must be a power of two"),
        (0, 16, "low must be a power of two"),
        (-16, 16, "low must be a power of two"),
        (True, 16, "low must be a power of two"),
        (16.0, 64, "low must be a power of two"),
        (256, 16, "low 256 is greater than high 16"),
    ],
)
def test_power_of_two_rejects_bad_bounds(low: object, high: object, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        PowerOfTwo("BLOCK_M", low, high)  # type: ignore[arg-type]


@pytest.mark.parametrize("default", [48, 512, True, "64"])
def test_power_of_two_rejects_an_illegal_default(default: object) -> None:
    with pytest.raises(ScheduleError, match="bad default"):
        PowerOfTwo("BLOCK_M", 16, 256, default=default)  # type: ignore[arg-type]


# --- Choice -----------------------------------------------------------------------------------


def test_choice_keeps_the_given_order_and_defaults_to_the_first() -> None:
    knob = Choice("num_warps", [8, 2, 4])
    assert knob.choices() == (8, 2, 4)
    assert knob.default == 8
    assert Choice("num_warps", (2, 4, 8), default=4).default == 4


def test_choice_neighbors_are_adjacent_entries() -> None:
    knob = Choice("order", ("row", "col", "swizzle"))
    assert knob.neighbors("row") == ("col",)
    assert knob.neighbors("col") == ("row", "swizzle")
    assert knob.neighbors("swizzle") == ("col",)
    assert knob.index("swizzle") == 2


def test_choice_validate_lists_the_legal_values() -> None:
    knob = Choice("order", ("row", "col"))
    assert knob.validate("row") is None
    assert knob.validate("diag") == "order must be one of ['row', 'col'], got 'diag'"
    assert Choice("num_warps", (2, 4)).validate("4") is not None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((), "at least one value"),
        ((1, "a"), "all ints or all strings"),
        ((True, False), "all ints or all strings"),
        ((1.5, 2.5), "all ints or all strings"),
        ((2, 4, 2), "values repeat"),
    ],
)
def test_choice_rejects_bad_values(values: tuple, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Choice("knob", values)


def test_choice_rejects_a_default_outside_its_values() -> None:
    with pytest.raises(ScheduleError, match="bad default"):
        Choice("num_warps", (2, 4, 8), default=16)
    with pytest.raises(ScheduleError, match="bad default"):
        Choice("num_stages", (0, 1), default=True)


# --- Boolean and Fixed ------------------------------------------------------------------------


def test_boolean_choices_default_and_neighbors() -> None:
    knob = Boolean("swizzle")
    assert knob.choices() == (False, True)
    assert knob.default is False
    assert Boolean("swizzle", default=True).default is True
    assert knob.neighbors(False) == (True,)
    assert knob.neighbors(True) == (False,)
    assert knob.index(True) == 1


def test_boolean_refuses_ints_and_strings() -> None:
    knob = Boolean("swizzle")
    assert knob.validate(True) is None
    assert knob.validate(1) == "swizzle must be True or False, got 1"
    assert knob.validate(0) is not None
    assert knob.validate("true") is not None
    with pytest.raises(ScheduleError, match="default must be True or False"):
        Boolean("swizzle", default=1)  # type: ignore[arg-type]


def test_fixed_has_one_choice_of_the_same_type() -> None:
    knob = Fixed("num_warps", 4)
    assert knob.choices() == (4,)
    assert knob.default == 4
    assert knob.neighbors(4) == ()
    assert knob.validate(8) == "num_warps is fixed to 4, got 8"
    assert Fixed("one", 1).validate(True) is not None
    assert Fixed("flag", True).validate(1) is not None


# --- Common to all knobs ----------------------------------------------------------------------

ALL_KNOBS = [
    PowerOfTwo("BLOCK_M", 16, 256),
    Choice("num_warps", (2, 4, 8)),
    Choice("order", ("row", "col")),
    Boolean("swizzle"),
    Fixed("num_stages", 3),
]


@pytest.mark.parametrize("knob", ALL_KNOBS, ids=lambda k: k.name)
def test_random_is_deterministic_per_seed_and_covers_every_choice(knob: Knob) -> None:
    draws = [knob.random(Random(7)) for _ in range(3)]
    assert len(set(draws)) == 1
    rng = Random(0)
    many = [knob.random(rng) for _ in range(200)]
    assert set(many) == set(knob.choices())
    assert all(knob.validate(v) is None for v in many)


@pytest.mark.parametrize("knob", ALL_KNOBS, ids=lambda k: k.name)
def test_default_and_neighbors_are_legal_and_never_the_value_itself(knob: Knob) -> None:
    assert knob.validate(knob.default) is None
    for value in knob.choices():
        for neighbor in knob.neighbors(value):
            assert neighbor != value
            assert knob.validate(neighbor) is None
            assert abs(knob.index(neighbor) - knob.index(value)) == 1


@pytest.mark.parametrize("knob", ALL_KNOBS, ids=lambda k: k.name)
def test_knob_repr_is_pasteable_and_knobs_are_frozen_and_hashable(knob: Knob) -> None:
    namespace = {"PowerOfTwo": PowerOfTwo, "Choice": Choice, "Boolean": Boolean, "Fixed": Fixed}
    rebuilt = eval(repr(knob), namespace)  # noqa: S307 - our own repr, by design
    assert rebuilt == knob
    assert hash(rebuilt) == hash(knob)
    assert rebuilt.default == knob.default
    with pytest.raises(dataclasses.FrozenInstanceError):
        knob.name = "other"  # type: ignore[misc]


def test_knobs_with_different_settings_are_not_equal() -> None:
    assert PowerOfTwo("BLOCK_M", 16, 256) != PowerOfTwo("BLOCK_M", 16, 128)
    assert PowerOfTwo("BLOCK_M", 16, 256) != PowerOfTwo("BLOCK_M", 16, 256, default=32)
    assert Choice("n", (2, 4)) != Choice("n", (4, 2))


@pytest.mark.parametrize("name", ["", "BLOCK-M", "2x", "class", None])
def test_knob_names_must_be_identifiers(name: object) -> None:
    with pytest.raises(ScheduleError, match="knob name must be a Python identifier"):
        PowerOfTwo(name, 16, 64)  # type: ignore[arg-type]
    with pytest.raises(ScheduleError, match="knob name must be a Python identifier"):
        Boolean(name)  # type: ignore[arg-type]


def test_as_knob_value_normalizes_subclasses_and_refuses_other_types() -> None:
    class Warps(enum.IntEnum):
        FOUR = 4

    value = as_knob_value("num_warps", Warps.FOUR)
    assert value == 4 and type(value) is int
    assert as_knob_value("flag", True) is True
    with pytest.raises(ScheduleError, match="value of 'BLOCK_M' must be an int, bool or str"):
        as_knob_value("BLOCK_M", 64.0)
    with pytest.raises(ScheduleError, match="NoneType"):
        as_knob_value("BLOCK_M", None)
