"""Task functions for the worker-pool tests; a plain module so spawned workers can import it by name."""
from __future__ import annotations

import os
import signal
import threading
import time


def echo_after(value: object, delay: float) -> object:
    """Return `value` after `delay` seconds."""
    time.sleep(delay)
    return value


def square(x: int) -> int:
    return x * x


def environ_get(key: str) -> str | None:
    return os.environ.get(key)


def getpid() -> int:
    return os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def exit_with(code: int) -> None:
    os._exit(code)


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)


def unpicklable_result() -> object:
    return threading.Lock()


def hang_after_writing_pid(path: str) -> None:
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)


def behave(kind: str, value: int) -> int:
    """One task of each outcome, chosen by `kind`."""
    if kind == "error":
        raise RuntimeError(f"config {value} is bad")
    if kind == "timeout":
        time.sleep(600)
    if kind == "exit":
        os._exit(value)
    if kind == "segv":
        segfault()
    return value


def _rebuild_slowly(delay: float) -> SlowToUnpickle:
    time.sleep(delay)
    return SlowToUnpickle(delay)


class SlowToUnpickle:
    """An argument that takes `delay` seconds to unpickle, as a first import of torch would."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __reduce__(self) -> tuple:
        return (_rebuild_slowly, (self.delay,))


def delay_of(arg: SlowToUnpickle) -> float:
    return arg.delay


def ignore_sigterm_and_hang() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)


def killed_by(signal_number: int) -> None:
    """Die of a signal, as when an operator or a cluster kills the worker from outside."""
    os.kill(os.getpid(), signal_number)
    time.sleep(10)


def set_up_then_sleep(setup: float, work: float) -> float:
    """Spend `setup` seconds preparing (as importing an operator does), then `work` seconds working."""
    from tiletune.search.execution.worker_process import preparing

    with preparing():
        time.sleep(setup)
    time.sleep(work)
    return setup + work
