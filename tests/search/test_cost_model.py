"""The cost model: learns within-workload order from features, transfers, saves safely."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import xgboost

from tiletune.errors import TiletuneError
from tiletune.search.cost_model import CostModel, XGBCostModel, relevance_labels
from tiletune.search.features import FEATURE_NAMES, featurize_many

# Three GEMM workloads (M, N, K); the model trains on two and is asked about the third.
WORKLOADS = ((1024, 1024, 512), (2048, 512, 1024), (768, 1536, 2048))
BLOCKS = (16, 32, 64, 128, 256)


def synthetic_candidates(workload: tuple[int, int, int], rng: np.random.Generator):
    """~100 configs of one GEMM with plain tile facts and a latency that prefers 64x128 tiles."""
    m, n, k = workload
    rows, latencies = [], []
    for bm, bn, bk, stages in itertools.product(BLOCKS, BLOCKS, (32, 64), (2, 3)):
        if rng.random() < 0.5:
            continue
        config = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "num_stages": stages,
                  "num_warps": 4}
        programs = math.ceil(m / bm) * math.ceil(n / bn)
        k_iters = math.ceil(k / bk)
        tile = {"programs": programs, "flops_per_program": 2.0 * bm * bn * bk * k_iters,
                "bytes_per_program": (bm + bn) * bk * 2.0 * k_iters, "unique_bytes": 2.0 * (m * k + k * n + m * n),
                "tile_m": bm, "tile_n": bn, "tile_k": bk, "k_iterations": k_iters, "uses_tensor_cores": 1,
                "tail_fraction": 0.0, "waves": programs / 132}
        static = {"registers": min(255, 32 + bm * bn // 128), "spill_bytes": 0,
                  "shared_bytes": stages * (bm + bn) * bk * 2}
        # Workloads differ in scale, so only within-workload order is learnable and useful.
        scale = m * n * k / 1e9
        latency = scale * (1.0 + abs(math.log2(bm) - 6) + abs(math.log2(bn) - 7) + rng.normal(0, 0.3) ** 2)
        rows.append((config, tile, static))
        latencies.append(latency)
    return featurize_many(rows), np.asarray(latencies)


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(7)
    parts = [synthetic_candidates(w, rng) for w in WORKLOADS]
    return parts


def training_rows(dataset):
    X = np.concatenate([dataset[0][0], dataset[1][0]])
    y = np.concatenate([dataset[0][1], dataset[1][1]])
    groups = ["w0"] * len(dataset[0][1]) + ["w1"] * len(dataset[1][1])
    return X, y, groups


def true_percentile(latencies: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Share of the workload's candidates strictly faster than each pick: 0 is the best."""
    return np.asarray([(latencies < latencies[i]).mean() for i in picks])


@pytest.mark.parametrize("objective", ["rank:pairwise", "reg:squarederror"])
def test_model_ranks_an_unseen_workload_far_better_than_random(dataset, objective):
    model = XGBCostModel(objective)
    model.fit(*training_rows(dataset))
    X_test, y_test = dataset[2]
    top5 = model.rank(X_test)[:5]
    percentiles = true_percentile(y_test, top5)
    # Random picks average the 50th percentile; the learned order must put its top 5 near the top.
    assert percentiles.mean() < 0.25, percentiles
    assert percentiles.min() <= 0.10, percentiles  # at least one pick in the true top 10%


def test_random_scores_do_not_pass_the_transfer_bar(dataset):
    # The bar above must be able to fail: random orders miss it on average.
    X_test, y_test = dataset[2]
    rng = np.random.default_rng(0)
    means = [true_percentile(y_test, rng.permutation(len(y_test))[:5]).mean() for _ in range(200)]
    assert np.mean(means) > 0.4
    assert np.mean(np.asarray(means) < 0.25) < 0.2


def test_same_data_gives_identical_predictions(dataset):
    X, y, groups = training_rows(dataset)
    first, second = XGBCostModel(), XGBCostModel()
    first.fit(X, y, groups)
    second.fit(X, y, groups)
    X_test = dataset[2][0]
    assert np.array_equal(first.predict(X_test), second.predict(X_test))
    assert np.ptp(first.predict(X_test)) > 0


