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
    """One tunable value with finite, ordered legal choices; subclasses define ``choices()``."""

    name: str

    def __post_init__(self) -> None:
        _check_name(self.name)

    def choices(self) -> tuple[KnobValue, ...]:
        """Every legal value, in a fixed order (the order of ``index`` and ``neighbors``)."""
        raise NotImplementedError(f"{type(self).__name__} does not define choices()")

    def default(self) -> KnobValue:
        """The value used when nothing better is known: the first choice unless overridden."""
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


@dataclass(frozen=True, slots=True, init=False, repr=False)
class PowerOfTwo(Knob):
    """Powers of two from ``low`` to ``high`` inclusive; a tile size, a warp count.

    The default is the given one, else the middle choice (the lower one of two middles):
    smaller tiles are more often legal, and the space's default should be legal.
    """

    low: int
    high: int
    default_value: int

    def __init__(self, name: str, low: int, high: int, default: int | None = None) -> None:
        _check_name(name)
        for label, bound in (("low", low), ("high", high)):
            if _kind(bound) != "int" or bound < 1 or bound & (bound - 1):
                raise ScheduleError(
                    f"PowerOfTwo {name!r}: {label} must be a power of two >= 1, got {_got(bound)}"
                )
        if low > high:
            raise ScheduleError(f"PowerOfTwo {name!r}: low {low} is greater than high {high}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "low", int(low))
        object.__setattr__(self, "high", int(high))
        options = self.choices()
        if default is None:
            default = options[(len(options) - 1) // 2]
        object.__setattr__(self, "default_value", default)
        reason = self.validate(default)
        if reason is not None:
            raise ScheduleError(f"PowerOfTwo {name!r}: bad default: {reason}")

    def __repr__(self) -> str:
        return f"PowerOfTwo({self.name!r}, {self.low}, {self.high}, default={self.default_value})"

    def choices(self) -> tuple[int, ...]:
        """low, 2*low, ..., high."""
        return tuple(1 << k for k in range(self.low.bit_length() - 1, self.high.bit_length()))

    def default(self) -> int:
        """The given default, else the middle choice."""
        return self.default_value

    def validate(self, value: object) -> str | None:
        """None if ``value`` is a power of two in range, else the reason."""
        if self._position(value) is None:
            return (
                f"{self.name} must be a power of two in [{self.low}, {self.high}], "
                f"got {_got(value)}"
            )
        return None


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Choice(Knob):
    """An explicit, ordered list of ints or of strings; neighbours are the adjacent entries."""

    values: tuple[int, ...] | tuple[str, ...]
    default_value: int | str

    def __init__(
        self,
        name: str,
        values: tuple[int, ...] | tuple[str, ...] | list[int] | list[str],
        default: int | str | None = None,
    ) -> None:
        _check_name(name)
        values = tuple(values)
        if not values:
            raise ScheduleError(f"Choice {name!r}: needs at least one value")
        kinds = {_kind(v) for v in values}
        # Booleans belong in Boolean; mixing ints and strings would make index() a poor feature.
        if kinds not in ({"int"}, {"str"}):
            raise ScheduleError(
                f"Choice {name!r}: values must be all ints or all strings, got {values!r}"
            )
        if len(set(values)) != len(values):
            raise ScheduleError(f"Choice {name!r}: values repeat, got {values!r}")
        plain = tuple(as_knob_value(name, v) for v in values)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "values", plain)
        object.__setattr__(self, "default_value", plain[0] if default is None else default)
        reason = self.validate(self.default_value)
        if reason is not None:
            raise ScheduleError(f"Choice {name!r}: bad default: {reason}")

    def __repr__(self) -> str:
        return f"Choice({self.name!r}, {self.values!r}, default={self.default_value!r})"

    def choices(self) -> tuple[int, ...] | tuple[str, ...]:
        """The values, in the order given."""
        return self.values

    def default(self) -> int | str:
        """The given default, else the first value."""
        return self.default_value


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Boolean(Knob):
    """A flag: choices (False, True); only real bools are legal, not 0 or 1."""

    default_value: bool

    def __init__(self, name: str, default: bool = False) -> None:
        _check_name(name)
        if not isinstance(default, bool):
            raise ScheduleError(f"Boolean {name!r}: default must be True or False, got {default!r}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "default_value", default)

    def __repr__(self) -> str:
        return f"Boolean({self.name!r}, default={self.default_value!r})"

    def choices(self) -> tuple[bool, ...]:
        """(False, True)."""
        return (False, True)

    def default(self) -> bool:
        """The given default (False unless told)."""
        return self.default_value

    def validate(self, value: object) -> str | None:
        """None for True or False, else the reason (1 and 0 are refused)."""
        if not isinstance(value, bool):
            return f"{self.name} must be True or False, got {value!r}"
        return None


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Fixed(Knob):
    """A knob pinned to one value (what ``ConfigSpace.fix`` puts in place of a tunable knob)."""

    value: KnobValue

    def __init__(self, name: str, value: KnobValue) -> None:
        _check_name(name)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "value", as_knob_value(name, value))

    def __repr__(self) -> str:
        return f"Fixed({self.name!r}, {self.value!r})"

    def choices(self) -> tuple[KnobValue, ...]:
        """The one pinned value."""
        return (self.value,)

    def validate(self, value: object) -> str | None:
        """None for the pinned value (same type too), else the reason."""
        if self._position(value) is None:
            return f"{self.name} is fixed to {self.value!r}, got {_got(value)}"
        return None
