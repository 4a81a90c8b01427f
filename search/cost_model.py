"""The cost model: predicts which configs of a workload are fast, from their features.

`CostModel` is the extension point; `XGBCostModel` is the reference implementation, XGBoost
through its native API (`xgboost.train` on a `DMatrix`) with a ranking objective:

- Training rows are measured candidates: a feature row (`tiletune.search.features`), the
  measured latency, and the workload it belongs to (its group). Failed measurements (no
  latency) are **not** training rows; the caller filters them out, since "failed" has no place
  on a latency scale and a ranker would only learn that compiles fail, which the config space
  and the compile already tell us.
- Latencies of different workloads are not comparable (a 4096^3 GEMM is slower than a 64^3 one
  whatever the config), so labels are made within each workload: for `rank:pairwise` (the
  default) the relevance is the rank-normalized speed in [0, 1] (fastest 1, slowest 0 unless
  tied, ties equal), and the DMatrix groups keep pairs inside one workload; for `reg:squarederror` the
  target is log(fastest / latency) <= 0, speed relative to the workload's best. Either way the
  model can be trained on many workloads at once and asked about a new one.
- Scores are "higher is better" and mean something only relative to other candidates of the
  same workload.
- Training is deterministic: fixed seed, fixed thread count, no sampling; the same rows in the
  same order give the same model, bit for bit.

Models are saved in XGBoost's own JSON or UBJ format (by the file's suffix), never pickled, and
written atomically. The feature names, objective and a format version travel in the booster's
attributes; loading a model trained on other features is refused.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Hashable, Protocol, Sequence, runtime_checkable

import numpy as np
import xgboost

from tiletune.errors import UsageError
from tiletune.search.features import FEATURE_NAMES

__all__ = [
    "MIN_TRAINING_ROWS",
    "OBJECTIVES",
    "CostModel",
    "XGBCostModel",
    "relevance_labels",
]

#: Objectives `XGBCostModel` supports: a pairwise ranker, or regression on relative speed.
OBJECTIVES = ("rank:pairwise", "reg:squarederror")

#: Fewer measured rows than this teach nothing a ranker can use; `fit` leaves the model as is.
MIN_TRAINING_ROWS = 4

#: Version of what tiletune stores in a model file's attributes; bump when that changes.
MODEL_FORMAT_VERSION = "1"

_ATTR_FEATURES = "tiletune_feature_names"
_ATTR_OBJECTIVE = "tiletune_objective"
_ATTR_VERSION = "tiletune_format_version"
_SUFFIXES = (".json", ".ubj")


@runtime_checkable
class CostModel(Protocol):
    """Scores candidates of a workload from their feature rows; higher is better.

    - `fit(X, y, groups)`: train on rows `X` (n x features), their measured latencies `y`
      (positive, finite; failed measurements are not rows) and `groups`, one workload key per
      row. Ranking happens within a group only. Too little data leaves the model unchanged.
    - `predict(X)`: one score per row, higher for a faster candidate; zeros when untrained.
    - `save(path)` / `load(path)`: persist the trained model, never by pickling; `load` refuses
      a model trained on other features.
    """

    def fit(self, X: np.ndarray, y: np.ndarray, groups: Sequence[Hashable]) -> None:
        """Train on measured rows; see the class docstring."""
        ...

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Scores, higher is better."""
        ...

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to `path` atomically."""
        ...

    def load(self, path: str | os.PathLike[str]) -> None:
        """Replace this model with the one at `path`."""
        ...


def _group_order(groups: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """Group ids by first appearance, and a stable permutation that sorts rows by group."""
    first_seen: dict[Hashable, int] = {}
    ids = np.asarray([first_seen.setdefault(g, len(first_seen)) for g in groups], dtype=np.int64)
    return ids, np.argsort(ids, kind="stable")


def relevance_labels(latencies: np.ndarray, group_ids: np.ndarray) -> np.ndarray:
    """Rank-normalized speed within each group: 1 for the fastest, lower for slower rows.

    A row's label is 1 minus the share of the other rows of its group that are strictly
    faster, so equal latencies get equal labels and the group's best always gets 1. A group of
    one row gets 1.
    """
    labels = np.ones(len(latencies), dtype=np.float64)
    for gid in np.unique(group_ids):
        rows = np.flatnonzero(group_ids == gid)
        if len(rows) < 2:
            continue
        lat = latencies[rows]
        faster = np.searchsorted(np.sort(lat), lat, side="left")
        labels[rows] = 1.0 - faster / (len(rows) - 1)
    return labels


def _relative_speed(latencies: np.ndarray, group_ids: np.ndarray) -> np.ndarray:
    """log(fastest in group / latency): 0 for the group's best, negative for slower rows."""
    targets = np.zeros(len(latencies), dtype=np.float64)
    for gid in np.unique(group_ids):
        rows = np.flatnonzero(group_ids == gid)
        targets[rows] = np.log(latencies[rows].min() / latencies[rows])
    return targets


