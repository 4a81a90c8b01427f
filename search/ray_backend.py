"""The Ray backend: a tuning run's compiles and checks on warm CPU workers of a Ray cluster, and
its measurement in actors that each own one device (see `execution.ray_tasks` and
`measurement.ray_measurer`)."""
from __future__ import annotations

import math

import ray
from ray.exceptions import RayError

from tiletune.errors import UsageError
from tiletune.kernels.target import KERNEL_TARGET
from tiletune.search.devices import REALTIME_ON_A_GPU, device_kinds
from tiletune.search.execution.ray_tasks import (
    START_ALLOWANCE_S,
    RayTaskExecutor,
    connect,
    first_line,
    gpu_kinds,
    gpus_of,
    shutdown,
)
from tiletune.search.execution.workers import COMPILE_ENV, INTERPRET_ENV
from tiletune.search.measurement.measurers import Measurer
from tiletune.search.measurement.ray_measurer import RayMeasurer


class RayBackend:
    """Ray tasks for compiles and verification, `workers` measurement actors per device kind."""

    name = "ray"

    def __init__(self, workers: int | None = None, *, measure_timeout: float = 60.0,
                 start_timeout: float = START_ALLOWANCE_S) -> None:
        if workers is not None and workers < 1:
            raise UsageError(f"workers must be at least 1, got {workers}")
        self.started_ray = connect()
        self.workers = workers
        self.measure_timeout, self.start_timeout = measure_timeout, start_timeout
        self.compiler = RayTaskExecutor(COMPILE_ENV, name="compile", start_allowance=start_timeout)
        self.verifier = RayTaskExecutor(INTERPRET_ENV, name="verify", start_allowance=start_timeout)
        self._measurers: list[RayMeasurer] = []
        try:  # every worker starts (and imports torch and Triton) now, in parallel, not in the first batch
            self.compiler._pool.wait_ready("ready")
            self.verifier._pool.wait_ready("ready")
        except RayError as error:
            self.close()
            raise UsageError(f"the Ray cluster could not start tiletune's CPU workers: {first_line(error)}") from None

    def measurers(self, device: str, *, seed: int = 0, realtime: bool = False) -> list[Measurer]:
        """One `RayMeasurer` per kind: `auto` is every GPU kind of the cluster (the simulated
        H100 where it has none), `cuda` every GPU kind, `H100` one of them, `sim-*` simulated."""
        present = gpu_kinds()
        gpus = int(ray.cluster_resources().get("GPU", 0))
        wanted: list[tuple[str, str | None]] = []
        for kind in device_kinds(device, executor="ray"):
            if kind in ("auto", "cuda"):
                if kind == "cuda" and not gpus:
                    raise UsageError("--device cuda: the Ray cluster has no GPU; use --device sim-h100")
                if gpus:
                    wanted += [("cuda", t) for t in present] or [("cuda", None)]
                else:
                    wanted.append((KERNEL_TARGET.name, None))
            elif kind.startswith("sim-"):
                wanted.append((kind, None))
            elif kind in present:
                wanted.append(("cuda", kind))
            else:
                raise UsageError(f"the Ray cluster has no GPU of kind '{kind}'; it has "
                                 f"{', '.join(present) or 'no GPU'} (or use sim-h100)")
        if realtime and any(kind == "cuda" for kind, _ in wanted):
            raise UsageError(REALTIME_ON_A_GPU)
        made = []
        for kind, accelerator in dict.fromkeys(wanted):
            if kind == "cuda":  # one actor per GPU of the kind, at most `workers`
                count = min(self.workers or math.inf, gpus_of(accelerator))
            else:  # simulated devices sleep or compute little: by default one per CPU
                count = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            made.append(RayMeasurer(kind, int(count), accelerator_type=accelerator, realtime=realtime, seed=seed,
                                    timeout=self.measure_timeout, start_timeout=self.start_timeout))
            self._measurers.append(made[-1])
        return made

    def close(self) -> None:
        """Kill the actors; stop Ray if this run started it."""
        for measurer in self._measurers:
            measurer.close()
        self.compiler.close()
        self.verifier.close()
        if self.started_ray:
            shutdown()

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
