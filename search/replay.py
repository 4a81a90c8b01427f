"""Recorded sweeps and the `replay` measurer: study search offline, from measurements made once.

A sweep measures many configs of a few workloads once (on the simulated device or a real GPU)
and keeps every outcome in a JSON-lines file:

    {"format": "tiletune-sweep", "version": 1, "device": "sim-h100", "capability": "sm90",
     "measurer": "sim-h100", "triton": "3.4.0", ...}                              <- header
    {"spec": {"op": "matmul", "dtype": "float16", "dims": {"M": 512, "N": 512, "K": 512}},
     "config": {"BLOCK_K": 32, ...}, "status": "ok", "reason": "", "latency_us": 12.5,
     "facts": {"usage": {...}, "tile": {...}, "dot_dtype": "float16"}}           <- one per config

- `record_sweep` compiles each config in a compiling worker pool (`compile_step`) and measures
  it (the simulated H100 by default); the file is written atomically.
- `Sweep.load` reads a file as JSON only and checks the header and every line; nothing in it
  is ever executed (a config value that looks like code stays a string).
- `ReplayMeasurer` answers latencies from the sweep, and `Sweep.space(spec)` is the task's
  space restricted to the recorded configs, so a strategy searches exactly what was measured.
- `replay_search` runs one strategy on one workload of a sweep until it finds a config within
  a target latency: no compiles, no DB, milliseconds per batch.

Recording does not verify outputs in the interpreter: a sweep is for comparing searches, and
a sweep measured on a GPU is verified there (`time_step` checks before it times).
"""
from __future__ import annotations

import datetime
import itertools
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from tiletune._version import __version__
from tiletune.errors import ScheduleError, UsageError
from tiletune.schedules.config import Config
from tiletune.schedules.space import ConfigSpace, Constraint
from tiletune.search.features import featurize
from tiletune.search.measure import Measurer, Outcome, compile_batch
from tiletune.search.task import TaskSpec
from tiletune.tuning_db import STATUSES, Device

SWEEP_FORMAT = "tiletune-sweep"
#: Version of the sweep file format; bump it when the meaning of a line changes.
SWEEP_VERSION = 1

_HEADER_FIELDS = ("device", "measurer", "triton")


@dataclass(frozen=True, slots=True)
class SweepEntry:
    """One recorded outcome: a config of a workload, its status and (when ok) its latency."""

    spec: TaskSpec
    config: Config
    status: str
    reason: str = ""
    latency_us: float | None = None
    facts: dict = field(default_factory=dict)

    def to_json(self) -> str:
        """One line of a sweep file."""
        return json.dumps({
            "spec": spec_to_dict(self.spec), "config": self.config.as_dict(), "status": self.status,
            "reason": self.reason, "latency_us": self.latency_us, "facts": self.facts,
        }, separators=(",", ":"))


def spec_to_dict(spec: TaskSpec) -> dict:
    """A spec as plain JSON data (dims kept in declaration order)."""
    return {"op": spec.op, "dtype": spec.dtype, "dims": dict(spec.dims)}


