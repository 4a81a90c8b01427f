"""GPU tests: run with `pytest -m gpu` on a machine with CUDA (they skip elsewhere)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu


def test_loaded_builtins_match_torch_on_the_gpu(tmp_path):
    import torch

    import tiletune as tt

    a = torch.randn(1000, 515, device="cuda", dtype=torch.float16)
    b = torch.randn(515, 777, device="cuda", dtype=torch.float16)
    out = tt.load("matmul", db=tmp_path / "none.db")(a, b)
    torch.testing.assert_close(out.float(), a.float() @ b.float(), rtol=2e-2, atol=2e-1)
    x = torch.randn(333, 1000, device="cuda")
    torch.testing.assert_close(tt.load("softmax", db=tmp_path / "none.db")(x), torch.softmax(x, -1))


def test_the_same_config_measured_twice_agrees(tmp_path):
    from tiletune.kernels.task import TaskSpec
    from tiletune.search.execution.workers import COMPILE_ENV, WorkerPool
    from tiletune.search.measurement.measurers import CudaMeasurer

    spec = TaskSpec.make("matmul", {"M": 4096, "N": 4096, "K": 4096}, "float16")
    config = spec.build().space.default()
    with WorkerPool(1, env=COMPILE_ENV) as pool:
        measurer = CudaMeasurer(pool, repeats=100)
        first, second = measurer.measure(spec, [(config, {}), (config, {})])
    assert first.status == second.status == "ok", (first.reason, second.reason)
    assert abs(first.latency_us - second.latency_us) / first.latency_us < 0.05
    assert first.latency_spread < 0.2


def test_autotune_on_the_gpu_records_real_measurements(tmp_path):
    import tiletune as tt
    from tiletune.tuning_db import TuningDB, Workload

    report = tt.autotune("softmax", {"N": 4096, "D": 1024}, dtype="float32", device="cuda", trials=6,
                         db=tmp_path / "t.db")
    assert report.statuses["ok"] >= 1, report.reasons
    with TuningDB(tmp_path / "t.db", readonly=True) as db:
        assert {r.measurer for r in db.records(Workload.of(report.spec.build()).key)} == {"cuda"}


@pytest.mark.parametrize("n, mode", [(256, "graph"), (8192, "events")])
def test_cuda_timer_agrees_with_itself_in_both_modes(n, mode):
    import torch

    from tiletune.search.measurement.timing import CudaTimer

    timer = CudaTimer()
    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    b = torch.randn(n, n, device="cuda", dtype=torch.float16)
    calls = [lambda: a @ b] * timer.sets_for(3 * a.nbytes)
    first, second = timer.time(calls), timer.time(calls)
    assert first.mode == second.mode == mode
    assert abs(first.median_us - second.median_us) / first.median_us < 0.05, (first, second)
    assert first.iqr_rel < 0.2 and first.facts["flush_bytes"] >= timer.l2_bytes
