"""Files that are not tiletune DBs, and rows that are not plain data, never crash or run code."""
from __future__ import annotations

import os
import shutil
import sqlite3
import warnings

import pytest

from tiletune.errors import TuningDBError
from tiletune.tuning_db import Record, TuningDB
from tiletune.tuning_db import db as db_module


def fill(db, workload, device, n: int) -> None:
    db.add_records([Record(workload_key=workload.key, device_key=device.key, config={"B": i}, status="ok",
                           latency_us=float(i + 1)) for i in range(n)])


def test_a_text_file_is_not_a_sqlite_database(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("BLOCK_M=64\n" * 50)
    with pytest.raises(TuningDBError, match="notes.db is not a SQLite database"):
        TuningDB(path)
    assert path.read_text() == "BLOCK_M=64\n" * 50


@pytest.mark.parametrize("keep", [50, 100, 4096, 0.5, -1])
def test_a_truncated_db_is_refused(tmp_path, db, workload, device, keep):
    fill(db, workload, device, 2000)
    db.close()
    size = db.path.stat().st_size
    cut = tmp_path / "cut.db"
    shutil.copy(db.path, cut)
    os.truncate(cut, int(size * keep) if isinstance(keep, float) else keep % size)
    with pytest.raises(TuningDBError, match="cut.db is not a SQLite database: it is truncated"):
        TuningDB(cut)


def test_damage_found_after_opening_is_a_tuning_db_error(tmp_path, db, workload, device, monkeypatch):
    # When a -wal file is present the header check cannot measure the file, so damage shows up
    # only when a query reaches it; it must still surface as TuningDBError.
    fill(db, workload, device, 2000)
    db.close()
    os.truncate(db.path, db.path.stat().st_size // 2)
    monkeypatch.setattr(db_module, "_check_file_header", lambda path: None)
    with pytest.raises(TuningDBError, match="tune.db"):
        with TuningDB(db.path) as damaged:
            damaged.records(workload.key)


@pytest.mark.parametrize("version", ["4", "0", "2; drop table records", ""])
@pytest.mark.parametrize("readonly", [False, True])
def test_another_schema_version_is_refused_and_left_unchanged(db, version, readonly):
    db.close()
    with sqlite3.connect(db.path) as conn:
        conn.execute("update meta set value = ? where key = 'schema_version'", [version])
    conn.close()
    before = db.path.read_bytes()
    with pytest.raises(TuningDBError) as info:
        TuningDB(db.path, readonly=readonly)
    assert str(info.value) == (f"{db.path} is a tiletune DB of schema version {version!r}; this tiletune reads"
                               " versions 1, 2, 3 (a newer tiletune may read it)")
    assert db.path.read_bytes() == before


def test_another_applications_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table photos (id integer primary key, name text)")
    conn.close()
    with pytest.raises(TuningDBError, match="not a tiletune DB"):
        TuningDB(path)


def test_an_empty_file_gets_the_schema_unless_read_only(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(TuningDBError, match="empty SQLite database"):
        TuningDB(path, readonly=True)
    with TuningDB(path) as db:
        assert db.workloads() == []
    with TuningDB(path, readonly=True) as db:
        assert db.devices() == []


BAD_CONFIGS = [
    ("{not json", "not valid JSON"),
    ("[64, 32]", "must be a JSON object"),
    ("__import__('os').system('touch PWNED')", "not valid JSON"),
    ('"__import__(\'os\').system(\'touch PWNED\')"', "must be a JSON object"),
    ('{"B": NaN}', "not a finite number"),
    ('{"B": 1e999}', "not a finite number"),
    ('{"B": 123456789012345678901234567890}', "64-bit"),
    ('{"B": null}', "expected int"),
    ('{"B": {"nested": 1}}', "expected int"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
]


def insert_raw(path, workload, device, config: str, *, status="ok", facts="{}", config_key=None) -> int:
    with sqlite3.connect(path) as conn:
        cursor = conn.execute(
            "insert into records (workload_key, device_key, config, config_key, status, latency_us, facts)"
            " values (?, ?, ?, ?, ?, 0.5, ?)",
            (workload.key, device.key, config, config_key or f"raw-{config[:40]}", status, facts),
        )
        row_id = cursor.lastrowid
    conn.close()
    return row_id


@pytest.mark.parametrize("config, problem", BAD_CONFIGS, ids=range(len(BAD_CONFIGS)))
def test_a_row_with_a_bad_config_is_skipped_with_a_warning(db, workload, device, config, problem, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fill(db, workload, device, 3)
    bad_id = insert_raw(db.path, workload, device, config)
    with pytest.warns(UserWarning, match=f"record id {bad_id} .*{problem}"):
        good = db.records(workload.key)
    assert [r.config for r in good] == [{"B": 0}, {"B": 1}, {"B": 2}]
    # The bad row has the lowest latency; best() falls back to the fastest readable one.
    assert db.best(workload.key, device.key).config == {"B": 0}
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"status": "exploded"}, "status 'exploded'"),
        ({"facts": "[1]"}, "facts must be a JSON object"),
        ({"facts": "{oops"}, "facts is not valid JSON"),
        ({"config_key": "something-else"}, "config_key column does not match"),
    ],
)
def test_a_row_with_other_bad_fields_is_skipped(db, workload, device, fields, problem):
    fill(db, workload, device, 2)
    bad_id = insert_raw(db.path, workload, device, '{"B":99}', **{"config_key": '{"B":99}', **fields})
    with pytest.warns(UserWarning, match=f"record id {bad_id} .*{problem}"):
        assert len(db.records(workload.key)) == 2


def test_unreadable_rows_warn_once_per_db_object(db, workload, device):
    fill(db, workload, device, 2)
    for config, _ in BAD_CONFIGS[:4]:
        insert_raw(db.path, workload, device, config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(db.records(workload.key)) == 2
        assert db.best(workload.key, device.key).config == {"B": 0}
        assert len(db.best_per_device(workload.key)) == 1
    assert len(caught) == 1 and "and 3 more" in str(caught[0].message)
    with warnings.catch_warnings(record=True) as caught, TuningDB(db.path) as fresh:
        warnings.simplefilter("always")
        fresh.records(workload.key)
    assert len(caught) == 1


def test_a_workload_row_with_bad_dims_is_skipped(db, workload):
    with sqlite3.connect(db.path) as conn:
        conn.execute("insert into workloads values ('bad', 'matmul', 'h', '{\"M\": \"x\"}', '[]', 0)")
    conn.close()
    with pytest.warns(UserWarning, match="workload bad .*dims"):
        assert db.workloads() == [workload]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_intact_db_in_a_read_only_folder_is_read(tmp_path, db, workload, device):
    fill(db, workload, device, 3)
    db.close()
    folder = db.path.parent
    folder.chmod(0o555)
    try:
        with TuningDB(db.path, readonly=True) as opened:
            assert opened.best(workload.key, device.key).config == {"B": 0}
        assert not db.path.with_name(db.path.name + "-shm").exists()
    finally:
        folder.chmod(0o755)


def test_an_intact_db_is_read_as_immutable_where_its_folder_cannot_be_written(tmp_path, db, workload, device,
                                                                               monkeypatch):
    # the same check as above, for a test run as root: the folder is reported unwritable
    fill(db, workload, device, 3)
    db.close()
    real_access = os.access
    monkeypatch.setattr(db_module.os, "access",
                        lambda path, mode: False if mode == os.W_OK else real_access(path, mode))
    with TuningDB(db.path, readonly=True) as opened:
        assert opened.best(workload.key, device.key).config == {"B": 0}
        assert opened._conn.execute("pragma journal_mode").fetchone()[0] in ("wal", "delete")
    assert not db.path.with_name(db.path.name + "-shm").exists()


@pytest.mark.parametrize("readonly", [False, True])
def test_a_fifo_or_folder_is_refused_without_blocking(tmp_path, readonly):
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    with pytest.raises(TuningDBError, match="is not a regular file"):
        TuningDB(fifo, readonly=readonly)
    with pytest.raises(TuningDBError, match="is not a regular file"):
        TuningDB(tmp_path, readonly=readonly)


def test_export_to_a_missing_folder_is_a_clear_error(db, workload, device, tmp_path):
    from tiletune.tuning_db.exchange import export_records

    fill(db, workload, device, 1)
    with pytest.raises(TuningDBError, match="the directory .*missing does not exist"):
        export_records(db, tmp_path / "missing" / "out.jsonl")
