"""Search strategies: given the space and what was measured, propose the next batch.

One small interface, `Strategy.propose`, so the tuner never special-cases a strategy:

- `RandomSearch`: distinct random legal configs, the space's default first;
- `ModelGuided`: random until a few measurements exist, then an XGBoost ranking model trained
  on them picks the most promising of a large random pool, keeping an exploration share of
  random picks so that a wrong model cannot starve the search.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from random import Random
from typing import Callable, Protocol

import numpy as np

from tiletune.errors import UsageError
from tiletune.schedules.config import Config
from tiletune.schedules.space import ConfigSpace
from tiletune.search.cost_model import XGBCostModel
from tiletune.search.features import featurize


@dataclass
class History:
    """What the search knows: every config tried (any status) and the latencies of the ok
    ones, with the features they were measured with."""

    tried: set[Config] = field(default_factory=set)
    ok: list[tuple[Config, float, np.ndarray]] = field(default_factory=list)

    def add(self, config: Config, latency_us: float | None, features: np.ndarray | None) -> None:
        """Record one outcome (latency None for a failure)."""
        self.tried.add(config)
        if latency_us is not None and features is not None:
            self.ok.append((config, latency_us, features))

    @property
    def best(self) -> tuple[Config, float] | None:
        """The fastest config so far and its latency."""
        if not self.ok:
            return None
        config, latency, _ = min(self.ok, key=lambda row: row[1])
        return config, latency


class Strategy(Protocol):
    """Proposes the next `n` configs to measure, none of them tried before."""

    name: str

    def propose(self, space: ConfigSpace, history: History, n: int) -> list[Config]:
        """Up to `n` untried legal configs (fewer only when the space is exhausted)."""
        ...


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
        picks += space.sample(self.rng, n - len(picks), exclude=history.tried | set(picks))
        return picks[:n]


class ModelGuided:
    """Random warm-up, then the cost model ranks a random pool; `explore` of each batch stays
    random.

    `prior` holds (features, latency, workload) rows of other workloads (set by the tuner from
    the DB): with them the model ranks from the first batch, since what was learned on other
    shapes and operators transfers through the shared features.
    """

    name = "model"

    def __init__(
        self,
        tile_facts: Callable[[Config], dict],
        seed: int = 0,
        *,
        warmup: int = 8,
        pool: int = 512,
        explore: float = 0.25,
    ) -> None:
        self.tile_facts = tile_facts
        self.rng = Random(seed)
        self.random = RandomSearch(seed)
        self.model = XGBCostModel(seed=seed)
        self.warmup, self.pool, self.explore = warmup, pool, explore
        self.prior: list[tuple[np.ndarray, float, str]] = []

    def features(self, config: Config) -> np.ndarray:
        """Knob and tile features; static compile facts are unknown before compiling, so the
        model ranks on what it can know for every candidate alike."""
        return featurize(config.as_dict(), self.tile_facts(config), {})

    def propose(self, space: ConfigSpace, history: History, n: int) -> list[Config]:
        """Model-ranked untried configs with an exploration share (the default config first)."""
        usable_prior = len(self.prior) >= self.warmup
        if len(history.ok) < self.warmup and not usable_prior:
            return self.random.propose(space, history, n)
        picks: list[Config] = []
        default = space.default()
        if default not in history.tried:
            picks.append(default)
        rows = [(f, lat, "prior:" + g) for f, lat, g in self.prior] + [(f, lat, "self") for _, lat, f in history.ok]
        groups = {g: i for i, g in enumerate(dict.fromkeys(g for _, _, g in rows))}
        self.model.fit(
            np.stack([f for f, _, _ in rows]),
            np.array([lat for _, lat, _ in rows]),
            np.array([groups[g] for _, _, g in rows], dtype=np.int64),
        )
        pool = space.sample(self.rng, self.pool, exclude=history.tried | set(picks))
        if not pool:
            return picks
        scores = self.model.predict(np.stack([self.features(c) for c in pool]))
        order = sorted(range(len(pool)), key=lambda i: (-scores[i], i))
        n_model = max(1, round((n - len(picks)) * (1 - self.explore)))
        picks += [pool[i] for i in order[:n_model]]
        rest = [pool[i] for i in order[n_model:]]
        self.rng.shuffle(rest)
        return (picks + rest)[:n]


STRATEGIES = ("model", "random")


def make_strategy(name: str, tile_facts: Callable[[Config], dict], seed: int) -> Strategy:
    """The strategy registered under `name`."""
    if name == "random":
        return RandomSearch(seed)
    if name == "model":
        return ModelGuided(tile_facts, seed)
    raise UsageError(f"unknown strategy '{name}'; choose one of {', '.join(STRATEGIES)}")
