"""bench/search_vs_peers.py on a small cut of the committed sweep: every method searches the same
recorded candidates under the same rules, the prior has not seen the benchmark's workloads,
and the figures are written as JSON."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from tiletune.search.measurement.sweep import Sweep
from tiletune.search.strategies.prior import ColdStartPrior, shipped_prior

pytest.importorskip("optuna")
pytest.importorskip("nevergrad")

BENCH = Path(__file__).resolve().parents[2] / "bench"
SWEEP = BENCH / "data" / "sweep-sim-h100.jsonl"


@pytest.fixture(scope="module")
def peers():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("search_vs_peers")
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory) -> Path:
    """One matmul workload of the committed sweep: its best config and 47 others."""
    sweep = Sweep.load(SWEEP)
    spec = next(s for s in sweep.specs() if s.op == "matmul")
    entries = list(sweep.entries(spec).values())
    best = sweep.best(spec)
    kept = [best] + [e for e in entries if e is not best][:47]
    path = tmp_path_factory.mktemp("sweep") / "small.jsonl"
    Sweep(sweep.header, kept).save(path)
    return path


def test_a_peer_measures_only_recorded_configs_each_once(peers, small_sweep):
    sweep = Sweep.load(small_sweep)
    spec = sweep.specs()[0]
    objective = peers.ReplayObjective(sweep, spec)
    assert objective.candidates == list(sweep.space(spec).enumerate())  # tiletune's candidates too
    assert objective.target_us == sweep.best(spec).latency_us / peers.WITHIN
    knobs = {k.name: k.choices()[0] for k in objective.knobs}  # one point, asked again and again
    answered = [objective.measure(knobs)[0] for _ in range(len(objective.candidates))]
    assert len(set(answered)) == len(answered) == len(objective.candidates)
    assert objective.done and objective.run().trials <= len(objective.candidates)
    # a recorded config is answered by itself
    fresh = peers.ReplayObjective(sweep, spec)
    config = fresh.candidates[5]
    assert fresh.measure(config.as_dict())[0] == config


@pytest.mark.parametrize("method", ["optuna-tpe", "nevergrad-ngopt", "tiletune", "random"])
def test_every_method_finds_the_target_within_the_candidates(peers, small_sweep, method):
    sweep = Sweep.load(small_sweep)
    spec = sweep.specs()[0]
    runs = [peers.search(sweep, spec, method, seed) for seed in range(2)]
    assert all(r.found and 1 <= r.trials <= 48 for r in runs)


def test_the_bench_writes_its_figures(peers, small_sweep, tmp_path, capsys):
    out = tmp_path / "result.json"
    assert peers.main(["--quick", "--seeds", "2", "--sweep", str(small_sweep), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "sim-h100" and result["seeds"] == [0, 1]
    assert result["methods"] == list(peers.METHODS)
    (row,) = result["workloads"]
    assert row["matmul_type"] and row["candidates"] == 48
    assert all(len(row["trials"][m]) == 2 for m in peers.METHODS)
    assert set(result["ratios_matmul_type"]) == {"random", "optuna-tpe", "nevergrad-ngopt"}
    assert result["prior"]["overlap_with_benchmark"] == []
    assert {"optuna", "nevergrad", "xgboost"} <= set(result["versions"])
    assert "geomean over the 1 matmul-type workloads" in capsys.readouterr().out


def test_the_shipped_prior_has_not_seen_the_benchmark_workloads(peers):
    specs = Sweep.load(SWEEP).specs()
    card = peers.check_prior(specs)  # raises if it had
    assert card["trained_on"] and {w["workload"] for w in card["trained_on"]}.isdisjoint(map(str, specs))


def test_a_prior_trained_on_a_benchmark_workload_is_refused(peers, small_sweep, monkeypatch, capsys):
    spec = Sweep.load(small_sweep).specs()[0]
    leaky = ColdStartPrior(shipped_prior().model, {"trained_on": [{"workload": str(spec)}]})
    monkeypatch.setattr(peers, "shipped_prior", lambda: leaky)
    assert peers.main(["--quick", "--seeds", "1", "--sweep", str(small_sweep), "--json", "unused.json"]) == 2
    assert "trained on benchmark workloads" in capsys.readouterr().err
