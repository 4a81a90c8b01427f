"""The tuning DB file: opening it, refusing what is not one, transactions and queries.

`TuningDB` owns the SQLite connection. Opening refuses a file that is not SQLite, is
truncated or corrupt, holds views or triggers, or is not a tiletune DB of a schema version
this tiletune reads (`schema`), and leaves a refused file untouched. Writes go through
sqlite-utils inside `BEGIN IMMEDIATE` transactions; reads turn rows into values through
`records` and skip (with one warning per DB object) any row that is not plain, valid data,
so a damaged or hostile file can cost records but never run code.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

import sqlite_utils

from tiletune.errors import TuningDBError
from tiletune.tuning_db.claims import Claimant, Retry, claim_is_live
from tiletune.tuning_db.keys import config_key, loads_data
from tiletune.tuning_db.records import (
    Device,
    Record,
    Status,
    Trial,
    Workload,
    device_from_row,
    device_row,
    key_problem,
    record_from_row,
    record_problem,
    record_row,
    this_host,
    trial_from_row,
    workload_from_row,
    workload_row,
)
from tiletune.tuning_db.schema import SCHEMA_VERSION, create_schema, migrate, read_schema_version

__all__ = ["BUSY_TIMEOUT_S", "TuningDB", "default_db_path"]

BUSY_TIMEOUT_S = 10.0
"""How long a reader or writer waits for another process's write lock before giving up."""

_SQLITE_MAGIC = b"SQLite format 3\x00"
_TABLES = ("meta", "workloads", "devices", "records")
# Rows of `claims` or `retries` named in a JSON list of [workload, device, measurer, config key]
# (json_extract rather than ->>, which SQLite before 3.38 lacks).
_IN_BATCH = ("(workload_key, device_key, measurer, config_key) in (select json_extract(value, '$[0]'),"
             " json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]')"
             " from json_each(?))")


def default_db_path() -> Path:
    """`$TILETUNE_DB` when set, else `tiletune.db` in the working directory."""
    env = os.environ.get("TILETUNE_DB")
    return Path(env).expanduser() if env else Path("tiletune.db")


