"""bench/record_sweep.py on the simulated device at a tiny workload: record, resume, stop."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tiletune.kernels.task import TaskSpec
from tiletune.search.measurement.sweep import Sweep

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _script():
    spec = importlib.util.spec_from_file_location("record_sweep_script", BENCH / "record_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_sweep_is_recorded_then_resumed_without_measuring_again(tmp_path, capsys):
    script = _script()
    out = tmp_path / "sweep.jsonl"
    args = ["--device", "sim-h100", "--workload", "add N=64,D=64 float32", "--out", str(out), "--workers", "2"]
    assert script.main(args + ["--sample", "1"]) == 0
    spec = TaskSpec.make("add", {"N": 64, "D": 64}, "float32")
    first = Sweep.load(out)
    assert first.measurer == "sim-h100" and len(first.entries(spec)) == 2
    assert all(e.status == "ok" and e.latency_us > 0 for e in first.entries(spec).values())

    assert script.main(args + ["--sample", "2"]) == 0  # one more config: the two recorded stay as they are
    second = Sweep.load(out)
    assert len(second.entries(spec)) == 3
    assert second.header["created"] == first.header["created"]
    for config, entry in first.entries(spec).items():
        assert second.lookup(spec, config) == entry
    assert "configs left" not in capsys.readouterr().out


def test_a_time_limit_leaves_a_resumable_file_and_bad_workloads_are_refused(tmp_path, capsys):
    script = _script()
    out = tmp_path / "sweep.jsonl"
    assert script.main(["--workload", "add N=64,D=64 float32", "--out", str(out), "--time-limit", "0"]) == 0
    assert Sweep.load(out).specs() == []
    assert "run the same command again to resume" in capsys.readouterr().out
    assert script.main(["--workload", "matmul M=64", "--out", str(out)]) == 2
    assert script.main(["--workload", "nosuchop N=4 float32", "--out", str(out)]) == 2
    assert script.main(["--workload", "add", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3 and "OP SHAPE [DTYPE]" in err


def test_resuming_a_sweep_of_another_measurer_is_refused(tmp_path):
    from tiletune.errors import UsageError
    from tiletune.search.measurement.sweep import SWEEP_FORMAT, SWEEP_VERSION
    from tiletune.search.measurement.sweep_recording import record_sweep

    out = tmp_path / "sweep.jsonl"
    out.write_text(f'{{"format": "{SWEEP_FORMAT}", "version": {SWEEP_VERSION}, "device": "NVIDIA H100", '
                   '"measurer": "cuda", "triton": "3.9.0"}\n')
    with pytest.raises(UsageError, match="cannot resume"):
        record_sweep([TaskSpec.make("add", {"N": 8, "D": 8}, "float32")], out, resume=True)
