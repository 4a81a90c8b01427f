"""Search strategies on a real task's space with a synthetic latency: no compiles, no tuner.

Latency is a made-up function of the knobs (best at BLOCK_M=128, BLOCK_N=64, num_warps=4,
plus a small fixed per-config noise that breaks ties), so the true ranking of all 4032 legal
matmul configs is known and a search can be scored by the true rank of the best config it found.
"""
from __future__ import annotations

import math
import statistics
import zlib
from functools import cache
from random import Random

import pytest

from tiletune.errors import UsageError
from tiletune.kernels.task import TaskSpec
from tiletune.schedules.config import Config
from tiletune.search.strategies import (
    STRATEGIES,
    Evolution,
    GridSearch,
    History,
    ModelGuided,
    SimulatedAnnealing,
    make_strategy,
)

MATMUL = TaskSpec.make("matmul", {"M": 512, "N": 512, "K": 512}, "float16").build()
TINY = TaskSpec.make("softmax", {"N": 3, "D": 16}, "float32").build()  # 15 legal configs


def latency(config: Config) -> float:
    """Synthetic matmul latency: best at BLOCK_M=128, BLOCK_N=64, num_warps=4."""
    noise = zlib.crc32(config.to_json().encode()) % 1000 / 1000 * 0.05
    return (1.0 + abs(math.log2(config["BLOCK_M"]) - 7) + abs(math.log2(config["BLOCK_N"]) - 6)
            + 0.5 * abs(config["num_warps"] - 4) / 4 + noise)


def facts(task):
    return lambda c: task.facts(c).to_dict()


def tiny_latency(config: Config) -> float:
    return 1.0 + config["BLOCK_ROWS"] + abs(config["num_warps"] - 4)


@cache
def featurizer(task) -> ModelGuided:
    """Only its (caching) `features` is used: the rows the tuner would record."""
    return ModelGuided(facts(task))


@cache
def true_ranks() -> dict[Config, int]:
    """Every legal matmul config's rank by true latency (0 is the fastest)."""
    return {c: i for i, c in enumerate(sorted(MATMUL.space.enumerate(), key=latency))}


def make(name: str, seed: int, task=MATMUL):
    return make_strategy(name, facts(task), seed)


def search(strategy, rounds: int = 6, n: int = 8, fail_every: int = 0) -> list[list[Config]]:
    """Propose, "measure" and record `rounds` batches of matmul configs, checking the
    interface's promises on each batch."""
    space, history, batches = MATMUL.space, History(), []
    for _ in range(rounds):
        batch = strategy.propose(space, history, n)
        assert len(batch) == n, f"{strategy.name} proposed {len(batch)} of {n}"
        assert len(set(batch)) == len(batch), f"{strategy.name} repeated a config within a batch"
        assert not set(batch) & history.tried, f"{strategy.name} proposed a tried config"
        assert all(space.is_legal(c) for c in batch), f"{strategy.name} proposed an illegal config"
        for i, config in enumerate(batch):
            failed = fail_every and i % fail_every == 0
            if failed:
                history.add(config, None, None)
            else:
                history.add(config, latency(config), featurizer(MATMUL).features(config))
        batches.append(batch)
    return batches


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_proposes_legal_untried_distinct_configs(name):
    search(make(name, seed=0), rounds=4, fail_every=3)  # some failures: tried, yet no latency


@pytest.mark.parametrize("name", STRATEGIES)
def test_the_same_seed_proposes_the_same_configs(name):
    assert search(make(name, seed=7), rounds=3) == search(make(name, seed=7), rounds=3)


@pytest.mark.parametrize("name", ["annealing", "evolution"])
def test_other_seeds_search_differently(name):
    assert search(make(name, seed=1), rounds=3) != search(make(name, seed=2), rounds=3)


def test_grid_enumerates_a_small_space_exactly_once_default_first():
    space, history, seen = TINY.space, History(), []
    grid = GridSearch()
    while batch := grid.propose(space, history, 4):
        seen += batch
        for config in batch:
            history.add(config, None, None)
    everything = list(space.enumerate())
    assert seen[0] == space.default()
    assert sorted(seen, key=everything.index) == everything and len(seen) == len(set(seen)) == 15
    assert seen[1:] == [c for c in everything if c != space.default()]
    assert grid.propose(space, history, 4) == []


@pytest.mark.parametrize("name", ["model", "annealing", "evolution"])
def test_model_strategies_fill_batches_until_the_space_is_exhausted(name):
    """On 15 configs the model's candidates run short; random picks fill the batch."""
    strategy, history, seen = make(name, seed=0, task=TINY), History(), []
    for size in (4, 4, 4, 3):  # warm-up twice, then the model
        batch = strategy.propose(TINY.space, history, 4)
        assert len(batch) == size and not set(batch) & history.tried and len(set(batch)) == size
        for config in batch:
            history.add(config, tiny_latency(config), featurizer(TINY).features(config))
        seen += batch
    assert set(seen) == set(TINY.space.enumerate())
    assert strategy.propose(TINY.space, history, 4) == []


@pytest.mark.parametrize("cls", [SimulatedAnnealing, Evolution])
def test_prior_rows_let_the_model_lead_from_the_first_batch(cls):
    """With rows of another workload (here the same latency law), batch one is model-ranked."""
    strategy = cls(facts(MATMUL), seed=0)
    prior = MATMUL.space.sample(Random(3), 64)
    strategy.prior = [(featurizer(MATMUL).features(c), latency(c), "other") for c in prior]
    batch = strategy.propose(MATMUL.space, History(), 8)
    assert batch[0] == MATMUL.space.default()
    model_picks = batch[1:1 + 5]  # 7 after the default, 25 % of them random
    assert statistics.median(true_ranks()[c] for c in model_picks) < len(true_ranks()) // 10


def test_make_strategy_knows_every_name_and_refuses_others():
    for name in STRATEGIES:
        assert make_strategy(name, facts(MATMUL), 0).name == name
    assert {"grid", "annealing", "evolution", "model", "random"} <= set(STRATEGIES)
    with pytest.raises(UsageError, match="annealing"):
        make_strategy("genetic", facts(MATMUL), 0)


def best_found(name: str, seed: int) -> tuple[int, int | None]:
    """True rank of the best config found in 6 batches of 8, and the first batch (0-based)
    after which it was within the true top 5 % (None if never)."""
    ranks, top, first = true_ranks(), len(true_ranks()) // 20, None
    best = len(ranks)
    for i, batch in enumerate(search(make(name, seed))):
        best = min(best, *(ranks[c] for c in batch))
        if first is None and best < top:
            first = i
    return best, first


@pytest.mark.slow
def test_annealing_and_evolution_find_the_top_configs_much_sooner_than_random():
    """Over 5 seeds: the model searches' median best rank is within the true top 0.5 % and at
    most a third of random search's (whose expected best of 48 draws from 4032 is rank ~80),
    and they reach the top 5 % within three batches on at least 4 seeds."""
    seeds = range(5)
    results = {name: [best_found(name, s) for s in seeds] for name in ("random", "annealing", "evolution")}
    medians = {name: statistics.median(best for best, _ in rows) for name, rows in results.items()}
    assert medians["random"] > 30, results  # the synthetic problem is not trivial for random
    for name in ("annealing", "evolution"):
        assert medians[name] <= len(true_ranks()) // 200, results
        assert 3 * medians[name] <= medians["random"], results
        assert sum(first is not None and first <= 2 for _, first in results[name]) >= 4, results
