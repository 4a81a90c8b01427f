"""`RecordValidator`: which incoming records an import or merge accepts."""
from __future__ import annotations

from tiletune.db_validate import RecordValidator, task_for
from tiletune.tuning_db import Device, Record, TuningDB, Workload

DEVICE = Device.make("sim-h100", "sm90", "3.9.0")


def ok(workload: Workload, config: dict, latency_us: float) -> Record:
    return Record(workload_key=workload.key, device_key=DEVICE.key, config=config, status="ok", latency_us=latency_us)


def test_a_users_operator_is_known_once_its_hash_is_stored_and_its_knobs_must_match(tmp_path):
    mine = Workload.make("rmsnorm", "user-hash", {"N": 8, "D": 64}, ["float32", "float32"])
    theirs = Workload.make("rmsnorm", "user-hash", {"N": 16, "D": 64}, ["float32", "float32"])
    stranger = Workload.make("rmsnorm", "other-hash", {"N": 16, "D": 64}, ["float32", "float32"])
    with TuningDB(tmp_path / "t.db") as db:
        db.add_workload(mine)
        db.add_device(DEVICE)
        db.add_records([ok(mine, {"BLOCK_D": 64, "num_warps": 4}, 1.0)])
        validator = RecordValidator(db)
    assert task_for(theirs) is None  # not a built-in: no space to check against
    assert validator(theirs, ok(theirs, {"BLOCK_D": 32, "num_warps": 2}, 2.0)) is None
    problem = validator(theirs, ok(theirs, {"EVIL": 1}, 2.0))
    assert "config knobs ['EVIL'] are not those of rmsnorm's configs" in problem
    problem = validator(stranger, ok(stranger, {"BLOCK_D": 32, "num_warps": 2}, 2.0))
    assert "is not a built-in" in problem and "'other-hash'" in problem


def test_a_builtins_name_with_another_structure_is_not_that_builtin():
    real = Workload.make("matmul", "not-the-real-hash", {"M": 8, "N": 8, "K": 8}, ["float32", "float32"])
    assert task_for(real) is None
