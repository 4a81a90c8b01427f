"""What measuring a candidate produces, as typed data that crosses processes.

- `StepResult`: the answer of one step (compile, verify, time) run in a worker: a `Status`,
  a reason when it failed, and the step's figures (`data`) when it did not.
- `Outcome`: what became of one candidate after all its steps: the status recorded in the DB,
  its latency figures and the facts gathered on the way.

`step_result` is the one place where what a worker pool reports (the step's own answer, or a
timeout, a crash, an exception) becomes a step's result; `Outcome.failed` and `Outcome.measured`
build the outcomes that every measurer and the pipeline return.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

from tiletune.schedules.config import Config
from tiletune.search.execution.workers import TaskResult
from tiletune.tuning_db import Status

Step = Literal["compile", "verify", "measure"]

# What a step's worker failing (an exception, a crash) means for the candidate, and the noun
# that reasons use for the step.
_FAILURE: Mapping[str, Status] = {"compile": Status.COMPILE_ERROR, "verify": Status.RUNTIME_ERROR,
                                  "measure": Status.RUNTIME_ERROR}
_NOUN: Mapping[str, str] = {"compile": "compile", "verify": "verification", "measure": "measurement"}


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step's answer: `status`, and either a `reason` (failed) or the step's figures in
    `data` (compile: `usage`, `tile`, `dot_dtype`; verify: `worst`; time: the latency fields
    and `timing`). Plain data, so it pickles between processes and caches as JSON."""

    status: Status
    reason: str = ""
    data: dict = field(default_factory=dict)
    transient: bool = False
    """The step failed for a reason outside the config (its worker killed from outside, or it
    never reached the config): set by `step_result` only, never cached."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))

    @classmethod
    def passed(cls, **data: object) -> StepResult:
        """A step that succeeded, with its figures."""
        return cls(Status.OK, "", dict(data))

    @classmethod
    def failed(cls, status: Status, reason: str) -> StepResult:
        """A step that failed, and why."""
        return cls(status, reason)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_dict(self) -> dict:
        """JSON data (for the step cache)."""
        return {"status": self.status.value, "reason": self.reason, "data": self.data}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> StepResult | None:
        """The result stored by `to_dict`, or None when `data` is not one."""
        try:
            return cls(Status(data["status"]), str(data.get("reason", "")), dict(data.get("data") or {}))
        except (KeyError, TypeError, ValueError):
            return None


def step_result(step: Step, task: TaskResult, timeout: float | None) -> StepResult:
    """What a worker pool reported for a task running `step`, as the step's result: its own
    answer when it returned one, a timeout when it ran too long, and the step's failure status
    (a compile error for compiles, a runtime error otherwise) when its worker raised or died.
    A failure the pool calls transient (a worker killed from outside, a task that never reached
    its work) keeps that mark, so that it is retried rather than held against the config."""
    noun = _NOUN[step]
    if task.status == "timeout" and task.transient:
        return StepResult(Status.TIMEOUT, f"{noun} worker {task.reason}", transient=True)
    if task.status == "timeout":
        limit = f"{timeout:.0f} s" if timeout is not None else "its time limit"
        return StepResult.failed(Status.TIMEOUT, f"{noun} exceeded {limit}: {task.reason}")
    if not task.ok:
        return StepResult(_FAILURE[step], f"{noun} worker {task.status}: {task.reason}", transient=task.transient)
    if not isinstance(task.value, StepResult):
        return StepResult.failed(_FAILURE[step], f"{noun} answered {type(task.value).__name__}, not a StepResult")
    return task.value


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one candidate: its `Status` and, when ok, its latency figures; `facts`
    holds what was learned on the way (compile facts, timing details)."""

    config: Config
    status: Status
    reason: str = ""
    latency_us: float | None = None
    latency_min_us: float | None = None
    latency_spread: float | None = None
    repeats: int = 0
    facts: dict = field(default_factory=dict)
    host: str = ""  # the machine that measured it, where not this one (a Ray actor's node)
    transient: bool = False
    """It failed for a reason outside the config (`StepResult.transient`): the tuner keeps it
    for a retry instead of recording `status` against the config."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @classmethod
    def failed(cls, config: Config, status: Status, reason: str,
               facts: Mapping[str, object] | None = None, *, transient: bool = False) -> Outcome:
        """The outcome of a candidate that failed with `status`, and why (`transient`: for a
        reason outside it)."""
        return cls(config, status, reason, facts=dict(facts or {}), transient=transient)

    @classmethod
    def measured(cls, config: Config, latency_us: float, *, latency_min_us: float | None = None,
                 latency_spread: float | None = 0.0, repeats: int = 1,
                 facts: Mapping[str, object] | None = None) -> Outcome:
        """The outcome of a candidate measured at `latency_us` (its median)."""
        return cls(config, Status.OK, "", latency_us,
                   latency_us if latency_min_us is None else latency_min_us,
                   latency_spread, repeats, dict(facts or {}))
