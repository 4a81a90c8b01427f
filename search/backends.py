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

A device request is a comma-separated list of kinds: ``auto``, ``cuda``, the simulated GPUs
(``sim-h100``, ``sim-h200``) and, on Ray, a GPU kind of the cluster (``H100``, as Ray's
``accelerator_type`` names it). Each kind is tuned for itself: records are keyed by device.
"""
from __future__ import annotations

import os
from typing import Protocol

from tiletune.errors import UsageError
from tiletune.kernels.target import KERNEL_TARGET
from tiletune.search.execution.workers import COMPILE_ENV, INTERPRET_ENV, Executor, WorkerPool
from tiletune.search.measurement.measurers import CudaMeasurer, Measurer, SimMeasurer
from tiletune.search.measurement.simulator import SIMULATED_GPUS

EXECUTORS = ("local", "ray")
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


def device_kinds(device: str, *, executor: str = "local") -> list[str]:
    """The kinds a device request names, checked: UsageError saying what is known otherwise."""
    if not isinstance(device, str) or not device.strip():
        raise UsageError("the device is empty; expected auto, cuda or a simulated GPU such as sim-h100")
    kinds = [part.strip() for part in device.split(",")]
    known = ("auto", "cuda", *SIMULATED_GPUS)
    for kind in kinds:
        if not kind:
            raise UsageError(f"device '{device}' has an empty entry; separate kinds with single commas")
        if kind not in known and (executor != "ray" or not kind.replace("_", "").replace("-", "").isalnum()):
            extra = ", or a GPU kind of the Ray cluster (--executor ray)" if executor == "local" else ""
            raise UsageError(f"unknown device '{kind}'; expected one of {', '.join(known)}{extra}")
    if len(set(kinds)) != len(kinds):
        raise UsageError(f"device '{device}' names a kind twice")
    if executor == "local" and len(kinds) > 1 and {"auto", "cuda"} & set(kinds):
        raise UsageError("this machine has one GPU kind: with --executor local, name auto or cuda alone, "
                         "or simulated kinds (sim-h100,sim-h200)")
    return kinds


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
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
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
                    raise UsageError("--sim-realtime is for simulated devices (sim-h100); a GPU takes real time anyway")
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
