"""Uniformly random legal configs: the baseline, and the exploration share of the others."""
from __future__ import annotations

from random import Random

from tiletune.schedules.config import Config
from tiletune.schedules.space import ConfigSpace
from tiletune.search.strategies.base import History


class RandomSearch:
    """Uniformly random legal configs; the default config first."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = Random(seed)

    def propose(self, space: ConfigSpace, history: History, n: int) -> list[Config]:
        """Random untried configs."""
        picks: list[Config] = []
        default = space.default()
        if default not in history.tried:
            picks.append(default)
        picks += space.sample(self.rng, max(0, n - len(picks)), exclude=history.tried | set(picks))
        return picks[:n]
