"""Many workloads under one budget: the workloads file and the task scheduler."""
from __future__ import annotations

import json

import pytest

from tiletune.errors import UsageError
from tiletune.kernels.task import TaskSpec
from tiletune.search.backends import LocalBackend
from tiletune.search.measurement.measurers import SimMeasurer
from tiletune.search.scheduler import TaskScheduler, load_workloads
from tiletune.search.tuner import Budget, Tuner
from tiletune.tuning_db import TuningDB


def test_a_json_workloads_file_reads_every_entry(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps([
        {"op": "matmul", "shape": {"M": 64, "N": 64, "K": 64}, "dtype": "float16", "weight": 3},
        {"op": "add", "shape": "N=10,D=20"},
    ]))
    entries = load_workloads(path)
    assert [str(e.spec) for e in entries] == ["matmul[M=64,N=64,K=64]:float16", "add[N=10,D=20]"]
    assert [e.weight for e in entries] == [3.0, 1.0]


def test_a_toml_workloads_file_reads_every_entry_and_resolves_files_beside_it(tmp_path):
    (tmp_path / "ops.py").write_text("")
    path = tmp_path / "w.toml"
    path.write_text('[[workload]]\nop = "softmax"\nshape = {N = 8, D = 16}\n\n'
                    '[[workload]]\nop = "ops.py:mine"\nshape = "N=4"\ndtype = "float32"\n')
    entries = load_workloads(path)
    assert entries[0].spec.op == "softmax" and dict(entries[0].spec.dims) == {"N": 8, "D": 16}
    assert entries[1].spec.op == f"{tmp_path / 'ops.py'}:mine"


@pytest.mark.parametrize("content, message", [
    ("{}", "non-empty list"),
    ("[]", "non-empty list"),
    ("[1]", "workload 0: expected a table"),
    ('[{"op": "add"}]', "'shape' must be"),
    ('[{"op": "add", "shape": {"N": 1.5}}]', "'shape' must be"),
    ('[{"op": "add", "shape": "N=x"}]', "is not NAME=INT"),
    ('[{"op": "add", "shape": "N=2", "weight": 0}]', "'weight' must be a positive number"),
    ('[{"op": "add", "shape": "N=2", "colour": 1}]', "unknown field colour"),
    ("[{", "not valid json"),
])
def test_a_bad_workloads_file_is_refused_naming_the_entry(tmp_path, content, message):
    path = tmp_path / "w.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        load_workloads(path)


def test_a_missing_workloads_file_is_refused(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_workloads(tmp_path / "nope.json")


@pytest.mark.slow
def test_the_scheduler_spends_the_total_budget_and_favours_the_heavier_workload(tmp_path):
    specs = [TaskSpec.make("add", {"N": 300, "D": 1000}, "float32"),
             TaskSpec.make("softmax", {"N": 1000, "D": 512}, "float32")]
    with TuningDB(tmp_path / "t.db") as db, LocalBackend(2) as backend:
        tuners = [Tuner(s.build(), SimMeasurer(), db, strategy="random", seed=0) for s in specs]
        reports = TaskScheduler(tuners, [1.0, 50.0]).run(Budget(trials=16, batch_size=2), backend)
        assert sum(r.trials for r in reports) == 16
        assert all(r.trials >= 2 for r in reports)  # every workload gets a first batch
        assert reports[1].trials > reports[0].trials
        assert len(db.records(tuners[0].workload.key)) == reports[0].trials


def test_a_workload_without_a_passing_config_comes_first():
    class Stub:
        def __init__(self, best, trials):
            self.report = type("R", (), {"best_latency_us": best, "trials": trials, "resumed": 0})()

    scheduler = TaskScheduler([Stub(10.0, 8), Stub(None, 8)], [1.0, 1.0])
    scheduler.bests = [[10.0], [None]]
    assert scheduler.gain(1) > scheduler.gain(0)
