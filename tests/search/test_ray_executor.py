"""Tuning on Ray (a local cluster of two CPUs): the task executor's statuses, the same records as
a local run, two simulated device kinds, measurement actors that die or hang mid-run, and a
driver killed mid-run that resumes without measuring anything twice."""
from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

ray = pytest.importorskip("ray", reason='the Ray executor needs the ray extra: pip install "tiletune[ray]"')
pytestmark = pytest.mark.slow  # a Ray cluster and worker processes: over a minute on 2 cores

from tiletune.kernels.task import TaskSpec  # noqa: E402
from tiletune.search.execution.ray_tasks import RayTaskExecutor, init  # noqa: E402
from tiletune.search.measurement.steps import compile_step  # noqa: E402
from tiletune.search.ray_backend import RayBackend  # noqa: E402
from tiletune.search.tuner import Budget, Tuner  # noqa: E402
from tiletune.tuning_db import TuningDB, Workload  # noqa: E402

ADD = TaskSpec.make("add", {"N": 300, "D": 1000}, "float32")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray for the module (starting one costs seconds): two CPUs, no GPU."""
    init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def keys(db_path) -> list[tuple[str, str]]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT device_key, config_key FROM records").fetchall()


def test_ray_tasks_answer_in_input_order_with_each_status(cluster):
    executor = RayTaskExecutor({"TRITON_INTERPRET": "0"}, name="test", workers=1, start_allowance=30.0)
    results = executor.map(math.sqrt, [(16.0,), (-1.0,), (9.0,)])
    assert [r.status for r in results] == ["ok", "error", "ok"], results
    assert [r.value for r in results] == [4.0, None, 3.0]
    assert "ValueError: math domain error" in results[1].reason
    [crashed] = executor.map(os._exit, [(3,)])
    assert crashed.status == "crash" and "died" in crashed.reason
    [late] = executor.map(time.sleep, [(120,)], timeout=1.0)
    assert late.status == "timeout" and "within 1 s" in late.reason
    [env] = executor.map(os.getenv, [("TRITON_INTERPRET",)])
    assert env.value == "0"  # the step's runtime environment reaches the worker


def test_a_ray_run_records_what_a_local_run_records_for_each_device_kind(cluster, tmp_path):
    with RayBackend(1) as backend, TuningDB(tmp_path / "ray.db") as db:
        measurers = backend.measurers("sim-h100,sim-h200")
        assert [m.kind for m in measurers] == ["sim-h100", "sim-h200"]
        ray_reports = [Tuner(ADD.build(), m, db, seed=3).run(Budget(trials=6, batch_size=3), backend)
                       for m in measurers]
    from tiletune.search.measurement.measurers import SimMeasurer

    with TuningDB(tmp_path / "local.db") as db:
        local = Tuner(ADD.build(), SimMeasurer(), db, seed=3, workers=1).run(Budget(trials=6, batch_size=3))
    assert ray_reports[0].trials == ray_reports[1].trials == 6
    assert ray_reports[0].curve == local.curve and ray_reports[0].best_config == local.best_config
    assert sorted(keys(tmp_path / "ray.db")) == sorted(set(keys(tmp_path / "ray.db")))
    assert Counter(device.split("/")[0] for device, _ in keys(tmp_path / "ray.db")) == {"sim-h100": 6, "sim-h200": 6}

    # tiletune.load reads the records of the device it runs on
    from tiletune.loaded import _records_for_device

    with TuningDB(tmp_path / "ray.db", readonly=True) as db:
        workload = Workload.of(ADD.build()).key
        for name in ("sim-h100", "sim-h200"):
            records = list(_records_for_device(db, workload, name))
            assert len(records) == 6 and {r.measurer for r in records} == {name}


def _compiled(backend, configs):
    results = backend.compiler.map(compile_step, [(ADD, c.to_json()) for c in configs], timeout=120)
    assert all(r.ok and r.value.ok for r in results), results
    return [(c, r.value.data) for c, r in zip(configs, results)]


def test_an_actor_that_crashes_or_hangs_is_replaced_and_its_candidate_recorded(cluster, monkeypatch):
    space = ADD.build().space
    crash, hang, fine = space.sample(__import__("random").Random(0), 3)
    knobs = lambda c: ",".join(f"{k}={v}" for k, v in c.as_dict().items())  # noqa: E731
    monkeypatch.setenv("TILETUNE_FAULTS", f"measure:crash@{knobs(crash)};measure:hang@{knobs(hang)}")
    with RayBackend(2, measure_timeout=3.0, start_timeout=60.0) as backend:
        [measurer] = backend.measurers("sim-h100")
        outcomes = measurer.measure(ADD, _compiled(backend, [crash, hang, fine]))
    assert [o.config for o in outcomes] == [crash, hang, fine]
    assert [o.status for o in outcomes] == ["runtime_error", "timeout", "ok"]
    assert "died twice" in outcomes[0].reason
    assert "within 3 s" in outcomes[1].reason
    assert measurer.restarts == 3  # the crash twice (retried once), the hang once


def test_an_actor_killed_mid_run_is_replaced_and_nothing_is_lost(cluster, tmp_path):
    with RayBackend(2) as backend, TuningDB(tmp_path / "t.db") as db:
        [measurer] = backend.measurers("sim-h100", realtime=True)  # 0.5 s a measurement: time to kill

        def kill_one():
            time.sleep(2.0)
            ray.kill(measurer.actor(0), no_restart=True)

        killer = threading.Thread(target=kill_one)
        killer.start()
        report = Tuner(ADD.build(), measurer, db, seed=1).run(Budget(trials=12, batch_size=4), backend)
        killer.join()
    assert measurer.restarts >= 1
    assert report.trials == 12 and report.statuses["ok"] == 12, report.reasons
    rows = keys(tmp_path / "t.db")
    assert len(rows) == 12 and len(set(rows)) == 12


@pytest.mark.slow
def test_a_driver_killed_mid_run_leaves_whole_batches_and_resumes_without_repeats(cluster, tmp_path):
    db, trials, batch = tmp_path / "t.db", 24, 4
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TILETUNE_FAULTS", "TILETUNE_DB")}
    env["RAY_ADDRESS"] = cluster  # the driver joins this cluster, as on a real one

    def start(n: int, name: str) -> subprocess.Popen:
        args = [sys.executable, "-m", "tiletune.cli", "autotune", "add", "--shape", "N=300,D=1000", "--trials", str(n),
                "--batch-size", str(batch), "--db", str(db), "--executor", "ray", "--workers", "2", "--sim-realtime"]
        with open(tmp_path / f"{name}.out", "w") as out, open(tmp_path / f"{name}.err", "w") as err:
            return subprocess.Popen(args, env=env, stdout=out, stderr=err, start_new_session=True)

    proc = start(trials, "killed")
    deadline = time.monotonic() + 120
    while not db.exists() or _count(db) < batch:
        assert proc.poll() is None, (tmp_path / "killed.err").read_text()
        assert time.monotonic() < deadline, "no batch landed in 120 s"
        time.sleep(0.05)
    time.sleep(0.7)  # inside the next batch's measurements
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    done = _count(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        created = Counter(c for (c,) in conn.execute("SELECT created FROM records"))
    assert batch <= done < trials and set(created.values()) == {batch}  # whole batches only

    resumed = start(trials - done, "resumed")
    assert resumed.wait(180) == 0, (tmp_path / "resumed.err").read_text()
    out = (tmp_path / "resumed.out").read_text()
    assert f"{done} from earlier runs" in out, out
    rows = keys(db)
    assert len(rows) == trials and len(set(rows)) == trials  # nothing measured twice


def _count(db) -> int:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute("SELECT count(*) FROM records").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_records_keep_the_host_of_the_actor_that_measured_them(tmp_path, monkeypatch):
    from tiletune.search.measurement import ray_measurer
    from tiletune.search.measurement.measurers import SimMeasurer

    actor = ray_measurer.MeasureActor("sim-h100", False, 0)  # the class itself, in this process
    monkeypatch.setattr(ray_measurer.socket, "gethostname", lambda: "node-7")

    class ViaActor:
        kind, device, needs_kernels = actor.measurer.kind, actor.measurer.device, True

        def measure(self, spec, candidates):
            return [actor.measure(spec, config, facts) for config, facts in candidates]

    with TuningDB(tmp_path / "t.db") as db:
        Tuner(ADD.build(), ViaActor(), db, workers=1).run(Budget(trials=3, batch_size=3))
        hosts = {r.host for r in db.records(Workload.of(ADD.build()).key)}
    assert hosts == {"node-7"}, hosts
    assert isinstance(actor.measurer, SimMeasurer)
