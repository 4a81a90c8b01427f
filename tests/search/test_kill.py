"""`tiletune autotune` killed with SIGKILL mid-run, and two of them on one DB at once: the DB
stays intact, holds whole batches only, resumes without measuring anything twice, loses no
record to a concurrent writer, and two tunings of one workload split its space."""
from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ADD_SHAPE = "N=300,D=1000"
BATCH = 2


def autotune_args(db: Path, trials: int, *, shape: str = ADD_SHAPE, seed: int = 0) -> list[str]:
    return [sys.executable, "-m", "tiletune.cli", "autotune", "add", "--shape", shape, "--trials", str(trials),
            "--batch-size", str(BATCH), "--seed", str(seed), "--db", str(db)]


def start(args: list[str], log: Path) -> subprocess.Popen:
    """Start a tuning in its own session, so that killing its group kills its workers too."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TILETUNE_FAULTS", "TILETUNE_DB")}
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        return subprocess.Popen(args, cwd=log.parent, env=env, stdout=out, stderr=err, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> str:
    """Wait for a tuning to end well; its stdout."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    out, err = log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "error:" not in err, err
    return out


def new_trials(stdout: str) -> int:
    return int(re.search(r"^trials\s+(\d+) new", stdout, re.MULTILINE).group(1))


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql).fetchall()


def record_count(db: Path) -> int:
    """Records written so far; 0 while the file or its tables do not exist yet."""
    if not db.exists():
        return 0
    try:
        return rows(db, "SELECT count(*) FROM records")[0][0]
    except sqlite3.OperationalError:
        return 0


def test_a_killed_tuning_leaves_whole_batches_and_resumes_without_repeats(tmp_path):
    # A budget far longer than the kill delay, so the kill always lands while batches are written
    db, trials = tmp_path / "t.db", 64
    proc = start(autotune_args(db, trials), tmp_path / "killed")
    deadline = time.monotonic() + 180
    while record_count(db) < BATCH:
        assert proc.poll() is None, (tmp_path / "killed.err").read_text()
        assert time.monotonic() < deadline, "no batch landed in 180 s"
        time.sleep(0.05)
    delay = random.uniform(0.0, 0.6)  # somewhere among the next batches, often inside a write
    time.sleep(delay)
    assert proc.poll() is None, f"the run ended before it was killed ({delay:.2f} s after the first batch)"
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL

    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    done = record_count(db)
    assert BATCH <= done < trials, delay
    # A batch is written in one transaction, all its records stamped with one time.
    assert set(Counter(created for (created,) in rows(db, "SELECT created FROM records")).values()) == {BATCH}, delay
    assert [i for (i,) in rows(db, "SELECT id FROM records ORDER BY id")] == list(range(1, done + 1))

    out = finish(start(autotune_args(db, trials - done), tmp_path / "resumed"), tmp_path / "resumed")
    assert new_trials(out) == trials - done
    assert f"{done} from earlier runs" in out, out
    keys = [k for (k,) in rows(db, "SELECT config_key FROM records")]
    assert len(keys) == trials and len(set(keys)) == trials  # nothing measured twice
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_two_tunings_of_different_workloads_share_a_db_and_lose_nothing(tmp_path):
    db = tmp_path / "t.db"
    procs = [start(autotune_args(db, 8, shape=shape), tmp_path / name)
             for name, shape in (("a", ADD_SHAPE), ("b", "N=70,D=333"))]
    reported = [new_trials(finish(proc, tmp_path / name)) for proc, name in zip(procs, "ab")]
    assert reported == [8, 8]
    assert record_count(db) == sum(reported)
    assert sorted(n for (n,) in rows(db, "SELECT count(*) FROM records GROUP BY workload_key")) == [8, 8]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_two_tunings_of_one_workload_split_its_space(tmp_path):
    # The same seed, so both propose the same configs: claims in the DB make them split them.
    db = tmp_path / "t.db"
    procs = [start(autotune_args(db, 8), tmp_path / name) for name in "ab"]
    reported = [new_trials(finish(proc, tmp_path / name)) for proc, name in zip(procs, "ab")]
    assert reported == [8, 8]
    per_config = rows(db, "SELECT config_key, count(*) FROM records GROUP BY config_key")
    assert all(n == 1 for _, n in per_config)  # no config measured twice
    assert len(per_config) == sum(reported)  # every reported trial is a distinct stored config
    assert rows(db, "SELECT count(*) FROM claims") == [(0,)]  # both released what they claimed
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_a_killed_tunings_claims_do_not_block_the_next(tmp_path):
    db = tmp_path / "t.db"
    proc = start(autotune_args(db, 64), tmp_path / "killed")
    deadline = time.monotonic() + 180
    while not (db.exists() and claim_count(db)):
        assert proc.poll() is None, (tmp_path / "killed.err").read_text()
        assert time.monotonic() < deadline, "no claim made in 180 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    done = record_count(db)
    out = finish(start(autotune_args(db, 64 - done), tmp_path / "resumed"), tmp_path / "resumed")
    assert new_trials(out) == 64 - done  # the dead run's claimed configs were measured too
    keys = [k for (k,) in rows(db, "SELECT config_key FROM records")]
    assert len(keys) == len(set(keys)) == 64
    assert rows(db, "SELECT count(*) FROM claims") == [(0,)]


def claim_count(db: Path) -> int:
    """Claims held now; 0 while the file or its tables do not exist yet."""
    try:
        return rows(db, "SELECT count(*) FROM claims")[0][0]
    except sqlite3.OperationalError:
        return 0
