"""Sharing tuning DBs: export records as JSON lines, import them, merge another DB, summarise.

An export file is self-contained: a header line, then one line per record carrying its
workload and device inline, so it can be read without the DB it came from:

    {"format": "tiletune-records", "version": 1, "exported_by": "tiletune 0.1.0", "host": "box-a", ...}
    {"workload": {"op_name": "matmul", "op_hash": "...", "dims": {"M": 512, ...}, "dtypes": [...]},
     "device": {"name": "NVIDIA H100 80GB HBM3", "capability": "sm90", "triton_version": "3.4.0"},
     "record": {"config": {...}, "status": "ok", "latency_us": 12.5, ..., "host": "box-a", "created": ...}}

Keys are never read from a file: they are recomputed from the workload and device, so a line
cannot file a record under another workload. Import and merge check every record (its
schema here, its operator and config through the `validator` the caller injects: this layer
cannot build config spaces) before writing any, then write all in one transaction: a file
with one bad record changes nothing. Records keep their host and time, and the DB's identity
index makes a second import of the same records add nothing.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tiletune._version import __version__
from tiletune.errors import TuningDBError
from tiletune.tuning_db.db import TuningDB
from tiletune.tuning_db.keys import loads_data
from tiletune.tuning_db.records import Device, Record, Workload, record_problem, this_host

__all__ = ["FORMAT", "VERSION", "Validator", "check", "export_records", "import_records", "merge_db", "read_db",
           "read_records"]

FORMAT = "tiletune-records"
VERSION = 1
"""Version of the export format; bump it when the meaning of a line changes."""

Validator = Callable[[Workload, Record], "str | None"]
"""Why a record of a workload may not enter the DB (unknown operator, config outside its
space), or None."""

_RECORD_FIELDS = {
    "config": dict, "status": str, "reason": str, "latency_us": (float, int, type(None)),
    "latency_min_us": (float, int, type(None)), "latency_spread": (float, int, type(None)), "repeats": int,
    "measurer": str, "facts": dict, "triton_version": str, "tiletune_version": str, "created": (float, int),
    "host": str,
}
_MAX_LINE = 1 << 20  # a record is a few hundred bytes; a megabyte-long line is not one


@dataclass(frozen=True, slots=True)
class Exchanged:
    """What an import or merge did: records read, and how many of them were new here."""

    read: int
    added: int

    @property
    def present(self) -> int:
        return self.read - self.added


def _line(workload: Workload, device: Device, record: Record) -> str:
    return json.dumps({
        "workload": {"op_name": workload.op_name, "op_hash": workload.op_hash, "dims": workload.dims,
                     "dtypes": list(workload.dtypes)},
        "device": {"name": device.name, "capability": device.capability, "triton_version": device.triton_version},
        "record": {name: getattr(record, name) for name in _RECORD_FIELDS},
    }, sort_keys=True, separators=(",", ":"), allow_nan=False)


def export_records(db: TuningDB, out: str | os.PathLike[str], *, ops: Sequence[str] = (),
                   devices: Sequence[str] = ()) -> tuple[int, int]:
    """Write the readable records of `db` (of operators named in `ops` and devices whose name
    or key is in `devices`, when given) to `out`, atomically; return (records, workloads)."""
    by_key = {d.key: d for d in db.devices()}
    header = {"format": FORMAT, "version": VERSION, "exported_by": f"tiletune {__version__}",
              "host": this_host(), "created": time.time()}
    lines, workloads = [json.dumps(header, sort_keys=True)], 0
    for workload in db.workloads():
        if ops and workload.op_name not in ops:
            continue
        chosen = [r for r in db.records(workload.key) if r.device_key in by_key
                  and (not devices or r.device_key in devices or by_key[r.device_key].name in devices)]
        workloads += bool(chosen)
        lines += [_line(workload, by_key[r.device_key], r) for r in chosen]
    out = Path(out)
    if not out.absolute().parent.is_dir():
        raise TuningDBError(f"cannot export to {out}: the directory {out.absolute().parent} does not exist")
    # Write a temporary file next to the target, then rename: a reader never sees half a file.
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.absolute().parent)
    except OSError as exc:
        raise TuningDBError(f"cannot export to {out}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(lines) - 1, workloads


def _typed(obj: object, fields: dict, what: str) -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must be a JSON object")
    if set(obj) != set(fields):
        missing, extra = sorted(set(fields) - set(obj)), sorted(set(obj) - set(fields))
        raise ValueError(f"{what} " + "; ".join(filter(None, [missing and f"lacks {', '.join(missing)}",
                                                               extra and f"has unknown fields {', '.join(extra)}"])))
    for name, kind in fields.items():
        if isinstance(obj[name], bool) or not isinstance(obj[name], kind):  # no field is a flag
            raise ValueError(f"{what} field {name} is {str(obj[name])[:60]!r}, of the wrong type")
    return obj


def _parse_line(text: str) -> tuple[Workload, Device, Record]:
    """One record line as (workload, device, record); ValueError or TuningDBError says why not."""
    if len(text) > _MAX_LINE:
        raise ValueError(f"the line is {len(text)} characters long; a record is far shorter")
    try:
        data = loads_data(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not valid JSON data ({str(exc)[:120]})") from None
    line = _typed(data, {"workload": dict, "device": dict, "record": dict}, "the line")
    w = _typed(line["workload"], {"op_name": str, "op_hash": str, "dims": dict, "dtypes": list}, "workload")
    d = _typed(line["device"], {"name": str, "capability": str, "triton_version": str}, "device")
    r = _typed(line["record"], _RECORD_FIELDS, "record")
    if not w["op_name"]:
        raise ValueError("workload op_name is empty")
    workload = Workload.make(w["op_name"], w["op_hash"], w["dims"], w["dtypes"])
    if any(size < 1 or size >= 2**63 for size in workload.dims.values()):
        raise ValueError(f"workload dims {w['dims']} must be positive 64-bit integers")
    device = Device.make(d["name"], d["capability"], d["triton_version"])
    record = Record(workload_key=workload.key, device_key=device.key, **r)
    problem = record_problem(record)
    if problem is None and not record.created > 0:
        problem = f"created={record.created!r} is not a time"
    if problem is not None:
        raise ValueError(problem)
    return workload, device, record


def read_records(path: str | os.PathLike[str]) -> list[tuple[str, Workload, Device, Record]]:
    """Every record line of an export file with where it is (`path line N`); TuningDBError naming the
    first bad line (and how many others are bad) when any line is not a valid record."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TuningDBError(f"{path} cannot be read as a text file: {exc}") from None
    try:
        header = loads_data(lines[0]) if lines else None
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TuningDBError(f"{path} line 1: not a tiletune records file (expected a header with format {FORMAT!r})")
    version = header.get("version")
    if type(version) is not int or version != VERSION:  # true and 1.0 equal 1 but are no version
        raise TuningDBError(f"{path} line 1: records format version {json.dumps(version)[:20]!r};"
                            f" this tiletune reads version {VERSION}")
    parsed, bad = [], []
    for number, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        try:
            parsed.append((f"{path} line {number}", *_parse_line(text)))
        except (ValueError, TuningDBError) as exc:
            bad.append((f"{path} line {number}", str(exc)))
    _refuse(bad)
    return parsed


