"""The GPU benchmarks end to end on a real device (run with `pytest -m gpu`; they skip elsewhere)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
BENCH = Path(__file__).resolve().parents[2] / "bench"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_suite_measures_one_memory_case_against_its_baselines(tmp_path):
    suite = _module("gpu_suite")
    out = tmp_path / "results.json"
    assert suite.main(["--cases", "memory-softmax-fp16", "--tune-seconds", "15", "--baselines", "eager", "triton",
                       "--no-readme", "--results", str(out)]) == 0
    result = json.loads(out.read_text())
    (case,) = result["cases"]
    assert case["us"]["tiletune"] and case["us"]["eager"] and case["us"]["triton"], case["failures"]
    assert case["pct_of_copy_bw"] > 10 and result["memory_bound_pct_of_copy_bw"] == pytest.approx(case["pct_of_copy_bw"])
    assert result["copy_bandwidth_gbps"] > 500


def test_call_overhead_runs_on_the_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("TILETUNE_DB", str(tmp_path / "none.db"))
    monkeypatch.setattr(sys, "argv", ["call_overhead.py", "--calls", "2000", "--json", str(tmp_path / "o.json")])
    assert _module("call_overhead").main() == 0
    figures = json.loads((tmp_path / "o.json").read_text())
    assert figures["gpu"]["device_4096"]["ratio"] == pytest.approx(1.0, abs=0.05)


def test_gpu_suite_times_every_column_of_a_row_in_one_mode(tmp_path):
    suite = _module("gpu_suite")
    out = tmp_path / "results.json"
    assert suite.main(["--cases", "attention-causal", "--tune-seconds", "10", "--baselines", "eager", "triton",
                       "--no-readme", "--results", str(out)]) == 0
    (case,) = json.loads(out.read_text())["cases"]
    assert case["sdpa_backend"] in ("flash", "efficient", "cudnn", "math")
    assert case["triton_variants"] and case["us"]["triton"] == min(v for v in case["triton_variants"].values() if v)
    modes = {mode.split("/")[0] for mode in case["timing_mode"].values()}
    assert modes == {case["row_timing"]}, case["timing_mode"]
