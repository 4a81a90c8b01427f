"""Evolution over the cost model: breed the fastest configs, let the model pick the offspring.

The parents are the fastest measured configs (topped up with random ones while few exist).
A child is a uniform crossover of two parents (each knob from either) and/or a mutation (one
knob moved to a neighbouring value or to any other legal value); fitter parents breed more
often. Only legal, untried, new children are kept, and the model ranks them.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

from tiletune.schedules.config import Config
from tiletune.schedules.space import ConfigSpace
from tiletune.search.strategies.base import History
from tiletune.search.strategies.model import ModelSearch


@dataclass(eq=False)
class Evolution(ModelSearch):
    """`population` parents breed up to `offspring` children per batch (at most `10 *
    offspring` tries); `crossover` is the chance a child has two parents, `mutation` the chance
    a crossed child is also mutated (a child of one parent always is)."""

    name: ClassVar[str] = "evolution"

    _: KW_ONLY
    population: int = 16
    offspring: int = 128
    crossover: float = 0.5
    mutation: float = 0.5

    def candidates(self, space: ConfigSpace, history: History, exclude: set[Config]) -> list[Config]:
        """Legal untried children of the population, best predicted first."""
        parents = self.starts(space, history, self.population)
        children: dict[Config, None] = {}
        for _ in range(10 * self.offspring):
            if len(children) >= self.offspring or not parents:
                break
            child = self._child(space, parents)
            if child not in exclude and child not in children and space.is_legal(child):
                children[child] = None
        return self.rank(list(children))

    def _child(self, space: ConfigSpace, parents: list[Config]) -> Config:
        mother = self._pick(parents)
        if self.rng.random() >= self.crossover:
            return self._mutate(space, mother)
        father = self._pick(parents)
        child = Config(tuple(
            (name, value if self.rng.random() < 0.5 else father[name]) for name, value in mother.items()
        ))
        return self._mutate(space, child) if self.rng.random() < self.mutation else child

    def _pick(self, parents: list[Config]) -> Config:
        """The fitter of two random parents (parents are fastest first)."""
        return parents[min(self.rng.randrange(len(parents)), self.rng.randrange(len(parents)))]

    def _mutate(self, space: ConfigSpace, config: Config) -> Config:
        """`config` with one knob moved to a neighbouring value or to any other legal value."""
        knobs = [k for k in space.knobs if len(k.choices()) > 1]
        if not knobs:
            return config
        knob = self.rng.choice(knobs)
        value = config[knob.name]
        if self.rng.random() < 0.5:
            options = knob.neighbors(value)
        else:
            options = tuple(v for v in knob.choices() if v != value)
        return config.replace(**{knob.name: self.rng.choice(options)})