class XGBCostModel:
    """The reference `CostModel`: gradient-boosted trees over `FEATURE_NAMES` (xgboost).

    `objective` is "rank:pairwise" (default) or "reg:squarederror"; see the module docstring
    for the labels each uses. `num_boost_round`, `max_depth` and `learning_rate` are xgboost's.
    """

    def __init__(self, objective: str = "rank:pairwise", *, num_boost_round: int = 80,
                 max_depth: int = 6, learning_rate: float = 0.2, seed: int = 0, nthread: int = 2,
                 feature_names: Sequence[str] = FEATURE_NAMES) -> None:
        if objective not in OBJECTIVES:
            raise UsageError(f"cost model objective must be one of {list(OBJECTIVES)}, got {objective!r}")
        if num_boost_round < 1:
            raise UsageError(f"num_boost_round must be >= 1, got {num_boost_round}")
        self.objective = objective
        self.num_boost_round = num_boost_round
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.seed = seed
        self.nthread = nthread
        self.feature_names: tuple[str, ...] = tuple(feature_names)
        self._booster: xgboost.Booster | None = None

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        return f"XGBCostModel(objective={self.objective!r}, num_boost_round={self.num_boost_round}) [{state}]"

    @property
    def is_trained(self) -> bool:
        """Whether a booster has been fit or loaded; an untrained model predicts zeros."""
        return self._booster is not None

    def _params(self) -> dict[str, object]:
        params: dict[str, object] = {
            "objective": self.objective,
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "min_child_weight": 1.0,
            "subsample": 1.0,
            "tree_method": "hist",
            "seed": self.seed,
            "nthread": self.nthread,
            "verbosity": 0,
        }
        if self.objective == "rank:pairwise":
            # "mean" samples pairs over the whole group (seeded, so deterministic): the search
            # needs the whole order right, not only the head that "topk" concentrates on.
            params["lambdarank_pair_method"] = "mean"
            params["lambdarank_num_pair_per_sample"] = 8
        return params

    def _check_rows(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise UsageError(f"cost model expects rows of {len(self.feature_names)} features "
                             f"(FEATURE_NAMES), got an array of shape {X.shape}")
        return X

    def _dmatrix(self, X: np.ndarray, label: np.ndarray | None = None) -> xgboost.DMatrix:
        return xgboost.DMatrix(X, label=label, feature_names=list(self.feature_names),
                               nthread=self.nthread)

    def fit(self, X: np.ndarray, y: np.ndarray, groups: Sequence[Hashable]) -> None:
        """Train from scratch on measured rows; too few rows or one distinct latency is a no-op.

        `y` holds latencies (any positive unit, the same across rows); `groups` one workload key
        per row (any hashable: a workload key string, an index). Rows need not be sorted.
        """
        X = self._check_rows(X)
        latencies = np.asarray(y, dtype=np.float64).reshape(-1)
        groups = list(groups)
        if not (len(latencies) == len(groups) == X.shape[0]):
            raise UsageError(f"fit needs one latency and one group per row: {X.shape[0]} rows, "
                             f"{len(latencies)} latencies, {len(groups)} groups")
        if not np.all(np.isfinite(latencies) & (latencies > 0)):
            raise UsageError("fit needs positive, finite latencies; leave failed measurements out "
                             "of the training rows")
        if len(latencies) < MIN_TRAINING_ROWS or len(np.unique(latencies)) < 2:
            return

        ids, order = _group_order(groups)
        X, latencies, ids = X[order], latencies[order], ids[order]
        if self.objective == "rank:pairwise":
            dtrain = self._dmatrix(X, relevance_labels(latencies, ids))
            dtrain.set_group(np.bincount(ids).astype(np.uint32))
        else:
            dtrain = self._dmatrix(X, _relative_speed(latencies, ids))
        booster = xgboost.train(self._params(), dtrain, num_boost_round=self.num_boost_round)
        booster.set_attr(**{
            _ATTR_FEATURES: json.dumps(list(self.feature_names)),
            _ATTR_OBJECTIVE: self.objective,
            _ATTR_VERSION: MODEL_FORMAT_VERSION,
        })
        self._booster = booster

    def predict(self, X: np.ndarray) -> np.ndarray:
        """One float64 score per row, higher for a faster candidate; zeros when untrained."""
        X = self._check_rows(X)
        if self._booster is None or X.shape[0] == 0:
            return np.zeros(X.shape[0], dtype=np.float64)
        return self._booster.predict(self._dmatrix(X)).astype(np.float64)

    def rank(self, X: np.ndarray) -> np.ndarray:
        """Row indices, best predicted first; ties (and an untrained model) keep row order."""
        return np.argsort(-self.predict(X), kind="stable")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the trained booster to `path` (.json or .ubj) atomically: temp file, rename."""
        path = Path(path)
        if self._booster is None:
            raise UsageError(f"cannot save the cost model to {path}: it is untrained (fit it on at "
                             f"least {MIN_TRAINING_ROWS} measured rows with different latencies)")
        _check_suffix(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temp name keeps the suffix: xgboost picks JSON or UBJ by it.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        try:
            self._booster.save_model(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, path: str | os.PathLike[str]) -> None:
        """Replace this model with the one saved at `path`, adopting its objective.

        Refuses (UsageError) a file that is not a tiletune cost model, or one trained on feature
        names other than this model's: its columns would mean something else.
        """
        path = Path(path)
        _check_suffix(path)
        if not path.is_file():
            raise UsageError(f"no cost model file at {path}")
        try:
            booster = xgboost.Booster(params={"nthread": self.nthread}, model_file=str(path))
        except xgboost.core.XGBoostError as exc:
            raise UsageError(f"{path} is not a readable xgboost model: {str(exc).splitlines()[0]}") from exc
        stored = booster.attr(_ATTR_FEATURES)
        objective = booster.attr(_ATTR_OBJECTIVE)
        version = booster.attr(_ATTR_VERSION)
        if stored is None or objective is None or version is None:
            raise UsageError(f"{path} is an xgboost model but not a tiletune cost model "
                             f"(no {_ATTR_FEATURES!r} attribute)")
        if version != MODEL_FORMAT_VERSION:
            raise UsageError(f"{path} is a cost model of format version {version}, this tiletune "
                             f"reads version {MODEL_FORMAT_VERSION}; retrain it from the tuning DB")
        names = tuple(json.loads(stored))
        if names != self.feature_names:
            raise UsageError(f"{path} was trained on other features: {_feature_diff(names, self.feature_names)}; "
                             f"retrain it from the tuning DB")
        if objective not in OBJECTIVES:
            raise UsageError(f"{path} has objective {objective!r}, expected one of {list(OBJECTIVES)}")
        self.objective = objective
        self._booster = booster


def _check_suffix(path: Path) -> None:
    if path.suffix not in _SUFFIXES:
        raise UsageError(f"cost model files end in {' or '.join(_SUFFIXES)} (xgboost's JSON or UBJ "
                         f"format), got {path.name!r}")


def _feature_diff(found: Sequence[str], expected: Sequence[str]) -> str:
    """A short account of how two feature-name lists differ."""
    missing = [n for n in expected if n not in found]
    extra = [n for n in found if n not in expected]
    parts = [f"{len(found)} features where {len(expected)} are expected"]
    if missing:
        parts.append(f"missing {missing[:5]}")
    if extra:
        parts.append(f"unknown {extra[:5]}")
    if not missing and not extra:
        parts.append("same names in another order")
    return ", ".join(parts)

