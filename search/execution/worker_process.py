"""The worker side of a `WorkerPool`: the loop a worker process runs.

A worker receives `(task_id, pickled (fn, args, kwargs))`, answers `("started", task_id)` once
it has unpickled the task (time limits count from then), runs it and answers `("done", task_id,
status, value, reason, seconds)`, with `status` "ok" or "error": an exception is answered as
data, never raised. A task that sets up before its own work (imports an operator, builds its
task) does so inside `preparing()`, which answers `("preparing", task_id)` and then "started"
again: the setup is the pool's to bound (as unpickling is), not charged to the task's limit. It exits when its pool says so (an empty message), when the pipe closes or
when its parent dies, so a killed tuner leaves no hung workers.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import contextlib
import signal
import threading
import time
import traceback
from typing import Callable, Iterator

# Longest exception message kept in a reason: Triton compile errors can carry whole IR dumps.
MAX_MESSAGE = 1500

# The pipe and id of the task this worker runs now, for `preparing`; None between tasks and
# outside a worker.
_running: tuple[multiprocessing.connection.Connection, int] | None = None


@contextlib.contextmanager
def preparing() -> Iterator[None]:
    """Mark the block as the task's setup (importing its operator, building its task), not its
    work: the pool bounds it with its start limit and, if it runs past it, reports a timeout
    that is no fault of the task's input (transient). Outside a worker process, it does nothing."""
    running = _running
    if running is None:
        yield
        return
    conn, task_id = running
    conn.send_bytes(pickle.dumps(("preparing", task_id)))
    yield
    conn.send_bytes(pickle.dumps(("started", task_id)))


def worker_main(conn: multiprocessing.connection.Connection,
                 initializer: Callable[[], object] | None) -> None:
    """Loop of one worker: receive `(task_id, fn, args, kwargs)`, answer "started", then the result."""
    # Ctrl-C reaches the whole process group; the tuner decides what to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    init_error = None
    if initializer is not None:
        try:
            initializer()
        except BaseException as exc:
            init_error = f"the worker's initializer failed: {describe(exc)}"
    try:
        _serve(conn, init_error)
    except (EOFError, OSError):
        return  # the tuner went away; nobody is left to answer


def _serve(conn: multiprocessing.connection.Connection, init_error: str | None) -> None:
    """Answer tasks until told to stop (an empty message) or the pipe closes."""
    global _running
    while True:
        data = conn.recv_bytes()
        if not data:
            return
        # The id travels outside the task's own pickle so that a task which cannot be unpickled
        # here (a module missing in the worker) can still be answered.
        task_id, task = pickle.loads(data)
        try:
            fn, args, kwargs = pickle.loads(task)
        except BaseException as exc:
            _send(conn, ("done", task_id, "error", None,
                         f"the task could not be unpickled in the worker: {describe(exc)}", 0.0))
            continue
        conn.send_bytes(pickle.dumps(("started", task_id)))
        if init_error is not None:
            _send(conn, ("done", task_id, "error", None, init_error, 0.0))
            continue
        started = time.perf_counter()
        _running = (conn, task_id)
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:
            _send(conn, ("done", task_id, "error", None, describe(exc), time.perf_counter() - started))
            continue
        finally:
            _running = None
        seconds = time.perf_counter() - started
        if not _send(conn, ("done", task_id, "ok", value, "", seconds)):
            _send(conn, ("done", task_id, "error", None,
                         f"the result ({type(value).__qualname__}) could not be pickled", seconds))


def _send(conn: multiprocessing.connection.Connection, message: tuple) -> bool:
    """Send a message; False if it cannot be pickled (nothing was written then)."""
    try:
        data = pickle.dumps(message)
    except Exception:
        return False
    conn.send_bytes(data)
    return True


def _exit_with_parent() -> None:
    """Exit when the tuner exits, even mid-task, so a killed tuner leaves no hung workers."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def describe(exc: BaseException) -> str:
    """The exception's type and message on one line, plus where it was raised."""
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable message>"
    message = " | ".join(line.strip() for line in message.splitlines() if line.strip())
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + " ..."
    text = f"{name}: {message}" if message else name
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {last.filename}:{last.lineno} in {last.name})"
    return text
