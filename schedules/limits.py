"""Sizes and constraints every automatic schedule rule shares: powers of two, the rule that a
tile is no larger than the axis it tiles needs, and a bound on a tile's elements."""
from __future__ import annotations

import math
from typing import Callable

from tiletune.schedules.config import Config


def next_pow2(n: int) -> int:
    """The smallest power of two >= n."""
    return 1 << max(0, (int(n) - 1).bit_length())


def no_larger_than_axis(knob: str, extent: int, floor: int = 1) -> tuple[str, Callable[[Config], str | None]]:
    """A (name, check) constraint: `knob` at most the power of two covering `extent` (at least
    `floor`); a bigger tile only computes masked-off elements."""
    limit = max(floor, next_pow2(extent))
    return (
        f"{knob} no larger than its axis needs",
        lambda cfg: None if cfg[knob] <= limit else f"{knob}={cfg[knob]} tiles an axis of {extent} (at most {limit})",
    )


def tile_at_most(knobs: tuple[str, ...], limit: int, per: str) -> tuple[str, Callable[[Config], str | None]]:
    """A (name, check) constraint: the tile of `knobs` (their product) holds at most `limit`
    elements, so that it fits the registers of one program (`per` names what holds it)."""
    def check(cfg: Config) -> str | None:
        if math.prod(cfg[k] for k in knobs) <= limit:
            return None
        return f"{'x'.join(str(cfg[k]) for k in knobs)} elements per {per}, over {limit}"

    return "tile fits registers", check
