"""Writing and reading workloads, devices and records."""
from __future__ import annotations

import sqlite_utils
import pytest

from tiletune.errors import TuningDBError
from tiletune.tuning_db import Record, Status, TuningDB, Workload, default_db_path


def rec(workload, device, config, status="ok", latency=None, **fields) -> Record:
    if status == "ok" and latency is None:
        latency = 10.0
    return Record(workload_key=workload.key, device_key=device.key, config=config, status=status, latency_us=latency,
                  **fields)


def test_workloads_and_devices_round_trip(db, workload, device, other_device, tmp_path):
    second = Workload.make("softmax", "op-hash-2", {"R": 5, "C": 999}, ["bfloat16"])
    db.add_workload(second)
    db.close()
    with TuningDB(tmp_path / "tune.db") as reopened:
        assert reopened.workloads() == [workload, second]
        assert reopened.workloads("softmax") == [second]
        assert reopened.workload(workload.key) == workload
        assert reopened.workload("no-such-key") is None
        assert reopened.devices() == sorted([device, other_device], key=lambda d: d.key)


def test_record_round_trips_every_field(db, workload, device, tmp_path):
    written = Record(
        workload_key=workload.key,
        device_key=device.key,
        config={"BLOCK_M": 64, "BLOCK_N": 32, "scale": 0.5, "order": "nm", "swizzle": False},
        status="ok",
        reason="verified",
        latency_us=12.25,
        latency_min_us=11.5,
        latency_spread=0.031,
        repeats=25,
        measurer="sim-h100",
        facts={"registers": 96, "spill_bytes": 0, "shared_memory": 49152, "notes": ["a", 1.5]},
        triton_version="3.4.0",
        tiletune_version="0.1.0",
        created=1_700_000_000.125,
        host="gpu-box-7",
    )
    assert db.add_records([written]) == 1
    db.close()
    with TuningDB(tmp_path / "tune.db", readonly=True) as reopened:
        assert reopened.records(workload.key) == [written]
        assert reopened.records(workload.key)[0].config_key == written.config_key


def test_created_zero_and_host_empty_are_stamped_at_write(db, workload, device):
    import socket

    db.add_records([rec(workload, device, {"B": 1})])
    (stored,) = db.records(workload.key)
    assert stored.created > 1_600_000_000
    assert stored.host == socket.gethostname() != ""


def test_re_adding_is_idempotent_and_the_first_measurement_stands(db, workload, device):
    batch = [rec(workload, device, {"B": 1}, latency=5.0), rec(workload, device, {"B": 2}, "timeout", reason="hang")]
    assert db.add_records(batch) == 2
    assert db.add_records(batch) == 0
    again = [rec(workload, device, {"B": 1}, latency=1.0), rec(workload, device, {"B": 3}, latency=7.0)]
    assert db.add_records(again) == 1
    stored = db.records(workload.key, device.key)
    assert [r.config for r in stored] == [{"B": 1}, {"B": 2}, {"B": 3}]
    assert stored[0].latency_us == 5.0


def test_another_measurer_is_another_record(db, workload, device):
    db.add_records([rec(workload, device, {"B": 1}, measurer="sim-h100")])
    assert db.add_records([rec(workload, device, {"B": 1}, measurer="cuda")]) == 1
    assert db.measured_config_keys(workload.key, device.key) == {'{"B":1}'}
    assert db.measured_config_keys(workload.key, device.key, measurer="cuda") == {'{"B":1}'}
    assert db.measured_config_keys(workload.key, device.key, measurer="replay") == set()


def test_a_batch_with_a_bad_status_writes_nothing(db, workload, device):
    batch = [rec(workload, device, {"B": 1}), rec(workload, device, {"B": 2}), rec(workload, device, {"B": 3}, "crashed")]
    with pytest.raises(TuningDBError, match="'crashed'"):
        db.add_records(batch)
    assert db.records(workload.key) == []


def test_a_batch_that_fails_mid_insert_is_rolled_back(db, workload, device, monkeypatch):
    real_insert_all = sqlite_utils.db.Table.insert_all

    def insert_then_fail(self, *args, **kwargs):
        real_insert_all(self, *args, **kwargs)
        raise RuntimeError("disk went away")

    monkeypatch.setattr(sqlite_utils.db.Table, "insert_all", insert_then_fail)
    with pytest.raises(RuntimeError, match="disk went away"):
        db.add_records([rec(workload, device, {"B": i}) for i in range(5)])
    monkeypatch.undo()
    assert db.records(workload.key) == []
    # The connection is not left inside the failed transaction.
    assert db.add_records([rec(workload, device, {"B": 1})]) == 1


