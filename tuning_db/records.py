"""What the tuning DB stores: workloads, devices, records and their status, as values.

`Workload`, `Device` and `Record` are frozen dataclasses; `Status` says what became of a
measured candidate. This module owns their validation (`key_problem`, `record_problem`) and
their conversion to the rows of the DB's tables and back (`*_row`, `*_from_row`). Reading a
row parses stored JSON with `loads_data` only and checks every field as a write would, so a
damaged or hostile row raises ValueError naming what is wrong; it never runs code. No SQL
here: `db.TuningDB` runs the queries.
"""
from __future__ import annotations

import contextlib
import enum
import json
import math
import socket
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tiletune.tuning_db.keys import (
    ConfigValue,
    config_key,
    config_problem,
    device_key,
    loads_data,
    workload_key,
)

__all__ = [
    "Device",
    "Record",
    "Status",
    "Trial",
    "Workload",
    "device_from_row",
    "device_row",
    "key_problem",
    "record_from_row",
    "record_problem",
    "record_row",
    "this_host",
    "trial_from_row",
    "workload_from_row",
    "workload_row",
]


class Status(str, enum.Enum):
    """What became of one candidate config; the value is what the DB and exports store.

    - `OK`: it compiled, gave the reference evaluator's answer and was timed; only ok records
      have a meaningful latency.
    - `COMPILE_ERROR`: lowering or the Triton compile failed, or the compiled kernel does not fit
      the device (registers, shared memory).
    - `RUNTIME_ERROR`: it compiled but crashed, ran out of memory or took its worker down while
      being verified or timed.
    - `TIMEOUT`: compiling, verifying or timing it exceeded its time limit.
    - `WRONG_RESULT`: it ran, but its output differs from the reference evaluator's.
    - `ILLEGAL`: it was refused before any compile (for a replay: a config the recorded sweep
      has no measurement of).
    """

    OK = "ok"
    COMPILE_ERROR = "compile_error"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    WRONG_RESULT = "wrong_result"
    ILLEGAL = "illegal"

    # The plain value, as in the DB: f"{status}" and str(status) say "ok" on every Python
    # (3.11 changed what str() and format() of a mixed-in enum give).
    def __str__(self) -> str:
        return self.value

    # Pasteable, so a Record's repr stays code.
    def __repr__(self) -> str:
        return f"Status.{self.name}"

    @classmethod
    def parse(cls, value: object) -> Status:
        """The status spelled `value` (a member or its string); ValueError naming every status otherwise."""
        try:
            return cls(value)
        except (ValueError, TypeError):
            raise ValueError(f"status {value!r} is not one of {', '.join(s.value for s in cls)}") from None


@dataclass(frozen=True, slots=True)
class Workload:
    """An operator at given shapes and dtypes; `key` is `workload_key(op_hash, dims, dtypes)`."""

    key: str
    op_name: str
    op_hash: str
    dims: dict[str, int]
    dtypes: tuple[str, ...]

    # dims is a dict, so the generated field-wise hash would fail; the key already identifies
    # the workload, and equal workloads have equal keys.
    def __hash__(self) -> int:
        return hash(self.key)

    @classmethod
    def make(cls, op_name: str, op_hash: str, dims: Mapping[str, int], dtypes: Sequence[str]) -> Workload:
        """Build a workload, computing its key."""
        return cls(workload_key(op_hash, dims, dtypes), op_name, op_hash, dict(sorted(dims.items())), tuple(dtypes))

    @classmethod
    def of(cls, task: OperatorAtShape) -> Workload:
        """The workload of a tuning task (`tiletune.kernels.task.Task`, or anything that names
        its operator, graph hash, dims and input dtypes the same way)."""
        return cls.make(task.op_name, task.op_hash, task.dims, task.input_dtypes)


