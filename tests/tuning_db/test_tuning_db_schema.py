"""Schema versions 2 (records keep their host) and 3 (claims, retries, indexes for big files),
and the in-place migration of older files."""
from __future__ import annotations

import socket
import sqlite3

import pytest

from tiletune.errors import TuningDBError
from tiletune.tuning_db import SCHEMA_VERSION, Record, TuningDB


def ok(workload, device, b: int, latency_us: float, **fields) -> Record:
    return Record(workload_key=workload.key, device_key=device.key, config={"B": b}, status="ok",
                  latency_us=latency_us, **fields)


V3_TABLES = ("claims", "retries")
V3_INDEXES = ("records_usable", "records_counts", "workloads_op_name")


def make_version_2(path) -> None:
    """Turn a fresh DB file into what tiletune's schema version 2 wrote: no claims, no retries,
    no indexes for big files."""
    with sqlite3.connect(path) as conn:
        for table in V3_TABLES:
            conn.execute(f"drop table {table}")
        for index in V3_INDEXES:
            conn.execute(f"drop index {index}")
        conn.execute("update meta set value = '2' where key = 'schema_version'")
    conn.close()


def names_in(path, kind: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        found = {row[0] for row in conn.execute("select name from sqlite_master where type = ?", [kind])}
    conn.close()
    return found


def make_version_1(path) -> None:
    """Turn a fresh DB file into what tiletune's schema version 1 wrote: no host column, and
    the identity index over (workload, device, measurer, config)."""
    make_version_2(path)
    with sqlite3.connect(path) as conn:
        conn.execute("drop index records_identity")
        conn.execute("alter table records drop column host")
        conn.execute("create unique index records_identity on records"
                     " (workload_key, device_key, measurer, config_key)")
        conn.execute("update meta set value = '1' where key = 'schema_version'")
    conn.close()


def columns(path) -> list[str]:
    with sqlite3.connect(path) as conn:
        names = [row[1] for row in conn.execute("pragma table_info(records)")]
    conn.close()
    return names


def meta_version(path) -> str:
    with sqlite3.connect(path) as conn:
        (value,) = conn.execute("select value from meta where key = 'schema_version'").fetchone()
    conn.close()
    return value


@pytest.fixture
def v1_path(db, workload, device):
    db.add_records([ok(workload, device, i, float(i + 1)) for i in range(3)])
    db.close()
    make_version_1(db.path)
    assert "host" not in columns(db.path)
    return db.path


def test_schema_version_is_3():
    assert SCHEMA_VERSION == 3


def test_a_version_2_file_reads_as_it_is_and_migrates_keeping_its_records(db, workload, device):
    db.add_records([ok(workload, device, i, float(i + 1)) for i in range(3)])
    db.close()
    make_version_2(db.path)
    before = db.path.read_bytes()
    with TuningDB(db.path, readonly=True) as opened:
        assert [r.config for r in opened.records(workload.key)] == [{"B": 0}, {"B": 1}, {"B": 2}]
    assert db.path.read_bytes() == before and meta_version(db.path) == "2"
    with TuningDB(db.path) as opened:
        assert opened.best(workload.key, device.key).config == {"B": 0}
    assert meta_version(db.path) == "3"
    assert set(V3_TABLES) <= names_in(db.path, "table") and set(V3_INDEXES) <= names_in(db.path, "index")
    with TuningDB(db.path, readonly=True) as opened:
        assert len(opened.records(workload.key)) == 3


def test_a_version_1_file_reads_read_only_without_being_changed(v1_path, workload, device):
    before = v1_path.read_bytes()
    with TuningDB(v1_path, readonly=True) as db:
        records = db.records(workload.key)
        assert [r.config for r in records] == [{"B": 0}, {"B": 1}, {"B": 2}]
        assert {r.host for r in records} == {""}  # version 1 did not keep it: unknown
        assert db.best(workload.key, device.key).config == {"B": 0}
    assert v1_path.read_bytes() == before
    assert meta_version(v1_path) == "1"


def test_a_version_1_file_is_migrated_in_place_when_opened_for_writing(v1_path, workload, device):
    with TuningDB(v1_path) as db:
        assert [r.host for r in db.records(workload.key)] == ["", "", ""]
        assert db.add_records([ok(workload, device, 9, 0.5)]) == 1
        # the identity now includes the host: the same config measured here is a new record
        assert db.add_records([ok(workload, device, 0, 0.7)]) == 1
        assert db.add_records([ok(workload, device, 0, 0.7)]) == 0
        assert db.best(workload.key, device.key).config == {"B": 9}
    assert meta_version(v1_path) == str(SCHEMA_VERSION)
    assert columns(v1_path)[-1] == "host"
    with TuningDB(v1_path, readonly=True) as db:
        hosts = [r.host for r in db.records(workload.key)]
    assert hosts == ["", "", "", socket.gethostname(), socket.gethostname()]


def test_a_failed_migration_leaves_the_version_1_file_as_it_was(v1_path, monkeypatch):
    from tiletune.tuning_db import db as db_module

    def broken(db, version):
        db.execute("alter table records add column host text not null default ''")
        raise RuntimeError("power cut")

    monkeypatch.setattr(db_module, "migrate", broken)
    with pytest.raises(RuntimeError, match="power cut"):
        TuningDB(v1_path)
    assert "host" not in columns(v1_path) and meta_version(v1_path) == "1"
    monkeypatch.undo()
    with TuningDB(v1_path) as db:  # and the real migration still runs afterwards
        assert db.workloads()
    assert "host" in columns(v1_path)


def test_two_hosts_measuring_one_config_are_two_records_and_best_spans_them(db, workload, device):
    mine = ok(workload, device, 1, 5.0, host="box-a")
    theirs = ok(workload, device, 1, 4.0, host="box-b")
    assert db.add_records([mine, theirs]) == 2
    assert db.add_records([mine, theirs]) == 0
    assert db.best(workload.key, device.key).host == "box-b"
    # a resumed run skips configs measured on any host: nothing is measured twice
    assert db.measured_config_keys(workload.key, device.key) == {'{"B":1}'}


def test_a_record_whose_host_is_not_text_is_refused(db, workload, device):
    with pytest.raises(TuningDBError, match="host=3 is not a string"):
        db.add_records([ok(workload, device, 1, 1.0, host=3)])
