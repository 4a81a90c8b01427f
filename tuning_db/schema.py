"""The tuning DB's tables, created through sqlite-utils, and the check of a file's schema version.

Tables:

- `meta(key, value)`: `schema_version` and `created_by`.
- `workloads(key, op_name, op_hash, dims, dtypes, created)`: dims and dtypes as JSON text.
- `devices(key, name, capability, triton_version)`.
- `records(id, workload_key, device_key, config, config_key, status, reason, latency_us,
  latency_min_us, latency_spread, repeats, measurer, facts, triton_version, tiletune_version,
  created, host)`: one row per measured (workload, device, measurer, config, host); `status`
  holds the value of a `records.Status`.

- `claims(workload_key, device_key, measurer, config_key, owner, expires)`: a config a running
  tuner is measuring, so that a second tuner of the same workload measures another one; a claim
  whose `expires` time has passed belongs to a tuner that died and counts for nothing.
- `retries(workload_key, device_key, measurer, config_key, config, reason, attempts, created)`:
  configs whose measurement failed for a reason outside the config (its worker killed from
  outside, a worker that never started it); not records, so a resumed run measures them again.

Version 2 added `records.host` (the machine that measured; '' for records of version 1) and
put it in the identity index, so DBs of two machines merge without losing either's records.
Version 3 added `claims`, `retries` and the indexes that keep readers fast on big files
(`workloads_op_name`, `records_usable`, `records_counts`). A file of an older version is read
as it is and migrated in place when opened for writing.

The file browses with `sqlite-utils` or Datasette; JSON columns are plain text.
"""
from __future__ import annotations

import os

import sqlite_utils

from tiletune.errors import TuningDBError

__all__ = ["SCHEMA_VERSION", "create_schema", "migrate", "read_schema_version"]

SCHEMA_VERSION = 3
"""The version of the tables this tiletune writes; stored in `meta.schema_version`."""

READABLE_VERSIONS = (1, 2, 3)
"""Versions this tiletune reads; a file of an older one is migrated when opened for writing."""

_IDENTITY = ["workload_key", "device_key", "measurer", "config_key", "host"]

CREATED_BY = "tiletune"