def test_records_of_unknown_workloads_or_devices_are_refused(db, workload, device):
    stranger = Workload.make("matmul", "op-hash-9", {"M": 1}, ["float16"])
    with pytest.raises(TuningDBError, match=f"unknown workload_key {stranger.key}"):
        db.add_records([rec(workload, device, {"B": 1}), rec(stranger, device, {"B": 1})])
    assert db.records(workload.key) == []


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"config": {"B": float("nan")}}, "finite"),
        ({"config": {"B": [1]}}, "expected int"),
        ({"latency_us": None}, "needs a latency_us"),
        ({"latency_us": float("inf")}, "latency_us"),
        ({"repeats": -1}, "repeats"),
        ({"facts": {"f": object()}}, "facts"),
    ],
)
def test_invalid_records_are_refused(db, workload, device, fields, message):
    base = {"workload_key": workload.key, "device_key": device.key, "config": {"B": 1}, "status": "ok", "latency_us": 1.0}
    with pytest.raises(TuningDBError, match=message):
        db.add_records([Record(**{**base, **fields})])
    assert db.records(workload.key) == []


def test_best_picks_the_lowest_ok_latency_and_ignores_failures(db, workload, device, other_device):
    db.add_records([
        rec(workload, device, {"B": 1}, latency=5.0),
        rec(workload, device, {"B": 2}, latency=3.0),
        rec(workload, device, {"B": 3}, latency=4.0),
        # Measured fast but wrong, and a crash: neither may win.
        rec(workload, device, {"B": 4}, "wrong_result", latency=0.5),
        rec(workload, device, {"B": 5}, "runtime_error", reason="illegal address"),
        rec(workload, other_device, {"B": 6}, latency=1.0),
    ])
    best = db.best(workload.key, device.key)
    assert best is not None and best.config == {"B": 2} and best.latency_us == 3.0
    assert {k: r.config for k, r in db.best_per_device(workload.key).items()} == {
        device.key: {"B": 2},
        other_device.key: {"B": 6},
    }
    assert db.status_counts(workload.key, device.key) == {
        **dict.fromkeys(Status, 0), "ok": 3, "wrong_result": 1, "runtime_error": 1,
    }
    assert [r.config for r in db.records(workload.key, device.key, status="ok")] == [{"B": 1}, {"B": 2}, {"B": 3}]


def test_best_is_none_without_an_ok_record(db, workload, device):
    db.add_records([rec(workload, device, {"B": 1}, "compile_error", reason="out of resources")])
    assert db.best(workload.key, device.key) is None
    assert db.best_per_device(workload.key) == {}


def test_best_can_be_restricted_to_a_measurer(db, workload, device):
    db.add_records([rec(workload, device, {"B": 1}, latency=1.0, measurer="sim-h100"),
                    rec(workload, device, {"B": 2}, latency=2.0, measurer="cuda")])
    assert db.best(workload.key, device.key, measurer="cuda").config == {"B": 2}


def test_readonly_refuses_writes_and_never_creates_a_file(tmp_path, db, workload):
    missing = tmp_path / "missing.db"
    with pytest.raises(TuningDBError, match="does not exist"):
        TuningDB(missing, readonly=True)
    assert not missing.exists()
    with TuningDB(db.path, readonly=True) as ro, pytest.raises(TuningDBError, match="read-only"):
        ro.add_workload(workload)


def test_the_file_is_in_wal_mode(db):
    assert db._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_closed_db_raises_tuning_db_error(db, workload):
    db.close()
    with pytest.raises(TuningDBError, match="closed"):
        db.records(workload.key)


def test_default_db_path(monkeypatch, tmp_path):
    monkeypatch.setenv("TILETUNE_DB", str(tmp_path / "team.db"))
    assert default_db_path() == tmp_path / "team.db"
    monkeypatch.delenv("TILETUNE_DB")
    assert str(default_db_path()) == "tiletune.db"
