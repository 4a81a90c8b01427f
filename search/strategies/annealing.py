"""Simulated annealing over the cost model (TVM's `sa_model_optimizer` idea).

Several chains walk the space one neighbour at a time (`ConfigSpace.neighbors`: one knob moved
to an adjacent value), scored by the model rather than measured, so a walk of hundreds of steps
costs milliseconds. A move from score `s` to `s'` is taken with probability
`min(1, exp((s' - s) / T))`; `T` falls linearly to zero, so the chains roam first and climb at
the end. The best untried configs seen on the way are the candidates.
"""
from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import numpy as np

from tiletune.schedules.config import Config
from tiletune.schedules.space import ConfigSpace
from tiletune.search.strategies.base import History
from tiletune.search.strategies.model import ModelSearch


@dataclass(eq=False)
class SimulatedAnnealing(ModelSearch):
    """`chains` annealing walks of `steps` moves each; half the chains start from the fastest
    measured configs, the rest from random ones.

    `temperature` is the starting temperature in units of the spread (standard deviation) of
    the model's scores over the measured configs, so it means the same whatever the scale of
    the scores.
    """

    name: ClassVar[str] = "annealing"

    _: KW_ONLY
    chains: int = 4
    steps: int = 60
    temperature: float = 1.0

    def candidates(self, space: ConfigSpace, history: History, exclude: set[Config]) -> list[Config]:
        """Untried configs the chains visited, best scored first."""
        current = self.starts(space, history, self.chains, fastest=self.chains // 2)
        scores = list(self.scores(current))
        seen = {c: s for c, s in zip(current, scores) if c not in exclude}
        start = self.temperature * self._spread(history)
        for step in range(self.steps):
            temperature = max(start * (1 - step / self.steps), 1e-9)
            moves = [self._move(space, c) for c in current]
            for i, (move, score) in enumerate(zip(moves, self.scores(moves))):
                if move not in exclude:
                    seen[move] = score
                gain = score - scores[i]
                if gain >= 0 or self.rng.random() < math.exp(gain / temperature):
                    current[i], scores[i] = move, score
        return sorted(seen, key=lambda c: -seen[c])  # stable: ties in the order first seen

    def _move(self, space: ConfigSpace, config: Config) -> Config:
        """A random legal neighbour (the config itself when it has none)."""
        neighbours = space.neighbors(config)
        return self.rng.choice(neighbours) if neighbours else config

    def _spread(self, history: History) -> float:
        """How far apart the model's scores of the measured configs are (1.0 when they are not)."""
        spread = float(np.std(self.scores([c for c, _, _ in history.ok]))) if history.ok else 0.0
        return spread if spread > 0 else 1.0
