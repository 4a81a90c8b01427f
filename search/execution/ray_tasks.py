"""Running steps on a Ray cluster: joining it, and warm CPU workers for compiles and checks.

The driver (where `tiletune autotune --executor ray` runs) keeps the strategy, the cost model and
the only connection that writes the DB; the cluster only answers questions. `RayTaskExecutor`
is the `Executor` (`execution.workers`) of the cluster: it runs `compile_step` / `verify_step`
on warm step-worker actors, half a CPU each, whose runtime environment sets `TRITON_INTERPRET`
as the step needs, as the local pools do with their environment overlay. A worker whose task
passes its deadline is killed and replaced; one that dies is replaced and its task reported as
a crash. `ActorPool` is the machinery both it and the measurement actors
(`measurement.ray_measurer`) run on.

The cluster is the one ``RAY_ADDRESS`` names, or one already initialised in this process, or a
local Ray started for the run and stopped after it (`connect`). Ray is an optional extra: only
this module, `measurement.ray_measurer` and `search.ray_backend` import it.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections import deque
from typing import Callable, Sequence

import ray
from ray.exceptions import RayActorError, RayError

from tiletune.errors import UsageError
from tiletune.search.execution import faults
from tiletune.search.execution.worker_process import describe
from tiletune.search.execution.workers import TaskResult

# Starting a Ray worker process (and importing torch and Triton in it) is not charged to a
# task's time limit: a task's deadline counts from submission plus this allowance.
START_ALLOWANCE_S = 120.0


def runtime_env(overlay: dict[str, str]) -> dict:
    """Workers get the step's environment, and the fault rules of tests as local workers do."""
    env = dict(overlay)
    if os.environ.get(faults.ENV):
        env[faults.ENV] = os.environ[faults.ENV]
    return {"env_vars": env}


def run_as_data(fn: Callable[..., object], args: tuple) -> TaskResult:
    """Run one task in a Ray worker; an exception is answered, never raised, as locally."""
    started = time.perf_counter()
    try:
        value = fn(*args)
    except BaseException as exc:  # noqa: BLE001 - the tuner records every failure as data
        return TaskResult(False, None, "error", describe(exc), time.perf_counter() - started)
    return TaskResult(True, value, "ok", "", time.perf_counter() - started)


class StepWorker:
    """A warm process for compile or verification steps (torch and Triton imported once)."""

    def __init__(self) -> None:
        import tiletune.kernels.task  # noqa: F401 - torch and Triton, before the first task
        import tiletune.search.measurement.measurers  # noqa: F401

    def ready(self) -> bool:
        """Answered once the process runs."""
        return True

    def run(self, fn: Callable[..., object], args: tuple) -> TaskResult:
        """`fn(*args)`, answered as data."""
        return run_as_data(fn, args)


_StepWorkerRemote = ray.remote(max_restarts=0, max_concurrency=1)(StepWorker)


