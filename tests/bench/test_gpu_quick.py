"""bench/gpu_quick.sh and its driver, on the CPU: the dry run stops fast and clearly without a
GPU, the plan fits the 8 minutes with the issue's shapes, the shortlists are the simulator's
fastest legal configs, and a run cut short keeps every case it measured."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def _module(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick():
    return _module("gpu_quick")


def test_the_dry_run_fails_fast_and_says_why_without_a_gpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_QUICK_SITE": str(tmp_path / "site")}
    started = time.monotonic()
    done = subprocess.run(["bash", "bench/gpu_quick.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "no CUDA GPU is visible" in done.stderr and "torch.cuda.is_available() is False" in done.stderr
    assert "dry run: would install" in done.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "site").exists()  # a dry run installs nothing


def test_without_carried_wheels_the_script_names_what_is_missing(tmp_path):
    # a python that lacks sqlite_utils: a stand-in whose import finder hides it
    stub = tmp_path / "python"
    stub.write_text(f'#!/usr/bin/env bash\nexec {sys.executable} -c "import sys; sys.modules[\'sqlite_utils\'] = None; '
                    'import importlib.util as u; print(\'sqlite_utils\')" "$@"\n')
    stub.chmod(0o755)
    (tmp_path / "no-wheels").mkdir()
    env = {**os.environ, "PYTHON": str(stub), "GPU_QUICK_WHEELS": str(tmp_path / "no-wheels")}
    done = subprocess.run(["bash", "bench/gpu_quick.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "lacks: sqlite_utils" in done.stderr and "fetch_device_wheels.sh" in done.stderr


def test_the_plan_covers_the_issue_shapes_and_fits_eight_minutes(quick):
    cases = quick.quick_cases()
    gemm = {(c.dtype, c.dims["M"], c.dims["N"], c.dims["K"]) for c in cases if c.kind == "gemm"}
    shapes = {(4096, 4096, 4096), (8192, 8192, 8192)} | {(m, 14336, 4096) for m in (16, 128, 4096)} | {(16, 4096, 14336)}
    assert gemm == {(d, *s) for d in ("float16", "bfloat16") for s in shapes}
    assert {c.op for c in cases if c.kind != "gemm"} == {"matmul_bias_gelu", "softmax", "layernorm", "rmsnorm",
                                                          "attention", "causal_attention"}
    assert all("eager" in c.baselines and c.tune_seconds > 0 for c in cases)
    # every headline before the bf16 GEMMs, so that a run cut short still has each of them
    kinds = [c.kind for c in cases]
    assert kinds.index("attention") < [c.dtype for c in cases].index("bfloat16")
    # the script gives the driver what is left of 480 s after installing (~15 s) and the GPU tests
    script = (BENCH / "gpu_quick.sh").read_text()
    assert "GPU_QUICK_SECONDS:-480}" in script and "GPU_QUICK_PYTEST_SECONDS:-90}" in script
    assert quick.planned_seconds(cases) <= 480 - 90 - 15


def test_shortlists_are_the_simulators_fastest_legal_configs(quick):
    from tiletune.kernels.task import Task, TaskSpec
    from tiletune.schedules.config import Config

    (case,) = [c for c in quick.quick_cases() if c.id == "gemm-fp16-16x14336x4096"]
    picks = quick.shortlist(case, k=4, sampled=48)
    assert len(picks) == 4
    times = [us for _, us in picks]
    assert times == sorted(times) and times[0] > 0
    space = Task(TaskSpec.make(case.op, case.dims, case.dtype)).space
    assert all(space.is_legal(Config.from_dict(c)) for c, _ in picks)
    # ranked among more samples, the best can only get better
    assert quick.shortlist(case, k=1, sampled=96)[0][1] <= times[0]


def test_shortlist_first_then_the_inner_strategy(quick):
    class Inner:
        prior = []

        def propose(self, space, history, n):
            return ["x", "a", "y"][:n]

    class Space:
        def is_legal(self, c):
            return c != "bad"

    class History:
        tried = {"b"}

    strategy = quick.ShortlistFirst(["a", "b", "bad", "c"], Inner())
    assert strategy.propose(Space(), History(), 2) == ["a", "c"]
    assert strategy.propose(Space(), History(), 4) == ["a", "c", "x", "y"]
    strategy.prior = [1]
    assert strategy.then.prior == [1]


def test_a_run_cut_short_keeps_every_case_it_measured(quick, tmp_path):
    cases = [dataclasses.replace(c, planned_seconds=10.0) for c in quick.quick_cases()[:4]]
    now = [0.0]
    written = []

    def measure(case):
        now[0] += case.planned_seconds
        if case is cases[1]:
            raise RuntimeError("a kernel failed")
        return {"id": case.id, "kind": case.kind, "us": {"tiletune": 1.0}}

    def write(rows):
        path = tmp_path / "r.json"
        path.write_text(json.dumps(rows))
        written.append([r["id"] for r in json.loads(path.read_text())])

    deadline = 25.0  # room for two cases of 10 s and a bit, not three
    rows = quick.run_cases(cases, measure, write, deadline, clock=lambda: now[0])
    assert written == [[c.id for c in cases[:i]] for i in range(1, 5)]  # after every case
    assert rows[0]["us"] == {"tiletune": 1.0}
    assert rows[1]["failures"]["run"] == "RuntimeError: a kernel failed"
    assert rows[2]["skipped"] and "planned" in rows[2]["failures"]["run"] and rows[3]["skipped"]
