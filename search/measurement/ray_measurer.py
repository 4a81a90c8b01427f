"""Measurement on a Ray cluster: actors that each own one device and measure one candidate at a
time.

`RayMeasurer` owns `workers` actors of one device kind, each holding one device (``num_gpus=1``
and Ray's ``accelerator_type`` on a GPU cluster; ``num_gpus=0`` actors running the simulated
measurer otherwise). An actor that dies (killed, crashed CUDA context, node lost) is replaced
and its candidate retried once, then recorded as a ``runtime_error`` naming both deaths; one
that passes its deadline (an actor task cannot be cancelled) is killed and replaced, and its
candidate recorded as a ``timeout``. Results come back in the candidates' order, whatever order
the actors finish in.
"""
from __future__ import annotations

import dataclasses
import socket
from typing import TYPE_CHECKING, Callable, Sequence

import ray
from ray.exceptions import GetTimeoutError, RayError

from tiletune.errors import UsageError
from tiletune.schedules.config import Config
from tiletune.search.execution.ray_tasks import (
    START_ALLOWANCE_S,
    ActorPool,
    first_line,
    run_as_data,
    runtime_env,
)
from tiletune.search.execution.workers import COMPILE_ENV, TaskResult
from tiletune.search.measurement.results import Outcome
from tiletune.tuning_db import Device, Status

if TYPE_CHECKING:
    from tiletune.kernels.task import TaskSpec


class MeasureActor:
    """Owns one device and measures one candidate at a time on it."""

    def __init__(self, kind: str, realtime: bool, seed: int) -> None:
        from tiletune.search.measurement.measurers import CudaMeasurer, SimMeasurer

        if kind == "cuda":
            self.measurer = CudaMeasurer(_InThisProcess(), seed=seed)
        else:
            self.measurer = SimMeasurer(kind, realtime=realtime, isolated=True)

    def device(self) -> tuple[str, Device]:
        """The measurer's kind and the device it keys records with."""
        return self.measurer.kind, self.measurer.device

    def measure(self, spec: TaskSpec | None, config: Config, facts: dict) -> Outcome:
        """The outcome of one compiled, verified candidate (simulated devices need no spec)."""
        outcome = self.measurer.measure(spec, [(config, facts)])[0]
        return dataclasses.replace(outcome, host=socket.gethostname())  # provenance: the measuring node


class _InThisProcess:
    """A `WorkerPool.run` stand-in: the actor is the isolation, so its GPU steps run in it."""

    def run(self, fn: Callable[..., object], *args: object, timeout: float | None = None) -> TaskResult:
        return run_as_data(fn, args)


_MeasureActorRemote = ray.remote(max_restarts=0, max_concurrency=1)(MeasureActor)


class RayMeasurer:
    """`Measurer` over `workers` actors of one device kind ("sim-h100", or "cuda" on the GPUs of
    one Ray `accelerator_type`)."""

    def __init__(self, kind: str, workers: int, *, accelerator_type: str | None = None,
                 realtime: bool = False, seed: int = 0, timeout: float = 60.0,
                 start_timeout: float = START_ALLOWANCE_S) -> None:
        self.timeout = timeout
        options: dict = {"runtime_env": runtime_env(COMPILE_ENV)}
        if kind == "cuda":
            options.update(num_gpus=1, num_cpus=0)
            if accelerator_type:
                options["accelerator_type"] = accelerator_type
        else:
            options.update(num_gpus=0, num_cpus=0)  # a simulated device needs no core to itself
        self._pool = ActorPool(lambda: _MeasureActorRemote.options(**options).remote(kind, realtime, seed),
                               workers, start_timeout=start_timeout)
        try:
            described = self._pool.wait_ready("device")
        except GetTimeoutError:
            self.close()
            want = f"{accelerator_type or 'any'} GPU" if kind == "cuda" else kind
            raise UsageError(f"Ray could not start {workers} measurement actors ({want}) within {start_timeout:g} s; "
                             f"the cluster has {ray.cluster_resources()}") from None
        except RayError as error:
            self.close()
            raise UsageError(f"the {kind} measurement actors failed to start: {first_line(error)}") from None
        self.kind, self.device = described[0]
        self.needs_kernels = True
        self.workers = workers

    @property
    def restarts(self) -> int:
        """Actors replaced (after a death or a deadline)."""
        return self._pool.restarts

    def measure(self, spec: TaskSpec, candidates: Sequence[tuple[Config, dict]]) -> list[Outcome]:
        """Each candidate on the next free actor; outcomes in the candidates' order. A death is
        retried once on a fresh actor (a killed actor or a lost node is not the candidate's
        doing); a second is recorded as a runtime error, a deadline as a timeout."""
        # A simulated device answers from the facts alone; without the spec its actor never
        # imports torch (a tenth of the memory: eight of them fit beside the tuner anywhere).
        spec_sent = spec if self.kind == "cuda" else None
        calls = [lambda actor, c=config, f=facts: actor.measure.remote(spec_sent, c, f) for config, facts in candidates]
        outcomes = []
        for (config, facts), (status, value, _) in zip(candidates, self._pool.run(calls, self.timeout, retry_deaths=True)):
            outcomes.append(value if status == "ok" else _actor_failure(config, status, value, facts))
        return outcomes

    def actor(self, slot: int):
        """The actor handle at `slot` (for tests that kill one)."""
        return self._pool.actors[slot]

    def close(self) -> None:
        """Kill every actor (their devices are free again)."""
        self._pool.close()


def _actor_failure(config: Config, status: str, reason: object, facts: dict) -> Outcome:
    """A measurement actor's failure (see `ActorPool.run`) as the candidate's outcome."""
    if status == "died":
        return Outcome.failed(config, Status.RUNTIME_ERROR, f"measurement actor died twice: {reason}", facts)
    if status == "timeout":
        return Outcome.failed(config, Status.TIMEOUT, f"measurement {reason}", facts)
    return Outcome.failed(config, Status.RUNTIME_ERROR, f"measurement failed: {reason}", facts)