class ActorPool:
    """A fixed number of actors made by `make`, each running one call at a time; an actor
    that dies or passes its deadline is replaced (a running actor task cannot be cancelled,
    so one past its deadline is killed)."""

    def __init__(self, make: Callable[[], object], size: int, *, start_timeout: float) -> None:
        self._make, self.start_timeout = make, start_timeout
        self.actors = [make() for _ in range(size)]
        self._fresh = [True] * size  # not answered yet: its deadline allows for its start
        self.restarts = 0
        """Actors replaced (after a death or a deadline)."""

    def run(self, calls: Sequence[Callable[[object], ray.ObjectRef]], timeout: float | None, *,
            retry_deaths: bool = False) -> list[tuple[str, object, float]]:
        """Make every call on the next free actor; per call, in input order, one of ("ok",
        value), ("died", reason), ("timeout", reason) or ("error", reason), with its seconds.
        With `retry_deaths`, a call whose actor died is made once more on a fresh actor."""
        results: list[tuple[str, object, float] | None] = [None] * len(calls)
        deaths: dict[int, str] = {}
        pending, idle = deque(range(len(calls))), deque(range(len(self.actors)))
        busy: dict[ray.ObjectRef, tuple[int, int, float, float]] = {}  # ref -> (slot, call, sent, deadline)
        try:
            while pending or busy:
                while pending and idle:
                    slot, index = idle.popleft(), pending.popleft()
                    sent = time.monotonic()
                    limit = (timeout if timeout is not None else math.inf) + (self.start_timeout if self._fresh[slot] else 0.0)
                    busy[calls[index](self.actors[slot])] = (slot, index, sent, sent + limit)
                for ref in _wait_any(list(busy), min(d for *_, d in busy.values())):
                    slot, index, sent, _ = busy.pop(ref)
                    try:
                        results[index] = ("ok", ray.get(ref), time.monotonic() - sent)
                        self._fresh[slot] = False
                    except RayActorError as error:
                        self._replace(slot)
                        if retry_deaths and index not in deaths:
                            deaths[index] = first_line(error)
                            pending.appendleft(index)  # a lost node or a killed actor: try once more
                        else:
                            earlier = f"{deaths[index]}; then " if index in deaths else ""
                            results[index] = ("died", earlier + first_line(error), time.monotonic() - sent)
                    except RayError as error:
                        results[index] = ("error", first_line(error), time.monotonic() - sent)
                    idle.append(slot)
                now = time.monotonic()
                for ref, (slot, index, sent, deadline) in list(busy.items()):
                    if deadline <= now:
                        del busy[ref]
                        self._replace(slot)
                        results[index] = ("timeout", f"did not finish within {timeout:g} s; its actor was killed "
                                                     "and replaced", now - sent)
                        idle.append(slot)
        finally:
            for slot, *_ in busy.values():  # left early: an actor still busy would answer late
                self._replace(slot)
        return [r for r in results if r is not None]

    def wait_ready(self, method: str) -> list[object]:
        """Call `method` on every actor and wait for all (they import torch and Triton once)."""
        answers = ray.get([getattr(actor, method).remote() for actor in self.actors], timeout=self.start_timeout)
        self._fresh = [False] * len(self.actors)
        return answers

    def _replace(self, slot: int) -> None:
        ray.kill(self.actors[slot], no_restart=True)
        self.actors[slot] = self._make()
        self._fresh[slot] = True
        self.restarts += 1

    def close(self) -> None:
        """Kill every actor."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []


class RayTaskExecutor:
    """`Executor` over one warm step worker per cluster CPU, in the step's environment.

    Warm actors rather than plain Ray tasks: Ray reaps idle task workers above its soft limit
    (a worker per CPU) about a second after their task, and the compile and the verification
    environments need a worker each, so every batch would pay a fresh import of torch and
    Triton. Each worker asks for half a CPU, so the two executors together fill the cluster's
    CPUs, as the steps run one after the other.
    """

    def __init__(self, env: dict[str, str], *, name: str, workers: int | None = None,
                 start_allowance: float = START_ALLOWANCE_S) -> None:
        self.name = name
        size = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        options = dict(runtime_env=runtime_env(env), num_cpus=0.5, num_gpus=0)
        self._pool = ActorPool(lambda: _StepWorkerRemote.options(**options).remote(), size,
                               start_timeout=start_allowance)
        self._closed = False

    @property
    def worker_count(self) -> int:
        """How many step workers the executor keeps."""
        return len(self._pool.actors)

    @property
    def restarts(self) -> int:
        """Workers replaced (after a crash or a timeout)."""
        return self._pool.restarts

    def map(self, fn: Callable[..., object], items: Sequence[tuple], *,
            timeout: float | None = None) -> list[TaskResult]:
        """Run `fn(*item)` for every item on the workers; results in input order."""
        if self._closed:
            raise UsageError(f"RayTaskExecutor {self.name!r} is closed")
        calls = [lambda actor, args=tuple(item): actor.run.remote(fn, args) for item in items]
        results = []
        for status, value, seconds in self._pool.run(calls, timeout):
            if status == "ok":
                results.append(value)  # the worker's own TaskResult
            elif status == "died":
                results.append(TaskResult(False, None, "crash", f"Ray worker died during the task: {value}", seconds))
            else:
                results.append(TaskResult(False, None, status, str(value), seconds))
        return results

    def close(self) -> None:
        """Stop the workers."""
        if not self._closed:
            self._closed = True
            self._pool.close()


def _wait_any(refs: list[ray.ObjectRef], deadline: float) -> list[ray.ObjectRef]:
    """The refs that are ready once at least one is, or `deadline` (monotonic) passes."""
    wait_for = None if deadline == math.inf else max(0.0, deadline - time.monotonic())
    ready, rest = ray.wait(refs, num_returns=1, timeout=wait_for)
    if ready and rest:
        ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
    return ready


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:1500]


def init(**options: object) -> None:
    """`ray.init(**options)` from a neutral directory.

    Ray puts the driver's current directory first on its workers' `sys.path`; run from a
    checkout of tiletune, that directory's `tiletune/` folder (the facade only: the
    subpackages live beside it) would shadow the installed package in every worker. Workers
    need no directory of the driver: operator files are named by absolute path.
    """
    previous = os.getcwd()
    os.chdir(tempfile.gettempdir())
    try:
        ray.init(**options)
    finally:
        os.chdir(previous)


def connect() -> bool:
    """Join the cluster: ``RAY_ADDRESS``, or this process's Ray, or a local one started now.
    True when this call started Ray (so the backend stops it after the run)."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    try:
        init(address=address or None, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    except ConnectionError as error:
        raise UsageError(f"cannot reach the Ray cluster at RAY_ADDRESS={address}: {error}") from None
    if not address:  # a local Ray of this process: stopped even if this process is killed
        global _REAPER
        from tiletune.search.ray_reaper import watch

        _REAPER = watch(os.getpid())
    return True


# The watcher of the local Ray this process started (see `search.ray_reaper`), owned by
# connect() and shutdown().
_REAPER = None


def shutdown() -> None:
    """Stop the Ray this process started, and whatever of it outlives `ray.shutdown()`."""
    global _REAPER
    ray.shutdown()
    if _REAPER is not None:
        _REAPER.stdin.close()
        _REAPER.wait(timeout=30)
        _REAPER = None


def gpu_kinds() -> list[str]:
    """The GPU kinds of the cluster, by Ray's ``accelerator_type:<kind>`` resources."""
    return sorted(name.split(":", 1)[1] for name in ray.cluster_resources() if name.startswith("accelerator_type:"))


def gpus_of(accelerator_type: str | None) -> int:
    """GPUs on the cluster's live nodes of that kind (of any kind for None)."""
    total = 0
    for node in ray.nodes():
        resources = node.get("Resources", {})
        if node.get("Alive") and (accelerator_type is None or f"accelerator_type:{accelerator_type}" in resources):
            total += int(resources.get("GPU", 0))
    return total
