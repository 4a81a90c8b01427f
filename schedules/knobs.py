"""Knobs: one tunable value of a schedule, with a finite, ordered set of legal choices.

Every knob knows its choices, its default, a random draw and its neighbours, so search
strategies treat all knobs alike and never special-case one (the Helion fragment idea).
Values are plain ``int``, ``bool`` or ``str`` so that a config prints as code and round-trips
through JSON exactly.
"""
from __future__ import annotations

import keyword
from dataclasses import dataclass
from random import Random

from tiletune.errors import ScheduleError

KnobValue = int | bool | str
"""The value of one knob: a plain int, bool or str (so it survives JSON unchanged)."""


def _kind(value: object) -> str | None:
    """'bool', 'int' or 'str' for a legal knob value's kind, None for anything else.

    bool is tested first because Python's bool is an int: ``True == 1`` and ``hash(True) ==
    hash(1)``, yet ``True`` is not a legal BLOCK_M and ``1`` is not a legal flag.
    """
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "str"
    return None


def as_knob_value(name: str, value: object) -> KnobValue:
    """Return ``value`` as a plain int, bool or str; raise ScheduleError naming ``name`` otherwise.

    Subclasses (an ``IntEnum`` member, a ``str`` subclass) become the plain type, because their
    repr would not paste back as code and JSON would not bring the subclass back.
    """
    kind = _kind(value)
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return int(value)  # type: ignore[call-overload]
    if kind == "str":
        return str(value)
    raise ScheduleError(
        f"value of {name!r} must be an int, bool or str, got {type(value).__name__} {value!r}"
    )


def _check_name(name: object) -> None:
    # Knob names become keyword arguments in a Config's repr and constexpr names in the
    # generated kernel, so they must be plain identifiers.
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ScheduleError(f"knob name must be a Python identifier, got {name!r}")


def _got(value: object) -> str:
    # Says "a bool" out loud: "got True" alone reads like a legal int to most people.
    return f"{value!r} (a bool)" if isinstance(value, bool) else repr(value)


@dataclass(frozen=True, slots=True)
class Knob:
    """One tunable value with finite, ordered legal choices; subclasses define ``choices()``.

    Knobs are plain frozen dataclasses: their fields are their settings, so two knobs with the
    same settings are equal and hash alike, and their repr is a constructor call that pastes
    back. ``__post_init__`` checks the settings and brings them to plain, hashable values
    (through ``object.__setattr__``, the way to set a field of a frozen dataclass).
    """

    name: str

    def __post_init__(self) -> None:
        _check_name(self.name)

    def choices(self) -> tuple[KnobValue, ...]:
        """Every legal value, in a fixed order (the order of ``index`` and ``neighbors``)."""
        raise NotImplementedError(f"{type(self).__name__} does not define choices()")

    @property
    def default(self) -> KnobValue:
        """The value used when nothing better is known: the first choice, unless a subclass has
        a ``default`` field."""
        return self.choices()[0]

    def random(self, rng: Random) -> KnobValue:
        """A uniformly drawn choice; deterministic for a seeded ``rng``."""
        return rng.choice(self.choices())

    def neighbors(self, value: KnobValue) -> tuple[KnobValue, ...]:
        """The choices adjacent to ``value`` (before, then after); ScheduleError if illegal."""
        position = self.index(value)
        options = self.choices()
        return tuple(options[i] for i in (position - 1, position + 1) if 0 <= i < len(options))

    def validate(self, value: object) -> str | None:
        """None if ``value`` is legal, else a message naming the knob and what was expected."""
        if self._position(value) is None:
            return f"{self.name} must be one of {list(self.choices())!r}, got {_got(value)}"
        return None

    def index(self, value: KnobValue) -> int:
        """Position of ``value`` in ``choices()`` (a cost-model feature); raises if illegal."""
        position = self._position(value)
        if position is None:
            raise ScheduleError(self.validate(value) or f"{self.name}: illegal value {value!r}")
        return position

    def _position(self, value: object) -> int | None:
        kind = _kind(value)
        for position, choice in enumerate(self.choices()):
            if _kind(choice) == kind and choice == value:
                return position
        return None


