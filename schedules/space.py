"""ConfigSpace: the knobs of one schedule plus the constraints that rule configs out.

Illegal configs are rejected here, with every reason, before anything is lowered or compiled.
Search strategies draw from a space (``sample``, ``neighbors``, ``enumerate``) and so only ever
see legal configs.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from random import Random

from tiletune.errors import IllegalConfig, ScheduleError
from tiletune.schedules.config import Config
from tiletune.schedules.knobs import Fixed, Knob, KnobValue, as_knob_value


@dataclass(frozen=True, slots=True)
class Constraint:
    """A rule over whole configs: ``check`` returns None when satisfied, else the reason.

    ``check`` only ever sees configs that set every knob of the space to a legal value, so it may
    index ``config["BLOCK_M"]`` freely. Example::

        Constraint("tile fits in registers",
                   lambda c: None if c["BLOCK_M"] * c["BLOCK_N"] <= 128 * 128
                   else f"{c['BLOCK_M']}x{c['BLOCK_N']} tile is over 128x128")
    """

    description: str
    check: Callable[[Config], str | None] = field(repr=False)

    def violation(self, config: Config) -> str | None:
        """None if ``config`` satisfies the rule, else ``"description: reason"``.

        A check that raises, or returns something other than None or a string (a bare
        ``True``/``False`` is the usual slip), is a bug in the space: ScheduleError says so.
        """
        try:
            reason = self.check(config)
        except Exception as error:  # noqa: BLE001 - any failure of user code is reported alike
            raise ScheduleError(
                f"constraint {self.description!r} raised {error!r} on {config!r}"
            ) from error
        if reason is None:
            return None
        if not isinstance(reason, str):
            raise ScheduleError(
                f"constraint {self.description!r} must return None or a reason string, "
                f"got {reason!r}"
            )
        return f"{self.description}: {reason}" if reason else self.description


@dataclass(frozen=True, slots=True)
class ConfigSpace:
    """The knobs of one schedule (names unique, in declaration order) and its constraints."""

    knobs: tuple[Knob, ...]
    constraints: tuple[Constraint, ...] = ()
    implied: tuple[tuple[str, KnobValue], ...] = ()
    """Knobs a config may leave out, with the value that leaving one out means: knobs added to
    a space after configs were recorded, whose old behaviour is that value."""
    _by_name: dict[str, Knob] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        knobs = tuple(self.knobs)
        constraints = tuple(self.constraints)
        by_name: dict[str, Knob] = {}
        for knob in knobs:
            if not isinstance(knob, Knob):
                raise ScheduleError(f"config space knobs must be Knob objects, got {knob!r}")
            if knob.name in by_name:
                raise ScheduleError(f"config space declares knob {knob.name!r} twice")
            by_name[knob.name] = knob
        for constraint in constraints:
            if not isinstance(constraint, Constraint):
                raise ScheduleError(
                    f"config space constraints must be Constraint objects, got {constraint!r}"
                )
        object.__setattr__(self, "knobs", knobs)
        object.__setattr__(self, "constraints", constraints)
        object.__setattr__(self, "implied", tuple(self.implied))
        object.__setattr__(self, "_by_name", by_name)

    @property
    def names(self) -> tuple[str, ...]:
        """Knob names in declaration order."""
        return tuple(knob.name for knob in self.knobs)

    @property
    def size(self) -> int:
        """Number of knob assignments before constraints (the product of the choice counts)."""
        return math.prod(len(knob.choices()) for knob in self.knobs)

    def knob(self, name: str) -> Knob:
        """The knob called ``name``; ScheduleError listing the known names otherwise."""
        try:
            return self._by_name[name]
        except KeyError:
            raise ScheduleError(
                f"config space has no knob {name!r}; it has {list(self.names)}"
            ) from None

    def default(self) -> Config:
        """Every knob at its default; if constraints forbid that, the first legal config.

        "First" is in ``enumerate()`` order, so the answer is deterministic. ScheduleError when
        no config at all is legal.
        """
        config = Config(tuple((knob.name, knob.default) for knob in self.knobs))
        if self.is_legal(config):
            return config
        for config in self.enumerate():
            return config
        raise ScheduleError(
            f"config space has no legal config: all {self.size} assignments violate a constraint"
        )

    def expand(self, config: Config) -> Config:
        """`config` with every implied knob it leaves out set to its implied value."""
        missing = {name: value for name, value in self.implied if name not in config and name in self._by_name}
        return Config.from_dict({**config.as_dict(), **missing}) if missing else config

    def shorten(self, config: Config) -> Config:
        """`config` without the implied knobs it sets to their implied value: the form that
        reads the same as a config recorded before those knobs existed."""
        implied = dict(self.implied)
        kept = tuple((k, v) for k, v in config.items() if k not in implied or implied[k] != v
                     or isinstance(v, bool) != isinstance(implied[k], bool))
        return config if len(kept) == len(config) else Config(kept)

    def validate(self, config: Config) -> list[str]:
        """Every reason ``config`` is illegal (empty when legal).

        Unknown knobs, missing knobs and illegal values are all listed; constraints are checked
        only when those are fine, because a constraint expects every knob to be set and legal.
        """
        reasons = self._shape_reasons(config)
        if reasons:
            return reasons
        config = self.expand(config)
        return [r for c in self.constraints if (r := c.violation(config)) is not None]

    def check(self, config: Config) -> None:
        """Raise IllegalConfig, with every reason, unless ``config`` is legal."""
        reasons = self.validate(config)
        if reasons:
            raise IllegalConfig(f"illegal config {config!r}: {'; '.join(reasons)}")

    def is_legal(self, config: Config) -> bool:
        """Whether ``config`` sets every knob, no other, to a legal value, within constraints."""
        return not self.validate(config)

    def enumerate(self) -> Iterator[Config]:
        """Every legal config, in a fixed order: the product of the choices, last knob fastest."""
        names = self.names
        for combination in itertools.product(*(knob.choices() for knob in self.knobs)):
            config = Config(tuple(zip(names, combination)))
            if self.is_legal(config):
                yield config

    def sample(self, rng: Random, n: int, exclude: Iterable[Config] = ()) -> list[Config]:
        """Up to ``n`` distinct legal configs not in ``exclude``; deterministic for a seeded rng.

        Draws at random first; when a bounded number of tries (``10 * n + 100``) does not yield
        enough (a small space, tight constraints), the rest is drawn from the remaining legal
        configs by enumeration. Returns fewer than ``n`` only when fewer are left.
        """
        if n < 0:
            raise ScheduleError(f"sample: n must be >= 0, got {n}")
        excluded = frozenset(exclude)
        chosen: list[Config] = []
        seen: set[Config] = set()
        for _ in range(10 * n + 100):
            if len(chosen) >= n:
                return chosen
            config = Config(tuple((knob.name, knob.random(rng)) for knob in self.knobs))
            if config in seen or config in excluded:
                continue
            seen.add(config)  # illegal draws too, so that each is checked only once
            if self.is_legal(config):
                chosen.append(config)
        if len(chosen) >= n:
            return chosen
        # Reservoir sampling over what is left keeps memory at O(n) however large the space.
        wanted = n - len(chosen)
        reservoir: list[Config] = []
        count = 0
        for config in self.enumerate():
            if config in seen or config in excluded:
                continue
            count += 1
            if len(reservoir) < wanted:
                reservoir.append(config)
            else:
                slot = rng.randrange(count)
                if slot < wanted:
                    reservoir[slot] = config
        return chosen + reservoir

    def neighbors(self, config: Config) -> list[Config]:
        """Legal configs that change one knob of ``config`` to one of that knob's neighbours.

        ``config`` itself may break a constraint (annealing can start anywhere), but must set
        every knob to a legal value: IllegalConfig otherwise.
        """
        reasons = self._shape_reasons(config)
        if reasons:
            raise IllegalConfig(f"illegal config {config!r}: {'; '.join(reasons)}")
        config = self.expand(config)
        result = []
        for knob in self.knobs:
            for value in knob.neighbors(config[knob.name]):
                candidate = config.replace(**{knob.name: value})
                if self.is_legal(candidate):
                    result.append(candidate)
        return result

    def from_json(self, text: str) -> Config:
        """Parse a config's JSON and check it against this space; IllegalConfig if either fails."""
        try:
            config = Config.from_json(text)
        except IllegalConfig:
            raise
        except ScheduleError as error:
            raise IllegalConfig(str(error)) from None
        self.check(config)
        return config

    def with_constraint(self, constraint: Constraint) -> ConfigSpace:
        """A new space with one more constraint."""
        return ConfigSpace(self.knobs, (*self.constraints, constraint), self.implied)

    def merge(self, other: ConfigSpace) -> ConfigSpace:
        """The union of two spaces' knobs and constraints.

        A name both declare must be the same knob (equal), else ScheduleError.
        """
        knobs = list(self.knobs)
        for knob in other.knobs:
            mine = self._by_name.get(knob.name)
            if mine is None:
                knobs.append(knob)
            elif mine != knob:
                raise ScheduleError(
                    f"merge: knob {knob.name!r} differs between spaces: {mine!r} vs {knob!r}"
                )
        implied = dict(other.implied) | dict(self.implied)
        return ConfigSpace(tuple(knobs), (*self.constraints, *other.constraints), tuple(implied.items()))

    def fix(self, **values: KnobValue) -> ConfigSpace:
        """A new space with some knobs pinned to one value each (the value must be legal)."""
        pinned: dict[str, Knob] = {}
        for name, value in values.items():
            reason = self.knob(name).validate(value)
            if reason is not None:
                raise ScheduleError(f"fix: {reason}")
            pinned[name] = Fixed(name, as_knob_value(name, value))
        knobs = tuple(pinned.get(knob.name, knob) for knob in self.knobs)
        return ConfigSpace(knobs, self.constraints, self.implied)

    def _shape_reasons(self, config: Config) -> list[str]:
        # Everything but the constraints: names known and complete, each value legal.
        if not isinstance(config, Config):
            raise ScheduleError(f"expected a Config, got {type(config).__name__} {config!r}")
        reasons = [
            f"unknown knob {name!r} (space has {list(self.names)})"
            for name in config.keys()
            if name not in self._by_name
        ]
        implied = dict(self.implied)
        for knob in self.knobs:
            if knob.name not in config:
                if knob.name in implied:
                    continue
                reasons.append(f"missing knob {knob.name!r}")
            elif (reason := knob.validate(config[knob.name])) is not None:
                reasons.append(reason)
        return reasons