class Sweep:
    """The outcomes of a sweep, by workload and config, with the header that says where they
    were measured."""

    def __init__(self, header: Mapping[str, object], entries: Iterable[SweepEntry]) -> None:
        self.header = dict(header)
        self._entries: dict[TaskSpec, dict[Config, SweepEntry]] = {}
        for entry in entries:
            by_config = self._entries.setdefault(entry.spec, {})
            if entry.config in by_config:
                raise UsageError(f"sweep records {entry.config!r} of {entry.spec} twice")
            by_config[entry.config] = entry
        # Restricted spaces by spec: building one enumerates nothing, but a strategy's pools
        # and caches key on the space object, so each spec gets one.
        self._spaces: dict[TaskSpec, ConfigSpace] = {}

    # -- reading -----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Sweep:
        """Read and check a sweep file; UsageError naming the line and what was wrong.

        Only JSON is parsed: no line is evaluated, imported or unpickled.
        """
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"no sweep file at {path}; record one with bench/search_efficiency.py --record")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"cannot read sweep file {path}: {error}") from None
        if not lines or not lines[0].strip():
            raise UsageError(f"{path} is empty; expected a {SWEEP_FORMAT!r} header on its first line")
        header = _parse_line(path, 1, lines[0])
        _check_header(path, header)
        entries = []
        for number, text in enumerate(lines[1:], start=2):
            if text.strip():
                entries.append(_parse_entry(path, number, _parse_line(path, number, text)))
        try:
            return cls(header, entries)
        except UsageError as error:
            raise UsageError(f"{path}: {error}") from None

    @property
    def measurer(self) -> str:
        """The measurer that made the sweep ("sim-h100", "cuda")."""
        return str(self.header["measurer"])

    @property
    def device(self) -> Device:
        """The device the sweep was measured on."""
        return Device.make(str(self.header["device"]), str(self.header.get("capability", "unknown")),
                           str(self.header["triton"]))

    def specs(self) -> list[TaskSpec]:
        """The workloads of the sweep, in the order they were recorded."""
        return list(self._entries)

    def entries(self, spec: TaskSpec) -> dict[Config, SweepEntry]:
        """Every recorded outcome of `spec` by config (empty if the sweep does not hold it)."""
        return dict(self._entries.get(spec, {}))

    def lookup(self, spec: TaskSpec, config: Config) -> SweepEntry | None:
        """The recorded outcome of `config` on `spec`, or None."""
        if spec not in self._entries:
            return None
        # space() keys the entries in full (knobs added since they were recorded), so a config
        # finds its entry whichever form either was recorded or asked in
        full = self.space(spec).expand(config)  # first: it re-keys the entries
        return self._entries[spec].get(full)

    def best(self, spec: TaskSpec) -> SweepEntry | None:
        """The fastest ok entry of `spec` (None if it has none)."""
        ok = [e for e in self._entries.get(spec, {}).values() if e.status == "ok"]
        return min(ok, key=lambda e: e.latency_us) if ok else None

    def space(self, spec: TaskSpec) -> ConfigSpace:
        """`spec`'s config space restricted to the configs the sweep recorded (any status).

        Builds the task, which for an operator declared in a file (`path.py:function`) imports
        that file: pass specs you trust, not ones read from someone else's sweep.
        """
        if spec not in self._spaces:
            if spec not in self._entries:
                raise UsageError(f"the sweep holds no workload {spec}; it holds {', '.join(map(str, self._entries))}")
            space = spec.build().space
            # a config recorded before a knob existed leaves it out (implied): key it in full
            self._entries[spec] = {space.expand(c): e for c, e in self._entries[spec].items()}
            recorded = frozenset(self._entries[spec])
            count = len(recorded)
            in_sweep = Constraint(
                "recorded in the sweep",
                lambda c: None if c in recorded else f"not one of the {count} configs the sweep measured",
            )
            restricted = space.with_constraint(in_sweep)
            legal = [c for c in self._entries[spec] if restricted.is_legal(c)]
            self._spaces[spec] = RecordedSpace(restricted.knobs, restricted.constraints, _order(space, legal),
                                               restricted.implied)
        return self._spaces[spec]

    def tile_facts(self, spec: TaskSpec) -> Callable[[Config], dict]:
        """A `tile_facts` function for strategies: the recorded tile facts of a config, or the
        task's (computed) where the sweep has none (a config that failed to compile)."""
        def facts(config: Config) -> dict:
            entry = self.lookup(spec, config)
            tile = entry.facts.get("tile") if entry is not None else None
            return dict(tile) if isinstance(tile, dict) else spec.build().facts(config).to_dict()

        return facts

    # -- writing -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the sweep atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(self.header, separators=(",", ":")) + "\n")
                for by_config in self._entries.values():
                    for entry in by_config.values():
                        out.write(entry.to_json() + "\n")
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a sweep is data to share
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _order(space: ConfigSpace, configs: list[Config]) -> tuple[Config, ...]:
    """`configs` in the space's enumeration order (the product of the choices, last knob fastest)."""
    index = [{value: i for i, value in enumerate(knob.choices())} for knob in space.knobs]
    return tuple(sorted(configs, key=lambda c: tuple(ix[c[k.name]] for ix, k in zip(index, space.knobs))))