@dataclass(frozen=True, slots=True)
class PowerOfTwo(Knob):
    """Powers of two from ``low`` to ``high`` inclusive; a tile size, a warp count.

    The default is the given one, else the middle choice (the lower one of two middles):
    smaller tiles are more often legal, and the space's default should be legal.
    """

    low: int
    high: int
    default: int | None = None  # None: the middle choice, settled at construction

    def __post_init__(self) -> None:
        _check_name(self.name)
        for label, bound in (("low", self.low), ("high", self.high)):
            if _kind(bound) != "int" or bound < 1 or bound & (bound - 1):
                raise ScheduleError(
                    f"PowerOfTwo {self.name!r}: {label} must be a power of two >= 1, got {_got(bound)}"
                )
        if self.low > self.high:
            raise ScheduleError(f"PowerOfTwo {self.name!r}: low {self.low} is greater than high {self.high}")
        object.__setattr__(self, "low", int(self.low))
        object.__setattr__(self, "high", int(self.high))
        if self.default is None:
            options = self.choices()
            object.__setattr__(self, "default", options[(len(options) - 1) // 2])
        reason = self.validate(self.default)
        if reason is not None:
            raise ScheduleError(f"PowerOfTwo {self.name!r}: bad default: {reason}")

    def choices(self) -> tuple[int, ...]:
        """low, 2*low, ..., high."""
        return tuple(1 << k for k in range(self.low.bit_length() - 1, self.high.bit_length()))

    def validate(self, value: object) -> str | None:
        """None if ``value`` is a power of two in range, else the reason."""
        if self._position(value) is None:
            return (
                f"{self.name} must be a power of two in [{self.low}, {self.high}], "
                f"got {_got(value)}"
            )
        return None


@dataclass(frozen=True, slots=True)
class Choice(Knob):
    """An explicit, ordered list of ints or of strings; neighbours are the adjacent entries.

    ``values`` may be given as a list; it is kept as a tuple of plain ints or strings. The
    default is the given one, else the first value.
    """

    values: tuple[int, ...] | tuple[str, ...]
    default: int | str | None = None  # None: the first value, settled at construction

    def __post_init__(self) -> None:
        _check_name(self.name)
        values = tuple(self.values)
        if not values:
            raise ScheduleError(f"Choice {self.name!r}: needs at least one value")
        kinds = {_kind(v) for v in values}
        # Booleans belong in Boolean; mixing ints and strings would make index() a poor feature.
        if kinds not in ({"int"}, {"str"}):
            raise ScheduleError(
                f"Choice {self.name!r}: values must be all ints or all strings, got {values!r}"
            )
        if len(set(values)) != len(values):
            raise ScheduleError(f"Choice {self.name!r}: values repeat, got {values!r}")
        object.__setattr__(self, "values", tuple(as_knob_value(self.name, v) for v in values))
        if self.default is None:
            object.__setattr__(self, "default", self.values[0])
        reason = self.validate(self.default)
        if reason is not None:
            raise ScheduleError(f"Choice {self.name!r}: bad default: {reason}")

    def choices(self) -> tuple[int, ...] | tuple[str, ...]:
        """The values, in the order given."""
        return self.values


@dataclass(frozen=True, slots=True)
class Boolean(Knob):
    """A flag: choices (False, True); only real bools are legal, not 0 or 1."""

    default: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.default, bool):
            raise ScheduleError(f"Boolean {self.name!r}: default must be True or False, got {self.default!r}")

    def choices(self) -> tuple[bool, ...]:
        """(False, True)."""
        return (False, True)

    def validate(self, value: object) -> str | None:
        """None for True or False, else the reason (1 and 0 are refused)."""
        if not isinstance(value, bool):
            return f"{self.name} must be True or False, got {value!r}"
        return None


@dataclass(frozen=True, slots=True)
class Fixed(Knob):
    """A knob pinned to one value (what ``ConfigSpace.fix`` puts in place of a tunable knob)."""

    value: KnobValue

    def __post_init__(self) -> None:
        _check_name(self.name)
        object.__setattr__(self, "value", as_knob_value(self.name, self.value))

    def choices(self) -> tuple[KnobValue, ...]:
        """The one pinned value."""
        return (self.value,)

    def validate(self, value: object) -> str | None:
        """None for the pinned value (same type too), else the reason."""
        if self._position(value) is None:
            return f"{self.name} is fixed to {self.value!r}, got {_got(value)}"
        return None
