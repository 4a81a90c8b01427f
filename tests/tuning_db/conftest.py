"""Fixtures for the tuning DB tests: a workload, two devices and a DB holding them."""
from __future__ import annotations

import pytest

from tiletune.tuning_db import Device, TuningDB, Workload


@pytest.fixture
def workload() -> Workload:
    return Workload.make("matmul", "op-hash-1", {"M": 100, "N": 70, "K": 33}, ["float16", "float16", "float32"])


@pytest.fixture
def device() -> Device:
    return Device.make("sim-h100", "sm90", "3.4.0")


@pytest.fixture
def other_device() -> Device:
    return Device.make("NVIDIA H200", "sm90", "3.4.0")


@pytest.fixture
def db(tmp_path, workload, device, other_device):
    with TuningDB(tmp_path / "tune.db") as opened:
        opened.add_workload(workload)
        opened.add_device(device)
        opened.add_device(other_device)
        yield opened
