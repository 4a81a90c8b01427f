"""Sizes and constraints every automatic schedule rule shares: powers of two, and the rule that a
tile is no larger than the axis it tiles needs."""
from __future__ import annotations

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
