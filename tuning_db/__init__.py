"""The tuning DB: every measurement tiletune makes, in one SQLite file.

A workload (operator hash, dims, dtypes) and a device (name, compute capability, Triton
version) key each record; a record keeps the config as JSON data, its status, timing
statistics, the measurer, static compile facts, versions and time. Reading never executes
code from the file. Imports neither torch nor Triton.

    with TuningDB(default_db_path()) as db:
        db.add_workload(w); db.add_device(d); db.add_records(batch)
        db.best(w.key, d.key)

Modules: `keys` (stable keys and the strict JSON reader), `records` (the stored values and
their rows), `schema` (the tables and their versions), `db` (the file, its transactions and
queries), `claims` (how concurrent tuners split a workload, and the retries a resumed run owes),
`exchange` (export, import, merge).
"""
from __future__ import annotations

from tiletune.tuning_db.claims import Claimant, Retry
from tiletune.tuning_db.db import BUSY_TIMEOUT_S, TuningDB, default_db_path
from tiletune.tuning_db.keys import (
    ConfigValue,
    config_key,
    config_problem,
    device_key,
    workload_key,
)
from tiletune.tuning_db.records import Device, Record, Status, Trial, Workload
from tiletune.tuning_db.schema import SCHEMA_VERSION

__all__ = [
    "BUSY_TIMEOUT_S",
    "SCHEMA_VERSION",
    "Claimant",
    "ConfigValue",
    "Device",
    "Record",
    "Retry",
    "Status",
    "Trial",
    "TuningDB",
    "Workload",
    "config_key",
    "config_problem",
    "default_db_path",
    "device_key",
    "workload_key",
]
