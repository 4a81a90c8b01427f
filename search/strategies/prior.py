"""The cold-start prior: a ranking model trained offline on recorded sweeps of other workloads,
shipped with tiletune, that ranks a workload's configs before any of them was measured.

A tuner that starts with no history of its workload has nothing of its own to fit a cost model
on; without a prior its first batch is random (rows of other workloads from the DB, where there
are any, train the search's own model beside the prior: `strategies.model`). The shipped prior
(`search/priors/cold-start.json`, XGBoost's own JSON format, with `cold-start.card.json`
saying what it was trained on, how, on which features and with which versions;
`bench/train_prior.py` trains it) ranks the candidates on the same features the search's own
model uses, so the first batch is already the prior's best guesses, and it keeps informing the
ranking (`blend`) until the workload's own measurements dominate.

A prior trained on other features than today's `FEATURE_NAMES` (a knob added since) is refused
with a warning, and the search falls back to its random warm-up: a stale prior must never rank,
nor crash a search.
"""
from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from tiletune.errors import UsageError
from tiletune.schedules.config import Config
from tiletune.search.cost_model import XGBCostModel

__all__ = ["PRIOR_CARD", "PRIOR_MODEL", "ColdStartPrior", "blend", "diverse_top", "knob_distance", "shipped_prior"]

# resolve(): in the editable install this file is a link into the checkout, where priors/ lives
PRIOR_DIR = Path(__file__).resolve().parent.parent / "priors"
PRIOR_MODEL = PRIOR_DIR / "cold-start.json"
PRIOR_CARD = PRIOR_DIR / "cold-start.card.json"


class ColdStartPrior:
    """A trained ranking model and its card (what it was trained on); scores are higher for
    configs the prior expects to be faster, and mean something only within one workload."""

    def __init__(self, model: XGBCostModel, card: dict) -> None:
        if not model.is_trained:
            raise UsageError("a cold-start prior needs a trained cost model, got an untrained one")
        self.model = model
        self.card = card

    @classmethod
    def load(cls, path: str | Path = PRIOR_MODEL, card: str | Path | None = None) -> ColdStartPrior | None:
        """The prior saved at `path` (its card beside it, `<stem>.card.json`), or None with a
        warning when it is missing, unreadable or trained on other features than today's."""
        path = Path(path)
        card_path = Path(card) if card is not None else path.with_name(path.stem + ".card.json")
        model = XGBCostModel(nthread=1)
        try:
            model.load(path)
            data = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
        except (UsageError, OSError, ValueError) as error:
            warnings.warn(f"cold-start prior not used, the search starts with random configs: {error}",
                          stacklevel=2)
            return None
        return cls(model, data if isinstance(data, dict) else {})

    @property
    def trained_on(self) -> list[str]:
        """The workloads ("op[dims]:dtype") the prior was trained on, as its card lists them."""
        return [str(w["workload"]) for w in self.card.get("trained_on", []) if isinstance(w, dict)]

    def scores(self, X: np.ndarray) -> np.ndarray:
        """One score per feature row, higher for a config expected to be faster."""
        return self.model.predict(X)


@functools.lru_cache(maxsize=1)
def shipped_prior() -> ColdStartPrior | None:
    """The prior shipped with tiletune, loaded once per process (None, warned once, if unusable)."""
    return ColdStartPrior.load(PRIOR_MODEL)


def _percentiles(scores: np.ndarray) -> np.ndarray:
    """Each score's rank among `scores` mapped to [0, 1] (1 the best; ties share a rank)."""
    if len(scores) < 2:
        return np.ones(len(scores))
    ordered = np.sort(scores)
    return np.searchsorted(ordered, scores, side="left") / (len(scores) - 1)


def blend(prior: np.ndarray, model: np.ndarray | None, own_rows: int, half_life: float) -> np.ndarray:
    """Scores combining the prior's and the workload's own model: their ranks among the
    candidates, the prior weighted `half_life / (half_life + own_rows)`. With no trained own
    model (`model` None) the prior ranks alone; the more the workload measured, the less the
    prior counts (at `half_life` own rows, half)."""
    if model is None:
        return _percentiles(prior)
    weight = half_life / (half_life + own_rows)
    return weight * _percentiles(prior) + (1.0 - weight) * _percentiles(model)


def knob_distance(a: Config, b: Config) -> int:
    """How many knobs two configs of one space set differently."""
    other = b.as_dict()
    return sum(other.get(name) != value for name, value in a.as_dict().items())


def diverse_top(ranked: Sequence[Config], n: int, *, min_distance: int = 2, window: int = 8) -> list[Config]:
    """Up to `n` of `ranked` (best first) in order, skipping a config within `min_distance - 1`
    knobs of one already picked, as long as the pick stays among the best `window * n`; the
    best skipped ones fill what is left. A batch of the prior's guesses then spans several
    regions of the space instead of eight variants of one tile."""
    picks: list[Config] = []
    skipped: list[Config] = []
    for config in ranked[: window * n]:
        if len(picks) == n:
            break
        if all(knob_distance(config, p) >= min_distance for p in picks):
            picks.append(config)
        else:
            skipped.append(config)
    rest = skipped + list(ranked[window * n:])
    return picks + rest[: n - len(picks)]
