"""Claims (how concurrent tuners split a workload) and retries (what a resumed run owes)."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pytest

from tiletune.tuning_db import Claimant, Record, Retry, Status, TuningDB
from tiletune.tuning_db.claims import claim_is_live
from tiletune.tuning_db.keys import config_key

MEASURER = "sim-h100"


def key(n: int) -> str:
    return config_key({"BLOCK": n})


def ok_record(workload, device, n: int) -> Record:
    return Record(workload_key=workload.key, device_key=device.key, config={"BLOCK": n}, status=Status.OK,
                  latency_us=10.0 + n, latency_min_us=10.0 + n, latency_spread=0.0, repeats=3, measurer=MEASURER)


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_config_goes_to_one_claimant_only(db, workload, device):
    a, b = Claimant.this_run(), Claimant.this_run()
    assert db.claim(workload.key, device.key, MEASURER, [key(1), key(2)], a, 60) == [key(1), key(2)]
    assert db.claim(workload.key, device.key, MEASURER, [key(2), key(3)], b, 60) == [key(3)]
    # A claimant renews its own claims.
    assert db.claim(workload.key, device.key, MEASURER, [key(1)], a, 60) == [key(1)]
    held = {k: c for k, c, _ in db.claims(workload.key)}
    assert held == {key(1): a, key(2): a, key(3): b}


def test_claims_are_per_device_and_measurer(db, workload, device, other_device):
    a, b = Claimant.this_run(), Claimant.this_run()
    assert db.claim(workload.key, device.key, MEASURER, [key(1)], a, 60) == [key(1)]
    assert db.claim(workload.key, other_device.key, MEASURER, [key(1)], b, 60) == [key(1)]
    assert db.claim(workload.key, device.key, "cuda", [key(1)], b, 60) == [key(1)]


def test_a_stored_config_is_not_claimed(db, workload, device):
    db.add_records([ok_record(workload, device, 4)])
    assert db.claim(workload.key, device.key, MEASURER, [key(4), key(5)], Claimant.this_run(), 60) == [key(5)]


def test_storing_a_batch_releases_its_claims(db, workload, device):
    a, b = Claimant.this_run(), Claimant.this_run()
    db.claim(workload.key, device.key, MEASURER, [key(1), key(2), key(3)], a, 60)
    retry = Retry(workload.key, device.key, MEASURER, {"BLOCK": 2}, "worker killed by SIGKILL")
    db.add_records([ok_record(workload, device, 1)], retries=[retry], claimant=a)
    assert [k for k, _, _ in db.claims(workload.key)] == [key(3)]
    # The recorded config is stored, the retried one free for another tuner.
    assert db.claim(workload.key, device.key, MEASURER, [key(1), key(2), key(3)], b, 60) == [key(2)]
    assert db.release_claims(a) == 1
    assert [(k, c) for k, c, _ in db.claims(workload.key)] == [(key(2), b)]


def test_an_expired_claim_counts_for_nothing(db, workload, device):
    # A claimant on another host that died: only its expiry frees its configs.
    gone = Claimant("another-host", 1, "r")
    db.claim(workload.key, device.key, MEASURER, [key(1), key(2)], gone, 60)
    with sqlite3.connect(db.path) as conn:
        conn.execute("update claims set expires = ? where config_key = ?", [time.time() - 1, key(1)])
    conn.close()
    assert db.claim(workload.key, device.key, MEASURER, [key(1), key(2)], Claimant.this_run(), 60) == [key(1)]


def test_a_claim_of_a_dead_process_on_this_host_counts_for_nothing(db, workload, device):
    me = Claimant.this_run()
    dead = Claimant(me.host, dead_pid(), "r")
    alive = Claimant(me.host, 1, "r")  # pid 1 lives as long as the machine
    db.claim(workload.key, device.key, MEASURER, [key(1)], dead, 3600)
    db.claim(workload.key, device.key, MEASURER, [key(2)], alive, 3600)
    assert db.claim(workload.key, device.key, MEASURER, [key(1), key(2)], me, 60) == [key(1)]


def test_claim_liveness_rules():
    host = "h"
    now = 1000.0
    live = Claimant(host, 1, "r").owner
    assert claim_is_live(live, now + 1, now, host=host)
    assert not claim_is_live(live, now - 1, now, host=host)
    assert not claim_is_live(live, float("nan"), now, host=host)
    assert not claim_is_live(Claimant(host, dead_pid(), "r").owner, now + 1, now, host=host)
    assert claim_is_live(Claimant("other", dead_pid(), "r").owner, now + 1, now, host=host)
    # An owner that is not one of ours holds until it expires.
    assert claim_is_live("not json", now + 1, now, host=host)
    assert claim_is_live(json.dumps({"host": host, "pid": True, "run": "r"}), now + 1, now, host=host)


def test_claimant_owner_round_trips():
    me = Claimant.this_run()
    assert Claimant.from_owner(me.owner) == me
    assert Claimant.this_run() != me  # two runs in one process are two claimants
    assert Claimant.from_owner("[1, 2]") is None


def test_retries_are_owed_until_a_record_settles_them(db, workload, device):
    first = Retry(workload.key, device.key, MEASURER, {"BLOCK": 1}, "worker killed by SIGKILL")
    again = Retry(workload.key, device.key, MEASURER, {"BLOCK": 2}, "did not start", attempts=2)
    db.add_records([], retries=[first, again])
    owed = db.retries(workload.key, device.key, MEASURER)
    assert [(r.config, r.attempts, r.reason) for r in owed] == [
        ({"BLOCK": 1}, 1, "worker killed by SIGKILL"), ({"BLOCK": 2}, 2, "did not start")]
    assert db.retries(workload.key, device.key, "cuda") == []
    # Another failure from outside replaces the retry; a record settles it.
    db.add_records([ok_record(workload, device, 1)], retries=[Retry(**{**_fields(again), "attempts": 3})])
    assert [(r.config, r.attempts) for r in db.retries(workload.key, device.key, MEASURER)] == [({"BLOCK": 2}, 3)]
    # Retries are not records: no reader ranks them, no export carries them.
    assert [r.config for r in db.records(workload.key)] == [{"BLOCK": 1}]


def _fields(retry: Retry) -> dict:
    return {name: getattr(retry, name) for name in Retry.__dataclass_fields__}


def test_a_retry_with_no_attempts_is_refused(db, workload, device):
    from tiletune.errors import TuningDBError

    with pytest.raises(TuningDBError, match="attempts"):
        db.add_records([], retries=[Retry(workload.key, device.key, MEASURER, {"BLOCK": 1}, "x", attempts=0)])


def test_a_schema_2_file_read_only_has_no_claims_or_retries(tmp_path, workload, device):
    path = tmp_path / "old.db"
    with TuningDB(path) as db:
        db.add_workload(workload)
        db.add_device(device)
    with sqlite3.connect(path) as conn:
        conn.execute("drop table claims")
        conn.execute("drop table retries")
        conn.execute("update meta set value = '2' where key = 'schema_version'")
    conn.close()
    with TuningDB(path, readonly=True) as old:
        assert old.retries(workload.key, device.key, MEASURER) == []
        assert old.claims(workload.key) == []