class OperatorAtShape(Protocol):
    """What identifies a workload: an operator's name and structural hash, its dims and the
    dtypes of its inputs (the DB never sees the operator itself)."""

    @property
    def op_name(self) -> str: ...

    @property
    def op_hash(self) -> str: ...

    @property
    def dims(self) -> Mapping[str, int]: ...

    @property
    def input_dtypes(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Device:
    """A device as tuning sees it; `key` is `device_key(name, capability, triton_version)`."""

    key: str
    name: str
    capability: str
    triton_version: str

    @classmethod
    def make(cls, name: str, capability: str, triton_version: str) -> Device:
        """Build a device, computing its key."""
        return cls(device_key(name, capability, triton_version), name, capability, triton_version)


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One measurement of one config on one workload and device, built by keyword.

    `status` is a `Status` (a known status's string is converted). `latency_us` is the median
    over `repeats`, `latency_spread` a relative spread such as (p80 - p20) / median; both are
    None for a failed candidate, whose `reason` says why. `facts` holds static compile facts
    (registers, spill bytes, shared memory, ...). `created` 0.0 means "stamp the time of writing".
    """

    workload_key: str
    device_key: str
    config: dict[str, ConfigValue]
    status: Status
    reason: str = ""
    latency_us: float | None = None
    latency_min_us: float | None = None
    latency_spread: float | None = None
    repeats: int = 0
    measurer: str = ""
    facts: dict[str, object] = field(default_factory=dict)
    triton_version: str = ""
    tiletune_version: str = ""
    created: float = 0.0
    host: str = ""

    def __post_init__(self) -> None:
        # A status that is none of Status is kept as given, so that writing the record is
        # refused saying why (record_problem), as for every other field.
        if isinstance(self.status, str) and not isinstance(self.status, Status):
            with contextlib.suppress(ValueError):
                object.__setattr__(self, "status", Status(self.status))

    # A record's identity in the DB; equal records share it, so hashing on it is consistent.
    def __hash__(self) -> int:
        return hash((self.workload_key, self.device_key, self.measurer, self.config_key, self.host))

    @property
    def config_key(self) -> str:
        """The canonical JSON of `config`."""
        return config_key(self.config)


def this_host() -> str:
    """The name records written here carry as their `host`."""
    return socket.gethostname() or "unknown"


def _is_real(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    # an int too large for a float (a hostile file's 10**400) is no measurement either
    return -1e300 < value < 1e300 if isinstance(value, int) else math.isfinite(value)


def key_problem(item: Workload | Device) -> str | None:
    """Why the key of a workload or device is not the key of its contents, or None."""
    if isinstance(item, Workload):
        kind, expected = "workload", workload_key(item.op_hash, item.dims, item.dtypes)
    else:
        kind, expected = "device", device_key(item.name, item.capability, item.triton_version)
    if item.key != expected:
        return f"{kind} key {item.key!r} does not match its contents (expected {expected!r})"
    return None


def record_problem(record: Record) -> str | None:
    """Why `record` cannot be written, or None."""
    if not isinstance(record, Record):
        return f"expected a Record, got {type(record).__name__}"
    try:
        Status.parse(record.status)
    except ValueError as exc:
        return str(exc)
    problem = config_problem(record.config)
    if problem is not None:
        return problem
    for name in ("latency_us", "latency_min_us", "latency_spread"):
        value = getattr(record, name)
        if value is not None and not _is_real(value):
            return f"{name}={value!r} is not a finite number or None"
        # No kernel runs in no time: a zero or negative latency would become every reader's best.
        if value is not None and (value < 0 if name == "latency_spread" else value <= 0):
            bound = "not negative" if name == "latency_spread" else "positive"
            return f"{name}={value!r} must be {bound}"
    # best() ranks ok records by latency: an ok record without one is a bug in its measurer.
    if record.status is Status.OK and record.latency_us is None:
        return "status 'ok' needs a latency_us"
    if isinstance(record.repeats, bool) or not isinstance(record.repeats, int) or not 0 <= record.repeats < 2**63:
        return f"repeats={str(record.repeats)[:40]} is not a non-negative 64-bit int"
    if not _is_real(record.created):
        return f"created={record.created!r} is not a finite number"
    for name in ("workload_key", "device_key", "reason", "measurer", "triton_version", "tiletune_version", "host"):
        if not isinstance(getattr(record, name), str):
            return f"{name}={getattr(record, name)!r} is not a string"
    if not isinstance(record.facts, dict):
        return f"facts must be a dict, got {type(record.facts).__name__}"
    try:
        json.dumps(record.facts, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"facts are not plain JSON data ({exc})"
    return None


def record_row(record: Record, now: float, host: str) -> dict[str, object]:
    """The `records` row of a valid record; `created` 0 is stamped `now`, `host` '' is `host`."""
    key = record.config_key
    return {
        "workload_key": record.workload_key,
        "device_key": record.device_key,
        # The canonical JSON is both the stored config and its key: one spelling per config.
        "config": key,
        "config_key": key,
        "status": record.status.value,
        "reason": record.reason,
        "latency_us": None if record.latency_us is None else float(record.latency_us),
        "latency_min_us": None if record.latency_min_us is None else float(record.latency_min_us),
        "latency_spread": None if record.latency_spread is None else float(record.latency_spread),
        "repeats": record.repeats,
        "measurer": record.measurer,
        "facts": json.dumps(record.facts, sort_keys=True, separators=(",", ":"), allow_nan=False),
        "triton_version": record.triton_version,
        "tiletune_version": record.tiletune_version,
        "created": float(record.created) if record.created else now,
        "host": record.host or host,
    }


def workload_row(workload: Workload) -> dict[str, object]:
    """The `workloads` row of a workload, without its `created` time."""
    return {
        "key": workload.key,
        "op_name": workload.op_name,
        "op_hash": workload.op_hash,
        "dims": json.dumps(dict(sorted(workload.dims.items())), separators=(",", ":")),
        "dtypes": json.dumps(list(workload.dtypes), separators=(",", ":")),
    }


def device_row(device: Device) -> dict[str, object]:
    """The `devices` row of a device."""
    return {"key": device.key, "name": device.name, "capability": device.capability,
            "triton_version": device.triton_version}


def _parse_json(text: object, what: str) -> object:
    """Stored JSON text as data; raises ValueError naming `what` when it is not."""
    if not isinstance(text, str):
        raise ValueError(f"{what} is a {type(text).__name__}, not JSON text")
    try:
        return loads_data(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{what} is not valid JSON data ({exc})") from None


def record_from_row(row: sqlite3.Row) -> Record:
    """A Record from a `records` row; raises ValueError saying what is wrong with the row.

    Every field is checked as a write would check it: a file made by another program (or by
    hand) may hold any type in any column, and readers must not second-guess a Record.
    """
    config = _parse_json(row["config"], "config")
    problem = config_problem(config)
    if problem is not None:
        raise ValueError(problem)
    assert isinstance(config, dict)
    if config_key(config) != row["config_key"]:
        raise ValueError("config_key column does not match its config")
    status = Status.parse(row["status"])
    facts = _parse_json(row["facts"], "facts")
    if not isinstance(facts, dict):
        raise ValueError(f"facts must be a JSON object, got {type(facts).__name__}")
    for name in ("latency_us", "latency_min_us", "latency_spread"):
        if row[name] is not None and not _is_real(row[name]):
            raise ValueError(f"{name}={row[name]!r} is not a finite number")
    record = Record(
        workload_key=row["workload_key"],
        device_key=row["device_key"],
        config=config,
        status=status,
        reason=row["reason"],
        latency_us=row["latency_us"],
        latency_min_us=row["latency_min_us"],
        latency_spread=row["latency_spread"],
        repeats=row["repeats"],
        measurer=row["measurer"],
        facts=facts,
        triton_version=row["triton_version"],
        tiletune_version=row["tiletune_version"],
        created=row["created"],
        host=row["host"] if "host" in row.keys() else "",  # version 1 files have no host column
    )
    problem = record_problem(record)
    if problem is not None:
        raise ValueError(problem)
    return record


@dataclass(frozen=True, slots=True)
class Trial:
    """One measurement as a report shows it: what `Record` says about the trial, without its
    facts and provenance (reading those for every trial of a big DB is what made reports slow)."""

    device_key: str
    config: dict[str, ConfigValue]
    status: Status
    reason: str
    latency_us: float | None


def trial_from_row(row: sqlite3.Row) -> Trial:
    """A Trial from the columns of a `records` row it needs; ValueError saying what is wrong
    (the checks `record_from_row` makes of those columns)."""
    config = _parse_json(row["config"], "config")
    problem = config_problem(config)
    if problem is not None:
        raise ValueError(problem)
    if config_key(config) != row["config_key"]:
        raise ValueError("config_key column does not match its config")
    status = Status.parse(row["status"])
    latency = row["latency_us"]
    if latency is not None and not (_is_real(latency) and latency > 0):
        raise ValueError(f"latency_us={latency!r} is not a positive finite number")
    if status is Status.OK and latency is None:
        raise ValueError("status 'ok' needs a latency_us")
    if not isinstance(row["reason"], str) or not isinstance(row["device_key"], str):
        raise ValueError("reason and device_key must be text")
    return Trial(row["device_key"], config, status, row["reason"], latency)


def workload_from_row(row: sqlite3.Row) -> Workload:
    """A Workload from a `workloads` row; raises ValueError saying what is wrong with the row."""
    dims = _parse_json(row["dims"], "dims")
    if not isinstance(dims, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in dims.values()
    ):
        raise ValueError("dims must be a JSON object of integers")
    dtypes = _parse_json(row["dtypes"], "dtypes")
    if not isinstance(dtypes, list) or not all(isinstance(d, str) for d in dtypes):
        raise ValueError("dtypes must be a JSON list of strings")
    for name in ("key", "op_name", "op_hash"):
        if not isinstance(row[name], str) or not row[name]:
            raise ValueError(f"{name} must be a non-empty string, got {row[name]!r:.60}")
    return Workload(row["key"], row["op_name"], row["op_hash"], dims, tuple(dtypes))


def device_from_row(row: sqlite3.Row) -> Device:
    """A Device from a `devices` row, as stored (STRICT NOT NULL text columns)."""
    return Device(row["key"], row["name"], row["capability"], row["triton_version"])
