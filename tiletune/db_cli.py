"""`tiletune db`: export, import, merge and summarise tuning DBs, so a team shares one.

Registered on the `tiletune` group in cli.py. The exchange itself lives in
`tuning_db/exchange.py`; records coming in are checked by `db_validate.RecordValidator`.
"""
from __future__ import annotations

from pathlib import Path

import click

from tiletune.cli_errors import one_line_errors, warnings_as_lines


@click.group(name="db")
def db() -> None:
    """Share tuning DBs: export and import JSON lines, merge another DB, summarise."""


def db_option(dest: str):
    """The `--db PATH` option of every command that reads or writes a tuning DB, passed as `dest`."""
    return click.option("--db", dest, type=click.Path(dir_okay=False), default=None,
                        help="Tuning DB file (default: $TILETUNE_DB or ./tiletune.db).")


def _open(db_path, *, readonly: bool = False):
    from tiletune.errors import TuningDBError
    from tiletune.tuning_db import TuningDB, default_db_path

    path = Path(db_path) if db_path else default_db_path()
    if readonly and not path.exists():
        raise TuningDBError(f"no tuning DB at {path}")
    return TuningDB(path, readonly=readonly)


@db.command()
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--op", "ops", multiple=True, help="Only this operator (repeatable).")
@click.option("--device", "devices", multiple=True, help="Only this device, by name or key (repeatable).")
@db_option("db_path")
@one_line_errors
def export(out, ops, devices, db_path) -> None:
    """Write the DB's records to OUT as JSON lines, each with its workload and device."""
    from tiletune.tuning_db.exchange import export_records

    with _open(db_path, readonly=True) as database:
        records, workloads = export_records(database, out, ops=ops, devices=devices)
    click.echo(f"exported {records} records of {workloads} workloads to {out}")


@db.command(name="import")
@click.argument("source", type=click.Path(dir_okay=False))
@db_option("db_path")
@one_line_errors
def import_(source, db_path) -> None:
    """Add the records of an exported SOURCE file; a file with any bad record adds nothing."""
    from tiletune.tuning_db.exchange import import_records, read_records

    _add_from(source, db_path, import_records, read_records, "imported")


@db.command()
@click.argument("other", type=click.Path(dir_okay=False, exists=True))
@db_option("db_path")
@one_line_errors
def merge(other, db_path) -> None:
    """Add every record of the DB file OTHER (only read); best configs follow from all records."""
    from tiletune.tuning_db.exchange import merge_db, read_db

    _add_from(other, db_path, merge_db, read_db, "merged")


def _add_from(source, db_path, add, read, done_verb: str) -> None:
    """Run an import or merge `add(db, source, validator)` into the DB and say what it added.
    Into a DB that does not exist yet, `read(source)` is checked first, so a refused source
    leaves no new DB file behind."""
    from tiletune.db_validate import RecordValidator
    from tiletune.tuning_db import default_db_path
    from tiletune.tuning_db.exchange import check

    if not (Path(db_path) if db_path else default_db_path()).exists():
        check(read(source), RecordValidator(None))
    with _open(db_path) as database:
        done = add(database, source, RecordValidator(database))
    click.echo(f"{done_verb} {done.added} new records from {source} ({done.present} were already in {database.path})")


@db.command()
@db_option("db_path")
@one_line_errors
@warnings_as_lines
def stats(db_path) -> None:
    """Summarise the DB: workloads, records by status and device, best latency per workload."""
    from tiletune.db_validate import task_for, usable_best
    from tiletune.report import printable, workload_line
    from tiletune.tuning_db import Status

    with _open(db_path, readonly=True) as database:
        path = database.path
        by_device = database.status_counts_by_device()
        workloads = database.workloads()
        best = []
        for workload in workloads:
            task = task_for(workload)
            for device_key, record in sorted(usable_best(database, workload, task)[0].items()):
                best.append(workload_line(workload, task, device_key, record.latency_us))
    click.echo(f"{printable(path)}: {len(workloads)} workloads, {sum(sum(c.values()) for c in by_device.values())} records")
    if by_device:
        used = [s.value for s in Status if any(s.value in c for c in by_device.values())]
        used += sorted({s for c in by_device.values() for s in c} - set(used))  # a status no tiletune wrote
        width = max(len(printable(k)) for k in by_device)
        click.echo(f"  {'device':{width}s} " + " ".join(f"{printable(s)[:13]:>13s}" for s in used))
        for device_key, counts in sorted(by_device.items()):
            click.echo(f"  {printable(device_key):{width}s} " + " ".join(f"{counts.get(s, 0):13d}" for s in used))
    if best:
        click.echo("best latency per workload and device:")
        for line in best:
            click.echo(f"  {line}")
