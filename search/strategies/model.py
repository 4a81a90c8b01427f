"""Search over the cost model: what the model-driven strategies share, and `ModelGuided`.

`ModelSearch` owns the rules every model-driven strategy follows, so each of them only says
how it finds promising candidates (`candidates`):

- random warm-up until `warmup` measurements (or `warmup` prior rows) exist, unless the search
  uses the shipped cold-start prior (`strategies.prior`; `ModelGuided` by default, annealing
  and evolution with `use_prior=True`): then the prior ranks the first batch (spread over the
  space, not eight variants of one tile) and keeps weighing in, less with every measurement of
  the workload's own; rows of other workloads from the DB train the workload's own model
  beside its measurements rather than replace the prior;
- the model is refit on the history plus `prior` rows of other workloads before each batch;
- the default config first, while untried (with the prior, the prior ranks it like any other);
- of the rest, the top `1 - explore` share is the model's best candidates and the remainder is
  random, so that a wrong model cannot starve the search; random configs also fill the batch
  whenever the candidates run short.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from random import Random
from typing import Callable, ClassVar

import numpy as np

from tiletune.schedules.config import Config
from tiletune.schedules.space import ConfigSpace
from tiletune.search.cost_model import XGBCostModel
from tiletune.search.features import featurize
from tiletune.search.strategies.base import History
from tiletune.search.strategies.prior import ColdStartPrior, blend, diverse_top, shipped_prior
from tiletune.search.strategies.random_search import RandomSearch

# Feature rows kept between batches (features depend on the config only); cleared when full.
FEATURE_CACHE = 50_000


@dataclass(eq=False)
class ModelSearch:
    """Base of the strategies that search over the cost model; see the module docstring.

    `prior` holds (features, latency, workload) rows of other workloads (set by the tuner from
    the DB): with them the model ranks from the first batch, since what was learned on other
    shapes and operators transfers through the shared features. Subclasses add their own
    settings as keyword-only fields.

    With `use_prior` (`ModelGuided`'s default), the cold-start prior (`cold_start`, the shipped
    one unless set) ranks until the workload's own model is trained, and then counts for
    `prior_half_life / (prior_half_life + own rows)` of each score.
    """

    name: ClassVar[str] = "model-search"

    tile_facts: Callable[[Config], dict]
    seed: int = 0
    _: KW_ONLY
    warmup: int = 8
    explore: float = 0.25
    use_prior: bool = False
    prior_half_life: float = 16.0
    prior: list[tuple[np.ndarray, float, str]] = field(default_factory=list, init=False, repr=False)
    cold_start: ColdStartPrior | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = Random(self.seed)
        self.random = RandomSearch(self.seed)
        # One thread: the training sets are small, the compile workers have the other cores,
        # and on a busy machine xgboost's thread hand-offs cost more than the work (10x or more).
        self.model = XGBCostModel(seed=self.seed, nthread=1)
        self._features: dict[Config, np.ndarray] = {}
        self._own_rows = 0

    @property
    def cold_prior(self) -> ColdStartPrior | None:
        """The cold-start prior (None when off or unusable). Rows of other workloads from the DB
        do not replace it: they train the workload's own model, which takes over from the prior
        as the workload's own measurements accumulate."""
        if not self.use_prior:
            return None
        return self.cold_start if self.cold_start is not None else shipped_prior()

    def features(self, config: Config) -> np.ndarray:
        """Knob and tile features; static compile facts are unknown before compiling, so the
        model ranks on what it can know for every candidate alike."""
        row = self._features.get(config)
        if row is None:
            if len(self._features) >= FEATURE_CACHE:
                self._features.clear()
            row = self._features[config] = featurize(config.as_dict(), self.tile_facts(config), {})
        return row

    def scores(self, configs: list[Config]) -> np.ndarray:
        """The model's score of each config, higher is better."""
        if not configs:
            return np.zeros(0)
        X = np.stack([self.features(c) for c in configs])
        cold = self.cold_prior
        if cold is None:
            return self.model.predict(X)
        own = self.model.predict(X) if self.model.is_trained else None
        return blend(cold.scores(X), own, self._own_rows, self.prior_half_life)

    def rank(self, configs: list[Config]) -> list[Config]:
        """`configs` best predicted first (ties keep their order)."""
        scores = self.scores(configs)
        return [configs[i] for i in sorted(range(len(configs)), key=lambda i: (-scores[i], i))]

    def starts(self, space: ConfigSpace, history: History, k: int, fastest: int | None = None) -> list[Config]:
        """`k` configs to search from: the `fastest` (default all `k`) fastest measured ones,
        topped up with random ones."""
        best = history.fastest(k if fastest is None else fastest)
        return best + space.sample(self.rng, k - len(best), exclude=best)

    def fit(self, history: History) -> None:
        """Retrain the model on the measured history plus the prior rows of other workloads."""
        rows = [(f, lat, "prior:" + g) for f, lat, g in self.prior]
        rows += [(f, lat, "self") for _, lat, f in history.ok]
        self._own_rows = len(history.ok)
        if not rows:
            return
        groups = {g: i for i, g in enumerate(dict.fromkeys(g for _, _, g in rows))}
        self.model.fit(
            np.stack([f for f, _, _ in rows]),
            np.array([lat for _, lat, _ in rows]),
            np.array([groups[g] for _, _, g in rows], dtype=np.int64),
        )

    def candidates(self, space: ConfigSpace, history: History, exclude: set[Config]) -> list[Config]:
        """Promising legal configs outside `exclude`, best first; the subclass's search."""
        raise NotImplementedError(f"{type(self).__name__} does not define candidates()")

    def propose(self, space: ConfigSpace, history: History, n: int) -> list[Config]:
        """The default config first (unless the cold-start prior ranks), the model's best
        candidates, then random ones."""
        cold = self.cold_prior is not None
        if not cold and len(history.ok) < self.warmup and len(self.prior) < self.warmup:
            return self.random.propose(space, history, n)
        picks: list[Config] = []
        default = space.default()
        # the prior knows more than one fixed config: the default takes its rank like any other
        if n > 0 and default not in history.tried and not cold:
            picks.append(default)
        if len(picks) < n:
            self.fit(history)
            exclude = history.tried | set(picks)
            wanted = max(1, round((n - len(picks)) * (1 - self.explore)))
            found = dict.fromkeys(self.candidates(space, history, exclude))  # distinct, in order
            ranked = [c for c in found if c not in exclude and space.is_legal(c)]
            if cold and len(history.ok) < self.warmup:
                ranked = diverse_top(ranked, wanted)  # the prior's guesses, spread over the space
            picks += ranked[:wanted]
        picks += space.sample(self.rng, max(0, n - len(picks)), exclude=history.tried | set(picks))
        return picks[:n]


@dataclass(eq=False)
class ModelGuided(ModelSearch):
    """The cost model ranks a pool of untried configs: the one-knob neighbours of the `elite`
    fastest measured configs (where the best ones usually are) and `pool` random ones (so the
    search is not confined to their neighbourhood). The random share of each batch is 10%: the
    pool already spans the space, and every random trial is one the model did not choose."""

    name: ClassVar[str] = "model"

    _: KW_ONLY
    explore: float = 0.1
    use_prior: bool = True  # annealing and evolution walk from measured configs: they start random
    pool: int = 512
    elite: int = 4

    def candidates(self, space: ConfigSpace, history: History, exclude: set[Config]) -> list[Config]:
        """Neighbours of the fastest configs and a random pool, best predicted first."""
        near = [n for c in history.fastest(self.elite) for n in space.neighbors(c) if n not in exclude]
        # cold, the prior's first ranking is all the search knows: rank a larger pool once
        size = self.pool * 4 if not history.ok and self.cold_prior is not None else self.pool
        pool = space.sample(self.rng, size, exclude=exclude)
        return self.rank(list(dict.fromkeys(near + pool)))