class RecordedSpace(ConfigSpace):
    """A config space restricted by the "recorded in the sweep" constraint, that answers from
    the list of recorded legal configs instead of walking the product of the knobs' choices.

    The answers are those of the plain `ConfigSpace` with the same knobs and constraints (the
    same legal configs, in the same enumeration order, uniformly sampled); only faster, which
    matters when a sweep holds 120 of 4,500 knob combinations and a strategy samples a pool
    of 512 from it every batch.
    """

    __slots__ = ("recorded", "_legal")

    def __init__(self, knobs, constraints, recorded: tuple[Config, ...], implied=()) -> None:
        super().__init__(knobs, constraints, implied)
        object.__setattr__(self, "recorded", tuple(recorded))
        object.__setattr__(self, "_legal", frozenset(recorded))

    def validate(self, config: Config) -> list[str]:
        """Every reason `config` is illegal (empty for a recorded legal config)."""
        if isinstance(config, Config) and config in self._legal:
            return []
        return super().validate(config)

    def enumerate(self):
        """The recorded legal configs in enumeration order."""
        return iter(self.recorded)

    def sample(self, rng: Random, n: int, exclude: Iterable[Config] = ()) -> list[Config]:
        """Up to `n` distinct recorded legal configs not in `exclude`, uniformly at random."""
        if n < 0:
            raise ScheduleError(f"sample: n must be >= 0, got {n}")
        excluded = exclude if isinstance(exclude, (set, frozenset)) else set(exclude)
        left = [c for c in self.recorded if c not in excluded]
        return rng.sample(left, min(n, len(left)))


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _parse_line(path: Path, number: int, text: str) -> dict:
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise UsageError(f"{path}:{number}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}:{number}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_header(path: Path, header: dict) -> None:
    if header.get("format") != SWEEP_FORMAT:
        raise UsageError(f"{path} is not a tiletune sweep: its first line has format "
                         f"{header.get('format')!r}, expected {SWEEP_FORMAT!r}")
    version = header.get("version")
    if version != SWEEP_VERSION or isinstance(version, bool):
        raise UsageError(f"{path} is a sweep of format version {version!r}; this tiletune reads "
                         f"version {SWEEP_VERSION}: record it again")
    for name in _HEADER_FIELDS:
        if not isinstance(header.get(name), str) or not header[name]:
            raise UsageError(f"{path}:1: the header needs {name!r} as a non-empty string, "
                             f"got {header.get(name)!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_entry(path: Path, number: int, data: dict) -> SweepEntry:
    where = f"{path}:{number}"
    spec = data.get("spec")
    if not isinstance(spec, dict):
        raise UsageError(f"{where}: 'spec' must be an object {{op, dtype, dims}}, got {spec!r}")
    op, dtype, dims = spec.get("op"), spec.get("dtype"), spec.get("dims")
    if not isinstance(op, str) or not op:
        raise UsageError(f"{where}: spec 'op' must be an operator name, got {op!r}")
    if dtype is not None and not isinstance(dtype, str):
        raise UsageError(f"{where}: spec 'dtype' must be a string or null, got {dtype!r}")
    if not isinstance(dims, dict) or not all(isinstance(k, str) and _is_int(v) and v > 0 for k, v in dims.items()):
        raise UsageError(f"{where}: spec 'dims' must map dim names to positive integers, got {dims!r}")
    config = data.get("config")
    if not isinstance(config, dict):
        raise UsageError(f"{where}: 'config' must be an object of knob values, got {config!r}")
    try:
        config = Config.from_json(json.dumps(config))
    except ScheduleError as error:
        raise UsageError(f"{where}: {error}") from None
    status = data.get("status")
    if status not in STATUSES:
        raise UsageError(f"{where}: status must be one of {list(STATUSES)}, got {status!r}")
    latency = data.get("latency_us")
    if status == "ok":
        if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not math.isfinite(latency) or latency <= 0:
            raise UsageError(f"{where}: an ok entry needs a positive latency_us, got {latency!r}")
        latency = float(latency)
    elif latency is not None:
        raise UsageError(f"{where}: a {status} entry has no latency, got latency_us {latency!r}")
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        raise UsageError(f"{where}: 'reason' must be a string, got {reason!r}")
    facts = data.get("facts", {})
    if not isinstance(facts, dict):
        raise UsageError(f"{where}: 'facts' must be an object, got {facts!r}")
    for part in ("tile", "usage"):  # these become features: numbers only
        numbers = facts.get(part, {})
        if not isinstance(numbers, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers.values()):
            raise UsageError(f"{where}: facts {part!r} must map names to numbers, got {numbers!r}")
    return SweepEntry(TaskSpec(op, dtype, tuple(dims.items())), config, status, reason, latency, facts)


# ---------------------------------------------------------------------------------------------
# the replay measurer


class ReplayMeasurer:
    """A `Measurer` that answers from a recorded sweep; a config it did not record is
    "illegal" with a reason. Its kind is "replay:<the sweep's measurer>"."""

    def __init__(self, sweep: Sweep) -> None:
        self.sweep = sweep
        self.kind = f"replay:{sweep.measurer}"
        self.device = sweep.device

    def measure(self, spec: TaskSpec, candidates: Sequence[tuple[Config, dict]]) -> list[Outcome]:
        """The recorded outcome of each candidate (the facts passed in are not needed)."""
        outcomes = []
        for config, _facts in candidates:
            entry = self.sweep.lookup(spec, config)
            if entry is None:
                known = len(self.sweep.entries(spec))
                where = f"among the {known} configs recorded for {spec}" if known else f"(the sweep has no workload {spec})"
                outcomes.append(Outcome(config, "illegal", f"not in the replayed sweep: {config!r} is not {where}"))
                continue
            ok = entry.status == "ok"
            outcomes.append(Outcome(
                config, entry.status, entry.reason, latency_us=entry.latency_us,
                latency_min_us=entry.latency_us, latency_spread=0.0 if ok else None,
                repeats=1 if ok else 0, facts=dict(entry.facts),
            ))
        return outcomes


# ---------------------------------------------------------------------------------------------
# recording


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
    import time

    import triton

    from tiletune.search.measure import SimMeasurer
    from tiletune.search.tuner import COMPILE_ENV
    from tiletune.search.workers import WorkerPool

    started = time.monotonic()
    measurer = measurer or SimMeasurer("sim-h100")
    workers = workers or max(1, min(4, os.cpu_count() or 1))
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


def _measure_batch(spec: TaskSpec, batch: list[Config], pool, measurer: Measurer, timeout: float) -> list[SweepEntry]:
    failed, compiled = compile_batch(spec, batch, pool, timeout)
    outcomes = {**failed, **{o.config: o for o in measurer.measure(spec, compiled)}}
    return [
        SweepEntry(spec, c, o.status, o.reason[:2000], o.latency_us if o.status == "ok" else None, _plain(o.facts))
        for c, o in ((c, outcomes[c]) for c in batch)
    ]


def _plain(facts: dict) -> dict:
    """Facts as JSON data (numpy scalars and tuples become numbers and lists)."""
    return json.loads(json.dumps(facts, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


# ---------------------------------------------------------------------------------------------
# searching a sweep


@dataclass(frozen=True, slots=True)
class ReplayRun:
    """How one search of a sweep went: `trials` configs measured until the first one within
    the target (or until the space ran out, `found` False), and the best latency seen."""

    trials: int
    found: bool
    best_us: float | None


def replay_search(strategy, sweep: Sweep, spec: TaskSpec, target_us: float, *, batch: int = 8,
                  limit: int | None = None) -> ReplayRun:
    """Run `strategy` on `spec`'s recorded space, answering latencies from the sweep, until a
    config with latency <= `target_us` is measured; `trials` counts configs in the order
    proposed. Stops when the strategy proposes nothing new, or after `limit` trials.

    History rows carry the features the tuner gives them (knobs and recorded tile facts).
    """
    from tiletune.search.strategies import History

    space = sweep.space(spec)
    tile_facts = sweep.tile_facts(spec)
    history = History()
    limit = limit if limit is not None else len(sweep.entries(spec))
    trials, best = 0, None
    while trials < limit:
        proposed = [c for c in strategy.propose(space, history, batch) if c not in history.tried]
        if not proposed:
            break
        for config in dict.fromkeys(proposed):
            entry = sweep.lookup(spec, config)
            trials += 1
            if entry is None or entry.status != "ok":
                history.add(config, None, None)
                continue
            history.add(config, entry.latency_us, featurize(config.as_dict(), tile_facts(config), {}))
            best = entry.latency_us if best is None else min(best, entry.latency_us)
            if entry.latency_us <= target_us:
                return ReplayRun(trials, True, best)
            if trials >= limit:
                break
    return ReplayRun(trials, False, best)


def ok_rows(sweep: Sweep, spec: TaskSpec) -> tuple[list[Config], np.ndarray, np.ndarray]:
    """The ok configs of `spec`, their search features (knobs and tile facts, as the tuner
    computes them) and their latencies."""
    tile_facts = sweep.tile_facts(spec)
    ok = [e for e in sweep.entries(spec).values() if e.status == "ok"]
    if not ok:
        return [], np.zeros((0, 0), dtype=np.float32), np.zeros(0)
    X = np.stack([featurize(e.config.as_dict(), tile_facts(e.config), {}) for e in ok])
    return [e.config for e in ok], X, np.array([e.latency_us for e in ok], dtype=np.float64)


__all__ = [
    "SWEEP_FORMAT", "SWEEP_VERSION", "RecordedSpace", "ReplayMeasurer", "ReplayRun", "Sweep", "SweepEntry",
    "ok_rows", "record_sweep", "replay_search", "spec_to_dict", "sweep_configs",
]