def _check_file_header(path: Path) -> None:
    """Refuse, before SQLite sees it, a file that is not SQLite or is visibly truncated."""
    try:
        size = path.stat().st_size
        if size == 0:
            return  # SQLite treats an empty file as a new, empty database
        with path.open("rb") as f:
            header = f.read(100)
    except OSError as exc:
        raise TuningDBError(f"{path} cannot be read: {exc}") from None
    if not header.startswith(_SQLITE_MAGIC[: len(header)]) or len(header) < len(_SQLITE_MAGIC):
        raise TuningDBError(f"{path} is not a SQLite database (it does not start with the SQLite header)")
    if len(header) < 100:
        raise TuningDBError(f"{path} is not a SQLite database: it is truncated ({size} bytes, shorter than the header)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    page_count = int.from_bytes(header[28:32], "big")
    # The in-header page count is valid only when its version stamp matches (file format
    # docs, offset 92); and while a -wal file holds frames, a checkpoint may be growing the
    # file under us, so only a file at rest is measured.
    counted = header[24:28] == header[92:96] and page_count > 0
    try:
        wal_size = path.with_name(path.name + "-wal").stat().st_size
    except OSError:  # no -wal file, or the last connection just removed it
        wal_size = 0
    at_rest = wal_size == 0
    if counted and at_rest and size < page_count * page_size:
        raise TuningDBError(
            f"{path} is not a SQLite database: it is truncated ({size} bytes, its header says"
            f" {page_count} pages of {page_size} bytes)"
        )


class TuningDB:
    """A tuning DB file: `with TuningDB(path) as db: db.add_records(batch)`.

    Opening a new path creates the schema (unless `readonly`); opening a file that is not a
    tiletune DB of a schema version it reads raises TuningDBError (a version 1 file is migrated
    to version 2 when opened for writing, and read as it is read-only). Safe to share between processes:
    WAL mode lets readers run beside one writer, and a busy file is waited on up to
    BUSY_TIMEOUT_S seconds.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        # Unreadable rows are reported once per DB object; a damaged file would otherwise
        # repeat the same warning on every query of a tuning session.
        self._warned = False
        self._conn = self._connect()
        try:
            self._db = sqlite_utils.Database(self._conn, execute_plugins=False)
            with self._translated(opening=True):
                self._prepare()
        except BaseException:
            self._conn.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        exists = self.path.exists()
        if self.readonly and not exists:
            raise TuningDBError(f"{self.path} does not exist (opened read-only, so no DB is created)")
        if exists and not self.path.is_file():
            # A FIFO would block the header read forever; a device or directory is no DB either.
            raise TuningDBError(f"{self.path} is not a regular file (a FIFO, device or directory); a tuning DB is a file")
        if exists:
            _check_file_header(self.path)
        try:
            if self.readonly:
                uri = self.path.absolute().as_uri() + "?mode=ro"
                folder = self.path.absolute().parent
                wal = self.path.with_name(self.path.name + "-wal")
                if not os.access(folder, os.W_OK) and not (wal.exists() and wal.stat().st_size):
                    # A WAL reader must create the -shm file beside the DB, which a read-only
                    # folder forbids; with no -wal to replay, nobody can be writing there, so
                    # the file is read as immutable, with no locks and no -shm.
                    uri += "&immutable=1"
                return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
            return sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise TuningDBError(f"{self.path} cannot be opened as a SQLite database: {exc}") from None

    def _prepare(self) -> None:
        # SQLite leaves foreign keys off unless each connection asks; records must point at
        # known workloads and devices.
        self._conn.execute("PRAGMA foreign_keys = ON")
        # Views and triggers could make SQL stored in the file run on our reads and writes;
        # tiletune never creates them, so a file that has them is refused, and functions with
        # side effects stay out of reach of the schema whatever it holds.
        self._conn.execute("PRAGMA trusted_schema = OFF")
        stored_sql = self._query("select type, name from sqlite_master where type in ('view', 'trigger')")
        if stored_sql:
            named = ", ".join(f"{row['type']} {row['name']!r:.60}" for row in stored_sql[:3])
            raise TuningDBError(f"{self.path} holds SQL that would run on access ({named}); a tiletune DB has"
                                " no views or triggers, so the file is refused")
        # Checked before WAL mode is switched on, which writes to the file: a file that is
        # refused is left exactly as it was.
        version = read_schema_version(self._db, self.path)
        if not self.readonly:
            self._db.enable_wal()
        complete = set(_TABLES) <= set(self._db.table_names())
        if version is not None and complete and (self.readonly or version == SCHEMA_VERSION):
            return
        if self.readonly:
            raise TuningDBError(f"{self.path} is an empty SQLite database, not a tiletune DB (opened read-only)")
        with self._writing():
            # Another process may have created or migrated the schema while we waited for the lock.
            version = read_schema_version(self._db, self.path)
            if version is not None and version != SCHEMA_VERSION:
                migrate(self._db, version)
            create_schema(self._db)

    def __repr__(self) -> str:
        return f"TuningDB({str(self.path)!r}, readonly={self.readonly})"

    def __enter__(self) -> TuningDB:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file; calling it twice is harmless."""
        self._conn.close()

    @contextlib.contextmanager
    def _translated(self, *, opening: bool = False) -> Iterator[None]:
        """Turn sqlite3 errors into TuningDBError naming the file."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise TuningDBError(
                    f"{self.path} stayed locked by another process for over {BUSY_TIMEOUT_S:g} s ({exc})"
                ) from None
            raise TuningDBError(f"{self.path}: {exc}") from None
        except sqlite3.IntegrityError as exc:
            raise TuningDBError(f"{self.path}: a write broke a constraint ({exc})") from None
        except sqlite3.DatabaseError as exc:
            if opening:
                raise TuningDBError(f"{self.path} is not a SQLite database or is corrupt ({exc})") from None
            raise TuningDBError(f"{self.path} is corrupt ({exc})") from None
        except sqlite3.Error as exc:
            raise TuningDBError(f"{self.path}: {exc}") from None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction, taking the write lock up front.

        A deferred BEGIN that reads first cannot wait for the lock later: in WAL mode SQLite
        answers SQLITE_BUSY at once if another writer committed since the read. IMMEDIATE
        waits (busy timeout) instead, then everything inside commits or none of it does.
        """
        if self.readonly:
            raise TuningDBError(f"{self.path} was opened read-only; writes are refused")
        with self._translated():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._translated():
            cursor = self._conn.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return cursor.fetchall()

    def _warn_skipped(self, skipped: list[tuple[str, str]], stacklevel: int = 4) -> None:
        """Warn once per DB object about rows that were skipped as unreadable.

        `stacklevel` points the warning at the caller of the public method.
        """
        if not skipped or self._warned:
            return
        self._warned = True
        what, problem = skipped[0]
        more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        warnings.warn(
            f"{self.path}: skipped unreadable {what} ({problem}){more}; other rows are used,"
            " and later unreadable rows from this DB are skipped without a warning",
            stacklevel=stacklevel,
        )

    def _parsed(self, rows: Iterable[sqlite3.Row], parse, label, *, first: bool = False, stacklevel: int = 4) -> list:
        """Rows parsed by `parse` (only the first readable one when `first`, reading no further);
        unreadable ones skipped (and warned about once)."""
        items, skipped = [], []
        for row in rows:
            try:
                items.append(parse(row))
            except ValueError as exc:
                skipped.append((label(row), str(exc)))
                continue
            if first:
                break
        self._warn_skipped(skipped, stacklevel)
        return items

    def _records_from(self, rows: Iterable[sqlite3.Row], *, first: bool = False, stacklevel: int = 4) -> list[Record]:
        return self._parsed(rows, record_from_row, lambda row: f"record id {row['id']}", first=first,
                            stacklevel=stacklevel)

    # -- writes ---------------------------------------------------------------------------

    def add_workload(self, workload: Workload) -> None:
        """Store a workload; adding it again updates its name and keeps its creation time."""
        self.add_all([workload], [], [])

    def add_device(self, device: Device) -> None:
        """Store a device; adding it again changes nothing."""
        self.add_all([], [device], [])

    def add_all(self, workloads: Sequence[Workload], devices: Sequence[Device], records: Sequence[Record]) -> int:
        """Store workloads, devices and records in one transaction (all or nothing), keeping
        each record's `host` and `created` as given (records made elsewhere: an import or a
        merge); return how many records were new."""
        for item in [*workloads, *devices]:
            problem = key_problem(item)
            if problem is not None:
                raise TuningDBError(problem)
        rows = self._record_rows(records, stamp=False)
        with self._writing():
            for workload in workloads:
                # Insert-or-ignore then update, rather than one upsert, so `created` keeps the
                # first time this workload was seen.
                self._db["workloads"].insert({**workload_row(workload), "created": time.time()}, pk="key", ignore=True)
                self._db["workloads"].update(workload.key, {"op_name": workload.op_name})
            for device in devices:
                self._db["devices"].upsert(device_row(device), pk="key")
            return self._insert_records(rows)

    def _record_rows(self, records: Sequence[Record], *, stamp: bool) -> list[dict[str, object]]:
        now, host = time.time(), this_host()
        rows = []
        for i, record in enumerate(records):
            problem = record_problem(record)
            if problem is None and not stamp and not record.created:
                problem = "created is 0: a record made elsewhere must carry its time"
            if problem is not None:
                raise TuningDBError(f"record {i} of the batch is refused: {problem}; nothing was written")
            row = record_row(record, now, host)
            if not stamp:
                row["host"] = record.host  # '' stays '': unknown, never this machine
            rows.append(row)
        return rows

    def add_records(self, records: Sequence[Record], *, retries: Sequence[Retry] = (),
                    claimant: Claimant | None = None) -> int:
        """Write a batch in one transaction (all or nothing); return how many were new.

        A record already stored for the same (workload, device, measurer, config, host) is
        kept and the new one ignored, so re-writing a batch after a crash or retry duplicates
        nothing. In the same transaction a tuner settles its batch: a recorded config owes no
        retry any more, each of `retries` is stored (replacing the one of its config), and
        `claimant`'s claims on the batch's configs are released.
        """
        rows = self._record_rows(records, stamp=True)
        retry_rows = [self._retry_row(retry) for retry in retries]
        if not rows and not retry_rows:
            return 0
        with self._writing():
            new = self._insert_records(rows)
            settled = [[r["workload_key"], r["device_key"], r["measurer"], r["config_key"]] for r in rows]
            self._conn.execute("delete from retries where " + _IN_BATCH, [json.dumps(settled)])
            if retry_rows:
                self._db["retries"].insert_all(retry_rows, replace=True)
            if claimant is not None:
                batch = settled + [[r["workload_key"], r["device_key"], r["measurer"], r["config_key"]]
                                   for r in retry_rows]
                self._conn.execute(
                    "delete from claims where owner = ? and " + _IN_BATCH, [claimant.owner, json.dumps(batch)])
            return new

    @staticmethod
    def _retry_row(retry: Retry) -> dict[str, object]:
        if not isinstance(retry, Retry):
            raise TuningDBError(f"expected a Retry, got {type(retry).__name__}")
        attempts = retry.attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 0 < attempts < 2**31:
            raise TuningDBError(f"a retry's attempts must be a positive int, got {attempts!r}")
        key = config_key(retry.config)  # also refuses a config that is not plain JSON data
        return {"workload_key": retry.workload_key, "device_key": retry.device_key, "measurer": retry.measurer,
                "config_key": key, "config": key, "reason": str(retry.reason)[:2000], "attempts": attempts,
                "created": time.time()}

    # -- coordination between tuners ------------------------------------------------------

    def claim(self, workload_key: str, device_key: str, measurer: str, config_keys: Sequence[str],
              claimant: Claimant, ttl_s: float) -> list[str]:
        """Claim for `claimant`, until `ttl_s` seconds from now, those of `config_keys` that no
        record holds for this workload, device and measurer (on any host) and no live claim of
        another run holds (`claims.claim_is_live`); return the ones claimed, in order.

        The check and the one INSERT run in one write transaction, so of two tuners claiming
        the same config at once exactly one gets it. A claim of `claimant` itself is renewed."""
        keys = list(dict.fromkeys(config_keys))
        if not keys:
            return []
        scope = [workload_key, device_key, measurer, json.dumps(keys)]
        now, host = time.time(), this_host()
        with self._writing():
            stored = {row[0] for row in self._conn.execute(
                "select config_key from records where workload_key = ? and device_key = ? and measurer = ?"
                " and config_key in (select value from json_each(?))", scope)}
            held = {row[0]: (row[1], row[2]) for row in self._conn.execute(
                "select config_key, owner, expires from claims where workload_key = ? and device_key = ?"
                " and measurer = ? and config_key in (select value from json_each(?))", scope)}
            granted = [key for key in keys if key not in stored and not (
                key in held and held[key][0] != claimant.owner and claim_is_live(*held[key], now, host=host))]
            if granted:
                self._conn.execute(
                    "insert or replace into claims (workload_key, device_key, measurer, config_key, owner, expires)"
                    " select ?, ?, ?, value, ?, ? from json_each(?)",
                    [workload_key, device_key, measurer, claimant.owner, now + ttl_s, json.dumps(granted)])
        return granted

    def release_claims(self, claimant: Claimant) -> int:
        """Drop every claim `claimant` holds (its run ended); return how many there were."""
        if self.readonly:
            return 0
        with self._writing():
            return self._conn.execute("delete from claims where owner = ?", [claimant.owner]).rowcount

    def claims(self, workload_key: str) -> list[tuple[str, Claimant | None, float]]:
        """The claims stored for a workload, live or not: (config key, claimant, expiry time)."""
        if "claims" not in self._db.table_names():
            return []  # a file of schema 2, read as it is
        rows = self._query("select config_key, owner, expires from claims where workload_key = ? order by config_key",
                           [workload_key])
        return [(row["config_key"], Claimant.from_owner(row["owner"]), row["expires"]) for row in rows]

    def retries(self, workload_key: str, device_key: str, measurer: str) -> list[Retry]:
        """The configs of a workload, device and measurer owed another measurement (failed for a
        reason outside them), oldest first; none that a record now holds (any host)."""
        if "retries" not in self._db.table_names():
            return []  # a file of schema 2, read as it is
        rows = self._query(
            "select * from retries where workload_key = ? and device_key = ? and measurer = ? and config_key not in"
            " (select config_key from records where workload_key = ? and device_key = ? and measurer = ?)"
            " order by created, config_key", [workload_key, device_key, measurer] * 2)
        found = []
        for row in rows:
            try:
                config = loads_data(row["config"])
                if not isinstance(config, dict) or config_key(config) != row["config_key"]:
                    raise ValueError("its config does not match its key")
                attempts = row["attempts"]
                found.append(Retry(row["workload_key"], row["device_key"], row["measurer"], config,
                                   str(row["reason"]), int(attempts)))
            except (ValueError, TypeError, TuningDBError) as exc:
                self._warn_skipped([(f"retry of config {str(row['config_key'])[:80]}", str(exc))])
        return found

    def _insert_records(self, rows: list[dict[str, object]]) -> int:
        """Insert record rows inside the caller's transaction; return how many were new."""
        if not rows:
            return 0
        for table, column in (("workloads", "workload_key"), ("devices", "device_key")):
            keys = json.dumps(sorted({str(row[column]) for row in rows}))
            unknown = [r[0] for r in self._conn.execute(
                f"select value from json_each(?) where value not in (select key from {table})", (keys,)
            )]
            if unknown:
                raise TuningDBError(
                    f"{self.path}: records refer to unknown {column} {', '.join(unknown)};"
                    f" add the {table[:-1]} first; nothing was written"
                )
        before = self._conn.total_changes
        self._db["records"].insert_all(rows, ignore=True)
        return self._conn.total_changes - before

    # -- reads ----------------------------------------------------------------------------

    def records(
        self, workload_key: str, device_key: str | None = None, *, status: Status | str | None = None,
        config_keys: Sequence[str] | None = None,
    ) -> list[Record]:
        """The readable records of a workload, optionally of one device, one status and only the
        configs of `config_keys`, oldest first."""
        sql, params = "select * from records where workload_key = ?", [workload_key]
        if device_key is not None:
            sql, params = sql + " and device_key = ?", [*params, device_key]
        if config_keys is not None:
            sql += " and config_key in (select value from json_each(?))"
            params = [*params, json.dumps(list(config_keys))]
        if status is not None:
            try:
                status = Status.parse(status)
            except ValueError as exc:
                raise TuningDBError(str(exc)) from None
            sql, params = sql + " and status = ?", [*params, status.value]
        return self._records_from(self._query(sql + " order by id", params))

    def best(self, workload_key: str, device_key: str, *, measurer: str | None = None) -> Record | None:
        """The usable record (ok, positive latency) with the lowest latency_us (oldest on a tie),
        or None when none is."""
        sql = ("select * from records where workload_key = ? and device_key = ? and status = ?"
               " and latency_us > 0")
        params: list[object] = [workload_key, device_key, Status.OK.value]
        if measurer is not None:
            sql, params = sql + " and measurer = ?", [*params, measurer]
        with self._translated():
            cursor = self._conn.execute(sql + " order by latency_us, id", params)
            cursor.row_factory = sqlite3.Row
            try:
                # Walk in latency order so that an unreadable fastest row falls back to the next;
                # the warning points at best()'s caller.
                found = self._records_from(cursor, first=True, stacklevel=5)
            finally:
                cursor.close()
        return found[0] if found else None

    def best_per_device(self, workload_key: str) -> dict[str, Record]:
        """The best ok record of a workload on each device that has one, keyed by device key."""
        rows = self._query(
            "select * from records where workload_key = ? and status = ? and latency_us > 0"
            " order by device_key, latency_us, id",
            [workload_key, Status.OK.value],
        )
        best: dict[str, Record] = {}
        for record in self._records_from(rows):
            best.setdefault(record.device_key, record)
        return best

    def usable(self, workload_key: str, device_keys: Sequence[str] | None = None, *,
               measurer: str | None = None) -> Iterator[Record]:
        """The usable records of a workload (ok, with a positive latency: the rows every reader
        may rank), fastest first (oldest on a tie), read lazily through an index: a caller that
        stops at the first one whose config it accepts reads a few rows, however big the DB.

        Optionally only those of the devices `device_keys` and of one `measurer`. Unreadable
        rows are skipped (and warned about once)."""
        sql = "select * from records where workload_key = ? and status = 'ok' and latency_us > 0"
        params: list[object] = [workload_key]
        if device_keys is not None:
            sql += f" and device_key in ({', '.join('?' * len(device_keys))})"
            params += list(device_keys)
        if measurer is not None:
            sql, params = sql + " and measurer = ?", [*params, measurer]
        with self._translated():
            cursor = self._conn.execute(sql + " order by latency_us, id", params)
            cursor.row_factory = sqlite3.Row
        try:
            while True:
                with self._translated():
                    rows = cursor.fetchmany(16)
                if not rows:
                    return
                for row in rows:  # parsed one at a time: most callers stop at the first
                    yield from self._records_from([row], stacklevel=5)
        finally:
            cursor.close()

    def usable_on(self, workload_key: str, device_name: str | None = None) -> Iterator[Record]:
        """`usable` records of a workload for a call on the GPU named `device_name` (measured on
        it under any Triton version), or, with None (a call that runs in the interpreter), on any
        device, those of real GPUs (measurer "cuda") only when there are any; fastest first,
        lazily. What `tiletune.load` picks its config from."""
        if device_name is not None:
            return self.usable(workload_key, [d.key for d in self.devices() if d.name == device_name])
        real = self._query("select 1 from records where workload_key = ? and status = 'ok' and latency_us > 0"
                           " and measurer = 'cuda' limit 1", [workload_key])
        return self.usable(workload_key, measurer="cuda" if real else None)

    def trials(self, workload_key: str) -> list[Trial]:
        """Every measurement of a workload in the order it was made (oldest first), as the light
        `Trial` values a report draws from: no facts are read or parsed. Unreadable rows are
        skipped (and warned about once)."""
        rows = self._query("select id, device_key, config, config_key, status, reason, latency_us from records"
                           " where workload_key = ? order by id", [workload_key])
        return self._parsed(rows, trial_from_row, lambda row: f"record id {row['id']}")

    def status_counts_by_device(self) -> dict[str, dict[str, int]]:
        """How many records each device has of each status (only those it has), from an index."""
        counts: dict[str, dict[str, int]] = {}
        for row in self._query("select device_key, status, count(*) as n from records group by device_key, status"):
            counts.setdefault(row["device_key"], {})[row["status"]] = row["n"]
        return counts

    def measured_config_keys(self, workload_key: str, device_key: str, measurer: str | None = None) -> set[str]:
        """Config keys already recorded (any status) for a workload and device: what a resumed run skips."""
        sql, params = "select config_key from records where workload_key = ? and device_key = ?", [workload_key, device_key]
        if measurer is not None:
            sql, params = sql + " and measurer = ?", [*params, measurer]
        return {row["config_key"] for row in self._query(sql, params)}

    def status_counts(self, workload_key: str, device_key: str) -> dict[str, int]:
        """How many records of each status a workload has on a device, keyed by Status; every status is
        present, 0 if none (a stored status that is none of them is counted under its own spelling)."""
        counts: dict[str, int] = dict.fromkeys(Status, 0)
        for row in self._query(
            "select status, count(*) as n from records where workload_key = ? and device_key = ? group by status",
            [workload_key, device_key],
        ):
            counts[row["status"]] = row["n"]
        return counts

    def workloads(self, op_name: str | None = None) -> list[Workload]:
        """Stored workloads, optionally of one operator, ordered by operator name then key."""
        sql, params = "select * from workloads", []
        if op_name is not None:
            sql, params = sql + " where op_name = ?", [op_name]
        return self._workloads_from(self._query(sql + " order by op_name, key", params))

    def workload(self, key: str) -> Workload | None:
        """The workload with this key, or None."""
        found = self._workloads_from(self._query("select * from workloads where key = ?", [key]))
        return found[0] if found else None

    def _workloads_from(self, rows: Iterable[sqlite3.Row]) -> list[Workload]:
        return self._parsed(rows, workload_from_row, lambda row: f"workload {row['key']}")

    def devices(self) -> list[Device]:
        """Stored devices, ordered by key."""
        return [device_from_row(row) for row in self._query("select * from devices order by key")]
