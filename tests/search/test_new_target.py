"""A new simulated GPU is one `GPUTarget` in `kernels.target.TARGETS`: nothing else names the
GPUs, so the device request, the simulated measurer, the records' device key and the
simulator's latencies all follow from that one definition."""
from __future__ import annotations

import dataclasses

import pytest

from tiletune.kernels.target import H100, TARGETS
from tiletune.kernels.task import TaskSpec
from tiletune.search.devices import device_kinds
from tiletune.search.measurement.measurers import SimMeasurer
from tiletune.search.tuner import Budget, Tuner
from tiletune.tuning_db import TuningDB, Workload

# Half an H100 with a third of its memory bandwidth, on an older architecture.
SMALL = dataclasses.replace(H100, name="sim-small", capability="sm80", sm_count=66, hbm_gbps=1100.0)
ADD = TaskSpec.make("add", {"N": 300, "D": 1000}, "float32")


@pytest.mark.slow
def test_a_gpu_added_to_the_targets_tunes_end_to_end(monkeypatch, tmp_path):
    monkeypatch.setitem(TARGETS, SMALL.name, SMALL)
    assert device_kinds("sim-h100,sim-small") == ["sim-h100", "sim-small"]
    reports = {}
    with TuningDB(tmp_path / "t.db") as db:
        for kind in ("sim-h100", "sim-small"):
            reports[kind] = Tuner(ADD.build(), SimMeasurer(kind), db, seed=1, workers=1).run(
                Budget(trials=4, batch_size=4))
        devices = {r.device_key for r in db.records(Workload.of(ADD.build()).key)}
        small_device = SimMeasurer("sim-small").device
    assert small_device.capability == "sm80" and small_device.key in devices and len(devices) == 2
    # the same configs, a memory-bound operator: the smaller, slower-memory GPU takes longer
    assert reports["sim-small"].best_latency_us > reports["sim-h100"].best_latency_us
