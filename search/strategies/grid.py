"""The whole space in a fixed order: exhaustive, for small spaces and reference sweeps."""
from __future__ import annotations

from tiletune.schedules.config import Config
from tiletune.schedules.space import ConfigSpace
from tiletune.search.strategies.base import History


class GridSearch:
    """Every legal config once, in the space's enumeration order; the default config first.

    Untried configs are looked for from the start of the enumeration at each call, so a history
    resumed from the DB (tried in any order) is skipped correctly.
    """

    name = "grid"

    def __init__(self, seed: int = 0) -> None:
        del seed  # the order is fixed; the seed is accepted so every strategy is made alike

    def propose(self, space: ConfigSpace, history: History, n: int) -> list[Config]:
        """The next `n` untried configs in enumeration order ([] once all are tried)."""
        picks: list[Config] = []
        default = space.default()
        if n > 0 and default not in history.tried:
            picks.append(default)
        for config in space.enumerate():
            if len(picks) >= n:
                break
            if config not in history.tried and config != default:
                picks.append(config)
        return picks
