"""Recording a sweep: compile and measure many configs of a few workloads once, and keep every
outcome in a sweep file (`measurement.sweep`).

`record_sweep` compiles each config in a compiling worker pool and measures it (the simulated
H100 by default) through the tuner's own pipeline (`measurement.pipeline.evaluate`); the file
is written atomically. Recording does not verify outputs in the interpreter: a sweep is for
comparing searches, and a sweep measured on a GPU is verified there (`time_step` checks before
it times).
"""
from __future__ import annotations

import datetime
import itertools
import json
import os
import time
from pathlib import Path
from random import Random
from typing import Callable, Sequence

from tiletune._version import __version__
from tiletune.errors import UsageError
from tiletune.kernels.task import TaskSpec
from tiletune.schedules.config import Config
from tiletune.search.execution.workers import COMPILE_ENV, WorkerPool, default_workers
from tiletune.search.measurement.measurers import Measurer, SimMeasurer
from tiletune.search.measurement.pipeline import evaluate
from tiletune.search.measurement.sweep import (
    SWEEP_FORMAT,
    SWEEP_VERSION,
    Sweep,
    SweepEntry,
)


def sweep_configs(spec: TaskSpec, sample: int | None, seed: int) -> list[Config]:
    """What a sweep of `spec` measures: every legal config, or the default plus a seeded random
    sample of `sample` others (the whole space where it is smaller).

    The sample is a seeded shuffle of the knobs' whole product, keyed by operator and dtype but
    not by shape, filtered to the configs legal at this shape: a uniform sample of each
    workload's space, and shapes of one operator share most of their configs, so the sweep
    compiles each shared kernel once (Triton's cache serves the other shapes).
    """
    space = spec.build().space
    default = space.default()
    if sample is None:
        return [default] + [c for c in space.enumerate() if c != default]
    product = [Config(tuple(zip(space.names, values)))
               for values in itertools.product(*(knob.choices() for knob in space.knobs))]
    # A string seed is hashed deterministically (sha512): the same order in every process.
    Random(f"{seed}:{spec.op}:{spec.dtype}").shuffle(product)
    picked = [default]
    for config in product:
        if len(picked) > sample:
            break
        if config != default and space.is_legal(config):
            picked.append(config)
    return picked


def record_sweep(
    specs: Sequence[TaskSpec],
    path: str | os.PathLike[str],
    *,
    sample: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    measurer: Measurer | None = None,
    compile_timeout: float = 180.0,
    chunk: int = 64,
    on_progress: Callable[[TaskSpec, int, int], None] | None = None,
    resume: bool = False,
    time_limit: float | None = None,
) -> Sweep:
    """Compile and measure the configs of each spec (`sweep_configs`), write them to `path`
    atomically and return the sweep. Compiles run in a pool of `workers` compiling processes;
    the measurer defaults to the simulated H100. `on_progress(spec, done, total)` follows along.

    With `resume`, the entries of an existing file at `path` (recorded by the same measurer
    and device) are kept and not measured again, and the file is saved after every chunk; with
    `time_limit` (seconds) recording stops after the chunk that passes it. Together they record
    a sweep too long for one sitting (a GPU lent 10 minutes at a time) in several runs.
    """
    import triton

    started = time.monotonic()
    measurer = measurer or SimMeasurer()
    workers = workers or default_workers()
    header = {
        "format": SWEEP_FORMAT, "version": SWEEP_VERSION, "device": measurer.device.name,
        "capability": measurer.device.capability, "measurer": measurer.kind, "triton": triton.__version__,
        "tiletune": __version__, "sample": sample, "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    entries: list[SweepEntry] = []
    if resume and Path(path).exists():
        earlier = Sweep.load(path)
        if (earlier.measurer, earlier.header["device"]) != (measurer.kind, measurer.device.name):
            raise UsageError(f"cannot resume {path}: it was measured by {earlier.measurer} on "
                             f"{earlier.header['device']}, this run measures with {measurer.kind} on "
                             f"{measurer.device.name}")
        header = earlier.header
        entries = [e for s in earlier.specs() for e in earlier.entries(s).values()]
    done = {(e.spec, e.config) for e in entries}
    pool = WorkerPool(workers, env=COMPILE_ENV, name="sweep-compile")
    try:
        for spec in specs:
            configs = sweep_configs(spec, sample, seed)
            space = spec.build().space  # entries recorded before a knob existed leave it out
            recorded = {space.expand(c) for s, c in done if s == spec}
            todo = [c for c in configs if space.expand(c) not in recorded]
            for start in range(0, len(todo), chunk):
                if time_limit is not None and time.monotonic() - started >= time_limit:
                    break
                batch = todo[start:start + chunk]
                entries += _measure_batch(spec, batch, pool, measurer, compile_timeout)
                if resume:
                    Sweep(header, entries).save(path)
                if on_progress:
                    on_progress(spec, len(configs) - len(todo) + start + len(batch), len(configs))
    finally:
        pool.close()
    sweep = Sweep(header, entries)
    sweep.save(path)
    return sweep


def _measure_batch(spec: TaskSpec, batch: list[Config], pool: WorkerPool, measurer: Measurer,
                   timeout: float) -> list[SweepEntry]:
    outcomes = evaluate(spec, batch, measurer, pool, None, compile_timeout=timeout)
    return [SweepEntry(spec, o.config, o.status, o.reason[:2000], o.latency_us if o.ok else None, _plain(o.facts))
            for o in outcomes]


def _plain(facts: dict) -> dict:
    """Facts as JSON data (numpy scalars and tuples become numbers and lists)."""
    return json.loads(json.dumps(facts, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
