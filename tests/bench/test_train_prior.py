"""bench/train_prior.py on a small cut of the committed prior sweep: it writes a model the search
can load and a card saying what it was trained on, and refuses the benchmark's workloads."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from tiletune.errors import UsageError
from tiletune.search.features import FEATURE_NAMES
from tiletune.search.measurement.sweep import Sweep
from tiletune.search.strategies.prior import ColdStartPrior

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("train_prior")
    finally:
        sys.path.remove(str(BENCH))


def test_a_prior_is_trained_with_its_card(script, tmp_path):
    sweep = Sweep.load(script.PRIOR_SWEEP)
    specs = sweep.specs()[:2]
    small = tmp_path / "prior-sweep.jsonl"
    Sweep(sweep.header, [e for s in specs for e in list(sweep.entries(s).values())[:20]]).save(small)
    out = tmp_path / "cold-start.json"
    assert script.main(["--sweep", str(small), "--out", str(out)]) == 0
    prior = ColdStartPrior.load(out)
    assert prior is not None and prior.trained_on == [str(s) for s in specs]
    card = json.loads((tmp_path / "cold-start.card.json").read_text())
    assert card["features"]["names"] == list(FEATURE_NAMES)
    assert card["training"]["rows"] == 40 and len(card["held_out"]) == 2
    assert {"xgboost", "tiletune", "triton"} <= set(card["versions"])


def test_the_benchmark_workloads_are_refused(script):
    script.check_not_benchmark(script.PRIOR_WORKLOADS)
    with pytest.raises(UsageError, match="benchmark workloads"):
        script.check_not_benchmark(script.PRIOR_WORKLOADS + script.WORKLOADS[:1])
