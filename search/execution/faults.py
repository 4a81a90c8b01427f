"""Fault injection for tests: make chosen configs fail in chosen steps, as real ones do.

Faults are declared in the environment variable ``TILETUNE_FAULTS``, so that they reach the
spawned worker processes that compile, verify and time candidates::

    TILETUNE_FAULTS="compile:hang@BLOCK_M=16;verify:wrong@BLOCK_N=32,num_warps=4"

Rules are separated by ``;``; each is ``step:kind@knob=value[,knob=value...]`` and fires when
`step` runs a config that has every named knob at the named value (values compare as written:
``64``, ``true``, ``fp16``). A rule without ``@...`` fires for every config. Steps, each calling
`inject` as it starts (see `search/measurement/steps.py`):

- ``compile``: `compile_step`, in a compiling worker;
- ``verify``: `verify_step`, in the interpreting worker;
- ``measure``: `time_step` in the GPU worker, or the sim measurer in the tuner's own process.

Kinds, and what the tuner records:

=========  ==========================================  ==========================================
kind       what happens                                recorded as
=========  ==========================================  ==========================================
``error``  raises `CompileError`                       compile: ``compile_error``; verify and
                                                       measure (GPU): ``runtime_error``; sim
                                                       measure: ``compile_error``
``hang``   sleeps forever                              ``timeout`` (the pool kills the worker)
``crash``  the worker dies of SIGSEGV                  compile: ``compile_error``, verify:
                                                       ``runtime_error``, "crash" in the reason
``wrong``  the step reports a wrong result             ``wrong_result`` (not for ``compile``,
                                                       which has no result to check)
``oom``    raises `MemoryError`                        ``runtime_error``, "out of memory"
``killed`` the worker dies of SIGKILL, as when an      no record: a retry, measured again by the
           operator or a cluster kills it from outside next run (a failure outside the config)
=========  ==========================================  ==========================================

``hang``, ``crash`` and ``killed`` in the sim measurer would stop the tuner itself, which runs it, so there
they raise UsageError instead. A rule that does not parse raises UsageError naming it; the
measurers read the rules when they are built, so a typo fails the run before anything is
recorded. With the variable unset, `inject` costs one environment lookup.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from tiletune.errors import CompileError, UsageError
from tiletune.schedules.config import Config

__all__ = ["ENV", "KINDS", "STEPS", "Fault", "inject", "parse", "rules"]

ENV = "TILETUNE_FAULTS"
STEPS = ("compile", "verify", "measure")
KINDS = ("error", "hang", "crash", "wrong", "oom", "killed")


@dataclass(frozen=True, slots=True)
class Fault:
    """One rule: in `step`, a config with every knob of `knobs` at its value gets `kind`."""

    step: str
    kind: str
    knobs: tuple[tuple[str, str], ...] = ()

    def matches(self, config: Config) -> bool:
        """Whether `config` has every knob of the rule at the rule's value."""
        values = config.as_dict()
        return all(name in values and _text(values[name]) == value for name, value in self.knobs)

    def __str__(self) -> str:
        where = ",".join(f"{name}={value}" for name, value in self.knobs)
        return f"{self.step}:{self.kind}" + (f"@{where}" if where else "")


def parse(text: str) -> tuple[Fault, ...]:
    """The rules of a ``TILETUNE_FAULTS`` value; UsageError naming the first bad rule."""
    faults = []
    for rule in (part.strip() for part in text.split(";")):
        if rule:
            faults.append(_parse_rule(rule))
    return tuple(faults)


def _parse_rule(rule: str) -> Fault:
    def bad(why: str) -> UsageError:
        return UsageError(f"{ENV}: bad rule '{rule}': {why}; expected step:kind@knob=value[,knob=value]"
                          f" with step one of {', '.join(STEPS)} and kind one of {', '.join(KINDS)}")

    head, _, where = rule.partition("@")
    step, sep, kind = (s.strip() for s in head.partition(":"))
    if not sep:
        raise bad("no ':' between step and kind")
    if step not in STEPS:
        raise bad(f"unknown step '{step}'")
    if kind not in KINDS:
        raise bad(f"unknown kind '{kind}'")
    if step == "compile" and kind == "wrong":
        raise bad("compiling has no result that could be wrong (use verify:wrong or measure:wrong)")
    knobs: dict[str, str] = {}
    if "@" in rule:
        for pair in where.split(","):
            name, eq, value = (s.strip() for s in pair.partition("="))
            if not eq or not name or not value:
                raise bad(f"'{pair.strip()}' is not knob=value")
            if name in knobs:
                raise bad(f"knob '{name}' given twice")
            knobs[name] = value.lower() if value in ("True", "False") else value
    return Fault(step, kind, tuple(sorted(knobs.items())))


# Parsed rules by the variable's text: workers parse once, and a changed variable is re-read.
_PARSED: dict[str, tuple[Fault, ...]] = {}


def rules() -> tuple[Fault, ...]:
    """The rules ``TILETUNE_FAULTS`` declares now (none when it is unset or empty)."""
    text = os.environ.get(ENV)
    if not text:
        return ()
    if text not in _PARSED:
        _PARSED[text] = parse(text)
    return _PARSED[text]


def inject(step: str, config: Config, *, in_process: bool = False) -> str | None:
    """Act out the first rule that fires for `step` on `config`.

    Raises (``error``, ``oom``), never returns (``hang``, ``crash``), or returns the reason
    the step must report as its wrong result (``wrong``); None when no rule fires. Steps that
    run in the tuner's own process pass `in_process`, where ``hang``, ``crash`` and ``killed`` are refused.
    """
    text = os.environ.get(ENV)
    if not text:
        return None
    fault = next((f for f in rules() if f.step == step and f.matches(config)), None)
    if fault is None:
        return None
    what = f"injected fault {fault} ({ENV}) on {config!r}"
    if fault.kind == "error":
        raise CompileError(what)
    if fault.kind == "oom":
        raise MemoryError(what)
    if fault.kind == "wrong":
        return what
    if in_process:
        raise UsageError(f"{ENV}: {fault} cannot be injected here: this {step} step runs in the tuner's own"
                         " process, which it would stop; use it where the step runs in a worker (--device cuda)")
    if fault.kind == "hang":
        while True:
            time.sleep(3600)
    if fault.kind == "killed":
        os.kill(os.getpid(), signal.SIGKILL)  # as another process's kill would: the pool did not send it
        time.sleep(5)
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(5)  # the signal is delivered at once; this is only a fallback if it was caught
    os._exit(128 + signal.SIGSEGV)


def _text(value: object) -> str:
    """A knob value as a rule writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
