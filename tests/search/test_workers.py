"""Worker pools: results in order, environment overlays, and every way a task can fail."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tiletune.errors import UsageError
from tiletune.search.execution.workers import (
    Executor,
    TaskResult,
    WorkerPool,
    _environ_overlay,
)


@pytest.fixture(scope="module")
def fx():
    # Spawned workers import task functions by module name; they inherit the parent's sys.path.
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(Path(__file__).parent))
        import workers_fixtures
        yield workers_fixtures
    sys.modules.pop("workers_fixtures", None)


@pytest.fixture
def pool(fx):
    with WorkerPool(2, name="test") as opened:
        yield opened


def test_map_returns_results_in_input_order_not_completion_order(pool, fx):
    items = [("slow", 0.6), ("fast", 0.0), ("medium", 0.2), ("last", 0.0)]
    results = pool.map(fx.echo_after, items, timeout=10)
    assert [r.value for r in results] == ["slow", "fast", "medium", "last"]
    assert all(r.ok and r.status == "ok" and r.reason == "" for r in results)
    assert results[0].seconds >= 0.5
    assert pool.map(fx.square, [], timeout=1) == []


def test_run_answers_one_task_result(pool, fx):
    result = pool.run(fx.square, 7)
    assert result == TaskResult(True, 49, "ok", "", result.seconds)
    assert isinstance(pool, Executor)


def test_env_overlay_is_seen_by_workers_and_not_left_in_the_parent(fx, monkeypatch):
    monkeypatch.setenv("TILETUNE_TEST_KEPT", "parent")
    monkeypatch.delenv("TILETUNE_TEST_NEW", raising=False)
    overlay = {"TILETUNE_TEST_NEW": "overlaid", "TILETUNE_TEST_KEPT": "child"}
    with WorkerPool(2, env=overlay) as pool:
        assert "TILETUNE_TEST_NEW" not in os.environ
        assert os.environ["TILETUNE_TEST_KEPT"] == "parent"
        seen = pool.map(fx.environ_get, [("TILETUNE_TEST_NEW",), ("TILETUNE_TEST_KEPT",)] * 2, timeout=10)
        assert [r.value for r in seen] == ["overlaid", "child"] * 2
        # A replacement worker is started with the same overlay.
        assert pool.run(fx.exit_with, 1).status == "crash"
        assert pool.run(fx.environ_get, "TILETUNE_TEST_NEW").value == "overlaid"
        assert "TILETUNE_TEST_NEW" not in os.environ


def test_environ_overlay_restores_the_parent_even_on_error(monkeypatch):
    monkeypatch.setenv("TILETUNE_TEST_KEPT", "parent")
    monkeypatch.delenv("TILETUNE_TEST_NEW", raising=False)
    with pytest.raises(RuntimeError):
        with _environ_overlay({"TILETUNE_TEST_NEW": "x", "TILETUNE_TEST_KEPT": "y"}):
            assert os.environ["TILETUNE_TEST_NEW"] == "x"
            raise RuntimeError("Process.start failed")
    assert "TILETUNE_TEST_NEW" not in os.environ
    assert os.environ["TILETUNE_TEST_KEPT"] == "parent"


def test_exception_is_an_error_and_the_same_worker_goes_on(pool, fx):
    pid = pool.run(fx.getpid).value
    result = pool.run(fx.fail, "bad config\nsecond line")
    assert (result.ok, result.status, result.value) == (False, "error", None)
    assert result.reason.startswith("ValueError: bad config | second line (at ")
    assert "workers_fixtures.py" in result.reason and "in fail)" in result.reason
    assert "\n" not in result.reason
    assert pool.run(fx.getpid).value == pid
    assert pool.restarts == 0


def test_timeout_kills_the_worker_and_a_replacement_serves_the_next_task(pool, fx):
    pid = pool.run(fx.getpid).value
    start = time.monotonic()
    result = pool.run(fx.sleep_for, 60, timeout=0.5)
    # the task sleeps 60 s: well under that means it was killed, however busy the machine
    assert time.monotonic() - start < 30
    assert (result.ok, result.status) == (False, "timeout")
    assert "0.5 s" in result.reason and 0.5 <= result.seconds < 30
    assert pool.restarts == 1
    follow = pool.run(fx.getpid)
    assert follow.ok and follow.value != pid
    assert pool.run(fx.square, 3, timeout=5).value == 9


def test_time_to_unpickle_a_task_is_not_charged_to_its_timeout(pool, fx):
    # Unpickling stands in for a fresh worker's first import of torch or Triton.
    result = pool.run(fx.delay_of, fx.SlowToUnpickle(0.8), timeout=0.4)
    assert result.status == "ok" and result.value == 0.8


def test_exit_code_is_a_crash_naming_the_code(pool, fx):
    result = pool.run(fx.exit_with, 3)
    assert (result.ok, result.status) == (False, "crash")
    assert "exited with code 3" in result.reason
    assert pool.restarts == 1
    assert pool.run(fx.square, 4).value == 16


def test_segfault_is_a_crash_naming_the_signal(pool, fx):
    result = pool.run(fx.segfault)
    assert result.status == "crash"
    assert "SIGSEGV" in result.reason
    assert pool.run(fx.square, 5).value == 25


def test_one_map_with_every_outcome_reports_each_in_order(pool, fx):
    items = [("ok", 1), ("error", 2), ("timeout", 3), ("exit", 4), ("segv", 5), ("ok", 6), ("ok", 7)]
    results = pool.map(fx.behave, items, timeout=1.0)
    assert [r.status for r in results] == ["ok", "error", "timeout", "crash", "crash", "ok", "ok"]
    assert [r.value for r in results] == [1, None, None, None, None, 6, 7]
    assert "config 2 is bad" in results[1].reason
    assert "code 4" in results[3].reason and "SIGSEGV" in results[4].reason
    assert pool.restarts == 3
    assert pool.worker_count == 2


def test_restarts_count_replaced_workers_only(fx):
    with WorkerPool(2) as pool:
        assert (pool.worker_count, pool.restarts) == (2, 0)
        pool.map(fx.fail, [("x",), ("y",)], timeout=5)
        assert pool.restarts == 0
        pool.map(fx.exit_with, [(1,), (2,), (3,)], timeout=5)
        assert pool.restarts == 3
        assert pool.worker_count == 2


class _Interrupted(Exception):
    pass


def _interrupt(signum, frame):
    raise _Interrupted()


def test_close_with_a_hung_task_returns_within_seconds(fx, tmp_path):
    pid_file = tmp_path / "pid"
    interrupted_at = []

    def interrupt(signum, frame):
        interrupted_at.append(time.monotonic())
        raise _Interrupted()

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        # An interrupt (Ctrl-C in a tuner) leaves map with a task still hanging in its worker;
        # leaving the `with` block closes the pool, which must not wait for that task.
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        with pytest.raises(_Interrupted):
            with WorkerPool(2) as pool:
                pool.map(fx.hang_after_writing_pid, [(str(pid_file),)], timeout=None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - interrupted_at[0] < 30  # the task hangs for 600 s
    assert pool.closed
    pool.close()  # a second close does nothing
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_a_task_that_ignores_sigterm_is_killed_after_the_grace_period(fx):
    with WorkerPool(1, kill_grace=0.3) as pool:
        start = time.monotonic()
        result = pool.run(fx.ignore_sigterm_and_hang, timeout=0.3)
        assert result.status == "timeout"
        assert time.monotonic() - start < 30  # the task hangs for 600 s
        assert pool.run(fx.square, 2).value == 4


def test_an_abandoned_task_never_answers_the_next_map(fx, tmp_path):
    pid_file = tmp_path / "pid"
    with WorkerPool(1) as pool:
        previous = signal.signal(signal.SIGALRM, _interrupt)
        try:
            signal.setitimer(signal.ITIMER_REAL, 1.0)
            with pytest.raises(_Interrupted):
                pool.map(fx.hang_after_writing_pid, [(str(pid_file),)])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        result = pool.run(fx.square, 6, timeout=5)
        assert result.value == 36
        assert pool.restarts == 1


def test_unpicklable_results_and_arguments_are_errors(pool, fx):
    result = pool.run(fx.unpicklable_result)
    assert result.status == "error" and "could not be pickled" in result.reason
    results = pool.map(fx.echo_after, [(lambda: 0, 0.0), (1, 0.0)], timeout=5)
    assert [r.status for r in results] == ["error", "ok"]
    assert "cannot be sent to a worker" in results[0].reason
    assert pool.restarts == 0


def test_misuse_raises_usage_errors(fx):
    with pytest.raises(UsageError, match="module-level function"):
        with WorkerPool(1) as pool:
            pool.map(lambda x: x, [(1,)])
    with pytest.raises(UsageError, match="positive integer"):
        WorkerPool(0)
    with pytest.raises(UsageError, match="start_method"):
        WorkerPool(1, start_method="forkserver")
    with pytest.raises(UsageError, match="str to str"):
        WorkerPool(1, env={"X": 1})
    pool = WorkerPool(1)
    pool.close()
    with pytest.raises(UsageError, match="closed"):
        pool.run(fx.square, 2)


@pytest.mark.parametrize("number", [signal.SIGKILL, signal.SIGTERM])
def test_a_worker_killed_from_outside_is_a_transient_crash(pool, fx, number):
    result = pool.run(fx.killed_by, int(number))
    assert (result.status, result.transient) == ("crash", True)
    assert signal.Signals(number).name in result.reason and "from outside" in result.reason
    assert pool.run(fx.square, 6).value == 36


def test_the_tasks_own_crash_or_timeout_is_not_transient(pool, fx):
    crashed, exited, late = pool.map(fx.behave, [("segv", 1), ("exit", 2), ("timeout", 3)], timeout=0.5)
    assert [(r.status, r.transient) for r in (crashed, exited, late)] == [
        ("crash", False), ("crash", False), ("timeout", False)]


def test_a_tasks_setup_is_not_charged_to_its_timeout(pool, fx):
    assert pool.run(fx.set_up_then_sleep, 1.0, 0.1, timeout=0.5).value == pytest.approx(1.1)
    late = pool.run(fx.set_up_then_sleep, 0.0, 2.0, timeout=0.5)
    assert (late.status, late.transient) == ("timeout", False)


def test_a_setup_past_the_start_limit_is_a_transient_timeout(fx):
    # A slow operator import: the task never reached its own work.
    with WorkerPool(1, name="test", start_timeout=1.0) as pool:
        pool.run(fx.square, 1)  # the worker's first import is done
        result = pool.run(fx.set_up_then_sleep, 30.0, 0.0, timeout=60)
        assert (result.status, result.transient) == ("timeout", True)
        assert "setup" in result.reason and "never reached its own work" in result.reason
        assert result.seconds < 10


def test_preparing_outside_a_worker_does_nothing():
    from tiletune.search.execution.worker_process import preparing

    with preparing():
        pass