def test_rows_of_interleaved_groups_are_sorted_into_their_groups(dataset):
    X, y, groups = training_rows(dataset)
    n0 = groups.count("w0")
    # Alternate w0 and w1 rows, each group keeping its own row order.
    order = [i for pair in itertools.zip_longest(range(n0), range(n0, len(y))) for i in pair if i is not None]
    interleaved = XGBCostModel()
    interleaved.fit(X[order], y[order], [groups[i] for i in order])
    blocked = XGBCostModel()
    blocked.fit(X, y, groups)
    X_test = dataset[2][0]
    assert np.array_equal(interleaved.predict(X_test), blocked.predict(X_test))


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_save_then_load_gives_identical_predictions(dataset, tmp_path, suffix):
    model = XGBCostModel("reg:squarederror")
    model.fit(*training_rows(dataset))
    path = tmp_path / "models" / f"cost{suffix}"
    model.save(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    loaded = XGBCostModel()  # default objective; the file's objective wins
    loaded.load(path)
    assert loaded.objective == "reg:squarederror"
    X_test = dataset[2][0]
    assert np.array_equal(loaded.predict(X_test), model.predict(X_test))


def test_saved_file_is_xgboost_json_with_tiletune_attributes(dataset, tmp_path):
    model = XGBCostModel()
    model.fit(*training_rows(dataset))
    path = tmp_path / "cost.json"
    model.save(path)
    document = json.loads(path.read_text())  # plain JSON: no pickle anywhere
    attributes = document["learner"]["attributes"]
    assert json.loads(attributes["tiletune_feature_names"]) == list(FEATURE_NAMES)
    assert attributes["tiletune_objective"] == "rank:pairwise"


def test_loading_a_model_with_other_feature_names_is_refused(dataset, tmp_path):
    X, y, groups = training_rows(dataset)
    other_names = [*FEATURE_NAMES[:-1], "log2_something_else"]
    other = XGBCostModel(feature_names=other_names)
    other.fit(X, y, groups)
    path = tmp_path / "other.json"
    other.save(path)
    model = XGBCostModel()
    with pytest.raises(TiletuneError, match="other features.*log2_something_else"):
        model.load(path)
    assert not model.is_trained


def test_loading_a_foreign_or_corrupt_file_is_refused(dataset, tmp_path):
    X, y, groups = training_rows(dataset)
    plain = xgboost.train({"objective": "reg:squarederror", "nthread": 1}, xgboost.DMatrix(X, label=y),
                          num_boost_round=2)
    foreign = tmp_path / "plain.json"
    plain.save_model(foreign)
    with pytest.raises(TiletuneError, match="not a tiletune cost model"):
        XGBCostModel().load(foreign)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    with pytest.raises(TiletuneError, match="not a readable xgboost model"):
        XGBCostModel().load(corrupt)
    with pytest.raises(TiletuneError, match="no cost model file"):
        XGBCostModel().load(tmp_path / "missing.json")
    with pytest.raises(TiletuneError, match=r"\.json or \.ubj"):
        XGBCostModel().load(tmp_path / "model.pkl")


def test_untrained_model_predicts_zeros_and_cannot_be_saved(dataset, tmp_path):
    model = XGBCostModel()
    X_test = dataset[2][0]
    assert not model.is_trained
    assert np.array_equal(model.predict(X_test), np.zeros(len(X_test)))
    assert np.array_equal(model.rank(X_test), np.arange(len(X_test)))
    with pytest.raises(TiletuneError, match="untrained"):
        model.save(tmp_path / "cost.json")


def test_fit_on_too_little_data_is_a_no_op(dataset):
    X, y, groups = training_rows(dataset)
    model = XGBCostModel()
    model.fit(X[:3], y[:3], groups[:3])
    assert not model.is_trained
    model.fit(X[:50], np.full(50, 2.5), groups[:50])  # one distinct latency: nothing to rank
    assert not model.is_trained
    assert np.array_equal(model.predict(X[:10]), np.zeros(10))
    model.fit(X[:50], y[:50], groups[:50])
    assert model.is_trained


def test_fit_refuses_failed_measurements_and_mismatched_lengths(dataset):
    X, y, groups = training_rows(dataset)
    model = XGBCostModel()
    bad = y.copy()
    bad[3] = np.nan
    with pytest.raises(TiletuneError, match="failed measurements"):
        model.fit(X, bad, groups)
    with pytest.raises(TiletuneError, match="one latency and one group per row"):
        model.fit(X, y[:-1], groups)
    with pytest.raises(TiletuneError, match="features"):
        model.fit(X[:, :5], y, groups)
    with pytest.raises(TiletuneError, match="objective"):
        XGBCostModel("rank:ndcg_typo")


def test_relevance_labels_rank_within_each_group():
    latencies = np.array([3.0, 1.0, 2.0, 100.0, 50.0, 50.0])
    groups = np.array([0, 0, 0, 1, 1, 1])
    labels = relevance_labels(latencies, groups)
    assert labels.tolist() == [0.0, 1.0, 0.5, 0.0, 1.0, 1.0]
    assert relevance_labels(np.array([4.0]), np.array([0])).tolist() == [1.0]


def test_xgb_cost_model_satisfies_the_protocol():
    assert isinstance(XGBCostModel(), CostModel)