def _refuse(bad: list[tuple[str, str]]) -> None:
    """Raise for the first bad record (where and why), counting the others."""
    if bad:
        (where, reason), more = bad[0], len(bad) - 1
        others = f" ({more} other bad record{'s' if more > 1 else ''} too)" if more else ""
        raise TuningDBError(f"{where}: {reason}{others}; nothing was imported")


def check(items: Sequence[tuple[str, Workload, Device, Record]], validator: Validator,
          db: TuningDB | None = None) -> None:
    """Refuse (TuningDBError naming the first bad record) records that `validator` refuses, and
    any that would rename a workload: one stored in `db`, or named otherwise earlier in `items`.
    A workload's key does not cover its name, so a record naming a stored workload otherwise
    would relabel every record of it (`db export --op` would then miss them)."""
    names: dict[str, str] = {}
    bad = []
    for at, workload, _, record in items:
        if workload.key not in names:
            stored = db.workload(workload.key) if db is not None else None
            names[workload.key] = stored.op_name if stored is not None else workload.op_name
        if names[workload.key] != workload.op_name:
            bad.append((at, (f"workload {workload.key} is {names[workload.key]!r:.80} here, but this record names it"
                             f" {workload.op_name!r:.80}; an import never renames a workload")))
        elif problem := validator(workload, record):
            bad.append((at, problem))
    _refuse(bad)


def _write(db: TuningDB, items: Iterable[tuple[str, Workload, Device, Record]], validator: Validator) -> Exchanged:
    items = list(items)
    check(items, validator, db)
    workloads = {w.key: w for _, w, _, _ in items}
    devices = {d.key: d for _, _, d, _ in items}
    added = db.add_all(list(workloads.values()), list(devices.values()), [r for *_, r in items])
    return Exchanged(len(items), added)


def import_records(db: TuningDB, path: str | os.PathLike[str], validator: Validator) -> Exchanged:
    """Add every record of an export file to `db`, or none when any is bad (TuningDBError
    naming the line and the reason)."""
    return _write(db, read_records(path), validator)


def read_db(other: str | os.PathLike[str]) -> list[tuple[str, Workload, Device, Record]]:
    """Every readable record of the DB file `other` (only read) with where it is."""
    other = Path(other)
    items = []
    with TuningDB(other, readonly=True) as source:
        devices = {d.key: d for d in source.devices()}
        for workload in source.workloads():
            for record in source.records(workload.key):
                if record.device_key in devices:
                    where = f"{other}: record of {workload.op_name} with config {json.dumps(record.config)[:80]}"
                    items.append((where, workload, devices[record.device_key], record))
    return items


def merge_db(db: TuningDB, other: str | os.PathLike[str], validator: Validator) -> Exchanged:
    """Add every readable record of the DB file `other` to `db`, or none when any is refused
    by `validator` (TuningDBError naming the record and the reason). `other` is only read."""
    other = Path(other)
    if other.resolve() == db.path.resolve():
        raise TuningDBError(f"{other} is the DB being merged into; name another DB")
    return _write(db, read_db(other), validator)
