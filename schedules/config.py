"""Config: one assignment of values to the knobs of a schedule; frozen, hashable, JSON-exact.

A config is just data. Whether it is legal for a schedule is the business of
``ConfigSpace`` (``space.py``); here we only guarantee that names are strings, values are plain
int/bool/str, and that ``repr`` and ``to_json`` bring back an equal config.
"""
from __future__ import annotations

import json
import keyword
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from tiletune.errors import ScheduleError
from tiletune.schedules.knobs import KnobValue, as_knob_value

_MISSING = object()


@dataclass(frozen=True, slots=True, eq=False)
class Config:
    """A frozen knob assignment, kept sorted by name: ``Config.of(BLOCK_M=64, num_warps=4)``.

    ``Config(values)`` also takes any iterable of ``(name, value)`` pairs or a mapping; the pairs
    are sorted, so the order they come in never matters. Equality and hashing tell ``True`` from
    ``1`` (Python alone does not), so a flag and a tile size never collide in a set.
    """

    values: tuple[tuple[str, KnobValue], ...]

    def __post_init__(self) -> None:
        raw = self.values
        pairs = raw.items() if isinstance(raw, Mapping) else raw
        checked: dict[str, KnobValue] = {}
        for pair in pairs:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise ScheduleError(f"config entries must be (name, value) pairs, got {pair!r}")
            name, value = pair
            if not isinstance(name, str) or not name:
                raise ScheduleError(f"config knob names must be non-empty strings, got {name!r}")
            if name in checked:
                raise ScheduleError(f"config names knob {name!r} twice")
            checked[name] = as_knob_value(name, value)
        object.__setattr__(self, "values", tuple(sorted(checked.items())))

    @classmethod
    def of(cls, **values: KnobValue) -> Config:
        """The config with these knob values: ``Config.of(BLOCK_M=64, num_warps=4)``."""
        return cls(tuple(values.items()))

    @classmethod
    def from_dict(cls, values: Mapping[str, KnobValue]) -> Config:
        """The config with the values of a ``{name: value}`` mapping."""
        return cls(tuple(values.items()))

    @classmethod
    def from_json(cls, text: str) -> Config:
        """Parse ``to_json`` output: a JSON object of name -> int, bool or str.

        Anything else (another JSON type, a float, NaN, null, a nested value, a repeated key)
        raises ScheduleError naming the key. Strings stay strings: nothing is ever evaluated.
        """
        if not isinstance(text, str):
            raise ScheduleError(f"config JSON must be a str, got {type(text).__name__}")
        try:
            data = json.loads(
                text,
                object_pairs_hook=_object_without_repeats,
                # NaN and Infinity (which Python's json accepts) come back as markers, so that
                # the error names the key instead of passing on a float.
                parse_constant=_NotAKnobValue,
            )
        except (ValueError, RecursionError) as error:
            # ValueError covers bad JSON and ints longer than Python's digit limit;
            # RecursionError a hostile nesting depth.
            raise ScheduleError(f"config JSON is not valid: {error}") from None
        if not isinstance(data, dict):
            raise ScheduleError(
                "config JSON must be an object of knob name -> int, bool or str, "
                f"got {_json_type(data)}"
            )
        for name, value in data.items():
            if isinstance(value, (dict, list, float, _NotAKnobValue)) or value is None:
                raise ScheduleError(
                    f"config JSON: value of {name!r} must be an int, bool or str, "
                    f"got {_json_type(value)} {value!r}"
                )
        return cls(tuple(data.items()))

    def to_json(self) -> str:
        """Canonical JSON, keys sorted and no spaces; ``from_json`` gives back an equal config."""
        return json.dumps(dict(self.values), sort_keys=True, separators=(",", ":"))

    def __repr__(self) -> str:
        if all(name.isidentifier() and not keyword.iskeyword(name) for name, _ in self.values):
            inner = ", ".join(f"{name}={value!r}" for name, value in self.values)
            return f"Config.of({inner})"
        # A name that is not an identifier cannot be a keyword argument; stay pasteable anyway.
        return f"Config.from_dict({dict(self.values)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def _identity(self) -> tuple[tuple[str, str, KnobValue], ...]:
        # The type name rides along so that True and 1 (equal in Python) stay different configs.
        return tuple((name, type(value).__name__, value) for name, value in self.values)

    def __getitem__(self, name: str) -> KnobValue:
        value = self.get(name, _MISSING)
        if value is _MISSING:
            raise KeyError(f"config has no knob {name!r}; it has {list(self.keys())}")
        return value  # type: ignore[return-value]

    def get(self, name: str, default: KnobValue | None = None) -> KnobValue | None:
        """The value of knob ``name``, or ``default`` when the config does not set it."""
        for key, value in self.values:
            if key == name:
                return value
        return default

    def __contains__(self, name: object) -> bool:
        return any(key == name for key, _ in self.values)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.values)

    def keys(self) -> tuple[str, ...]:
        """Knob names, sorted (so ``dict(config)`` and ``**config`` work)."""
        return tuple(name for name, _ in self.values)

    def items(self) -> tuple[tuple[str, KnobValue], ...]:
        """``(name, value)`` pairs, sorted by name."""
        return self.values

    def as_dict(self) -> dict[str, KnobValue]:
        """A new ``{name: value}`` dict; changing it leaves the config alone."""
        return dict(self.values)

    def replace(self, **changes: KnobValue) -> Config:
        """A copy with some knobs changed; a name the config lacks raises (typos fail loudly)."""
        unknown = sorted(set(changes) - set(self.keys()))
        if unknown:
            raise ScheduleError(
                f"replace: config has no knob {', '.join(map(repr, unknown))}; "
                f"it has {list(self.keys())}"
            )
        return Config.from_dict({**self.as_dict(), **changes})


class _NotAKnobValue(str):
    """NaN, Infinity or -Infinity kept as its text, refused with the key it sits under."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def _object_without_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json.loads would silently keep the last of two equal keys; a config must not hide one.
    result: dict[str, object] = {}
    for name, value in pairs:
        if name in result:
            raise ScheduleError(f"config JSON names knob {name!r} twice")
        result[name] = value
    return result


def _json_type(value: object) -> str:
    if isinstance(value, _NotAKnobValue):
        return "a non-finite number"
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(
        type(value), type(value).__name__
    )