def create_schema(db: sqlite_utils.Database) -> None:
    """Create the tables and indexes that are missing and stamp `meta`; safe to run twice."""
    # STRICT tables make SQLite refuse a value of the wrong type (text in a latency column),
    # so a bad writer fails loudly instead of leaving rows that readers must second-guess.
    db["meta"].create({"key": str, "value": str}, pk="key", not_null=["value"], if_not_exists=True, strict=True)
    db["meta"].insert_all(
        [{"key": "schema_version", "value": str(SCHEMA_VERSION)}, {"key": "created_by", "value": CREATED_BY}],
        pk="key",
        ignore=True,
    )
    db["workloads"].create(
        {"key": str, "op_name": str, "op_hash": str, "dims": str, "dtypes": str, "created": float},
        pk="key",
        not_null=["op_name", "op_hash", "dims", "dtypes", "created"],
        if_not_exists=True,
        strict=True,
    )
    db["devices"].create(
        {"key": str, "name": str, "capability": str, "triton_version": str},
        pk="key",
        not_null=["name", "capability", "triton_version"],
        if_not_exists=True,
        strict=True,
    )
    # `id` is INTEGER PRIMARY KEY (the rowid): records are never deleted, so ids only grow.
    db["records"].create(
        {
            "id": int,
            "workload_key": str,
            "device_key": str,
            "config": str,
            "config_key": str,
            "status": str,
            "reason": str,
            "latency_us": float,
            "latency_min_us": float,
            "latency_spread": float,
            "repeats": int,
            "measurer": str,
            "facts": str,
            "triton_version": str,
            "tiletune_version": str,
            "created": float,
            "host": str,
        },
        pk="id",
        foreign_keys=[("workload_key", "workloads", "key"), ("device_key", "devices", "key")],
        not_null=[
            "workload_key", "device_key", "config", "config_key", "status", "reason", "repeats",
            "measurer", "facts", "triton_version", "tiletune_version", "created", "host",
        ],
        defaults={"reason": "", "repeats": 0, "measurer": "", "facts": "{}", "triton_version": "",
                  "tiletune_version": "", "created": 0.0, "host": ""},
        if_not_exists=True,
        strict=True,
    )
    # One row per (workload, device, measurer, config, host): writes use INSERT OR IGNORE
    # against this index, so a resumed or retried run that re-writes a batch, or an import of
    # the same file twice, adds nothing and the first measurement stands. Two machines that
    # measured the same config on the same kind of device are two records: a merge keeps both.
    # Re-measuring on purpose is a new measurer label, not an overwrite.
    db["records"].create_index(_IDENTITY, index_name="records_identity", unique=True, if_not_exists=True)
    # Serves best(): the ok rows of one (workload, device), already ordered by latency.
    db["records"].create_index(
        ["workload_key", "device_key", "status", "latency_us"],
        index_name="records_best",
        if_not_exists=True,
    )
    # The ok rows of one workload on any device, fastest first (`usable`), without a sort.
    db["records"].create_index(["workload_key", "status", "latency_us"], index_name="records_usable",
                               if_not_exists=True)
    # `db stats` counts records by device and status from this index alone, never the rows.
    db["records"].create_index(["device_key", "status"], index_name="records_counts", if_not_exists=True)
    db["workloads"].create_index(["op_name"], index_name="workloads_op_name", if_not_exists=True)
    db["claims"].create(
        {"workload_key": str, "device_key": str, "measurer": str, "config_key": str, "owner": str, "expires": float},
        pk=("workload_key", "device_key", "measurer", "config_key"),
        not_null=["owner", "expires"],
        if_not_exists=True,
        strict=True,
    )
    db["retries"].create(
        {"workload_key": str, "device_key": str, "measurer": str, "config_key": str, "config": str, "reason": str,
         "attempts": int, "created": float},
        pk=("workload_key", "device_key", "measurer", "config_key"),
        not_null=["config", "reason", "attempts", "created"],
        if_not_exists=True,
        strict=True,
    )


def migrate(db: sqlite_utils.Database, version: int) -> None:
    """Bring the tables of a file of schema `version` to SCHEMA_VERSION; the caller holds a
    write transaction, so a migration is whole or not at all."""
    if version == 1:
        # SQLite adds a NOT NULL column to a STRICT table only with a default; version 1
        # records did not keep their host, so '' says "unknown".
        db.execute("alter table records add column host text not null default ''")
        db.execute("drop index records_identity")
        db["records"].create_index(_IDENTITY, index_name="records_identity", unique=True)
    # Version 2 -> 3 adds tables and indexes only: create_schema, run next, makes them.
    db.execute("update meta set value = ? where key = 'schema_version'", [str(SCHEMA_VERSION)])


def read_schema_version(db: sqlite_utils.Database, path: str | os.PathLike[str]) -> int | None:
    """The schema version stamped in `meta`, or None for a SQLite file with no tables yet.

    Raises TuningDBError for a SQLite file that is not a tiletune DB or has a version this
    tiletune does not read (READABLE_VERSIONS).
    """
    names = set(db.table_names())
    if not names:
        return None
    if "meta" not in names:
        raise TuningDBError(f"{path} is a SQLite database but not a tiletune DB (it has no meta table)")
    meta = {row["key"]: row["value"] for row in db.query("select key, value from meta")}
    if meta.get("created_by") != CREATED_BY or "schema_version" not in meta:
        raise TuningDBError(f"{path} is a SQLite database but not a tiletune DB (its meta table says {str(meta)[:200]})")
    version = meta["schema_version"]
    readable = {str(v): v for v in READABLE_VERSIONS}
    if version not in readable:
        raise TuningDBError(
            f"{path} is a tiletune DB of schema version {str(version)[:40]!r}; this tiletune reads versions"
            f" {', '.join(map(str, READABLE_VERSIONS))} (a newer tiletune may read it)"
        )
    return readable[version]
