"""Measurers: what turns compiled, verified candidates into latencies.

- `SimMeasurer` (`sim-h100`, `sim-h200`): deterministic latencies from the analytic model of
  one GPU (`measurement.simulator`), answered in the tuner's process from the compile facts.
- `CudaMeasurer` (`cuda`): times each candidate on this machine's GPU in a worker process
  (`steps.time_step`), re-timing a would-be new best before accepting it.

The replay measurer (`measurement.replay`) answers from a recorded sweep, and the Ray measurer
(`measurement.ray_measurer`) runs these in actors that each own one device.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol, Sequence

from tiletune.errors import CompileError, UsageError
from tiletune.kernels.target import KERNEL_TARGET
from tiletune.schedules.config import Config
from tiletune.search.execution import faults
from tiletune.search.measurement.results import Outcome, step_result
from tiletune.search.measurement.sim_realtime import measurement_seconds
from tiletune.search.measurement.simulator import (
    SIMULATED_GPUS,
    DoesNotFit,
    KernelFacts,
    simulate,
)
from tiletune.search.measurement.steps import time_step
from tiletune.tuning_db import Device, Status

if TYPE_CHECKING:  # the simulated measurer runs without torch (in a Ray actor, say)
    from tiletune.kernels.task import TaskSpec


class Measurer(Protocol):
    """Turns compiled, verified candidates into latencies.

    `kind` is what records say measured them ("cuda", "sim-h100"); `device` keys the records.
    `measure` gets each candidate's compile facts (`usage`, `tile`) and returns one `Outcome`
    per candidate, in order; it never raises for a bad candidate. `needs_kernels` is False for
    a measurer that answers from recorded outcomes: the tuner then neither compiles nor checks
    candidates, and passes them with empty facts.
    """

    kind: str
    device: Device
    needs_kernels: bool

    def measure(self, spec: TaskSpec, candidates: Sequence[tuple[Config, dict]]) -> list[Outcome]:
        """Latencies (or failures) of `candidates`, in order."""
        ...


class SimMeasurer:
    """The simulated device: deterministic latencies from the analytic model of one GPU.

    Every record it writes says `sim-<gpu>` in its measurer and device, so simulated figures
    are never mistaken for real ones.
    """

    def __init__(self, kind: str = KERNEL_TARGET.name, *, realtime: bool = False, isolated: bool = False) -> None:
        if kind not in SIMULATED_GPUS:
            raise UsageError(f"unknown simulated device '{kind}'; known: {', '.join(SIMULATED_GPUS)}")
        import triton

        faults.rules()  # a bad TILETUNE_FAULTS fails here, before anything is recorded
        self.kind = kind
        self.needs_kernels = True
        self.realtime = realtime  # sleep as long as measuring on the real GPU would take
        self.isolated = isolated  # runs in a worker of its own (a Ray actor), not in the tuner
        self.gpu = SIMULATED_GPUS[kind]
        self.device = Device.make(kind, self.gpu.capability, triton.__version__)

    def measure(self, spec: TaskSpec, candidates: Sequence[tuple[Config, dict]]) -> list[Outcome]:
        """Simulated latency of each candidate from its tile facts and compile facts."""
        outcomes = []
        for config, facts in candidates:
            tile, usage = facts["tile"], facts["usage"]
            kf = KernelFacts.from_facts(tile, usage, facts["dot_dtype"])
            try:
                wrong = faults.inject("measure", config, in_process=not self.isolated)
                result = simulate(kf, self.gpu)
            except DoesNotFit as error:
                failure = (Status.COMPILE_ERROR, f"does not fit {self.gpu.name}: {error}")
            except CompileError as error:
                failure = (Status.COMPILE_ERROR, str(error))
            except MemoryError as error:
                failure = (Status.RUNTIME_ERROR, f"out of memory: MemoryError: {error}")
            else:
                failure = (Status.WRONG_RESULT, wrong) if wrong else None
            if failure is not None:
                outcomes.append(Outcome.failed(config, *failure, facts))
                continue
            sim = {"limiter": result.limiter, "occupancy": result.occupancy, "waves": result.waves}
            outcomes.append(Outcome.measured(config, result.latency_us, facts={**facts, "sim": sim}))
        if self.realtime:
            time.sleep(sum(measurement_seconds(self.gpu, o.latency_us) for o in outcomes))
        return outcomes


class CudaMeasurer:
    """Times candidates on this machine's GPU, each in a worker process with a time limit.

    A candidate that beats the best this measurer has seen for its workload is timed a second
    time before it is accepted, and recorded with the slower of its two medians: one lucky
    measurement must not crown a config (helion#1187). Both medians stay in its facts.
    """

    def __init__(self, pool, *, repeats: int = 10, budget_ms: float = 400.0, timeout: float = 60.0,
                 seed: int = 0) -> None:
        import torch
        import triton

        if not torch.cuda.is_available():
            raise UsageError("--device cuda needs a CUDA GPU, and none is visible; use --device sim-h100")
        faults.rules()  # a bad TILETUNE_FAULTS fails here, before anything is recorded
        major, minor = torch.cuda.get_device_capability()
        self.kind = "cuda"
        self.needs_kernels = True
        self.device = Device.make(torch.cuda.get_device_name(), f"sm{major}{minor}", triton.__version__)
        self.pool, self.repeats, self.budget_ms, self.timeout, self.seed = pool, repeats, budget_ms, timeout, seed
        self._best: dict[TaskSpec, float] = {}  # best accepted median per workload

    def measure(self, spec: TaskSpec, candidates: Sequence[tuple[Config, dict]]) -> list[Outcome]:
        """Real latencies, measured one candidate at a time (never two kernels on one GPU at once)."""
        outcomes = []
        for config, facts in candidates:
            outcome = self._time(spec, config, facts)
            best = self._best.get(spec)
            if outcome.ok and best is not None and outcome.latency_us < best:
                outcome = confirm_best(outcome, self._time(spec, config, facts))
            if outcome.ok and (best is None or outcome.latency_us < best):
                self._best[spec] = outcome.latency_us
            outcomes.append(outcome)
        return outcomes

    def _time(self, spec: TaskSpec, config: Config, facts: dict) -> Outcome:
        task = self.pool.run(time_step, spec, config.to_json(), self.seed, self.repeats, self.budget_ms,
                             timeout=self.timeout)
        result = step_result("measure", task, self.timeout)
        if not result.ok:
            return Outcome.failed(config, result.status, result.reason, facts, transient=result.transient)
        v = result.data
        return Outcome.measured(config, v["latency_us"], latency_min_us=v["latency_min_us"],
                                latency_spread=v["latency_spread"], repeats=v["repeats"],
                                facts={**facts, "timing": v["timing"]})


def confirm_best(first: Outcome, second: Outcome) -> Outcome:
    """The outcome of a would-be new best measured twice: a failure on the second run wins,
    else the slower median (with its own spread), both medians noted in `facts["remeasured"]`."""
    if second.status != "ok":
        return second
    slower = max(first, second, key=lambda o: o.latency_us)
    return Outcome.measured(
        slower.config, slower.latency_us, latency_min_us=min(first.latency_min_us, second.latency_min_us),
        latency_spread=slower.latency_spread, repeats=first.repeats + second.repeats,
        facts={**slower.facts, "remeasured": [first.latency_us, second.latency_us]})
