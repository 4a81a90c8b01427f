"""Search strategies: given the space and what was measured, propose the next batch.

One small interface, `Strategy.propose`, so the tuner never special-cases a strategy:

- `RandomSearch` ("random"): distinct random legal configs, the space's default first;
- `GridSearch` ("grid"): every legal config once, in enumeration order, the default first;
- `ModelGuided` ("model"): random until a few measurements exist, then an XGBoost ranking
  model trained on them picks the most promising of a large random pool;
- `SimulatedAnnealing` ("annealing"): the same model, searched by annealing chains that walk
  the knobs' neighbours (TVM's approach);
- `Evolution` ("evolution"): the same model ranks offspring (crossover and mutation) of the
  fastest measured configs.

The three model-driven strategies share `ModelSearch` (warm-up, fitting with transfer rows,
and an exploration share of random picks so that a wrong model cannot starve the search).
Every strategy proposes only legal, untried, distinct configs, and fewer than asked only when
the space is exhausted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tiletune.errors import UsageError
from tiletune.schedules.config import Config
from tiletune.search.strategies.annealing import SimulatedAnnealing
from tiletune.search.strategies.base import History, Strategy
from tiletune.search.strategies.evolution import Evolution
from tiletune.search.strategies.grid import GridSearch
from tiletune.search.strategies.model import ModelGuided, ModelSearch
from tiletune.search.strategies.random_search import RandomSearch

__all__ = [
    "STRATEGIES",
    "Evolution",
    "GridSearch",
    "History",
    "ModelGuided",
    "ModelSearch",
    "RandomSearch",
    "Registered",
    "SimulatedAnnealing",
    "Strategy",
    "make_strategy",
]


@dataclass(frozen=True, slots=True)
class Registered:
    """A strategy as `--strategy NAME` knows it: what it does, in a phrase, and how to make it."""

    summary: str
    make: Callable[[Callable[[Config], dict], int], Strategy]  # (tile_facts, seed) -> a new strategy


#: Every strategy, by name: the one list that the CLI's help, option checks and benchmarks read.
STRATEGIES: dict[str, Registered] = {
    "model": Registered("an XGBoost-ranked random pool", ModelGuided),
    "random": Registered("distinct random configs", lambda tile_facts, seed: RandomSearch(seed)),
    "grid": Registered("every config once, in order", lambda tile_facts, seed: GridSearch()),
    "annealing": Registered("walks through neighbouring configs, ranked by the model", SimulatedAnnealing),
    "evolution": Registered("offspring of the fastest configs, ranked by the model", Evolution),
}


def make_strategy(name: str, tile_facts: Callable[[Config], dict], seed: int) -> Strategy:
    """The strategy registered under `name`."""
    if name not in STRATEGIES:
        raise UsageError(f"unknown strategy '{name}'; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name].make(tile_facts, seed)
