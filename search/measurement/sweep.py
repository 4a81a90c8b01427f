"""Recorded sweeps: many configs of a few workloads measured once, kept to study search offline.

A sweep keeps every outcome in a JSON-lines file:

    {"format": "tiletune-sweep", "version": 1, "device": "sim-h100", "capability": "sm90",
     "measurer": "sim-h100", "triton": "3.4.0", ...}                              <- header
    {"spec": {"op": "matmul", "dtype": "float16", "dims": {"M": 512, "N": 512, "K": 512}},
     "config": {"BLOCK_K": 32, ...}, "status": "ok", "reason": "", "latency_us": 12.5,
     "facts": {"usage": {...}, "tile": {...}, "dot_dtype": "float16"}}           <- one per config

`Sweep.load` reads a file as JSON only and checks the header and every line; nothing in it is
ever executed (a config value that looks like code stays a string). `Sweep.space(spec)` is the
task's space restricted to the recorded configs (`RecordedSpace`), so a strategy searches
exactly what was measured. `measurement.sweep_recording` records a sweep, `measurement.replay`
answers latencies from one, and `search.replay_search` runs a strategy against one.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Callable, Iterable, Mapping

from tiletune.errors import ScheduleError, UsageError
from tiletune.kernels.task import TaskSpec
from tiletune.schedules.config import Config
from tiletune.schedules.space import ConfigSpace, Constraint
from tiletune.tuning_db import Device, Status

SWEEP_FORMAT = "tiletune-sweep"
#: Version of the sweep file format; bump it when the meaning of a line changes.
SWEEP_VERSION = 1

_HEADER_FIELDS = ("device", "measurer", "triton")


@dataclass(frozen=True, slots=True)
class SweepEntry:
    """One recorded outcome: a config of a workload, its status and (when ok) its latency."""

    spec: TaskSpec
    config: Config
    status: Status
    reason: str = ""
    latency_us: float | None = None
    facts: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))

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
    try:
        status = Status(data.get("status"))
    except ValueError:
        raise UsageError(f"{where}: status must be one of {[s.value for s in Status]}, "
                         f"got {data.get('status')!r}") from None
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


__all__ = ["SWEEP_FORMAT", "SWEEP_VERSION", "RecordedSpace", "Sweep", "SweepEntry", "spec_to_dict"]
