"""The cold-start prior: the shipped model loads and ranks, a stale one is refused with a
warning (the search falls back to random warm-up), and a cold search's first batch is the
prior's spread-out ranking, not a random draw."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tiletune.schedules.config import Config
from tiletune.search.cost_model import XGBCostModel
from tiletune.search.features import FEATURE_NAMES
from tiletune.search.measurement.sweep import Sweep
from tiletune.search.replay_search import ok_rows
from tiletune.search.strategies import History, ModelGuided, RandomSearch
from tiletune.search.strategies import prior as prior_module
from tiletune.search.strategies.prior import (
    PRIOR_CARD,
    PRIOR_MODEL,
    ColdStartPrior,
    blend,
    diverse_top,
    knob_distance,
    shipped_prior,
)

DATA = Path(__file__).resolve().parents[2] / "bench" / "data"


@pytest.fixture(scope="module")
def prior_sweep() -> Sweep:
    return Sweep.load(DATA / "sweep-prior-sim-h100.jsonl")


@pytest.fixture(scope="module")
def bench_sweep() -> Sweep:
    return Sweep.load(DATA / "sweep-sim-h100.jsonl")


@pytest.fixture
def fresh_prior_cache():
    shipped_prior.cache_clear()
    yield
    shipped_prior.cache_clear()


def test_the_shipped_prior_loads_with_its_card():
    prior = shipped_prior()
    assert prior is not None and prior.model.feature_names == FEATURE_NAMES
    card = json.loads(PRIOR_CARD.read_text())
    assert card["model"] == PRIOR_MODEL.name and card["features"]["names"] == list(FEATURE_NAMES)
    assert len(prior.trained_on) >= 5 and card["training"]["objective"] == "rank:pairwise"
    assert set(prior.trained_on).isdisjoint(card["not_trained_on"])


def test_the_prior_ranks_fast_configs_of_a_workload_it_was_trained_on_first(prior_sweep):
    spec = next(s for s in prior_sweep.specs() if s.op == "matmul")
    _, X, latencies = ok_rows(prior_sweep, spec)
    scores = shipped_prior().scores(X)
    top = np.argsort(-scores)[:8]
    assert np.median(latencies[top]) < np.percentile(latencies, 20)


def test_a_prior_trained_on_other_features_is_refused_with_a_warning(tmp_path, monkeypatch, fresh_prior_cache):
    names = (*FEATURE_NAMES, "a_knob_added_later")
    stale = XGBCostModel(num_boost_round=2, nthread=1, feature_names=names)
    rng = np.random.default_rng(0)
    stale.fit(rng.random((16, len(names))), rng.random(16) + 1.0, [0] * 16)
    path = tmp_path / "cold-start.json"
    stale.save(path)
    with pytest.warns(UserWarning, match="other features"):
        assert ColdStartPrior.load(path) is None

    # the search falls back to its random warm-up: the same first batch as random search
    monkeypatch.setattr(prior_module, "PRIOR_MODEL", path)
    space_sweep = Sweep.load(DATA / "sweep-prior-sim-h100.jsonl")
    spec = space_sweep.specs()[0]
    space = space_sweep.space(spec)
    strategy = ModelGuided(space_sweep.tile_facts(spec), seed=3)
    with pytest.warns(UserWarning, match="random configs"):
        batch = strategy.propose(space, History(), 8)
    assert strategy.cold_prior is None
    assert batch == RandomSearch(3).propose(space, History(), 8)


def test_a_missing_prior_is_a_warning_not_a_crash(tmp_path):
    with pytest.warns(UserWarning, match="no cost model file"):
        assert ColdStartPrior.load(tmp_path / "absent.json") is None


def test_a_cold_first_batch_is_the_priors_spread_out_ranking(bench_sweep):
    spec = next(s for s in bench_sweep.specs() if s.op == "matmul")
    space = bench_sweep.space(spec)
    strategy = ModelGuided(bench_sweep.tile_facts(spec), seed=0)
    assert strategy.cold_prior is shipped_prior()
    batch = strategy.propose(space, History(), 8)
    assert len(set(batch)) == 8 and batch != RandomSearch(0).propose(space, History(), 8)
    recorded = list(space.enumerate())
    percentile = dict(zip(recorded, blend(strategy.scores(recorded), None, 0, 16.0)))
    chosen = batch[:7]  # the last one is the exploration share, drawn at random
    assert min(percentile[c] for c in chosen) > 0.9  # all from the prior's top tenth
    assert all(knob_distance(a, b) >= 2 for i, a in enumerate(chosen) for b in chosen[i + 1:])
    # the same search with the prior turned off starts at random
    plain = ModelGuided(bench_sweep.tile_facts(spec), seed=0, use_prior=False)
    assert plain.propose(space, History(), 8) == RandomSearch(0).propose(space, History(), 8)


def test_rows_of_other_workloads_train_the_own_model_and_the_shipped_prior_still_ranks_first(bench_sweep):
    # the DB's rows of other workloads used to replace the prior: on the simulated H100 that
    # took matmul 4096^3 from 3 to 16 median trials (bench/search_efficiency.py, warm start)
    spec = next(s for s in bench_sweep.specs() if s.op == "matmul")
    space = bench_sweep.space(spec)
    strategy = ModelGuided(bench_sweep.tile_facts(spec), seed=0)
    strategy.prior = [(np.zeros(len(FEATURE_NAMES), dtype=np.float32), 1.0, "other")]
    assert strategy.cold_prior is not None
    cold = ModelGuided(bench_sweep.tile_facts(spec), seed=0)
    assert strategy.propose(space, History(), 8) == cold.propose(space, History(), 8)


def test_blend_weighs_the_prior_less_as_own_rows_accumulate():
    prior = np.array([3.0, 2.0, 1.0])
    own = np.array([1.0, 2.0, 3.0])
    assert list(blend(prior, None, 0, 16.0)) == [1.0, 0.5, 0.0]
    assert np.argmax(blend(prior, own, 4, 16.0)) == 0  # mostly the prior
    assert np.argmax(blend(prior, own, 64, 16.0)) == 2  # mostly the workload's own model
    assert np.allclose(blend(prior, own, 16, 16.0), 0.5)  # half and half


def test_diverse_top_skips_one_knob_variants_while_the_ranking_allows():
    ranked = [Config((("a", a), ("b", b), ("c", 1))) for a, b in [(1, 1), (1, 2), (2, 2), (3, 3), (3, 4)]]
    assert diverse_top(ranked, 2) == [ranked[0], ranked[2]]
    assert diverse_top(ranked, 3) == [ranked[0], ranked[2], ranked[3]]
    # beyond the window, the best skipped ones fill the batch
    assert diverse_top(ranked, 2, window=1) == [ranked[0], ranked[1]]
