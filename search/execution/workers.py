"""Worker processes that run tasks with time limits, so one bad config costs one worker.

A candidate that aborts the compiler, hangs, crashes its CUDA context or is killed for memory
must never take the tuner (or its DB) down with it, so compiling and measuring run in worker
processes. `WorkerPool.map` runs a picklable function over argument tuples on those workers and
answers one `TaskResult` per item, in input order:

- ``ok``: the function returned; `value` is what it returned.
- ``error``: it raised; `reason` is the exception's type, message and last frame, one line.
- ``timeout``: it ran past the time limit; its worker was killed and replaced.
- ``crash``: its worker died (``os._exit``, a signal, the OOM killer); the reason names the exit
  code or signal, and the worker was replaced.

A failure is `transient` when it says nothing about the task's input: its worker was killed by
a signal from outside (SIGKILL, SIGTERM, SIGHUP, SIGINT, SIGQUIT: an operator, a cluster, the
OOM killer; the pool itself signals only workers whose task it has already answered), or the
task never reached its own work (unpickling it, or its `preparing()` setup such as importing an
operator, ran past `start_timeout`). Running it again may well succeed; a SIGSEGV, an exit code
or a timeout of the task's own work is the task's.

Triton decides once per process, at the first import of ``triton.language``, whether kernels
are interpreted (``TRITON_INTERPRET=1``) or compiled, so each pool starts its workers with an
environment overlay: ahead-of-time compiles need a non-interpreting pool, CPU verification an
interpreting one. Workers are started when the pool is built and reused, because a process
that imports torch and Triton takes seconds to start.

`Executor` is the small interface the tuner depends on; a Ray executor can implement it too.
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import (
    Callable,
    Iterator,
    Literal,
    Mapping,
    Protocol,
    Sequence,
    runtime_checkable,
)

from tiletune.errors import UsageError
from tiletune.search.execution.worker_process import describe, worker_main

__all__ = ["COMPILE_ENV", "INTERPRET_ENV", "Executor", "TaskEnd", "TaskResult", "WorkerPool", "default_workers"]

# Signals a task does not send itself by crashing: a worker that dies of one was killed from
# outside (the pool only signals workers whose task it has already answered).
_EXTERNAL_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT})

# Worker environments: ahead-of-time compiles need a compiling process, CPU checks an
# interpreting one (Triton fixes the mode per process).
COMPILE_ENV = {"TRITON_INTERPRET": "0"}
INTERPRET_ENV = {"TRITON_INTERPRET": "1"}

#: How a task on a worker ended: it returned, raised, ran past its time limit, or its worker
#: died. What that means for a candidate is the measurement's business (`measurement.results`).
TaskEnd = Literal["ok", "error", "timeout", "crash"]

def default_workers() -> int:
    """Compile workers when none are asked for: one per core, at most 4 (more only queue for
    the same cores, each holding torch in memory)."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What became of one task: how it ended, what it returned (`value`, when it did) or why
    not (`reason`), and how long it ran."""

    ok: bool
    value: object | None
    status: TaskEnd
    reason: str
    seconds: float
    transient: bool = False
    """The failure came from outside the task (see the module's docstring): running it again may succeed."""


@runtime_checkable
class Executor(Protocol):
    """Runs a picklable function over argument tuples, isolated from the caller.

    `map(fn, items, timeout=...)` returns one `TaskResult` per item, in input order, whatever
    order the tasks finished in; a task that raises, runs past `timeout` seconds or kills its
    worker is reported in its result and never raised. `close()` releases the workers and never
    hangs. `WorkerPool` is the reference implementation.
    """

    def map(self, fn: Callable[..., object], items: Sequence[tuple], *,
            timeout: float | None = None) -> list[TaskResult]:
        """Run `fn(*item)` for every item; results in input order."""
        ...

    def close(self) -> None:
        """Stop every worker, killing the ones that do not stop in time."""
        ...


class WorkerPool:
    """A fixed number of worker processes, started with `env` overlaid on `os.environ`.

    `fn` must be picklable: a module-level function of an importable module. Arguments and
    results cross a pipe, so keep them small (configs, specs, timings; not tensors). Workers
    are daemonic, so a task must not start `multiprocessing` children of its own; subprocesses
    (ptxas, nvcc) are fine. `initializer`, if given, runs once in every worker when it starts
    (to import torch or Triton ahead of the first task); if it raises, every task on that
    worker answers "error" naming the failure.

    Time limits count from the moment the worker has unpickled the task, so importing the
    task's module in a fresh worker is not charged to the task; unpickling itself is limited
    by `start_timeout`. One thread at a time may call `map`.
    """

    def __init__(
        self,
        workers: int,
        *,
        env: Mapping[str, str] | None = None,
        name: str = "worker",
        start_method: str = "spawn",
        initializer: Callable[[], object] | None = None,
        start_timeout: float | None = 300.0,
        kill_grace: float = 1.0,
    ) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise UsageError(f"WorkerPool: workers must be a positive integer, got {workers!r}")
        # forkserver forks its children from a server started once, with the environment it had
        # then, so an overlay around Process.start would not reach them.
        if start_method not in ("spawn", "fork"):
            raise UsageError(f"WorkerPool: start_method must be 'spawn' or 'fork', got {start_method!r}")
        overlay = dict(env or {})
        bad = [k for k, v in overlay.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise UsageError(f"WorkerPool: env must map str to str, got {bad[0]!r}: {overlay[bad[0]]!r}")
        if initializer is not None:
            _check_picklable(initializer, "initializer")
        self._env = overlay
        self._name = name
        self._context = multiprocessing.get_context(start_method)
        self._initializer = initializer
        self._start_timeout = start_timeout
        self._kill_grace = kill_grace
        self._closed = False
        self._next_task_id = 0
        self.restarts = 0
        """How many workers were replaced (after a timeout, a crash or an abandoned task)."""
        self._slots: list[_Slot] = []
        try:
            for index in range(workers):
                self._slots.append(self._start_slot(index))
        except BaseException:
            self.close()
            raise

    # -- public interface ----------------------------------------------------------------

    @property
    def worker_count(self) -> int:
        """How many workers the pool keeps running."""
        return len(self._slots)

    @property
    def env(self) -> dict[str, str]:
        """The environment overlay its workers are started with."""
        return dict(self._env)

    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._closed

    def run(self, fn: Callable[..., object], *args: object, timeout: float | None = None) -> TaskResult:
        """Run `fn(*args)` on one worker."""
        return self.map(fn, [args], timeout=timeout)[0]

    def map(self, fn: Callable[..., object], items: Sequence[tuple], *,
            timeout: float | None = None) -> list[TaskResult]:
        """Run `fn(*item)` for every item across the workers; results in input order."""
        self._check_open()
        _check_picklable(fn, "the task function")
        if timeout is not None and timeout <= 0:
            raise UsageError(f"WorkerPool.map: timeout must be positive seconds or None, got {timeout!r}")
        tasks = [tuple(item) for item in items]
        results: list[TaskResult | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        try:
            while pending or self._busy():
                self._check_open()
                for slot in self._slots:
                    while slot.task is None and pending:
                        index = pending.popleft()
                        self._dispatch(slot, index, fn, tasks[index], results)
                busy = self._busy()
                if busy:
                    self._wait_and_collect(busy, timeout, results)
        finally:
            # Left early (an interrupt, a closed pool): a worker still running an abandoned task
            # would answer it later as if it were the next one, so it is replaced before reuse.
            for slot in self._slots:
                if slot.task is not None:
                    slot.task, slot.stale = None, True
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Stop every worker: idle ones are asked to exit, busy ones terminated, stragglers killed."""
        if self._closed:
            return
        self._closed = True
        for slot in self._slots:
            if slot.task is None and not slot.stale:
                with contextlib.suppress(OSError, ValueError):
                    slot.conn.send_bytes(b"")
            else:
                with contextlib.suppress(OSError, ValueError):
                    slot.process.terminate()
        _stop_processes([slot.process for slot in self._slots], self._kill_grace, polite=True)
        for slot in self._slots:
            _release(slot)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"WorkerPool(workers={self.worker_count}, name={self._name!r}, env={self._env!r}, "
                f"restarts={self.restarts}, closed={self._closed})")

    # -- workers -------------------------------------------------------------------------

    def _start_slot(self, index: int) -> _Slot:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=worker_main, args=(child_conn, self._initializer),
            name=f"{self._name}-{index}", daemon=True)
        try:
            # Spawned children inherit the environment as it is at start; nothing else reaches them.
            with _environ_overlay(self._env):
                process.start()
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()
        return _Slot(index, process, parent_conn)

    def _replace(self, slot: _Slot) -> None:
        _stop_processes([slot.process], self._kill_grace, polite=False)
        _release(slot)
        fresh = self._start_slot(slot.index)
        slot.process, slot.conn = fresh.process, fresh.conn
        slot.task, slot.stale, slot.started_at = None, False, None
        self.restarts += 1

    def _busy(self) -> list[_Slot]:
        return [slot for slot in self._slots if slot.task is not None]

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"WorkerPool {self._name!r} is closed; build a new pool to run more tasks")

    # -- one map ---------------------------------------------------------------------------

    def _dispatch(self, slot: _Slot, index: int, fn: Callable[..., object], args: tuple,
                  results: list[TaskResult | None]) -> None:
        task_id = self._next_task_id
        self._next_task_id += 1
        try:
            payload = pickle.dumps((task_id, pickle.dumps((fn, args, {}))))
        except Exception as exc:
            results[index] = TaskResult(False, None, "error",
                                        f"task arguments cannot be sent to a worker: {describe(exc)}", 0.0)
            return
        if slot.stale or not slot.process.is_alive():
            self._replace(slot)  # died while idle (OOM killer?) or still running an abandoned task
        try:
            slot.conn.send_bytes(payload)
        except OSError:
            self._replace(slot)  # died between the check and the send; the task never reached it
            slot.conn.send_bytes(payload)
        slot.task, slot.task_id = index, task_id
        slot.sent_at, slot.started_at, slot.preparing = time.monotonic(), None, False

    def _deadline(self, slot: _Slot, timeout: float | None) -> float:
        if slot.started_at is None:
            return slot.sent_at + self._start_timeout if self._start_timeout is not None else math.inf
        return slot.started_at + timeout if timeout is not None else math.inf

    def _wait_and_collect(self, busy: list[_Slot], timeout: float | None,
                          results: list[TaskResult | None]) -> None:
        nearest = min(self._deadline(slot, timeout) for slot in busy)
        wait_for = None if nearest == math.inf else max(0.0, nearest - time.monotonic())
        handles = [slot.conn for slot in busy] + [slot.process.sentinel for slot in busy]
        ready = set(multiprocessing.connection.wait(handles, timeout=wait_for))
        for slot in busy:
            if slot.conn in ready or slot.process.sentinel in ready:
                self._collect(slot, results)
        now = time.monotonic()
        for slot in busy:
            if slot.task is not None and self._deadline(slot, timeout) <= now:
                if slot.started_at is None:
                    setup = ("its setup (preparing: importing the operator, building the task)" if slot.preparing
                             else "unpickling the task, or importing its module,")
                    reason = (f"did not start within {self._start_timeout:g} s ({setup} ran that long, so it never"
                              f" reached its own work); {self._describe_worker(slot)} killed")
                    seconds = now - slot.sent_at
                else:
                    reason = f"did not finish within {timeout:g} s; {self._describe_worker(slot)} killed"
                    seconds = now - slot.started_at
                results[slot.task] = TaskResult(False, None, "timeout", reason, seconds,
                                                transient=slot.started_at is None)
                self._replace(slot)

    def _collect(self, slot: _Slot, results: list[TaskResult | None]) -> None:
        """Read what the worker sent; if it died before answering, report a crash."""
        index = slot.task
        assert index is not None
        closed = False
        while slot.task is not None:
            try:
                if not slot.conn.poll():
                    break
                data = slot.conn.recv_bytes()
            except (EOFError, OSError):
                closed = True
                break
            try:
                message = pickle.loads(data)
            except Exception as exc:
                # Only a result's value can fail to unpickle here ("started" is plain data).
                results[index] = TaskResult(False, None, "error",
                                            f"the result could not be unpickled in the tuner: {describe(exc)}",
                                            time.monotonic() - slot.sent_at)
                slot.task = None
                break
            if message[1] != slot.task_id:
                continue
            if message[0] == "started":
                slot.started_at = time.monotonic()
            elif message[0] == "preparing":
                # The task's setup: bounded by the start limit, from now, not by the task's own.
                slot.started_at, slot.sent_at, slot.preparing = None, time.monotonic(), True
            else:
                _, _, status, value, reason, seconds = message
                results[index] = TaskResult(status == "ok", value, status, reason, seconds)
                slot.task = None
        if slot.task is None or not (closed or not slot.process.is_alive()):
            return  # answered, or still running the task
        slot.process.join(self._kill_grace)  # its pipe closed: it is exiting; reap it for the exit code
        if slot.process.is_alive():
            return  # a closed pipe but a live process: the deadline will deal with it
        description = self._describe_worker(slot)
        exitcode = slot.process.exitcode
        killed = exitcode is not None and exitcode < 0 and -exitcode in _EXTERNAL_SIGNALS
        results[index] = TaskResult(False, None, "crash",
                                    f"{description} died during the task: {_exit_description(exitcode)}"
                                    + ("; a signal from outside (an operator, a cluster, the OOM killer), not the"
                                       " task's own crash" if killed else ""),
                                    time.monotonic() - slot.sent_at, transient=killed)
        self._replace(slot)

    def _describe_worker(self, slot: _Slot) -> str:
        return f"worker {self._name}-{slot.index} (pid {slot.process.pid})"


@dataclass(slots=True)
class _Slot:
    """One worker position: its current process, pipe and task (an index into the map's items)."""

    index: int
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    task: int | None = None
    task_id: int = -1
    sent_at: float = 0.0
    started_at: float | None = None
    preparing: bool = False  # the task said it is setting up (`worker_process.preparing`)
    stale: bool = False


# -- helpers ---------------------------------------------------------------------------------

_ENVIRON_LOCK = threading.Lock()  # os.environ is process-wide: one overlay at a time


@contextlib.contextmanager
def _environ_overlay(env: Mapping[str, str]) -> Iterator[None]:
    """Overlay `env` on `os.environ` for the block; restore the previous values after, even on error."""
    with _ENVIRON_LOCK:
        saved = {key: os.environ.get(key) for key in env}
        try:
            os.environ.update(env)
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _stop_processes(processes: list[multiprocessing.process.BaseProcess], grace: float, *,
                    polite: bool) -> None:
    """End the processes: terminate (after waiting `grace` if `polite`), then kill; never hangs."""
    def join_all(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for process in processes:
            with contextlib.suppress(ValueError, AssertionError):
                process.join(max(0.0, deadline - time.monotonic()))

    def alive() -> list[multiprocessing.process.BaseProcess]:
        living = []
        for process in processes:
            with contextlib.suppress(ValueError, AssertionError):
                if process.is_alive():
                    living.append(process)
        return living

    if polite:
        join_all(grace)
    for process in alive():
        process.terminate()
    join_all(grace)
    for process in alive():
        process.kill()
    join_all(grace)


def _release(slot: _Slot) -> None:
    with contextlib.suppress(OSError):
        slot.conn.close()
    with contextlib.suppress(ValueError, AssertionError):
        slot.process.close()  # refuses (ValueError) if it somehow still runs; the OS reaps it then


def _check_picklable(obj: object, what: str) -> None:
    try:
        pickle.dumps(obj)
    except Exception as exc:
        raise UsageError(f"{what} {obj!r} cannot be sent to a worker process ({describe(exc)}); "
                         f"pass a module-level function of an importable module") from None


def _exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "it stopped answering"
    if exitcode < 0:
        number = -exitcode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name} (signal {number})"
    return f"exited with code {exitcode}"
