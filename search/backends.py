"""Where a tuning run's work happens: local worker processes, or a Ray cluster.

A `Backend` is what the tuner and the scheduler are given: `compiler` and `verifier` executors
(`execution.workers.Executor`: `map(fn, items, timeout)` answering `TaskResult`s in input order)
and `measurers(device)`, one `Measurer` per device kind to tune. The driver (strategy, cost
model, the one DB connection) is the same whatever the backend, so records arrive in the same
batches and transactions, and the search depends on the seed and the budget only.

- ``local`` (`LocalBackend`): the compile and verification worker pools of this machine, and the
  measurer of its one device (the GPU in a worker process, or the simulator in the tuner).
- ``ray`` (`search.ray_backend.RayBackend`): compiles and verification on warm CPU workers of
  the cluster, and measurement in actors that each own one device. Ray is an optional extra,
  imported only where it is used (`execution.ray_tasks`, `measurement.ray_measurer`).

What a device request names (``auto``, ``cuda``, ``sim-h100``, a Ray cluster's GPU kind, or
several of them) is `devices.device_kinds`'s to say; each kind is tuned for itself.
"""
from __future__ import annotations

from typing import Protocol

from tiletune.errors import UsageError
from tiletune.kernels.target import KERNEL_TARGET
from tiletune.search.devices import REALTIME_ON_A_GPU, device_kinds
from tiletune.search.execution.workers import COMPILE_ENV, INTERPRET_ENV, Executor, WorkerPool, default_workers
from tiletune.search.measurement.measurers import CudaMeasurer, Measurer, SimMeasurer

#: The executors by name, with where each runs the work (the CLI's --executor help reads it).
EXECUTORS: dict[str, str] = {
    "local": "worker processes here",
    "ray": "the cluster RAY_ADDRESS names, else a local Ray",
}
RAY_MISSING = 'the ray executor needs Ray, which is not installed: pip install "tiletune[ray]"'


class Backend(Protocol):
    """The executors and measurers of one tuning run; `close()` releases them."""

    name: str
    compiler: Executor
    verifier: Executor

    def measurers(self, device: str, *, seed: int = 0, realtime: bool = False) -> list[Measurer]:
        """One measurer per device kind that `device` asks for, in the order asked."""
        ...

    def close(self) -> None:
        """Stop every worker (and the cluster, if the backend started one)."""
        ...


def check_executor(executor: str) -> None:
    """UsageError unless `executor` is a known backend whose packages are installed."""
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor '{executor}'; expected one of {', '.join(EXECUTORS)}")
    if executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise UsageError(RAY_MISSING)


def open_backend(executor: str, workers: int | None = None, **options: object) -> Backend:
    """The backend called `executor` with `workers` (local: compile processes; ray: measurement
    actors per device kind)."""
    check_executor(executor)
    if executor == "ray":
        from tiletune.search.ray_backend import RayBackend

        return RayBackend(workers, **options)
    if options:
        raise UsageError(f"the local executor takes no options {', '.join(sorted(options))}")
    return LocalBackend(workers)


class LocalBackend:
    """Worker pools on this machine (`workers` compiling processes, one interpreting process
    for verification), and the measurer of its one device. One or several tuners share it."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_workers()
        self._gpu_pools: list[WorkerPool] = []
        self.compiler = WorkerPool(self.workers, env=COMPILE_ENV, name="compile")
        try:
            self.verifier = WorkerPool(1, env=INTERPRET_ENV, name="verify")
        except BaseException:
            self.compiler.close()
            raise

    def measurers(self, device: str, *, seed: int = 0, realtime: bool = False) -> list[Measurer]:
        """`cuda` times on this machine's GPU in a worker; `sim-*` answers in this process."""
        result: list[Measurer] = []
        for kind in device_kinds(device):
            if kind == "auto":
                import torch

                kind = "cuda" if torch.cuda.is_available() else KERNEL_TARGET.name
            if kind == "cuda":
                if realtime:
                    raise UsageError(REALTIME_ON_A_GPU)
                pool = WorkerPool(1, env=COMPILE_ENV, name="gpu")
                self._gpu_pools.append(pool)
                result.append(CudaMeasurer(pool, seed=seed))
            else:
                result.append(SimMeasurer(kind, realtime=realtime))
        return result

    def close(self) -> None:
        """Stop every worker."""
        for pool in (*self._gpu_pools, self.compiler, self.verifier):
            pool.close()

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
