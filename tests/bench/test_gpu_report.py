"""The GPU suite's report assembly with made-up figures: ratios, geomeans, merging, JSON, README."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


report = _module("gpu_report")


def case(id, kind, us, flops=2e9, nbytes=1e8, tuning=10.0):
    return {"id": id, "kind": kind, "op": "x", "dtype": "float16", "dims": {}, "flops": flops, "bytes": nbytes,
            "us": us, "tuning_seconds": tuning}


CASES = [
    case("gemm-a", "gemm", {"tiletune": 100.0, "eager": 200.0, "compile": 100.0, "triton": None}, tuning=30.0),
    case("gemm-b", "gemm", {"tiletune": 100.0, "eager": 50.0, "compile": 100.0, "triton": 150.0}, tuning=50.0),
    case("epi-a", "epilogue", {"tiletune": 100.0, "eager": 130.0, "compile": 90.0, "triton": 110.0}, tuning=40.0),
    case("mem-a", "memory", {"tiletune": 50.0, "eager": 60.0, "compile": 55.0, "triton": 52.0}, nbytes=1.5e8),
    case("mem-b", "memory", {"tiletune": 40.0, "eager": 45.0, "compile": None, "triton": 41.0}, nbytes=9.6e7),
]


def test_geomean_ignores_missing_and_nonpositive_values():
    assert report.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert report.geomean([2.0, None, 0.0, math.nan, 8.0]) == pytest.approx(4.0)
    assert report.geomean([None]) is None


def test_summary_figures_from_fake_cases():
    result = report.build_result("NVIDIA H100 80GB HBM3", {"torch": "2.13"}, CASES, copy_gbps=3000.0,
                                 ceiling_tflops=700.0)
    assert result["gemm_vs_cublas_geomean"] == pytest.approx(1.0)  # 2x and 0.5x
    assert result["epilogue_vs_eager_geomean"] == pytest.approx(1.3)
    # 1.5e8 B / 50 us = 3000 GB/s (100%), 9.6e7 B / 40 us = 2400 GB/s (80%)
    assert result["memory_bound_pct_of_copy_bw"] == pytest.approx(math.sqrt(100 * 80))
    assert result["tuning_seconds_median"] == 30.0  # median of 30, 50, 40, 10, 10
    assert result["geomean_ratios_by_kind"]["gemm"]["triton"] == pytest.approx(1.5)
    assert result["geomean_ratios_by_kind"]["memory"]["compile"] == pytest.approx(1.1)
    first = result["cases"][0]
    assert first["ratios"] == {"eager": 2.0, "compile": 1.0, "triton": None}
    assert first["throughput"]["tiletune"]["tflops"] == pytest.approx(20.0)  # 2e9 flops in 100 us
    assert first["pct_of_compute_ceiling"] == pytest.approx(100 * 20 / 700)
    for key in ("device", "versions", "gemm_vs_cublas_geomean", "epilogue_vs_eager_geomean",
                "memory_bound_pct_of_copy_bw", "tuning_seconds_median", "cases"):
        assert key in result
    json.dumps(result)  # plain JSON data


def test_a_failed_tiletune_case_gives_no_ratio():
    failed = case("gemm-c", "gemm", {"tiletune": None, "eager": 100.0})
    result = report.build_result("gpu", {}, [failed], None, None)
    assert result["gemm_vs_cublas_geomean"] is None and result["cases"][0]["ratios"] == {"eager": None}


def test_partial_runs_merge_by_case_id(tmp_path):
    first = report.build_result("gpu", {}, CASES[:2], 3000.0, None)
    path = tmp_path / "r.json"
    report.write_json(path, first)
    earlier = report.load_result(path)
    redo = case("gemm-b", "gemm", {"tiletune": 25.0, "eager": 50.0})
    merged = report.merge_cases(earlier["cases"], [redo, CASES[3]])
    assert [c["id"] for c in merged] == ["gemm-a", "gemm-b", "mem-a"]
    assert merged[1]["us"]["tiletune"] == 25.0
    again = report.build_result("gpu", {}, merged, 3000.0, None)
    assert again["gemm_vs_cublas_geomean"] == pytest.approx(2.0)  # 2x and 2x
    assert report.load_result(tmp_path / "absent.json") is None


def test_the_readme_table_goes_between_the_markers_only():
    result = report.build_result("NVIDIA H100", {}, CASES, 3000.0, None)
    table = report.markdown_table(result, "bench/results/2026-11-23-nvidia-h100.json")
    assert "| gemm | 2 | 1.00x | 1.00x | 1.50x |" in table
    assert "| epilogue | 1 | 1.30x |" in table and "of the measured copy bandwidth (3000 GB/s)" in table
    text = f"# title\n\nbefore\n{report.README_BEGIN}\nold table\n{report.README_END}\nafter\n"
    updated = report.update_readme(text, table)
    assert "old table" not in updated and updated.startswith("# title\n\nbefore\n") and updated.endswith("after\n")
    assert report.update_readme(updated, table) == updated  # idempotent
    with pytest.raises(ValueError, match="markers"):
        report.update_readme("# no markers\n", table)


suite = _module("gpu_suite")


def test_the_suite_covers_every_kind_and_its_cases_are_valid_tiletune_workloads():
    from tiletune.kernels.task import TaskSpec

    cases = suite.all_cases()
    assert len({c.id for c in cases}) == len(cases)
    assert {c.kind for c in cases} == {"gemm", "epilogue", "memory", "attention"}
    gemm = [c for c in cases if c.kind == "gemm"]
    assert len(gemm) == 2 * (4 + 9 - 1) and {c.dtype for c in gemm} == {"float16", "bfloat16"}
    assert {c.dims["M"] for c in gemm} >= {16, 128, 4096} and max(c.dims["K"] for c in gemm) == 14336
    quick = suite.select(cases, None, quick=True)
    assert {c.kind for c in quick} == {"gemm", "epilogue", "memory", "attention"} and len(quick) < 10
    assert [c.id for c in suite.select(cases, ["memory-rmsnorm"], quick=False)] == [
        "memory-rmsnorm-fp16-8192x4096", "memory-rmsnorm-fp32-4096x4096"]
    seen = set()
    for c in cases:  # one build per operator and dtype: the dims' names and the dtype are accepted
        if (c.op, c.dtype) not in seen:
            seen.add((c.op, c.dtype))
            TaskSpec.make(c.op, c.dims, c.dtype).build()


def test_without_a_gpu_the_suite_says_so_and_exits_cleanly(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert suite.main(["--quick"]) == 0
    assert "no CUDA GPU visible" in capsys.readouterr().out
    assert suite.results_path("NVIDIA H100 80GB HBM3", "2026-11-23").name == "2026-11-23-nvidia-h100-80gb-hbm3.json"
