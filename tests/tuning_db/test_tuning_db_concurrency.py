"""Several processes reading a DB while others write batches to it."""
from __future__ import annotations

import multiprocessing
import sqlite3
import sys
from pathlib import Path

from tiletune.tuning_db import TuningDB


def test_readers_and_writers_in_parallel_processes(db, workload, device, monkeypatch):
    # Spawned children import the worker module by name; they inherit the parent's sys.path.
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import tuning_db_workers as workers

    db.close()
    path, size, batches, writers = str(db.path), 20, 15, 2
    total = size * batches * writers
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes=6) as pool:
        readers = [pool.apply_async(workers.read_until, (path, workload.key, device.key, size, total, i % 2 == 0))
                   for i in range(4)]
        writes = [pool.apply_async(workers.write_batches, (path, workload.key, device.key, w * 10_000, batches, size))
                  for w in range(writers)]
        assert [w.get(timeout=60) for w in writes] == [size * batches] * writers
        assert all(r.get(timeout=60) >= 1 for r in readers)
    with TuningDB(path) as after:
        assert len(after.records(workload.key, device.key)) == total
        # Re-running a writer (a resumed session) adds nothing.
        assert workers.write_batches(path, workload.key, device.key, 0, batches, size) == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    sys.modules.pop("tuning_db_workers", None)
