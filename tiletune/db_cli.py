"""`tiletune db`: export, import, merge and summarise tuning DBs, so a team shares one.

Registered on the `tiletune` group in cli.py. The exchange itself lives in
`tuning_db/exchange.py`; records coming in are checked by `db_validate.RecordValidator`.
"""
from __future__ import annotations

import functools
import warnings

import click


def warnings_as_lines(fn):
    """Print each distinct warning raised by a command as one `warning: ...` line on stderr
    (rather than Python's file:line form and a source line, which reads like a traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return fn(*args, **kwargs)
            finally:
                for message in dict.fromkeys(str(w.message) for w in caught):
                    click.echo(f"warning: {message}", err=True)

    return wrapper


def usable_best(path, task, records) -> dict:
    """The best record per device whose config is legal in `task`'s space; warns once about
    faster records passed over."""
    from tiletune.db_validate import best_usable, skipped_message

    best, skipped = best_usable(task, records)
    if skipped:
        warnings.warn(skipped_message(path, task, skipped), stacklevel=2)
    return best


@click.group(name="db")
def db() -> None:
    """Share tuning DBs: export and import JSON lines, merge another DB, summarise."""
